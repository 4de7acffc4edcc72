/**
 * The local cluster's real node: a containerd of its own with the CRI plugin,
 * Debian's CNI plugins, the kubelet and kube-proxy, run as the pipeline's own
 * background services (logs and pidfiles under the cluster's state dir).
 * Pods really pull, start, probe and drain here. `stopNode` removes what the
 * node made on the machine (containers, pod network namespaces and veths, the
 * bridge, iptables chains, cgroups, mounts); `startNode` works after an
 * unclean stop too.
 */
import { existsSync,mkdirSync,readFileSync,readdirSync,rmSync,rmdirSync,writeFileSync } from 'node:fs'
import { dirname,join } from 'node:path'
import { ensureDebianPackages } from '../tools/apt.ts'
import { PipelineError } from '../core/errors.ts'
import { LOG_ERROR,lastWords,run,succeeds,tail } from '../core/run.ts'
import { repoRoot } from '../core/paths.ts'
import { dockerEnv } from '../build/docker.ts'
import { LOCAL_REGISTRY } from './registry.ts'
import { runningPid,startDetached,stopPid } from './service.ts'
import { criAnswers } from './cri.ts'
import {
CNI_NETWORK,
CONTAINERD_NAMESPACE,
KUBELET_HEALTHZ_PORT,
KUBE_PROXY_HEALTHZ_PORT,
NODE_IP,
NODE_ADDRESS_LABEL,
NODE_LINK,
NODE_NAME,
POD_BRIDGE,
SANDBOX_IMAGE,
cniConflist,
containerdConfig,
kubeProxyConfig,
kubeletConfig,
nodeDirs,
registryHostsToml,
type NodeDirs,
} from './node-config.ts'
import { say } from '../core/output.ts'
import { writeJson } from '../core/json.ts'

/** What the node needs from Debian (containerd and runc come with docker.io, which the Docker engine installs). */
export const NODE_PACKAGES = [
  { pkg: 'containernetworking-plugins', provides: '/usr/lib/cni/bridge' },
  { pkg: 'conntrack', provides: 'conntrack' },
  { pkg: 'socat', provides: 'socat' },
  { pkg: 'ethtool', provides: 'ethtool' },
  { pkg: 'iptables', provides: 'iptables' },
  { pkg: 'iproute2', provides: 'ip' },
  { pkg: 'containerd', provides: '/usr/bin/containerd' },
  { pkg: 'runc', provides: 'runc' },
] as const

export interface NodeBinaries {
  kubelet: string
  kubeProxy: string
  kubectl: string
}

const ctr = (d: NodeDirs, ...args: string[]) => ['ctr', '--address', d.containerd.socket, '--namespace', CONTAINERD_NAMESPACE, ...args]

async function httpOk(url: string): Promise<boolean> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(2000) })
    return r.ok
  } catch {
    return false
  }
}

export interface Service {
  name: string
  binary: string
  args: string[]
  log: string
  pid: string
  ready: () => Promise<boolean>
  timeoutMs: number
}

/** Starts a service unless its pidfile names a live process; a failure names the service and quotes its log. */
export async function ensureService(s: Service): Promise<'running' | 'started'> {
  const pid = runningPid(s.pid, s.binary.split('/').pop()!)
  if (pid && (await s.ready())) return 'running'
  if (pid) await stopPid(pid, 15_000)
  say(`starting ${s.name} (log: ${s.log})`)
  writeFileSync(s.log, `\n--- ${new Date().toISOString()} starting ${s.name}\n`, { flag: 'a' })
  const started = await startDetached({ binary: s.binary, args: s.args, log: s.log, ready: s.ready, timeoutMs: s.timeoutMs, pollMs: 500 })
  if (started.ok) {
    writeFileSync(s.pid, `${started.pid ?? ''}\n`)
    return 'started'
  }
  const why = started.exited !== null ? `exited ${started.exited}` : `did not become ready within ${s.timeoutMs / 1000} s and was stopped`
  throw new PipelineError(`cluster: the node's ${s.name} ${why}: ${lastWords(started.logTail ?? '')} (log: ${s.log})`, started.logTail)
}

