/**
 * Prepares this machine for the tests and the pipeline: installs what is
 * missing and starts the local stand-ins for the outside world. Each piece is
 * built once per machine, cached outside the clone, and reused after that.
 * `npm test` runs this first; each stage also ensures its own needs.
 */
import type { ListrTask } from 'listr2'
import { ensureDebianPackages } from '../lib/apt.ts'
import { isMain, runMain, taskList } from '../lib/cli.ts'
import { requireTool } from '../lib/tools.ts'

export function bootstrapTasks(): ListrTask<object>[] {
  return [
    {
      title: 'Toolchains: cargo, go, git',
      task: () => {
        for (const tool of ['cargo', 'go', 'git']) requireTool(tool)
      },
    },
    {
      title: 'Debian packages for lint-test',
      task: async (_ctx, task) => {
        const installed = await ensureDebianPackages([{ pkg: 'shellcheck', provides: 'shellcheck' }], (l) => (task.output = l))
        task.title = installed.length ? `Debian packages for lint-test: installed ${installed.join(', ')}` : 'Debian packages for lint-test: present'
      },
    },
    // Each stage's local stand-ins are added below, in pipeline order.
  ]
}

if (isMain(import.meta.url)) await runMain(() => taskList(bootstrapTasks()).run({}))
