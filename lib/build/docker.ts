import { cpSync,existsSync,mkdtempSync,readFileSync,rmSync } from 'node:fs'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { ANY_EXIT,run,succeeds } from '../core/run.ts'
import { tmpdir } from 'node:os'
import { BuildStep,parseBuildOutput,cookStep,buildFailure } from './buildkit-log.ts'

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

/** Files a Docker build of the workspace needs (what .dockerignore lets through and the Dockerfiles copy). */
export const CONTEXT_ENTRIES = ['Cargo.toml', 'Cargo.lock', 'crates', '.dockerignore', 'Dockerfile.optimized', 'bench']

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

/** Debian's client: the preinstalled 28.x client has no buildx, so BuildKit builds need this one. */
export const DEBIAN_CLIENT = '/usr/bin/docker'

/**
 * The client to build with. A bare `docker` resolves to Debian's client once
 * docker.io is installed, since the first `docker` on PATH may lack buildx.
 */
export function dockerClient(configured: string, exists: (path: string) => boolean = existsSync): string {
  if (configured === 'docker' && exists(DEBIAN_CLIENT)) return DEBIAN_CLIENT
  return configured
}

/** The environment every docker call gets: BuildKit on, plain progress output. */
export function dockerEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, DOCKER_BUILDKIT: '1', BUILDKIT_PROGRESS: 'plain', ...extra }
}

export async function engineAnswers(docker: string): Promise<boolean> {
  return succeeds([docker, 'info', '--format', '{{.ServerVersion}}'], { env: dockerEnv(), timeoutMs: 20_000 })
}

/** The image's ID (its config digest): what changes when a base image is rebuilt or updated. */
export async function imageId(docker: string, name: string): Promise<string> {
  return (await run([docker, 'image', 'inspect', '--format', '{{.Id}}', name], { env: dockerEnv() })).stdout.trim()
}

export async function imageExists(docker: string, name: string): Promise<boolean> {
  return succeeds([docker, 'image', 'inspect', '--format', '{{.Id}}', name], { env: dockerEnv() })
}
