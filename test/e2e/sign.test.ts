/**
 * Signatures and attestations end to end: the pinned cosign, the local
 * registry, the machine's signing key. Each case pushes its own small image
 * (FROM scratch, one unique file) so attestations never mix between cases,
 * signs and attests it as the build and scan stages do, then asks deploy's
 * verification what it makes of it. Refusals are also checked through
 * `tasks/deploy.ts` itself: one line, non-zero, before any cluster step.
 */
import { mkdtempSync,readFileSync,rmSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ociBuildArgs } from '../../lib/build/docker.ts'
import { loadConfig,type Config } from '../../lib/core/config.ts'
import { gitFacts,type GitFacts } from '../../lib/core/git.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { readReport, writeReport, type Report } from '../../lib/core/reports.ts'
import { ANY_EXIT,run } from '../../lib/core/run.ts'
import { VERSIONS } from '../../lib/tools/versions.ts'
import { verifyImage,type VerifyOptions } from '../../lib/deploy/verify.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY,ensureRegistry } from '../../lib/sandbox/registry.ts'
import { SCAN_PREDICATE_TYPE,type ScanFacts } from '../../lib/sign/attest.ts'
import { ensureLocalKeyPair,localVerifier,registryFlags,signImage,type Signer } from '../../lib/sign/cosign.ts'
import { ensureCosign } from '../../lib/tools/cosign.ts'
import { signingFor } from '../../lib/sign/sign.ts'
import { policyDigest } from '../../lib/scan/committed-policy.ts'
import { DEBIAN_FILES, attestAsScan, committedPolicyNow, passingDecision, pushTinyImage, removeTinyImages, signAsBuild } from '../helpers/signed-image.ts'
import { setUp } from '../helpers/hooks.ts'
import { buildReportFor, scanReportFor } from '../helpers/reports.ts'

const t = suite('e2e: sign')
const REPO = `${LOCAL_REGISTRY}/local/sign-e2e`
const TRIVY = VERSIONS.trivy.replace(/^v/, '')

interface State {
  config: Config
  docker: string
  cosign: string
  work: string
  git: GitFacts
  source: string
  /** A fully signed and attested image, shared by the cases that copy from it. */
  good?: string
}
const s = {} as State

const pushImageOnce = (label: string) => pushTinyImage(s.docker, REPO, label, s.work)
const pass = passingDecision
const signAndProvenance = (digest: string, git: GitFacts = s.git) => signAsBuild(s.config, REPO, digest, git, s.work)
const scanAttest = (digest: string, over: Partial<ScanFacts> = {}) => attestAsScan(s.config, REPO, digest, s.work, over)

const opts = (digest: string, over: Partial<VerifyOptions> = {}): VerifyOptions => ({
  cosign: s.cosign, imageSigners: [localVerifier(s.config.cacheDir)], scanSigners: [], repository: REPO, digest, sourceRepository: s.source, commit: s.git.sha,
  policy: { digest: committedPolicyNow().digest, committed: committedPolicyNow() }, maxAgeSecs: 24 * 3600, db: { maxAgeSecs: 30 * 86_400, sources: ['local', 'remote'] }, allowDirty: false, ...over,
})

async function refused(digest: string, re: RegExp, over: Partial<VerifyOptions> = {}) {
  try {
    await verifyImage(opts(digest, over))
  } catch (err) {
    const msg = (err as Error).message
    assert.match(msg, /^deploy: refused: /)
    assert.not.match(msg, /\n/, 'one line')
    assert.match(msg, re, msg)
    return msg
  }
  assert.unreachable(`${digest} was accepted`)
  return ''
}

/** tasks/deploy.ts on reports naming `digest`: the refusal must come before the chart or any cluster step. */
async function deployRefuses(digest: string, scan: Report<'scan'>, re: RegExp) {
  const reports = mkdtempSync(join(s.work, 'reports-'))
  writeReport(reports, 'build', buildReportFor(REPO, digest, { tag: 'x', commit: s.git.sha }))
  writeReport(reports, 'scan', scan)
  const r = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'deploy.ts')], {
    cwd: repoRoot, okCodes: ANY_EXIT,
    // The local cluster's environment (its signer is this machine's key); the refusal must come before the chart or the cluster.
    env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: reports, KUBE_CONTEXT: '', DEPLOY_VALUES_FILE: '' },
  })
  const out = (r.stdout + r.stderr).trim()
  assert.is.not(r.exitCode, 0, out)
  assert.match(out.split('\n').at(-1) ?? '', re)
  assert.not.match(out, /Chart values|Cluster:|helm upgrade/, 'nothing after the verification ran')
  const report = JSON.parse(readFileSync(join(reports, 'deploy.json'), 'utf8')) as Report<'deploy'>
  assert.is(report.context, null, 'no cluster was contacted')
  assert.is(report.result, 'failed')
  return report
}

