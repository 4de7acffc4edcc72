import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { ensureGoTool } from './go.ts'
import { requireTool } from './which.ts'
import { VERSIONS } from './versions.ts'
import { withLock } from '../core/lock.ts'
import { say } from '../core/output.ts'

/** Every binary the local cluster and the deploy stage run; all built from the Go module proxy. */
export interface ClusterBinaries {
  kubeApiserver: string
  kubeControllerManager: string
  kubeScheduler: string
  kubectl: string
  kubelet: string
  kubeProxy: string
  etcd: string
  kwok: string
  kwokctl: string
  helm: string
}

/** A module built through a generated wrapper module, because its own go.mod has `replace` directives. */
interface WrapperBuild {
  name: string
  version: string
  goMod: string
  /** Main packages to build, with the binary name each produces. */
  mains: { pkg: string; binary: string }[]
  /** Only these binaries are needed now (e.g. kubectl for a remote cluster); all when absent. */
  only?: string[]
  ldflags: string
}

function goEnv(): NodeJS.ProcessEnv {
  // GOTOOLCHAIN=local: a dependency's `toolchain` line must never make go download another toolchain.
  return { ...process.env, CGO_ENABLED: '0', GOTOOLCHAIN: 'local' }
}

/**
 * Builds the mains of a wrapper module once, into `<cache>/tools/<name>/<version>/`.
 * All mains go through one `go build` so they share compiled packages; the
 * binaries are moved into place only after the whole build succeeded.
 */
async function buildWrapper(cache: string, spec: WrapperBuild): Promise<Record<string, string>> {
  const dir = join(cache, 'tools', spec.name, spec.version)
  const paths = Object.fromEntries(spec.mains.map((m) => [m.binary, join(dir, m.binary)]))
  const wanted = spec.mains.filter((m) => !spec.only || spec.only.includes(m.binary))
  if (wanted.every((m) => existsSync(paths[m.binary]!))) return paths
  requireTool('go')
  const work = join(cache, 'build', `${spec.name}-${spec.version}`)
  mkdirSync(work, { recursive: true })
  return withLock(`${work}.lock`, async () => {
    if (wanted.every((m) => existsSync(paths[m.binary]!))) return paths
    return build(spec, work, dir, wanted, paths)
  })
}

async function build(
  spec: WrapperBuild,
  work: string,
  dir: string,
  wanted: WrapperBuild['mains'],
  paths: Record<string, string>,
): Promise<Record<string, string>> {
  writeFileSync(join(work, 'go.mod'), spec.goMod)
  // The tools-file pattern: the mains become dependencies that `go mod tidy` resolves and pins in go.sum.
  const imports = spec.mains.map((m) => `\t_ "${m.pkg}"`).join('\n')
  writeFileSync(join(work, 'tools.go'), `//go:build tools\n\npackage tools\n\nimport (\n${imports}\n)\n`)
  const env = goEnv()
  say(`resolving ${spec.name} ${spec.version} modules`)
  await run(['go', 'mod', 'tidy'], { cwd: work, env })
  const out = join(work, 'bin')
  rmSync(out, { recursive: true, force: true })
  mkdirSync(out, { recursive: true })
  const started = performance.now()
  say(`building ${wanted.map((m) => m.binary).join(', ')} ${spec.version} (once per machine; the first build takes long)`)
  await run(['go', 'build', '-trimpath', `-ldflags=${spec.ldflags}`, '-o', `${out}/`, ...wanted.map((m) => m.pkg)], { cwd: work, env })
  mkdirSync(dir, { recursive: true })
  for (const m of wanted) {
    const built = join(out, goBinaryName(m.pkg))
    if (!existsSync(built)) throw new PipelineError(`tools: go build produced no ${m.binary} in ${out}`)
    renameSync(built, paths[m.binary]!)
  }
  const minutes = ((performance.now() - started) / 60000).toFixed(1)
  writeFileSync(join(dir, 'BUILD-INFO'), `${spec.name} ${spec.version} built in ${minutes} min on ${new Date().toISOString()}\n`)
  say(`${spec.name} ${spec.version} built in ${minutes} min`)
  return paths
}

