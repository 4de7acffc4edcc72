/**
 * `npm run bench:build`: Dockerfile.optimized against its two peers for the
 * same code-only change (a naive single-stage build and a cache-mount-only
 * build), what UPX buys (pushed size, start-to-ready time), and the static
 * image against the dynamic one on distroless cc (sizes, SBOM packages,
 * start-to-ready, throughput and p99 under the same loopback load); with
 * `--runtimes` only that last comparison. With `--warm-options` it instead
 * measures the options tried for the warm build (codegen units, LTO, UPX
 * level) against the committed choice, in alternating rounds. With
 * `--engines` it measures the old engine (the Docker engine's embedded
 * BuildKit) against the pinned BuildKit, cold and warm, side by side, and what
 * an independent rebuild from nothing costs (bench/lib/engines.ts). Figures
 * go to the log and `reports/bench-build.json` (`bench-warm-options.json`,
 * `bench-engines.json`); nothing here is a gate.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain, parseOptions } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { baseImageArgs, buildImage, type Builder } from '../lib/build/docker.ts'
import { CODE_CHANGE_FILE, coldAndWarmBuilds, type ColdWarm } from '../lib/build/cold-warm.ts'
import { imageBytes, pullImage, pushedBytes, removeImage } from '../lib/build/registry.ts'
import { buildkitFor, coldBuilder } from '../lib/sandbox/buildkitd.ts'
import { engineVersion, measureEngines, measureRebuild, type Engine, type EngineResult } from './lib/engines.ts'
import { ensureCargoTool } from '../lib/tools/cargo.ts'
import { ensureDockerEngine } from '../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY, ensureRegistry } from '../lib/sandbox/registry.ts'
import { formatBytes, ratio } from '../lib/build/measure.ts'
import { median } from '../lib/core/stats.ts'
import { WARM_OPTION_HEADERS, WARM_ROUNDS, measureWarmOptions, warmOptionRows, type WarmOptionResult } from './lib/warm-options.ts'
import { LOAD, RUNTIMES, loadRun, sbomOf, startToReady, type SbomCounts } from './lib/runtime-compare.ts'
import type { LoadFigures } from './lib/oha.ts'
import { BASE_IMAGES, VERSIONS } from '../lib/tools/versions.ts'
import { ensureLocalDb } from '../lib/scan/trivy.ts'
import { ensureTrivy } from '../lib/tools/trivy.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { markdownTable } from '../lib/core/summary.ts'
import { defineStage, runStage } from '../lib/core/stage.ts'

interface BenchCtx {
  config: Config
  docker: string
  builder: Builder
  /** Each base image's name, pinned by digest. */
  pinned: Record<string, string>
  variants: (ColdWarm & { variant: string })[]
  upx: { upx: boolean; pushedBytes: number; imageBytes: number; readyMs: number }[]
  tools: { trivy: string; trivyCache: string; oha: string }
  runtimes: ({ runtime: string; label: string; pushedBytes: number; imageBytes: number; readyMs: number; load: LoadFigures } & SbomCounts)[]
  warmOptions: WarmOptionResult[]
  engines: EngineResult[]
  rebuild?: { seconds: number; buildSeconds: number; digest: string }
}

const STARTS = 5

function variantTasks(): ListrTask<BenchCtx>[] {
  // Each variant's base images, as build arguments (pinned by digest before the build).
  const variants: { variant: string; dockerfile: string; args: Record<string, string>; bases: Record<string, string> }[] = [
    {
      variant: 'optimized (chef + UPX)',
      dockerfile: 'Dockerfile.optimized',
      args: {},
      bases: { CHEF_IMAGE: BASE_IMAGES.chef, RUNTIME_IMAGE: BASE_IMAGES.runtime },
    },
    {
      variant: 'cache mounts only',
      dockerfile: 'bench/Dockerfile.cache-mount',
      args: { CACHE_ID: `bench-${Date.now()}` },
      bases: { RUST_IMAGE: BASE_IMAGES.chef, RUNTIME_IMAGE: BASE_IMAGES.runtimeCc },
    },
    { variant: 'naive single stage', dockerfile: 'bench/Dockerfile.naive', args: {}, bases: { RUST_IMAGE: BASE_IMAGES.chef } },
  ]
  return variants.map((v) => ({
    title: `${v.variant}: cold, then warm after a code-only change`,
    task: async (ctx, task) => {
      const r = await coldAndWarmBuilds({
        builder: ctx.builder,
        docker: ctx.docker,
        root: repoRoot,
        dockerfile: v.dockerfile,
        changeFile: CODE_CHANGE_FILE,
        buildArgs: { ...v.args, ...baseImageArgs(ctx.pinned, v.bases) },
      })
      ctx.variants.push({ variant: v.variant, ...r })
      task.title = `${v.variant}: cold ${r.coldSeconds.toFixed(1)} s, warm ${r.warmSeconds.toFixed(1)} s, image ${formatBytes(r.imageBytes)}`
    },
  }))
}

