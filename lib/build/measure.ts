import { existsSync, readFileSync } from 'node:fs'
import { PipelineError } from '../core/errors.ts'

/** What `reports/measure.json` holds (plus the report's own stage and time). */
export interface Measurements {
  image: { ref: string; digest: string | null; bytes: number; compressedBytes: number | null }
  binary: { bytesBeforeUpx: number; bytesAfterUpx: number }
  build: {
    coldSeconds: number
    /** Where the cold figure comes from: measured in this run, or reused from the recorded commit. */
    cold: { measured: boolean; commit: string; date: string; why: string }
    warmSeconds: number
    /** Read from BuildKit's `#N CACHED` line for the cook step; null when it was not seen. */
    cookCacheHit: boolean | null
    improvementPct: number
    /** Crates the warm build compiled: only our own when the cook layer was reused. */
    warmCompiledCrates: string[]
  }
}

/** Figures a later run is compared with, and how much worse it may be before it is a regression. */
export interface Baseline {
  image: { bytes: number; compressedBytes?: number | null }
  build: { warmSeconds: number }
  tolerance: { imagePct: number; warmPct: number; warmSeconds: number }
}

/** The acceptance figures: an image under 5 MB (static, about 3 MB measured, so a real margin), a cooked cache hit, a code-only rebuild at least 90% faster than cold. */
export const TARGETS = { maxImageBytes: 5 * 1000 * 1000, minImprovementPct: 90 } as const

/** Timings on a shared 2-core machine wobble; only a clear slowdown counts. */
export const DEFAULT_TOLERANCE: Baseline['tolerance'] = { imagePct: 5, warmPct: 50, warmSeconds: 10 }

export function improvementPct(coldSeconds: number, warmSeconds: number): number {
  if (!(coldSeconds > 0)) return 0
  return Math.round(((coldSeconds - warmSeconds) / coldSeconds) * 1000) / 10
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return 'n/a'
  if (n < 1000) return `${n} B`
  if (n < 1000 * 1000) return `${(n / 1000).toFixed(1)} kB`
  return `${(n / 1000 / 1000).toFixed(2)} MB`
}

const pct = (from: number, to: number) => (from > 0 ? ((to - from) / from) * 100 : 0)

/** The acceptance targets this run misses, one clear line each. */
export function checkTargets(m: Measurements): string[] {
  const out: string[] = []
  if (m.image.bytes >= TARGETS.maxImageBytes) out.push(`image is ${formatBytes(m.image.bytes)}, over the ${formatBytes(TARGETS.maxImageBytes)} limit`)
  if (m.build.cookCacheHit !== true) {
    out.push(m.build.cookCacheHit === null ? 'the warm build showed no cargo chef cook step, so its cache use is unknown' : 'the cook step was rebuilt on a code-only change: the dependency layer is not reused')
  }
  if (m.build.improvementPct < TARGETS.minImprovementPct) {
    out.push(`a code-only rebuild is only ${m.build.improvementPct}% faster than cold (${m.build.warmSeconds.toFixed(1)} s vs ${m.build.coldSeconds.toFixed(1)} s); the target is ${TARGETS.minImprovementPct}%`)
  }
  return out
}

/** Regressions against the baseline (image grew, warm build slowed), one clear line each. */
export function compareBaseline(m: Measurements, b: Baseline): string[] {
  const out: string[] = []
  const t = b.tolerance
  const grew = pct(b.image.bytes, m.image.bytes)
  if (grew > t.imagePct) {
    out.push(`image grew ${grew.toFixed(1)}% over the baseline: ${formatBytes(b.image.bytes)} -> ${formatBytes(m.image.bytes)} (tolerance ${t.imagePct}%)`)
  }
  if (b.image.compressedBytes && m.image.compressedBytes) {
    const grewC = pct(b.image.compressedBytes, m.image.compressedBytes)
    if (grewC > t.imagePct) out.push(`pushed image grew ${grewC.toFixed(1)}% over the baseline: ${formatBytes(b.image.compressedBytes)} -> ${formatBytes(m.image.compressedBytes)} (tolerance ${t.imagePct}%)`)
  }
  const slower = m.build.warmSeconds - b.build.warmSeconds
  const slowerPct = pct(b.build.warmSeconds, m.build.warmSeconds)
  if (slowerPct > t.warmPct && slower > t.warmSeconds) {
    out.push(`warm build slowed ${slowerPct.toFixed(0)}% over the baseline: ${b.build.warmSeconds.toFixed(1)} s -> ${m.build.warmSeconds.toFixed(1)} s (tolerance ${t.warmPct}% and ${t.warmSeconds} s)`)
  }
  return out
}

