/**
 * `npm run bench:feedback`: how long a push waits for the whole pipeline after
 * a code-only change, before and after the measure stage learned to reuse its
 * cold figure. In one run, on a throwaway worktree of HEAD with a one-line
 * change to the Doc Server each time, `npm run ci:build` runs twice:
 *   before  the measure stage's cold record is set aside, so it builds cold
 *           (`--no-cache`), as it did on every run before;
 *   after   the record is there, so the cold figure is reused.
 * The before run's measure stage built cold and warm, so its warm/cold ratio
 * is one run's. Then every option tried for the warm build is measured
 * against the committed one on the same worktree (bench/lib/warm-options.ts).
 * The record set aside is put back unless the cold run wrote a fresher one.
 * Figures go to the log and `reports/bench-feedback.json`; nothing here is a
 * gate. `--no-options` leaves the options out (two ci:build runs only).
 */
import { appendFileSync,existsSync,mkdirSync,readFileSync,renameSync,rmSync,symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { CODE_CHANGE_FILE } from '../lib/build/cold-warm.ts'
import { formatBytes,type Measurements } from '../lib/build/measure.ts'
import { WARM_OPTION_HEADERS,WARM_ROUNDS,measureWarmOptions,warmOptionRows,type WarmOptionResult } from './lib/warm-options.ts'
import { ensureDockerEngine } from '../lib/sandbox/engine.ts'
import { measureStateFiles } from '../lib/build/cold-inputs.ts'
import { isMain, parseOptions } from '../lib/core/cli.ts'
import { loadConfig,type Config } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { markdownTable } from '../lib/core/summary.ts'
import { writeReport } from '../lib/core/reports.ts'
import { ANY_EXIT,childEnv,run } from '../lib/core/run.ts'
import { defineStage,runStage } from '../lib/core/stage.ts'

interface Row {
  run: 'before' | 'after'
  seconds: number
  stages: { stage: string; result: string; seconds: number }[]
}

interface Ctx {
  config: Config
  worktree: string
  rows: Row[]
  /** The before run's measure report: its cold and warm builds ran in that one run. */
  measured: (Measurements & { warmBreakdown: Record<string, number> }) | null
  options: WarmOptionResult[]
}


async function ciBuild(ctx: Ctx, label: Row['run']): Promise<Row> {
  appendFileSync(join(ctx.worktree, CODE_CHANGE_FILE), `// bench:feedback ${label} ${Date.now()}\n`)
  const reports = join(ctx.worktree, 'reports')
  const started = performance.now()
  const r = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(ctx.worktree, 'tasks', 'ci.ts')], {
    cwd: ctx.worktree,
    // The lint-test stage compiles in the same target dir as the tests' copies, so it is as warm as a developer's.
    env: { ...childEnv(), FORCE_COLOR: '0', REPORTS_DIR: reports, CARGO_TARGET_DIR: join(ctx.config.cacheDir, 'test-copies', 'target') },
    okCodes: ANY_EXIT,
    timeoutMs: 60 * 60_000,
  })
  const seconds = (performance.now() - started) / 1000
  if (r.exitCode !== 0) throw new PipelineError(`bench:feedback: ci:build (${label}) failed: ${(r.stdout + r.stderr).trim().split('\n').at(-1) ?? ''}`, r.stdout + r.stderr)
  const stages = (JSON.parse(readFileSync(join(reports, 'ci.json'), 'utf8')) as { stages: Row['stages'] }).stages
  return { run: label, seconds, stages }
}

