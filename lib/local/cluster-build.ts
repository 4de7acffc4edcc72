import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { processAlive, run } from '../core/run.ts'
import { ensureGoTool, requireTool } from '../core/tools.ts'
import { VERSIONS } from '../core/versions.ts'

/** Every binary the local cluster and the deploy stage run; all built from the Go module proxy. */
export interface ClusterBinaries {
  kubeApiserver: string
  kubeControllerManager: string
  kubeScheduler: string
  kubectl: string
  etcd: string
  kwok: string
  kwokctl: string
  helm: string
}

type OnLine = ((line: string) => void) | undefined

/**
 * One build (or cluster start) at a time per directory: a test and a bootstrap
 * started together would otherwise delete each other's half-built binaries.
 * A lock whose owner has died is taken over.
 */
export async function withLock<T>(lock: string, onLine: OnLine, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      mkdirSync(lock)
      break
    } catch {
      let owner = 0
      try {
        owner = Number(readFileSync(join(lock, 'pid'), 'utf8').trim())
      } catch {
        // Just taken (no pid written yet) or just released: look again shortly.
      }
      if (owner && !processAlive(owner)) {
        rmSync(lock, { recursive: true, force: true })
        continue
      }
      onLine?.(`waiting for another build (pid ${owner || '?'}) that holds ${lock}`)
      await new Promise((r) => setTimeout(r, 5000))
    }
  }
  writeFileSync(join(lock, 'pid'), String(process.pid))
  try {
    return await fn()
  } finally {
    rmSync(lock, { recursive: true, force: true })
  }
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
async function buildWrapper(cache: string, spec: WrapperBuild, onLine: OnLine): Promise<Record<string, string>> {
  const dir = join(cache, 'tools', spec.name, spec.version)
  const paths = Object.fromEntries(spec.mains.map((m) => [m.binary, join(dir, m.binary)]))
  const wanted = spec.mains.filter((m) => !spec.only || spec.only.includes(m.binary))
  if (wanted.every((m) => existsSync(paths[m.binary]!))) return paths
  requireTool('go')
  const work = join(cache, 'build', `${spec.name}-${spec.version}`)
  mkdirSync(work, { recursive: true })
  return withLock(`${work}.lock`, onLine, async () => {
    if (wanted.every((m) => existsSync(paths[m.binary]!))) return paths
    return build(spec, work, dir, wanted, paths, onLine)
  })
}

async function build(spec: WrapperBuild, work: string, dir: string, wanted: WrapperBuild['mains'], paths: Record<string, string>, onLine: OnLine): Promise<Record<string, string>> {
  writeFileSync(join(work, 'go.mod'), spec.goMod)
  // The tools-file pattern: the mains become dependencies that `go mod tidy` resolves and pins in go.sum.
  const imports = spec.mains.map((m) => `\t_ "${m.pkg}"`).join('\n')
  writeFileSync(join(work, 'tools.go'), `//go:build tools\n\npackage tools\n\nimport (\n${imports}\n)\n`)
  const env = goEnv()
  onLine?.(`resolving ${spec.name} ${spec.version} modules`)
  await run(['go', 'mod', 'tidy'], { cwd: work, env, onLine })
  const out = join(work, 'bin')
  rmSync(out, { recursive: true, force: true })
  mkdirSync(out, { recursive: true })
  const started = performance.now()
  onLine?.(`building ${wanted.map((m) => m.binary).join(', ')} ${spec.version} (once per machine; the first build takes long)`)
  await run(['go', 'build', '-trimpath', `-ldflags=${spec.ldflags}`, '-o', `${out}/`, ...wanted.map((m) => m.pkg)], { cwd: work, env, onLine })
  mkdirSync(dir, { recursive: true })
  for (const m of wanted) {
    const built = join(out, goBinaryName(m.pkg))
    if (!existsSync(built)) throw new PipelineError(`cluster-build: go build produced no ${m.binary} in ${out}`)
    renameSync(built, paths[m.binary]!)
  }
  const minutes = ((performance.now() - started) / 60000).toFixed(1)
  writeFileSync(join(dir, 'BUILD-INFO'), `${spec.name} ${spec.version} built in ${minutes} min on ${new Date().toISOString()}\n`)
  onLine?.(`${spec.name} ${spec.version} built in ${minutes} min`)
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
  if (!m) throw new PipelineError(`cluster-build: kubernetes version "${kubeVersion}" is not v1.<minor>.<patch>`)
  const staging = `v0.${m[1]}.${m[2]}`
  const mods = [...kubernetesGoMod.matchAll(/^\s+(k8s\.io\/[a-z0-9-]+) v0\.0\.0$/gm)].map((x) => x[1]!)
  if (mods.length === 0) throw new PipelineError(`cluster-build: k8s.io/kubernetes ${kubeVersion} go.mod lists no staging modules; the wrapper recipe needs updating`)
  const replaces = [...new Set(mods)].map((mod) => `\t${mod} => ${mod} ${staging}`).join('\n')
  return `module local/kube-build\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes ${kubeVersion}\n\nreplace (\n${replaces}\n)\n`
}

