import { spawn,type ChildProcess } from 'node:child_process'
import { existsSync,mkdirSync,readFileSync,writeFileSync } from 'node:fs'
import { connect,createServer,type Socket } from 'node:net'
import { join } from 'node:path'
import { PipelineError } from '../../lib/core/errors.ts'
import { LoadFigures } from './oha.ts'
import { waitFor } from '../../lib/core/wait.ts'

/** What `reports/bench-server.json` holds (plus when it was written). */
export interface ServerBench {
  oha: string
  runs: { scenario: string; endpoint: string; figures: LoadFigures }[]
  /** Peak RSS (VmHWM) of the server in each scenario, in bytes. */
  peakRss: { scenario: string; bytes: number }[]
  slowHeaderConnections: number
  docTreeBytes: number
}

/** Figures a later run is compared with, and how much worse it may be before it is a regression. */
export interface ServerBaseline {
  runs: { scenario: string; endpoint: string; rps: number; p99Ms: number }[]
  peakRss: { scenario: string; bytes: number }[]
  tolerance: { rpsDropPct: number; p99Factor: number; p99SlackMs: number; rssGrowPct: number; rssSlackBytes: number }
}

/**
 * Load on a shared 2-core machine wobbles by tens of percent between runs;
 * only a change several times that size is a regression.
 */
export const DEFAULT_SERVER_TOLERANCE: ServerBaseline['tolerance'] = { rpsDropPct: 60, p99Factor: 4, p99SlackMs: 5, rssGrowPct: 50, rssSlackBytes: 8 * 1024 * 1024 }

/** The targets: slow-header clients may raise p99 only a few times, and RSS stays under the dev pod's limit. */
export const SERVER_TARGETS = { slowP99Factor: 5, slowP99SlackMs: 5, devPodMemoryBytes: 64 * 1024 * 1024 } as const

/** Regressions against the baseline, one clear line each; scenarios missing from either side are skipped. */
export function compareServerBaseline(b: ServerBench, base: ServerBaseline): string[] {
  const out: string[] = []
  const t = base.tolerance
  for (const was of base.runs) {
    const now = b.runs.find((r) => r.scenario === was.scenario && r.endpoint === was.endpoint)?.figures
    if (!now) continue
    const name = `${was.endpoint} (${was.scenario})`
    if (now.rps < was.rps * (1 - t.rpsDropPct / 100)) out.push(`${name}: throughput fell to ${now.rps} req/s from ${was.rps} (tolerance ${t.rpsDropPct}%)`)
    if (now.p99Ms > was.p99Ms * t.p99Factor && now.p99Ms > was.p99Ms + t.p99SlackMs) out.push(`${name}: p99 rose to ${now.p99Ms} ms from ${was.p99Ms} ms (tolerance ${t.p99Factor}x and ${t.p99SlackMs} ms)`)
  }
  for (const was of base.peakRss) {
    const now = b.peakRss.find((r) => r.scenario === was.scenario)?.bytes
    if (now === undefined) continue
    if (now > was.bytes * (1 + t.rssGrowPct / 100) && now > was.bytes + t.rssSlackBytes) out.push(`peak RSS (${was.scenario}) grew to ${mib(now)} from ${mib(was.bytes)} (tolerance ${t.rssGrowPct}% and ${mib(t.rssSlackBytes)})`)
  }
  return out
}

/** Where the run misses the targets, one line each. */
export function checkServerTargets(b: ServerBench): string[] {
  const out: string[] = []
  for (const r of b.runs.filter((x) => x.scenario === 'slow-headers')) {
    const calm = b.runs.find((x) => x.scenario === 'calm' && x.endpoint === r.endpoint)?.figures
    if (calm && r.figures.p99Ms > calm.p99Ms * SERVER_TARGETS.slowP99Factor && r.figures.p99Ms > calm.p99Ms + SERVER_TARGETS.slowP99SlackMs) {
      out.push(`${r.endpoint}: p99 with ${b.slowHeaderConnections} slow-header connections is ${r.figures.p99Ms} ms, over ${SERVER_TARGETS.slowP99Factor}x the calm ${calm.p99Ms} ms`)
    }
  }
  for (const r of b.runs) if (r.figures.errors > 0) out.push(`${r.endpoint} (${r.scenario}): ${r.figures.errors} of ${r.figures.requests} requests failed`)
  const slowRss = b.peakRss.find((r) => r.scenario === 'slow-headers')?.bytes
  if (slowRss !== undefined && slowRss >= SERVER_TARGETS.devPodMemoryBytes) out.push(`peak RSS with slow-header connections is ${mib(slowRss)}, not under the dev pod's ${mib(SERVER_TARGETS.devPodMemoryBytes)}`)
  return out
}

