/**
 * Every measure run's figures, appended to a file outside the clone, so a
 * trend is visible and only a sustained regression fails the stage: the
 * median of the last runs against the baseline, never one noisy run.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { formatBytes, type Baseline } from './measure.ts'
import { median } from '../core/stats.ts'

export interface HistoryEntry {
  commit: string
  date: string
  imageBytes: number
  compressedBytes: number | null
  warmSeconds: number
  /** Null when the cold figure was reused rather than measured in this run. */
  coldSeconds: number | null
  cookCacheHit: boolean | null
}

/** How many recent runs the regression check takes the median of, and how many it needs at least. */
export const WINDOW = { runs: 5, atLeast: 3 } as const

/** The history, oldest first; lines that do not parse (a torn write) are skipped. */
export function readHistory(path: string): HistoryEntry[] {
  if (!existsSync(path)) return []
  return readFileSync(path, 'utf8').split('\n').flatMap((l) => {
    try {
      const e = JSON.parse(l) as HistoryEntry
      return typeof e.warmSeconds === 'number' && typeof e.imageBytes === 'number' ? [e] : []
    } catch {
      return []
    }
  })
}

export function appendHistory(path: string, e: HistoryEntry): void {
  mkdirSync(dirname(path), { recursive: true })
  appendFileSync(path, `${JSON.stringify(e)}\n`)
}

/**
 * A regression that persists: the median warm time (and image size) of the
 * last WINDOW.runs runs beyond the baseline's tolerance. Fewer than
 * WINDOW.atLeast runs are not enough to call anything sustained.
 */
export function sustainedRegressions(history: readonly HistoryEntry[], b: Baseline): string[] {
  const last = history.slice(-WINDOW.runs)
  if (last.length < WINDOW.atLeast) return []
  const out: string[] = []
  const warm = median(last.map((e) => e.warmSeconds))
  const slower = warm - b.build.warmSeconds
  const slowerPct = b.build.warmSeconds > 0 ? (slower / b.build.warmSeconds) * 100 : 0
  if (slowerPct > b.tolerance.warmPct && slower > b.tolerance.warmSeconds) {
    out.push(`warm build slowed for ${last.length} runs: median ${warm.toFixed(1)} s against the baseline's ${b.build.warmSeconds.toFixed(1)} s (tolerance ${b.tolerance.warmPct}% and ${b.tolerance.warmSeconds} s)`)
  }
  const bytes = median(last.map((e) => e.imageBytes))
  const grew = b.image.bytes > 0 ? ((bytes - b.image.bytes) / b.image.bytes) * 100 : 0
  if (grew > b.tolerance.imagePct) out.push(`image grew for ${last.length} runs: median ${formatBytes(bytes)} against the baseline's ${formatBytes(b.image.bytes)} (tolerance ${b.tolerance.imagePct}%)`)
  return out
}

const BARS = '▁▂▃▄▅▆▇█'

/** A one-line sparkline of the warm seconds, oldest to newest. */
export function sparkline(values: readonly number[]): string {
  if (values.length === 0) return ''
  const lo = Math.min(...values)
  const hi = Math.max(...values)
  return values.map((v) => BARS[hi === lo ? 0 : Math.round(((v - lo) / (hi - lo)) * (BARS.length - 1))]).join('')
}

/** The last runs as table rows, newest last: date, commit, sizes, warm, cold (or "reused"), cook. */
export function trendRows(history: readonly HistoryEntry[], n = 8): string[][] {
  return history.slice(-n).map((e) => [
    e.date.slice(0, 16).replace('T', ' '),
    e.commit.slice(0, 8),
    formatBytes(e.imageBytes),
    formatBytes(e.compressedBytes),
    `${e.warmSeconds.toFixed(1)} s`,
    e.coldSeconds === null ? 'reused' : `${e.coldSeconds.toFixed(1)} s`,
    e.cookCacheHit === null ? '?' : e.cookCacheHit ? 'hit' : 'MISS',
  ])
}
