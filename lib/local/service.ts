import { closeSync, existsSync, openSync, readFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { childEnv, tail } from '../core/run.ts'

export interface DetachedSpec {
  binary: string
  args: string[]
  /** Appended to; the service's own words when it fails. */
  log: string
  /** Whether the service answers yet. */
  ready: () => Promise<boolean>
  timeoutMs: number
  pollMs: number
  env?: NodeJS.ProcessEnv
}

export type DetachedStart = { ok: true; pid: number | undefined } | { ok: false; exited: number | null; logTail: string | undefined }

/**
 * Starts a long-lived local service (dockerd, the registry) detached, since it
 * is shared by later stages and runs and must outlive this one, and waits until
 * it answers. A service that exits or stays silent comes back as a failure with
 * its log's tail, for the caller to name in one line.
 */
export async function startDetached(spec: DetachedSpec): Promise<DetachedStart> {
  const fd = openSync(spec.log, 'a')
  const child = spawn(spec.binary, spec.args, { detached: true, stdio: ['ignore', fd, fd], env: childEnv(spec.env ?? process.env) })
  child.unref()
  closeSync(fd)
  let exited: number | null = null
  child.on('exit', (code) => (exited = code ?? -1))
  const deadline = Date.now() + spec.timeoutMs
  while (Date.now() < deadline) {
    if (await spec.ready()) return { ok: true, pid: child.pid }
    if (exited !== null) break
    await new Promise((r) => setTimeout(r, spec.pollMs))
  }
  return { ok: false, exited, logTail: existsSync(spec.log) ? tail(readFileSync(spec.log, 'utf8'), 15) : undefined }
}