/** The -X flags Kubernetes' own release build stamps, so `--version` and the API report the real version. */
export function kubeLdflags(kubeVersion: string): string {
  const [, major, minor] = /^v(\d+)\.(\d+)/.exec(kubeVersion) ?? []
  const vars = { gitVersion: kubeVersion, gitMajor: major, gitMinor: minor, gitTreeState: 'clean', buildDate: '1970-01-01T00:00:00Z' }
  const flags = ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version'].flatMap((pkg) => Object.entries(vars).map(([k, v]) => `-X ${pkg}.${k}=${v}`))
  return ['-s', '-w', ...flags].join(' ')
}

async function moduleGoMod(mod: string, version: string): Promise<string> {
  const r = await run(['go', 'mod', 'download', '-json', `${mod}@${version}`], { env: goEnv() })
  const info = JSON.parse(r.stdout) as { GoMod?: string; Error?: string }
  if (!info.GoMod) throw new PipelineError(`cluster-build: cannot fetch ${mod}@${version}: ${info.Error ?? 'no go.mod'}`)
  return readFileSync(info.GoMod, 'utf8')
}

const KUBE_MAINS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl'].map((b) => ({ pkg: `k8s.io/kubernetes/cmd/${b}`, binary: b }))

async function buildKubernetes(cache: string, onLine: OnLine, only?: string[]) {
  const version = VERSIONS.kubernetes
  const dir = join(cache, 'tools', 'kubernetes', version)
  const present = KUBE_MAINS.filter((m) => !only || only.includes(m.binary)).every((m) => existsSync(join(dir, m.binary)))
  const goMod = present ? '' : kubernetesWrapperGoMod(version, await moduleGoMod('k8s.io/kubernetes', version))
  return buildWrapper(cache, { name: 'kubernetes', version, goMod, mains: KUBE_MAINS, ldflags: kubeLdflags(version), ...(only ? { only } : {}) }, onLine)
}

/** kube-apiserver, kube-controller-manager, kube-scheduler and kubectl, one Kubernetes version. */
export async function ensureKubernetes(cache: string, onLine?: OnLine) {
  const p = await buildKubernetes(cache, onLine)
  return { kubeApiserver: p['kube-apiserver']!, kubeControllerManager: p['kube-controller-manager']!, kubeScheduler: p['kube-scheduler']!, kubectl: p.kubectl! }
}

/** kubectl alone (a remote cluster needs no control plane), pinned to the same Kubernetes version. */
export async function ensureKubectl(cache: string, onLine?: OnLine): Promise<string> {
  return (await buildKubernetes(cache, onLine, ['kubectl'])).kubectl!
}

