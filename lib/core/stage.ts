import type { ListrTask } from 'listr2'
import { runMain, taskList } from './cli.ts'

/**
 * What every `tasks/<stage>.ts` exports: its task list and a fresh context.
 * `tasks/ci.ts` chains these; a stage file run directly runs only its own.
 */
export interface StageDef<Ctx extends object = object> {
  /** The name used by `--from`/`--until`, the workflow's job and reports. */
  name: string
  tasks: () => ListrTask<Ctx>[]
  initialCtx: () => Ctx
}

export function defineStage<Ctx extends object>(def: StageDef<Ctx>): StageDef<Ctx> {
  return def
}

/** Runs one stage on its own (`tsx tasks/<stage>.ts`), exiting in one place. */
export async function runStage<Ctx extends object>(def: StageDef<Ctx>): Promise<void> {
  await runMain(() => taskList(def.tasks()).run(def.initialCtx()))
}