/** Dockerfile.optimized built with `args` (base images among them pinned), pushed by BuildKit, pulled into the engine by digest. */
async function pushedAndPulled(ctx: BenchCtx, ref: string, args: Record<string, string>): Promise<string> {
  const bases = baseImageArgs(ctx.pinned, { CHEF_IMAGE: BASE_IMAGES.chef, RUNTIME_IMAGE: args.RUNTIME_IMAGE ?? BASE_IMAGES.runtime })
  const built = await buildImage({
    builder: ctx.builder,
    context: repoRoot,
    dockerfile: join(repoRoot, 'Dockerfile.optimized'),
    push: [ref],
    buildArgs: { ...args, ...bases },
  })
  const pinned = `${ref.replace(/:[^:/]+$/, '')}@${built.digest!}`
  await pullImage(ctx.docker, pinned)
  return pinned
}

function upxTasks(): ListrTask<BenchCtx>[] {
  return [true, false].map((upx) => ({
    title: `UPX ${upx ? 'on' : 'off'}: pushed size and start-to-ready`,
    task: async (ctx, task) => {
      const ref = `${LOCAL_REGISTRY}/local/agent-docs-bench:${upx ? 'upx' : 'no-upx'}`
      const pinned = await pushedAndPulled(ctx, ref, { PACK_WITH_UPX: String(upx) })
      const times: number[] = []
      for (let i = 0; i < STARTS; i++) times.push(await startToReady(ctx.docker, pinned))
      ctx.upx.push({
        upx,
        pushedBytes: await pushedBytes(pinned),
        imageBytes: await imageBytes(ctx.docker, pinned),
        readyMs: median(times),
      })
      await removeImage(ctx.docker, pinned)
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
        const pinned = await pushedAndPulled(ctx, ref, rt.buildArgs)
        const sbom = await sbomOf(pinned, ctx.tools.trivy, ctx.tools.trivyCache)
        const times: number[] = []
        for (let i = 0; i < STARTS; i++) times.push(await startToReady(ctx.docker, pinned))
        task.output = `oha: ${LOAD.requests} requests over ${LOAD.connections} connections to ${LOAD.path}`
        const load = await loadRun(ctx.tools.oha, ctx.docker, pinned)
        ctx.runtimes.push({
          runtime: rt.key,
          label: rt.label,
          pushedBytes: await pushedBytes(pinned),
          imageBytes: await imageBytes(ctx.docker, pinned),
          readyMs: median(times),
          load,
          ...sbom,
        })
        await removeImage(ctx.docker, pinned)
        task.title = `${rt.label}: ${formatBytes(ctx.runtimes.at(-1)!.imageBytes)}, ${sbom.osPackages.length} OS packages, ready in ${median(times).toFixed(0)} ms, ${load.rps.toFixed(0)} req/s, p99 ${load.p99Ms.toFixed(2)} ms`
      },
    })),
  ]
}

