/**
 * The scan stage end to end with the real, pinned Trivy and a vulnerability DB
 * built from advisories/ with the real trivy-db, against the local registry:
 * the Doc Server image passes with SARIF and both SBOMs written, an image
 * carrying a crate version a fixture advisory names fails, the ignore file's
 * expiry decides, and `--from-report` re-gates Trivy's own reports.
 */
import { cpSync,existsSync,mkdirSync,mkdtempSync,readFileSync,rmSync,symlinkSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../../lib/core/config.ts'
import { removeImage } from '../../lib/build/registry.ts'
import { ensureBaseImages } from '../../lib/sandbox/base-images.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY,ensureRegistry } from '../../lib/sandbox/registry.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { pushVulnerableImage } from '../helpers/vulnerable-image.ts'
import { SECRET_FILE,keyLines,pushFixtureImage,removeFixtureImage,type FixtureImage } from '../helpers/fixture-images.ts'
import { ANY_EXIT,run } from '../../lib/core/run.ts'
import { ADVISORIES_DIR,ensureLocalDb } from '../../lib/scan/trivy.ts'
import { ensureTrivy } from '../../lib/tools/trivy.ts'
import { setUp } from '../helpers/hooks.ts'
import { buildReportFor } from '../helpers/reports.ts'
import { writeReport } from '../../lib/core/reports.ts'

const t = suite('e2e: scan')
const ALL_OK = { okCodes: ANY_EXIT }
/** Real Trivy reports of the fixture images, made by test/fixtures/trivy-reports/generate.ts. */
const FIXTURE_REPORTS = join(repoRoot, 'test', 'fixtures', 'trivy-reports')
/** A date inside SCAN_IGNORE_MAX_DAYS (90) from today. */
const SOON = new Date(Date.now() + 30 * 86_400_000).toISOString().slice(0, 10)
const ADVISORY = { cve: 'CVE-2021-45710', ghsa: 'GHSA-fg7r-2g4j-5cgr' }

interface State {
  docker: string
  work: string
  /** Reports of the Doc Server image (its build.json comes from the real build stage). */
  realReports: string
  /** Reports of the vulnerable image. */
  vulnReports: string
  vuln?: { repository: string; digest: string; ref: string }
  secret?: FixtureImage
}
const s = {} as State

function stage(file: 'scan' | 'build', reports: string, args: string[] = [], env: NodeJS.ProcessEnv = {}) {
  return run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', `${file}.ts`), ...args], {
    cwd: repoRoot,
    env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: reports, ...env },
    ...ALL_OK,
  })
}
const lastLine = (r: { stdout: string; stderr: string }) => (r.stdout + r.stderr).trim().split('\n').at(-1) ?? ''
const scanJson = (reports: string) => JSON.parse(readFileSync(join(reports, 'scan.json'), 'utf8'))

setUp(t, 'e2e: scan', async () => {
  const config = loadConfig({ ...process.env }, {})
  s.docker = (await ensureDockerEngine(config.docker)).docker
  await ensureRegistry(LOCAL_REGISTRY)
  await ensureBaseImages(s.docker, config.cacheDir)
  await ensureTrivy(config.cacheDir)
  await ensureLocalDb(config.cacheDir)
  s.work = mkdtempSync(join(tmpdir(), 'scan-e2e-'))
  s.realReports = join(s.work, 'real')
  s.vulnReports = join(s.work, 'vuln')
})

t.after(async () => {
  if (s.vuln) {
    // The registry is a shared service; only the manifest this test pushed is removed.
    await fetch(`http://${s.vuln.repository.replace(`${LOCAL_REGISTRY}/`, `${LOCAL_REGISTRY}/v2/`)}/manifests/${s.vuln.digest}`, { method: 'DELETE' }).catch(() => undefined)
    await removeImage(s.docker, s.vuln.ref)
  }
  if (s.secret) await removeFixtureImage(s.docker, s.secret)
  if (s.work) rmSync(s.work, { recursive: true, force: true })
})

