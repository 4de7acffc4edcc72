/**
 * The local Kubernetes: a real kube-apiserver, controller-manager, scheduler
 * and etcd (built from the Go module proxy) run by kwokctl's binary runtime,
 * with kwok simulating the nodes and the pods on them. Nothing is pulled or
 * downloaded; the state lives under `<cache>/state/cluster`, outside the clone.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'
import { cachedClusterBinaries, ensureClusterBinaries, withLock, type ClusterBinaries } from './cluster-build.ts'
import { PipelineError } from '../core/errors.ts'
import { run, succeeds } from '../core/run.ts'
import { VERSIONS } from '../core/versions.ts'
import { serviceEnv } from './service.ts'

export const CLUSTER_NAME = 'doc-server'
/** kwokctl names the context after the cluster. */
export const CLUSTER_CONTEXT = `kwok-${CLUSTER_NAME}`
const NODES = 2
/**
 * kwok renews each node's Lease; a new kwok run must wait for the leases of
 * the one before to expire (by default 40 s x heartbeat factor 5 = 200 s)
 * after an unclean stop. A 10 s lease makes that wait short.
 */
const CREATE_FLAGS = ['--heartbeat-factor', '1', '--node-lease-duration-seconds', '10']

/**
 * Pods carrying this annotation never become ready: a project Stage keeps them
 * running with Ready=False and a readiness-probe event. It is how the tests
 * make a rollout fail, since kwok runs no containers and no probes.
 */
export const NEVER_READY_ANNOTATION = 'simulate.doc-server.dev/readiness'

type OnLine = ((line: string) => void) | undefined

export interface ClusterTarget {
  kubeconfig: string | undefined
  context: string
}

export interface LocalCluster extends ClusterTarget {
  kubeconfig: string
  binaries: ClusterBinaries
}

export function clusterStateDir(cache: string): string {
  return join(cache, 'state', 'cluster')
}

function paths(cache: string) {
  const root = clusterStateDir(cache)
  return {
    root,
    workdir: join(root, 'kwok'),
    kubeconfig: join(root, 'kubeconfig'),
    config: join(root, 'kwokctl.yaml'),
    fingerprint: join(root, 'config.sha256'),
    clusterConfig: join(root, 'kwok', 'clusters', CLUSTER_NAME, 'kwok.yaml'),
  }
}

/**
 * kwokctl looks for kubectl on PATH before its own config; the machine's
 * /usr/bin/kubectl is another vendor's dispatcher, so ours goes first.
 */
function kwokEnv(cache: string, bins: ClusterBinaries): NodeJS.ProcessEnv {
  // The cluster's processes outlive the run: they get serviceEnv()'s variables only, never its tokens.
  return serviceEnv(process.env, { KWOK_WORKDIR: paths(cache).workdir, PATH: `${dirname(bins.kubectl)}${delimiter}${process.env.PATH ?? ''}` })
}

/** Where kwok's own stage definitions live: its module in the Go module cache, at the pinned version. */
async function kwokModuleDir(): Promise<string> {
  const r = await run(['go', 'mod', 'download', '-json', `sigs.k8s.io/kwok@${VERSIONS.kwok}`], { env: { ...process.env, GOTOOLCHAIN: 'local' } })
  const dir = (JSON.parse(r.stdout) as { Dir?: string }).Dir
  if (!dir) throw new PipelineError(`cluster: cannot locate the sigs.k8s.io/kwok ${VERSIONS.kwok} module`)
  return dir
}

/** A pod that stays Running with Ready=False, as if its readiness probe kept answering 503. */
export function neverReadyStage(): object {
  return {
    apiVersion: 'kwok.x-k8s.io/v1alpha1',
    kind: 'Stage',
    metadata: { name: 'doc-server-never-ready' },
    spec: {
      resourceRef: { apiGroup: 'v1', kind: 'Pod' },
      selector: {
        matchExpressions: [
          { key: `.metadata.annotations["${NEVER_READY_ANNOTATION}"]`, operator: 'In', values: ['never'] },
          { key: '.metadata.deletionTimestamp', operator: 'DoesNotExist' },
          { key: '.status.phase', operator: 'In', values: ['Pending'] },
        ],
      },
      // kwok's own pod-ready stage has no weight, so when both match this one always wins.
      weight: 1,
      next: {
        event: { type: 'Warning', reason: 'Unhealthy', message: 'Readiness probe failed: HTTP probe failed with statuscode: 503 (simulated by the doc-server-never-ready kwok stage)' },
        statusTemplate: [
          '{{ $now := Now }}',
          'conditions:',
          '- { type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }} }',
          '- { type: Ready, status: "False", reason: ContainersNotReady, message: "containers with unready status: [doc-server]", lastTransitionTime: {{ $now | Quote }} }',
          '- { type: ContainersReady, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }} }',
          'containerStatuses:',
          '{{ range .spec.containers }}',
          '- { name: {{ .name | Quote }}, image: {{ .image | Quote }}, ready: false, started: true, restartCount: 0, state: { running: { startedAt: {{ $now | Quote }} } } }',
          '{{ end }}',
          'hostIP: {{ NodeIPWith .spec.nodeName | Quote }}',
          'podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}',
          'phase: Running',
          'startTime: {{ $now | Quote }}',
        ].join('\n'),
      },
    },
  }
}