/** etcd's server module carries `replace` directives, so `go install` refuses it; a wrapper requires it instead. */
export async function ensureEtcd(cache: string, onLine?: OnLine): Promise<string> {
  const version = VERSIONS.etcd
  const goMod = `module local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 ${version}\n`
  const p = await buildWrapper(cache, { name: 'etcd', version, goMod, mains: [{ pkg: 'go.etcd.io/etcd/server/v3', binary: 'etcd' }], ldflags: '-s -w' }, onLine)
  return p.etcd!
}

export async function ensureKwok(cache: string, onLine?: OnLine): Promise<{ kwok: string; kwokctl: string }> {
  // kwokctl would otherwise default to its own Kubernetes version when it names components.
  const ldflags = `-s -w -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${VERSIONS.kubernetes.replace(/^v/, '')}`
  const kwokctl = await ensureGoTool(cache, { binary: 'kwokctl', pkg: 'sigs.k8s.io/kwok/cmd/kwokctl', version: VERSIONS.kwok, ldflags, env: { GOTOOLCHAIN: 'local' } }, onLine)
  const kwok = await ensureGoTool(cache, { binary: 'kwok', pkg: 'sigs.k8s.io/kwok/cmd/kwok', version: VERSIONS.kwok, ldflags, env: { GOTOOLCHAIN: 'local' } }, onLine)
  return { kwok, kwokctl }
}

/**
 * Helm 4 reads the Kubernetes version its client libraries speak (client-go
 * v0.37 for Helm 4.3) from the binary's module information, which `go install`
 * keeps, so only the version is stamped, as Helm's own release build does.
 */
export async function ensureHelm(cache: string, onLine?: OnLine): Promise<string> {
  const ldflags = [
    '-s -w',
    `-X helm.sh/helm/v4/internal/version.version=${VERSIONS.helm}`,
    '-X helm.sh/helm/v4/internal/version.gitTreeState=clean',
  ].join(' ')
  return ensureGoTool(cache, { binary: 'helm', pkg: 'helm.sh/helm/v4/cmd/helm', version: VERSIONS.helm, ldflags, env: { GOTOOLCHAIN: 'local' } }, onLine)
}

/** Everything, built one at a time: the machine has two cores shared with other builds. */
export async function ensureClusterBinaries(cache: string, onLine?: OnLine): Promise<ClusterBinaries> {
  const kube = await ensureKubernetes(cache, onLine)
  const etcd = await ensureEtcd(cache, onLine)
  const kwok = await ensureKwok(cache, onLine)
  const helm = await ensureHelm(cache, onLine)
  return { ...kube, etcd, ...kwok, helm }
}

/** The cluster binaries when every one is already cached; undefined otherwise. Never builds. */
export function cachedClusterBinaries(cache: string): ClusterBinaries | undefined {
  const c = cachedBinaries(cache)
  if (!c.every((b) => b.present)) return undefined
  const at = (name: string) => c.find((b) => b.name === name)!.path
  return { kubeApiserver: at('kube-apiserver'), kubeControllerManager: at('kube-controller-manager'), kubeScheduler: at('kube-scheduler'), kubectl: at('kubectl'), etcd: at('etcd'), kwok: at('kwok'), kwokctl: at('kwokctl'), helm: at('helm') }
}

/** Which binaries are already cached, without building anything (for `cluster status`). */
export function cachedBinaries(cache: string): { name: string; path: string; present: boolean }[] {
  const at = (name: string, version: string, binary: string) => {
    const path = join(cache, 'tools', name, version, binary)
    return { name: binary, path, present: existsSync(path) }
  }
  return [
    ...['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl'].map((b) => at('kubernetes', VERSIONS.kubernetes, b)),
    at('etcd', VERSIONS.etcd, 'etcd'),
    at('kwokctl', VERSIONS.kwok, 'kwokctl'),
    at('kwok', VERSIONS.kwok, 'kwok'),
    at('helm', VERSIONS.helm, 'helm'),
  ]
}