t('the Doc Server image passes, with SARIF and both SBOMs listing its crates and OS packages', async () => {
  const build = await stage('build', s.realReports, [], { IMAGE_NAME: 'scan-e2e', PUSH: 'true' })
  assert.is(build.exitCode, 0, `build stage failed: ${lastLine(build)}`)
  const built = JSON.parse(readFileSync(join(s.realReports, 'build.json'), 'utf8'))
  const r = await stage('scan', s.realReports)
  assert.is(r.exitCode, 0, lastLine(r))
  const report = scanJson(s.realReports)
  assert.is(report.decision, 'pass')
  assert.is(report.image.scanned, `${built.image.repository}@${built.image.digest}`, 'exactly the pushed digest')
  assert.is(report.image.source, 'remote')
  const out = join(s.realReports, 'scan')
  for (const f of ['trivy.json', 'trivy.sarif', 'sbom.cdx.json', 'sbom.spdx.json']) assert.ok(existsSync(join(out, f)), `${f} written`)

  const lock = readFileSync(join(repoRoot, 'Cargo.lock'), 'utf8')
  const locked = (name: string) => new RegExp(`name = "${name}"\\nversion = "([^"]+)"`).exec(lock)?.[1]
  const cdx = JSON.parse(readFileSync(join(out, 'sbom.cdx.json'), 'utf8')) as { components: { name: string; version: string; purl?: string }[] }
  const spdx = JSON.parse(readFileSync(join(out, 'sbom.spdx.json'), 'utf8')) as { packages: { name: string; versionInfo?: string }[] }
  for (const crate of ['tokio', 'axum']) {
    const c = cdx.components.find((x) => x.name === crate)
    assert.ok(c, `CycloneDX lists ${crate}`)
    assert.is(c!.version, locked(crate), `${crate} at the Cargo.lock version`)
    assert.match(c!.purl ?? '', new RegExp(`^pkg:cargo/${crate}@`))
    assert.ok(spdx.packages.some((p) => p.name === crate && p.versionInfo === locked(crate)), `SPDX lists ${crate}`)
  }
  // The base is distroless static: its Debian packages are listed, and no C library is among them.
  for (const pkg of ['base-files', 'tzdata', 'ca-certificates']) {
    const c = cdx.components.find((x) => x.name === pkg)
    assert.ok(c && new RegExp(`^pkg:deb/debian/${pkg}@`).test(c.purl ?? ''), `CycloneDX lists the OS package ${pkg}`)
    assert.ok(spdx.packages.some((p) => p.name === pkg), `SPDX lists ${pkg}`)
  }
  assert.not.ok(cdx.components.some((x) => x.name === 'libc6'), 'the static image carries no libc6')
  const sarif = JSON.parse(readFileSync(join(out, 'trivy.sarif'), 'utf8'))
  assert.is(sarif.version, '2.1.0')
  // Scanned through the local mirror of the DB built from advisories/, and the report says what it holds.
  assert.equal([report.db.source, report.db.repository, report.db.advisories], ['local', `${LOCAL_REGISTRY}/local/trivy-db:2`, 1])
  assert.match(report.db.updatedAt, /^\d{4}-\d{2}-\d{2}T/)
  assert.match(r.stdout + r.stderr, new RegExp(`vulnerability DB: local via ${LOCAL_REGISTRY}/local/trivy-db:2, 1 advisory, built \\d{4}-`))
})

