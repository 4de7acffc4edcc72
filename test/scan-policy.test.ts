import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { repoRoot } from '../lib/core/paths.ts'
import {
  checkIgnoreHorizon,
  daysBetween,
  decide,
  withCoverage,
  isExpired,
  parseIgnoreFile,
  readIgnoreFile,
  today,
  trivyIgnoreYaml,
  type IgnoreEntry,
  type Policy,
} from '../lib/scan/scan-policy.ts'
import { consoleSummary, markdownSummary, scanReport } from '../lib/scan/scan-summary.ts'
import {
  assertCoverage,
  coverageProblem,
  readTrivyReport,
  type Finding,
  type SecretFinding,
  type TrivyReport,
} from '../lib/scan/trivy-report.ts'

/** Real Trivy reports of the fixture images (test/fixtures/trivy-reports/generate.ts makes them). */
const REPORTS = join(repoRoot, 'test', 'fixtures', 'trivy-reports')

const t = suite('scan-policy')
const POLICY: Policy = { severities: ['HIGH', 'CRITICAL'], ignoreUnfixed: false }
const DAY = '2026-06-15'

function finding(extra: Partial<Finding> = {}): Finding {
  return {
    id: 'CVE-2021-45710',
    aliases: ['GHSA-fg7r-2g4j-5cgr'],
    pkg: 'tokio',
    installed: '1.13.0',
    fixed: '1.8.4, 1.13.1',
    status: 'fixed',
    severity: 'HIGH',
    target: 'bin',
    title: '',
    url: '',
    ...extra,
  }
}
const reportOf = (...findings: Finding[]): TrivyReport => ({
  artifact: 'img',
  results: [],
  secrets: [],
  suppressedSecrets: [],
  findings,
  suppressed: [],
  packages: [],
  os: undefined,
})
const secret = (extra: Partial<SecretFinding> = {}): SecretFinding => ({
  ruleId: 'private-key',
  category: 'AsymmetricPrivateKey',
  title: 'Asymmetric Private Key',
  severity: 'HIGH',
  target: '/etc/ssl/private/server.key',
  startLine: 1,
  endLine: 1,
  ...extra,
})
const entry = (id: string, expiredAt: string): IgnoreEntry => ({
  id,
  statement: 'not reachable: we never close oneshot receivers',
  expiredAt,
})

const gate = (file: string, policy = POLICY, entries: IgnoreEntry[] = []) => {
  const report = readTrivyReport(join(REPORTS, file))
  assertCoverage(report, file)
  return decide(report, policy, entries, DAY)
}

t("the vulnerable image fails on CVE-2021-45710 in its binary's tokio 1.13.0", () => {
  const d = gate('vulnerable.json')
  assert.is(d.decision, 'fail')
  assert.equal(d.blockingIds, ['CVE-2021-45710'])
  assert.equal(d.counts, { CRITICAL: 0, HIGH: 1, MEDIUM: 0, LOW: 0, UNKNOWN: 0 })
  assert.match(
    d.reason,
    /^1 HIGH\/CRITICAL finding remains: CVE-2021-45710 \[GHSA-fg7r-2g4j-5cgr\] in tokio 1\.13\.0 \(fixed in 1\.8\.4, 1\.13\.1\)$/,
  )
  assert.equal(d.secrets, [])
})

t('the clean image passes, and an ignore entry in force accepts the vulnerable one', () => {
  const clean = gate('clean.json')
  assert.is(clean.decision, 'pass')
  assert.match(clean.reason, /^no HIGH\/CRITICAL vulnerability or secret remains after the policy \(0 findings, none blocking\)$/)
  const accepted = gate('vulnerable.json', POLICY, [entry('CVE-2021-45710', '2026-07-01')])
  assert.is(accepted.decision, 'pass')
  assert.equal(
    accepted.ignored.map((e) => [e.id, e.findings]),
    [['CVE-2021-45710', 1]],
  )
  assert.is(
    gate('vulnerable.json', { severities: ['CRITICAL'], ignoreUnfixed: false }).decision,
    'pass',
    'HIGH does not block a CRITICAL-only policy',
  )
})

t('the image with a private key fails, naming rule, file and line', () => {
  const d = gate('secret.json')
  assert.is(d.decision, 'fail')
  assert.equal(d.blockingIds, [])
  assert.is(d.reason, '1 HIGH/CRITICAL secret in the image: private-key (HIGH) in /etc/doc-server/tls.key:2')
})