setUp(t, 'e2e: sign', async () => {
  s.config = loadConfig({ ...process.env }, {})
  s.docker = (await ensureDockerEngine(s.config.docker)).docker
  await ensureRegistry(LOCAL_REGISTRY)
  s.cosign = await ensureCosign(s.config.cacheDir)
  await signingFor(s.config) // creates the machine's key pair when it has none
  s.work = mkdtempSync(join(tmpdir(), 'sign-e2e-'))
  // The provenance the build stage records for a clean checkout of this commit.
  s.git = { ...(await gitFacts(repoRoot)), dirty: false }
  s.source = (await ociBuildArgs(repoRoot, s.git.sha)).SOURCE!
})

t.after(async () => {
  if (s.docker) await removeTinyImages(s.docker)
  if (s.work) rmSync(s.work, { recursive: true, force: true })
})

t('signed, with provenance, scanned and attested: verified, and the report names what was checked', async () => {
  const digest = await pushImageOnce('good')
  await signAndProvenance(digest)
  await scanAttest(digest)
  const v = await verifyImage(opts(digest))
  assert.match(v.identity, /^key sha256:[0-9a-f]{64}$/)
  assert.is(v.scan.trivy, TRIVY)
  assert.equal(v.scan.blockingSeverities, ['HIGH', 'CRITICAL'])
  assert.is(v.provenance.commit, s.git.sha)
  assert.is(v.provenance.repository, s.source)
  assert.is(v.provenance.dirty, false)
  for (const d of [v.scan.attestation, v.provenance.attestation, v.sbom.attestation]) assert.match(d, /^sha256:[0-9a-f]{64}$/)
  assert.is(v.note, null)
  s.good = digest
})

t('the real scan stage (pinned Trivy, local DB) attaches the SBOM and its decision; verification reads back exactly that', async () => {
  const digest = await pushTinyImage(s.docker, REPO, 'scanned', s.work, DEBIAN_FILES)
  await signAndProvenance(digest)
  const reports = mkdtempSync(join(s.work, 'scan-stage-'))
  writeReport(reports, 'build', buildReportFor(REPO, digest, { tag: 'scanned', commit: s.git.sha }))
  const r = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'scan.ts')], { cwd: repoRoot, okCodes: ANY_EXIT, env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: reports, TRIVY_DB_SOURCE: 'local' } })
  const scan = JSON.parse(readFileSync(join(reports, 'scan.json'), 'utf8')) as { decision: string; deployable?: boolean }
  assert.ok(scan.decision === 'pass' || scan.decision === 'fail')
  assert.is(r.exitCode === 0, scan.decision === 'pass', (r.stdout + r.stderr).slice(-2000))
  const predicate = JSON.parse(readFileSync(join(reports, 'scan', 'scan-attestation.json'), 'utf8')) as { decision: string; image: { digest: string }; scanner: { version: string } }
  assert.is(predicate.decision, scan.decision, 'the attestation says what the gate decided')
  assert.is(predicate.image.digest, digest)
  assert.is(predicate.scanner.version, TRIVY)
  if (scan.decision === 'pass') {
    assert.is(scan.deployable, true)
    const v = await verifyImage(opts(digest))
    assert.is(v.scan.trivy, TRIVY)
  } else {
    await refused(digest, /did not pass/)
  }
})

t('unsigned (attestations but no signature): refused', async () => {
  const digest = await pushImageOnce('unsigned')
  await scanAttest(digest)
  await refused(digest, /has no signature by key sha256:/)
  await deployRefuses(digest, scanReportFor(REPO, digest), /^✖? ?deploy: refused: sha256:.{12}… has no signature by key/)
})

t('signed by another key: refused', async () => {
  const other = mkdtempSync(join(s.work, 'other-key-'))
  const signer: Signer = await ensureLocalKeyPair(s.cosign, other)
  const digest = await pushImageOnce('otherkey')
  await signImage({ cosign: s.cosign, image: `${REPO}@${digest}` }, signer)
  await refused(digest, /has no signature by key sha256:/)
  // The other key's own public key passes the signature: the refusal is about who signed, not a broken signature.
  await refused(digest, /has no https:\/\/doc-server\.dev\/attestations\/scan\/v1 attestation signed by key other/, { imageSigners: [{ kind: 'key', pub: join(other, 'signing', 'cosign.pub'), fingerprint: 'other' }] })
})

