import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { PipelineError } from '../../lib/core/errors.ts'
import type { LoadFigures } from './oha.ts'
import { sleep, waitFor } from '../../lib/core/wait.ts'

/** Which of the server's listeners a run measured: the API, or probes and metrics. */
export type Port = 'public' | 'admin'

/** What `reports/bench-server.json` holds (plus when it was written). */
export interface ServerBench {
  oha: string
  /** `port` is `public` when absent (runs recorded before the admin port existed). */
  runs: { scenario: string; endpoint: string; port?: Port; figures: LoadFigures }[]
  /** Peak RSS (VmHWM) of the server in each scenario, in bytes. */
  peakRss: { scenario: string; bytes: number }[]
  slowHeaderConnections: number
  docTreeBytes: number
}

/** Figures a later run is compared with, and how much worse it may be before it is a regression. */
export interface ServerBaseline {
  runs: { scenario: string; endpoint: string; port?: Port; rps: number; p99Ms: number }[]
  peakRss: { scenario: string; bytes: number }[]
  tolerance: { rpsDropPct: number; p99Factor: number; p99SlackMs: number; rssGrowPct: number; rssSlackBytes: number }
}

/**
 * Load on a shared 2-core machine wobbles by tens of percent between runs;
 * only a change several times that size is a regression.
 */
export const DEFAULT_SERVER_TOLERANCE: ServerBaseline['tolerance'] = {
  rpsDropPct: 60,
  p99Factor: 4,
  p99SlackMs: 5,
  rssGrowPct: 50,
  rssSlackBytes: 8 * 1024 * 1024,
}

/**
 * The targets: slow-header clients may raise p99 only a few times, RSS stays under the dev pod's
 * limit, and the admin port answers probes fast whatever the public port suffers (a flood of its
 * connections, searches saturating the CPU).
 */
export const SERVER_TARGETS = {
  slowP99Factor: 5,
  slowP99SlackMs: 5,
  devPodMemoryBytes: 64 * 1024 * 1024,
  adminP99Ms: { flood: 100, 'search-saturation': 50 } as Record<string, number>,
} as const

/**
 * The memory a pod needs, as the README states it from the `memory-at-limit` scenario:
 * DOCS_MAX_BYTES + 4 MiB + MAX_CONNECTIONS x (MAX_HEADER_BYTES + 8 KiB).
 */
export function memoryFormulaBytes(docsMaxBytes = 32 * 1024 * 1024, maxConnections = 256, maxHeaderBytes = 16 * 1024): number {
  return docsMaxBytes + 4 * 1024 * 1024 + maxConnections * (maxHeaderBytes + 8 * 1024)
}

/** Regressions against the baseline, one clear line each; scenarios missing from either side are skipped. */
export function compareServerBaseline(b: ServerBench, base: ServerBaseline): string[] {
  const out: string[] = []
  const t = base.tolerance
  for (const was of base.runs) {
    const now = b.runs.find(
      (r) => r.scenario === was.scenario && r.endpoint === was.endpoint && (r.port ?? 'public') === (was.port ?? 'public'),
    )?.figures
    if (!now) continue
    const name = `${was.port === 'admin' ? 'admin ' : ''}${was.endpoint} (${was.scenario})`
    if (now.rps < was.rps * (1 - t.rpsDropPct / 100))
      out.push(`${name}: throughput fell to ${now.rps} req/s from ${was.rps} (tolerance ${t.rpsDropPct}%)`)
    if (now.p99Ms > was.p99Ms * t.p99Factor && now.p99Ms > was.p99Ms + t.p99SlackMs)
      out.push(`${name}: p99 rose to ${now.p99Ms} ms from ${was.p99Ms} ms (tolerance ${t.p99Factor}x and ${t.p99SlackMs} ms)`)
  }
  for (const was of base.peakRss) {
    const now = b.peakRss.find((r) => r.scenario === was.scenario)?.bytes
    if (now === undefined) continue
    if (now > was.bytes * (1 + t.rssGrowPct / 100) && now > was.bytes + t.rssSlackBytes)
      out.push(
        `peak RSS (${was.scenario}) grew to ${mib(now)} from ${mib(was.bytes)} (tolerance ${t.rssGrowPct}% and ${mib(t.rssSlackBytes)})`,
      )
  }
  return out
}