t('the local DB is served by the registry as Trivy\'s OCI artifact, and a mirror set by TRIVY_DB_REPOSITORY is scanned through', async () => {
  const res = await fetch(`http://${LOCAL_REGISTRY}/v2/local/trivy-db/manifests/2`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })
  assert.is(res.status, 200)
  const manifest = (await res.json()) as { config: { mediaType: string }; layers: { mediaType: string; annotations: Record<string, string> }[]; annotations: Record<string, string> }
  assert.is(manifest.config.mediaType, 'application/vnd.aquasec.trivy.config.v1+json')
  assert.equal(manifest.layers.map((l) => [l.mediaType, l.annotations['org.opencontainers.image.title']]), [['application/vnd.aquasec.trivy.db.layer.v1.tar+gzip', 'db.tar.gz']])
  assert.is(manifest.annotations['org.doc-server.trivy-db.advisories'], '1')

  // The company-mirror path: TRIVY_DB_SOURCE=remote with TRIVY_DB_REPOSITORY, nothing built here,
  // a private cache so Trivy must download the DB from that repository to find the finding.
  const cache = join(s.work, 'mirror-cache')
  mkdirSync(cache, { recursive: true })
  symlinkSync(join(loadConfig({ ...process.env }, {}).cacheDir, 'tools'), join(cache, 'tools'))
  const reports = join(s.work, 'mirror')
  mkdirSync(reports, { recursive: true })
  const vuln = await pushVulnerableImage(s.docker, join(s.work, 'mirror-image'))
  try {
    writeReport(reports, 'build', buildReportFor(vuln.repository, vuln.digest))
    const r = await stage('scan', reports, [], { TRIVY_DB_SOURCE: 'remote', TRIVY_DB_REPOSITORY: `${LOCAL_REGISTRY}/local/trivy-db:2`, DOC_SERVER_CACHE_DIR: cache })
    assert.is(r.exitCode, 1, lastLine(r))
    const report = scanJson(reports)
    assert.equal(report.blockingIds, [ADVISORY.cve])
    assert.equal([report.db.source, report.db.repository, report.db.advisories], ['remote', `${LOCAL_REGISTRY}/local/trivy-db:2`, 1])
    assert.ok(existsSync(join(cache, 'trivy', 'remote', 'db', 'trivy.db')), 'downloaded from the mirror')
  } finally {
    await removeFixtureImage(s.docker, vuln)
  }
})

t('an image with a baked-in private key fails, naming the file and rule, never the key', async () => {
  s.secret = await pushFixtureImage(s.docker, s.work, 'secret')
  const reports = join(s.work, 'secret')
  mkdirSync(reports, { recursive: true })
  writeReport(reports, 'build', buildReportFor(s.secret.repository, s.secret.digest))
  const r = await stage('scan', reports)
  assert.is(r.exitCode, 1)
  assert.is(lastLine(r), `✖ scan gate failed: 1 HIGH/CRITICAL secret in the image: private-key (HIGH) in ${SECRET_FILE}:2`)
  const report = scanJson(reports)
  assert.equal(report.secrets.map((x: { ruleId: string; file: string; blocking: boolean }) => [x.ruleId, x.file, x.blocking]), [['private-key', SECRET_FILE, true]])
  const sarif = JSON.parse(readFileSync(join(reports, 'scan', 'trivy.sarif'), 'utf8'))
  assert.equal(sarif.runs[0].results.map((x: { ruleId: string }) => x.ruleId), ['private-key'], 'the SARIF shows it too')
  const everything = [r.stdout, r.stderr, readFileSync(join(reports, 'scan.json'), 'utf8'), ...['trivy.json', 'trivy.sarif', 'sbom.cdx.json', 'sbom.spdx.json'].map((f) => readFileSync(join(reports, 'scan', f), 'utf8'))].join('\n')
  const lines = keyLines(s.secret.key!)
  assert.ok(lines.length > 10, 'a real key')
  for (const l of lines) assert.not.ok(everything.includes(l), 'no line of the key in any output')
})

t('an image with a crate version a fixture advisory names fails, naming the advisory', async () => {
  s.vuln = await pushVulnerableImage(s.docker, s.work)
  mkdirSync(s.vulnReports, { recursive: true })
  // The scan stage's input is build.json; this one names the fixture image pushed above.
  writeReport(s.vulnReports, 'build', buildReportFor(s.vuln.repository, s.vuln.digest, { tag: 'e2e' }))
  const r = await stage('scan', s.vulnReports)
  assert.is(r.exitCode, 1)
  const line = lastLine(r)
  assert.match(line, /^✖ scan gate failed: 1 HIGH\/CRITICAL finding remains: CVE-2021-45710 \[GHSA-fg7r-2g4j-5cgr\] in tokio 1\.13\.0/)
  const report = scanJson(s.vulnReports)
  assert.is(report.decision, 'fail')
  assert.equal(report.blockingIds, [ADVISORY.cve])
  assert.equal(report.blocking[0].aliases, [ADVISORY.ghsa])
  const sarif = JSON.parse(readFileSync(join(s.vulnReports, 'scan', 'trivy.sarif'), 'utf8'))
  assert.equal(sarif.runs[0].results.map((x: { ruleId: string }) => x.ruleId), [ADVISORY.cve], 'the SARIF shows what the gate blocked')
})