async function downloadScanBundle(digest: string): Promise<string> {
  const r = await run([s.cosign, 'download', 'attestation', '--predicate-type', SCAN_PREDICATE_TYPE, ...registryFlags(REPO), `${REPO}@${digest}`])
  const line = r.stdout.split('\n').find((l) => l.trim().startsWith('{'))
  assert.ok(line, 'cosign printed the scan attestation')
  return line!
}

async function attach(digest: string, bundle: string) {
  const file = join(s.work, `attach-${digest.slice(7, 19)}-${Date.now()}.json`)
  writeFileSync(file, bundle)
  await run([s.cosign, 'attach', 'attestation', '--attestation', file, ...registryFlags(REPO), `${REPO}@${digest}`])
}

t('a scan attestation copied from another digest: refused', async () => {
  assert.ok(s.good, 'the first case left a verified image')
  const digest = await pushImageOnce('copied')
  await signAndProvenance(digest)
  await attach(digest, await downloadScanBundle(s.good!))
  // cosign's subject check drops it (and lib/sign/attest.ts would refuse it if it did not): nothing vouches for this digest.
  await refused(digest, /has no https:\/\/doc-server\.dev\/attestations\/scan\/v1 attestation signed by key sha256:.*|copied from another image/)
})

t('a tampered predicate (its signature no longer matches): refused', async () => {
  const donor = await pushImageOnce('tamper-donor')
  await signAndProvenance(donor)
  await scanAttest(donor, { decision: { ...pass(), decision: 'fail', reason: '1 CRITICAL: CVE-2021-45710' } })
  await refused(donor, /did not pass.*CVE-2021-45710/)
  // The donor's genuine, signed statement, edited to say pass for another image, signature kept.
  const target = await pushImageOnce('tampered')
  await signAndProvenance(target)
  const bundle = JSON.parse(await downloadScanBundle(donor)) as { dsseEnvelope?: { payload: string }; payload?: string }
  const env = (bundle.dsseEnvelope ?? bundle) as { payload: string }
  const st = JSON.parse(Buffer.from(env.payload, 'base64').toString('utf8')) as { subject: { digest: { sha256: string } }[]; predicate: { decision: string; reason: string; image: { digest: string } } }
  st.subject = st.subject.map((x) => ({ ...x, digest: { sha256: target.slice(7) } }))
  Object.assign(st.predicate, { decision: 'pass', reason: 'no HIGH or CRITICAL finding', image: { ...st.predicate.image, digest: target } })
  env.payload = Buffer.from(JSON.stringify(st)).toString('base64')
  await attach(target, JSON.stringify(bundle))
  await refused(target, /has no https:\/\/doc-server\.dev\/attestations\/scan\/v1 attestation signed by key/)
})

t('a scan older than SCAN_MAX_AGE: refused, and accepted by a longer limit', async () => {
  const digest = await pushImageOnce('stale')
  await signAndProvenance(digest)
  await scanAttest(digest, { scannedAt: new Date(Date.now() - 30 * 3600_000).toISOString() })
  await refused(digest, /is 30 h old, over the bound of 24 h/)
  assert.ok((await verifyImage(opts(digest, { maxAgeSecs: 48 * 3600 }))).scan.scannedAt)
})

t('a dirty build: refused for a real cluster, accepted for the local one with a note', async () => {
  const digest = await pushImageOnce('dirty')
  await signAndProvenance(digest, { ...s.git, dirty: true })
  await scanAttest(digest)
  await refused(digest, /uncommitted changes/)
  const v = await verifyImage(opts(digest, { allowDirty: true }))
  assert.match(v.note ?? '', /uncommitted changes: accepted by the local cluster only/)
})

