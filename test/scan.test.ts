import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../lib/core/config.ts'
import { scanInputs, scanSubject } from '../tasks/scan.ts'
import { buildReportFor } from './helpers/reports.ts'

const t = suite('scan')
const DIGEST = `sha256:${'ab'.repeat(32)}`

t('a pushed image is scanned by its digest, from the registry', () => {
  const s = scanSubject(buildReportFor('127.0.0.1:5000/local/agent-docs', DIGEST, { tag: 'abc' }))
  assert.equal(s, { scanned: `127.0.0.1:5000/local/agent-docs@${DIGEST}`, source: 'remote', ref: '127.0.0.1:5000/local/agent-docs:abc', digest: DIGEST })
})

t('an image that was not pushed (pull request) is scanned from the local engine', () => {
  const s = scanSubject(buildReportFor('ghcr.io/o/agent-docs', null, { tag: 'abc' }))
  assert.equal(s, { scanned: 'ghcr.io/o/agent-docs:abc', source: 'docker', ref: 'ghcr.io/o/agent-docs:abc' })
})

t('options: --from-report FILE or --image REPOSITORY@DIGEST, one line for anything else', () => {
  const config = loadConfig({}, {})
  const inputs = (argv: string[]) => scanInputs(argv, config)
  assert.is(inputs([]).fromReport, undefined)
  assert.match(inputs(['--from-report', 'r.json']).fromReport ?? '', /\/r\.json$/)
  assert.is(inputs(['--image', `ghcr.io/o/n@${DIGEST}`]).image, `ghcr.io/o/n@${DIGEST}`)
  for (const bad of [['--from-report'], ['--bogus'], ['r.json']]) {
    assert.throws(() => inputs(bad), (e: Error) => /^scan: .*; usage: scan --from-report <value> --image <value>$/.test(e.message), bad.join(' '))
  }
  assert.throws(() => inputs(['--image', 'ghcr.io/o/n:latest']), /is not repository@sha256:<64 hex>/)
  assert.throws(() => inputs(['--image', `ghcr.io/o/n@${DIGEST}`, '--from-report', 'r.json']), /exclude each other/)
})

t.run()