export function benchFeedbackTasks(argv: readonly string[]): ListrTask<Ctx>[] {
  const withOptions = !(parseOptions('bench:feedback', argv, { 'no-options': { type: 'boolean' } }).values['no-options'] ?? false)
  return [
    {
      title: 'A throwaway worktree of HEAD',
      task: async (ctx, task) => {
        ctx.config = loadConfig()
        ctx.rows = []
        ctx.worktree = join(tmpdir(), `bench-feedback-${process.pid}`)
        await run(['git', 'worktree', 'add', '--detach', ctx.worktree, 'HEAD'], { cwd: repoRoot })
        symlinkSync(join(repoRoot, 'node_modules'), join(ctx.worktree, 'node_modules'))
        task.title = `A throwaway worktree of HEAD: ${ctx.worktree}`
      },
    },
    {
      title: 'Before: ci:build with a cold build in the measure stage (its record set aside)',
      task: async (ctx, task) => {
        const { cold } = measureStateFiles(ctx.config.cacheDir)
        const aside = `${cold}.bench-feedback`
        if (existsSync(cold)) renameSync(cold, aside)
        try {
          ctx.rows.push(await ciBuild(ctx, 'before'))
        } finally {
          // The cold run wrote a fresher record of the same inputs; the one set aside goes back only if none was written.
          if (existsSync(aside)) existsSync(cold) ? rmSync(aside) : renameSync(aside, cold)
        }
        ctx.measured = JSON.parse(readFileSync(join(ctx.worktree, 'reports', 'measure.json'), 'utf8')) as Ctx['measured']
        task.title = `Before (cold build every run): ${ctx.rows.at(-1)!.seconds.toFixed(1)} s`
      },
    },
    {
      title: 'After: ci:build reusing the cold figure',
      task: async (ctx, task) => {
        ctx.rows.push(await ciBuild(ctx, 'after'))
        task.title = `After (cold figure reused): ${ctx.rows.at(-1)!.seconds.toFixed(1)} s`
      },
    },
    {
      title: `Warm build options against the committed one, ${WARM_ROUNDS} alternating rounds`,
      skip: () => !withOptions && 'left out (--no-options)',
      task: async (ctx, task) => {
        const { docker } = await ensureDockerEngine(ctx.config.docker)
        ctx.options = await measureWarmOptions({ docker, root: ctx.worktree, rounds: WARM_ROUNDS })
        task.title = `Warm build options: ${ctx.options.length} measured, ${WARM_ROUNDS} rounds each`
      },
    },
    {
      title: 'Report',
      task: async (ctx, task) => {
        await run(['git', 'worktree', 'remove', '--force', ctx.worktree], { cwd: repoRoot, okCodes: ANY_EXIT })
        const names = ctx.rows[0]!.stages.map((s) => s.stage)
        const table = markdownTable(['run', 'wall', ...names], ctx.rows.map((r) => [r.run, `${r.seconds.toFixed(1)} s`, ...r.stages.map((s) => `${s.seconds.toFixed(1)}`)]))
        mkdirSync(ctx.config.reportsDir, { recursive: true })
        const [before, after] = ctx.rows as [Row, Row]
        const m = ctx.measured
        const coldWarm = m ? `warm/cold, both built in the before run: warm ${m.build.warmSeconds.toFixed(1)} s (${Object.entries(m.warmBreakdown).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}), cold ${m.build.coldSeconds.toFixed(1)} s: ${m.build.improvementPct}% faster` : 'warm/cold: the before run wrote no measure report'
        const options = ctx.options.length > 0 ? `\n\n${markdownTable(WARM_OPTION_HEADERS, warmOptionRows(ctx.options, formatBytes))}` : ''
        writeReport(ctx.config.reportsDir, 'bench-feedback', { rows: ctx.rows, ratio: after.seconds / before.seconds, warmCold: m ? { warmSeconds: m.build.warmSeconds, coldSeconds: m.build.coldSeconds, improvementPct: m.build.improvementPct, breakdown: m.warmBreakdown } : null, warmOptions: ctx.options })
        console.log(`\n${table}\n\nafter/before: ${(after.seconds / before.seconds).toFixed(2)}\n${coldWarm}${options}\n`)
        task.title = `Report: ${join(ctx.config.reportsDir, 'bench-feedback.json')}`
      },
    },
  ]
}

export const stage = defineStage<Ctx>({ name: 'bench-feedback', tasks: benchFeedbackTasks, initialCtx: () => ({ measured: null, options: [] }) as unknown as Ctx })

if (isMain(import.meta.url)) await runStage(stage)