t('a --from-report pass is never deployable, even for a signed and attested digest', async () => {
  assert.ok(s.good)
  const reports = mkdtempSync(join(s.work, 'from-report-'))
  // The shape of a Trivy JSON report that passes: an OS and a binary target, no vulnerabilities.
  const trivyJson = join(reports, 'trivy-pass.json')
  writeFileSync(trivyJson, JSON.stringify({ SchemaVersion: 2, ArtifactName: `${REPO}@${s.good}`, ArtifactType: 'container_image', Metadata: { OS: { Family: 'debian', Name: '12.12' } }, Results: [{ Target: 'sign-e2e (debian 12.12)', Class: 'os-pkgs', Type: 'debian', Packages: [{ Name: 'libc6', Version: '2.36-9+deb12u13' }] }, { Target: 'usr/local/share/doc-server/doc-server.dep-v0', Class: 'lang-pkgs', Type: 'rustbinary', Packages: [{ Name: 'tokio', Version: '1.48.0' }] }] }))
  const scan = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'scan.ts'), '--from-report', trivyJson], { cwd: repoRoot, okCodes: ANY_EXIT, env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: reports } })
  const scanJson = readReport(reports, 'scan')
  if (scan.exitCode === 0) {
    assert.is(scanJson.decision, 'pass')
    assert.is(scanJson.deployable, false)
  }
  await deployRefuses(s.good!, scanJson, /^✖? ?deploy: refused: (reports\/scan\.json is a --from-report re-gate|the scan of .* did not pass)/)
})

/** How many referrers the registry lists for `digest`: its referrers API, else the tag cosign falls back to on a registry without one. */
async function referrers(digest: string): Promise<number> {
  const name = REPO.slice(`${LOCAL_REGISTRY}/`.length)
  const headers = { Accept: 'application/vnd.oci.image.index.v1+json' }
  let r = await fetch(`http://${LOCAL_REGISTRY}/v2/${name}/referrers/${digest}`, { headers })
  if (r.status === 404) r = await fetch(`http://${LOCAL_REGISTRY}/v2/${name}/manifests/${digest.replace(':', '-')}`, { headers })
  if (r.status === 404) return 0
  assert.is(r.status, 200, `the registry answered ${r.status} for the referrers of ${digest}`)
  return ((await r.json()) as { manifests: unknown[] }).manifests.length
}

t('signing and attesting a digest again adds nothing; a new scan verdict is still attested, and counts', async () => {
  const digest = await pushImageOnce('again')
  const at = new Date().toISOString()
  const sameScan = { scannedAt: at, db: { source: 'local', updatedAt: at } }
  await signAndProvenance(digest)
  await scanAttest(digest, sameScan)
  assert.is(await referrers(digest), 4, 'signature, provenance, SBOM and scan result')
  // A rebuild of the same commit (a new run id and new times in its provenance) and the same scan result again.
  await signAndProvenance(digest)
  await scanAttest(digest, sameScan)
  assert.is(await referrers(digest), 4, 'nothing was added')
  assert.is((await verifyImage(opts(digest))).scan.scannedAt, at)
  // A newer scan is a new verdict, attested even though the SBOM (identical) is not; failing, it blocks.
  const later = new Date(Date.parse(at) + 60_000).toISOString()
  await scanAttest(digest, { scannedAt: later, db: { source: 'local', updatedAt: later }, decision: { ...pass(), decision: 'fail', reason: '1 CRITICAL: CVE-2021-45710' } })
  assert.is(await referrers(digest), 5, 'the new scan result, and only it, was added')
  await refused(digest, /a newer scan of .* failed after the pass of .*: the scan at .* signed by key sha256:.* found 1 CRITICAL: CVE-2021-45710/)
})

t('only scans under the committed policy count, and every one of them: a laxer pass proves nothing, a later failure blocks until a newer pass', async () => {
  const digest = await pushImageOnce('policy')
  await signAndProvenance(digest)
  const base = Date.now() - 10 * 60_000
  const at = (min: number) => new Date(base + min * 60_000).toISOString()
  const laxer = { ...committedPolicyNow(), ignoreUnfixed: true }
  await scanAttest(digest, { scannedAt: at(0), policy: { ...laxer, digest: policyDigest(laxer) } })
  await refused(digest, /no scan of .* was made under the committed scan policy .*: ignoreUnfixed true \(committed: false\)$/)
  await scanAttest(digest, { scannedAt: at(1) })
  assert.is((await verifyImage(opts(digest))).scan.scannedAt, at(1), 'the pass under the committed policy')
  await scanAttest(digest, { scannedAt: at(2), decision: { ...pass(), decision: 'fail', reason: '1 blocking finding (1 HIGH)', blockingIds: ['CVE-2021-45710'] } })
  // A pass under the laxer policy after it changes nothing.
  await scanAttest(digest, { scannedAt: at(3), policy: { ...laxer, digest: policyDigest(laxer) } })
  await refused(digest, /a newer scan of .* failed after the pass of .* \(CVE-2021-45710\)/)
  await scanAttest(digest, { scannedAt: at(4) })
  const v = await verifyImage(opts(digest))
  assert.is(v.scan.scannedAt, at(4))
  assert.is(v.scan.verdicts, 3, 'the three results under the committed policy were weighed')
})

t.run()
