import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { outputDetails, processAlive } from '../core/run.ts'
import { waitFor } from '../core/wait.ts'

export interface DetachedSpec {
  binary: string
  args: string[]
  /** Appended to; the service's own words when it fails. */
  log: string
  /** Whether the service answers yet. */
  ready: () => Promise<boolean>
  timeoutMs: number
  pollMs: number
  /** Variables beyond serviceEnv()'s, for this service alone. */
  env?: NodeJS.ProcessEnv
}

/**
 * The only variables a long-lived service inherits from the pipeline: where
 * programs are, the locale, temp dir and proxies. Never the rest: a service
 * outlives the run, and its /proc/<pid>/environ would keep whatever the run was
 * given (REGISTRY_TOKEN, GITHUB_TOKEN, …) readable for as long as it lives;
 * docker-registry would also read any REGISTRY_* variable as configuration.
 */
export const SERVICE_VARIABLES = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'XDG_RUNTIME_DIR', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy', 'SSL_CERT_FILE', 'SSL_CERT_DIR'] as const

export function serviceEnv(env: NodeJS.ProcessEnv = process.env, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {}
  for (const name of SERVICE_VARIABLES) if (env[name] !== undefined) out[name] = env[name]
  return { ...out, ...extra }
}

export type DetachedStart = { ok: true; pid: number | undefined } | { ok: false; exited: number | null; logTail: string | undefined }

/**
 * Starts a long-lived local service (dockerd, the registry) detached, since it
 * is shared by later stages and runs and must outlive this one, and waits until
 * it answers, with only the environment it needs (serviceEnv). A service that exits or stays silent comes back as a failure with
 * its log's tail, for the caller to name in one line; one that stays silent
 * is stopped first, so no half-started process (without a pidfile, which only
 * a started one gets) is left holding its port for the next run to trip on.
 */
export async function startDetached(spec: DetachedSpec): Promise<DetachedStart> {
  const fd = openSync(spec.log, 'a')
  const child = spawn(spec.binary, spec.args, { detached: true, stdio: ['ignore', fd, fd], env: serviceEnv(process.env, spec.env) })
  child.unref()
  closeSync(fd)
  let exited: number | null = null
  child.on('exit', (code) => (exited = code ?? -1))
  const ready = await waitFor(async () => ((await spec.ready()) ? true : exited !== null ? false : undefined), { timeoutMs: spec.timeoutMs, intervalMs: spec.pollMs, onTimeout: () => new Error('not ready') }).catch(() => false)
  if (ready) return { ok: true, pid: child.pid }
  const exitCode = exited as number | null
  if (exitCode === null && child.pid !== undefined) await stopPid(child.pid, 5000)
  return { ok: false, exited: exitCode, logTail: existsSync(spec.log) ? outputDetails(readFileSync(spec.log, 'utf8'), 15) : undefined }
}

/**
 * The pid in a pidfile, if that process is alive and still runs `program`
 * (a pid the kernel gave to something else after an unclean stop is not ours).
 */
export function runningPid(pidfile: string, program: string): number | undefined {
  if (!existsSync(pidfile)) return undefined
  const pid = Number(readFileSync(pidfile, 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return undefined
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? ''
    return cmd.endsWith(program) ? pid : undefined
  } catch {
    return undefined
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; returns once the process is gone. */
export async function stopPid(pid: number, graceMs: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM')
  } catch {
    return
  }
  const gone = () => (processAlive(pid) ? undefined : true)
  if (!(await waitFor(gone, { timeoutMs: graceMs, intervalMs: 200, onTimeout: () => new Error('still running') }).catch(() => false))) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // Gone meanwhile.
    }
    await waitFor(gone, { timeoutMs: 60_000, intervalMs: 100, onTimeout: () => new Error(`pid ${pid} survived SIGKILL`) })
  }
}

/** Stops the service a pidfile names, if it is ours and running; false when there was none. */
export async function stopOwned(pidfile: string, program: string, graceMs = 5000): Promise<boolean> {
  const pid = runningPid(pidfile, program)
  if (pid) await stopPid(pid, graceMs)
  rmSync(pidfile, { force: true })
  return pid !== undefined
}
