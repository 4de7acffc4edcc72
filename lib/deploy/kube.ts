import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { quietly } from '../core/output.ts'

/** Which cluster a command talks to: a kubeconfig (default when undefined) and a context in it. */
export interface KubeTarget {
  kubectl: string
  kubeconfig: string | undefined
  context: string
}

export function kubeFlags(t: Pick<KubeTarget, 'kubeconfig' | 'context'>): string[] {
  return [...(t.kubeconfig ? ['--kubeconfig', t.kubeconfig] : []), '--context', t.context]
}

/** The cluster's answer as JSON: data to read, kept off the screen. */
async function kubectlJson<T>(t: KubeTarget, args: string[]): Promise<T> {
  const r = await quietly(() => run([t.kubectl, ...kubeFlags(t), '--request-timeout=20s', ...args, '-o', 'json'], { timeoutMs: 60_000 }))
  return JSON.parse(r.stdout) as T
}

/** Refuses a context the kubeconfig does not have, before anything talks to a cluster. */
export async function requireContext(t: KubeTarget): Promise<void> {
  const args = [t.kubectl, ...(t.kubeconfig ? ['--kubeconfig', t.kubeconfig] : []), 'config', 'get-contexts', '-o', 'name']
  const r = await quietly(() => run(args, { okCodes: [1] }))
  const names = r.stdout.split('\n').map((l) => l.trim()).filter(Boolean)
  if (!names.includes(t.context)) {
    const where = t.kubeconfig ?? process.env.KUBECONFIG ?? '~/.kube/config'
    throw new PipelineError(`cluster: KUBE_CONTEXT "${t.context}" is not a context in ${where} (it has: ${names.join(', ') || 'none'})`)
  }
}

/** One short question to the API server; an unreachable cluster is a one-line error, not a hang. */
export async function requireReachable(t: KubeTarget): Promise<void> {
  try {
    await run([t.kubectl, ...kubeFlags(t), '--request-timeout=5s', 'get', '--raw', '/readyz'], { timeoutMs: 15_000 })
  } catch (err) {
    const details = err instanceof PipelineError ? err.details : undefined
    const why = details?.split('\n').find((l) => /unable to connect|refused|timeout|no such host|i\/o|certificate|unauthorized|forbidden/i.test(l))
    throw new PipelineError(`cluster: context "${t.context}" does not answer /readyz${why ? `: ${why.trim()}` : ''}`, details)
  }
}

export interface PodJson {
  metadata: { name: string; creationTimestamp?: string; deletionTimestamp?: string; ownerReferences?: { kind: string; name: string }[] }
  spec: { containers: { name: string; image: string }[] }
  status?: {
    phase?: string
    conditions?: { type: string; status: string; reason?: string; message?: string }[]
    containerStatuses?: { name: string; ready?: boolean; image?: string; imageID?: string; state?: Record<string, { reason?: string; message?: string; exitCode?: number } | undefined> }[]
  }
}

export interface EventJson {
  type?: string
  reason?: string
  message?: string
  count?: number
  involvedObject?: { kind?: string; name?: string }
  firstTimestamp?: string | null
  lastTimestamp?: string | null
  eventTime?: string | null
  metadata?: { creationTimestamp?: string }
}

export async function listPods(t: KubeTarget, namespace: string, selector: string): Promise<PodJson[]> {
  return (await kubectlJson<{ items: PodJson[] }>(t, ['-n', namespace, 'get', 'pods', '-l', selector])).items
}

export async function listEvents(t: KubeTarget, namespace: string): Promise<EventJson[]> {
  return (await kubectlJson<{ items: EventJson[] }>(t, ['-n', namespace, 'get', 'events'])).items
}

export interface DeploymentJson {
  metadata: { name?: string; generation?: number }
  spec: { replicas?: number; template: { spec: { containers: { name: string; image: string }[] } } }
  status?: { observedGeneration?: number; replicas?: number; updatedReplicas?: number; readyReplicas?: number; availableReplicas?: number; unavailableReplicas?: number }
}

