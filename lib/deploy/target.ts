/**
 * The cluster a deploy or a rescan talks to: `KUBE_CONTEXT` from the
 * kubeconfig when set, else the local cluster (started when it is not running).
 * Either way it must answer before anything is asked of it.
 */
import type { Config } from '../core/config.ts'
import { ensureKubectl } from '../tools/kube.ts'
import { ensureCluster } from '../sandbox/cluster.ts'
import { requireContext, requireReachable, type KubeTarget } from './kube.ts'

export async function connectCluster(config: Config): Promise<KubeTarget> {
  let kube: KubeTarget
  if (config.kubeContext) {
    kube = { kubectl: await ensureKubectl(config.cacheDir), kubeconfig: undefined, context: config.kubeContext }
    await requireContext(kube)
  } else {
    const local = await ensureCluster(config.cacheDir)
    kube = { kubectl: local.binaries.kubectl, kubeconfig: local.kubeconfig, context: local.context }
  }
  await requireReachable(kube)
  return kube
}

/** How a task title names the target. */
export function describeCluster(config: Config, kube: KubeTarget): string {
  return `${kube.context} answers${config.kubeContext ? '' : ' (local cluster, real node)'}`
}
