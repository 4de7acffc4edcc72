/**
 * Kyverno, the admission controller that enforces the chart's image policy
 * (docs/admission.md). Its module carries `replace` directives, so
 * `go install pkg@version` refuses it: the module zip is fetched from the Go
 * module proxy and its admission controller and init container are built
 * inside it, with one `go build` so they share compiled packages. The same
 * zip holds the upstream chart and the CRDs, which are kept beside the
 * binaries under `<cache>/tools/kyverno/<version>/`.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseYaml, stringify } from 'yaml'
import { PipelineError } from '../core/errors.ts'
import { withLock } from '../core/lock.ts'
import { say } from '../core/output.ts'
import { run } from '../core/run.ts'
import { VERSIONS } from './versions.ts'
import { requireTool } from './which.ts'

export const KYVERNO_MODULE = 'github.com/kyverno/kyverno'

/** The binaries the admission controller's pod runs: the controller and its init container (`kyverno-pre`). */
const MAINS = [
  { pkg: './cmd/kyverno', binary: 'kyverno' },
  { pkg: './cmd/kyverno-init', binary: 'kyvernopre' },
] as const

export interface KyvernoTool {
  version: string
  /** The admission controller and its init container, static (CGO off). */
  kyverno: string
  kyvernopre: string
  /** The license files its images carry (ko's kodata). */
  kodata: string
  /** The upstream chart, its remote-only dependencies dropped (see airGappedChart). */
  chart: string
  /** The policies.kyverno.io CRDs, which upstream ships in the remote kyverno-api chart. */
  crds: string
}

function paths(cache: string, version = VERSIONS.kyverno) {
  const dir = join(cache, 'tools', 'kyverno', version)
  return { dir, kyverno: join(dir, 'kyverno'), kyvernopre: join(dir, 'kyvernopre'), kodata: join(dir, 'kodata'), chart: join(dir, 'chart'), crds: join(dir, 'crds'), info: join(dir, 'BUILD-INFO') }
}

/** The pinned Kyverno when everything is cached; undefined otherwise. Never builds. */
export function cachedKyverno(cache: string): KyvernoTool | undefined {
  const p = paths(cache)
  return existsSync(p.info) ? { version: VERSIONS.kyverno, kyverno: p.kyverno, kyvernopre: p.kyvernopre, kodata: p.kodata, chart: p.chart, crds: p.crds } : undefined
}

/** The module's directory in the Go module cache, downloaded through the proxy when missing. */
async function moduleDir(version: string): Promise<string> {
  const r = await run(['go', 'mod', 'download', '-json', `${KYVERNO_MODULE}@${version}`], { env: { ...process.env, GOTOOLCHAIN: 'local' }, okCodes: [1] })
  let info: { Dir?: string; Error?: string } = {}
  try {
    info = JSON.parse(r.stdout) as typeof info
  } catch {
    // go printed no JSON: its stderr says why.
  }
  if (!info.Dir) throw new PipelineError(`kyverno: cannot fetch ${KYVERNO_MODULE}@${version} from the Go module proxy: ${info.Error ?? r.stderr.trim().split('\n').pop() ?? 'no module directory'}`)
  return info.Dir
}

/**
 * The chart as upstream ships it, minus the dependencies that live only in
 * remote chart repositories (kyverno-api, openreports, reports-server), which
 * an air-gapped helm cannot fetch: the CRDs kyverno-api would install come
 * from the same module's config/crds, and the other two are off by default.
 * Chart.lock goes too, since it records those remote dependencies.
 */
export function airGappedChart(chartYaml: string): string {
  const chart = parseYaml(chartYaml) as { dependencies?: { name: string; repository?: string }[] }
  chart.dependencies = (chart.dependencies ?? []).filter((d) => !d.repository)
  return stringify(chart)
}

/**
 * The pinned Kyverno, built once per machine (several minutes on two cores;
 * docs/admission.md). Moved into place only after the whole build
 * succeeded, so an interrupted build never leaves half a tool.
 */
export async function ensureKyverno(cache: string): Promise<KyvernoTool> {
  const cached = cachedKyverno(cache)
  if (cached) return cached
  requireTool('go')
  const p = paths(cache)
  mkdirSync(join(cache, 'build'), { recursive: true })
  return withLock(join(cache, 'build', `kyverno-${VERSIONS.kyverno}.lock`), async () => {
    const again = cachedKyverno(cache)
    if (again) return again
    const src = await moduleDir(VERSIONS.kyverno)
    const tmp = `${p.dir}.tmp-${process.pid}`
    rmSync(tmp, { recursive: true, force: true })
    mkdirSync(tmp, { recursive: true })
    const started = performance.now()
    say(`building kyverno ${VERSIONS.kyverno} (admission controller and init container) from the Go module proxy (once per machine; takes long)`)
    const ldflags = `-s -w -X ${KYVERNO_MODULE}/pkg/version.BuildVersion=${VERSIONS.kyverno}`
    const bin = join(tmp, 'bin')
    // Built inside the module so its own go.mod, replaces included, decides every dependency.
    await run(['go', 'build', '-trimpath', `-ldflags=${ldflags}`, '-o', `${bin}/`, ...MAINS.map((m) => m.pkg)], {
      cwd: src,
      env: { ...process.env, CGO_ENABLED: '0', GOTOOLCHAIN: 'local', GOFLAGS: '-mod=readonly' },
      timeoutMs: 3 * 60 * 60_000,
    })
    for (const m of MAINS) {
      const built = join(bin, m.pkg.split('/').pop()!)
      if (!existsSync(built)) throw new PipelineError(`kyverno: go build produced no ${m.pkg} in ${bin}`)
      renameSync(built, join(tmp, m.binary))
    }
    rmSync(bin, { recursive: true, force: true })
    cpSync(join(src, 'cmd', 'kyverno', 'kodata'), join(tmp, 'kodata'), { recursive: true })
    cpSync(join(src, 'charts', 'kyverno'), join(tmp, 'chart'), { recursive: true })
    writeFileSync(join(tmp, 'chart', 'Chart.yaml'), airGappedChart(readFileSync(join(tmp, 'chart', 'Chart.yaml'), 'utf8')))
    rmSync(join(tmp, 'chart', 'Chart.lock'), { force: true })
    mkdirSync(join(tmp, 'crds'))
    const crdDir = join(src, 'config', 'crds', 'policies.kyverno.io')
    for (const f of readdirSync(crdDir).filter((f) => f.endsWith('.yaml'))) cpSync(join(crdDir, f), join(tmp, 'crds', f))
    // The module cache is read-only; the copies must not be, or the next rm fails.
    await run(['chmod', '-R', 'u+w', tmp])
    const minutes = ((performance.now() - started) / 60000).toFixed(1)
    writeFileSync(join(tmp, 'BUILD-INFO'), `kyverno ${VERSIONS.kyverno} built in ${minutes} min on ${new Date().toISOString()}\n`)
    rmSync(p.dir, { recursive: true, force: true })
    renameSync(tmp, p.dir)
    say(`kyverno ${VERSIONS.kyverno} built in ${minutes} min`)
    return cachedKyverno(cache)!
  })
}