export function baselineFrom(m: Measurements, tolerance: Baseline['tolerance'] = DEFAULT_TOLERANCE): Baseline {
  return { image: { bytes: m.image.bytes, compressedBytes: m.image.compressedBytes }, build: { warmSeconds: m.build.warmSeconds }, tolerance }
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0

/**
 * The baseline this run compares against. A missing one fails, before anything
 * is measured (a deleted or mistyped MEASURE_BASELINE would otherwise let any
 * regression through), unless this run is the one creating it.
 */
export function requireBaseline(path: string, updating: boolean): Baseline | undefined {
  const b = readBaseline(path)
  if (!b && !updating) throw new PipelineError(`measure: baseline ${path} does not exist; create it with npm run ci:measure -- --update-baseline or set MEASURE_BASELINE`)
  return b
}

/** Reads the baseline file: undefined when missing, a one-line error when malformed. */
export function readBaseline(path: string): Baseline | undefined {
  if (!existsSync(path)) return undefined
  let raw: unknown
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    throw new PipelineError(`measure: baseline ${path} is not valid JSON; fix it or write a new one with npm run ci:measure -- --update-baseline`)
  }
  const b = raw as Partial<Baseline>
  if (!isNum(b.image?.bytes) || !isNum(b.build?.warmSeconds)) {
    throw new PipelineError(`measure: baseline ${path} needs image.bytes and build.warmSeconds as numbers`)
  }
  const t = { ...DEFAULT_TOLERANCE, ...(b.tolerance ?? {}) }
  for (const [k, v] of Object.entries(t)) if (!isNum(v)) throw new PipelineError(`measure: baseline ${path} tolerance.${k} must be a number`)
  return { image: { bytes: b.image.bytes, compressedBytes: isNum(b.image.compressedBytes) ? b.image.compressedBytes : null }, build: { warmSeconds: b.build.warmSeconds }, tolerance: t }
}

/** The rows printed in the log and the job summary. */
export function measureRows(m: Measurements, b?: Baseline): string[][] {
  const base = (v: string) => (b ? v : '-')
  return [
    ['image (uncompressed)', formatBytes(m.image.bytes), base(formatBytes(b?.image.bytes))],
    ['image (as pushed)', formatBytes(m.image.compressedBytes), base(formatBytes(b?.image.compressedBytes))],
    ['binary before UPX', formatBytes(m.binary.bytesBeforeUpx), '-'],
    ['binary after UPX', formatBytes(m.binary.bytesAfterUpx), '-'],
    ['cold build (no cache)', `${m.build.coldSeconds.toFixed(1)} s${m.build.cold.measured ? '' : ` (reused: ${m.build.cold.commit.slice(0, 8)}, ${m.build.cold.date.slice(0, 10)})`}`, '-'],
    ['warm build (code-only change)', `${m.build.warmSeconds.toFixed(1)} s`, base(`${b?.build.warmSeconds.toFixed(1)} s`)],
    ['cook step cached on warm build', m.build.cookCacheHit === null ? 'unknown' : m.build.cookCacheHit ? 'yes' : 'NO', '-'],
    ['warm vs cold', `${m.build.improvementPct}% faster than the cold build of ${m.build.cold.commit.slice(0, 8)}`, '-'],
  ]
}

/**
 * Cargo.toml with the given keys set in the given tables (`profile.release`,
 * `profile.release.package.doc-server`), each added when missing; every
 * other line, comments included, is left as it is. Values are TOML as
 * written (`"off"`, `false`, `2`).
 */
export function withTomlSettings(cargoToml: string, settings: Readonly<Record<string, Readonly<Record<string, string>>>>): string {
  const lines = cargoToml.replace(/\n*$/, '').split('\n')
  for (const [table, values] of Object.entries(settings)) {
    let start = lines.findIndex((l) => l.trim() === `[${table}]`)
    if (start === -1) {
      lines.push('', `[${table}]`)
      start = lines.length - 1
    }
    let end = lines.findIndex((l, i) => i > start && /^\s*\[/.test(l))
    if (end === -1) end = lines.length
    for (const [key, value] of Object.entries(values)) {
      const at = lines.findIndex((l, i) => i > start && i < end && new RegExp(`^\\s*${key.replace(/[-.]/g, '\\$&')}\\s*=`).test(l))
      if (at === -1) {
        lines.splice(start + 1, 0, `${key} = ${value}`)
        end++
      } else {
        lines[at] = `${key} = ${value}`
      }
    }
  }
  return `${lines.join('\n')}\n`
}

/** `2.4×` style ratio of a figure to the reference one. */
export function ratio(value: number, reference: number): string {
  return reference > 0 ? `${(value / reference).toFixed(1)}×` : 'n/a'
}
