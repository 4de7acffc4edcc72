/**
 * Canary analysis: every `interval`, over the window since the analysis
 * began, the canary's request count, success rate, 4xx/5xx rate and p99
 * from Prometheus, judged against absolute thresholds and against the
 * stable pods over the same window. Too few canary requests make a check
 * inconclusive, which the environment treats as wait, pass or fail; the
 * analysis fails at `failedChecks` failed checks and passes once a
 * window's worth of checks passed.
 *
 * The figures come from the Doc Server's own metrics
 * (`doc_server_http_requests_total`, `doc_server_http_request_duration_seconds`),
 * as Prometheus collected them from the pods, selected by the `namespace`
 * and `pod` labels its Kubernetes discovery gives them. Probes and scrapes
 * are not user traffic and are left out.
 */
import type { AnalysisSettings } from './environments.ts'
import { say } from '../core/output.ts'
import { sleep } from '../core/wait.ts'

export interface Figures {
  requests: number
  /** Percent of answers that are not 5xx; null with no requests. */
  successRate: number | null
  /** Percent of answers that are 4xx or 5xx; null with no requests. */
  errorRate: number | null
  p99Ms: number | null
}

export type CheckName = 'requests' | 'success-rate' | 'error-rate-vs-stable' | 'p99' | 'p99-vs-stable'

export interface CheckResult {
  check: CheckName
  figure: number | null
  threshold: number
  result: 'pass' | 'fail' | 'not judged'
  /** The check in words, with its figure and threshold. */
  line: string
}

export interface AnalysisStep {
  step: number
  at: string
  windowSeconds: number
  canary: Figures
  stable: Figures
  verdict: 'pass' | 'fail' | 'inconclusive'
  checks: CheckResult[]
}

export interface AnalysisResult {
  result: 'pass' | 'fail' | 'inconclusive'
  /** For a fail or an inconclusive end: the check that decided it, in words. */
  reason: string | null
  /** The check that decided a fail (or `requests` for an inconclusive end). */
  check: CheckName | null
  steps: AnalysisStep[]
  seconds: number
}

const pct = (n: number | null) => (n === null ? 'n/a' : `${Number.isInteger(n) ? n : n.toFixed(n >= 99 ? 2 : 1)} %`)
const ms = (n: number | null) => (n === null ? 'n/a' : `${n.toFixed(1)} ms`)

/** Every check of one step. The step is inconclusive with too few canary requests, and then nothing else is judged. */
export function judge(s: AnalysisSettings, canary: Figures, stable: Figures): { verdict: AnalysisStep['verdict']; checks: CheckResult[] } {
  const enough = canary.requests >= s.minRequests
  const stableEnough = stable.requests >= s.minRequests
  const checks: CheckResult[] = []
  const add = (check: CheckName, figure: number | null, threshold: number, failed: boolean | null, line: string) => {
    const result = !enough && check !== 'requests' ? 'not judged' : failed === null ? 'not judged' : failed ? 'fail' : 'pass'
    checks.push({ check, figure, threshold, result, line })
  }
  add(
    'requests',
    canary.requests,
    s.minRequests,
    enough ? false : null,
    enough
      ? `${canary.requests} canary requests`
      : `${canary.requests} requests reached the canary, fewer than the ${s.minRequests} a check needs`,
  )
  add(
    'success-rate',
    canary.successRate,
    s.successRate,
    canary.successRate === null ? null : canary.successRate < s.successRate,
    `success rate ${pct(canary.successRate)} (at least ${pct(s.successRate)})`,
  )
  const errorIncrease = canary.errorRate !== null && stable.errorRate !== null ? canary.errorRate - stable.errorRate : null
  add(
    'error-rate-vs-stable',
    canary.errorRate,
    s.errorRateIncrease,
    stableEnough && errorIncrease !== null ? errorIncrease > s.errorRateIncrease : null,
    stableEnough
      ? `4xx/5xx rate ${pct(canary.errorRate)} against the stable pods' ${pct(stable.errorRate)} (at most ${s.errorRateIncrease} points more)`
      : `4xx/5xx rate ${pct(canary.errorRate)}; the stable pods answered only ${stable.requests} requests, too few to compare`,
  )
  add('p99', canary.p99Ms, s.p99, canary.p99Ms === null ? null : canary.p99Ms > s.p99, `p99 ${ms(canary.p99Ms)} (at most ${ms(s.p99)})`)
  const comparable = stableEnough && canary.p99Ms !== null && stable.p99Ms !== null
  const slower = comparable && canary.p99Ms! > stable.p99Ms! * s.p99Ratio && canary.p99Ms! - stable.p99Ms! > s.p99Slack
  const times = comparable && stable.p99Ms! > 0 ? `${(canary.p99Ms! / stable.p99Ms!).toFixed(1)} times` : 'n/a against'
  add(
    'p99-vs-stable',
    canary.p99Ms,
    s.p99Ratio,
    comparable ? slower : null,
    comparable
      ? `p99 ${ms(canary.p99Ms)} is ${times} the stable pods' ${ms(stable.p99Ms)} (at most ${s.p99Ratio} times, or ${ms(s.p99Slack)} more)`
      : `p99 ${ms(canary.p99Ms)}; the stable pods' p99 is not known over the window`,
  )
  const verdict = !enough ? 'inconclusive' : checks.some((c) => c.result === 'fail') ? 'fail' : 'pass'
  return { verdict, checks }
}