export async function getDeployment(t: KubeTarget, namespace: string, name: string): Promise<DeploymentJson> {
  return kubectlJson<DeploymentJson>(t, ['-n', namespace, 'get', 'deployment', name])
}

export async function rolloutStatus(t: KubeTarget, namespace: string, name: string): Promise<void> {
  await run([t.kubectl, ...kubeFlags(t), '-n', namespace, 'rollout', 'status', `deployment/${name}`, '--timeout=60s'], { timeoutMs: 90_000 })
}

export async function deleteNamespace(t: KubeTarget, namespace: string): Promise<void> {
  await run([t.kubectl, ...kubeFlags(t), 'delete', 'namespace', namespace, '--ignore-not-found', '--wait=true', '--timeout=120s'], { timeoutMs: 150_000 })
}

export const eventTime = (e: EventJson) => Date.parse(e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp ?? e.metadata?.creationTimestamp ?? '') || 0

/**
 * The first real reason a rollout did not become ready: the earliest warning
 * event about the release's objects since the deploy started, else what the
 * pods' own status says. Helm's own "context deadline exceeded" is never it.
 */
export function firstFailureReason(events: readonly EventJson[], pods: readonly PodJson[], namePrefix: string, sinceMs: number): string | undefined {
  const warnings = events
    // MissingClusterDNS: a cluster without DNS (the local one) warns on every pod; it never stops a rollout.
    .filter((e) => e.type === 'Warning' && e.reason !== 'MissingClusterDNS' && (e.involvedObject?.name ?? '').startsWith(namePrefix) && eventTime(e) >= sinceMs - 1000)
    .sort((a, b) => eventTime(a) - eventTime(b))
  const first = warnings[0]
  if (first) return `${first.involvedObject?.kind ?? 'object'} ${first.involvedObject?.name}: ${first.reason}: ${first.message}`.trim()
  for (const pod of pods) {
    if (pod.metadata.deletionTimestamp) continue
    for (const c of pod.status?.containerStatuses ?? []) {
      const waiting = c.state?.waiting ?? c.state?.terminated
      if (waiting?.reason) return `Pod ${pod.metadata.name}: container ${c.name} ${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}`
    }
    const notReady = pod.status?.conditions?.find((c) => (c.type === 'Ready' || c.type === 'PodScheduled') && c.status !== 'True')
    if (notReady) return `Pod ${pod.metadata.name}: ${notReady.type}=${notReady.status}${notReady.reason ? ` (${notReady.reason})` : ''}${notReady.message ? `: ${notReady.message}` : ''}`
  }
  return undefined
}

/** What podsNotRunning reads of a pod (a PodJson, or the tracker's view of one). */
export interface PodImages {
  metadata: { name: string; deletionTimestamp?: string }
  spec: { containers: { name: string; image: string }[] }
  status?: { containerStatuses?: { name: string; ready?: boolean; imageID?: string }[] }
}

/**
 * Pods (not terminating) whose containers do not run exactly `image`. When the
 * runtime reports an imageID, it must carry the digest too.
 */
export function podsNotRunning(pods: readonly PodImages[], image: string, digest: string): string[] {
  const wrong: string[] = []
  for (const pod of pods) {
    if (pod.metadata.deletionTimestamp) continue
    for (const c of pod.spec.containers) {
      if (c.image !== image) wrong.push(`${pod.metadata.name}/${c.name} runs ${c.image}`)
    }
    for (const s of pod.status?.containerStatuses ?? []) {
      if (s.imageID && !s.imageID.endsWith(digest)) wrong.push(`${pod.metadata.name}/${s.name} reports image ${s.imageID}`)
      if (s.ready !== true) wrong.push(`${pod.metadata.name}/${s.name} is not ready`)
    }
  }
  return wrong
}
