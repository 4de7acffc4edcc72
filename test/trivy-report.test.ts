import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { repoRoot } from '../lib/core/paths.ts'
import { assertCoverage, assertSarifAgrees, parseTrivyReport, readTrivyReport, sarifRuleIds } from '../lib/scan/trivy-report.ts'

/** Real Trivy reports of the fixture images (test/fixtures/trivy-reports/generate.ts makes them). */
const REPORTS = join(repoRoot, 'test', 'fixtures', 'trivy-reports')

const t = suite('trivy-report')

const report = (body: object) => JSON.stringify({ SchemaVersion: 2, ArtifactName: 'img', ArtifactType: 'container_image', ...body })
const vuln = (extra: object = {}) => ({
  VulnerabilityID: 'CVE-1',
  PkgName: 'p',
  InstalledVersion: '1.0',
  FixedVersion: '1.1',
  Status: 'fixed',
  Severity: 'HIGH',
  ...extra,
})

function refuses(text: string, re: RegExp) {
  try {
    parseTrivyReport(text, 'r.json')
    assert.unreachable(`accepted ${text.slice(0, 80)}`)
  } catch (err) {
    const msg = (err as Error).message
    assert.match(msg, re)
    assert.not.match(msg, /\n/, 'one line')
  }
}

t("reads the real report of the vulnerable image: OS packages, the binary's crates, one finding", () => {
  const r = readTrivyReport(join(REPORTS, 'vulnerable.json'))
  assert.match(r.artifact, /^127\.0\.0\.1:5000\/local\/scan-fixture-vulnerable@sha256:[a-f0-9]{64}$/)
  assert.match(r.os ?? '', /^debian 12/)
  assertCoverage(r, 'vulnerable.json')
  assert.ok(
    r.packages.some((p) => p.name === 'base-files'),
    "lists the static base's base-files",
  )
  assert.ok(
    r.packages.some((p) => p.name === 'tokio' && p.version === '1.13.0'),
    'lists tokio 1.13.0',
  )
  assert.is(r.findings.length, 1)
  const f = r.findings[0]!
  assert.equal(
    [f.id, f.pkg, f.installed, f.fixed, f.severity, f.status, f.target],
    ['CVE-2021-45710', 'tokio', '1.13.0', '1.8.4, 1.13.1', 'HIGH', 'fixed', 'usr/local/bin/scan-fixture'],
  )
  assert.equal(f.aliases, ['GHSA-fg7r-2g4j-5cgr'])
})

t("the clean image's report lists its packages and no finding; the secret image's lists the key by file", () => {
  const clean = readTrivyReport(join(REPORTS, 'clean.json'))
  assertCoverage(clean, 'clean.json')
  assert.equal([clean.findings.length, clean.secrets.length], [0, 0])
  assert.ok(clean.packages.some((p) => p.name === 'tokio' && p.version === '1.38.2'))
  const secret = readTrivyReport(join(REPORTS, 'secret.json'))
  assertCoverage(secret, 'secret.json')
  assert.equal(
    secret.secrets.map((x) => [x.ruleId, x.severity, x.target, x.startLine]),
    [['private-key', 'HIGH', '/etc/doc-server/tls.key', 2]],
  )
})

t('each SARIF fixture holds one result per finding and secret of its JSON report', () => {
  for (const kind of ['vulnerable', 'clean', 'secret']) {
    const json = readTrivyReport(join(REPORTS, `${kind}.json`))
    assert.is(
      assertSarifAgrees(json, readFileSync(join(REPORTS, `${kind}.sarif`), 'utf8'), `${kind}.sarif`),
      json.findings.length + json.secrets.length,
      kind,
    )
  }
})

t('a result without Vulnerabilities is clean; vendor ids are kept as aliases', () => {
  const r = parseTrivyReport(
    report({ Results: [{ Target: 'os' }, { Target: 'bin', Vulnerabilities: [vuln({ VendorIDs: ['GHSA-x'] })] }] }),
    'r.json',
  )
  assert.is(r.findings.length, 1)
  assert.equal(r.findings[0]!.aliases, ['GHSA-x'])
  assert.is(r.findings[0]!.target, 'bin')
})

t('vulnerabilities Trivy suppressed (--show-suppressed) are kept apart, misconfigurations are not read', () => {
  const r = parseTrivyReport(
    report({
      Results: [
        {
          Target: 'bin',
          ExperimentalModifiedFindings: [
            {
              Type: 'vulnerability',
              Status: 'ignored',
              Statement: 'accepted',
              Source: 'ignore.yaml',
              Finding: vuln({ VulnerabilityID: 'CVE-9' }),
            },
            { Type: 'misconfiguration', Status: 'ignored', Finding: { ID: 'DS001' } },
          ],
        },
      ],
    }),
    'r.json',
  )
  assert.equal(r.findings, [])
  assert.equal(
    r.suppressed.map((f) => f.id),
    ['CVE-9'],
  )
  refuses(report({ Results: [{ Target: 'x', ExperimentalModifiedFindings: {} }] }), /malformed ExperimentalModifiedFindings in x/)
  refuses(
    report({ Results: [{ Target: 'x', ExperimentalModifiedFindings: [{ Type: 'vulnerability', Finding: {} }] }] }),
    /suppressed finding #1 has no VulnerabilityID/,
  )
})

t('a missing severity reads as UNKNOWN, as Trivy reads it', () => {
  const v = vuln()
  delete (v as { Severity?: string }).Severity
  assert.is(parseTrivyReport(report({ Results: [{ Target: 'x', Vulnerabilities: [v] }] }), 'r.json').findings[0]!.severity, 'UNKNOWN')
})

