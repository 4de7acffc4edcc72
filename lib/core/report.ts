import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { PipelineError } from './errors.ts'

export type Stage = 'precommit' | 'build' | 'measure' | 'scan' | 'deploy' | 'rescan' | 'ci' | 'bench-feedback'

export function reportPath(reportsDir: string, stage: Stage): string {
  return join(reportsDir, `${stage}.json`)
}

/**
 * Writes `reports/<stage>.json` atomically (temp file, then rename), so a
 * crashed stage never leaves a half-written report for the next one to trust.
 */
export function writeReport<T extends object>(reportsDir: string, stage: Stage, data: T): string {
  const path = reportPath(reportsDir, stage)
  mkdirSync(dirname(path), { recursive: true })
  const body = { stage, writtenAt: new Date().toISOString(), ...data }
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, JSON.stringify(body, null, 2) + '\n')
  renameSync(tmp, path)
  return path
}

/** Reads another stage's report; a missing or unreadable one is a one-line error naming the stage to run. */
export function readReport<T>(reportsDir: string, stage: Stage): T {
  const path = reportPath(reportsDir, stage)
  if (!existsSync(path)) throw new PipelineError(`report: ${path} is missing; run the ${stage} stage first`)
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T
  } catch {
    throw new PipelineError(`report: ${path} is not valid JSON; run the ${stage} stage again`)
  }
}

/** A markdown table; cells are escaped so a `|` in data cannot break it. */
export function markdownTable(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cell = (v: string | number) => String(v).replace(/\|/g, '\\|').replace(/\n/g, ' ')
  const line = (cells: readonly (string | number)[]) => `| ${cells.map(cell).join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}

/** Appends markdown to the GitHub job summary when running in Actions; a no-op elsewhere. */
export function appendSummary(markdown: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const file = env.GITHUB_STEP_SUMMARY
  if (!file) return false
  appendFileSync(file, markdown.replace(/\n*$/, '\n\n'))
  return true
}

/** Hands a value to later jobs as a step output in GitHub Actions; a no-op elsewhere. */
export function setOutput(name: string, value: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const file = env.GITHUB_OUTPUT
  if (!file) return false
  if (/[\r\n]/.test(value)) throw new PipelineError(`output ${name}: value must be one line`)
  appendFileSync(file, `${name}=${value}\n`)
  return true
}

/**
 * An error annotation on the GitHub run page (a workflow command on stdout), so a
 * failure is read without opening the log; a no-op elsewhere.
 */
export function annotateError(title: string, message: string, env: NodeJS.ProcessEnv = process.env, write: (s: string) => void = (s) => process.stdout.write(s)): boolean {
  if (env.GITHUB_ACTIONS !== 'true') return false
  const escape = (v: string) => v.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A')
  write(`\n::error title=${escape(title).replace(/:/g, '%3A').replace(/,/g, '%2C')}::${escape(message)}\n`)
  return true
}