/** The file `go build -o dir/` writes for a main package: a major-version suffix (/v3) is skipped. */
export function goBinaryName(pkg: string): string {
  const parts = pkg.split('/')
  const last = parts[parts.length - 1]!
  return /^v\d+$/.test(last) && parts.length > 1 ? parts[parts.length - 2]! : last
}

/** The staging modules k8s.io/kubernetes requires as v0.0.0, each pinned to the matching v0.<minor>.<patch>. */
export function kubernetesWrapperGoMod(kubeVersion: string, kubernetesGoMod: string): string {
  const m = /^v1\.(\d+)\.(\d+)$/.exec(kubeVersion)
  if (!m) throw new PipelineError(`tools: kubernetes version "${kubeVersion}" is not v1.<minor>.<patch>`)
  const staging = `v0.${m[1]}.${m[2]}`
  const mods = [...kubernetesGoMod.matchAll(/^\s+(k8s\.io\/[a-z0-9-]+) v0\.0\.0$/gm)].map((x) => x[1]!)
  if (mods.length === 0)
    throw new PipelineError(`tools: k8s.io/kubernetes ${kubeVersion} go.mod lists no staging modules; the wrapper recipe needs updating`)
  const replaces = [...new Set(mods)].map((mod) => `\t${mod} => ${mod} ${staging}`).join('\n')
  return `module local/kube-build\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes ${kubeVersion}\n\nreplace (\n${replaces}\n)\n`
}

/** The -X flags Kubernetes' own release build stamps, so `--version` and the API report the real version. */
export function kubeLdflags(kubeVersion: string): string {
  const [, major, minor] = /^v(\d+)\.(\d+)/.exec(kubeVersion) ?? []
  const vars = { gitVersion: kubeVersion, gitMajor: major, gitMinor: minor, gitTreeState: 'clean', buildDate: '1970-01-01T00:00:00Z' }
  const flags = ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version'].flatMap((pkg) =>
    Object.entries(vars).map(([k, v]) => `-X ${pkg}.${k}=${v}`),
  )
  return ['-s', '-w', ...flags].join(' ')
}

async function moduleGoMod(mod: string, version: string): Promise<string> {
  const r = await run(['go', 'mod', 'download', '-json', `${mod}@${version}`], { env: goEnv() })
  const info = JSON.parse(r.stdout) as { GoMod?: string; Error?: string }
  if (!info.GoMod) throw new PipelineError(`tools: cannot fetch ${mod}@${version}: ${info.Error ?? 'no go.mod'}`)
  return readFileSync(info.GoMod, 'utf8')
}

/** The control plane, kubectl, and the real node's kubelet and kube-proxy: one `go build`, shared packages. */
const KUBE_BINARIES = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'kubelet', 'kube-proxy']
const KUBE_MAINS = KUBE_BINARIES.map((b) => ({ pkg: `k8s.io/kubernetes/cmd/${b}`, binary: b }))

async function buildKubernetes(cache: string, only?: string[]) {
  const version = VERSIONS.kubernetes
  const dir = join(cache, 'tools', 'kubernetes', version)
  const present = KUBE_MAINS.filter((m) => !only || only.includes(m.binary)).every((m) => existsSync(join(dir, m.binary)))
  const goMod = present ? '' : kubernetesWrapperGoMod(version, await moduleGoMod('k8s.io/kubernetes', version))
  return buildWrapper(cache, {
    name: 'kubernetes',
    version,
    goMod,
    mains: KUBE_MAINS,
    ldflags: kubeLdflags(version),
    ...(only ? { only } : {}),
  })
}

/** kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet and kube-proxy, one Kubernetes version. */
export async function ensureKubernetes(cache: string) {
  const p = await buildKubernetes(cache)
  return {
    kubeApiserver: p['kube-apiserver']!,
    kubeControllerManager: p['kube-controller-manager']!,
    kubeScheduler: p['kube-scheduler']!,
    kubectl: p.kubectl!,
    kubelet: p.kubelet!,
    kubeProxy: p['kube-proxy']!,
  }
}

/** kubectl alone (a remote cluster needs no control plane), pinned to the same Kubernetes version. */
export async function ensureKubectl(cache: string): Promise<string> {
  return (await buildKubernetes(cache, ['kubectl'])).kubectl!
}

