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
import { mkdtempSync,rmSync,statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain,parseOptions } from '../lib/core/cli.ts'
import { loadConfig,type Config } from '../lib/core/config.ts'
import { buildImage } from '../lib/build/docker.ts'
import { CODE_CHANGE_FILE,coldAndWarmBuilds } from '../lib/build/cold-warm.ts'
import { imageBytes,pushedBytes,registryLogin } from '../lib/build/registry.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { ensureDockerEngine } from '../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY,ensureRegistry } from '../lib/sandbox/registry.ts'
import { baselineFrom,checkTargets,compareBaseline,improvementPct,measureRows,requireBaseline,type Measurements } from '../lib/build/measure.ts'
import { currentColdInputs,decideCold,explainCookMiss,measureStateFiles,readColdRecord,readInputs,type ColdInputs } from '../lib/build/cold-inputs.ts'
import { writeJson } from '../lib/core/json.ts'
import { appendHistory,readHistory,sparkline,sustainedRegressions,trendRows } from '../lib/build/history.ts'
import { ensureBaseImages } from '../lib/sandbox/base-images.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { appendSummary,markdownTable } from '../lib/core/summary.ts'
import { readReport,writeReport,type Report } from '../lib/core/reports.ts'
import { defineStage,need,runStage } from '../lib/core/stage.ts'

export interface MeasureCtx {
  config: Config
  root: string
  /** `--update-baseline`: write this run's figures as the new baseline. */
  updateBaseline: boolean
  /** `--cold`: build cold even when the cold build's inputs did not change. */
  forceCold: boolean
  built: Report<'build'>
  docker?: string
  image?: Measurements['image']
  binary?: Measurements['binary']
  cold?: number
  warm?: { seconds: number; cookCacheHit: boolean | null; compiled: string[]; missWhy: string | null; breakdown: Record<string, number> }
  inputs?: ColdInputs
  coldRun?: Measurements['build']['cold']
}

export function measureInputs(argv: readonly string[], config = loadConfig()): MeasureCtx {
  const { values } = parseOptions('measure', argv, { cold: { type: 'boolean' }, 'update-baseline': { type: 'boolean' } })
  const updateBaseline = values['update-baseline'] ?? false
  requireBaseline(config.measureBaseline, updateBaseline)
  return { config, root: repoRoot, updateBaseline, forceCold: values.cold ?? false, built: readReport(config.reportsDir, 'build') }
}

