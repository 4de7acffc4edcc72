import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { ANY_EXIT, run, succeeds } from '../core/run.ts'
import { tmpdir } from 'node:os'
import { BASE_IMAGES } from '../tools/versions.ts'
import { type BuildStep, parseBuildOutput, cookStep, buildFailure } from './buildkit-log.ts'
import { say } from '../core/output.ts'
import { sleep } from '../core/wait.ts'

/**
 * BuildKit, reached through the pinned buildctl: the local buildkitd's socket
 * (unix://…), or the workflow's setup-buildx-action builder
 * (docker-container://…). Both are the same BuildKit version, driven with the
 * same frontend and exporter options.
 */
export interface Builder {
  buildctl: string
  addr: string
}

/**
 * The Docker engine's own BuildKit (`docker build` with DOCKER_BUILDKIT=1).
 * Nothing in the pipeline builds with it any more; `npm run bench:build --
 * --engines` measures it beside BuildKit.
 */
export interface EngineBuilder {
  docker: string
}

export interface BuildOptions {
  builder: Builder | EngineBuilder
  context: string
  dockerfile: string
  buildArgs?: Record<string, string>
  target?: string
  noCache?: boolean
  timeoutMs?: number
  /** Push the image under these names (BuildKit only); the result carries the registry digest. */
  push?: string[]
  /** Load the image into this Docker engine under `name`. */
  load?: { docker: string; name: string }
  /** Export the target's files here (`type=local`) instead of making an image. */
  outputDir?: string
  /** Write the image as an OCI layout tarball (BuildKit only); the result carries its manifest digest. */
  ociTar?: string
  /** BuildKit cache import and export, as `--import-cache`/`--export-cache` take them (`type=gha,…`, `type=registry,ref=…`). */
  cacheFrom?: string
  cacheTo?: string
  /** CA bundle handed to the build as the `ca-bundle` secret; default: the machine's own. */
  caBundle?: string | false
  /** Pushes are retried this many times in all (default 3) when the push itself fails. */
  pushAttempts?: number
  /** For buildctl: a throwaway DOCKER_CONFIG holding the push's login, and the Actions cache variables. */
  env?: NodeJS.ProcessEnv
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
  /** The image's manifest digest (pushed, or in the OCI tarball), from buildctl's metadata. */
  digest?: string
}

const isEngine = (b: Builder | EngineBuilder): b is EngineBuilder => 'docker' in b

/**
 * The image exporter's options, the same for a push, an OCI tarball and an
 * image loaded into the engine, so all give the same manifest: OCI media
 * types, gzip, and, when the build has a SOURCE_DATE_EPOCH, the commit's time
 * in place of the clock's: the config's `created`, every history entry, and
 * every file in the layers this build made (rewrite-timestamp; base layers
 * stay as they are).
 */
export function imageExporterOptions(buildArgs: Record<string, string> = {}): string[] {
  const epoch = buildArgs.SOURCE_DATE_EPOCH
  return ['oci-mediatypes=true', 'compression=gzip', ...(epoch ? [`source-date-epoch=${epoch}`, 'rewrite-timestamp=true'] : [])]
}

/**
 * The build arguments the frontend gets. SOURCE_DATE_EPOCH goes to the
 * exporter only: given to the Dockerfile frontend, it becomes the creation
 * time of WORKDIR's directory, which then changes the cache key of every step
 * after WORKDIR with every commit (the cooked dependencies included).
 */
export function frontendBuildArgs(buildArgs: Record<string, string> = {}): [string, string][] {
  return Object.entries(buildArgs).filter(([k]) => k !== 'SOURCE_DATE_EPOCH')
}

/**
 * The Dockerfile's final stage, which every image build runs again (three
 * COPYs, under a second). SOURCE_DATE_EPOCH only lowers later times: a layer
 * cached from a build that ran before the commit keeps that build's history
 * time and directory times, where a cold rebuild of the commit gets the
 * commit's, and the digests differ. Made afresh, every time in it is later
 * than the commit and comes out as the commit's.
 */
