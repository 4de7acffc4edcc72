/**
 * The old build engine against the pinned BuildKit, side by side in one run:
 * the Docker engine's embedded BuildKit (`docker build`, what built the image
 * before) and buildctl on the local buildkitd, each building
 * Dockerfile.optimized cold (`--no-cache`) and then warm after a code-only
 * change, in alternating order so that a slow minute of the shared machine
 * does not favour one of them. Then the independent rebuild's cost: a
 * buildkitd started empty, building the image from nothing (base images
 * pulled from the registry, every step run) into an OCI tarball, as
 * `npm run ci:rebuild` does.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CODE_CHANGE_FILE, coldAndWarmBuilds, type ColdWarm } from '../../lib/build/cold-warm.ts'
import { buildImage, copyBuildContext, type Builder, type EngineBuilder } from '../../lib/build/docker.ts'
import { improvementPct } from '../../lib/build/measure.ts'
import { run } from '../../lib/core/run.ts'
import { say } from '../../lib/core/output.ts'
import { median } from '../../lib/core/stats.ts'

export interface Engine {
  name: string
  version: string
  builder: Builder | EngineBuilder
  /** The base-image build arguments this engine resolves (local names for the engine, pinned digests for BuildKit). */
  buildArgs: Record<string, string>
}

export interface EngineResult {
  name: string
  version: string
  cold: number[]
  warm: number[]
  coldSeconds: number
  warmSeconds: number
  improvementPct: number
  cookCacheHit: boolean | null
  imageBytes: number
  breakdown: ColdWarm['warmBreakdown']
}

/** The Docker engine's version, which fixes the BuildKit it embeds. */
export async function engineVersion(docker: string): Promise<string> {
  const v = (await run([docker, 'version', '--format', '{{.Server.Version}}'])).stdout.trim()
  return `Docker Engine ${v} (embedded BuildKit)`
}

/** `rounds` rounds; each engine builds cold then warm once per round, the order flipping every round. */
export async function measureEngines(o: { engines: Engine[]; docker: string; root: string; rounds: number }): Promise<EngineResult[]> {
  const runs: ColdWarm[][] = o.engines.map(() => [])
  for (let round = 1; round <= o.rounds; round++) {
    const order = round % 2 === 1 ? o.engines.map((_, i) => i) : o.engines.map((_, i) => i).reverse()
    for (const i of order) {
      const e = o.engines[i]!
      say(`round ${round}/${o.rounds}: ${e.name}, cold then warm`)
      runs[i]!.push(
        await coldAndWarmBuilds({
          builder: e.builder,
          docker: o.docker,
          root: o.root,
          dockerfile: 'Dockerfile.optimized',
          changeFile: CODE_CHANGE_FILE,
          buildArgs: e.buildArgs,
        }),
      )
    }
  }
  return o.engines.map((e, i) => {
    const r = runs[i]!
    const cold = r.map((x) => x.coldSeconds)
    const warm = r.map((x) => x.warmSeconds)
    const last = r.at(-1)!
    return {
      name: e.name,
      version: e.version,
      cold,
      warm,
      coldSeconds: median(cold),
      warmSeconds: median(warm),
      improvementPct: improvementPct(median(cold), median(warm)),
      cookCacheHit: last.cookCacheHit,
      imageBytes: last.imageBytes,
      breakdown: last.warmBreakdown,
    }
  })
}

/** What a rebuild from nothing costs: an empty builder's start, the base images' pull and every step. */
export async function measureRebuild(o: {
  start: () => Promise<{ builder: Builder; stop: () => Promise<void> }>
  root: string
  buildArgs: Record<string, string>
}): Promise<{ seconds: number; buildSeconds: number; digest: string }> {
  const started = performance.now()
  const copy = copyBuildContext(o.root, 'bench-rebuild-')
  const out = mkdtempSync(join(tmpdir(), 'bench-rebuild-out-'))
  const cold = await o.start()
  try {
    const built = await buildImage({
      builder: cold.builder,
      context: copy,
      dockerfile: join(copy, 'Dockerfile.optimized'),
      buildArgs: o.buildArgs,
      noCache: true,
      ociTar: join(out, 'image.tar'),
    })
    return { seconds: (performance.now() - started) / 1000, buildSeconds: built.seconds, digest: built.digest! }
  } finally {
    await cold.stop()
    rmSync(copy, { recursive: true, force: true })
    rmSync(out, { recursive: true, force: true })
  }
}