/** Where the run misses the targets, one line each. */
export function checkServerTargets(b: ServerBench): string[] {
  const out: string[] = []
  for (const r of b.runs.filter((x) => x.scenario === 'slow-headers')) {
    const calm = b.runs.find((x) => x.scenario === 'calm' && x.endpoint === r.endpoint)?.figures
    if (
      calm &&
      r.figures.p99Ms > calm.p99Ms * SERVER_TARGETS.slowP99Factor &&
      r.figures.p99Ms > calm.p99Ms + SERVER_TARGETS.slowP99SlackMs
    ) {
      out.push(
        `${r.endpoint}: p99 with ${b.slowHeaderConnections} slow-header connections is ${r.figures.p99Ms} ms, over ${SERVER_TARGETS.slowP99Factor}x the calm ${calm.p99Ms} ms`,
      )
    }
  }
  for (const r of b.runs) {
    // Under attack the public port is meant to refuse connections and searches to be turned away:
    // there only the admin port's answers count.
    const attacked = r.scenario in SERVER_TARGETS.adminP99Ms
    if (r.figures.errors > 0 && (!attacked || r.port === 'admin'))
      out.push(
        `${r.port === 'admin' ? 'admin ' : ''}${r.endpoint} (${r.scenario}): ${r.figures.errors} of ${r.figures.requests} requests failed`,
      )
    const target = SERVER_TARGETS.adminP99Ms[r.scenario]
    if (r.port === 'admin' && target !== undefined && r.figures.p99Ms > target)
      out.push(`admin ${r.endpoint} (${r.scenario}): p99 ${r.figures.p99Ms} ms, over the ${target} ms target`)
  }
  const slowRss = b.peakRss.find((r) => r.scenario === 'slow-headers')?.bytes
  if (slowRss !== undefined && slowRss >= SERVER_TARGETS.devPodMemoryBytes)
    out.push(`peak RSS with slow-header connections is ${mib(slowRss)}, not under the dev pod's ${mib(SERVER_TARGETS.devPodMemoryBytes)}`)
  for (const r of b.peakRss.filter((x) => x.scenario.startsWith('memory-at-limit'))) {
    if (r.bytes > memoryFormulaBytes())
      out.push(`peak RSS (${r.scenario}) is ${mib(r.bytes)}, over the README's formula (${mib(memoryFormulaBytes())})`)
  }
  return out
}

export function serverBaselineFrom(b: ServerBench, tolerance = DEFAULT_SERVER_TOLERANCE): ServerBaseline {
  return {
    runs: b.runs.map((r) => ({
      scenario: r.scenario,
      endpoint: r.endpoint,
      ...(r.port ? { port: r.port } : {}),
      rps: r.figures.rps,
      p99Ms: r.figures.p99Ms,
    })),
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
 * Documents that take just under the default DOCS_MAX_BYTES (32 MiB) in the server's memory, text
 * and prepared answers together, with the largest answer possible: four documents of 1 MiB of a
 * control character (JSON writes each as six bytes: 7 MiB each held) and two of plain text.
 */
export function writeDocsAtLimit(dir: string): void {
  mkdirSync(dir, { recursive: true })
  for (let i = 0; i < 4; i++) writeFileSync(join(dir, `ctl-${i}.md`), '\u0001'.repeat(1024 * 1024))
  const words = ['lorem', 'ipsum', 'dolor', 'sit', 'amet', 'consectetur', 'adipiscing', 'elit']
  for (let i = 0; i < 2; i++) {
    const lines = [`# Plain ${i}`, '']
    for (let j = 0, n = 0; n < 960_000; j++) {
      const line = `line ${j} ${words.map((_, k) => words[(j + k) % words.length]).join(' ')}`
      lines.push(line)
      n += line.length + 1
    }
    writeFileSync(join(dir, `plain-${i}.md`), lines.join('\n'))
  }
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
  /** The API (PORT). */
  base: string
  port: number
  /** Probes and metrics (ADMIN_PORT). */
  adminBase: string
  stderr: () => string
  stop: () => Promise<number | null>
}

/** Starts the release binary on 127.0.0.1 with `env` and waits until its admin port says ready. */
export async function startServer(bin: string, docsDir: string, env: Record<string, string> = {}): Promise<RunningServer> {
  const port = await freePort()
  let adminPort = await freePort()
  while (adminPort === port) adminPort = await freePort()
  let log = ''
  const proc = spawn(bin, [], {
    env: {
      PATH: process.env.PATH ?? '',
      ...env,
      PORT: String(port),
      ADMIN_PORT: String(adminPort),
      BIND_ADDR: '127.0.0.1',
      DOCS_DIR: docsDir,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  proc.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-8000)))
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  const base = `http://127.0.0.1:${port}`
  const adminBase = `http://127.0.0.1:${adminPort}`
  const stop = async () => {
    if (proc.exitCode === null) proc.kill('SIGTERM')
    return await exited
  }
  await waitFor(
    async () => {
      if (proc.exitCode !== null)
        throw new PipelineError(`bench-server: doc-server exited ${proc.exitCode} at start: ${log.trim().split('\n').at(-1) ?? ''}`)
      return (
        (await fetch(`${adminBase}/health/ready`, { signal: AbortSignal.timeout(1000) }).then(
          (r) => r.ok,
          () => false,
        )) || undefined
      )
    },
    {
      timeoutMs: 30_000,
      intervalMs: 20,
      onTimeout: async () => (
        await stop(),
        new PipelineError(`bench-server: doc-server (admin port ${adminPort}) was not ready within 30 s`)
      ),
    },
  )
  return { proc, base, port, adminBase, stderr: () => log, stop }
}

/** Runs `fn` against a server started with `env`, then stops it with SIGTERM; an exit other than 0 is an error. */
export async function withServer(
  bin: string,
  docs: string,
  env: Record<string, string>,
  fn: (s: RunningServer) => Promise<void>,
): Promise<void> {
  const server = await startServer(bin, docs, env)
  try {
    await fn(server)
  } finally {
    const code = await server.stop()
    if (code !== 0)
      throw new PipelineError(`bench-server: doc-server exited ${code} on SIGTERM: ${server.stderr().trim().split('\n').at(-1) ?? ''}`)
  }
}

/** `fn` run `n` times, one after the other. */
export async function sequence<T>(n: number, fn: () => Promise<T>): Promise<T[]> {
  const out: T[] = []
  for (let i = 0; i < n; i++) out.push(await fn())
  return out
}

/** A server's peak RSS a second after `open` has opened its connections, what its documents hold, and how many stayed open. */
export async function peakRssWhile(
  bin: string,
  docs: string,
  env: Record<string, string>,
  open: (s: RunningServer) => Promise<OpenSockets>,
): Promise<{ bytes: number; held: string; connections: number }> {
  let out = { bytes: 0, held: '?', connections: 0 }
  await withServer(bin, docs, env, async (server) => {
    const sockets = await open(server)
    try {
      await sleep(1000)
      out = { bytes: peakRssBytes(server.proc.pid!), held: heldByDocs(server.stderr()) ?? '?', connections: sockets.open() }
    } finally {
      sockets.close()
    }
  })
  return out
}

/** What the server's start-up line says its documents take in memory, e.g. `31.7 MiB`. */
export function heldByDocs(stderr: string): string | undefined {
  return /\(([\d.]+ MiB) held with their answers\)/.exec(stderr)?.[1]
}

/** Sockets opened against one port, all closed by `close()`. */
export interface OpenSockets {
  open: () => number
  close: () => void
}

function socketsOf(sockets: Socket[], timers: NodeJS.Timeout[] = []): OpenSockets {
  return {
    open: () => sockets.filter((s) => !s.destroyed).length,
    close: () => {
      for (const t of timers) clearInterval(t)
      for (const s of sockets) s.destroy()
    },
  }
}

/** Connects and sends `request`; resolves once `until` has seen the first answer bytes (or at once without it). */
function openOne(port: number, request: string, sockets: Socket[], awaitAnswer: boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write(request)
      if (!awaitAnswer) resolve()
    })
    sockets.push(s)
    s.once('data', () => {
      // Stop reading: the rest of the answer stays with the server.
      s.pause()
      resolve()
    })
    s.on('error', (err) => reject(err))
  })
}