/**
 * kwokctl's configuration: our binaries (so it never downloads one) and the
 * stages. Giving any Stage replaces kwokctl's built-in set, so kwok's own
 * fast node and pod stages are read from its module and ours is added.
 */
export async function kwokctlConfig(bins: ClusterBinaries): Promise<string> {
  const options = {
    runtime: 'binary',
    kubeVersion: VERSIONS.kubernetes,
    etcdVersion: VERSIONS.etcd.replace(/^v/, ''),
    kubeApiserverBinary: bins.kubeApiserver,
    kubeControllerManagerBinary: bins.kubeControllerManager,
    kubeSchedulerBinary: bins.kubeScheduler,
    kubectlBinary: bins.kubectl,
    etcdBinary: bins.etcd,
    kwokControllerBinary: bins.kwok,
    quietPull: true,
  }
  const mod = await kwokModuleDir()
  const stageFiles = ['node/fast/node-initialize.yaml', 'node/heartbeat-with-lease/node-heartbeat-with-lease.yaml', 'pod/fast/pod-ready.yaml', 'pod/fast/pod-complete.yaml', 'pod/fast/pod-delete.yaml']
  const stages = stageFiles.map((f) => readFileSync(join(mod, 'kustomize', 'stage', f), 'utf8'))
  // YAML is a superset of JSON, so our documents are written as JSON.
  const docs = [JSON.stringify({ apiVersion: 'config.kwok.x-k8s.io/v1alpha1', kind: 'KwokctlConfiguration', options }, null, 2), ...stages, JSON.stringify(neverReadyStage(), null, 2)]
  return docs.join('\n---\n') + '\n'
}

export type ClusterState = 'absent' | 'stopped' | 'running'

export async function clusterStatus(cache: string, kubectl?: string): Promise<ClusterState> {
  const p = paths(cache)
  if (!existsSync(p.clusterConfig) || !existsSync(p.kubeconfig)) return 'absent'
  if (!kubectl || !existsSync(kubectl)) return 'stopped'
  const up = await succeeds([kubectl, '--kubeconfig', p.kubeconfig, '--context', CLUSTER_CONTEXT, '--request-timeout=3s', 'get', '--raw', '/readyz'], { timeoutMs: 10_000 })
  return up ? 'running' : 'stopped'
}

async function kwokctl(cache: string, bins: ClusterBinaries, args: string[], onLine: OnLine, timeoutMs = 300_000) {
  return run([bins.kwokctl, '--name', CLUSTER_NAME, ...args], { env: kwokEnv(cache, bins), onLine, timeoutMs })
}

async function waitForNodes(kubectl: string, kubeconfig: string, onLine: OnLine): Promise<void> {
  onLine?.(`waiting for ${NODES} simulated nodes to be Ready`)
  await run([kubectl, '--kubeconfig', kubeconfig, '--context', CLUSTER_CONTEXT, 'wait', '--for=condition=Ready', 'node', '--all', '--timeout=120s'], { onLine, timeoutMs: 150_000 })
}

const kubectlIn = (kubectl: string, kubeconfig: string, ...args: string[]) => [kubectl, '--kubeconfig', kubeconfig, '--context', CLUSTER_CONTEXT, '--request-timeout=10s', ...args]

/**
 * kwok only moves pods on nodes whose Lease it holds, and ignores pods it saw
 * before that. After an unclean stop a new kwok run waits for its previous
 * run's leases to expire (see CREATE_FLAGS), so the cluster counts as up only
 * once every node lease has been renewed since `sinceMs`.
 */
