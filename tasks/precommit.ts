/**
 * lint-test: the checks that stop a broken change before it is committed or
 * built. Every check runs, so one run names every failure; the stage fails
 * if any did. Used by the husky hook, `npm run precommit` and the CI job.
 */
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { ensureDebianPackages,type DebianNeed } from '../lib/tools/apt.ts'
import { isMain } from '../lib/core/cli.ts'
import { showOutput } from '../lib/core/output.ts'
import { precommitChecks,type PrecommitCheck } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { appendSummary, markdownTable } from '../lib/core/summary.ts'
import { run } from '../lib/core/run.ts'
import { defineStage,runStage } from '../lib/core/stage.ts'
import { requireTool } from '../lib/tools/which.ts'

export interface PrecommitCtx {
  results: { check: string; ok: boolean; seconds: number; error?: string; details?: string }[]
}

/** The checks, in the order a person would fix them. */
export function checks(root = repoRoot): { name: PrecommitCheck; title: string; argv: () => string[]; needs?: DebianNeed[] }[] {
  const bin = (name: string) => join(root, 'node_modules', '.bin', name)
  const shellScripts = () => {
    const dir = join(root, 'scripts')
    const inScripts = readdirSync(dir).filter((f) => f.endsWith('.sh')).map((f) => join(dir, f))
    return [...inScripts, join(root, '.husky', 'pre-commit'), join(root, '.ci', 'run')]
  }
  return [
    { name: 'rustfmt', title: 'rustfmt', argv: () => [requireTool('cargo'), 'fmt', '--all', '--', '--check'] },
    { name: 'clippy', title: 'clippy', argv: () => [requireTool('cargo'), 'clippy', '--all-targets', '--all-features', '--', '-D', 'warnings', '-W', 'clippy::pedantic'] },
    { name: 'cargo-test', title: 'cargo test', argv: () => [requireTool('cargo'), 'test', '--all-features'] },
    { name: 'tsc', title: 'tsc', argv: () => [bin('tsc'), '--noEmit', '-p', join(root, 'tsconfig.json')] },
    { name: 'unit-tests', title: 'unit tests', argv: () => [bin('tsx'), join(root, 'test', 'run.ts'), '--unit'] },
    { name: 'shellcheck', title: 'shellcheck', argv: () => [requireTool('shellcheck'), ...shellScripts()], needs: [{ pkg: 'shellcheck', provides: 'shellcheck' }] },
  ]
}

export function precommitTasks(root = repoRoot, only: readonly PrecommitCheck[] = precommitChecks()): ListrTask<PrecommitCtx>[] {
  const checkTasks: ListrTask<PrecommitCtx>[] = checks(root).map((check) => ({
    title: check.title,
    skip: () => (only.includes(check.name) ? false : 'not in PRECOMMIT_CHECKS'),
    task: async (ctx) => {
      const started = performance.now()
      try {
        if (check.needs) await ensureDebianPackages(check.needs)
        await run(check.argv(), { cwd: root })
        ctx.results.push({ check: check.title, ok: true, seconds: (performance.now() - started) / 1000 })
      } catch (err) {
        const error = err instanceof Error ? err.message : String(err)
        const details = err instanceof PipelineError ? err.details : undefined
        ctx.results.push({ check: check.title, ok: false, seconds: (performance.now() - started) / 1000, error, ...(details ? { details } : {}) })
        throw new PipelineError(`${check.title} failed: ${error}`, details)
      }
    },
  }))
  return [
    {
      title: 'lint-test',
      task: (_ctx, task) => task.newListr(showOutput(checkTasks), { exitOnError: false }),
    },
    {
      title: 'Summary',
      task: (ctx) => {
        appendSummary(`### lint-test\n\n${markdownTable(['check', 'result', 'seconds'], ctx.results.map((r) => [r.check, r.ok ? 'pass' : 'FAIL', r.seconds.toFixed(1)]))}`)
        const failed = ctx.results.filter((r) => !r.ok)
        if (failed.length > 0) {
          const first = failed[0]!
          throw new PipelineError(`lint-test failed: ${failed.map((r) => r.check).join(', ')} (first: ${first.error})`, first.details)
        }
      },
    },
  ]
}

export const stage = defineStage<PrecommitCtx>({ name: 'lint-test', tasks: () => precommitTasks(), initialCtx: () => ({ results: [] }) })

if (isMain(import.meta.url)) await runStage(stage)
