import { appendFileSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PipelineError, debugOn } from '../core/errors.ts'
import { ANY_EXIT, outputDetails, retry, run } from '../core/run.ts'
import { dockerEnv } from '../local/docker.ts'

export type OnLine = (line: string) => void

/** One step of a BuildKit build, as `--progress=plain` reports it. */
export interface BuildStep {
  id: number
  /** e.g. `[cook 2/2] RUN cargo chef cook --release --recipe-path recipe.json` */
  name: string
  cached: boolean
  seconds?: number
  error?: string
  /** The step's own output, without BuildKit's `#N 12.3` prefix. */
  output: string[]
  /** Seconds into the step at which each output line was printed (BuildKit's prefix). */
  outputAt: number[]
}

/**
 * Reads BuildKit's plain progress output into steps. This is the only source
 * of truth for "was the cook step a cache hit": BuildKit prints `#N CACHED`.
 */
export function parseBuildOutput(text: string): BuildStep[] {
  const steps = new Map<number, BuildStep>()
  for (const raw of text.split(/\r?\n/)) {
    const m = /^#(\d+) (.*)$/.exec(raw)
    if (!m) continue
    const id = Number(m[1])
    const rest = m[2]!
    let step = steps.get(id)
    const first = !step
    if (!step) {
      step = { id, name: '', cached: false, output: [], outputAt: [] }
      steps.set(id, step)
    }
    // Dockerfile steps are named `[stage n/m] …`; BuildKit's own (`exporting to image`) are not bracketed.
    if (step.name === '' && (rest.startsWith('[') || (first && /^[a-z]/.test(rest)))) step.name = rest.trim()
    else if (rest === 'CACHED') step.cached = true
    else if (/^DONE \d+(\.\d+)?s$/.test(rest)) step.seconds = Number(rest.slice(5, -1))
    else if (rest.startsWith('ERROR')) step.error = rest.replace(/^ERROR:?\s*/, '')
    else {
      const out = /^(\d+\.\d+) (.*)$/.exec(rest)
      if (out) {
        step.output.push(out[2]!)
        step.outputAt.push(Number(out[1]))
      }
    }
  }
  return [...steps.values()]
}

/** The `cargo chef cook` step; undefined when the build had none (another Dockerfile). */
export function cookStep(steps: readonly BuildStep[]): BuildStep | undefined {
  return steps.find((s) => /\bcargo chef cook\b/.test(s.name))
}

/**
 * Where a build's seconds went, from BuildKit's step times and the seconds
 * at which output lines were printed: compile and link (cargo, to its
 * `Finished`), strip and the .dep-v0 copy (from there to the `packing:`
 * line), UPX (from that line to the step's end, or a step of its own in a
 * Dockerfile that packs separately), exporting the image, and everything
 * else (context, planner, COPY, cached steps).
 */
export function buildBreakdown(steps: readonly BuildStep[], totalSeconds: number): Record<'compile+link' | 'strip+sections' | 'upx' | 'export' | 'other', number> {
  const compile = steps.find((s) => !s.cached && /cargo (auditable )?build/.test(s.name))
  const at = (re: RegExp) => {
    const i = compile?.output.findIndex((l) => re.test(l)) ?? -1
    return i >= 0 ? compile!.outputAt[i]! : undefined
  }
  const stepSeconds = compile?.seconds ?? 0
  const cargo = at(/^\s*Finished /) ?? stepSeconds
  const packing = at(/^packing: upx\b/)
  const strip = Math.max(0, (packing ?? stepSeconds) - cargo)
  const upx = packing !== undefined ? Math.max(0, stepSeconds - packing) : (steps.find((s) => !s.cached && /\bupx\b/.test(s.name) && !/apt-get/.test(s.name) && s !== compile)?.seconds ?? 0)
  const exp = steps.filter((s) => /^exporting to image/.test(s.name)).reduce((a, s) => a + (s.seconds ?? 0), 0)
  const r = (n: number) => Math.round(n * 10) / 10
  return { 'compile+link': r(cargo), 'strip+sections': r(strip), upx: r(upx), export: r(exp), other: r(Math.max(0, totalSeconds - cargo - strip - upx - exp)) }
}

/** Crates a step compiled (`Compiling name vX`): the evidence that a warm build rebuilt only our crate. */
export function compiledCrates(step: BuildStep | undefined): string[] {
  return (step?.output ?? []).map((l) => /^\s*Compiling (\S+) v/.exec(l)?.[1]).filter((n): n is string => n !== undefined)
}

