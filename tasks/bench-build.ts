/**
 * `npm run bench:build`: Dockerfile.optimized against its two peers for the
 * same code-only change (a naive single-stage build and a cache-mount-only
 * build), then what UPX buys (pushed size, start-to-ready time). With
 * `--profiles` it instead compares release-profile choices (LTO,
 * codegen-units) by warm rebuild time and size. Figures go to the log and
 * `reports/bench-build.json`; nothing here is a gate.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { buildImage, coldAndWarmBuilds, imageBytes, pushImage, pushedBytes, removeContainer, removeImage, startContainer, type ColdWarm } from '../lib/build/docker.ts'
import { ensureBaseImages } from '../lib/local/base-images.ts'
import { ensureDockerEngine } from '../lib/local/docker.ts'
import { LOCAL_REGISTRY, ensureRegistry } from '../lib/local/registry.ts'
import { formatBytes, median, ratio, withReleaseProfile, type ProfileChoice } from '../lib/build/measure.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { markdownTable } from '../lib/core/report.ts'
import { defineStage, runStage } from '../lib/core/stage.ts'

interface BenchCtx {
  config: Config
  docker: string
  variants: (ColdWarm & { variant: string })[]
  upx: { upx: boolean; pushedBytes: number; imageBytes: number; readyMs: number }[]
}

const CHANGE = join('crates', 'doc-server', 'src', 'main.rs')
const STARTS = 5
const PROFILES: ProfileChoice[] = [
  { lto: 'fat', codegenUnits: 1 },
  { lto: 'thin', codegenUnits: 1 },
  { lto: 'false', codegenUnits: 1 },
  { lto: 'false', codegenUnits: 16 },
]

/** Milliseconds from `docker run` to the first 200 from /health/ready, polled from the host. */
async function startToReady(docker: string, image: string): Promise<number> {
  const t0 = performance.now()
  const c = await startContainer(docker, image)
  try {
    for (let i = 0; i < 1500; i++) {
      const ok = await fetch(`http://127.0.0.1:${c.hostPort}/health/ready`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false)
      if (ok) return performance.now() - t0
      await new Promise((r) => setTimeout(r, 10))
    }
    throw new Error(`${image} never became ready`)
  } finally {
    await removeContainer(docker, c.id)
  }
}

function variantTasks(): ListrTask<BenchCtx>[] {
  const variants: { variant: string; dockerfile: string; args: Record<string, string> }[] = [
    { variant: 'optimized (chef + UPX)', dockerfile: 'Dockerfile.optimized', args: {} },
    { variant: 'cache mounts only', dockerfile: 'bench/Dockerfile.cache-mount', args: { CACHE_ID: `bench-${Date.now()}` } },
    { variant: 'naive single stage', dockerfile: 'bench/Dockerfile.naive', args: {} },
  ]
  return variants.map((v) => ({
    title: `${v.variant}: cold, then warm after a code-only change`,
    task: async (ctx, task) => {
      const r = await coldAndWarmBuilds({ docker: ctx.docker, root: repoRoot, dockerfile: v.dockerfile, changeFile: CHANGE, buildArgs: v.args, onLine: (l) => (task.output = l) })
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
      await buildImage({ docker: ctx.docker, context: repoRoot, dockerfile: join(repoRoot, 'Dockerfile.optimized'), tags: [ref], buildArgs: { PACK_WITH_UPX: String(upx) }, onLine: (l) => (task.output = l) })
      const pushed = await pushImage(ctx.docker, ref, { onLine: (l) => (task.output = l) })
      const pinned = `${ref.replace(/:[^:/]+$/, '')}@${pushed.digest}`
      const times: number[] = []
      for (let i = 0; i < STARTS; i++) times.push(await startToReady(ctx.docker, ref))
      ctx.upx.push({ upx, pushedBytes: await pushedBytes(ctx.docker, pinned), imageBytes: await imageBytes(ctx.docker, ref), readyMs: median(times) })
      await removeImage(ctx.docker, ref)
      task.title = `UPX ${upx ? 'on' : 'off'}: pushed ${formatBytes(ctx.upx.at(-1)!.pushedBytes)}, ready in ${median(times).toFixed(0)} ms (median of ${STARTS})`
    },
  }))
}