t('a report that does not cover the OS packages and crates fails, recorded as the decision', () => {
  const report = { ...reportOf(), results: [{ target: 'x (debian 12)', class: 'os-pkgs', type: 'debian', packages: 5 }] }
  const d = withCoverage(decide(report, POLICY, [], DAY), coverageProblem(report, 'r.json'))
  assert.is(d.decision, 'fail')
  assert.match(d.reason, /^r\.json has no result for the binary's crates \(rustbinary\)/)
  const clean = readTrivyReport(join(REPORTS, 'clean.json'))
  assert.is(withCoverage(decide(clean, POLICY, [], DAY), coverageProblem(clean, 'clean.json')).decision, 'pass')
})

t('an ignore entry in force lets the finding through, and says so', () => {
  const d = decide(reportOf(finding()), POLICY, [entry('CVE-2021-45710', '2026-12-31')], DAY)
  assert.is(d.decision, 'pass')
  assert.equal(d.ignored, [
    { id: 'CVE-2021-45710', statement: 'not reachable: we never close oneshot receivers', expiredAt: '2026-12-31', findings: 1 },
  ])
  assert.is(d.counts.HIGH, 0, 'an accepted finding is not counted as open')
  assert.match(d.reason, /1 accepted by the ignore file/)
})

t('an expired entry is not applied: the finding blocks and the reason names the expiry', () => {
  const d = decide(reportOf(finding()), POLICY, [entry('CVE-2021-45710', '2026-01-31')], DAY)
  assert.is(d.decision, 'fail')
  assert.equal(d.blockingIds, ['CVE-2021-45710'])
  assert.equal(
    d.expired.map((e) => e.id),
    ['CVE-2021-45710'],
  )
  assert.match(
    d.reason,
    /CVE-2021-45710 \[GHSA-fg7r-2g4j-5cgr\] in tokio 1\.13\.0 \(fixed in 1\.8\.4, 1\.13\.1\) \(ignore entry CVE-2021-45710 expired on 2026-01-31\)/,
  )
  assert.match(consoleSummary(d), /expired: ignore entry CVE-2021-45710 expired on 2026-01-31 and no longer applies/)
})

t('an entry expires on its expiry day, as in Trivy (midnight UTC)', () => {
  assert.is(isExpired(entry('X', DAY), DAY), true)
  assert.is(isExpired(entry('X', '2026-06-16'), DAY), false)
  assert.is(today(new Date('2026-06-15T23:59:59Z')), '2026-06-15')
  assert.is(today(new Date('2026-06-16T00:00:00+02:00')), '2026-06-15', 'UTC, not local time')
})

t('only the configured severities block; unfixed ones block unless the policy allows them', () => {
  const low = finding({ severity: 'LOW' })
  const unfixed = finding({ id: 'CVE-2', severity: 'CRITICAL', fixed: '', status: 'affected' })
  assert.is(decide(reportOf(low), POLICY, [], DAY).decision, 'pass')
  assert.is(decide(reportOf(low), { severities: ['LOW'], ignoreUnfixed: false }, [], DAY).decision, 'fail')
  assert.is(decide(reportOf(unfixed), POLICY, [], DAY).decision, 'fail')
  const allowed = decide(reportOf(unfixed), { ...POLICY, ignoreUnfixed: true }, [], DAY)
  assert.is(allowed.decision, 'pass')
  assert.is(allowed.counts.CRITICAL, 1, 'still counted')
  assert.match(allowed.reason, /1 HIGH\/CRITICAL without a fix allowed by SCAN_IGNORE_UNFIXED/)
  // A status other than fixed counts as unfixed even with a version, as Trivy's --ignore-unfixed does.
  assert.is(decide(reportOf(finding({ status: 'will_not_fix' })), { ...POLICY, ignoreUnfixed: true }, [], DAY).decision, 'pass')
})

t('what Trivy suppressed is judged again: accepted only by an entry in force here', () => {
  const suppressedByTrivy: TrivyReport = { ...reportOf(), suppressed: [finding()] }
  const accepted = decide(suppressedByTrivy, POLICY, [entry('CVE-2021-45710', '2026-12-31')], DAY)
  assert.is(accepted.decision, 'pass')
  assert.equal(
    accepted.ignored.map((e) => [e.id, e.findings]),
    [['CVE-2021-45710', 1]],
  )
  // A report made with another (laxer) ignore file, or a VEX statement: our policy does not accept it.
  const lax = decide(suppressedByTrivy, POLICY, [], DAY)
  assert.is(lax.decision, 'fail')
  assert.equal(lax.blockingIds, ['CVE-2021-45710'])
  assert.is(decide(suppressedByTrivy, POLICY, [entry('CVE-2021-45710', '2026-01-01')], DAY).expired.length, 1)
})

t('an ignore entry matches the reported id only, not an alias (as Trivy matches)', () => {
  assert.is(decide(reportOf(finding()), POLICY, [entry('GHSA-fg7r-2g4j-5cgr', '2027-01-01')], DAY).decision, 'fail')
})

t('a HIGH or CRITICAL secret blocks, named by rule, file and line; a lower one is listed, not blocking', () => {
  const d = decide({ ...reportOf(), secrets: [secret()] }, POLICY, [], DAY)
  assert.is(d.decision, 'fail')
  assert.is(d.reason, '1 HIGH/CRITICAL secret in the image: private-key (HIGH) in /etc/ssl/private/server.key:1')
  assert.equal(
    d.blockingSecrets.map((x) => x.ruleId),
    ['private-key'],
  )
  assert.match(
    consoleSummary(d),
    /secrets \(1 blocking; values never shown\):\n\s+severity\s+rule\s+file\s+line\n\s+HIGH\s+private-key\s+\/etc\/ssl\/private\/server\.key\s+1/,
  )
  const body = scanReport(d, { scanned: 'i', source: 'remote' }, { ...POLICY, ignoreFile: 'f' })
  assert.equal(body.secrets, [
    {
      ruleId: 'private-key',
      category: 'AsymmetricPrivateKey',
      severity: 'HIGH',
      file: '/etc/ssl/private/server.key',
      startLine: 1,
      endLine: 1,
      blocking: true,
    },
  ])
  const both = decide({ ...reportOf(finding()), secrets: [secret()] }, POLICY, [], DAY)
  assert.match(both.reason, /^1 HIGH\/CRITICAL secret in the image: .*; 1 HIGH\/CRITICAL finding remains: CVE-2021-45710/)
  const low = decide({ ...reportOf(), secrets: [secret({ severity: 'LOW', ruleId: 'jwt-token' })] }, POLICY, [], DAY)
  assert.is(low.decision, 'pass')
  assert.match(
    low.reason,
    /no HIGH\/CRITICAL vulnerability or secret remains after the policy \(0 findings, none blocking; 1 secret below HIGH\/CRITICAL\)/,
  )
  // SCAN_IGNORE_UNFIXED is about vulnerabilities; a secret Trivy was told to suppress is judged again.
  assert.is(decide({ ...reportOf(), suppressedSecrets: [secret()] }, { ...POLICY, ignoreUnfixed: true }, [], DAY).decision, 'fail')
})

t('an ignore entry may expire at most SCAN_IGNORE_MAX_DAYS ahead', () => {
  assert.is(daysBetween('2026-06-15', '2026-09-13'), 90)
  checkIgnoreHorizon([entry('CVE-A', '2026-09-13'), entry('CVE-B', '2020-01-01')], 'f', DAY, 90)
  assert.throws(
    () => checkIgnoreHorizon([entry('CVE-A', '2026-09-14')], '.trivyignore.yaml', DAY, 90),
    /^scan: ignore file \.trivyignore\.yaml: CVE-A expires on 2026-09-14, 91 days ahead; at most SCAN_IGNORE_MAX_DAYS=90 days are allowed, so set an earlier expired_at and review it then$/,
  )
  const dir = mkdtempSync(join(tmpdir(), 'ign-'))
  writeFileSync(join(dir, 'i.yaml'), 'vulnerabilities:\n  - id: CVE-1\n    statement: s\n    expired_at: 2099-01-01\n')
  assert.throws(() => readIgnoreFile(join(dir, 'i.yaml'), { day: DAY, maxDays: 90 }), /CVE-1 expires on 2099-01-01/)
  assert.is(readIgnoreFile(join(dir, 'i.yaml'), { day: DAY, maxDays: 365 * 80 }).length, 1)
})

t('a long list of blocking findings stays one line', () => {
  const many = Array.from({ length: 7 }, (_, i) => finding({ id: `CVE-${i}` }))
  const d = decide(reportOf(...many), POLICY, [], DAY)
  assert.match(d.reason, /and 4 more$/)
  assert.not.match(d.reason, /\n/)
})

t('parses the ignore file: id, statement and expiry date for every entry', () => {
  const yaml =
    'vulnerabilities:\n  - id: CVE-2021-45710\n    statement: >\n      Not reachable: we never\n      close a oneshot receiver.\n    expired_at: 2026-12-31\n'
  assert.equal(parseIgnoreFile(yaml, 'f'), [
    { id: 'CVE-2021-45710', statement: 'Not reachable: we never close a oneshot receiver.', expiredAt: '2026-12-31' },
  ])
  assert.equal(parseIgnoreFile('', 'f'), [])
  assert.equal(parseIgnoreFile('vulnerabilities: []\n', 'f'), [])
})

t('an ignore file that does not parse or lacks a field fails with one line', () => {
  const cases: [string, RegExp][] = [
    ['vulnerabilities: [', /ignore file f does not parse: /],
    ['- id: X', /must be a mapping with a vulnerabilities list/],
    ['vulnerabilities: X', /vulnerabilities must be a list/],
    ['misconfigurations: []', /has "misconfigurations"; only vulnerabilities are scanned/],
    ['vulnerabilities:\n  - CVE-1', /entry 1 is not a mapping/],
    ['vulnerabilities:\n  - statement: s\n    expired_at: 2026-01-01', /entry 1 has no id/],
    ['vulnerabilities:\n  - id: CVE-1\n    expired_at: 2026-01-01', /entry 1 \(CVE-1\) has no statement/],
    ['vulnerabilities:\n  - id: CVE-1\n    statement: s', /has no expired_at date; every exception must end/],
    ['vulnerabilities:\n  - id: CVE-1\n    statement: s\n    expired_at: 2026-02-30', /expired_at "2026-02-30"; expected a date/],
    ['vulnerabilities:\n  - id: CVE-1\n    statement: s\n    expired_at: next year', /expired_at "next year"/],
    [
      'vulnerabilities:\n  - id: CVE-1\n    statement: s\n    expired_at: 2026-01-01\n    paths: [x]',
      /has "paths"; entries carry only id, statement and expired_at/,
    ],
    [
      'vulnerabilities:\n  - id: CVE-1\n    statement: s\n    expired_at: 2026-01-01\n  - id: CVE-1\n    statement: t\n    expired_at: 2026-01-02',
      /entry 2 repeats CVE-1/,
    ],
  ]
  for (const [text, re] of cases) {
    try {
      parseIgnoreFile(text, 'f')
      assert.unreachable(`accepted ${text}`)
    } catch (err) {
      assert.match((err as Error).message, re)
      assert.not.match((err as Error).message, /\n/)
    }
  }
})

t('a missing ignore file is an error naming SCAN_IGNORE_FILE', () => {
  assert.throws(() => readIgnoreFile('/nonexistent/.trivyignore.yaml'), /does not exist; create it .* or set SCAN_IGNORE_FILE/)
})

t('the repository ignore file is valid', () => {
  readIgnoreFile(join(repoRoot, '.trivyignore.yaml'))
})

t("the file handed to Trivy holds only the entries in force, in Trivy's format", () => {
  const dir = mkdtempSync(join(tmpdir(), 'ign-'))
  const text = trivyIgnoreYaml([entry('CVE-A', '2026-12-31'), entry('CVE-B', '2026-01-01')], DAY)
  writeFileSync(join(dir, 'ignore.yaml'), text)
  const parsed = parseYaml(text) as { vulnerabilities: { id: string; expired_at: string; statement: string }[] }
  assert.equal(
    parsed.vulnerabilities.map((v) => v.id),
    ['CVE-A'],
  )
  assert.is(parsed.vulnerabilities[0]!.expired_at, '2026-12-31')
  assert.equal(
    readIgnoreFile(join(dir, 'ignore.yaml')).map((e) => e.id),
    ['CVE-A'],
    'and it passes our own validation',
  )
})

t('the summary and scan.json carry the same facts as the decision', () => {
  const d = decide(reportOf(finding(), finding({ id: 'CVE-9', severity: 'MEDIUM' })), POLICY, [], DAY)
  const text = consoleSummary(d)
  assert.match(text, /findings\s+0\s+1\s+1\s+0\s+0/)
  assert.match(text, /HIGH\s+CVE-2021-45710 \(GHSA-fg7r-2g4j-5cgr\)\s+tokio\s+1\.13\.0\s+1\.8\.4, 1\.13\.1/)
  const md = markdownSummary(d, { scanned: 'r/o/n@sha256:1', source: 'remote' }, POLICY)
  assert.match(md, /### scan: FAILED/)
  assert.match(md, /\| HIGH \| CVE-2021-45710 \(GHSA-fg7r-2g4j-5cgr\) \| tokio \|/)
  const body = scanReport(d, { scanned: 'r/o/n@sha256:1', source: 'remote' }, { ...POLICY, ignoreFile: '.trivyignore.yaml' })
  assert.is(body.decision, 'fail')
  assert.equal(body.blockingIds, ['CVE-2021-45710'])
  assert.is(body.counts.MEDIUM, 1)
})

t.run()