/** The cc and static images side by side, as docs/benchmarks.md shows them. */
function runtimeTable(rows: BenchCtx['runtimes']): string {
  const figure = (f: (r: BenchCtx['runtimes'][number]) => string) => rows.map(f)
  return markdownTable(
    ['', ...rows.map((r) => r.label)],
    [
      ['image (uncompressed)', ...figure((r) => formatBytes(r.imageBytes))],
      ['image (as pushed)', ...figure((r) => formatBytes(r.pushedBytes))],
      ['OS packages in the SBOM', ...figure((r) => `${r.osPackages.length} (${r.osPackages.join(', ')})`)],
      [
        'crates in the SBOM',
        ...figure((r) => `${r.crates.length} (${['tokio', 'axum'].filter((c) => r.crates.includes(c)).join(', ')} …)`),
      ],
      ['start-to-ready ms (median)', ...figure((r) => r.readyMs.toFixed(0))],
      [`req/s (${LOAD.requests} requests, ${LOAD.connections} connections)`, ...figure((r) => r.load.rps.toFixed(0))],
      ['p50 / p99 ms', ...figure((r) => `${r.load.p50Ms.toFixed(2)} / ${r.load.p99Ms.toFixed(2)}`)],
    ],
  )
}

const ENGINE_ROUNDS = 2

function engineTasks(): ListrTask<BenchCtx>[] {
  return [
    {
      title: `Old engine against BuildKit ${VERSIONS.buildkit}: cold and warm, ${ENGINE_ROUNDS} alternating rounds`,
      task: async (ctx, task) => {
        const engines: Engine[] = [
          // The engine resolves the base images by name from its own image store; BuildKit by digest from the registry.
          { name: 'old engine', version: await engineVersion(ctx.docker), builder: { docker: ctx.docker }, buildArgs: {} },
          {
            name: 'BuildKit',
            version: `BuildKit ${VERSIONS.buildkit} (buildctl, local buildkitd)`,
            builder: ctx.builder,
            buildArgs: baseImageArgs(ctx.pinned),
          },
        ]
        ctx.engines = await measureEngines({ engines, docker: ctx.docker, root: repoRoot, rounds: ENGINE_ROUNDS })
        task.title = ctx.engines
          .map((e) => `${e.name}: cold ${e.coldSeconds.toFixed(1)} s, warm ${e.warmSeconds.toFixed(1)} s (${e.improvementPct}%)`)
          .join('; ')
      },
    },
    {
      title: 'An independent rebuild from nothing (empty buildkitd, --no-cache)',
      task: async (ctx, task) => {
        ctx.rebuild = await measureRebuild({
          start: () => coldBuilder(ctx.config.cacheDir, 'bench'),
          root: repoRoot,
          buildArgs: baseImageArgs(ctx.pinned),
        })
        task.title = `Rebuild from nothing: ${ctx.rebuild.seconds.toFixed(1)} s in all, ${ctx.rebuild.buildSeconds.toFixed(1)} s of it building`
      },
    },
  ]
}

function warmOptionTasks(): ListrTask<BenchCtx>[] {
  return [
    {
      title: `Warm build options, ${WARM_ROUNDS} alternating rounds`,
      task: async (ctx, task) => {
        ctx.warmOptions = await measureWarmOptions({
          builder: ctx.builder,
          docker: ctx.docker,
          bases: baseImageArgs(ctx.pinned),
          root: repoRoot,
          rounds: WARM_ROUNDS,
        })
        task.title = `Warm build options: ${ctx.warmOptions.length} measured, ${WARM_ROUNDS} rounds each`
      },
    },
  ]
}

