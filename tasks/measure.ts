/**
 * measure: how big the image is and how fast it builds, measured, never
 * assumed. The warm build after a code-only change runs every time, in a
 * throwaway copy of the workspace; the cold build (no cache) only when its
 * inputs (cargo-chef's recipe, Dockerfile, toolchain, base images) changed
 * since the recorded one, or with `--cold`; otherwise the recorded figure is
 * reused and says so. The cook step's cache hit is read from BuildKit's own
 * output, and a miss is explained against the previous run's recipe. Each
 * run is appended to a history outside the clone; the stage fails when the
 * image grew past the baseline, or when the median of the last runs did.
 */
import { mkdirSync,mkdtempSync,rmSync,statSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname,join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain } from '../lib/core/cli.ts'
import { loadConfig,type Config } from '../lib/core/config.ts'
import { buildImage } from '../lib/build/docker.ts'
import { CODE_CHANGE_FILE,coldAndWarmBuilds } from '../lib/build/cold-warm.ts'
import { imageBytes,pushedBytes,registryLogin } from '../lib/build/registry.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { ensureDockerEngine } from '../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY,ensureRegistry } from '../lib/sandbox/registry.ts'
import { baselineFrom,checkTargets,compareBaseline,improvementPct,measureRows,requireBaseline,type Measurements } from '../lib/build/measure.ts'
import { currentColdInputs,decideCold,explainCookMiss,measureStateFiles,readColdRecord,readInputs,writeJson,type ColdInputs } from '../lib/build/cold-inputs.ts'
import { appendHistory,readHistory,sparkline,sustainedRegressions,trendRows } from '../lib/build/history.ts'
import { ensureBaseImages } from '../lib/sandbox/base-images.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { appendSummary,markdownTable,readReport,writeReport } from '../lib/core/report.ts'
import { defineStage,runStage } from '../lib/core/stage.ts'
import type { BuildReport } from './build.ts'

export interface MeasureCtx {
  config: Config
  docker: string
  built: BuildReport
  image: Measurements['image']
  binary: Measurements['binary']
  cold: number
  warm: { seconds: number; cookCacheHit: boolean | null; compiled: string[]; missWhy: string | null; breakdown: Record<string, number> }
  inputs: ColdInputs
  coldRun: Measurements['build']['cold']
  m: Measurements
}

const updateBaseline = () => process.argv.includes('--update-baseline')
const forceCold = () => process.argv.includes('--cold')