t('an image that was not pushed (pull request) is scanned from the local Docker engine', async () => {
  assert.ok(s.vuln, 'needs the vulnerable image from the previous test')
  const reports = join(s.work, 'unpushed')
  mkdirSync(reports, { recursive: true })
  writeReport(reports, 'build', { ...buildReportFor(s.vuln.repository, null), image: { ref: s.vuln.ref, digest: null, repository: s.vuln.repository, tag: 'e2e', pinned: null } })
  const r = await stage('scan', reports)
  assert.is(r.exitCode, 1)
  const report = scanJson(reports)
  assert.equal([report.image.source, report.image.scanned], ['docker', s.vuln.ref])
  assert.equal(report.blockingIds, [ADVISORY.cve])
})

t('an ignore entry in force lets it pass; once expired it blocks again and the summary says so', async () => {
  assert.ok(s.vuln, 'needs the vulnerable image from the previous test')
  const ignore = join(s.work, 'ignore.yaml')
  const entry = (date: string) => `vulnerabilities:\n  - id: ${ADVISORY.cve}\n    statement: The fixture never closes a oneshot receiver.\n    expired_at: ${date}\n`
  writeFileSync(ignore, entry(SOON))
  const pass = await stage('scan', s.vulnReports, [], { SCAN_IGNORE_FILE: ignore })
  assert.is(pass.exitCode, 0, lastLine(pass))
  const passed = scanJson(s.vulnReports)
  assert.is(passed.decision, 'pass')
  assert.equal(passed.ignored.map((e: { id: string }) => e.id), [ADVISORY.cve])
  const sarif = JSON.parse(readFileSync(join(s.vulnReports, 'scan', 'trivy.sarif'), 'utf8'))
  assert.is(sarif.runs[0].results.length, 0, 'Trivy suppressed it too, so the SARIF agrees')

  writeFileSync(ignore, entry('2020-01-01'))
  const fail = await stage('scan', s.vulnReports, [], { SCAN_IGNORE_FILE: ignore })
  assert.is(fail.exitCode, 1)
  assert.match(fail.stdout + fail.stderr, /expired: ignore entry CVE-2021-45710 expired on 2020-01-01 and no longer applies/)
  assert.match(lastLine(fail), /CVE-2021-45710 .*\(ignore entry CVE-2021-45710 expired on 2020-01-01\)$/)
  assert.equal(scanJson(s.vulnReports).expired.map((e: { id: string }) => e.id), [ADVISORY.cve])
})

t('Trivy\'s own configuration cannot loosen the scan: TRIVY_* variables and a trivy.yaml in the working directory are ignored', async () => {
  assert.ok(s.vuln, 'needs the vulnerable image from the earlier test')
  const viaEnv = await stage('scan', s.vulnReports, [], { TRIVY_SEVERITY: 'LOW', TRIVY_IGNORE_UNFIXED: 'true' })
  assert.is(viaEnv.exitCode, 1, 'TRIVY_SEVERITY=LOW would have hidden the HIGH finding')
  assert.equal(scanJson(s.vulnReports).blockingIds, [ADVISORY.cve])
  // A trivy.yaml where the stage is started (Trivy reads ./trivy.yaml by default).
  const elsewhere = mkdtempSync(join(s.work, 'cwd-'))
  writeFileSync(join(elsewhere, 'trivy.yaml'), 'severity:\n  - LOW\nvulnerability:\n  ignore-unfixed: true\n')
  const viaFile = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'scan.ts')], { cwd: elsewhere, env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: s.vulnReports }, ...ALL_OK })
  assert.is(viaFile.exitCode, 1, 'a trivy.yaml in the working directory would have hidden the HIGH finding')
  assert.equal(scanJson(s.vulnReports).blockingIds, [ADVISORY.cve])
})

