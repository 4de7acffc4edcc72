/**
 * A bounded HTTP load generator for the local cluster: capped in requests and
 * in time, it stops by itself. Each request opens its own connection, so
 * kube-proxy picks a backend per request as it would for new clients. It only
 * ever sends to loopback or to an address inside the local cluster's own pod
 * and service ranges, and the caller must have checked that kube-proxy
 * programmed the address (see serviceProgrammed).
 */
import { request } from 'node:http'
import { PipelineError } from '../../lib/core/errors.ts'
import { run } from '../../lib/core/run.ts'
import { percentile } from '../../lib/core/stats.ts'

export interface LoadOptions {
  host: string
  port: number
  path: string
  concurrency: number
  maxRequests: number
  maxSeconds: number
  /** Ends the load early (e.g. once the rollout is done); the caps still hold. */
  signal?: AbortSignal
  timeoutMs?: number
}

export interface LoadResult {
  sent: number
  failed: number
  seconds: number
  p50Ms: number
  p99Ms: number
  /** The first few failures, as "status 503" or the socket error. */
  failures: string[]
}

/** The local cluster's service range (kube-apiserver's default) and the node's pod subnet. */
const LOCAL_RANGES: [number, number][] = [cidr('10.0.0.0/24'), cidr('10.88.0.0/16')]

function ipNumber(ip: string): number | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip)
  if (!m) return undefined
  return m.slice(1).reduce((n, o) => n * 256 + Number(o), 0)
}

function cidr(c: string): [number, number] {
  const [ip, bits] = c.split('/')
  const size = 2 ** (32 - Number(bits))
  const base = ipNumber(ip!)!
  return [base, base + size - 1]
}

/** Loopback, or an address of the local cluster's own service or pod range. */
export function isLocalTarget(host: string): boolean {
  if (host === '::1' || host === 'localhost') return true
  const n = ipNumber(host)
  if (n === undefined) return false
  if (n >>> 24 === 127) return true
  return LOCAL_RANGES.some(([lo, hi]) => n >= lo && n <= hi)
}

/** Whether kube-proxy has a NAT rule for this ClusterIP, so the traffic cannot leave the machine. */
export async function serviceProgrammed(clusterIp: string): Promise<boolean> {
  const r = await run(['iptables', '-w', '-t', 'nat', '-S', 'KUBE-SERVICES'], { okCodes: [1] })
  return r.exitCode === 0 && r.stdout.includes(`-d ${clusterIp}/32`)
}

function once(o: LoadOptions): Promise<{ ok: boolean; ms: number; why?: string }> {
  const started = performance.now()
  return new Promise((resolve) => {
    const req = request({ host: o.host, port: o.port, path: o.path, agent: false, timeout: o.timeoutMs ?? 10_000, headers: { connection: 'close' } }, (res) => {
      res.resume()
      res.on('end', () => {
        const ok = (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 400
        resolve({ ok, ms: performance.now() - started, ...(ok ? {} : { why: `status ${res.statusCode}` }) })
      })
      res.on('error', (err) => resolve({ ok: false, ms: performance.now() - started, why: err.message }))
    })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', (err) => resolve({ ok: false, ms: performance.now() - started, why: (err as NodeJS.ErrnoException).code ?? err.message }))
    req.end()
  })
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  if (!isLocalTarget(o.host)) throw new PipelineError(`load: ${o.host} is neither loopback nor an address of the local cluster; refusing to send traffic there`)
  if (o.maxRequests < 1 || o.maxSeconds <= 0 || o.concurrency < 1) throw new PipelineError('load: maxRequests, maxSeconds and concurrency must be positive')
  const deadline = performance.now() + o.maxSeconds * 1000
  const started = performance.now()
  const times: number[] = []
  const failures: string[] = []
  let sent = 0
  let failed = 0
  const worker = async () => {
    while (sent < o.maxRequests && performance.now() < deadline && !o.signal?.aborted) {
      sent++
      const r = await once(o)
      times.push(r.ms)
      if (!r.ok) {
        failed++
        if (failures.length < 5) failures.push(r.why ?? 'failed')
      }
    }
  }
  await Promise.all(Array.from({ length: o.concurrency }, worker))
  times.sort((a, b) => a - b)
  const round = (n: number) => Math.round(n * 10) / 10
  return { sent, failed, seconds: round((performance.now() - started) / 1000), p50Ms: round(percentile(times, 50)), p99Ms: round(percentile(times, 99)), failures }
}
