/**
 * Rollout tracking while Helm waits. Helm's `--wait` alone sits out the whole
 * timeout on a crash-looping release; here the release's new pods are watched,
 * and the first sign that they cannot become ready ends the wait at once:
 * a container's second restart, an image that cannot be pulled, a container
 * config error, a running container that stays unready past a grace, or a
 * pod the cluster refused to create (an admission controller's refusal, read
 * from the new ReplicaSet's FailedCreate event).
 * The release is then rolled back (or a first install removed), and the
 * reason names the pod, what the runtime said, and the container's own last
 * log line, or the ReplicaSet and the admission controller's own message.
 */
import { PipelineError, firstLine } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { history, pendingRecovery, rollback, uninstall, upgradeInstall, type HelmTarget, type Release, type UpgradeOptions } from './helm.ts'
import { eventTime, getDeployment, kubeFlags, listPods, podsNotRunning, type DeploymentJson, type EventJson, type KubeTarget, type PodImages } from './kube.ts'
import { quietly, say } from '../core/output.ts'
import { sleep } from '../core/wait.ts'

interface ContainerState {
  reason?: string
  message?: string
  exitCode?: number
  startedAt?: string
}

export interface TrackedPod {
  metadata: { name: string; uid?: string; creationTimestamp?: string; deletionTimestamp?: string }
  spec: { containers: { name: string; image: string }[] }
  status?: {
    containerStatuses?: {
      name: string
      ready?: boolean
      restartCount?: number
      imageID?: string
      containerID?: string
      state?: { waiting?: ContainerState; running?: ContainerState; terminated?: ContainerState }
      lastState?: { terminated?: ContainerState }
    }[]
  }
}

export type FailureKind = 'crash loop' | 'image pull failure' | 'container config error' | 'readiness failing' | 'pod creation refused'

export interface RolloutFailure {
  kind: FailureKind
  /** The pod; for a refused pod creation, the ReplicaSet that asked for it. */
  pod: string
  container: string
  /** What the runtime or kubelet said, one line. */
  detail: string
  /** Whether the container's logs are of the instance that ended (a crash) rather than the running one. */
  previous: boolean
}