export function measureTasks(): ListrTask<MeasureCtx>[] {
  const dockerfile = (ctx: string) => join(ctx, 'Dockerfile.optimized')
  return [
    {
      title: 'Docker engine, registry and base images',
      task: async (ctx) => {
        const docker = (ctx.docker = (await ensureDockerEngine(ctx.config.docker)).docker)
        if (ctx.built.pushed && ctx.config.registry === LOCAL_REGISTRY) await ensureRegistry(LOCAL_REGISTRY)
        await ensureBaseImages(docker, ctx.config.cacheDir)
      },
    },
    {
      title: 'Image size',
      task: async (ctx, task) => {
        const docker = need(ctx.docker, 'the Docker engine')
        const ref = ctx.built.image.pinned ?? ctx.built.image.ref
        const bytes = await imageBytes(docker, ref)
        const { registry, registryUser: user, registryToken: token } = ctx.config
        const login = ctx.built.image.pinned && user && token ? await registryLogin(docker, registry, user, token) : undefined
        const compressedBytes = ctx.built.image.pinned ? await pushedBytes(docker, ctx.built.image.pinned, login?.env).finally(() => login?.end()) : null
        ctx.image = { ref: ctx.built.image.ref, digest: ctx.built.image.digest, bytes, compressedBytes }
        task.title = `Image size: ${(bytes / 1e6).toFixed(2)} MB uncompressed, ${compressedBytes === null ? 'not pushed' : `${(compressedBytes / 1e6).toFixed(2)} MB as pushed`}`
      },
    },
    {
      title: 'Binary size before and after UPX',
      task: async (ctx, task) => {
        const docker = need(ctx.docker, 'the Docker engine')
        const out = mkdtempSync(join(tmpdir(), 'doc-server-artifacts-'))
        try {
          await buildImage({ docker: docker, context: ctx.root, dockerfile: dockerfile(ctx.root), target: 'artifacts', outputDir: out })
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
        const docker = need(ctx.docker, 'the Docker engine')
        ctx.inputs = await currentColdInputs(docker, ctx.config.cacheDir, ctx.root)
        const record = readColdRecord(measureStateFiles(ctx.config.cacheDir).cold)
        const d = decideCold(record, ctx.inputs, ctx.forceCold)
        ctx.coldRun = d.cold || !record ? { measured: true, commit: ctx.built.commit.sha, date: new Date().toISOString(), why: d.why } : { measured: false, commit: record.commit, date: record.date, why: d.why }
        if (!ctx.coldRun.measured) ctx.cold = record!.coldSeconds
        task.title = d.why
      },
    },
    {
      title: 'Warm build after a code-only change (and the cold build, when needed)',
      task: async (ctx, task) => {
        const docker = need(ctx.docker, 'the Docker engine')
        const files = measureStateFiles(ctx.config.cacheDir)
        // Reusing the cold figure, the first build only primes the cache (usually all cached after the build stage).
        const coldRun = need(ctx.coldRun, 'the cold-build decision')
        const inputs = need(ctx.inputs, 'the cold-build inputs')
        const cw = await coldAndWarmBuilds({ docker, root: ctx.root, dockerfile: 'Dockerfile.optimized', changeFile: CODE_CHANGE_FILE, noCache: coldRun.measured })
        if (coldRun.measured) {
          ctx.cold = cw.coldSeconds
          writeJson(files.cold, { inputs, coldSeconds: ctx.cold, commit: coldRun.commit, date: coldRun.date })
        }
        const coldSeconds = need(ctx.cold, 'the cold figure')
        const missWhy = cw.cookCacheHit === false ? explainCookMiss(readInputs(files.last), inputs) : null
        writeJson(files.last, inputs)
        const warm = (ctx.warm = { seconds: cw.warmSeconds, cookCacheHit: cw.cookCacheHit, compiled: cw.warmCompiled, missWhy, breakdown: cw.warmBreakdown })
        const cold = `cold ${coldSeconds.toFixed(1)} s${coldRun.measured ? '' : ` (reused from ${coldRun.commit.slice(0, 8)})`}`
        task.title = `Warm ${warm.seconds.toFixed(1)} s, ${cold} (cook step ${warm.cookCacheHit ? 'cached' : 'NOT cached'}; warm build compiled: ${warm.compiled.join(', ') || 'nothing'})`
        task.title += `\nwarm seconds: ${Object.entries(cw.warmBreakdown).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`
        if (missWhy) task.title += `\n${missWhy}`
      },
    },
    {
      title: 'Report and baseline',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: (ctx, task) => {
        const image = need(ctx.image, 'the image size')
        const warm = need(ctx.warm, 'the warm build')
        const coldSeconds = need(ctx.cold, 'the cold figure')
        const coldRun = need(ctx.coldRun, 'the cold-build decision')
        const m: Measurements = {
          image,
          binary: need(ctx.binary, 'the binary sizes'),
          build: { coldSeconds, cold: coldRun, warmSeconds: warm.seconds, cookCacheHit: warm.cookCacheHit, improvementPct: improvementPct(coldSeconds, warm.seconds), warmCompiledCrates: warm.compiled },
        }
        const baseline = requireBaseline(ctx.config.measureBaseline, ctx.updateBaseline)
        const files = measureStateFiles(ctx.config.cacheDir)
        appendHistory(files.history, { commit: ctx.built.commit.sha, date: new Date().toISOString(), imageBytes: image.bytes, compressedBytes: image.compressedBytes, warmSeconds: warm.seconds, coldSeconds: coldRun.measured ? coldSeconds : null, cookCacheHit: warm.cookCacheHit })
        const history = readHistory(files.history)
        // One run's timing is noise on a shared machine; the image size is not. A slower warm build fails only when the median of the last runs is.
        const single = baseline && !ctx.updateBaseline ? compareBaseline(m, baseline) : []
        const sustained = baseline && !ctx.updateBaseline ? sustainedRegressions(history, baseline) : []
        const regressions = [...single.filter((l) => l.includes('image grew')), ...sustained.filter((l) => !l.startsWith('image'))]
        const notes = [...single.filter((l) => !l.includes('image grew')).map((l) => `this run only (not failing): ${l}`), ...(warm.missWhy ? [warm.missWhy] : [])]
        const misses = checkTargets(m)
        writeReport(ctx.config.reportsDir, 'measure', { ...m, warmBreakdown: warm.breakdown, cookMiss: warm.missWhy, baseline: baseline ?? null, regressions, missedTargets: misses, historyFile: files.history })
        const table = markdownTable(['measure', 'this run', 'baseline'], measureRows(m, baseline))
        const trend = `${markdownTable(['date', 'commit', 'image', 'pushed', 'warm', 'cold', 'cook'], trendRows(history))}\nwarm trend: ${sparkline(history.slice(-20).map((e) => e.warmSeconds))}`
        appendSummary(`### measure\n\n${table}${[...regressions, ...notes, ...misses].map((l) => `\n- ${l}`).join('')}\n\n#### last runs\n\n${trend}`)
        if (ctx.updateBaseline) {
          writeJson(ctx.config.measureBaseline, baselineFrom(m))
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

export const stage = defineStage<MeasureCtx>({ name: 'measure', tasks: measureTasks, initialCtx: (argv) => measureInputs(argv) })

if (isMain(import.meta.url)) await runStage(stage)