export const RERUN_STAGE = 'runtime'

const exportsImage = (o: BuildOptions) => !!(o.push?.length || o.ociTar || o.load) && (o.target === undefined || o.target === RERUN_STAGE)

/** buildctl's command line for one build: the dockerfile.v0 frontend with the options `docker build` would pass. */
export function buildctlArgs(b: Builder, opts: BuildOptions, files: { metadata: string; dockerTar: string }): string[] {
  const dockerfileDir = dirname(opts.dockerfile)
  const argv = [b.buildctl, '--addr', b.addr, 'build', '--progress=plain', '--frontend', 'dockerfile.v0']
  argv.push(
    '--local',
    `context=${opts.context}`,
    '--local',
    `dockerfile=${dockerfileDir}`,
    '--opt',
    `filename=${basename(opts.dockerfile)}`,
  )
  for (const [k, v] of frontendBuildArgs(opts.buildArgs)) argv.push('--opt', `build-arg:${k}=${v}`)
  if (opts.target) argv.push('--opt', `target=${opts.target}`)
  if (opts.noCache) argv.push('--no-cache')
  else if (exportsImage(opts)) argv.push('--opt', `no-cache=${RERUN_STAGE}`)
  if (opts.cacheFrom) argv.push('--import-cache', opts.cacheFrom)
  if (opts.cacheTo) argv.push('--export-cache', opts.cacheTo)
  const ca = opts.caBundle === undefined ? machineCaBundle() : opts.caBundle
  if (ca) argv.push('--secret', `id=ca-bundle,src=${ca}`)
  const image = imageExporterOptions(opts.buildArgs)
  if (opts.push?.length) argv.push('--output', ['type=image', `"name=${opts.push.join(',')}"`, 'push=true', ...image].join(','))
  if (opts.ociTar) argv.push('--output', ['type=oci', `dest=${opts.ociTar}`, ...image].join(','))
  if (opts.load) argv.push('--output', ['type=docker', `name=${opts.load.name}`, `dest=${files.dockerTar}`, ...image].join(','))
  if (opts.outputDir) argv.push('--output', `type=local,dest=${opts.outputDir}`)
  argv.push('--metadata-file', files.metadata)
  return argv
}

function engineArgs(e: EngineBuilder, opts: BuildOptions, iidfile: string): string[] {
  if (opts.push || opts.ociTar || opts.cacheFrom || opts.cacheTo)
    throw new PipelineError(
      "build: the Docker engine's builder only loads images or exports files here; push, OCI tarballs and cache export need BuildKit",
    )
  const argv = [e.docker, 'build', '--progress=plain', '-f', opts.dockerfile]
  if (opts.load) argv.push('-t', opts.load.name)
  for (const [k, v] of frontendBuildArgs(opts.buildArgs)) argv.push('--build-arg', `${k}=${v}`)
  if (opts.target) argv.push('--target', opts.target)
  if (opts.noCache) argv.push('--no-cache')
  const ca = opts.caBundle === undefined ? machineCaBundle() : opts.caBundle
  if (ca) argv.push('--secret', `id=ca-bundle,src=${ca}`)
  if (opts.outputDir) argv.push('--output', `type=local,dest=${opts.outputDir}`)
  else argv.push('--iidfile', iidfile)
  argv.push(opts.context)
  return argv
}

/** Whether a failed build failed while pushing (the exporter's step), not while building. */
export function pushFailed(steps: readonly BuildStep[]): boolean {
  const failed = steps.find((s) => s.error !== undefined)
  return !!failed && /^(exporting to image|pushing )/.test(failed.name)
}

