import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parseScanArgs, scanSubject } from '../tasks/scan.ts'

const t = suite('scan')
const DIGEST = `sha256:${'ab'.repeat(32)}`

t('a pushed image is scanned by its digest, from the registry', () => {
  const s = scanSubject({ image: { ref: '127.0.0.1:5000/local/agent-docs:abc', digest: DIGEST, repository: '127.0.0.1:5000/local/agent-docs' }, pushed: true })
  assert.equal(s, { scanned: `127.0.0.1:5000/local/agent-docs@${DIGEST}`, source: 'remote', ref: '127.0.0.1:5000/local/agent-docs:abc', digest: DIGEST })
})

t('an image that was not pushed (pull request) is scanned from the local engine', () => {
  const s = scanSubject({ image: { ref: 'ghcr.io/o/agent-docs:abc', digest: null, repository: 'ghcr.io/o/agent-docs' }, pushed: false })
  assert.equal(s, { scanned: 'ghcr.io/o/agent-docs:abc', source: 'docker', ref: 'ghcr.io/o/agent-docs:abc' })
})

t('the only option is --from-report FILE', () => {
  assert.equal(parseScanArgs([]), {})
  assert.match(parseScanArgs(['--from-report', 'r.json']).fromReport ?? '', /\/r\.json$/)
  for (const bad of [['--from-report'], ['--from-report', '--x'], ['--bogus'], ['r.json']]) {
    assert.throws(() => parseScanArgs(bad), /the only option is --from-report FILE/)
  }
})

t.run()
