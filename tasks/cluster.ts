/**
 * The local Kubernetes the deploy stage and its tests use when no
 * KUBE_CONTEXT is configured: `up` (build once, create or start, with its
 * admission controller), `down` (stop; releases survive in etcd), `status`,
 * `delete` (remove its state).
 */
import { cachedBinaries } from '../lib/tools/kube.ts'
import { isMain, parseOptions, runMain, taskList } from '../lib/core/cli.ts'
import { loadConfig } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { CLUSTER_CONTEXT, clusterStateDir, clusterStatus, deleteCluster, ensureCluster, stopCluster } from '../lib/sandbox/cluster.ts'
import { startAdmission } from '../lib/sandbox/admission.ts'
import { describeController } from '../lib/deploy/admission.ts'

const ACTIONS = ['up', 'down', 'status', 'delete'] as const
type Action = (typeof ACTIONS)[number]

export function parseAction(argv: readonly string[]): Action {
  const { positionals } = parseOptions('cluster', argv, {}, ACTIONS.join('|'))
  const action = ACTIONS.find((a) => positionals.length === 1 && a === positionals[0])
  if (!action) throw new PipelineError(`cluster: use one of ${ACTIONS.join(', ')}${positionals.length ? `, not "${positionals.join(' ')}"` : ''}`)
  return action
}

async function main(argv: readonly string[]): Promise<void> {
  const action = parseAction(argv)
  const cache = loadConfig().cacheDir
  if (action === 'status') {
    const kubectl = cachedBinaries(cache).find((b) => b.name === 'kubectl')
    console.log(`local cluster: ${await clusterStatus(cache, kubectl?.present ? kubectl.path : undefined)} (state in ${clusterStateDir(cache)})`)
    for (const b of cachedBinaries(cache)) console.log(`  ${b.present ? '✔' : '✖'} ${b.name}  ${b.path}`)
    return
  }
  const title = { up: 'Local cluster: up', down: 'Local cluster: stop', delete: 'Local cluster: delete' }[action]
  await taskList<object>([
    {
      title,
      task: async (_ctx, task) => {
        if (action === 'up') {
          const c = await ensureCluster(cache)
          const admission = await startAdmission(cache, c)
          task.title = `Local cluster: up (kubectl --kubeconfig ${c.kubeconfig} --context ${CLUSTER_CONTEXT}); admission: ${describeController(admission.state)}`
        } else if (action === 'down') {
          task.title = (await stopCluster(cache)) ? 'Local cluster: stopped (state kept)' : 'Local cluster: none to stop'
        } else {
          await deleteCluster(cache)
          task.title = 'Local cluster: deleted'
        }
      },
    },
  ]).run({})
}

if (isMain(import.meta.url)) await runMain(() => main(process.argv.slice(2)))
