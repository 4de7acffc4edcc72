/**
 * `npm run bench:build`: Dockerfile.optimized against its two peers for the
 * same code-only change (a naive single-stage build and a cache-mount-only
 * build), what UPX buys (pushed size, start-to-ready time), and the static
 * image against the dynamic one on distroless cc (sizes, SBOM packages,
 * start-to-ready, throughput and p99 under the same loopback load); with
 * `--runtimes` only that last comparison. With `--warm-options` it instead
 * measures the options tried for the warm build (codegen units, LTO, UPX
 * level) against the committed choice, in alternating rounds. Figures go to
 * the log and `reports/bench-build.json` (`bench-warm-options.json`);
 * nothing here is a gate.
 */
import { mkdirSync,writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain, parseOptions } from '../lib/core/cli.ts'
import { loadConfig,type Config } from '../lib/core/config.ts'
import { buildImage } from '../lib/build/docker.ts'
import { CODE_CHANGE_FILE,coldAndWarmBuilds,type ColdWarm } from '../lib/build/cold-warm.ts'
import { imageBytes,pushImage,pushedBytes,removeImage } from '../lib/build/registry.ts'
import { ensureBaseImages } from '../lib/sandbox/base-images.ts'
import { ensureCargoTool } from '../lib/tools/cargo.ts'
import { ensureDockerEngine } from '../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY,ensureRegistry } from '../lib/sandbox/registry.ts'
import { formatBytes, ratio } from '../lib/build/measure.ts'
import { median } from '../lib/core/stats.ts'
import { WARM_OPTION_HEADERS,WARM_ROUNDS,measureWarmOptions,warmOptionRows,type WarmOptionResult } from './lib/warm-options.ts'
import { LOAD, RUNTIMES, loadRun, sbomOf, startToReady, type SbomCounts } from './lib/runtime-compare.ts'
import type { LoadFigures } from './lib/oha.ts'
import { BASE_IMAGES,VERSIONS } from '../lib/tools/versions.ts'
import { ensureLocalDb } from '../lib/scan/trivy.ts'
import { ensureTrivy } from '../lib/tools/trivy.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { markdownTable } from '../lib/core/summary.ts'
import { defineStage,runStage } from '../lib/core/stage.ts'

interface BenchCtx {
  config: Config
  docker: string
  variants: (ColdWarm & { variant: string })[]
  upx: { upx: boolean; pushedBytes: number; imageBytes: number; readyMs: number }[]
  tools: { trivy: string; trivyCache: string; oha: string }
  runtimes: ({ runtime: string; label: string; pushedBytes: number; imageBytes: number; readyMs: number; load: LoadFigures } & SbomCounts)[]
  warmOptions: WarmOptionResult[]
}

const STARTS = 5

function variantTasks(): ListrTask<BenchCtx>[] {
  const variants: { variant: string; dockerfile: string; args: Record<string, string> }[] = [
    { variant: 'optimized (chef + UPX)', dockerfile: 'Dockerfile.optimized', args: {} },
    { variant: 'cache mounts only', dockerfile: 'bench/Dockerfile.cache-mount', args: { CACHE_ID: `bench-${Date.now()}` } },
    { variant: 'naive single stage', dockerfile: 'bench/Dockerfile.naive', args: {} },
  ]
  return variants.map((v) => ({
    title: `${v.variant}: cold, then warm after a code-only change`,
    task: async (ctx, task) => {
      const r = await coldAndWarmBuilds({ docker: ctx.docker, root: repoRoot, dockerfile: v.dockerfile, changeFile: CODE_CHANGE_FILE, buildArgs: v.args })
      ctx.variants.push({ variant: v.variant, ...r })
      task.title = `${v.variant}: cold ${r.coldSeconds.toFixed(1)} s, warm ${r.warmSeconds.toFixed(1)} s, image ${formatBytes(r.imageBytes)}`
    },
  }))
}

