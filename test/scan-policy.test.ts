import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { repoRoot } from '../lib/core/paths.ts'
import { decide, isExpired, parseIgnoreFile, readIgnoreFile, today, trivyIgnoreYaml, type IgnoreEntry, type Policy } from '../lib/scan/scan-policy.ts'
import { consoleSummary, markdownSummary, scanReport } from '../lib/scan/scan-summary.ts'
import { readTrivyReport, type Finding, type TrivyReport } from '../lib/scan/trivy-report.ts'

const SHARED_REPORTS = resolve(repoRoot, '..', 'shared', 'fixtures', 'trivy-reports')
const shared = existsSync(SHARED_REPORTS)
if (!shared) console.log(`scan-policy: ${SHARED_REPORTS} is absent; the gate tests on real Trivy reports are skipped`)

const t = suite('scan-policy')
const POLICY: Policy = { severities: ['HIGH', 'CRITICAL'], ignoreUnfixed: false }
const DAY = '2026-06-15'

function finding(extra: Partial<Finding> = {}): Finding {
  return { id: 'CVE-2021-45710', aliases: ['GHSA-fg7r-2g4j-5cgr'], pkg: 'tokio', installed: '1.13.0', fixed: '1.8.4, 1.13.1', status: 'fixed', severity: 'HIGH', target: 'bin', title: '', url: '', ...extra }
}
const reportOf = (...findings: Finding[]): TrivyReport => ({ artifact: 'img', findings, suppressed: [], packages: [], os: undefined })
const entry = (id: string, expiredAt: string): IgnoreEntry => ({ id, statement: 'not reachable: we never close oneshot receivers', expiredAt })

