import type { ListrTask } from 'listr2'
import { runMain, taskList } from './cli.ts'
import { PipelineError } from './errors.ts'

/**
 * What every `tasks/<stage>.ts` exports: its task list and a fresh, complete
 * context. `tasks/ci.ts` chains these (with no command-line arguments); a
 * stage file run directly runs only its own, with the arguments it was given.
 */
export interface StageDef<Ctx extends object = object> {
  /** The name used by `--from`/`--until`, the workflow's job and reports. */
  name: string
  /** The task list; a bench whose list depends on its options reads them from `argv` (a stage reads them in `initialCtx`). */
  tasks: (argv: readonly string[]) => ListrTask<Ctx>[]
  /**
   * The context as the stage starts, complete: its configuration, its command
   * line (parsed with `parseOptions`) and its inputs; later tasks add what they produce.
   */
  initialCtx: (argv: readonly string[]) => Ctx | Promise<Ctx>
}

export function defineStage<Ctx extends object>(def: StageDef<Ctx>): StageDef<Ctx> {
  return def
}

/** Runs one stage on its own (`tsx tasks/<stage>.ts [options]`), exiting in one place. */
export async function runStage<Ctx extends object>(def: StageDef<Ctx>, argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  await runMain(async () => taskList(def.tasks(argv)).run(await def.initialCtx(argv)))
}

/**
 * A fact an earlier task of the stage produces. Reading it before that task
 * ran is a mistake in the task order, said in one line rather than cast away.
 */
export function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new PipelineError(`internal: ${what} is read before the task that produces it`)
  return value
}