async function waitForKwokLeases(kubectl: string, kubeconfig: string, sinceMs: number, onLine: OnLine): Promise<void> {
  const deadline = Date.now() + 300_000
  onLine?.('waiting for kwok to take over the simulated nodes (node leases)')
  for (;;) {
    const r = await run(kubectlIn(kubectl, kubeconfig, '-n', 'kube-node-lease', 'get', 'leases', '-o', 'json'), { okCodes: [1] })
    const items = r.exitCode === 0 ? (JSON.parse(r.stdout) as { items: { spec?: { renewTime?: string } }[] }).items : []
    const fresh = items.filter((l) => Date.parse(l.spec?.renewTime ?? '') >= sinceMs - 1000)
    if (fresh.length >= NODES) return
    if (Date.now() > deadline) throw new PipelineError(`cluster: kwok has not taken over the nodes after 300s (${fresh.length} of ${NODES} leases renewed); see ${join(dirname(kubeconfig), 'kwok', 'clusters', CLUSTER_NAME, 'logs', 'kwok-controller.log')}`)
    await new Promise((res) => setTimeout(res, 2000))
  }
}

/**
 * Starts the local cluster, creating it (and building its binaries) the first
 * time. A cluster made from another configuration (a version bump, a changed
 * stage) is recreated, so what runs always matches lib/versions.ts.
 */
export async function ensureCluster(cache: string, onLine?: OnLine): Promise<LocalCluster> {
  const bins = await ensureClusterBinaries(cache, onLine)
  const p = paths(cache)
  mkdirSync(dirname(p.root), { recursive: true })
  // A test and a deploy started together must not both create (or recreate) the cluster.
  return withLock(`${p.root}.lock`, onLine, () => upCluster(cache, bins, onLine))
}

async function upCluster(cache: string, bins: ClusterBinaries, onLine: OnLine): Promise<LocalCluster> {
  const p = paths(cache)
  mkdirSync(p.root, { recursive: true })
  const config = await kwokctlConfig(bins)
  const fingerprint = createHash('sha256').update(config).update(CREATE_FLAGS.join(' ')).digest('hex')
  let state = await clusterStatus(cache, bins.kubectl)
  const current = existsSync(p.fingerprint) ? readFileSync(p.fingerprint, 'utf8').trim() : ''
  if (state !== 'absent' && current !== fingerprint) {
    onLine?.('the local cluster was made from another configuration: recreating it')
    await deleteCluster(cache, onLine)
    state = 'absent'
  }
  const started = performance.now()
  const startedAt = Date.now()
  if (state === 'absent') {
    mkdirSync(p.root, { recursive: true })
    writeFileSync(p.config, config)
    rmSync(p.kubeconfig, { force: true })
    onLine?.(`creating the local cluster (Kubernetes ${VERSIONS.kubernetes}, etcd ${VERSIONS.etcd}, kwok ${VERSIONS.kwok})`)
    await kwokctl(cache, bins, ['create', 'cluster', '--runtime', 'binary', '--config', p.config, '--kubeconfig', p.kubeconfig, ...CREATE_FLAGS, '--wait', '120s', '--timeout', '240s'], onLine)
    writeFileSync(p.fingerprint, `${fingerprint}\n`)
    await kwokctl(cache, bins, ['scale', 'node', '--replicas', String(NODES)], onLine)
  } else if (state === 'stopped') {
    onLine?.('starting the local cluster')
    await kwokctl(cache, bins, ['start', 'cluster', '--wait', '120s'], onLine)
  }
  await waitForNodes(bins.kubectl, p.kubeconfig, onLine)
  if (state !== 'running') await waitForKwokLeases(bins.kubectl, p.kubeconfig, startedAt, onLine)
  if (state !== 'running') onLine?.(`local cluster ready in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  return { kubeconfig: p.kubeconfig, context: CLUSTER_CONTEXT, binaries: bins }
}

/** Stops the control plane and kwok; etcd's data stays, so the next start keeps every release. */
export async function stopCluster(cache: string, onLine?: OnLine): Promise<boolean> {
  // Without its binaries no cluster can have been started: nothing to stop, nothing to build.
  const bins = cachedClusterBinaries(cache)
  if (!bins || (await clusterStatus(cache, bins.kubectl)) !== 'running') return false
  // Leases left behind make the next start wait until kwok reclaims them; without them it creates fresh ones at once.
  await run(kubectlIn(bins.kubectl, paths(cache).kubeconfig, '-n', 'kube-node-lease', 'delete', 'leases', '--all'), { okCodes: [1] })
  await kwokctl(cache, bins, ['stop', 'cluster'], onLine, 120_000)
  return true
}

/** Removes the cluster (its processes too) and its state. */
export async function deleteCluster(cache: string, onLine?: OnLine): Promise<void> {
  const p = paths(cache)
  const bins = cachedClusterBinaries(cache)
  if (bins && existsSync(p.clusterConfig)) await kwokctl(cache, bins, ['delete', 'cluster'], onLine, 120_000)
  rmSync(p.root, { recursive: true, force: true })
}
