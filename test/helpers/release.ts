import { ANY_EXIT, run } from '../../lib/core/run.ts'
import type { HelmTarget } from '../../lib/deploy/helm.ts'
import { deleteNamespace, type KubeTarget } from '../../lib/deploy/kube.ts'

/**
 * A suite's clean-up: its release uninstalled (whatever state it is in, or
 * none) and its namespace removed. Nothing is thrown, so clean-up never hides
 * a test's own failure or a set-up that stopped half-way; what could not be
 * removed is said.
 */
export async function removeRelease(helm: HelmTarget, kube: KubeTarget, release: { name: string; namespace: string }, suite: string) {
  await run(
    [
      helm.helm,
      'uninstall',
      release.name,
      ...(helm.kubeconfig ? ['--kubeconfig', helm.kubeconfig] : []),
      '--kube-context',
      helm.context,
      '-n',
      release.namespace,
      '--wait',
    ],
    { okCodes: ANY_EXIT },
  )
  await deleteNamespace(kube, release.namespace).catch((err: Error) =>
    console.error(`${suite}: namespace ${release.namespace} not removed: ${err.message}`),
  )
}