/** Kernel and host settings pods need: bridged traffic through iptables, forwarding, the node's own address. */
async function prepareHost(): Promise<void> {
  await run(['modprobe', 'br_netfilter'], { okCodes: [1] }).catch(() => undefined)
  await run(['modprobe', 'overlay'], { okCodes: [1] }).catch(() => undefined)
  for (const [key, value] of [['net.ipv4.ip_forward', '1'], ['net.bridge.bridge-nf-call-iptables', '1']] as const) {
    const file = `/proc/sys/${key.replace(/\./g, '/')}`
    if (!existsSync(file)) throw new PipelineError(`cluster: ${key} does not exist on this kernel (br_netfilter is needed for pod traffic); load the module or use KUBE_CONTEXT`)
    if (readFileSync(file, 'utf8').trim() !== value) writeFileSync(file, value)
  }
  const addrs = (await run(['ip', '-o', '-4', 'addr', 'show', 'dev', NODE_LINK])).stdout
  if (!addrs.includes(` ${NODE_IP}/`)) {
    say(`adding the node's address ${NODE_IP}/32 on ${NODE_LINK}`)
    await run(['ip', 'addr', 'add', `${NODE_IP}/32`, 'dev', NODE_LINK, 'label', NODE_ADDRESS_LABEL])
  }
}

/** The pause program, compiled static and shipped FROM scratch, imported into the node's containerd. */
async function ensureSandboxImage(d: NodeDirs, docker: string): Promise<void> {
  const have = await run(ctr(d, 'images', 'ls', '-q', `name==${SANDBOX_IMAGE}`))
  if (have.stdout.trim() === SANDBOX_IMAGE) return
  say(`building the sandbox image ${SANDBOX_IMAGE} (static pause, FROM scratch)`)
  const work = join(d.root, 'pause-build')
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  await run(['gcc', '-static', '-Os', '-s', '-o', join(work, 'pause'), join(repoRoot, 'lib', 'sandbox', 'pause.c')])
  writeFileSync(join(work, 'Dockerfile'), 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n')
  await run([docker, 'build', '--quiet', '--tag', SANDBOX_IMAGE, work], { env: dockerEnv() })
  const tar = join(work, 'pause.tar')
  await run([docker, 'save', '--output', tar, SANDBOX_IMAGE], { env: dockerEnv() })
  await run(ctr(d, 'images', 'import', tar))
  rmSync(work, { recursive: true, force: true })
}

function writeConfigs(d: NodeDirs, nodeKubeconfig: string): void {
  for (const dir of [d.containerd.dir, d.containerd.certsDir, d.cni.confDir, d.cni.ipamDir, d.kubelet.dir, d.kubelet.root, d.kubelet.podLogs, d.kubeProxy.dir]) mkdirSync(dir, { recursive: true })
  writeFileSync(d.containerd.config, containerdConfig(d))
  mkdirSync(join(d.containerd.certsDir, LOCAL_REGISTRY), { recursive: true })
  writeFileSync(join(d.containerd.certsDir, LOCAL_REGISTRY, 'hosts.toml'), registryHostsToml(LOCAL_REGISTRY))
  writeJson(join(d.cni.confDir, `10-${CNI_NETWORK}.conflist`), cniConflist(d))
  // YAML is a superset of JSON.
  writeJson(d.kubelet.config, kubeletConfig(d))
  writeJson(d.kubeProxy.config, kubeProxyConfig(nodeKubeconfig))
}

/** The node's containerd: ready when its CRI answers, which is what the kubelet needs (lib/sandbox/cri.ts), not merely its own API. */
export function containerdService(d: NodeDirs): Service {
  return { name: 'containerd', binary: '/usr/bin/containerd', args: ['--config', d.containerd.config], log: d.containerd.log, pid: d.containerd.pid, ready: () => criAnswers(d.containerd.socket), timeoutMs: 60_000 }
}

/**
 * Starts whatever part of the node is not running and waits until the API
 * server reports the node Ready. `kubeconfig` is the control plane's admin
 * kubeconfig (single context); the kubelet and kube-proxy use it.
 */
export async function startNode(root: string, bins: NodeBinaries, kubeconfig: string, docker: string): Promise<{ started: string[] }> {
  await ensureDebianPackages(NODE_PACKAGES)
  const d = nodeDirs(root)
  writeConfigs(d, kubeconfig)
  await prepareHost()
  const started: string[] = []
  const containerd = await ensureService(containerdService(d))
  if (containerd === 'started') started.push('containerd')
  await ensureSandboxImage(d, docker)
  const kubelet = await ensureService(
    {
      name: 'kubelet',
      binary: bins.kubelet,
      args: ['--config', d.kubelet.config, '--kubeconfig', kubeconfig, '--root-dir', d.kubelet.root, '--cert-dir', join(d.kubelet.dir, 'pki'), '--hostname-override', NODE_NAME, '--node-ip', NODE_IP, '--v', '1'],
      log: d.kubelet.log,
      pid: d.kubelet.pid,
      ready: () => httpOk(`http://127.0.0.1:${KUBELET_HEALTHZ_PORT}/healthz`),
      timeoutMs: 120_000,
    },
  )
  if (kubelet === 'started') started.push('kubelet')
  const proxy = await ensureService(
    { name: 'kube-proxy', binary: bins.kubeProxy, args: ['--config', d.kubeProxy.config, '--v', '1'], log: d.kubeProxy.log, pid: d.kubeProxy.pid, ready: () => httpOk(`http://127.0.0.1:${KUBE_PROXY_HEALTHZ_PORT}/healthz`), timeoutMs: 120_000 },
  )
  if (proxy === 'started') started.push('kube-proxy')
  say(`waiting for node ${NODE_NAME} to be Ready`)
  const r = await run([bins.kubectl, '--kubeconfig', kubeconfig, 'wait', '--for=condition=Ready', `node/${NODE_NAME}`, '--timeout=120s'], { okCodes: [1], timeoutMs: 150_000 })
  if (r.exitCode !== 0) {
    const logTail = existsSync(d.kubelet.log) ? tail(readFileSync(d.kubelet.log, 'utf8'), 15) : '(no log)'
    throw new PipelineError(`cluster: node ${NODE_NAME} is not Ready after 120 s; the kubelet's last error: ${lastWords(logTail, LOG_ERROR)} (log: ${d.kubelet.log})`, logTail)
  }
  return { started }
}

/** Processes whose command line names our containerd's socket: the shims that hold the pods' containers. */
function shimPids(d: NodeDirs): number[] {
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')
      if (cmd[0]?.includes('containerd-shim') && cmd.includes(d.containerd.socket)) pids.push(Number(entry))
    } catch {
      // Exited while we looked.
    }
  }
  return pids
}

