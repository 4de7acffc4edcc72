/**
 * `npm run test:node24`: the tests under Node 24, the line the workflow runs,
 * on a machine whose own Node is older. The binary comes from the npm registry
 * (lib/tools/node.ts) and leads PATH, so every `node` and `tsx` the tests start
 * is Node 24 too. Arguments go to test/run.ts; without any, the unit tests run.
 */
import { dirname, join } from 'node:path'
import { isMain, runMain } from '../lib/core/cli.ts'
import { loadConfig } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { ensureNodeBinary } from '../lib/tools/node.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { run } from '../lib/core/run.ts'
import { withOutput } from '../lib/core/output.ts'
import { VERSIONS } from '../lib/tools/versions.ts'

export async function testUnderNode24(args: readonly string[]): Promise<void> {
  const node = await ensureNodeBinary(loadConfig().cacheDir, VERSIONS.node24)
  console.log(`Node ${VERSIONS.node24}: ${node}`)
  const env = { ...process.env, PATH: `${dirname(node)}:${process.env.PATH ?? ''}` }
  const tsx = join(repoRoot, 'node_modules', 'tsx', 'dist', 'cli.mjs')
  const r = await run([node, tsx, join(repoRoot, 'test', 'run.ts'), ...(args.length ? args : ['--unit'])], {
    cwd: repoRoot,
    env,
    okCodes: [1],
  })
  if (r.exitCode !== 0) throw new PipelineError(`test:node24: tests failed under Node ${VERSIONS.node24} (output above)`)
}

// Not a task list: the tests' own output is the progress, printed as it comes.
if (isMain(import.meta.url))
  await runMain(() =>
    withOutput(
      (line) => console.log(line),
      () => testUnderNode24(process.argv.slice(2)),
    ),
  )
