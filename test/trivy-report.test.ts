import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { repoRoot } from '../lib/core/paths.ts'
import { parseTrivyReport, readTrivyReport, sarifRuleIds } from '../lib/scan/trivy-report.ts'

/** Real Trivy outputs kept beside the repository, never copied into it. */
const SHARED_REPORTS = resolve(repoRoot, '..', 'shared', 'fixtures', 'trivy-reports')
const shared = existsSync(SHARED_REPORTS)
if (!shared) console.log(`trivy-report: ${SHARED_REPORTS} is absent; the tests on real Trivy reports are skipped`)

const t = suite('trivy-report')

const report = (body: object) => JSON.stringify({ SchemaVersion: 2, ArtifactName: 'img', ArtifactType: 'container_image', ...body })
const vuln = (extra: object = {}) => ({ VulnerabilityID: 'CVE-1', PkgName: 'p', InstalledVersion: '1.0', FixedVersion: '1.1', Status: 'fixed', Severity: 'HIGH', ...extra })

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

if (shared) {
  t('reads the real alpine 3.9 report: six findings with package, versions and severity', () => {
    const r = readTrivyReport(join(SHARED_REPORTS, 'alpine-39.json'))
    assert.is(r.artifact, 'testdata/fixtures/images/alpine-39.tar.gz')
    assert.is(r.os, 'alpine 3.9.4')
    assert.is(r.findings.length, 6)
    const musl = r.findings.find((f) => f.pkg === 'musl')!
    assert.equal([musl.id, musl.installed, musl.fixed, musl.severity, musl.status], ['CVE-2019-14697', '1.1.20-r4', '1.1.20-r5', 'CRITICAL', 'fixed'])
  })

  t('a finding with no fixed version reads as an empty fix', () => {
    const r = readTrivyReport(join(SHARED_REPORTS, 'debian-buster.json'))
    const bash = r.findings.find((f) => f.pkg === 'bash')!
    assert.is(bash.fixed, '')
    assert.is(bash.status, 'affected')
  })

  t('a report with packages and no vulnerabilities is clean, and lists its packages', () => {
    const r = readTrivyReport(join(SHARED_REPORTS, 'cargo.lock.json'))
    assert.is(r.findings.length, 0)
    assert.is(r.packages.length, 7)
  })

  t('the SARIF fixture holds one result per finding of the matching JSON report', () => {
    const ids = sarifRuleIds(readFileSync(join(SHARED_REPORTS, 'alpine-310.sarif'), 'utf8'), 'alpine-310.sarif')
    const json = readTrivyReport(join(SHARED_REPORTS, 'alpine-310.json'))
    assert.equal(ids, json.findings.map((f) => f.id).sort())
  })
}

t('a result without Vulnerabilities is clean; vendor ids are kept as aliases', () => {
  const r = parseTrivyReport(report({ Results: [{ Target: 'os' }, { Target: 'bin', Vulnerabilities: [vuln({ VendorIDs: ['GHSA-x'] })] }] }), 'r.json')
  assert.is(r.findings.length, 1)
  assert.equal(r.findings[0]!.aliases, ['GHSA-x'])
  assert.is(r.findings[0]!.target, 'bin')
})

t('vulnerabilities Trivy suppressed (--show-suppressed) are kept apart, other kinds are not', () => {
  const r = parseTrivyReport(report({ Results: [{ Target: 'bin', ExperimentalModifiedFindings: [
    { Type: 'vulnerability', Status: 'ignored', Statement: 'accepted', Source: 'ignore.yaml', Finding: vuln({ VulnerabilityID: 'CVE-9' }) },
    { Type: 'secret', Status: 'ignored', Finding: { RuleID: 'aws-key' } },
  ] }] }), 'r.json')
  assert.equal(r.findings, [])
  assert.equal(r.suppressed.map((f) => f.id), ['CVE-9'])
  refuses(report({ Results: [{ Target: 'x', ExperimentalModifiedFindings: {} }] }), /malformed ExperimentalModifiedFindings in x/)
  refuses(report({ Results: [{ Target: 'x', ExperimentalModifiedFindings: [{ Type: 'vulnerability', Finding: {} }] }] }), /suppressed finding #1 has no VulnerabilityID/)
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
  refuses(report({ Results: [{}] }), /malformed result #1 \(no Target\)/)
  refuses(report({ Results: [{ Target: 'x', Vulnerabilities: {} }] }), /malformed Vulnerabilities in x/)
  refuses(report({ Results: [{ Target: 'x', Vulnerabilities: [vuln({ VulnerabilityID: '' })] }] }), /vulnerability #1 has no VulnerabilityID/)
  refuses(report({ Results: [{ Target: 'x', Vulnerabilities: [vuln({ PkgName: undefined })] }] }), /has no PkgName/)
  refuses(report({ Results: [{ Target: 'x', Vulnerabilities: [vuln({ Severity: 'SEVERE' })] }] }), /unknown Severity "SEVERE"/)
  refuses(report({ Results: [{ Target: 'x', Vulnerabilities: ['CVE-1'] }] }), /is not an object/)
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