export function benchTasks(argv: readonly string[]): ListrTask<BenchCtx>[] {
  const { values } = parseOptions('bench:build', argv, {
    'warm-options': { type: 'boolean' },
    runtimes: { type: 'boolean' },
    engines: { type: 'boolean' },
  })
  const warmOptions = values['warm-options'] ?? false
  const runtimesOnly = values.runtimes ?? false
  const engines = values.engines ?? false
  const measured = engines
    ? engineTasks()
    : warmOptions
      ? warmOptionTasks()
      : runtimesOnly
        ? runtimeTasks()
        : [...variantTasks(), ...upxTasks(), ...runtimeTasks()]
  const reportName = engines ? 'bench-engines.json' : warmOptions ? 'bench-warm-options.json' : 'bench-build.json'
  return [
    {
      title: 'Docker engine, registry, BuildKit and base images',
      task: async (ctx, task) => {
        ctx.config = loadConfig()
        ctx.docker = (await ensureDockerEngine(ctx.config.docker)).docker
        await ensureRegistry(LOCAL_REGISTRY)
        const setup = await buildkitFor(ctx.config, ctx.docker, [BASE_IMAGES.chef, BASE_IMAGES.runtime, BASE_IMAGES.runtimeCc])
        ctx.builder = setup.builder
        ctx.pinned = setup.bases
        task.title = `BuildKit: ${setup.describe}`
      },
    },
    ...measured,
    {
      title: 'Results',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: (ctx, task) => {
        const ref = ctx.variants[0]
        const rows = ctx.variants.map((v) => [
          v.variant,
          v.coldSeconds.toFixed(1),
          v.warmSeconds.toFixed(1),
          ratio(v.warmSeconds, ref!.warmSeconds),
          formatBytes(v.binaryBytes),
          formatBytes(v.imageBytes),
          ratio(v.imageBytes, ref!.imageBytes),
          v.cookCacheHit === null ? '-' : v.cookCacheHit ? 'yes' : 'no',
          v.warmCompiled.length,
        ])
        let out =
          rows.length === 0
            ? ''
            : markdownTable(
                [
                  'variant',
                  'cold s',
                  'warm s',
                  'warm vs first row',
                  'binary',
                  'image',
                  'image vs first row',
                  'cook cached',
                  'crates compiled warm',
                ],
                rows,
              )
        if (ctx.upx.length === 2) {
          const [on, off] = [ctx.upx.find((u) => u.upx)!, ctx.upx.find((u) => !u.upx)!]
          out += `\n\n${markdownTable(
            ['UPX', 'pushed (compressed)', 'image (uncompressed)', 'start-to-ready ms (median)'],
            ctx.upx.map((u) => [u.upx ? 'on' : 'off', formatBytes(u.pushedBytes), formatBytes(u.imageBytes), u.readyMs.toFixed(0)]),
          )}`
          out += `\nUPX saves ${formatBytes(off.pushedBytes - on.pushedBytes)} per pull and costs ${(on.readyMs - off.readyMs).toFixed(0)} ms per start.`
        }
        if (ctx.runtimes.length > 0) out += `\n\n${runtimeTable(ctx.runtimes)}`
        if (ctx.warmOptions.length > 0) out += `\n\n${markdownTable(WARM_OPTION_HEADERS, warmOptionRows(ctx.warmOptions, formatBytes))}`
        if (ctx.engines.length > 0)
          out += `\n\n${markdownTable(
            ['engine', 'version', 'cold s (rounds)', 'warm s (rounds)', 'warm vs cold', 'cook cached', 'image'],
            ctx.engines.map((e) => [
              e.name,
              e.version,
              `${e.coldSeconds.toFixed(1)} (${e.cold.map((x) => x.toFixed(1)).join(', ')})`,
              `${e.warmSeconds.toFixed(1)} (${e.warm.map((x) => x.toFixed(1)).join(', ')})`,
              `${e.improvementPct}% faster`,
              e.cookCacheHit ? 'yes' : 'no',
              formatBytes(e.imageBytes),
            ]),
          )}`
        if (ctx.rebuild)
          out += `\n\nrebuild from nothing (npm run ci:rebuild's build): ${ctx.rebuild.seconds.toFixed(1)} s, of which building ${ctx.rebuild.buildSeconds.toFixed(1)} s`
        task.output = out.trim()
        mkdirSync(ctx.config.reportsDir, { recursive: true })
        writeFileSync(
          join(ctx.config.reportsDir, reportName),
          `${JSON.stringify({ writtenAt: new Date().toISOString(), variants: ctx.variants, upx: ctx.upx, runtimes: ctx.runtimes, warmOptions: ctx.warmOptions, engines: ctx.engines, rebuild: ctx.rebuild ?? null }, null, 2)}\n`,
        )
      },
    },
  ]
}

export const stage = defineStage<BenchCtx>({
  name: 'bench-build',
  tasks: benchTasks,
  initialCtx: () => ({ variants: [], upx: [], runtimes: [], warmOptions: [], engines: [] }) as unknown as BenchCtx,
})

if (isMain(import.meta.url)) await runStage(stage)
