/**
 * The local Kubernetes: a real kube-apiserver, controller-manager, scheduler
 * and etcd (built from the Go module proxy, launched by kwokctl's binary
 * runtime with no simulated node and no kwok controller) and one real node
 * (lib/sandbox/node.ts: containerd, kubelet, kube-proxy) on which pods pull,
 * start, probe and drain. kwokctl stays as the control plane's launcher: it
 * makes the certificates, kubeconfig and etcd/apiserver flags, and starts and
 * stops them as a unit. Nothing is pulled from outside; the state lives under
 * `<cache>/state/node-cluster`, outside the clone.
 */
import { createHash } from 'node:crypto'
import { existsSync,mkdirSync,readFileSync,rmSync,writeFileSync } from 'node:fs'
import { delimiter,dirname,join } from 'node:path'
import { cachedClusterBinaries,ensureClusterBinaries,type ClusterBinaries } from '../tools/kube.ts'
import { withLock } from '../core/lock.ts'
import { PipelineError } from '../core/errors.ts'
import { LOG_ERROR,lastWords,run,succeeds,tail } from '../core/run.ts'
import { VERSIONS } from '../tools/versions.ts'
import { serviceEnv } from './service.ts'
import { loadConfig } from '../core/config.ts'
import { ensureDockerEngine } from './engine.ts'
import { deleteNode,startNode,stopNode } from './node.ts'
import { say } from '../core/output.ts'

export const CLUSTER_NAME = 'doc-server-node'
/** kwokctl names the context after the cluster. */
export const CLUSTER_CONTEXT = `kwok-${CLUSTER_NAME}`
/** Fixed, so a stopped cluster of another checkout cannot take it (kwokctl would otherwise pick a free one). */
export const API_SERVER_PORT = 16443

export interface ClusterTarget {
  kubeconfig: string | undefined
  context: string
}

export interface LocalCluster extends ClusterTarget {
  kubeconfig: string
  binaries: ClusterBinaries
}

export function clusterStateDir(cache: string): string {
  return join(cache, 'state', 'node-cluster')
}

