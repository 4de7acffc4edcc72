import { PipelineError } from '../../lib/core/errors.ts'
import { run } from '../../lib/core/run.ts'
import { median } from '../../lib/core/stats.ts'

/**
 * The one load tool of the benches: oha (pinned, built from crates.io), its
 * JSON report read one way, and the percentile and median every bench uses.
 */

/** One load run of oha against one URL. Latencies in milliseconds. */
export interface LoadFigures {
  requests: number
  /** Responses with a 2xx status; anything else counts as an error. */
  ok: number
  errors: number
  rps: number
  p50Ms: number
  p99Ms: number
}

/** The figures in oha's `--output-format json`: seconds become milliseconds, status counts become ok/errors. */
export function parseOha(json: string): LoadFigures {
  let o: {
    summary?: { requestsPerSec?: number }
    latencyPercentiles?: { p50?: number | null; p99?: number | null }
    statusCodeDistribution?: Record<string, number>
    errorDistribution?: Record<string, number>
  }
  try {
    o = JSON.parse(json)
  } catch {
    throw new PipelineError('oha: its output is not JSON')
  }
  const statuses = Object.entries(o.statusCodeDistribution ?? {})
  const ok = statuses.filter(([code]) => code.startsWith('2')).reduce((n, [, c]) => n + c, 0)
  const notOk = statuses.filter(([code]) => !code.startsWith('2')).reduce((n, [, c]) => n + c, 0)
  const failed = Object.values(o.errorDistribution ?? {}).reduce((n, c) => n + c, 0)
  const ms = (s: number | null | undefined) => Math.round((s ?? 0) * 1000 * 1000) / 1000
  if (typeof o.summary?.requestsPerSec !== 'number' || (ok + notOk > 0 && typeof o.latencyPercentiles?.p99 !== 'number')) {
    throw new PipelineError('oha: its JSON report has no summary.requestsPerSec or p50/p99 latency')
  }
  return {
    requests: ok + notOk + failed,
    ok,
    errors: notOk + failed,
    rps: Math.round(o.summary.requestsPerSec),
    p50Ms: ms(o.latencyPercentiles?.p50),
    p99Ms: ms(o.latencyPercentiles?.p99),
  }
}

/** The median of each figure over several runs (request and error counts are summed): one run on a shared machine is noise. */
export function medianFigures(runs: readonly LoadFigures[]): LoadFigures {
  if (runs.length === 0) throw new PipelineError('bench-server: no runs to summarise')
  const med = (pick: (f: LoadFigures) => number) => median(runs.map(pick))
  const sum = (pick: (f: LoadFigures) => number) => runs.reduce((n, f) => n + pick(f), 0)
  return { requests: sum((f) => f.requests), ok: sum((f) => f.ok), errors: sum((f) => f.errors), rps: med((f) => f.rps), p50Ms: med((f) => f.p50Ms), p99Ms: med((f) => f.p99Ms) }
}

/** One bounded oha run (a fixed request count, a per-request timeout, loopback only). */
export async function runOha(oha: string, url: string, opts: { requests: number; concurrency: number }): Promise<LoadFigures> {
  if (!/^http:\/\/(127\.\d+\.\d+\.\d+|\[::1\])[:/]/.test(url)) throw new PipelineError(`oha: ${url} is not a loopback address`)
  const r = await run([oha, '--no-tui', '--output-format', 'json', '-n', String(opts.requests), '-c', String(opts.concurrency), '-t', '10s', url], { timeoutMs: 5 * 60_000 })
  return parseOha(r.stdout)
}
