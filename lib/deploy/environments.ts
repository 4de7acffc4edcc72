/**
 * What charts/doc-server/environments.yaml says about one environment: the
 * kubectl contexts it may be deployed to, the Prometheus that watches its
 * clusters, and how a release reaches it (a canary first, or directly).
 * Committed and reviewed; read by the deploy stage, never by Helm.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { PipelineError } from '../core/errors.ts'
import { repoRoot } from '../core/paths.ts'

export const ENVIRONMENTS_FILE = join(repoRoot, 'charts', 'doc-server', 'environments.yaml')

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** A duration like 500ms, 15s or 2m, in milliseconds. */
export function durationMs(value: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value.trim())
  return m ? Number(m[1]) * UNIT_MS[m[2]!]! : undefined
}

const duration = (what: string) =>
  z.string().transform((v, ctx) => {
    const ms = durationMs(v)
    if (ms === undefined || ms <= 0) {
      ctx.addIssue({ code: 'custom', message: `${what} must be a duration like 500ms, 15s or 2m, not "${v}"` })
      return z.NEVER
    }
    return ms
  })

const percent = z.number().min(0).max(100)

/** The analysis of a canary, with Flagger's thresholds where it has one. */
export const AnalysisSettings = z
  .object({
    /** No Prometheus declared: refuse the deploy instead of skipping the analysis. */
    required: z.boolean().default(false),
    duration: duration('duration').default(120_000),
    interval: duration('interval').default(15_000),
    /** Requests the canary must have answered in the window for a check to conclude anything. */
    minRequests: z.number().int().min(1).default(50),
    /** Abort at this many failed checks. */
    failedChecks: z.number().int().min(1).default(2),
    /** Too few requests: keep waiting (up to twice the window's checks), count as passed, or count as failed. */
    inconclusive: z.enum(['wait', 'pass', 'fail']).default('wait'),
    /** Percent of the canary's answers that are not 5xx, at least. */
    successRate: percent.default(99),
    /** Percentage points of 4xx and 5xx answers above the stable pods' share, at most. */
    errorRateIncrease: percent.default(1),
    /** The canary's p99, at most. */
    p99: duration('p99').default(500),
    /** The canary's p99 may be at most this many times the stable pods' … */
    p99Ratio: z.number().min(1).default(2),
    /** … unless it is no more than this much above it (the histogram's resolution at low latencies). */
    p99Slack: duration('p99Slack').default(10),
  })
  .strict()
  .refine((a) => a.interval <= a.duration, { message: 'interval must not be longer than duration' })

export const CanarySettings = z
  .object({
    /** Percent of the release's pods that run the new digest first (1 of 4 is 25). */
    weight: z.number().gt(0).lt(100),
    analysis: AnalysisSettings.default(AnalysisSettings.parse({})),
  })
  .strict()

export const Environment = z
  .object({
    contexts: z.array(z.string().trim().min(1)),
    /** The Prometheus that scrapes this environment's clusters, as the deploy stage reaches it. */
    prometheus: z.url({ protocol: /^https?$/ }).optional(),
    /** Absent: every release rolls out directly. */
    canary: CanarySettings.optional(),
  })
  .strict()

export type AnalysisSettings = z.output<typeof AnalysisSettings>
export type CanarySettings = z.output<typeof CanarySettings>
export type Environment = z.output<typeof Environment>

/** Every environment of an environments file; one line naming the environment and the field that is wrong. */
export function parseEnvironmentsFile(text: string, source: string): Record<string, Environment> {
  let raw: unknown
  try {
    raw = parseYaml(text)
  } catch (err) {
    throw new PipelineError(`deploy: ${source} does not parse: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`)
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new PipelineError(`deploy: ${source} must map each environment to its contexts`)
  const out: Record<string, Environment> = {}
  for (const [env, body] of Object.entries(raw as Record<string, unknown>)) {
    const parsed = Environment.safeParse(body)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      const at = issue?.path.join('.') ?? ''
      const why = at === '' || at.startsWith('contexts')
        ? `must be { contexts: [context names] }, with optional prometheus and canary${at === '' && issue ? ` (${issue.message})` : ''}`
        : `${at}: ${issue?.message}`
      throw new PipelineError(`deploy: ${source}: ${env} ${why}`)
    }
    out[env] = parsed.data
  }
  return out
}

/** One environment's settings; an environment the file does not list has no contexts and no canary. */
export function readEnvironment(env: string, file = ENVIRONMENTS_FILE): Environment {
  if (!existsSync(file)) throw new PipelineError(`deploy: refused: ${file} is missing; it declares which contexts each DEPLOY_ENV may use`)
  return parseEnvironmentsFile(readFileSync(file, 'utf8'), file)[env] ?? { contexts: [] }
}

/** A URL as it may be shown: without user and password. */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url)
    u.username = ''
    u.password = ''
    return u.toString().replace(/\/$/, '')
  } catch {
    return '(not a URL)'
  }
}
