/**
 * BuildKit's daemon on this machine: the pinned buildkitd (built from the Go
 * module proxy), rootful, with the OCI worker on Debian's runc and overlayfs,
 * its state and socket under the state dir. No registry but the local one can
 * be reached here, so docker.io and gcr.io are mirrored by the local registry,
 * where the base images' stand-ins are published under their public names
 * (base-images.ts); registries the Docker engine trusts a CA for
 * (/etc/docker/certs.d/<host>/) are trusted by buildkitd the same way.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { lastWords, succeeds } from '../core/run.ts'
import { stateDir } from '../core/paths.ts'
import { say } from '../core/output.ts'
import { ensureBuildkit } from '../tools/buildkit.ts'
import { LOCAL_REGISTRY } from '../core/config.ts'
import { runningPid, startDetached, stopOwned } from './service.ts'
import type { Builder } from '../build/docker.ts'
import { manifestDigest, pinnedName } from '../build/registry.ts'
import type { Config } from '../core/config.ts'
import { BASE_IMAGES, VERSIONS } from '../tools/versions.ts'
import { ensureBaseImages, publishBaseImages } from './base-images.ts'
import { ensureRegistry } from './registry.ts'

/** The public registries the Dockerfiles' base images come from, served here by the local registry. */
export const MIRRORED_REGISTRIES = ['docker.io', 'gcr.io'] as const
/** Where the Docker engine keeps the CAs of registries it trusts, one directory per host. */
export const ENGINE_CERTS_DIR = '/etc/docker/certs.d'

export interface BuildkitdStatus {
  builder: Builder
  /** True when this call started buildkitd (or restarted it for a new config). */
  started: boolean
  pid?: number
  log: string
  root: string
}

function paths(env: NodeJS.ProcessEnv, name: string) {
  const dir = join(stateDir(env), name)
  return {
    dir,
    config: join(dir, 'buildkitd.toml'),
    root: join(dir, 'root'),
    socket: join(dir, 'buildkitd.sock'),
    log: join(dir, 'buildkitd.log'),
    pidfile: join(dir, 'buildkitd.pid'),
  }
}

/** buildkitd's config: its root and socket, the OCI worker on the host's network, the mirrors, the engine's registry CAs. */
export function buildkitdConfig(o: { root: string; socket: string; mirror: string; certsDir?: string; maxUsedGB?: number }): string {
  const hosts =
    o.certsDir && existsSync(o.certsDir)
      ? readdirSync(o.certsDir)
          .filter((h) => existsSync(join(o.certsDir!, h, 'ca.crt')))
          .sort()
      : []
  const q = (s: string) => JSON.stringify(s)
  return [
    `root = ${q(o.root)}`,
    '',
    '[grpc]',
    `  address = [${q(`unix://${o.socket}`)}]`,
    '',
    // One worker: runc on overlayfs. Builds use the host's network (they fetch crates and Debian packages).
    '[worker.oci]',
    '  enabled = true',
    '  snapshotter = "overlayfs"',
    '  networkMode = "host"',
    // Explicit bounds: the defaults keep 20 % of the disk free, which on a large shared disk
    // would collect the cook layer between two runs and make every warm build cold.
    '  gc = true',
    `  maxUsedSpace = ${q(`${o.maxUsedGB ?? 20}GB`)}`,
    '  reservedSpace = "2GB"',
    '  minFreeSpace = "5GB"',
    '',
    '[worker.containerd]',
    '  enabled = false',
    '',
    ...MIRRORED_REGISTRIES.flatMap((r) => [`[registry.${q(r)}]`, `  mirrors = [${q(o.mirror)}]`, '']),
    `[registry.${q(o.mirror)}]`,
    '  http = true',
    '',
    // http = false: BuildKit would otherwise speak plain http to any loopback registry, TLS ones included.
    ...hosts.flatMap((h) => [`[registry.${q(h)}]`, '  http = false', `  tlsconfigdir = [${q(join(o.certsDir!, h))}]`, '']),
  ].join('\n')
}

/** Whether a buildkitd answers on this address (its workers listed). */
export async function buildkitdAnswers(builder: Builder): Promise<boolean> {
  return succeeds([builder.buildctl, '--addr', builder.addr, 'debug', 'workers'], { timeoutMs: 10_000 })
}

/**
 * The machine's buildkitd, answering on its own socket. One that runs with the
 * config this call would write is used as it is; one with another config (a
 * registry CA added since) is restarted with the new one; otherwise it is
 * started. `name` gives a builder of its own (state, socket, cache), e.g. a
 * cold builder for a rebuild.
 */
