import { resolve } from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { fileURLToPath } from 'node:url'
import chalk from 'chalk'
import { Listr, type ListrTask } from 'listr2'
import { readDotenv } from './config.ts'
import { PipelineError, debugOn, firstLine } from './errors.ts'
import { showOutput } from './output.ts'

/** True when the module at `url` is the script node was started with (`tsx tasks/scan.ts`). */
export function isMain(url: string): boolean {
  return process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(url)
}

/** A listr2 list with the options every stage shares. */
export function taskList<Ctx>(tasks: ListrTask<Ctx>[], opts: { concurrent?: boolean; exitOnError?: boolean } = {}): Listr<Ctx> {
  return new Listr<Ctx>(showOutput(tasks), {
    concurrent: opts.concurrent ?? false,
    exitOnError: opts.exitOnError ?? true,
    rendererOptions: { collapseSubtasks: false, collapseErrors: false, showErrorMessage: true },
    fallbackRendererOptions: { timestamp: undefined },
  })
}

/**
 * Prints a failure as the tool's own output (its tail; all of it, and the stack
 * trace, with DEBUG) and then one red line.
 */
export function reportFailure(err: unknown, env: NodeJS.ProcessEnv = process.env): void {
  if (debugOn(env) && err instanceof Error && err.stack) console.error(chalk.dim(err.stack))
  const details = err instanceof PipelineError ? err.details : undefined
  if (details) console.error(chalk.dim(details.split('\n').map((l) => `  │ ${l}`).join('\n')))
  console.error(chalk.red(`✖ ${firstLine(err)}`))
}

/**
 * The one place a stage exits: runs `main`, and on failure prints one line and
 * sets a non-zero exit code. Nothing deeper calls process.exit().
 */
export async function runMain(main: () => Promise<unknown>): Promise<void> {
  try {
    // DEBUG may come from .env like any variable; lib reads it from the environment.
    const fromFile = readDotenv().DEBUG
    if (!debugOn() && fromFile?.trim()) process.env.DEBUG = fromFile
    await main()
  } catch (err) {
    reportFailure(err)
    process.exitCode = 1
  }
}

type Flags = NonNullable<ParseArgsConfig['options']>

/** `--from <value>, --allow-older`: a command's options as its one-line errors name them. */
function usage(options: Flags, positionals: string | undefined): string {
  const flags = Object.entries(options).map(([name, o]) => (o.type === 'string' ? `--${name} <value>` : `--${name}`))
  return [...(positionals ? [positionals] : []), ...flags].join(' ') || 'no arguments'
}

/**
 * The one way a task reads its command line: `node:util` parseArgs, strict,
 * so an unknown option or a missing value is one line naming the command and
 * what it takes. `positionals` names the positional arguments it accepts.
 */
export function parseOptions<const O extends Flags>(command: string, argv: readonly string[], options: O, positionals?: string) {
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: positionals !== undefined })
  } catch (err) {
    throw new PipelineError(`${command}: ${firstLine(err).replace(/\. To specify a positional argument.*$/, '')}; usage: ${command} ${usage(options, positionals)}`)
  }
}