/** Mount points at or below a directory, deepest first. */
function mountsUnder(dir: string): string[] {
  const lines = readFileSync('/proc/self/mounts', 'utf8').split('\n')
  const points = lines.map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' ')).filter((m) => m === dir || m.startsWith(`${dir}/`))
  return [...new Set(points)].sort((a, b) => b.length - a.length)
}

/** `iptables -S` words: comments come quoted, with \" inside. */
export function iptablesWords(rule: string): string[] {
  const words: string[] = []
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g
  for (const m of rule.matchAll(re)) words.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!)
  return words
}

/** Removes the iptables rules that jump to chains named with `prefix`, then the chains. */
async function removeChains(table: string, prefix: RegExp): Promise<void> {
  const r = await run(['iptables', '-w', '-t', table, '-S'], { okCodes: [1, 2, 3, 4] })
  const rules = r.stdout.split('\n')
  const chains = rules.filter((l) => l.startsWith('-N ')).map((l) => l.slice(3).trim()).filter((c) => prefix.test(c))
  if (chains.length === 0) return
  for (const rule of rules) {
    if (!rule.startsWith('-A ')) continue
    const parts = iptablesWords(rule)
    const jump = parts[parts.indexOf('-j') + 1] ?? ''
    if (chains.includes(parts[1]!) || !chains.includes(jump)) continue
    await run(['iptables', '-w', '-t', table, '-D', ...parts.slice(1)], { okCodes: [1, 2] })
  }
  for (const c of chains) await run(['iptables', '-w', '-t', table, '-F', c], { okCodes: [1, 2] })
  for (const c of chains) await run(['iptables', '-w', '-t', table, '-X', c], { okCodes: [1, 2] })
}

/** The kubelet's cgroups (cgroup v1: one tree per controller; v2: one tree). */
function removeCgroups(): void {
  const base = '/sys/fs/cgroup'
  const roots = existsSync(join(base, 'cgroup.controllers')) ? [base] : readdirSync(base).map((c) => join(base, c))
  for (const r of roots) {
    const top = join(r, 'kubepods')
    if (!existsSync(top)) continue
    const dirs: string[] = []
    const walk = (p: string) => {
      dirs.push(p)
      for (const e of readdirSync(p, { withFileTypes: true })) if (e.isDirectory()) walk(join(p, e.name))
    }
    try {
      walk(top)
    } catch {
      continue
    }
    for (const dir of dirs.reverse()) {
      try {
        // cgroupfs directories go with rmdir only, children first, once no process is left in them.
        rmdirSync(dir)
      } catch {
        // Still busy or already gone; `down` runs again after the last process exits.
      }
    }
  }
}