if (shared) {
  const gate = (file: string, policy = POLICY) => decide(readTrivyReport(join(SHARED_REPORTS, file)), policy, [], DAY)

  t('alpine 3.9 fails on its two CRITICAL musl findings', () => {
    const d = gate('alpine-39.json')
    assert.is(d.decision, 'fail')
    assert.equal(d.counts, { CRITICAL: 2, HIGH: 0, MEDIUM: 4, LOW: 0, UNKNOWN: 0 })
    assert.equal(d.blockingIds, ['CVE-2019-14697'])
    assert.equal(d.blocking.map((f) => f.pkg).sort(), ['musl', 'musl-utils'])
    assert.match(d.reason, /^2 HIGH\/CRITICAL findings remain: CVE-2019-14697 in musl(-utils)? 1\.1\.20-r4 \(fixed in 1\.1\.20-r5\)/)
  })

  t('alpine 3.10 passes: MEDIUM findings are counted, not blocking', () => {
    const d = gate('alpine-310.json')
    assert.is(d.decision, 'pass')
    assert.is(d.counts.MEDIUM, 4)
    assert.equal(d.blocking, [])
    assert.match(d.reason, /no HIGH\/CRITICAL vulnerability remains/)
  })

  t('debian buster fails on its CRITICAL libidn2 finding', () => {
    const d = gate('debian-buster.json')
    assert.is(d.decision, 'fail')
    assert.equal(d.blockingIds, ['CVE-2019-18224'])
    assert.equal(d.counts, { CRITICAL: 1, HIGH: 0, MEDIUM: 0, LOW: 1, UNKNOWN: 0 })
  })

  t('ignoring unfixed findings leaves exactly what Trivy --ignore-unfixed reported', () => {
    const ours = gate('debian-buster.json', { severities: ['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'UNKNOWN'], ignoreUnfixed: true })
    const trivys = readTrivyReport(join(SHARED_REPORTS, 'debian-buster-ignore-unfixed.json'))
    assert.equal(ours.blocking.map((f) => `${f.id}/${f.pkg}`), trivys.findings.map((f) => `${f.id}/${f.pkg}`))
    assert.is(ours.unfixedAllowed, 1)
  })

  t('a package-only report (no vulnerabilities) passes', () => {
    assert.is(gate('cargo.lock.json').decision, 'pass')
  })
}

t('an ignore entry in force lets the finding through, and says so', () => {
  const d = decide(reportOf(finding()), POLICY, [entry('CVE-2021-45710', '2026-12-31')], DAY)
  assert.is(d.decision, 'pass')
  assert.equal(d.ignored, [{ id: 'CVE-2021-45710', statement: 'not reachable: we never close oneshot receivers', expiredAt: '2026-12-31', findings: 1 }])
  assert.is(d.counts.HIGH, 0, 'an accepted finding is not counted as open')
  assert.match(d.reason, /1 accepted by the ignore file/)
})

t('an expired entry is not applied: the finding blocks and the reason names the expiry', () => {
  const d = decide(reportOf(finding()), POLICY, [entry('CVE-2021-45710', '2026-01-31')], DAY)
  assert.is(d.decision, 'fail')
  assert.equal(d.blockingIds, ['CVE-2021-45710'])
  assert.equal(d.expired.map((e) => e.id), ['CVE-2021-45710'])
  assert.match(d.reason, /CVE-2021-45710 \[GHSA-fg7r-2g4j-5cgr\] in tokio 1\.13\.0 \(fixed in 1\.8\.4, 1\.13\.1\) \(ignore entry CVE-2021-45710 expired on 2026-01-31\)/)
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
  assert.equal(accepted.ignored.map((e) => [e.id, e.findings]), [['CVE-2021-45710', 1]])
  // A report made with another (laxer) ignore file, or a VEX statement: our policy does not accept it.
  const lax = decide(suppressedByTrivy, POLICY, [], DAY)
  assert.is(lax.decision, 'fail')
  assert.equal(lax.blockingIds, ['CVE-2021-45710'])
  assert.is(decide(suppressedByTrivy, POLICY, [entry('CVE-2021-45710', '2026-01-01')], DAY).expired.length, 1)
})

t('an ignore entry matches the reported id only, not an alias (as Trivy matches)', () => {
  assert.is(decide(reportOf(finding()), POLICY, [entry('GHSA-fg7r-2g4j-5cgr', '2027-01-01')], DAY).decision, 'fail')
})

t('a long list of blocking findings stays one line', () => {
  const many = Array.from({ length: 7 }, (_, i) => finding({ id: `CVE-${i}` }))
  const d = decide(reportOf(...many), POLICY, [], DAY)
  assert.match(d.reason, /and 4 more$/)
  assert.not.match(d.reason, /\n/)
})

t('parses the ignore file: id, statement and expiry date for every entry', () => {
  const yaml = 'vulnerabilities:\n  - id: CVE-2021-45710\n    statement: >\n      Not reachable: we never\n      close a oneshot receiver.\n    expired_at: 2026-12-31\n'
  assert.equal(parseIgnoreFile(yaml, 'f'), [{ id: 'CVE-2021-45710', statement: 'Not reachable: we never close a oneshot receiver.', expiredAt: '2026-12-31' }])
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
    ['vulnerabilities:\n  - id: CVE-1\n    statement: s\n    expired_at: 2026-01-01\n    paths: [x]', /has "paths"; entries carry only id, statement and expired_at/],
    ['vulnerabilities:\n  - id: CVE-1\n    statement: s\n    expired_at: 2026-01-01\n  - id: CVE-1\n    statement: t\n    expired_at: 2026-01-02', /entry 2 repeats CVE-1/],
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

t('the file handed to Trivy holds only the entries in force, in Trivy\'s format', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ign-'))
  const text = trivyIgnoreYaml([entry('CVE-A', '2026-12-31'), entry('CVE-B', '2026-01-01')], DAY)
  writeFileSync(join(dir, 'ignore.yaml'), text)
  const parsed = parseYaml(text) as { vulnerabilities: { id: string; expired_at: string; statement: string }[] }
  assert.equal(parsed.vulnerabilities.map((v) => v.id), ['CVE-A'])
  assert.is(parsed.vulnerabilities[0]!.expired_at, '2026-12-31')
  assert.equal(readIgnoreFile(join(dir, 'ignore.yaml')).map((e) => e.id), ['CVE-A'], 'and it passes our own validation')
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
