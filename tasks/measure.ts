/**
 * measure: how big the image is and how fast it builds, measured, never
 * assumed. A cold build (no cache) and a warm one after a code-only change run
 * in a throwaway copy of the workspace; the cook step's cache hit is read from
 * BuildKit's own output. Writes `reports/measure.json`, compares it with the
 * baseline and fails on a regression, one line each; a missed target is shown.
 */
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { buildImage, coldAndWarmBuilds, imageBytes, pushedBytes, registryLogin } from '../lib/build/docker.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { ensureBaseImages } from '../lib/local/base-images.ts'
import { ensureDockerEngine } from '../lib/local/docker.ts'
import { LOCAL_REGISTRY, ensureRegistry } from '../lib/local/registry.ts'
import { baselineFrom, checkTargets, compareBaseline, improvementPct, measureRows, requireBaseline, type Measurements } from '../lib/build/measure.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { appendSummary, markdownTable, readReport, writeReport } from '../lib/core/report.ts'
import { defineStage, runStage } from '../lib/core/stage.ts'
import type { BuildReport } from './build.ts'

export interface MeasureCtx {
  config: Config
  docker: string
  built: BuildReport
  image: Measurements['image']
  binary: Measurements['binary']
  cold: number
  warm: { seconds: number; cookCacheHit: boolean | null; compiled: string[] }
  m: Measurements
}

const updateBaseline = () => process.argv.includes('--update-baseline')
const WARM_FILE = join('crates', 'doc-server', 'src', 'main.rs')

export function measureTasks(root = repoRoot): ListrTask<MeasureCtx>[] {
  const dockerfile = (ctx: string) => join(ctx, 'Dockerfile.optimized')
  return [
    {
      title: 'Docker engine, registry and base images',
      task: async (ctx, task) => {
        ctx.config = loadConfig()
        requireBaseline(ctx.config.measureBaseline, updateBaseline())
        ctx.built = readReport<BuildReport>(ctx.config.reportsDir, 'build')
        ctx.docker = (await ensureDockerEngine(ctx.config.docker, (l) => (task.output = l))).docker
        if (ctx.built.pushed && ctx.config.registry === LOCAL_REGISTRY) await ensureRegistry(LOCAL_REGISTRY, (l) => (task.output = l))
        await ensureBaseImages(ctx.docker, ctx.config.cacheDir, (l) => (task.output = l))
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
          await buildImage({ docker: ctx.docker, context: root, dockerfile: dockerfile(root), target: 'artifacts', outputDir: out, onLine: (l) => (task.output = l) })
          ctx.binary = { bytesBeforeUpx: statSync(join(out, 'doc-server.unpacked')).size, bytesAfterUpx: statSync(join(out, 'doc-server')).size }
        } finally {
          rmSync(out, { recursive: true, force: true })
        }
        task.title = `Binary: ${(ctx.binary.bytesBeforeUpx / 1e6).toFixed(2)} MB stripped, ${(ctx.binary.bytesAfterUpx / 1e6).toFixed(2)} MB after upx --best`
      },
    },
    {
      title: 'Cold build (--no-cache), then warm build after a code-only change',
      task: async (ctx, task) => {
        const cw = await coldAndWarmBuilds({ docker: ctx.docker, root, dockerfile: 'Dockerfile.optimized', changeFile: WARM_FILE, onLine: (l) => (task.output = l) })
        ctx.cold = cw.coldSeconds
        ctx.warm = { seconds: cw.warmSeconds, cookCacheHit: cw.cookCacheHit, compiled: cw.warmCompiled }
        task.title = `Cold ${ctx.cold.toFixed(1)} s, warm ${ctx.warm.seconds.toFixed(1)} s (cook step ${ctx.warm.cookCacheHit ? 'cached' : 'NOT cached'}; warm build compiled: ${ctx.warm.compiled.join(', ') || 'nothing'})`
      },
    },
    {
      title: 'Report and baseline',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: (ctx, task) => {
        ctx.m = {
          image: ctx.image,
          binary: ctx.binary,
          build: { coldSeconds: ctx.cold, warmSeconds: ctx.warm.seconds, cookCacheHit: ctx.warm.cookCacheHit, improvementPct: improvementPct(ctx.cold, ctx.warm.seconds), warmCompiledCrates: ctx.warm.compiled },
        }
        const baseline = requireBaseline(ctx.config.measureBaseline, updateBaseline())
        const regressions = baseline && !updateBaseline() ? compareBaseline(ctx.m, baseline) : []
        const misses = checkTargets(ctx.m)
        writeReport(ctx.config.reportsDir, 'measure', { ...ctx.m, baseline: baseline ?? null, regressions, missedTargets: misses })
        const table = markdownTable(['measure', 'this run', 'baseline'], measureRows(ctx.m, baseline))
        appendSummary(`### measure\n\n${table}${[...regressions, ...misses].map((l) => `\n- ${l}`).join('')}`)
        if (updateBaseline()) {
          mkdirSync(dirname(ctx.config.measureBaseline), { recursive: true })
          writeFileSync(ctx.config.measureBaseline, `${JSON.stringify(baselineFrom(ctx.m), null, 2)}\n`)
          task.title = `Report written; baseline updated: ${ctx.config.measureBaseline}`
        }
        // A missed target is shown, not fatal: it follows from the workspace's
        // profile choice, which this stage does not own. Getting worse than
        // the baseline is what fails.
        task.output = [table, ...misses.map((l) => `target missed: ${l}`)].join('\n')
        if (regressions.length > 0) throw new PipelineError(`measure: ${regressions.join('; ')}`)
      },
    },
  ]
}

export const stage = defineStage<MeasureCtx>({ name: 'measure', tasks: () => measureTasks(), initialCtx: () => ({}) as MeasureCtx })

if (isMain(import.meta.url)) await runStage(stage)