t('a scan under any other policy than the committed one is recorded as such and never deployable', async () => {
  assert.ok(s.vuln, 'needs the vulnerable image from the earlier test')
  const committed = await stage('scan', s.vulnReports)
  const committedDigest = scanJson(s.vulnReports).policyDigest
  assert.is(committed.exitCode, 1)
  assert.is(scanJson(s.vulnReports).committedPolicy, true)
  // An accepted risk 300 days ahead, in an ignore file of its own, within SCAN_IGNORE_MAX_DAYS=365.
  const ignore = join(s.work, 'far-ahead.yaml')
  writeFileSync(ignore, `vulnerabilities:\n  - id: ${ADVISORY.cve}\n    statement: Accepted for a long time.\n    expired_at: ${new Date(Date.now() + 300 * 86_400_000).toISOString().slice(0, 10)}\n`)
  const lax = await stage('scan', s.vulnReports, [], { SCAN_IGNORE_FILE: ignore, SCAN_IGNORE_MAX_DAYS: '365' })
  assert.is(lax.exitCode, 0, lastLine(lax))
  const report = scanJson(s.vulnReports)
  assert.is(report.decision, 'pass')
  assert.is(report.committedPolicy, false)
  assert.is(report.deployable, false, 'a pass under another policy never makes the image deployable')
  assert.is.not(report.policyDigest, committedDigest)
  assert.match(lax.stdout + lax.stderr, /NOT the committed policy \(ignoreMaxDays 365 \(committed: 90\); ignore file .*far-ahead\.yaml with other content/)
  // The signed result carries that digest, which deploy compares with the committed one (test/e2e/sign.test.ts).
  const attested = JSON.parse(readFileSync(join(s.vulnReports, 'scan', 'scan-attestation.json'), 'utf8'))
  assert.is(attested.policy.digest, report.policyDigest)
  // Unfixed findings let through: another policy too, whatever the verdict.
  await stage('scan', s.vulnReports, [], { SCAN_IGNORE_UNFIXED: 'true' })
  const unfixed = scanJson(s.vulnReports)
  assert.equal([unfixed.committedPolicy, unfixed.deployable], [false, false])
  assert.is.not(unfixed.policyDigest, committedDigest)
  for (const [name, value] of [['SCAN_IGNORE_MAX_DAYS', '36500'], ['SCAN_IGNORE_MAX_DAYS', `1${'0'.repeat(320)}`], ['SCAN_MAX_AGE', `1${'0'.repeat(320)}d`]] as const) {
    const r = await stage('scan', s.vulnReports, [], { [name]: value })
    assert.is(r.exitCode, 1)
    assert.match(lastLine(r), new RegExp(`^✖ config: ${name}=".*" is not valid: expected .*(at most|365)`), `${name}: ${lastLine(r)}`)
  }
})

t('the local DB is rebuilt when an advisory changes, and only then', async () => {
  const config = loadConfig({ ...process.env }, {})
  const cache = join(s.work, 'db-cache')
  mkdirSync(cache, { recursive: true })
  // The pinned tools are shared (never rebuilt here); the DB under test is private to this test.
  symlinkSync(join(config.cacheDir, 'tools'), join(cache, 'tools'))
  const advisories = join(s.work, 'advisories')
  cpSync(ADVISORIES_DIR, advisories, { recursive: true })
  const first = await ensureLocalDb(cache, advisories)
  assert.is(first.built, true)
  assert.ok(existsSync(join(cache, 'trivy', 'local', 'db', 'trivy.db')))
  assert.is((await ensureLocalDb(cache, advisories)).built, false, 'unchanged advisories reuse the DB')
  const file = join(advisories, 'ghsa', 'advisories', 'github-reviewed', '2022', '01', ADVISORY.ghsa, `${ADVISORY.ghsa}.json`)
  writeFileSync(file, readFileSync(file, 'utf8').replace('"summary": "Race Condition in tokio"', '"summary": "Race condition in tokio"'))
  const rebuilt = await ensureLocalDb(cache, advisories)
  assert.is(rebuilt.built, true)
  assert.is.not(rebuilt.hash, first.hash)
})

t('--from-report re-gates the committed real reports: vulnerable fails, clean passes, with a secret fails', async () => {
  const reports = join(s.work, 'from-report')
  for (const [file, code, decision] of [['vulnerable.json', 1, 'fail'], ['clean.json', 0, 'pass'], ['secret.json', 1, 'fail']] as const) {
    const r = await stage('scan', reports, ['--from-report', join(FIXTURE_REPORTS, file)])
    assert.is(r.exitCode, code, `${file}: ${lastLine(r)}`)
    assert.is(scanJson(reports).decision, decision, file)
  }
})

t('bad input fails closed with one line: missing image, malformed report, unknown schema, bad ignore file, missing DB', async () => {
  const bad = join(s.work, 'bad')
  mkdirSync(bad, { recursive: true })
  const missingDigest = `sha256:${'0'.repeat(64)}`
  writeReport(bad, 'build', buildReportFor(`${LOCAL_REGISTRY}/local/no-such-image`, missingDigest, { tag: 'x' }))
  // A report left by an earlier run must not survive a scan that broke.
  mkdirSync(join(bad, 'scan'), { recursive: true })
  writeFileSync(join(bad, 'scan', 'trivy.json'), JSON.stringify({ SchemaVersion: 2, ArtifactName: 'old', Results: [] }))
  const missing = await stage('scan', bad)
  assert.is(missing.exitCode, 1)
  // Trivy exits 1 here, the code it also uses for findings: the stage reads it as a broken scan.
  assert.match(lastLine(missing), /^✖ scan: trivy could not scan 127\.0\.0\.1:5000\/local\/no-such-image@sha256:0+ \(exit 1; its log is above\)$/)
  assert.is(scanJson(bad).decision, 'fail', 'a broken scan is recorded as a failure')
  assert.not.ok(existsSync(join(bad, 'scan', 'trivy.json')), 'the earlier report is gone')

  const cases: [string, string, RegExp][] = [
    ['truncated.json', '{"SchemaVersion": 2, "Results": [', /is not valid JSON/],
    ['schema3.json', JSON.stringify({ SchemaVersion: 3, Results: [] }), /has SchemaVersion 3; the gate reads only Trivy's SchemaVersion 2$/],
    ['no-results.json', JSON.stringify({ SchemaVersion: 2, ArtifactName: 'x' }), /has no Results: Trivy found nothing to scan/],
    ['empty-results.json', JSON.stringify({ SchemaVersion: 2, ArtifactName: 'x', Results: [] }), /has empty Results: Trivy listed nothing it scanned/],
    ['os-only.json', JSON.stringify({ SchemaVersion: 2, ArtifactName: 'x', Results: [{ Target: 'x (debian 12)', Class: 'os-pkgs', Type: 'debian', Packages: [{ Name: 'libc6', Version: '2.36' }] }] }), /has no result for the binary's crates \(rustbinary\)/],
  ]
  for (const [name, body, re] of cases) {
    writeFileSync(join(bad, name), body)
    const r = await stage('scan', bad, ['--from-report', join(bad, name)])
    assert.is(r.exitCode, 1, name)
    assert.match(lastLine(r), re)
  }
  writeFileSync(join(bad, 'ignore.yaml'), 'vulnerabilities:\n  - id: CVE-1\n   statement: [\n')
  const ignore = await stage('scan', bad, ['--from-report', join(bad, 'truncated.json')], { SCAN_IGNORE_FILE: join(bad, 'ignore.yaml') })
  assert.match(lastLine(ignore), /^✖ scan: ignore file .*ignore\.yaml does not parse: /)

  const trivy = (await ensureTrivy(loadConfig({ ...process.env }, {}).cacheDir)).path
  const noDb = await run([join(repoRoot, 'scripts', 'scan_image.sh'), '--out', join(bad, 'out'), '--cache-dir', join(bad, 'empty-cache'), '--offline', 'anything'], { env: { ...process.env, TRIVY: trivy }, ...ALL_OK })
  assert.is(noDb.exitCode, 2)
  assert.match(noDb.stderr.trim(), /^scan_image: no Trivy DB in .*empty-cache\/db: an offline scan needs one/)
})

t.run()