export function serverBaselineFrom(b: ServerBench, tolerance = DEFAULT_SERVER_TOLERANCE): ServerBaseline {
  return {
    runs: b.runs.map((r) => ({ scenario: r.scenario, endpoint: r.endpoint, rps: r.figures.rps, p99Ms: r.figures.p99Ms })),
    peakRss: b.peakRss,
    tolerance,
  }
}

export function readServerBaseline(path: string): ServerBaseline | undefined {
  if (!existsSync(path)) return undefined
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as ServerBaseline
  } catch {
    throw new PipelineError(`bench-server: ${path} is not valid JSON; fix it or write a new one with --update-baseline`)
  }
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

/** Peak resident memory (VmHWM) of a running process, in bytes. */
export function peakRssBytes(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new PipelineError(`bench-server: /proc/${pid}/status has no VmHWM line`)
  return Number(m[1]) * 1024
}

/**
 * A doc tree of about `totalBytes`: Markdown files of `fileBytes` each (under
 * the server's 1 MiB per-file limit), with a title and varied words so
 * searches scan real text. Returns the bytes written.
 */
export function writeDocTree(dir: string, totalBytes: number, fileBytes = 1_000_000): number {
  mkdirSync(dir, { recursive: true })
  const words = ['kubernetes', 'probe', 'drain', 'rollout', 'Latency', 'memory', 'search', 'Header', 'timeout', 'replica']
  let written = 0
  for (let i = 0; written < totalBytes; i++) {
    const lines = [`# Generated document ${i}`, '']
    let size = lines.join('\n').length
    for (let j = 0; size < fileBytes - 100; j++) {
      const line = `Line ${j}: ${words[(i + j) % words.length]} ${words[(i * 7 + j * 3) % words.length]} text for the load benchmark.`
      lines.push(line)
      size += line.length + 1
    }
    const body = `${lines.join('\n')}\n`
    writeFileSync(join(dir, `doc-${String(i).padStart(3, '0')}.md`), body)
    written += Buffer.byteLength(body)
  }
  return written
}

/** A free TCP port on 127.0.0.1 (asked from the kernel, then released). */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address()
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))))
    })
  })
}

export interface RunningServer {
  proc: ChildProcess
  base: string
  port: number
  stderr: () => string
  stop: () => Promise<number | null>
}

/** Starts the release binary on 127.0.0.1 with `env` and waits for /health/ready. */
export async function startServer(bin: string, docsDir: string, env: Record<string, string> = {}): Promise<RunningServer> {
  const port = await freePort()
  let log = ''
  const proc = spawn(bin, [], { env: { PATH: process.env.PATH ?? '', ...env, PORT: String(port), BIND_ADDR: '127.0.0.1', DOCS_DIR: docsDir }, stdio: ['ignore', 'ignore', 'pipe'] })
  proc.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-8000)))
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  const base = `http://127.0.0.1:${port}`
  const stop = async () => {
    if (proc.exitCode === null) proc.kill('SIGTERM')
    return await exited
  }
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new PipelineError(`bench-server: doc-server exited ${proc.exitCode} at start: ${log.trim().split('\n').at(-1) ?? ''}`)
      return (await fetch(`${base}/health/ready`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false)) || undefined
    },
    { timeoutMs: 10_000, intervalMs: 20, onTimeout: async () => (await stop(), new PipelineError(`bench-server: doc-server on port ${port} was not ready within 10 s`)) },
  )
  return { proc, base, port, stderr: () => log, stop }
}

/**
 * `count` connections to 127.0.0.1:`port` that send part of a request head
 * and then one more header byte a second, never finishing it: the
 * slow-header (slowloris) clients. `close()` ends them all.
 */
export async function openSlowHeaderClients(port: number, count: number): Promise<{ open: () => number; close: () => void }> {
  const sockets: Socket[] = []
  await Promise.all(
    Array.from({ length: count }, () => new Promise<void>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => {
        s.write('GET /api/docs HTTP/1.1\r\nHost: bench\r\nX-Slow: ')
        resolve()
      })
      s.on('error', (err) => (sockets.includes(s) ? undefined : reject(err)))
      sockets.push(s)
    })),
  )
  const timer = setInterval(() => {
    for (const s of sockets) if (!s.destroyed) s.write('a')
  }, 1000)
  return {
    open: () => sockets.filter((s) => !s.destroyed).length,
    close: () => {
      clearInterval(timer)
      for (const s of sockets) s.destroy()
    },
  }
}