export function measureTasks(root = repoRoot): ListrTask<MeasureCtx>[] {
  const dockerfile = (ctx: string) => join(ctx, 'Dockerfile.optimized')
  return [
    {
      title: 'Docker engine, registry and base images',
      task: async (ctx) => {
        ctx.config = loadConfig()
        requireBaseline(ctx.config.measureBaseline, updateBaseline())
        ctx.built = readReport<BuildReport>(ctx.config.reportsDir, 'build')
        ctx.docker = (await ensureDockerEngine(ctx.config.docker)).docker
        if (ctx.built.pushed && ctx.config.registry === LOCAL_REGISTRY) await ensureRegistry(LOCAL_REGISTRY)
        await ensureBaseImages(ctx.docker, ctx.config.cacheDir)
      },
    },
    {
      title: 'Image size',
      task: async (ctx, task) => {
        const ref = ctx.built.image.pinned ?? ctx.built.image.ref
        const bytes = await imageBytes(ctx.docker, ref)
        const { registry, registryUser: user, registryToken: token } = ctx.config
        const login = ctx.built.image.pinned && user && token ? await registryLogin(ctx.docker, registry, user, token) : undefined
        const compressedBytes = ctx.built.image.pinned ? await pushedBytes(ctx.docker, ctx.built.image.pinned, login?.env).finally(() => login?.end()) : null
        ctx.image = { ref: ctx.built.image.ref, digest: ctx.built.image.digest, bytes, compressedBytes }
        task.title = `Image size: ${(bytes / 1e6).toFixed(2)} MB uncompressed, ${compressedBytes === null ? 'not pushed' : `${(compressedBytes / 1e6).toFixed(2)} MB as pushed`}`
      },
    },
    {
      title: 'Binary size before and after UPX',
      task: async (ctx, task) => {
        const out = mkdtempSync(join(tmpdir(), 'doc-server-artifacts-'))
        try {
          await buildImage({ docker: ctx.docker, context: root, dockerfile: dockerfile(root), target: 'artifacts', outputDir: out })
          ctx.binary = { bytesBeforeUpx: statSync(join(out, 'doc-server.unpacked')).size, bytesAfterUpx: statSync(join(out, 'doc-server')).size }
        } finally {
          rmSync(out, { recursive: true, force: true })
        }
        task.title = `Binary: ${(ctx.binary.bytesBeforeUpx / 1e6).toFixed(2)} MB stripped, ${(ctx.binary.bytesAfterUpx / 1e6).toFixed(2)} MB after upx`
      },
    },
    {
      title: 'Cold build inputs: recipe, Dockerfile, toolchain, base images',
      task: async (ctx, task) => {
        ctx.inputs = await currentColdInputs(ctx.docker, ctx.config.cacheDir, root)
        const record = readColdRecord(measureStateFiles(ctx.config.cacheDir).cold)
        const d = decideCold(record, ctx.inputs, forceCold())
        ctx.coldRun = d.cold || !record ? { measured: true, commit: ctx.built.commit.sha, date: new Date().toISOString(), why: d.why } : { measured: false, commit: record.commit, date: record.date, why: d.why }
        if (!ctx.coldRun.measured) ctx.cold = record!.coldSeconds
        task.title = d.why
      },
    },
    {
      title: 'Warm build after a code-only change (and the cold build, when needed)',
      task: async (ctx, task) => {
        const files = measureStateFiles(ctx.config.cacheDir)
        // Reusing the cold figure, the first build only primes the cache (usually all cached after the build stage).
        const cw = await coldAndWarmBuilds({ docker: ctx.docker, root, dockerfile: 'Dockerfile.optimized', changeFile: CODE_CHANGE_FILE, noCache: ctx.coldRun.measured })
        if (ctx.coldRun.measured) {
          ctx.cold = cw.coldSeconds
          writeJson(files.cold, { inputs: ctx.inputs, coldSeconds: ctx.cold, commit: ctx.coldRun.commit, date: ctx.coldRun.date })
        }
        const missWhy = cw.cookCacheHit === false ? explainCookMiss(readInputs(files.last), ctx.inputs) : null
        writeJson(files.last, ctx.inputs)
        ctx.warm = { seconds: cw.warmSeconds, cookCacheHit: cw.cookCacheHit, compiled: cw.warmCompiled, missWhy, breakdown: cw.warmBreakdown }
        const cold = `cold ${ctx.cold.toFixed(1)} s${ctx.coldRun.measured ? '' : ` (reused from ${ctx.coldRun.commit.slice(0, 8)})`}`
        task.title = `Warm ${ctx.warm.seconds.toFixed(1)} s, ${cold} (cook step ${ctx.warm.cookCacheHit ? 'cached' : 'NOT cached'}; warm build compiled: ${ctx.warm.compiled.join(', ') || 'nothing'})`
        task.title += `\nwarm seconds: ${Object.entries(cw.warmBreakdown).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`
        if (missWhy) task.title += `\n${missWhy}`
      },
    },
    {
      title: 'Report and baseline',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: (ctx, task) => {
        ctx.m = {
          image: ctx.image,
          binary: ctx.binary,
          build: { coldSeconds: ctx.cold, cold: ctx.coldRun, warmSeconds: ctx.warm.seconds, cookCacheHit: ctx.warm.cookCacheHit, improvementPct: improvementPct(ctx.cold, ctx.warm.seconds), warmCompiledCrates: ctx.warm.compiled },
        }
        const baseline = requireBaseline(ctx.config.measureBaseline, updateBaseline())
        const files = measureStateFiles(ctx.config.cacheDir)
        appendHistory(files.history, { commit: ctx.built.commit.sha, date: new Date().toISOString(), imageBytes: ctx.image.bytes, compressedBytes: ctx.image.compressedBytes, warmSeconds: ctx.warm.seconds, coldSeconds: ctx.coldRun.measured ? ctx.cold : null, cookCacheHit: ctx.warm.cookCacheHit })
        const history = readHistory(files.history)
        // One run's timing is noise on a shared machine; the image size is not. A slower warm build fails only when the median of the last runs is.
        const single = baseline && !updateBaseline() ? compareBaseline(ctx.m, baseline) : []
        const sustained = baseline && !updateBaseline() ? sustainedRegressions(history, baseline) : []
        const regressions = [...single.filter((l) => l.includes('image grew')), ...sustained.filter((l) => !l.startsWith('image'))]
        const notes = [...single.filter((l) => !l.includes('image grew')).map((l) => `this run only (not failing): ${l}`), ...(ctx.warm.missWhy ? [ctx.warm.missWhy] : [])]
        const misses = checkTargets(ctx.m)
        writeReport(ctx.config.reportsDir, 'measure', { ...ctx.m, warmBreakdown: ctx.warm.breakdown, cookMiss: ctx.warm.missWhy, baseline: baseline ?? null, regressions, missedTargets: misses, historyFile: files.history })
        const table = markdownTable(['measure', 'this run', 'baseline'], measureRows(ctx.m, baseline))
        const trend = `${markdownTable(['date', 'commit', 'image', 'pushed', 'warm', 'cold', 'cook'], trendRows(history))}\nwarm trend: ${sparkline(history.slice(-20).map((e) => e.warmSeconds))}`
        appendSummary(`### measure\n\n${table}${[...regressions, ...notes, ...misses].map((l) => `\n- ${l}`).join('')}\n\n#### last runs\n\n${trend}`)
        if (updateBaseline()) {
          mkdirSync(dirname(ctx.config.measureBaseline), { recursive: true })
          writeFileSync(ctx.config.measureBaseline, `${JSON.stringify(baselineFrom(ctx.m), null, 2)}\n`)
          task.title = `Report written; baseline updated: ${ctx.config.measureBaseline}`
        }
        // A missed target is shown, not fatal: it follows from the workspace's
        // profile choice, which this stage does not own. Getting worse than
        // the baseline is what fails.
        task.output = [table, ...notes, ...misses.map((l) => `target missed: ${l}`), '', trend].join('\n')
        if (regressions.length > 0) throw new PipelineError(`measure: ${regressions.join('; ')}`)
      },
    },
  ]
}

export const stage = defineStage<MeasureCtx>({ name: 'measure', tasks: () => measureTasks(), initialCtx: () => ({}) as MeasureCtx })

if (isMain(import.meta.url)) await runStage(stage)