function paths(cache: string) {
  const root = clusterStateDir(cache)
  return {
    root,
    workdir: join(root, 'kwok'),
    kubeconfig: join(root, 'kubeconfig'),
    /** The admin kubeconfig with its certificates inlined and one context: what the kubelet and kube-proxy read. */
    nodeKubeconfig: join(root, 'node.kubeconfig'),
    node: join(root, 'node'),
    config: join(root, 'kwokctl.yaml'),
    fingerprint: join(root, 'config.sha256'),
    clusterConfig: join(root, 'kwok', 'clusters', CLUSTER_NAME, 'kwok.yaml'),
    logs: join(root, 'kwok', 'clusters', CLUSTER_NAME, 'logs'),
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

/** kwokctl's configuration: our binaries (so it never downloads one), a fixed port, and no kwok controller. */
export function kwokctlConfig(bins: ClusterBinaries): string {
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
    kubeApiserverPort: API_SERVER_PORT,
    // The node is real: nothing for kwok to simulate.
    disable: ['kwok-controller'],
    quietPull: true,
  }
  // The node's Hostname address ("doc-server-node") resolves nowhere: logs and exec go to its InternalIP.
  const componentsPatches = [{ name: 'kube-apiserver', extraArgs: [{ key: 'kubelet-preferred-address-types', value: 'InternalIP' }] }]
  return JSON.stringify({ apiVersion: 'config.kwok.x-k8s.io/v1alpha1', kind: 'KwokctlConfiguration', options, componentsPatches }, null, 2) + '\n'
}

export type ClusterState = 'absent' | 'stopped' | 'running'

export async function clusterStatus(cache: string, kubectl?: string): Promise<ClusterState> {
  const p = paths(cache)
  if (!existsSync(p.clusterConfig) || !existsSync(p.kubeconfig)) return 'absent'
  if (!kubectl || !existsSync(kubectl)) return 'stopped'
  const up = await succeeds([kubectl, '--kubeconfig', p.kubeconfig, '--context', CLUSTER_CONTEXT, '--request-timeout=3s', 'get', '--raw', '/readyz'], { timeoutMs: 10_000 })
  return up ? 'running' : 'stopped'
}

async function kwokctl(cache: string, bins: ClusterBinaries, args: string[], timeoutMs = 300_000) {
  return run([bins.kwokctl, '--name', CLUSTER_NAME, ...args], { env: kwokEnv(cache, bins), timeoutMs })
}


/** A kwokctl step that fails names the control-plane component whose log says why. */
async function kwokctlOrExplain(cache: string, bins: ClusterBinaries, args: string[], timeoutMs?: number): Promise<void> {
  try {
    await kwokctl(cache, bins, args, timeoutMs)
  } catch (err) {
    const logs = paths(cache).logs
    for (const c of ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
      const log = join(logs, `${c}.log`)
      if (!existsSync(log)) continue
      const text = readFileSync(log, 'utf8')
      if (LOG_ERROR.test(tail(text, 5))) {
        throw new PipelineError(`cluster: the control plane did not start (${args.slice(0, 2).join(' ')}); ${c}: ${lastWords(tail(text, 5), LOG_ERROR)} (log: ${log})`, tail(text, 25))
      }
    }
    throw err
  }
}

/**
 * Starts the local cluster, creating it (and building its binaries) the first
 * time, then its node. A cluster made from another configuration (a version
 * bump) is recreated, so what runs always matches lib/versions.ts.
 */
export async function ensureCluster(cache: string): Promise<LocalCluster> {
  const bins = await ensureClusterBinaries(cache)
  const p = paths(cache)
  mkdirSync(dirname(p.root), { recursive: true })
  // A test and a deploy started together must not both create (or recreate) the cluster.
  return withLock(`${p.root}.lock`, () => upCluster(cache, bins))
}

async function upCluster(cache: string, bins: ClusterBinaries): Promise<LocalCluster> {
  const p = paths(cache)
  mkdirSync(p.root, { recursive: true })
  const config = kwokctlConfig(bins)
  const fingerprint = createHash('sha256').update(config).digest('hex')
  let state = await clusterStatus(cache, bins.kubectl)
  const current = existsSync(p.fingerprint) ? readFileSync(p.fingerprint, 'utf8').trim() : ''
  if (state !== 'absent' && current !== fingerprint) {
    say('the local cluster was made from another configuration: recreating it')
    await deleteCluster(cache)
    state = 'absent'
  }
  const started = performance.now()
  if (state === 'absent') {
    mkdirSync(p.root, { recursive: true })
    writeFileSync(p.config, config)
    rmSync(p.kubeconfig, { force: true })
    say(`creating the local control plane (Kubernetes ${VERSIONS.kubernetes}, etcd ${VERSIONS.etcd}) on 127.0.0.1:${API_SERVER_PORT}`)
    await kwokctlOrExplain(cache, bins, ['create', 'cluster', '--runtime', 'binary', '--config', p.config, '--kubeconfig', p.kubeconfig, '--wait', '120s', '--timeout', '240s'])
    writeFileSync(p.fingerprint, `${fingerprint}\n`)
  } else if (state === 'stopped') {
    say('starting the local control plane')
    await kwokctlOrExplain(cache, bins, ['start', 'cluster', '--wait', '120s'])
  }
  const flat = await run([bins.kubectl, '--kubeconfig', p.kubeconfig, 'config', 'view', '--raw', '--minify', '--flatten', '--context', CLUSTER_CONTEXT])
  writeFileSync(p.nodeKubeconfig, flat.stdout, { mode: 0o600 })
  const docker = await ensureDockerEngine(loadConfig().docker)
  const node = await startNode(p.node, bins, p.nodeKubeconfig, docker.docker)
  if (state !== 'running' || node.started.length) say(`local cluster ready in ${((performance.now() - started) / 1000).toFixed(1)} s${node.started.length ? ` (started ${node.started.join(', ')})` : ''}`)
  return { kubeconfig: p.kubeconfig, context: CLUSTER_CONTEXT, binaries: bins }
}

/**
 * Stops the node (removing its pods' containers, network and cgroups) and the
 * control plane; etcd's data stays, so the next start keeps every release and
 * the kubelet recreates their pods.
 */
export async function stopCluster(cache: string): Promise<boolean> {
  const bins = cachedClusterBinaries(cache)
  const p = paths(cache)
  const stoppedNode = existsSync(p.node) ? await stopNode(p.node, bins?.kubeProxy) : []
  if (!bins || (await clusterStatus(cache, bins.kubectl)) !== 'running') return stoppedNode.length > 0
  await kwokctl(cache, bins, ['stop', 'cluster'], 120_000)
  return true
}

/** Removes the cluster (its processes, what the node made, and its state). */
export async function deleteCluster(cache: string): Promise<void> {
  const p = paths(cache)
  const bins = cachedClusterBinaries(cache)
  if (existsSync(p.node)) await deleteNode(p.node, bins?.kubeProxy)
  if (bins && existsSync(p.clusterConfig)) await kwokctl(cache, bins, ['delete', 'cluster'], 120_000)
  rmSync(p.root, { recursive: true, force: true })
}

/** The local cluster as a deploy target: what the stages get when no KUBE_CONTEXT is set. */
export async function localClusterTarget(cache: string): Promise<{ kubectl: string; kubeconfig: string; context: string }> {
  const local = await ensureCluster(cache)
  return { kubectl: local.binaries.kubectl, kubeconfig: local.kubeconfig, context: local.context }
}