function profileTasks(): ListrTask<BenchCtx>[] {
  return PROFILES.map((p) => {
    const name = `lto=${p.lto}, codegen-units=${p.codegenUnits}`
    return {
      title: `profile ${name}: first build, then warm after a code-only change`,
      task: async (ctx, task) => {
        const prepare = (copy: string) => writeFileSync(join(copy, 'Cargo.toml'), withReleaseProfile(readFileSync(join(copy, 'Cargo.toml'), 'utf8'), p))
        const r = await coldAndWarmBuilds({ docker: ctx.docker, root: repoRoot, dockerfile: 'Dockerfile.optimized', changeFile: CHANGE, noCache: false, prepare, onLine: (l) => (task.output = l) })
        ctx.variants.push({ variant: name, ...r })
        task.title = `profile ${name}: warm ${r.warmSeconds.toFixed(1)} s, binary ${formatBytes(r.binaryBytes)}, image ${formatBytes(r.imageBytes)}`
      },
    }
  })
}

export function benchTasks(profiles = process.argv.includes('--profiles')): ListrTask<BenchCtx>[] {
  return [
    {
      title: 'Docker engine, registry and base images',
      task: async (ctx, task) => {
        ctx.config = loadConfig()
        ctx.docker = (await ensureDockerEngine(ctx.config.docker, (l) => (task.output = l))).docker
        await ensureRegistry(LOCAL_REGISTRY, (l) => (task.output = l))
        await ensureBaseImages(ctx.docker, ctx.config.cacheDir, (l) => (task.output = l))
      },
    },
    ...(profiles ? profileTasks() : [...variantTasks(), ...upxTasks()]),
    {
      title: 'Results',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: (ctx, task) => {
        const ref = ctx.variants[0]!
        const rows = ctx.variants.map((v) => [v.variant, v.coldSeconds.toFixed(1), v.warmSeconds.toFixed(1), ratio(v.warmSeconds, ref.warmSeconds), formatBytes(v.binaryBytes), formatBytes(v.imageBytes), ratio(v.imageBytes, ref.imageBytes), v.cookCacheHit === null ? '-' : v.cookCacheHit ? 'yes' : 'no', v.warmCompiled.length])
        const first = profiles ? 'first build s' : 'cold s'
        let out = markdownTable(['variant', first, 'warm s', 'warm vs first row', 'binary', 'image', 'image vs first row', 'cook cached', 'crates compiled warm'], rows)
        if (ctx.upx.length === 2) {
          const [on, off] = [ctx.upx.find((u) => u.upx)!, ctx.upx.find((u) => !u.upx)!]
          out += `\n\n${markdownTable(['UPX', 'pushed (compressed)', 'image (uncompressed)', 'start-to-ready ms (median)'], ctx.upx.map((u) => [u.upx ? 'on' : 'off', formatBytes(u.pushedBytes), formatBytes(u.imageBytes), u.readyMs.toFixed(0)]))}`
          out += `\nUPX saves ${formatBytes(off.pushedBytes - on.pushedBytes)} per pull and costs ${(on.readyMs - off.readyMs).toFixed(0)} ms per start.`
        }
        task.output = out
        mkdirSync(ctx.config.reportsDir, { recursive: true })
        writeFileSync(join(ctx.config.reportsDir, profiles ? 'bench-profiles.json' : 'bench-build.json'), `${JSON.stringify({ writtenAt: new Date().toISOString(), variants: ctx.variants, upx: ctx.upx }, null, 2)}\n`)
      },
    },
  ]
}

export const stage = defineStage<BenchCtx>({ name: 'bench-build', tasks: () => benchTasks(), initialCtx: () => ({ variants: [], upx: [] }) as unknown as BenchCtx })

if (isMain(import.meta.url)) await runStage(stage)