/** The PromQL for one group of pods over `windowSecs`: requests, 5xx, 4xx+5xx, p99 (seconds). */
export function queries(namespace: string, podRegex: string, windowSecs: number): Record<'requests' | 'server' | 'errors' | 'p99', string> {
  const sel = (extra = '') => `{namespace="${namespace}",pod=~"${podRegex}",route!~"/health/.*|/metrics"${extra}}`
  const w = `[${windowSecs}s]`
  return {
    requests: `sum(increase(doc_server_http_requests_total${sel()}${w}))`,
    server: `sum(increase(doc_server_http_requests_total${sel(',status=~"5.."')}${w}))`,
    errors: `sum(increase(doc_server_http_requests_total${sel(',status=~"[45].."')}${w}))`,
    p99: `histogram_quantile(0.99, sum by (le) (increase(doc_server_http_request_duration_seconds_bucket${sel()}${w})))`,
  }
}

export type Query = (promql: string) => Promise<number | undefined>

/** One group's figures over the window. Increases are extrapolated by Prometheus, so counts are rounded. */
export async function figures(query: Query, namespace: string, podRegex: string, windowSecs: number): Promise<Figures> {
  const q = queries(namespace, podRegex, windowSecs)
  const [requests, server, errors, p99] = await Promise.all([query(q.requests), query(q.server), query(q.errors), query(q.p99)])
  const n = Math.round(requests ?? 0)
  const share = (x: number | undefined) => (n > 0 ? Math.min(100, (100 * Math.round(x ?? 0)) / n) : null)
  return {
    requests: n,
    successRate: n > 0 ? 100 - share(server)! : null,
    errorRate: share(errors),
    p99Ms: p99 === undefined ? null : Math.round(p99 * 10_000) / 10,
  }
}

export interface AnalysisOptions {
  settings: AnalysisSettings
  query: Query
  namespace: string
  canaryPods: string
  stablePods: string
}

/** The analysis loop (see the top of this file). */
export async function analyse(o: AnalysisOptions): Promise<AnalysisResult> {
  const s = o.settings
  const started = Date.now()
  const planned = Math.max(1, Math.round(s.duration / s.interval))
  const steps: AnalysisStep[] = []
  let passed = 0
  let failed = 0
  let waiting: string | undefined
  const end = (result: AnalysisResult['result'], check: CheckName | null, reason: string | null): AnalysisResult => ({
    result,
    check,
    reason,
    steps,
    seconds: Math.round((Date.now() - started) / 100) / 10,
  })
  for (let step = 1; ; step++) {
    await sleep(Math.max(0, started + step * s.interval - Date.now()))
    const windowSeconds = Math.max(1, Math.ceil((Date.now() - started) / 1000))
    const [canary, stable] = await Promise.all([
      figures(o.query, o.namespace, o.canaryPods, windowSeconds),
      figures(o.query, o.namespace, o.stablePods, windowSeconds),
    ])
    const { verdict, checks } = judge(s, canary, stable)
    steps.push({ step, at: new Date().toISOString(), windowSeconds, canary, stable, verdict, checks })
    const failing = checks.find((c) => c.result === 'fail')
    const inconclusive = checks[0]!
    if (verdict === 'inconclusive') waiting = inconclusive.line
    if (verdict === 'pass' || (verdict === 'inconclusive' && s.inconclusive === 'pass')) passed++
    if (verdict === 'fail' || (verdict === 'inconclusive' && s.inconclusive === 'fail')) failed++
    const decisive = verdict === 'fail' ? failing! : inconclusive
    say(
      `check ${step}: ${verdict}${verdict === 'pass' ? '' : ` (${decisive.line})`}; canary ${canary.requests} requests, p99 ${ms(canary.p99Ms)}; stable ${stable.requests}, p99 ${ms(stable.p99Ms)} (${passed} passed, ${failed} failed)`,
    )
    if (failed >= s.failedChecks)
      return end('fail', decisive.check, `${decisive.line}; ${failed} of ${s.failedChecks} allowed failed checks`)
    if (passed >= planned) return end('pass', null, null)
    // Waiting is bounded: twice the window's checks.
    if (s.inconclusive === 'wait' && step >= 2 * planned) {
      return end(
        'inconclusive',
        'requests',
        `${waiting ?? inconclusive.line}; ${passed} of ${planned} checks concluded in ${step} (twice the window)`,
      )
    }
  }
}