t('fails closed, in one line, on anything it cannot vouch for', () => {
  refuses('{"SchemaVersion": 2, "Resu', /not valid JSON/)
  refuses('[]', /not a Trivy report/)
  refuses(JSON.stringify({ Results: [] }), /no SchemaVersion/)
  refuses(report({ SchemaVersion: 3, Results: [] }), /SchemaVersion 3; the gate reads only Trivy's SchemaVersion 2/)
  refuses(report({ SchemaVersion: '2', Results: [] }), /SchemaVersion "2"/)
  refuses(report({}), /no Results: Trivy found nothing to scan/)
  refuses(report({ Results: {} }), /malformed Results/)
  refuses(report({ Results: [] }), /has empty Results: Trivy listed nothing it scanned, so it cannot vouch for the image/)
  refuses(report({ Results: [{}] }), /malformed result #1 \(no Target\)/)
  refuses(report({ Results: [{ Target: 'x', Vulnerabilities: {} }] }), /malformed Vulnerabilities in x/)
  refuses(
    report({ Results: [{ Target: 'x', Vulnerabilities: [vuln({ VulnerabilityID: '' })] }] }),
    /vulnerability #1 has no VulnerabilityID/,
  )
  refuses(report({ Results: [{ Target: 'x', Vulnerabilities: [vuln({ PkgName: undefined })] }] }), /has no PkgName/)
  refuses(report({ Results: [{ Target: 'x', Vulnerabilities: [vuln({ Severity: 'SEVERE' })] }] }), /unknown Severity "SEVERE"/)
  refuses(report({ Results: [{ Target: 'x', Vulnerabilities: ['CVE-1'] }] }), /is not an object/)
})

const covered = (extra: object[] = []) => [
  { Target: 'img (debian 12.13)', Class: 'os-pkgs', Type: 'debian', Packages: [{ Name: 'libc6', Version: '2.36' }] },
  { Target: 'usr/local/bin/x', Class: 'lang-pkgs', Type: 'rustbinary', Packages: [{ Name: 'tokio', Version: '1.13.0' }] },
  ...extra,
]
const coverage = (results: object[]) => () => assertCoverage(parseTrivyReport(report({ Results: results }), 'r.json'), 'r.json')

t("an image report must show the OS packages and the binary's crates were scanned", () => {
  coverage(covered())()
  const [os, crates] = covered()
  assert.throws(coverage([crates!]), /^scan: r\.json has no result for the image's OS packages: Trivy did not recognise the OS/)
  assert.throws(coverage([os!]), /^scan: r\.json has no result for the binary's crates \(rustbinary\)/)
  assert.throws(
    coverage([{ ...os!, Packages: undefined }, crates!]),
    /lists no OS packages for img \(debian 12\.13\): scan with --list-all-pkgs/,
  )
  assert.throws(coverage([os!, { ...crates!, Packages: [] }]), /lists no crates for usr\/local\/bin\/x/)
  // A result with only a secret does not stand in for either.
  assert.throws(coverage([{ Target: 'etc/key', Class: 'secret' }, crates!]), /no result for the image's OS packages/)
})

t('secrets are read by rule, severity, file and line; their matched text is never kept', () => {
  const r = parseTrivyReport(
    report({
      Results: covered([
        {
          Target: '/etc/ssl/private/server.key',
          Class: 'secret',
          Secrets: [
            {
              RuleID: 'private-key',
              Category: 'AsymmetricPrivateKey',
              Severity: 'HIGH',
              Title: 'Asymmetric Private Key',
              StartLine: 1,
              EndLine: 1,
              Match: '----BEGIN RSA PRIVATE KEY-----****',
              Code: { Lines: [{ Number: 1, Content: 'MIIEsecret' }] },
            },
          ],
        },
      ]),
    }),
    'r.json',
  )
  assert.equal(r.secrets, [
    {
      ruleId: 'private-key',
      category: 'AsymmetricPrivateKey',
      title: 'Asymmetric Private Key',
      severity: 'HIGH',
      target: '/etc/ssl/private/server.key',
      startLine: 1,
      endLine: 1,
    },
  ])
  assert.not.match(JSON.stringify(r), /MIIE|\*\*\*\*/)
  refuses(report({ Results: [{ Target: 'k', Secrets: [{ Severity: 'HIGH' }] }] }), /k secret #1 has no RuleID/)
  refuses(report({ Results: [{ Target: 'k', Secrets: {} }] }), /malformed Secrets in k/)
  const sup = parseTrivyReport(
    report({
      Results: [
        {
          Target: 'k',
          ExperimentalModifiedFindings: [{ Type: 'secret', Status: 'ignored', Finding: { RuleID: 'aws-key', Severity: 'CRITICAL' } }],
        },
      ],
    }),
    'r.json',
  )
  assert.equal(
    sup.suppressedSecrets.map((x) => x.ruleId),
    ['aws-key'],
  )
})

t('a missing report file is a failed scan, not a clean one', () => {
  assert.throws(() => readTrivyReport('/nonexistent/trivy.json'), /Trivy report \/nonexistent\/trivy\.json is missing/)
  const dir = mkdtempSync(join(tmpdir(), 'trep-'))
  writeFileSync(join(dir, 'empty.json'), '')
  assert.throws(() => readTrivyReport(join(dir, 'empty.json')), /not valid JSON/)
})

t('SARIF that is not SARIF is refused', () => {
  assert.throws(() => sarifRuleIds('{}', 's.sarif'), /not SARIF/)
  assert.throws(() => sarifRuleIds('nope', 's.sarif'), /not valid JSON/)
  assert.equal(sarifRuleIds(JSON.stringify({ runs: [{ results: [{ ruleId: 'B' }, { ruleId: 'A' }] }] }), 's'), ['A', 'B'])
})

t.run()