/** etcd's server module carries `replace` directives, so `go install` refuses it; a wrapper requires it instead. */
export async function ensureEtcd(cache: string): Promise<string> {
  const version = VERSIONS.etcd
  const goMod = `module local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 ${version}\n`
  const p = await buildWrapper(cache, {
    name: 'etcd',
    version,
    goMod,
    mains: [{ pkg: 'go.etcd.io/etcd/server/v3', binary: 'etcd' }],
    ldflags: '-s -w',
  })
  return p.etcd!
}

export async function ensureKwok(cache: string): Promise<{ kwok: string; kwokctl: string }> {
  // kwokctl would otherwise default to its own Kubernetes version when it names components.
  const ldflags = `-s -w -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${VERSIONS.kubernetes.replace(/^v/, '')}`
  const kwokctl = await ensureGoTool(cache, {
    binary: 'kwokctl',
    pkg: 'sigs.k8s.io/kwok/cmd/kwokctl',
    version: VERSIONS.kwok,
    ldflags,
    env: { GOTOOLCHAIN: 'local' },
  })
  const kwok = await ensureGoTool(cache, {
    binary: 'kwok',
    pkg: 'sigs.k8s.io/kwok/cmd/kwok',
    version: VERSIONS.kwok,
    ldflags,
    env: { GOTOOLCHAIN: 'local' },
  })
  return { kwok, kwokctl }
}

/**
 * Helm 4 reads the Kubernetes version its client libraries speak (client-go
 * v0.37 for Helm 4.3) from the binary's module information, which `go install`
 * keeps, so only the version is stamped, as Helm's own release build does.
 */
export async function ensureHelm(cache: string): Promise<string> {
  const ldflags = [
    '-s -w',
    `-X helm.sh/helm/v4/internal/version.version=${VERSIONS.helm}`,
    '-X helm.sh/helm/v4/internal/version.gitTreeState=clean',
  ].join(' ')
  return ensureGoTool(cache, {
    binary: 'helm',
    pkg: 'helm.sh/helm/v4/cmd/helm',
    version: VERSIONS.helm,
    ldflags,
    env: { GOTOOLCHAIN: 'local' },
  })
}

/** Everything, built one at a time: the machine has two cores shared with other builds. */
export async function ensureClusterBinaries(cache: string): Promise<ClusterBinaries> {
  const kube = await ensureKubernetes(cache)
  const etcd = await ensureEtcd(cache)
  const kwok = await ensureKwok(cache)
  const helm = await ensureHelm(cache)
  return { ...kube, etcd, ...kwok, helm }
}

/** The cluster binaries when every one is already cached; undefined otherwise. Never builds. */
export function cachedClusterBinaries(cache: string): ClusterBinaries | undefined {
  const c = cachedBinaries(cache)
  if (!c.every((b) => b.present)) return undefined
  const at = (name: string) => c.find((b) => b.name === name)!.path
  return {
    kubeApiserver: at('kube-apiserver'),
    kubeControllerManager: at('kube-controller-manager'),
    kubeScheduler: at('kube-scheduler'),
    kubectl: at('kubectl'),
    kubelet: at('kubelet'),
    kubeProxy: at('kube-proxy'),
    etcd: at('etcd'),
    kwok: at('kwok'),
    kwokctl: at('kwokctl'),
    helm: at('helm'),
  }
}

/** Which binaries are already cached, without building anything (for `cluster status`). */
export function cachedBinaries(cache: string): { name: string; path: string; present: boolean }[] {
  const at = (name: string, version: string, binary: string) => {
    const path = join(cache, 'tools', name, version, binary)
    return { name: binary, path, present: existsSync(path) }
  }
  return [
    ...KUBE_BINARIES.map((b) => at('kubernetes', VERSIONS.kubernetes, b)),
    at('etcd', VERSIONS.etcd, 'etcd'),
    at('kwokctl', VERSIONS.kwok, 'kwokctl'),
    at('kwok', VERSIONS.kwok, 'kwok'),
    at('helm', VERSIONS.helm, 'helm'),
  ]
}
