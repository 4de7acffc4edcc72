import { PipelineError } from '../core/errors.ts'
import { chartFullname, podSelector } from './deploy.ts'
import type { Release } from './helm.ts'
import { getDeployment, listPods, type KubeTarget } from './kube.ts'

const PINNED = /^([^@\s]+)@(sha256:[a-f0-9]{64})$/

export interface RunningImage {
  /** repository@digest, as the Deployment templates it. */
  pinned: string
  repository: string
  digest: string
  /** Pods (not terminating) running it. */
  pods: number
}

/**
 * The image a release runs, read from the cluster: the digest its Deployment
 * templates (the chart pins `repository@digest`), and how many live pods run it.
 * A release that is missing, or that runs a tag rather than a digest, is a
 * one-line error: there would be no exact image to scan.
 */
export async function runningImage(k: KubeTarget, r: Release): Promise<RunningImage> {
  const name = chartFullname(r.name)
  let images: string[]
  try {
    images = (await getDeployment(k, r.namespace, name)).spec.template.spec.containers.map((c) => c.image)
  } catch (err) {
    const details = err instanceof PipelineError ? err.details : undefined
    if (/NotFound|not found/i.test(details ?? ''))
      throw new PipelineError(
        `rescan: release ${r.name} has no deployment ${name} in namespace ${r.namespace}; nothing runs there to rescan`,
        details,
      )
    throw err
  }
  const m = images.map((i) => PINNED.exec(i)).find((x) => x !== null)
  if (!m)
    throw new PipelineError(
      `rescan: deployment ${name} in ${r.namespace} runs ${images.join(', ')}, not an image pinned by digest; deploy with the deploy stage first`,
    )
  const pinned = m[0]
  const pods = (await listPods(k, r.namespace, podSelector(r.name))).filter(
    (p) => !p.metadata.deletionTimestamp && p.spec.containers.some((c) => c.image === pinned),
  )
  return { pinned, repository: m[1]!, digest: m[2]!, pods: pods.length }
}
