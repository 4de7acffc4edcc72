/**
 * The options tried for the warm build (what every code-only change pays):
 * the release profile of our own crate, LTO, and UPX's level, each measured
 * against the workspace's choice in the same run, on the same machine, in
 * alternating rounds so that a noisy minute does not favour one of them.
 */
import { readFileSync,writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CODE_CHANGE_FILE,coldAndWarmBuilds,type ColdWarm } from '../../lib/build/cold-warm.ts'
import { withTomlSettings } from '../../lib/build/measure.ts'
import { median } from '../../lib/core/stats.ts'
import { say } from '../../lib/core/output.ts'

export interface WarmOption {
  name: string
  /** Cargo.toml tables and keys to set in the build's copy of the workspace. */
  cargo?: Record<string, Record<string, string>>
  /** Build arguments of Dockerfile.optimized (UPX_LEVEL, PACK_WITH_UPX). */
  buildArgs?: Record<string, string>
}

const CRATE_PROFILE = 'profile.release.package.doc-server'

/** Rounds per option: the median of three is the first that one slow build cannot move. */
export const WARM_ROUNDS = 3

/** The first one is what the workspace ships with; the others change one thing each. */
export const WARM_OPTIONS: readonly WarmOption[] = [
  { name: 'as committed: lto "off", doc-server in 2 codegen units, UPX -7' },
  { name: 'doc-server in 1 codegen unit', cargo: { [CRATE_PROFILE]: { 'codegen-units': '1' } } },
  { name: 'doc-server in 4 codegen units', cargo: { [CRATE_PROFILE]: { 'codegen-units': '4' } } },
  { name: 'lto = false (ThinLTO between the 2 units)', cargo: { 'profile.release': { lto: 'false' } } },
  { name: 'lto = "fat"', cargo: { 'profile.release': { lto: '"fat"' } } },
  { name: 'UPX -9', buildArgs: { UPX_LEVEL: '-9' } },
  { name: 'UPX -5', buildArgs: { UPX_LEVEL: '-5' } },
  { name: 'no UPX', buildArgs: { PACK_WITH_UPX: 'false' } },
]

export interface WarmOptionResult {
  name: string
  /** Median of the rounds' warm builds, and each of them. */
  warmSeconds: number
  rounds: number[]
  /** The breakdown of the round closest to the median. */
  breakdown: ColdWarm['warmBreakdown']
  binaryBytes: number | null
  packedBytes: number | null
  imageBytes: number
  cookCacheHit: boolean | null
}

/**
 * Runs `rounds` rounds; in each, every option builds once (a first build that
 * primes its layers, then the measured warm build after a code-only change).
 */
export async function measureWarmOptions(opts: { docker: string; root: string; rounds: number; options?: readonly WarmOption[] }): Promise<WarmOptionResult[]> {
  const options = opts.options ?? WARM_OPTIONS
  const runs: ColdWarm[][] = options.map(() => [])
  for (let round = 1; round <= opts.rounds; round++) {
    for (const [i, option] of options.entries()) {
      say(`round ${round}/${opts.rounds}: ${option.name}`)
      const prepare = (copy: string) => applyOption(copy, option)
      runs[i]!.push(await coldAndWarmBuilds({ docker: opts.docker, root: opts.root, dockerfile: 'Dockerfile.optimized', changeFile: CODE_CHANGE_FILE, buildArgs: option.buildArgs ?? {}, noCache: false, prepare }))
    }
  }
  return options.map((option, i) => summarizeRounds(option.name, runs[i]!))
}

/** An option's Cargo.toml settings, written into a build's copy of the workspace. */
export function applyOption(copy: string, option: WarmOption): void {
  if (option.cargo) writeFileSync(join(copy, 'Cargo.toml'), withTomlSettings(readFileSync(join(copy, 'Cargo.toml'), 'utf8'), option.cargo))
}

/** One option's rounds: the median warm time, with the sizes and breakdown of the round closest to it. */
export function summarizeRounds(name: string, rounds: readonly ColdWarm[]): WarmOptionResult {
  const seconds = rounds.map((x) => x.warmSeconds)
  const mid = median(seconds)
  const closest = rounds.reduce((a, b) => (Math.abs(b.warmSeconds - mid) < Math.abs(a.warmSeconds - mid) ? b : a))
  return { name, warmSeconds: mid, rounds: seconds, breakdown: closest.warmBreakdown, binaryBytes: closest.binaryBytes, packedBytes: closest.packedBytes, imageBytes: closest.imageBytes, cookCacheHit: closest.cookCacheHit }
}

/** The rows of the options table: each option's warm seconds and sizes against the first one. */
export function warmOptionRows(results: readonly WarmOptionResult[], format: (bytes: number | null) => string): string[][] {
  const ref = results[0]
  const delta = (v: number | null, r: number | null | undefined) => (v === null || r === null || r === undefined || v === r ? '' : ` (${v > r ? '+' : '-'}${format(Math.abs(v - r))})`)
  return results.map((o) => [
    o.name,
    `${o.warmSeconds.toFixed(2)} s${ref && o !== ref ? ` (${o.warmSeconds >= ref.warmSeconds ? '+' : ''}${(o.warmSeconds - ref.warmSeconds).toFixed(2)})` : ''}`,
    o.rounds.map((s) => s.toFixed(2)).join(' / '),
    `${o.breakdown['compile+link'].toFixed(1)} / ${o.breakdown.upx.toFixed(1)}`,
    `${format(o.binaryBytes)}`,
    `${format(o.packedBytes)}${delta(o.packedBytes, ref?.packedBytes)}`,
    `${format(o.imageBytes)}${delta(o.imageBytes, ref?.imageBytes)}`,
  ])
}

export const WARM_OPTION_HEADERS = ['option', 'warm (median)', 'rounds', 'compile+link / upx', 'binary stripped', 'binary shipped', 'image']
