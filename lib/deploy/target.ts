/**
 * The cluster a deploy or a rescan talks to: `KUBE_CONTEXT` from the
 * kubeconfig when set, else the one the caller starts on this machine (the
 * stage tasks pass the local cluster; a stage library never starts it).
 * Either way it must answer before anything is asked of it.
 */
import type { Config } from '../core/config.ts'
import { PipelineError } from '../core/errors.ts'
import { ensureKubectl } from '../tools/kube.ts'
import { requireContext, requireReachable, type KubeTarget } from './kube.ts'

export async function connectCluster(config: Config, local?: () => Promise<KubeTarget>): Promise<KubeTarget> {
  let kube: KubeTarget
  if (config.kubeContext) {
    kube = { kubectl: await ensureKubectl(config.cacheDir), kubeconfig: undefined, context: config.kubeContext }
    await requireContext(kube)
  } else if (local) {
    kube = await local()
  } else {
    throw new PipelineError('deploy: no cluster: set KUBE_CONTEXT to a context of your kubeconfig')
  }
  await requireReachable(kube)
  return kube
}

/** How a task title names the target. */
export function describeCluster(config: Config, kube: KubeTarget): string {
  return `${kube.context} answers${config.kubeContext ? '' : ' (local cluster, real node)'}`
}
