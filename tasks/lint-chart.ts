/**
 * `npm run lint:chart`: `helm lint --strict` of charts/doc-server with each
 * environment's values, so a chart or values change that only one
 * environment trips over is caught before a deploy.
 */
import { ensureHelm } from '../lib/tools/kube.ts'
import { isMain, runMain, taskList } from '../lib/core/cli.ts'
import { loadConfig } from '../lib/core/config.ts'
import { CHART_DIR, valueFiles } from '../lib/deploy/deploy.ts'
import { run } from '../lib/core/run.ts'

export const ENVIRONMENTS = ['dev', 'staging', 'prod'] as const

async function main(): Promise<void> {
  const cache = loadConfig().cacheDir
  let helm = ''
  await taskList<object>([
    { title: 'helm', task: async () => void (helm = await ensureHelm(cache)) },
    ...ENVIRONMENTS.map((env) => ({
      title: `helm lint --strict (${env})`,
      task: async () => {
        // A digest as the deploy sets it, so the by-digest path is the one linted.
        const sets = ['--set-string', `image.digest=sha256:${'0'.repeat(64)}`]
        await run([helm, 'lint', '--strict', CHART_DIR, ...valueFiles(env, undefined).flatMap((f) => ['--values', f]), ...sets])
      },
    })),
  ]).run({})
}

if (isMain(import.meta.url)) await runMain(main)
