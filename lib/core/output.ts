/**
 * Where progress lines go. A listr2 task shows the latest line its work
 * printed under its title; rather than thread a callback through every
 * function, the running task's sink is carried by the async context, so a
 * command started anywhere below a task (see `run`) and any `say` reach it.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import type { ListrTask } from 'listr2'

const sink = new AsyncLocalStorage<(line: string) => void>()

/** Runs `fn` with every progress line (commands' output, `say`) going to `write`. */
export function withOutput<T>(write: (line: string) => void, fn: () => T): T {
  return sink.run(write, fn)
}

/** Runs `fn` with its commands' output kept off the screen: output that is data (JSON, bundles), read rather than watched. */
export function quietly<T>(fn: () => T): T {
  return sink.run(() => undefined, fn)
}

/** One progress line for the task that is running; nothing outside a task. */
export function say(line: string): void {
  sink.getStore()?.(line)
}

/** The tasks, each showing its own progress lines under its title. */
export function showOutput<Ctx>(tasks: ListrTask<Ctx>[]): ListrTask<Ctx>[] {
  return tasks.map((t) => ({
    ...t,
    task: (ctx, task) =>
      withOutput(
        (line) => {
          task.output = line
        },
        () => t.task(ctx, task),
      ),
  }))
}