export async function ensureBuildkitd(cache: string, opts: { name?: string; env?: NodeJS.ProcessEnv } = {}): Promise<BuildkitdStatus> {
  const env = opts.env ?? process.env
  const p = paths(env, opts.name ?? 'buildkit')
  const bins = await ensureBuildkit(cache)
  const builder: Builder = { buildctl: bins.buildctl, addr: `unix://${p.socket}` }
  const config = buildkitdConfig({ root: p.root, socket: p.socket, mirror: LOCAL_REGISTRY, certsDir: ENGINE_CERTS_DIR })
  const running = runningPid(p.pidfile, 'buildkitd')
  const same = existsSync(p.config) && readFileSync(p.config, 'utf8') === config
  if (running && same && (await buildkitdAnswers(builder))) return { builder, started: false, pid: running, log: p.log, root: p.root }
  if (running) {
    say(`restarting buildkitd (${same ? 'it did not answer' : 'its config changed'})`)
    await stopOwned(p.pidfile, 'buildkitd', 30_000)
  }
  if (process.getuid?.() !== 0)
    throw new PipelineError(
      'buildkitd: the local BuildKit daemon runs as root (rootful OCI worker); run as root, or set BUILDKIT_HOST to a BuildKit that answers',
    )
  mkdirSync(p.root, { recursive: true })
  writeFileSync(p.config, config)
  rmSync(p.socket, { force: true })
  say(`starting buildkitd (log: ${p.log})`)
  const started = await startDetached({
    binary: bins.buildkitd,
    args: ['--config', p.config],
    log: p.log,
    ready: () => buildkitdAnswers(builder),
    timeoutMs: 60_000,
    pollMs: 500,
  })
  if (started.ok) {
    if (started.pid) writeFileSync(p.pidfile, `${started.pid}\n`)
    return { builder, started: true, ...(started.pid ? { pid: started.pid } : {}), log: p.log, root: p.root }
  }
  const why = started.exited !== null ? `exited ${started.exited}` : 'did not answer within 60 s and was stopped'
  throw new PipelineError(`buildkitd: ${why}: ${lastWords(started.logTail ?? '')} (log: ${p.log})`, started.logTail)
}

/** Stops a buildkitd this project started; with `removeState`, its cache and config go too. */
export async function stopBuildkitd(opts: { name?: string; env?: NodeJS.ProcessEnv; removeState?: boolean } = {}): Promise<boolean> {
  const p = paths(opts.env ?? process.env, opts.name ?? 'buildkit')
  const stopped = await stopOwned(p.pidfile, 'buildkitd', 30_000)
  if (opts.removeState) rmSync(p.dir, { recursive: true, force: true })
  return stopped
}

/**
 * A builder with nothing cached, for a rebuild that must not lean on any
 * earlier build: a buildkitd of its own with an empty state directory, removed
 * (cache and all) by `stop()`.
 */
export async function coldBuilder(cache: string, label: string): Promise<{ builder: Builder; root: string; stop: () => Promise<void> }> {
  const name = `buildkit-cold-${label}-${process.pid}`
  await stopBuildkitd({ name, removeState: true })
  const s = await ensureBuildkitd(cache, { name })
  return { builder: s.builder, root: s.root, stop: async () => void (await stopBuildkitd({ name, removeState: true })) }
}

/** The BuildKit a run builds with, and the base images pinned by the digest that BuildKit will pull. */
export interface BuildkitSetup {
  builder: Builder
  /** Each base image name, pinned: `name:tag@sha256:…`. */
  bases: Record<string, string>
  /** For the task's title: where BuildKit runs and where the bases come from. */
  describe: string
}

/**
 * BUILDKIT_HOST when it is set (the workflow's builder): only buildctl is
 * needed here, and each base is pinned to the digest its public registry
 * serves now. Otherwise this machine's buildkitd, with the base images made
 * present in the engine (pulled or stand-ins) and published to the local
 * registry it mirrors docker.io and gcr.io from.
 */
export async function buildkitFor(
  config: Config,
  docker: string,
  names: readonly string[] = [BASE_IMAGES.chef, BASE_IMAGES.runtime],
): Promise<BuildkitSetup> {
  if (config.buildkitHost) {
    const { buildctl } = await ensureBuildkit(config.cacheDir, ['buildctl'])
    const bases = Object.fromEntries(await Promise.all(names.map(async (n) => [n, pinnedName(n, await manifestDigest(n))] as const)))
    return {
      builder: { buildctl, addr: config.buildkitHost },
      bases,
      describe: `BuildKit ${VERSIONS.buildkit} at ${config.buildkitHost}; bases from their registries`,
    }
  }
  const sources = await ensureBaseImages(docker, config.cacheDir, names)
  await ensureRegistry(LOCAL_REGISTRY)
  const bases = await publishBaseImages(docker, names)
  const d = await ensureBuildkitd(config.cacheDir)
  const from = sources.map((s) => `${s.name.split('/').pop()} ${s.source}`).join(', ')
  return {
    builder: d.builder,
    bases,
    describe: `local buildkitd ${VERSIONS.buildkit} (${d.started ? 'started' : 'running'}); bases via ${LOCAL_REGISTRY}: ${from}`,
  }
}
