import { appendFileSync } from 'node:fs'
import { PipelineError } from './errors.ts'

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