function upxTasks(): ListrTask<BenchCtx>[] {
  return [true, false].map((upx) => ({
    title: `UPX ${upx ? 'on' : 'off'}: pushed size and start-to-ready`,
    task: async (ctx, task) => {
      const ref = `${LOCAL_REGISTRY}/local/agent-docs-bench:${upx ? 'upx' : 'no-upx'}`
      await buildImage({ docker: ctx.docker, context: repoRoot, dockerfile: join(repoRoot, 'Dockerfile.optimized'), tags: [ref], buildArgs: { PACK_WITH_UPX: String(upx) } })
      const pushed = await pushImage(ctx.docker, ref, {  })
      const pinned = `${ref.replace(/:[^:/]+$/, '')}@${pushed.digest}`
      const times: number[] = []
      for (let i = 0; i < STARTS; i++) times.push(await startToReady(ctx.docker, ref))
      ctx.upx.push({ upx, pushedBytes: await pushedBytes(ctx.docker, pinned), imageBytes: await imageBytes(ctx.docker, ref), readyMs: median(times) })
      await removeImage(ctx.docker, ref)
      task.title = `UPX ${upx ? 'on' : 'off'}: pushed ${formatBytes(ctx.upx.at(-1)!.pushedBytes)}, ready in ${median(times).toFixed(0)} ms (median of ${STARTS})`
    },
  }))
}

function runtimeTasks(): ListrTask<BenchCtx>[] {
  return [
    {
      title: 'Trivy with the local DB (SBOMs) and oha (load)',
      task: async (ctx) => {
        const trivy = await ensureTrivy(ctx.config.cacheDir)
        const db = await ensureLocalDb(ctx.config.cacheDir)
        const oha = await ensureCargoTool(ctx.config.cacheDir, 'oha', VERSIONS.oha)
        ctx.tools = { trivy: trivy.path, trivyCache: db.cacheDir, oha }
      },
    },
    ...RUNTIMES.map((rt): ListrTask<BenchCtx> => ({
      title: `${rt.label}: sizes, SBOM, start-to-ready, load`,
      task: async (ctx, task) => {
        const ref = `${LOCAL_REGISTRY}/local/agent-docs-bench:${rt.key}`
        await buildImage({ docker: ctx.docker, context: repoRoot, dockerfile: join(repoRoot, 'Dockerfile.optimized'), tags: [ref], buildArgs: rt.buildArgs })
        const pinned = `${ref.replace(/:[^:/]+$/, '')}@${(await pushImage(ctx.docker, ref, {  })).digest}`
        const sbom = await sbomOf(pinned, ctx.tools.trivy, ctx.tools.trivyCache)
        const times: number[] = []
        for (let i = 0; i < STARTS; i++) times.push(await startToReady(ctx.docker, ref))
        task.output = `oha: ${LOAD.requests} requests over ${LOAD.connections} connections to ${LOAD.path}`
        const load = await loadRun(ctx.tools.oha, ctx.docker, ref)
        ctx.runtimes.push({ runtime: rt.key, label: rt.label, pushedBytes: await pushedBytes(ctx.docker, pinned), imageBytes: await imageBytes(ctx.docker, ref), readyMs: median(times), load, ...sbom })
        await removeImage(ctx.docker, ref)
        task.title = `${rt.label}: ${formatBytes(ctx.runtimes.at(-1)!.imageBytes)}, ${sbom.osPackages.length} OS packages, ready in ${median(times).toFixed(0)} ms, ${load.rps.toFixed(0)} req/s, p99 ${load.p99Ms.toFixed(2)} ms`
      },
    })),
  ]
}

/** The cc and static images side by side, as docs/benchmarks.md shows them. */
function runtimeTable(rows: BenchCtx['runtimes']): string {
  const figure = (f: (r: BenchCtx['runtimes'][number]) => string) => rows.map(f)
  return markdownTable(['', ...rows.map((r) => r.label)], [
    ['image (uncompressed)', ...figure((r) => formatBytes(r.imageBytes))],
    ['image (as pushed)', ...figure((r) => formatBytes(r.pushedBytes))],
    ['OS packages in the SBOM', ...figure((r) => `${r.osPackages.length} (${r.osPackages.join(', ')})`)],
    ['crates in the SBOM', ...figure((r) => `${r.crates.length} (${['tokio', 'axum'].filter((c) => r.crates.includes(c)).join(', ')} …)`)],
    ['start-to-ready ms (median)', ...figure((r) => r.readyMs.toFixed(0))],
    [`req/s (${LOAD.requests} requests, ${LOAD.connections} connections)`, ...figure((r) => r.load.rps.toFixed(0))],
    ['p50 / p99 ms', ...figure((r) => `${r.load.p50Ms.toFixed(2)} / ${r.load.p99Ms.toFixed(2)}`)],
  ])
}

