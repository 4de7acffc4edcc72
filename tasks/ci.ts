/**
 * `npm run ci:build`: the whole pipeline in one run, in the workflow's order,
 * against the embedded local defaults. `--from <stage>` and `--until <stage>`
 * run part of it. It ends with a table of stages, results and durations; a
 * failing gate stops the run, and its reason is the last line on screen.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import chalk from 'chalk'
import type { ListrTask } from 'listr2'
import { isMain, parseOptions, reportFailure, taskList } from '../lib/core/cli.ts'
import { showOutput } from '../lib/core/output.ts'
import { PipelineError, firstLine } from '../lib/core/errors.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { loadConfig } from '../lib/core/config.ts'
import { appendSummary, markdownTable } from '../lib/core/summary.ts'
import { writeReport } from '../lib/core/reports.ts'
import type { StageDef } from '../lib/core/stage.ts'

/** The pipeline's order; the workflow's jobs follow it (the tests check that). */
export const ORDER = [
  { name: 'lint-test', file: 'precommit' },
  { name: 'build', file: 'build' },
  { name: 'measure', file: 'measure' },
  { name: 'scan', file: 'scan' },
  { name: 'deploy', file: 'deploy' },
] as const

export type StageName = (typeof ORDER)[number]['name']
export type Result = 'passed' | 'failed' | 'not run' | 'not built yet'

export interface StageRow {
  stage: StageName
  result: Result
  seconds: number
  reason?: string
}

export function parseArgs(argv: readonly string[]): { from: StageName; until: StageName } {
  const names: readonly string[] = ORDER.map((s) => s.name)
  const { values } = parseOptions('ci', argv, { from: { type: 'string' }, until: { type: 'string' } })
  const pick = (flag: 'from' | 'until', fallback: StageName): StageName => {
    const v = values[flag]
    if (v === undefined) return fallback
    const stage = ORDER.find((s) => s.name === v)
    if (!stage) throw new PipelineError(`ci: --${flag} needs one of ${names.join(', ')}, not "${v}"`)
    return stage.name
  }
  const from = pick('from', ORDER[0].name)
  const until = pick('until', ORDER[ORDER.length - 1]!.name)
  if (names.indexOf(from) > names.indexOf(until)) throw new PipelineError(`ci: --from ${from} comes after --until ${until}`)
  return { from, until }
}

async function loadStage(file: string): Promise<StageDef | undefined> {
  if (!existsSync(join(repoRoot, 'tasks', `${file}.ts`))) return undefined
  const mod = (await import(`./${file}.ts`)) as { stage: StageDef }
  return mod.stage
}

export function summaryTable(rows: readonly StageRow[]): string {
  return markdownTable(['stage', 'result', 'seconds'], rows.map((r) => [r.stage, r.result, r.result === 'passed' || r.result === 'failed' ? r.seconds.toFixed(1) : '-']))
}

export async function runPipeline(argv: readonly string[]): Promise<StageRow[]> {
  const { from, until } = parseArgs(argv)
  const config = loadConfig()
  const names = ORDER.map((s) => s.name) as StageName[]
  const picked = ORDER.slice(names.indexOf(from), names.indexOf(until) + 1)
  const rows: StageRow[] = []
  const tasks: ListrTask<object>[] = []
  const onFailure: (() => void)[] = []
  for (const { name, file } of picked) {
    const def = await loadStage(file)
    const row: StageRow = { stage: name, result: def ? 'not run' : 'not built yet', seconds: 0 }
    rows.push(row)
    if (!def) {
      tasks.push({ title: `${name}: not built yet`, task: (_ctx, task) => task.skip(`${name}: stage not built yet, nothing ran`) })
      continue
    }
    let started = 0
    const finish = (result: Result) => {
      row.result = result
      row.seconds = (performance.now() - started) / 1000
    }
    tasks.push({
      title: name,
      task: async (_ctx, task) => {
        started = performance.now()
        // Until its last task runs, a started stage counts as failed: a crash cannot pass it.
        row.result = 'failed'
        const done: ListrTask<object> = { title: `${name} passed`, task: () => finish('passed') }
        return task.newListr<object>(showOutput([...(def.tasks([]) as ListrTask<object>[]), done]), { ctx: await def.initialCtx([]), exitOnError: true })
      },
    })
    onFailure.push(() => {
      if (row.result === 'failed' && started > 0) finish('failed')
    })
  }
  let failure: unknown
  try {
    await taskList(tasks).run({})
  } catch (err) {
    failure = err
    for (const f of onFailure) f()
    const failed = rows.find((r) => r.result === 'failed')
    if (failed) failed.reason = firstLine(err)
  }
  writeReport(config.reportsDir, 'ci', { stages: rows })
  console.log(`\n${summaryTable(rows)}\n`)
  appendSummary(`### Pipeline\n\n${summaryTable(rows)}`)
  const missing = rows.filter((r) => r.result === 'not built yet').map((r) => r.stage)
  if (missing.length > 0) console.log(chalk.yellow(`Not built yet (nothing ran, nothing passed): ${missing.join(', ')}`))
  if (failure) throw failure
  return rows
}

if (isMain(import.meta.url)) {
  try {
    await runPipeline(process.argv.slice(2))
  } catch (err) {
    reportFailure(err)
    process.exitCode = 1
  }
}