/**
 * Stops kube-proxy, the kubelet, the pods' containers and containerd, and
 * removes what they made on the machine. Also the way back from an unclean
 * stop: everything is found from the state dir and the kernel, not from
 * memory of a previous run.
 */
export async function stopNode(root: string, kubeProxy: string | undefined): Promise<string[]> {
  const d = nodeDirs(root)
  const stopped: string[] = []
  for (const [name, pidfile, program] of [['kubelet', d.kubelet.pid, 'kubelet'], ['kube-proxy', d.kubeProxy.pid, 'kube-proxy']] as const) {
    const pid = runningPid(pidfile, program)
    if (pid) {
      say(`stopping ${name} (pid ${pid})`)
      await stopPid(pid, 20_000)
      stopped.push(name)
    }
    rmSync(pidfile, { force: true })
  }
  const shims = shimPids(d)
  if (shims.length) say(`stopping ${shims.length} pod container shim(s)`)
  for (const pid of shims) {
    try {
      process.kill(-pid, 'SIGKILL')
    } catch {
      // Not a group leader: the shim alone.
    }
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // Already gone.
    }
  }
  // The containers each shim ran, found by the runc state of our runc root.
  if (existsSync(d.containerd.runcRoot)) {
    for (const ns of readdirSync(d.containerd.runcRoot)) {
      const dir = join(d.containerd.runcRoot, ns)
      for (const id of existsSync(dir) ? readdirSync(dir) : []) {
        await run(['runc', '--root', dir, 'kill', id, 'KILL'], { okCodes: [1] }).catch(() => undefined)
        await run(['runc', '--root', dir, 'delete', '--force', id], { okCodes: [1] }).catch(() => undefined)
      }
    }
  }
  const cd = runningPid(d.containerd.pid, 'containerd')
  if (cd) {
    say(`stopping containerd (pid ${cd})`)
    await stopPid(cd, 20_000)
    stopped.push('containerd')
  }
  rmSync(d.containerd.pid, { force: true })
  // Pod network namespaces (containerd names them cni-<uuid>); removing them removes the pods' veths.
  const netnsDir = '/run/netns'
  for (const ns of existsSync(netnsDir) ? readdirSync(netnsDir).filter((n) => n.startsWith('cni-')) : []) {
    await run(['umount', join(netnsDir, ns)], { okCodes: [1, 32] }).catch(() => undefined)
    rmSync(join(netnsDir, ns), { force: true })
  }
  for (const m of [...mountsUnder(d.kubelet.root), ...mountsUnder(d.containerd.state), ...mountsUnder(d.containerd.root)]) {
    await run(['umount', '-l', m], { okCodes: [1, 32] }).catch(() => undefined)
  }
  if (await succeeds(['ip', 'link', 'show', POD_BRIDGE])) await run(['ip', 'link', 'delete', POD_BRIDGE], { okCodes: [1, 2] })
  await run(['ip', 'addr', 'del', `${NODE_IP}/32`, 'dev', NODE_LINK], { okCodes: [1, 2] })
  if (kubeProxy && existsSync(kubeProxy)) await run([kubeProxy, '--cleanup', '--v', '0'], { okCodes: [1, 255], timeoutMs: 60_000 }).catch(() => undefined)
  await removeChains('nat', /^(KUBE-|CNI-)/)
  await removeChains('filter', /^(KUBE-|CNI-)/)
  await removeChains('mangle', /^KUBE-/)
  removeCgroups()
  rmSync(d.cni.ipamDir, { recursive: true, force: true })
  return stopped
}

/** Removes the node's state (containerd's images and snapshots too), after stopping it. */
export async function deleteNode(root: string, kubeProxy: string | undefined): Promise<void> {
  await stopNode(root, kubeProxy)
  for (const m of mountsUnder(root)) await run(['umount', '-l', m], { okCodes: [1, 32] }).catch(() => undefined)
  rmSync(root, { recursive: true, force: true })
  mkdirSync(dirname(root), { recursive: true })
}
