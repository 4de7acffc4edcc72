import { $ } from 'zx'
import { PipelineError, debugOn } from './errors.ts'
import { say } from './output.ts'
import { sleep } from './wait.ts'

export interface RunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
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

/**
 * The variables that tie git to one repository (`git rev-parse --local-env-vars`):
 * git exports some of them into hooks (GIT_INDEX_FILE for `git commit -a` or
 * `git commit <path>`, GIT_DIR and GIT_WORK_TREE in a worktree, GIT_PREFIX for
 * aliases, …). A child that inherits them and runs git anywhere else (a
 * temporary repository, a test copy, `npm ci`'s husky) would read or write the
 * outer repository's index instead; git itself clears the same list when it
 * runs a command in a submodule.
 */
export const GIT_REPOSITORY_VARIABLES = [
  'GIT_ALTERNATE_OBJECT_DIRECTORIES',
  'GIT_CONFIG',
  'GIT_CONFIG_PARAMETERS',
  'GIT_CONFIG_COUNT',
  'GIT_OBJECT_DIRECTORY',
  'GIT_DIR',
  'GIT_WORK_TREE',
  'GIT_IMPLICIT_WORK_TREE',
  'GIT_GRAFT_FILE',
  'GIT_INDEX_FILE',
  'GIT_NO_REPLACE_OBJECTS',
  'GIT_REPLACE_REF_BASE',
  'GIT_PREFIX',
  'GIT_INTERNAL_SUPER_PREFIX',
  'GIT_SHALLOW_FILE',
  'GIT_COMMON_DIR',
] as const

/**
 * The environment for a child command: `env` without the repository-locating
 * git variables. Every command the pipeline runs names its directory (its
 * `cwd`, or the repository root found from this file), never the repository
 * the environment points at, and any of them may run git underneath (the
 * test runner, npm, cargo), so they are dropped for every child, not only
 * for `git` itself.
 */
export function childEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out = { ...env }
  for (const name of GIT_REPOSITORY_VARIABLES) delete out[name]
  return out
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

/** A log line that reports an error: klog's E and F levels (Kubernetes components), fatal, panic, error. */
export const LOG_ERROR = /\b(E\d{4}|F\d{4}|fatal|panic|error)\b/i

/**
 * The one line of a log that says most about a failure, for a one-line
 * message: the last line matching `prefer` when given and found, else the
 * last line with any words, trimmed and cut at 300 characters.
 */
export function lastWords(text: string, prefer?: RegExp): string {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '')
  const line = (prefer ? [...lines].reverse().find((l) => prefer.test(l)) : undefined) ?? lines.at(-1) ?? '(empty log)'
  return line.length > 300 ? `${line.slice(0, 299)}…` : line
}

/**
 * A tool's output for an error's details: its last `lines` (the part that names
 * the error), or all of it when DEBUG is set.
 */
export function outputDetails(text: string, lines = 25): string {
  return debugOn() ? text.replace(/\s+$/, '') : tail(text, lines)
}

/**
 * Run one command (an argv array, never a shell string), timing it and streaming
 * its output line by line to the running task (see output.ts). A non-zero exit throws a PipelineError whose message
 * names the command and exit code and whose details hold the output's tail
 * (all of it with DEBUG).
 * The child never inherits git's repository-locating variables (see childEnv).
 */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  if (argv.length === 0) throw new PipelineError('run: empty command')
  const started = performance.now()
  const secrets = opts.secrets ?? []
  const p = $({
    cwd: opts.cwd,
    env: childEnv(opts.env ?? process.env),
    quiet: true,
    nothrow: true,
    input: opts.input,
    timeout: opts.timeoutMs,
    ...(opts.signal ? { signal: opts.signal } : {}),
  })`${argv}`
  {
    let pending = ''
    const feed = (chunk: Buffer | string) => {
      pending += chunk.toString()
      const lines = pending.split(/\r?\n|\r/)
      pending = lines.pop() ?? ''
      for (const line of lines) if (line.trim() !== '') say(redact(line, secrets))
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
    const details = outputDetails([result.stderr, result.stdout].filter((s) => s.trim()).join('\n'))
    throw new PipelineError(`\`${name}\` ${why}`, details)
  }
  return result
}

/** Whether a command succeeds; for probes where failure is an answer, not an error. */
export async function succeeds(argv: readonly string[], opts: RunOptions = {}): Promise<boolean> {
  const r = await run(argv, { ...opts, okCodes: ANY_EXIT }).catch(() => undefined)
  return r?.exitCode === 0
}

/**
 * Bounded retries with linear backoff, for network edges only. `final` marks
 * an error that is an answer (a refused login), which no retry can change.
 */
export async function retry<T>(count: number, backoffMs: number, fn: (attempt: number) => Promise<T>, final: (err: unknown) => boolean = () => false): Promise<T> {
  let last: unknown
  for (let attempt = 1; attempt <= count; attempt++) {
    try {
      return await fn(attempt)
    } catch (err) {
      last = err
      if (final(err)) break
      if (attempt < count) await sleep(backoffMs * attempt)
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
