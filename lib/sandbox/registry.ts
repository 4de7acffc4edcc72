import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ensureDebianPackages } from '../tools/apt.ts'
import { PipelineError } from '../core/errors.ts'
import { stateDir } from '../core/paths.ts'
import { runningPid, startDetached, stopOwned } from './service.ts'
import { lastWords } from '../core/run.ts'
import { say } from '../core/output.ts'
import { LOCAL_REGISTRY } from '../core/config.ts'

export { LOCAL_REGISTRY }

/** The embedded default registry: loopback only, so nothing outside this machine can push to it. */

export interface RegistryStatus {
  addr: string
  running: boolean
  /** The pid of a registry this project started, when it runs. */
  pid?: number
  dataDir: string
  log: string
}

function paths(env: NodeJS.ProcessEnv) {
  const dir = join(stateDir(env), 'registry')
  return { dir, config: join(dir, 'config.yml'), data: join(dir, 'data'), log: join(dir, 'registry.log'), pidfile: join(dir, 'registry.pid') }
}

/** Whether a distribution v2 registry answers at `addr` (401 counts: it is there, it wants a login). */
export async function registryAnswers(addr: string, timeoutMs = 2000): Promise<boolean> {
  try {
    const res = await fetch(`http://${addr}/v2/`, { signal: AbortSignal.timeout(timeoutMs) })
    return res.status === 200 || res.status === 401
  } catch {
    return false
  }
}

/** What makes a registry ask for credentials, as GHCR does: htpasswd users behind TLS. */
export interface RegistryAuth {
  realm: string
  htpasswd: string
  cert: string
  key: string
}

/** The registry's config: distribution v2 on loopback, its data outside the clone; with `auth`, TLS and htpasswd. */
export function registryConfig(addr: string, dataDir: string, auth?: RegistryAuth): string {
  return [
    'version: 0.1',
    'log:',
    '  level: info',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${dataDir}`,
    '  delete:',
    '    enabled: true',
    ...(auth ? ['auth:', '  htpasswd:', `    realm: ${auth.realm}`, `    path: ${auth.htpasswd}`] : []),
    'http:',
    `  addr: ${addr}`,
    ...(auth ? ['  tls:', `    certificate: ${auth.cert}`, `    key: ${auth.key}`] : []),
    '  headers:',
    '    X-Content-Type-Options: [nosniff]',
    '',
  ].join('\n')
}

export async function registryStatus(addr = LOCAL_REGISTRY, env: NodeJS.ProcessEnv = process.env): Promise<RegistryStatus> {
  const p = paths(env)
  const pid = runningPid(p.pidfile, 'docker-registry')
  return { addr, running: await registryAnswers(addr), ...(pid ? { pid } : {}), dataDir: p.data, log: p.log }
}

/**
 * A registry answering on `addr`: one that already answers is used as it is;
 * otherwise Debian's docker-registry (installed when missing) is started in
 * the background with its config, data and log under the state dir.
 */
export async function ensureRegistry(addr = LOCAL_REGISTRY, env: NodeJS.ProcessEnv = process.env): Promise<RegistryStatus> {
  if (await registryAnswers(addr)) return registryStatus(addr, env)
  await ensureDebianPackages([{ pkg: 'docker-registry', provides: '/usr/bin/docker-registry' }])
  const p = paths(env)
  mkdirSync(p.data, { recursive: true })
  writeFileSync(p.config, registryConfig(addr, p.data))
  say(`starting docker-registry on ${addr} (data: ${p.data})`)
  const started = await startDetached({ binary: '/usr/bin/docker-registry', args: ['serve', p.config], log: p.log, ready: () => registryAnswers(addr), timeoutMs: 30_000, pollMs: 300 })
  if (started.ok) {
    if (started.pid) writeFileSync(p.pidfile, `${started.pid}\n`)
    return registryStatus(addr, env)
  }
  const why = started.exited !== null ? `exited ${started.exited} (is ${addr} taken by another program?)` : 'did not answer /v2/ within 30 s and was stopped'
  throw new PipelineError(`registry: docker-registry on ${addr} ${why}: ${lastWords(started.logTail ?? '')} (log: ${p.log})`, started.logTail)
}

/** Stops the registry this project started (never one it did not start); its data stays. */
export async function stopRegistry(env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  const p = paths(env)
  return stopOwned(p.pidfile, 'docker-registry')
}
