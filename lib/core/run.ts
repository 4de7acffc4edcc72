import { $ } from 'zx'
import { PipelineError } from './errors.ts'

export interface RunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Receives each line of output as it arrives (e.g. a listr2 task's output). */
  onLine?: (line: string) => void
  /** Data for stdin. */
  input?: string
  /** Kill the command after this many milliseconds. */
  timeoutMs?: number
  /** Exit codes that are data, not failure. */
  okCodes?: readonly number[]
  /** Ends the command (SIGTERM) when aborted; it then counts as killed. */
  signal?: AbortSignal
  /** Strings to blank out of anything this command prints or throws (tokens, passwords). */
  secrets?: string[]
}

/** Every exit code, for `okCodes` when the exit code is data to read, not a failure. */
export const ANY_EXIT: readonly number[] = Array.from({ length: 256 }, (_, i) => i)

export interface RunResult {
  stdout: string
  stderr: string
  exitCode: number
  seconds: number
}

export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join('***')
  return out
}

/** The last lines of a command's output: the part that names the error. */
export function tail(text: string, lines = 25): string {
  const all = text.replace(/\s+$/, '').split('\n')
  return all.slice(-lines).join('\n')
}

/**
 * Run one command (an argv array, never a shell string), timing it and streaming
 * its output line by line. A non-zero exit throws a PipelineError whose message
 * names the command and exit code and whose details hold the output's tail.
 */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  if (argv.length === 0) throw new PipelineError('run: empty command')
  const started = performance.now()
  const secrets = opts.secrets ?? []
  const p = $({
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    quiet: true,
    nothrow: true,
    input: opts.input,
    timeout: opts.timeoutMs,
    ...(opts.signal ? { signal: opts.signal } : {}),
  })`${argv}`
  if (opts.onLine) {
    const onLine = opts.onLine
    let pending = ''
    const feed = (chunk: Buffer | string) => {
      pending += chunk.toString()
      const lines = pending.split(/\r?\n|\r/)
      pending = lines.pop() ?? ''
      for (const line of lines) if (line.trim() !== '') onLine(redact(line, secrets))
    }
    p.stdout.on('data', feed)
    p.stderr.on('data', feed)
  }
  const out = await p
  const seconds = (performance.now() - started) / 1000
  const exitCode = out.exitCode ?? -1
  const result = { stdout: redact(out.stdout, secrets), stderr: redact(out.stderr, secrets), exitCode, seconds }
  if (exitCode !== 0 && !(opts.okCodes ?? []).includes(exitCode)) {
    const name = argv.slice(0, 2).join(' ')
    const why = out.signal ? `was killed by ${out.signal}` : `exited ${exitCode}`
    const details = tail([result.stderr, result.stdout].filter((s) => s.trim()).join('\n'))
    throw new PipelineError(`\`${name}\` ${why}`, details)
  }
  return result
}

/** Whether a command succeeds; for probes where failure is an answer, not an error. */
export async function succeeds(argv: readonly string[], opts: RunOptions = {}): Promise<boolean> {
  const r = await run(argv, { ...opts, okCodes: ANY_EXIT }).catch(() => undefined)
  return r?.exitCode === 0
}

/** Bounded retries with linear backoff, for network edges only. */
export async function retry<T>(count: number, backoffMs: number, fn: (attempt: number) => Promise<T>): Promise<T> {
  let last: unknown
  for (let attempt = 1; attempt <= count; attempt++) {
    try {
      return await fn(attempt)
    } catch (err) {
      last = err
      if (attempt < count) await new Promise((r) => setTimeout(r, backoffMs * attempt))
    }
  }
  throw last
}

/** Whether a process with this pid exists (signal 0 probes without touching it). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