/**
 * `count` connections that each ask for `path` and then stop reading after the first bytes of the
 * answer: slow readers, holding their answer in the server until the request timeout.
 */
export async function openSlowReaders(port: number, path: string, count: number): Promise<OpenSockets> {
  const sockets: Socket[] = []
  for (let i = 0; i < count; i++) await openOne(port, `GET ${path} HTTP/1.1\r\nHost: bench\r\n\r\n`, sockets, true)
  return socketsOf(sockets)
}

/** `count` connections that each send a request head of `bytes` bytes but never its end. */
export async function openFullHeads(port: number, count: number, bytes: number): Promise<OpenSockets> {
  const sockets: Socket[] = []
  const head = `GET /api/docs HTTP/1.1\r\nHost: bench\r\nX-Pad: ${'a'.repeat(bytes)}`
  for (let i = 0; i < count; i++) await openOne(port, head, sockets, false)
  return socketsOf(sockets)
}

/**
 * The attack on the public port: `idle` keep-alive connections that made one request and stay open,
 * `halfSent` connections that never finish their head, and a new half-sent connection every
 * `everyMs` for as long as it runs (refused or not), as an attacker refilling freed slots would.
 */
export async function floodPublicPort(port: number, o: { idle: number; halfSent: number; everyMs: number }): Promise<OpenSockets> {
  const sockets: Socket[] = []
  const half = 'GET /api/docs HTTP/1.1\r\nHost: bench\r\nX-Slow: '
  for (let i = 0; i < o.idle; i++) await openOne(port, 'GET /health/live HTTP/1.1\r\nHost: bench\r\n\r\n', sockets, true)
  for (let i = 0; i < o.halfSent; i++) await openOne(port, half, sockets, false)
  const timer = setInterval(() => {
    const s = connect(port, '127.0.0.1', () => s.write(half))
    s.on('error', () => s.destroy())
    sockets.push(s)
  }, o.everyMs)
  return socketsOf(sockets, [timer])
}

/**
 * `count` connections to 127.0.0.1:`port` that send part of a request head
 * and then one more header byte a second, never finishing it: the
 * slow-header (slowloris) clients. `close()` ends them all.
 */
export async function openSlowHeaderClients(port: number, count: number): Promise<{ open: () => number; close: () => void }> {
  const sockets: Socket[] = []
  await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<void>((resolve, reject) => {
          const s = connect(port, '127.0.0.1', () => {
            s.write('GET /api/docs HTTP/1.1\r\nHost: bench\r\nX-Slow: ')
            resolve()
          })
          s.on('error', (err) => (sockets.includes(s) ? undefined : reject(err)))
          sockets.push(s)
        }),
    ),
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
