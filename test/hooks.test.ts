import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { run, ANY_EXIT } from '../lib/core/run.ts'
import { repoRoot } from '../lib/core/paths.ts'

const t = suite('hooks')

t('a suite whose set-up fails fails the run, naming the suite and the reason', async () => {
  const fixture = fileURLToPath(new URL('./fixtures/hooks/failing-setup.suite.ts', import.meta.url))
  const script = `import { run } from 'uvu/run'\nimport { failIfSetUpFailed } from ${JSON.stringify(join(repoRoot, 'test', 'helpers', 'hooks.ts'))}\nawait run([{ name: 'failing-setup', file: ${JSON.stringify(fixture)} }], { bail: false })\nfailIfSetUpFailed()\n`
  const r = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), '--input-type=module', '-e', script], {
    cwd: repoRoot,
    okCodes: ANY_EXIT,
    timeoutMs: 60_000,
  })
  assert.is(r.exitCode, 1, r.stdout + r.stderr)
  assert.match(r.stderr, /failing set-up: set-up failed, so none of its tests ran:\nError: registry on 127\.0\.0\.1:5000 did not answer/)
  assert.match(r.stderr, /^test: set-up failed: failing set-up: registry on 127\.0\.0\.1:5000 did not answer$/m)
  assert.match(r.stdout, /Passed:\s+0/)
})

t.run()
