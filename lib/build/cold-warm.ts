import { appendFileSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { buildBreakdown, compiledCrates } from './buildkit-log.ts'
import { removeImage, imageBytes } from './registry.ts'
import { buildImage, copyBuildContext } from './docker.ts'

export interface ColdWarm {
  coldSeconds: number
  warmSeconds: number
  /** Cook step of the warm build, from BuildKit's output; null for Dockerfiles without one. */
  cookCacheHit: boolean | null
  /** Crates the warm build compiled (from cargo's own `Compiling` lines). */
  warmCompiled: string[]
  imageBytes: number
  /** Size of the stripped binary before UPX, when the Dockerfile has an `artifacts` stage. */
  binaryBytes: number | null
  /** Size of the binary as shipped (after UPX, when it packs), from the same stage. */
  packedBytes: number | null
  /** Where the warm build's seconds went (see buildBreakdown). */
  warmBreakdown: ReturnType<typeof buildBreakdown>
}

/**
 * The file a "code-only change" touches in the measure stage and the benches:
 * the router, in the library where nearly all of the server's code lives
 * (the binary's main.rs only calls into it).
 */
export const CODE_CHANGE_FILE = join('crates', 'doc-server', 'src', 'server.rs')

/**
 * A cold build, then a warm one after a code-only change (a comment appended
 * to `changeFile`), in a throwaway copy of the workspace so the working tree
 * is never touched. `noCache: false` makes the first build merely "first"
 * (it reuses what is cached), for comparing variants that share layers.
 */
export async function coldAndWarmBuilds(opts: {
  docker: string
  root: string
  dockerfile: string
  changeFile: string
  buildArgs?: Record<string, string>
  noCache?: boolean
  prepare?: (copy: string) => void
}): Promise<ColdWarm> {
  const copy = copyBuildContext(opts.root, 'doc-server-coldwarm-')
  const tag = `doc-server-coldwarm:${process.pid}`
  const base = { docker: opts.docker, context: copy, dockerfile: join(copy, opts.dockerfile), buildArgs: opts.buildArgs ?? {} }
  try {
    opts.prepare?.(copy)
    const cold = await buildImage({ ...base, noCache: opts.noCache ?? true, tags: [`${tag}-cold`] })
    appendFileSync(join(copy, opts.changeFile), `\n// code-only change for a warm build: ${Date.now()}\n`)
    const warm = await buildImage({ ...base, tags: [`${tag}-warm`] })
    const compileStep = [...warm.steps].reverse().find((s) => /cargo (auditable )?build/.test(s.name))
    let binaryBytes: number | null = null
    let packedBytes: number | null = null
    if (readFileSync(base.dockerfile, 'utf8').includes(' AS artifacts')) {
      const out = join(copy, '.artifacts')
      await buildImage({ ...base, target: 'artifacts', outputDir: out })
      binaryBytes = statSync(join(out, 'doc-server.unpacked')).size
      packedBytes = statSync(join(out, 'doc-server')).size
    }
    return {
      coldSeconds: cold.seconds,
      warmSeconds: warm.seconds,
      cookCacheHit: warm.cookCacheHit,
      warmCompiled: compiledCrates(compileStep),
      warmBreakdown: buildBreakdown(warm.steps, warm.seconds),
      imageBytes: await imageBytes(opts.docker, `${tag}-warm`),
      binaryBytes,
      packedBytes,
    }
  } finally {
    for (const t of [`${tag}-cold`, `${tag}-warm`]) await removeImage(opts.docker, t)
    rmSync(copy, { recursive: true, force: true })
  }
}
