/**
 * `npm run test:node24`: the tests run under the Node 24 binary from the npm
 * registry, whatever Node started them, and a failing run fails the command.
 */
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../../lib/core/config.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { VERSIONS } from '../../lib/tools/versions.ts'

const t = suite('e2e: test:node24')
const tsx = join(repoRoot, 'node_modules', '.bin', 'tsx')
const node24 = (...args: string[]) =>
  run([tsx, join(repoRoot, 'tasks', 'test-node24.ts'), ...args], {
    cwd: repoRoot,
    env: { ...process.env, FORCE_COLOR: '0' },
    okCodes: ANY_EXIT,
  })

t('the binary is Node 24 from the cache, and a unit file passes under it', async () => {
  const r = await node24('image-ref')
  const out = r.stdout + r.stderr
  assert.is(r.exitCode, 0, out)
  const bin = join(loadConfig().cacheDir, 'tools', 'node', VERSIONS.node24, 'bin', 'node')
  assert.ok(out.includes(`Node ${VERSIONS.node24}: ${bin}`), out)
  assert.is((await run([bin, '-p', 'process.versions.node'])).stdout.trim(), VERSIONS.node24)
  assert.match(out, /Passed:\s+[1-9]/)
})

t('a failing run under Node 24 fails the command with one line', async () => {
  const r = await node24('no-such-test-file')
  assert.is.not(r.exitCode, 0)
  assert.ok(r.stderr.includes(`test:node24: tests failed under Node ${VERSIONS.node24}`), r.stderr)
})

t.run()