function warmOptionTasks(): ListrTask<BenchCtx>[] {
  return [
    {
      title: `Warm build options, ${WARM_ROUNDS} alternating rounds`,
      task: async (ctx, task) => {
        ctx.warmOptions = await measureWarmOptions({ docker: ctx.docker, root: repoRoot, rounds: WARM_ROUNDS })
        task.title = `Warm build options: ${ctx.warmOptions.length} measured, ${WARM_ROUNDS} rounds each`
      },
    },
  ]
}

export function benchTasks(argv: readonly string[]): ListrTask<BenchCtx>[] {
  const { values } = parseOptions('bench:build', argv, { 'warm-options': { type: 'boolean' }, runtimes: { type: 'boolean' } })
  const warmOptions = values['warm-options'] ?? false
  const runtimesOnly = values.runtimes ?? false
  const measured = warmOptions ? warmOptionTasks() : runtimesOnly ? runtimeTasks() : [...variantTasks(), ...upxTasks(), ...runtimeTasks()]
  return [
    {
      title: 'Docker engine, registry and base images',
      task: async (ctx) => {
        ctx.config = loadConfig()
        ctx.docker = (await ensureDockerEngine(ctx.config.docker)).docker
        await ensureRegistry(LOCAL_REGISTRY)
        await ensureBaseImages(ctx.docker, ctx.config.cacheDir, [BASE_IMAGES.chef, BASE_IMAGES.runtime, BASE_IMAGES.runtimeCc])
      },
    },
    ...measured,
    {
      title: 'Results',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: (ctx, task) => {
        const ref = ctx.variants[0]
        const rows = ctx.variants.map((v) => [v.variant, v.coldSeconds.toFixed(1), v.warmSeconds.toFixed(1), ratio(v.warmSeconds, ref!.warmSeconds), formatBytes(v.binaryBytes), formatBytes(v.imageBytes), ratio(v.imageBytes, ref!.imageBytes), v.cookCacheHit === null ? '-' : v.cookCacheHit ? 'yes' : 'no', v.warmCompiled.length])
        let out = rows.length === 0 ? '' : markdownTable(['variant', 'cold s', 'warm s', 'warm vs first row', 'binary', 'image', 'image vs first row', 'cook cached', 'crates compiled warm'], rows)
        if (ctx.upx.length === 2) {
          const [on, off] = [ctx.upx.find((u) => u.upx)!, ctx.upx.find((u) => !u.upx)!]
          out += `\n\n${markdownTable(['UPX', 'pushed (compressed)', 'image (uncompressed)', 'start-to-ready ms (median)'], ctx.upx.map((u) => [u.upx ? 'on' : 'off', formatBytes(u.pushedBytes), formatBytes(u.imageBytes), u.readyMs.toFixed(0)]))}`
          out += `\nUPX saves ${formatBytes(off.pushedBytes - on.pushedBytes)} per pull and costs ${(on.readyMs - off.readyMs).toFixed(0)} ms per start.`
        }
        if (ctx.runtimes.length > 0) out += `\n\n${runtimeTable(ctx.runtimes)}`
        if (ctx.warmOptions.length > 0) out += `\n\n${markdownTable(WARM_OPTION_HEADERS, warmOptionRows(ctx.warmOptions, formatBytes))}`
        task.output = out.trim()
        mkdirSync(ctx.config.reportsDir, { recursive: true })
        writeFileSync(join(ctx.config.reportsDir, warmOptions ? 'bench-warm-options.json' : 'bench-build.json'), `${JSON.stringify({ writtenAt: new Date().toISOString(), variants: ctx.variants, upx: ctx.upx, runtimes: ctx.runtimes, warmOptions: ctx.warmOptions }, null, 2)}\n`)
      },
    },
  ]
}

export const stage = defineStage<BenchCtx>({ name: 'bench-build', tasks: benchTasks, initialCtx: () => ({ variants: [], upx: [], runtimes: [], warmOptions: [] }) as unknown as BenchCtx })

if (isMain(import.meta.url)) await runStage(stage)