const PULL = new Set(['ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'ErrImageNeverPull', 'RegistryUnavailable'])
const CONFIG = new Set(['CreateContainerConfigError', 'CreateContainerError', 'RunContainerError', 'PreStartHookError', 'PostStartHookError'])
/** A container that has restarted this often is crash-looping (werf stops after a couple of errors too). */
export const CRASH_RESTARTS = 2

/**
 * The restart counts of the pods that existed before the deploy began, as the
 * tracker first saw them: a node that restarted its pods (a reboot, `npm run
 * cluster:down` and up) restarts each container once more, and those
 * restarts are not this deploy's crashes. Pods the rollout creates count from
 * zero.
 */
export interface RestartBaseline {
  since: number
  counts: Map<string, number>
}

export const restartBaseline = (since: number): RestartBaseline => ({ since, counts: new Map() })

type ContainerStatus = NonNullable<NonNullable<TrackedPod['status']>['containerStatuses']>[number]

function restartsDuring(pod: TrackedPod, c: ContainerStatus, baseline: RestartBaseline | undefined): number {
  const n = c.restartCount ?? 0
  // Created since the deploy began (or of unknown age): every restart is this deploy's.
  if (!baseline || !(Date.parse(pod.metadata.creationTimestamp ?? '') < baseline.since)) return n
  const key = `${pod.metadata.uid ?? pod.metadata.name}/${c.name}`
  if (!baseline.counts.has(key)) baseline.counts.set(key, n)
  return n - baseline.counts.get(key)!
}

/**
 * The first reason the pods running `image` cannot become ready, or undefined
 * while they still may. Pods of the previous revision are not judged; with a
 * baseline, restarts from before the deploy began are not counted.
 */
export function rolloutFailure(pods: readonly TrackedPod[], image: string, graceSecs: number, now = Date.now(), baseline?: RestartBaseline): RolloutFailure | undefined {
  for (const pod of pods) {
    if (pod.metadata.deletionTimestamp || !pod.spec.containers.some((c) => c.image === image)) continue
    for (const c of pod.status?.containerStatuses ?? []) {
      const base = { pod: pod.metadata.name, container: c.name }
      const waiting = c.state?.waiting
      const say = (s: ContainerState | undefined) => [s?.reason, s?.message].filter(Boolean).join(': ')
      if (waiting?.reason && PULL.has(waiting.reason)) return { ...base, kind: 'image pull failure', detail: say(waiting), previous: false }
      if (waiting?.reason && CONFIG.has(waiting.reason)) return { ...base, kind: 'container config error', detail: say(waiting), previous: false }
      const restarts = restartsDuring(pod, c, baseline)
      if (restarts >= CRASH_RESTARTS) {
        const last = c.lastState?.terminated
        const exit = last?.exitCode !== undefined ? `exit code ${last.exitCode}` : ''
        return { ...base, kind: 'crash loop', detail: [`restarted ${restarts} times`, last?.reason, exit].filter(Boolean).join(', '), previous: true }
      }
      const since = Date.parse(c.state?.running?.startedAt ?? '')
      if (c.state?.running && c.ready !== true && since && now - since > graceSecs * 1000) {
        return { ...base, kind: 'readiness failing', detail: `running but not ready for ${Math.round((now - since) / 1000)} s (DEPLOY_READINESS_GRACE_SECS=${graceSecs})`, previous: false }
      }
    }
  }
  return undefined
}

/**
 * The last non-empty line of a container's log: the ended instance's for a
 * crash, else (or when the kubelet has already collected that instance) the
 * current one's. A few short retries cover a container restarting just now.
 */
export async function lastLogLine(k: KubeTarget, namespace: string, f: RolloutFailure): Promise<string | undefined> {
  const args = [k.kubectl, ...kubeFlags(k), '-n', namespace, 'logs', f.pod, '-c', f.container, '--tail', '20', '--request-timeout=10s']
  const attempts = f.previous ? [[...args, '--previous'], args] : [args]
  for (let round = 0; round < 3; round++) {
    for (const argv of attempts) {
      const r = await quietly(() => run(argv, { okCodes: [1], timeoutMs: 20_000 })).catch(() => undefined)
      const line = r?.exitCode === 0 ? r.stdout.split('\n').map((l) => l.trim()).filter(Boolean).at(-1) : undefined
      if (line && !/^unable to retrieve container logs/.test(line)) return line
    }
    await sleep(1000)
  }
  return undefined
}

export interface TrackedReplicaSet {
  metadata: { name: string }
  spec: { template: { spec: { containers: { image: string }[] } } }
}

/**
 * The first pod creation the cluster refused for a ReplicaSet running
 * `image` since `sinceMs` (its FailedCreate event: an admission webhook's
 * denial, or the webhook failing closed), or undefined. The ReplicaSet
 * retries with a growing back-off, so waiting for it only delays the same
 * answer until Helm's timeout.
 */
export function creationRefused(events: readonly EventJson[], replicaSets: readonly TrackedReplicaSet[], image: string, sinceMs: number): RolloutFailure | undefined {
  const mine = new Set(replicaSets.filter((rs) => rs.spec.template.spec.containers.some((c) => c.image === image)).map((rs) => rs.metadata.name))
  const first = events
    .filter((e) => e.reason === 'FailedCreate' && e.involvedObject?.kind === 'ReplicaSet' && mine.has(e.involvedObject.name ?? '') && eventTime(e) >= sinceMs - 1000)
    .sort((a, b) => eventTime(a) - eventTime(b))[0]
  if (!first) return undefined
  return { kind: 'pod creation refused', pod: first.involvedObject!.name!, container: '', detail: (first.message ?? '').replace(/^Error creating: /, '').trim(), previous: false }
}

export function describeFailure(f: RolloutFailure, logLine: string | undefined): string {
  if (f.kind === 'pod creation refused') return `replicaset ${f.pod}: ${f.kind}: ${f.detail}`
  return `pod ${f.pod}: ${f.kind} (${f.detail})${logLine ? `; container ${f.container} last logged: ${logLine}` : ''}`
}

/** Thrown when tracking stopped the rollout; `reason` is the line to print. */
export class RolloutStopped extends PipelineError {
  constructor(
    readonly failure: RolloutFailure,
    readonly reason: string,
    readonly seconds: number,
  ) {
    super(`deploy: rollout stopped after ${seconds.toFixed(1)} s: ${reason}`)
  }
}

export interface TrackOptions {
  kube: KubeTarget
  /** repository@digest: the pods to judge are the ones running it. */
  image: string
  selector: string
  graceSecs: number
  pollMs?: number
}

async function newPods(k: KubeTarget, namespace: string, selector: string): Promise<TrackedPod[]> {
  const r = await quietly(() => run([k.kubectl, ...kubeFlags(k), '-n', namespace, 'get', 'pods', '-l', selector, '-o', 'json', '--request-timeout=10s'], { okCodes: [1], timeoutMs: 20_000 }))
  return r.exitCode === 0 ? (JSON.parse(r.stdout) as { items: TrackedPod[] }).items : []
}

/** A refused creation of the release's new pods; the ReplicaSets are listed only once such an event exists. */
async function refusedCreation(k: KubeTarget, namespace: string, selector: string, image: string, sinceMs: number): Promise<RolloutFailure | undefined> {
  const get = async <T>(args: string[]) => {
    const r = await quietly(() => run([k.kubectl, ...kubeFlags(k), '-n', namespace, 'get', ...args, '-o', 'json', '--request-timeout=10s'], { okCodes: [1], timeoutMs: 20_000 }))
    return r.exitCode === 0 ? (JSON.parse(r.stdout) as { items: T[] }).items : []
  }
  const events = await get<EventJson>(['events', '--field-selector', 'reason=FailedCreate,involvedObject.kind=ReplicaSet'])
  if (!events.some((e) => eventTime(e) >= sinceMs - 1000)) return undefined
  return creationRefused(events, await get<TrackedReplicaSet>(['replicasets', '-l', selector]), image, sinceMs)
}

/**
 * After the tracker stopped helm: whatever helm left (its own --rollback-on-failure
 * rollback, or a release still pending) ends on the last good revision, or
 * the first install is removed.
 */
async function settle(t: HelmTarget, r: Release, timeoutSecs: number): Promise<void> {
  const plan = pendingRecovery(await history(t, r))
  if (plan.action === 'rollback') {
    say(`rolling back to revision ${plan.to}`)
    await rollback(t, r, plan.to, timeoutSecs)
  } else if (plan.action === 'uninstall') {
    say('removing the failed first install')
    await uninstall(t, r)
  }
}

/**
 * `helm upgrade --install --rollback-on-failure --wait=watcher` with the release's new pods
 * watched meanwhile. A failure found by the tracker stops helm, settles the
 * release on its previous revision and throws RolloutStopped; otherwise
 * helm's own result stands.
 */
export async function upgradeTracked(t: HelmTarget, r: Release, o: UpgradeOptions, track: TrackOptions): Promise<void> {
  const started = performance.now()
  const since = Date.now()
  const baseline = restartBaseline(since)
  const ac = new AbortController()
  let done = false
  let found: { failure: RolloutFailure; reason: string } | undefined
  const watcher = (async () => {
    while (!done) {
      await sleep(track.pollMs ?? 1000)
      if (done) return
      const failure =
        rolloutFailure(await newPods(track.kube, r.namespace, track.selector).catch(() => []), track.image, track.graceSecs, Date.now(), baseline) ??
        (await refusedCreation(track.kube, r.namespace, track.selector, track.image, since).catch(() => undefined))
      if (!failure) continue
      const logLine = failure.kind === 'pod creation refused' ? undefined : await lastLogLine(track.kube, r.namespace, failure)
      found = { failure, reason: describeFailure(failure, logLine) }
      say(`stopping the rollout: ${found.reason}`)
      ac.abort()
      return
    }
  })()
  const helm = await upgradeInstall(t, r, { ...o, signal: ac.signal }).then(
    () => undefined,
    (err: unknown) => err,
  )
  done = true
  await watcher
  if (found) {
    const seconds = (performance.now() - started) / 1000
    await settle(t, r, o.timeoutSecs).catch((err: unknown) => {
      throw new PipelineError(`deploy: rollout stopped (${found!.reason}) but the release could not be rolled back: ${firstLine(err)}`)
    })
    throw new RolloutStopped(found.failure, found.reason, seconds)
  }
  if (helm !== undefined) throw helm
}

/**
 * What keeps a release from serving `image`, in one line, or undefined once it
 * does: every live pod runs exactly the image (the runtime reporting its
 * digest) and is ready, at least as many as the Deployment wants, and the
 * Deployment has observed its spec and counts them updated and available.
 */
export function notServing(dep: DeploymentJson, pods: readonly PodImages[], image: string, digest: string): string | undefined {
  const want = dep.spec.replicas ?? 1
  const live = pods.filter((p) => !p.metadata.deletionTimestamp)
  const wrong = podsNotRunning(live, image, digest)
  if (wrong.length > 0) return wrong.slice(0, 3).join('; ')
  if (live.length < want) return `${live.length} of ${want} pods exist`
  const s = dep.status ?? {}
  if ((s.observedGeneration ?? 0) < (dep.metadata.generation ?? 0) || (s.updatedReplicas ?? 0) < want || (s.availableReplicas ?? 0) < want) {
    return `the deployment counts ${s.updatedReplicas ?? 0} updated, ${s.availableReplicas ?? 0} available of ${want}`
  }
  return undefined
}

export interface ServingOptions {
  kube: KubeTarget
  namespace: string
  deployment: string
  selector: string
  /** repository@digest */
  image: string
  digest: string
  graceSecs: number
  /** When the wait ends (epoch ms): what is left of DEPLOY_TIMEOUT_SECS after Helm. */
  deadline: number
  timeoutSecs: number
  pollMs?: number
}

/**
 * After Helm: waits until the release serves the image (see notServing), read
 * from the pods themselves, whether or not Helm changed anything. Helm and
 * `rollout status` can both report a Deployment from before the node
 * restarted its pods as rolled out; the pods' own status is what the node says
 * now. The tracker's judgement applies meanwhile, so a crash loop, a pull
 * failure or a container that stays unready is named at once rather than
 * waited out. Returns the number of serving pods.
 */
export async function waitServing(o: ServingOptions): Promise<number> {
  const short = `${o.digest.slice(0, 19)}…`
  // The deploy began when Helm did: what is left of the timeout counts from there.
  const baseline = restartBaseline(o.deadline - o.timeoutSecs * 1000)
  let last = 'nothing read from the cluster yet'
  for (;;) {
    const read = await Promise.all([getDeployment(o.kube, o.namespace, o.deployment), listPods(o.kube, o.namespace, o.selector)]).catch((err: unknown) => {
      last = `the cluster did not answer: ${firstLine(err)}`
      return undefined
    })
    if (read) {
      const [dep, pods] = read
      const images = dep.spec.template.spec.containers.map((c) => c.image)
      if (!images.includes(o.image)) throw new PipelineError(`deploy: deployment ${o.deployment} templates ${images.join(', ')}, not ${o.image}`)
      const failure = rolloutFailure(pods, o.image, o.graceSecs, Date.now(), baseline)
      if (failure) throw new PipelineError(`deploy: the pods of ${short} cannot become ready: ${describeFailure(failure, await lastLogLine(o.kube, o.namespace, failure))}`)
      const why = notServing(dep, pods, o.image, o.digest)
      if (why === undefined) return pods.filter((p) => !p.metadata.deletionTimestamp).length
      // Only a change of what is awaited is said, not every second's reading.
      if (why !== last) say(`waiting: ${why}`)
      last = why
    }
    if (Date.now() >= o.deadline) throw new PipelineError(`deploy: the pods are not all ready on ${short} within DEPLOY_TIMEOUT_SECS (${o.timeoutSecs}s): ${last}`)
    await new Promise((res) => setTimeout(res, o.pollMs ?? 1000))
  }
}