/** A build with plain progress, parsed into steps; a failure names the step and the compiler error. */
export async function buildImage(opts: BuildOptions): Promise<BuildResult> {
  const work = mkdtempSync(join(tmpdir(), 'image-build-'))
  const files = { metadata: join(work, 'metadata.json'), dockerTar: join(work, 'image.tar') }
  try {
    const engine = isEngine(opts.builder)
    const argv = isEngine(opts.builder) ? engineArgs(opts.builder, opts, join(work, 'iid')) : buildctlArgs(opts.builder, opts, files)
    const attempts = opts.push?.length ? (opts.pushAttempts ?? 3) : 1
    let r: Awaited<ReturnType<typeof run>> | undefined
    let steps: BuildStep[] = []
    let text = ''
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) say(`push attempt ${attempt} of ${attempts}`)
      r = await run(argv, {
        env: engine ? dockerEnv() : { ...process.env, ...opts.env },
        timeoutMs: opts.timeoutMs ?? 60 * 60_000,
        okCodes: ANY_EXIT,
      })
      text = `${r.stderr}\n${r.stdout}`
      steps = parseBuildOutput(text)
      // Only the push is worth another try (a registry hiccup); the build itself is cached by then.
      if (r.exitCode === 0 || !pushFailed(steps)) break
      if (attempt < attempts) await sleep(3000 * attempt)
    }
    if (r!.exitCode !== 0) {
      const err = buildFailure(steps, text)
      throw pushFailed(steps) && attempts > 1
        ? new PipelineError(
            `push: ${opts.push!.join(', ')} failed after ${attempts} attempts: ${err.message.replace(/^[^:]*failed at [^:]*: /, '')}`,
            err.details,
          )
        : err
    }
    const cook = cookStep(steps)
    const result: BuildResult = { seconds: r!.seconds, steps, cookCacheHit: cook ? cook.cached : null }
    if (!engine && opts.load)
      await run([opts.load.docker, 'load', '--input', files.dockerTar], { env: dockerEnv(), timeoutMs: 10 * 60_000 })
    if (existsSync(files.metadata)) {
      const digest = (JSON.parse(readFileSync(files.metadata, 'utf8')) as Record<string, unknown>)['containerimage.digest']
      if (typeof digest === 'string' && (opts.push?.length || opts.ociTar)) result.digest = digest
    }
    return result
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
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
 * The OCI label build arguments and SOURCE_DATE_EPOCH. `created` and the
 * epoch are the commit's time, not the clock's, so rebuilding one commit gives
 * the same image config and (with rewrite-timestamp) the same file times.
 */
export async function ociBuildArgs(root: string, sha: string, env: NodeJS.ProcessEnv = process.env): Promise<Record<string, string>> {
  const git = (...a: string[]) =>
    run(['git', ...a], { cwd: root, okCodes: [1, 2, 128] }).then((r) => (r.exitCode === 0 ? r.stdout.trim() : ''))
  const remote = env.GITHUB_REPOSITORY
    ? `${env.GITHUB_SERVER_URL ?? 'https://github.com'}/${env.GITHUB_REPOSITORY}`
    : await git('remote', 'get-url', 'origin')
  // A remote URL may carry credentials (https://user:token@host/...); they never go into an image.
  const source = remote.replace(/\/\/[^/@]*@/, '//') || 'local'
  const [created, epoch] = (await git('log', '-1', '--format=%cI %ct', sha)).split(' ')
  const now = new Date()
  return {
    SOURCE: source,
    REVISION: sha,
    CREATED: created || now.toISOString(),
    SOURCE_DATE_EPOCH: epoch || String(Math.floor(now.getTime() / 1000)),
  }
}

/** The build arguments that name Dockerfile.optimized's base images, and the image each defaults to. */
export const BASE_IMAGE_ARGS = { CHEF_IMAGE: BASE_IMAGES.chef, RUNTIME_IMAGE: BASE_IMAGES.runtime } as const

/** The base-image build arguments, each pinned by digest (`pinned` maps a base's name to `name@sha256:…`). */
export function baseImageArgs(pinned: Record<string, string>, args: Record<string, string> = BASE_IMAGE_ARGS): Record<string, string> {
  return Object.fromEntries(
    Object.entries(args).map(([arg, name]) => {
      const p = pinned[name]
      if (!p) throw new PipelineError(`build: base image ${name} (${arg}) was not pinned to a digest`)
      return [arg, p]
    }),
  )
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
