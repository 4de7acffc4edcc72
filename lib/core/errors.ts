/**
 * An error whose message is already the one line a person should read.
 * `details` carries the tool's own output (shown under the line, never instead of it).
 */
export class PipelineError extends Error {
  readonly details: string | undefined
  constructor(message: string, details?: string) {
    super(message)
    this.name = 'PipelineError'
    this.details = details
  }
}

/** The first line of any thrown value, for one-line reporting. */
export function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err)
  return (
    text
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim() ?? 'unknown error'
  )
}

/**
 * Whether DEBUG is set (to anything but blank): failures then print their
 * stack trace, and a failing tool's whole output instead of its last lines.
 */
export function debugOn(env: NodeJS.ProcessEnv = process.env): boolean {
  return (env.DEBUG ?? '').trim() !== ''
}