/**
 * A step's name as a person reads it: no `--mount=` flags, spaces collapsed,
 * only the first command of an `a && b && c` chain, at most `max` characters.
 */
export function stepLabel(name: string, max = 90): string {
  const flat = name.replace(/--mount=\S+\s*/g, '').replace(/\s+/g, ' ').trim()
  const chain = flat.indexOf(' && ')
  const s = chain === -1 ? flat : `${flat.slice(0, chain)} && …`
  return s.length > max ? `${s.slice(0, max - 1)}…` : s
}

/** docker's pointer to its help, printed after a bad command line: never the reason. */
const USAGE_HINT = /^(See '.*--help'\.?|Usage:\s.*|Run '.*--help'.*)$/
/** How the docker client words a refusal of its own, before the daemon is asked. */
const CLIENT_ERROR = /unknown (shorthand )?flag|invalid argument|requires (exactly|at least|at most)|unknown command|is not a docker command|no such|not found|cannot|unable to|denied|refused/i

/**
 * The one-line reason a build failed: the failing Dockerfile step and the
 * compiler's first error, with the error block (not the whole log, unless
 * DEBUG is set) as details.
 */
export function buildFailure(steps: readonly BuildStep[], rawOutput: string): PipelineError {
  const failed = steps.find((s) => s.error !== undefined)
  if (!failed) {
    // Before any step, the client's own complaint (`unknown flag: --cache-to`) is the
    // cause; its usage hint (`See 'docker build --help'.`) and usage text are not.
    const lines = rawOutput.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !USAGE_HINT.test(l))
    const why = [...lines].reverse().find((l) => /^(error|failed to solve|ERROR)/i.test(l)) ?? [...lines].reverse().find((l) => CLIENT_ERROR.test(l)) ?? lines.at(-1) ?? 'no output'
    return new PipelineError(`docker build failed: ${why}`, outputDetails(rawOutput, 20))
  }
  const out = failed.output
  const at = out.findIndex((l) => /^error(\[E\d+\])?: /.test(l) && !/^error: could not compile/.test(l))
  // No compiler error: the failing tool's own last words say more than BuildKit's `executor failed`.
  const first = at >= 0 ? out[at]! : [...out].reverse().find((l) => /error/i.test(l)) ?? out.at(-1) ?? failed.error ?? 'failed'
  let details: string
  if (at >= 0) {
    const block = out.slice(at)
    const end = block.findIndex((l, i) => i > 0 && /^(error: could not compile|warning: build failed)/.test(l))
    details = block.slice(0, end > 0 ? Math.min(end + 1, 40) : 40).join('\n')
  } else {
    details = outputDetails(out.join('\n'), 20)
  }
  // DEBUG: the whole build log, every step, not only the failing one's.
  if (debugOn()) details = rawOutput.replace(/\s+$/, '')
  return new PipelineError(`docker build failed at ${stepLabel(failed.name)}: ${first.trim()}`, details)
}

export interface BuildOptions {
  docker: string
  context: string
  dockerfile: string
  tags?: string[]
  buildArgs?: Record<string, string>
  target?: string
  noCache?: boolean
  /** Export the target's files here (`--output type=local`) instead of making an image. */
  outputDir?: string
  onLine?: OnLine
  timeoutMs?: number
  /** BuildKit cache import/export (e.g. `type=gha,…`); with either, the image is loaded into the engine. */
  cacheFrom?: string
  cacheTo?: string
  /** CA bundle handed to the build as the `ca-bundle` secret; default: the machine's own. */
  caBundle?: string | false
}

/**
 * The machine's CA bundle: it holds any site CA (a TLS-inspecting proxy's)
 * that crates.io downloads inside the build must trust.
 */
export function machineCaBundle(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return [env.SSL_CERT_FILE, '/etc/ssl/certs/ca-certificates.crt'].find((p): p is string => !!p && existsSync(p))
}

export interface BuildResult {
  seconds: number
  steps: BuildStep[]
  /** From BuildKit's own output; null when the Dockerfile has no cook step. */
  cookCacheHit: boolean | null
  /** The image id (absent with outputDir). */
  imageId?: string
}

