/**
 * What each deploy environment allows, from `charts/doc-server/environments.yaml`
 * (committed and reviewed): the kube contexts it may be deployed to, who may
 * sign what it runs, how old its scan and vulnerability DB may be, whether
 * an older commit may be deployed, the Prometheus that watches its clusters
 * and how a release reaches it (a canary first, or directly). A real cluster
 * always goes through this file; only the local cluster (no KUBE_CONTEXT) has
 * fixed settings of its own, and takes no more than the environment's canary
 * from it (a rehearsal of its rollout).
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { duration } from '../core/config.ts'
import { PipelineError } from '../core/errors.ts'
import { repoRoot } from '../core/paths.ts'
import { DEFAULT_SIGNERS, Signer } from '../sign/signers.ts'

export const ENVIRONMENTS_FILE = join(repoRoot, 'charts', 'doc-server', 'environments.yaml')

const durationText = (name: string) =>
  z.string().transform((v, c) => {
    try {
      return duration(name, v)
    } catch (err) {
      c.addIssue({ code: 'custom', message: (err as Error).message.replace(/^config: /, '') })
      return z.NEVER
    }
  })

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** A duration like 500ms, 15s or 2m, in milliseconds (the canary's settings need milliseconds). */
export function durationMs(value: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(value.trim())
  return m ? Number(m[1]) * UNIT_MS[m[2]!]! : undefined
}

const msText = (what: string) =>
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
  .strictObject({
    /** No Prometheus declared: refuse the deploy instead of skipping the analysis. */
    required: z.boolean().default(false),
    duration: msText('duration').default(120_000),
    interval: msText('interval').default(15_000),
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
    p99: msText('p99').default(500),
    /** The canary's p99 may be at most this many times the stable pods' … */
    p99Ratio: z.number().min(1).default(2),
    /** … unless it is no more than this much above it (the histogram's resolution at low latencies). */
    p99Slack: msText('p99Slack').default(10),
  })
  .refine((a) => a.interval <= a.duration, { message: 'interval must not be longer than duration' })

export const CanarySettings = z.strictObject({
  /** Percent of the release's pods that run the new digest first (1 of 4 is 25). */
  weight: z.number().gt(0).lt(100),
  analysis: AnalysisSettings.default(AnalysisSettings.parse({})),
})

const Environment = z.strictObject({
  contexts: z.array(z.string().min(1)),
  /** Who may sign the image, its provenance and its SBOM (and its scans). */
  signers: z.array(Signer).min(1).default(DEFAULT_SIGNERS),
  /** Who may also sign scan results, never an image: the nightly rescan. */
  scanSigners: z.array(Signer).default([]),
  scan: z
    .strictObject({
      /** The scan attestation deploy accepts is at most this old (it may only tighten SCAN_MAX_AGE). */
      maxAge: durationText('scan.maxAge').optional(),
      /** The DB a scan used was built at most this long before the scan. */
      dbMaxAge: durationText('scan.dbMaxAge').default(72 * 3600),
      /** Which DBs a passing scan may have used: `remote` (Trivy's or a mirror) or `local` (advisories/ of this repository). */
      dbSources: z
        .array(z.enum(['remote', 'local']))
        .min(1)
        .default(['remote', 'local']),
    })
    .default({ dbMaxAge: 72 * 3600, dbSources: ['remote', 'local'] }),
  /** Whether `--allow-older` may roll the release back: never, only with `--reason`, or freely. */
  allowOlder: z.enum(['never', 'with-reason', 'free']).default('with-reason'),
  /** The Prometheus that scrapes this environment's clusters, as the deploy stage reaches it. */
  prometheus: z.url({ protocol: /^https?$/ }).optional(),
  /** Absent: every release rolls out directly. */
  canary: CanarySettings.optional(),
  /** `required`: deploy refuses a digest without a signed rebuild attestation (an independent rebuild of its commit gave it). */
  rebuild: z.enum(['required', 'optional']).default('optional'),
  /**
   * The chart's admission policy (docs/admission.md): `enforce` ships it and needs Kyverno running
   * there, `install` also has the deploy stage install or upgrade the pinned Kyverno first, `off` ships none.
   */
  admission: z.enum(['enforce', 'install', 'off']).default('enforce'),
})

export type AnalysisSettings = z.output<typeof AnalysisSettings>
export type CanarySettings = z.output<typeof CanarySettings>
export type Environment = z.output<typeof Environment>

const Environments = z.record(z.string().regex(/^[a-z][a-z0-9-]*$/, 'an environment name'), Environment)

/** Parses environments.yaml; anything malformed is one line naming the environment and the field. */
export function parseEnvironments(text: string, source: string): Record<string, Environment> {
  let raw: unknown
  try {
    raw = parseYaml(text)
  } catch (err) {
    throw new PipelineError(`deploy: ${source} does not parse: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`)
  }
  const parsed = Environments.safeParse(raw ?? {})
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new PipelineError(`deploy: ${source}: ${issue.path.join('.') || '(the file)'}: ${issue.message}`)
  }
  return parsed.data
}

/**
 * The settings of the local cluster (no KUBE_CONTEXT): the machine's own key signs, a dirty build deploys, any DB
 * will do, and the admission policy ships only with DEPLOY_ADMISSION=enforce.
 */
export const LOCAL_ENVIRONMENT: Environment = {
  contexts: [],
  signers: [],
  scanSigners: [],
  scan: { dbMaxAge: 30 * 86_400, dbSources: ['remote', 'local'] },
  allowOlder: 'free',
  rebuild: 'optional',
  admission: 'enforce',
}

const shown = (file: string) => file.replace(`${repoRoot}/`, '')

/**
 * The environment a deploy goes to. Without KUBE_CONTEXT that is the local
 * cluster, whatever DEPLOY_ENV says, except that it rehearses the canary the
 * file sets for DEPLOY_ENV (against its own Prometheus; nothing else is taken
 * from the file); with it, the file must declare the environment and list
 * the context there (a context named like the local cluster's grants nothing
 * by its name).
 */
export function environmentFor(
  env: string,
  context: string | undefined,
  file = ENVIRONMENTS_FILE,
): { local: boolean; settings: Environment } {
  if (!existsSync(file)) {
    if (!context) return { local: true, settings: LOCAL_ENVIRONMENT }
    throw new PipelineError(`deploy: refused: ${file} is missing; it declares which contexts each DEPLOY_ENV may use`)
  }
  const all = parseEnvironments(readFileSync(file, 'utf8'), shown(file))
  const settings = all[env]
  if (!context) {
    const canary = settings?.canary
    return { local: true, settings: canary ? { ...LOCAL_ENVIRONMENT, canary } : LOCAL_ENVIRONMENT }
  }
  const declared = settings?.contexts ?? []
  if (!settings || !declared.includes(context)) {
    throw new PipelineError(
      `deploy: refused: KUBE_CONTEXT "${context}" is not declared for DEPLOY_ENV=${env} in ${shown(file)} (declared: ${declared.join(', ') || 'none'}); add it there or use the right context`,
    )
  }
  return { local: false, settings }
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
