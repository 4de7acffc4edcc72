import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { findingLine, rescanVerdict } from '../tasks/rescan.ts'

const t = suite('rescan')
const image = { pinned: `127.0.0.1:5000/local/agent-docs@sha256:${'a'.repeat(64)}`, repository: '127.0.0.1:5000/local/agent-docs', digest: `sha256:${'a'.repeat(64)}`, pods: 2 }
const tokio = { id: 'CVE-2021-45710', aliases: ['GHSA-fg7r-2g4j-5cgr'], severity: 'HIGH', pkg: 'tokio', installed: '1.13.0', fixed: '1.13.1, 1.8.4' }

t('a digest that still passes is no failure', () => {
  assert.is(rescanVerdict('release doc-server in doc-server-prod (prod)', image, { decision: 'pass', reason: 'no blocking finding' }), undefined)
})

t('a new blocking finding fails, named with its package, version and fix', () => {
  const line = rescanVerdict('release doc-server in doc-server-prod (prod)', image, { decision: 'fail', reason: '2 blocking', blocking: [tokio, { ...tokio, id: 'CVE-2099-0001', severity: 'CRITICAL', fixed: '' }] })!
  assert.is(line, 'rescan: release doc-server in doc-server-prod (prod) runs sha256:aaaaaaaaaaaa…, which now has 2 blocking findings: CVE-2021-45710 (HIGH, tokio 1.13.0, fixed in 1.13.1, 1.8.4); CVE-2099-0001 (CRITICAL, tokio 1.13.0, no fix yet)')
  assert.not.match(line, /\n/)
})

t('a scan that failed without findings (broken scan, missing DB) fails with its reason', () => {
  assert.match(rescanVerdict('r', image, { decision: 'fail', reason: 'the scan started but did not finish' })!, /did not pass: the scan started but did not finish$/)
  assert.match(findingLine(tokio), /^CVE-2021-45710 \(HIGH, tokio 1\.13\.0, fixed in/)
})

t.run()