/** A BuildKit build with plain progress, parsed into steps; a failure names the step and the compiler error. */
export async function buildImage(opts: BuildOptions): Promise<BuildResult> {
  const work = mkdtempSync(join(tmpdir(), 'docker-build-'))
  const iidfile = join(work, 'iid')
  try {
    const argv = [opts.docker, 'build', '--progress=plain', '-f', opts.dockerfile]
    for (const t of opts.tags ?? []) argv.push('-t', t)
    for (const [k, v] of Object.entries(opts.buildArgs ?? {})) argv.push('--build-arg', `${k}=${v}`)
    if (opts.target) argv.push('--target', opts.target)
    if (opts.noCache) argv.push('--no-cache')
    if (opts.cacheFrom) argv.push('--cache-from', opts.cacheFrom)
    if (opts.cacheTo) argv.push('--cache-to', opts.cacheTo)
    // A builder that exports cache (docker-container) keeps its image to itself unless told to load it.
    if ((opts.cacheFrom || opts.cacheTo) && !opts.outputDir) argv.push('--load')
    const ca = opts.caBundle === undefined ? machineCaBundle() : opts.caBundle
    if (ca) argv.push('--secret', `id=ca-bundle,src=${ca}`)
    if (opts.outputDir) argv.push('--output', `type=local,dest=${opts.outputDir}`)
    else argv.push('--iidfile', iidfile)
    argv.push(opts.context)
    const r = await run(argv, {
      env: dockerEnv(),
      ...(opts.onLine ? { onLine: opts.onLine } : {}),
      timeoutMs: opts.timeoutMs ?? 60 * 60_000,
      okCodes: ANY_EXIT,
    })
    const text = `${r.stderr}\n${r.stdout}`
    const steps = parseBuildOutput(text)
    if (r.exitCode !== 0) throw buildFailure(steps, text)
    const cook = cookStep(steps)
    const result: BuildResult = { seconds: r.seconds, steps, cookCacheHit: cook ? cook.cached : null }
    if (existsSync(iidfile)) result.imageId = readFileSync(iidfile, 'utf8').trim()
    return result
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

/** The flags a client's `docker build` takes, from its own help. */
export async function buildFlags(docker: string): Promise<Set<string>> {
  const r = await run([docker, 'build', '--help'], { env: dockerEnv(), okCodes: ANY_EXIT, timeoutMs: 30_000 })
  return new Set([...`${r.stdout}\n${r.stderr}`.matchAll(/(?:^|[\s,])(--[a-z][a-z-]*)/gm)].map((m) => m[1]!))
}

/**
 * Refuses, in one line and before anything is built, BuildKit cache settings
 * the client cannot pass on: they need `docker build` to be buildx (which has
 * --cache-to and --load); Debian's 20.10 client is the classic builder, which
 * would fail at once with a usage message.
 */
export async function checkBuildCacheSupport(docker: string, cache: { from?: string | undefined; to?: string | undefined }): Promise<void> {
  const vars = [cache.from ? 'BUILD_CACHE_FROM' : '', cache.to ? 'BUILD_CACHE_TO' : ''].filter(Boolean)
  if (vars.length === 0) return
  const flags = await buildFlags(docker)
  const missing = [...(cache.to ? ['--cache-to'] : []), '--load'].filter((f) => !flags.has(f))
  if (missing.length === 0) return
  const version = (await run([docker, 'version', '--format', '{{.Client.Version}}'], { env: dockerEnv(), okCodes: ANY_EXIT, timeoutMs: 30_000 })).stdout.trim().split('\n')[0]
  const named = vars.join(' and ')
  throw new PipelineError(`build: ${named} need${vars.length === 1 ? 's' : ''} a docker client whose build is buildx, but ${docker}${version ? ` (${version})` : ''} has no ${missing.join(' or ')}: set DOCKER to a client with buildx, or unset ${named} for a local build`)
}

/** The last line of a failed docker command that says why (the daemon's own words). */
function why(err: unknown): string {
  const details = err instanceof PipelineError ? err.details : undefined
  const lines = (details ?? (err instanceof Error ? err.message : String(err))).split('\n').map((l) => l.trim()).filter(Boolean)
  // docker prints progress on stdout and the reason on stderr; the details hold both.
  const reason = [...lines].reverse().find((l) => /error|refused|denied|unauthorized|failed|timeout|no such host|unreachable|EOF/i.test(l))
  return reason ?? lines.at(-1) ?? 'unknown error'
}

/** What a registry answers when it refuses a user name and token (distribution: 401 Unauthorized, GHCR: `denied: denied`, Docker Hub: `unauthorized: incorrect username or password`); a local `permission denied` is not one. */
const REFUSED = /unauthorized|authentication required|incorrect username or password|\bdenied: |\b401\b/i

/** Whether a failed login's reason is the registry refusing the credentials (not worth a retry). */
export function loginRefused(reason: string): boolean {
  return REFUSED.test(reason)
}

/**
 * A registry login that lasts only as long as the stage needs it: the
 * credentials go to a throwaway DOCKER_CONFIG (a fresh 0700 directory), never
 * to ~/.docker/config.json, and `end()` (or the process's exit) removes it.
 * Pass `env` to every docker call that must be logged in (push, pull).
 */
export interface RegistryLogin {
  registry: string
  env: NodeJS.ProcessEnv
  end: () => void
}

export async function registryLogin(docker: string, registry: string, user: string, token: string, onLine?: OnLine): Promise<RegistryLogin> {
  const dir = mkdtempSync(join(tmpdir(), 'docker-config-'))
  const end = () => rmSync(dir, { recursive: true, force: true })
  process.once('exit', end)
  const env = { DOCKER_CONFIG: dir }
  const login = () => run([docker, 'login', registry, '--username', user, '--password-stdin'], { env: dockerEnv(env), input: token, secrets: [token], timeoutMs: 60_000, ...(onLine ? { onLine } : {}) })
  // A refusal is an answer, not a network hiccup: asking again cannot change it.
  const refused = (err: unknown) => loginRefused(why(err))
  try {
    await retry(3, 2000, login, refused)
  } catch (err) {
    end()
    if (refused(err)) throw new PipelineError(`registry: ${registry} refused the credentials of ${user} (REGISTRY_USER/REGISTRY_TOKEN): check the token and that it may push there`)
    throw new PipelineError(`registry: login to ${registry} as ${user} failed: ${why(err)}`)
  }
  return { registry, env, end }
}

/** The digest `docker push` prints last: it exists only once the manifest (the tag) is written. */
export function parsePushDigest(output: string): { digest: string; size: number } | undefined {
  const m = /digest: (sha256:[a-f0-9]{64}) size: (\d+)/.exec(output)
  return m ? { digest: m[1]!, size: Number(m[2]) } : undefined
}

/**
 * Pushes with bounded retries. docker uploads every layer before it writes the
 * manifest, so a tag never names a half-pushed image: a failed attempt leaves
 * at most unreferenced blobs, which the next attempt reuses.
 */
export async function pushImage(docker: string, ref: string, opts: { attempts?: number; backoffMs?: number; onLine?: OnLine; secrets?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<{ digest: string; size: number; attempts: number }> {
  const attempts = opts.attempts ?? 3
  let used = 0
  try {
    return await retry(attempts, opts.backoffMs ?? 3000, async (attempt) => {
      used = attempt
      if (attempt > 1) opts.onLine?.(`push attempt ${attempt} of ${attempts}`)
      const r = await run([docker, 'push', ref], { env: dockerEnv(opts.env), timeoutMs: 15 * 60_000, secrets: opts.secrets ?? [], ...(opts.onLine ? { onLine: opts.onLine } : {}) })
      const d = parsePushDigest(r.stdout + r.stderr)
      if (!d) throw new PipelineError(`push: docker push ${ref} printed no digest`)
      return { ...d, attempts: attempt }
    })
  } catch (err) {
    throw new PipelineError(`push: ${ref} failed after ${used} attempt${used === 1 ? '' : 's'}: ${why(err)}`, err instanceof PipelineError ? err.details : undefined)
  }
}

export async function pullImage(docker: string, ref: string, onLine?: OnLine, env?: NodeJS.ProcessEnv): Promise<void> {
  await retry(3, 3000, () => run([docker, 'pull', ref], { env: dockerEnv(env), timeoutMs: 10 * 60_000, ...(onLine ? { onLine } : {}) })).catch((err) => {
    throw new PipelineError(`pull: ${ref} failed: ${why(err)}`, err instanceof PipelineError ? err.details : undefined)
  })
}

export async function removeImage(docker: string, ref: string): Promise<void> {
  await run([docker, 'image', 'rm', ref], { env: dockerEnv(), okCodes: [1] })
}

export async function tagImage(docker: string, source: string, target: string): Promise<void> {
  await run([docker, 'tag', source, target], { env: dockerEnv() })
}

/** Uncompressed size of a local image, as `docker image inspect` reports it. */
export async function imageBytes(docker: string, ref: string): Promise<number> {
  const r = await run([docker, 'image', 'inspect', '--format', '{{.Size}}', ref], { env: dockerEnv() })
  return Number(r.stdout.trim())
}

/**
 * Size as pushed: the registry's manifest (config and compressed layers),
 * which is what a node downloads. Plain HTTP is allowed for loopback registries only.
 */
export async function pushedBytes(docker: string, pinned: string, env?: NodeJS.ProcessEnv): Promise<number> {
  const insecure = /^(127\.0\.0\.1|localhost)(:\d+)?\//.test(pinned) ? ['--insecure'] : []
  const r = await retry(3, 2000, () => run([docker, 'manifest', 'inspect', ...insecure, pinned], { env: dockerEnv(env), timeoutMs: 60_000 }))
  const manifest = JSON.parse(r.stdout) as { config?: { size: number }; layers?: { size: number }[] }
  if (!manifest.layers) throw new PipelineError(`manifest: ${pinned} is a list, not one image manifest`)
  return (manifest.config?.size ?? 0) + manifest.layers.reduce((sum, l) => sum + l.size, 0)
}

export interface RunningContainer {
  id: string
  /** The host port the container's 8080 is published on (loopback only). */
  hostPort: number
}

/** Starts a container detached, publishing `containerPort` on a free loopback port. */
export async function startContainer(docker: string, image: string, opts: { name?: string; containerPort?: number; env?: Record<string, string> } = {}): Promise<RunningContainer> {
  const port = opts.containerPort ?? 8080
  const argv = [docker, 'run', '-d', '-p', `127.0.0.1::${port}`]
  if (opts.name) argv.push('--name', opts.name)
  for (const [k, v] of Object.entries(opts.env ?? {})) argv.push('-e', `${k}=${v}`)
  argv.push(image)
  const id = (await run(argv, { env: dockerEnv() })).stdout.trim()
  const mapped = (await run([docker, 'port', id, `${port}/tcp`], { env: dockerEnv() })).stdout.trim().split('\n')[0] ?? ''
  const hostPort = Number(mapped.split(':').pop())
  if (!Number.isInteger(hostPort) || hostPort <= 0) throw new PipelineError(`docker: container ${id.slice(0, 12)} has no published port for ${port}`)
  return { id, hostPort }
}

async function containerLogs(docker: string, id: string): Promise<string> {
  const r = await run([docker, 'logs', '--tail', '30', id], { env: dockerEnv(), okCodes: [1] }).catch(() => undefined)
  return r ? `${r.stdout}${r.stderr}` : ''
}

/**
 * Waits until the container's own HEALTHCHECK reports healthy (Docker runs it
 * inside the container); an exited or unhealthy container is an error with its log.
 */
export async function waitHealthy(docker: string, id: string, timeoutMs = 120_000): Promise<number> {
  const started = performance.now()
  const deadline = Date.now() + timeoutMs
  let last = 'unknown'
  while (Date.now() < deadline) {
    const r = await run([docker, 'inspect', '--format', '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}', id], { env: dockerEnv() })
    const [state, health] = r.stdout.trim().split(' ')
    last = `${state}/${health}`
    if (health === 'healthy') return (performance.now() - started) / 1000
    if (health === 'none') throw new PipelineError(`docker: container ${id.slice(0, 12)} has no HEALTHCHECK`)
    if (state !== 'running' || health === 'unhealthy') {
      throw new PipelineError(`docker: container ${id.slice(0, 12)} became ${last} instead of healthy`, await containerLogs(docker, id))
    }
    await new Promise((res) => setTimeout(res, 500))
  }
  throw new PipelineError(`docker: container ${id.slice(0, 12)} was not healthy within ${timeoutMs / 1000} s (last: ${last})`, await containerLogs(docker, id))
}

export async function removeContainer(docker: string, id: string): Promise<void> {
  await run([docker, 'rm', '-f', id], { env: dockerEnv(), okCodes: [1] })
}

/** Files a Docker build of the workspace needs (what .dockerignore lets through and the Dockerfiles copy). */
const CONTEXT_ENTRIES = ['Cargo.toml', 'Cargo.lock', 'crates', '.dockerignore', 'Dockerfile.optimized', 'bench']

/**
 * A throwaway copy of the build context, for builds that must change the code
 * (measurements, failure tests) without touching the working tree.
 */
export function copyBuildContext(root: string, prefix = 'doc-server-ctx-'): string {
  const dest = mkdtempSync(join(tmpdir(), prefix))
  for (const entry of CONTEXT_ENTRIES) {
    const src = join(root, entry)
    if (!existsSync(src)) continue
    cpSync(src, join(dest, entry), { recursive: true, filter: (p) => !/[/\\]target([/\\]|$)/.test(p.slice(root.length)) })
  }
  return dest
}

/**
 * The OCI label build arguments. `created` is the commit's date, not the
 * clock's, so rebuilding one commit gives the same image config.
 */
export async function ociBuildArgs(root: string, sha: string, env: NodeJS.ProcessEnv = process.env): Promise<Record<string, string>> {
  const git = (...a: string[]) => run(['git', ...a], { cwd: root, okCodes: [1, 2, 128] }).then((r) => (r.exitCode === 0 ? r.stdout.trim() : ''))
  const remote = env.GITHUB_REPOSITORY ? `${env.GITHUB_SERVER_URL ?? 'https://github.com'}/${env.GITHUB_REPOSITORY}` : await git('remote', 'get-url', 'origin')
  // A remote URL may carry credentials (https://user:token@host/...); they never go into an image.
  const source = remote.replace(/\/\/[^/@]*@/, '//') || 'local'
  const created = (await git('log', '-1', '--format=%cI', sha)) || new Date().toISOString()
  return { SOURCE: source, REVISION: sha, CREATED: created }
}

export interface ColdWarm {
  coldSeconds: number
  warmSeconds: number
  /** Cook step of the warm build, from BuildKit's output; null for Dockerfiles without one. */
  cookCacheHit: boolean | null
  /** Crates the warm build compiled (from cargo's own `Compiling` lines). */
  warmCompiled: string[]
  imageBytes: number
  /** Size of the stripped binary before UPX, when the Dockerfile has an `artifacts` stage. */
  binaryBytes: number | null
  /** Size of the binary as shipped (after UPX, when it packs), from the same stage. */
  packedBytes: number | null
  /** Where the warm build's seconds went (see buildBreakdown). */
  warmBreakdown: ReturnType<typeof buildBreakdown>
}

/**
 * The file a "code-only change" touches in the measure stage and the benches:
 * the router, in the library where nearly all of the server's code lives
 * (the binary's main.rs only calls into it).
 */
export const CODE_CHANGE_FILE = join('crates', 'doc-server', 'src', 'server.rs')

/**
 * A cold build, then a warm one after a code-only change (a comment appended
 * to `changeFile`), in a throwaway copy of the workspace so the working tree
 * is never touched. `noCache: false` makes the first build merely "first"
 * (it reuses what is cached), for comparing variants that share layers.
 */
export async function coldAndWarmBuilds(opts: {
  docker: string
  root: string
  dockerfile: string
  changeFile: string
  buildArgs?: Record<string, string>
  noCache?: boolean
  prepare?: (copy: string) => void
  onLine?: OnLine
}): Promise<ColdWarm> {
  const copy = copyBuildContext(opts.root, 'doc-server-coldwarm-')
  const tag = `doc-server-coldwarm:${process.pid}`
  const base = { docker: opts.docker, context: copy, dockerfile: join(copy, opts.dockerfile), buildArgs: opts.buildArgs ?? {}, ...(opts.onLine ? { onLine: opts.onLine } : {}) }
  try {
    opts.prepare?.(copy)
    const cold = await buildImage({ ...base, noCache: opts.noCache ?? true, tags: [`${tag}-cold`] })
    appendFileSync(join(copy, opts.changeFile), `\n// code-only change for a warm build: ${Date.now()}\n`)
    const warm = await buildImage({ ...base, tags: [`${tag}-warm`] })
    const compileStep = [...warm.steps].reverse().find((s) => /cargo (auditable )?build/.test(s.name))
    let binaryBytes: number | null = null
    let packedBytes: number | null = null
    if (readFileSync(base.dockerfile, 'utf8').includes(' AS artifacts')) {
      const out = join(copy, '.artifacts')
      await buildImage({ ...base, target: 'artifacts', outputDir: out })
      binaryBytes = statSync(join(out, 'doc-server.unpacked')).size
      packedBytes = statSync(join(out, 'doc-server')).size
    }
    return {
      coldSeconds: cold.seconds,
      warmSeconds: warm.seconds,
      cookCacheHit: warm.cookCacheHit,
      warmCompiled: compiledCrates(compileStep),
      warmBreakdown: buildBreakdown(warm.steps, warm.seconds),
      imageBytes: await imageBytes(opts.docker, `${tag}-warm`),
      binaryBytes,
      packedBytes,
    }
  } finally {
    for (const t of [`${tag}-cold`, `${tag}-warm`]) await removeImage(opts.docker, t)
    rmSync(copy, { recursive: true, force: true })
  }
}
