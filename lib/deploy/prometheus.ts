/**
 * Instant queries against a Prometheus HTTP API (`/api/v1/query`), one
 * number each. A Prometheus that does not answer, or answers an error, is
 * one line naming it (without any credentials its URL holds).
 */
import { PipelineError, firstLine } from '../core/errors.ts'
import { shownUrl } from './environments.ts'

interface QueryAnswer {
  status: 'success' | 'error'
  error?: string
  data?: { resultType: string; result: { value?: [number, string] }[] | [number, string] }
}

/**
 * The value of `promql` (a scalar, or a vector of at most one sample) at
 * `timeMs`; undefined when there is no sample or it is not a number (NaN:
 * a quantile of no observations).
 */
export async function queryNumber(url: string, promql: string, timeMs = Date.now(), timeoutMs = 10_000): Promise<number | undefined> {
  const u = new URL('api/v1/query', url.endsWith('/') ? url : `${url}/`)
  u.searchParams.set('query', promql)
  u.searchParams.set('time', (timeMs / 1000).toFixed(3))
  // fetch refuses a URL with credentials in it: they travel as basic auth instead, and never in a message.
  const headers: Record<string, string> = {}
  if (u.username || u.password)
    headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}`
  u.username = ''
  u.password = ''
  let res: Response
  try {
    res = await fetch(u, { headers, signal: AbortSignal.timeout(timeoutMs) })
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause
    throw new PipelineError(`Prometheus at ${shownUrl(url)} does not answer (${cause?.code ?? cause?.message ?? firstLine(err)})`)
  }
  const text = await res.text()
  let body: QueryAnswer
  try {
    body = JSON.parse(text) as QueryAnswer
  } catch {
    throw new PipelineError(`Prometheus at ${shownUrl(url)} answered ${res.status} without a query result (is it a Prometheus API?)`)
  }
  if (body.status !== 'success' || !body.data)
    throw new PipelineError(`Prometheus at ${shownUrl(url)} refused a query (${body.error ?? res.status}): ${promql}`)
  const result = body.data.result
  const raw =
    body.data.resultType === 'scalar' ? (result as [number, string])[1] : (result as { value?: [number, string] }[])[0]?.value?.[1]
  if (raw === undefined) return undefined
  const n = Number(raw)
  return Number.isFinite(n) ? n : undefined
}
