/**
 * `npm run bench:server`: the release Doc Server under load, on loopback
 * only. oha (pinned, built from crates.io once per machine) measures
 * throughput and p50/p99 (median of 3 runs of 20,000 requests) for one
 * document and for a search, first on a calm
 * server, then while 200 slow-header connections are open; then the admin
 * port's probes beside the public port's while the public port is flooded
 * and while 16 searches saturate the CPU; then the peak RSS with a 50 MB
 * doc tree and with documents at DOCS_MAX_BYTES read by 256 slow readers.
 * Figures go to `reports/bench-server.json` and the log; a clear regression
 * against `.ci/bench-server-baseline.json` (or a missed target) fails the
 * run. `--update-baseline` writes the baseline from this run instead.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import {
  checkServerTargets,
  compareServerBaseline,
  floodPublicPort,
  mib,
  openFullHeads,
  openSlowHeaderClients,
  openSlowReaders,
  peakRssBytes,
  peakRssWhile,
  readServerBaseline,
  sequence,
  serverBaselineFrom,
  withServer,
  writeDocTree,
  writeDocsAtLimit,
  type Port,
  type RunningServer,
  type ServerBench,
} from './lib/server.ts'
import { medianFigures, probesDuring, runOha, type LoadFigures } from './lib/oha.ts'
import { isMain, parseOptions } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { markdownTable } from '../lib/core/summary.ts'
import { requireTool } from '../lib/tools/which.ts'
import { run } from '../lib/core/run.ts'
import { VERSIONS } from '../lib/tools/versions.ts'
import { defineStage, runStage } from '../lib/core/stage.ts'
import { ensureCargoTool } from '../lib/tools/cargo.ts'
import { say } from '../lib/core/output.ts'
import { sleep } from '../lib/core/wait.ts'

interface Ctx {
  config: Config
  oha: string
  bin: string
  bench: ServerBench
}

const DOCS = join(repoRoot, 'crates', 'doc-server', 'docs')
const BASELINE = join(repoRoot, '.ci', 'bench-server-baseline.json')
const SLOW_CLIENTS = 200
const TREE_BYTES = 50 * 1000 * 1000
const LOAD = { requests: 20_000, concurrency: 16 }
/** Each figure is the median of this many runs, after one warm-up run. */
const REPEATS = 3
const ENDPOINTS = ['/api/docs/getting-started', '/api/search?q=health']
/** Long enough that the slow-header clients outlive the measurement: their cost is what is measured. */
const SERVER_ENV = { HEADER_READ_TIMEOUT_SECS: '120' }
/** Every public slot (MAX_CONNECTIONS 256) taken, and new connections arriving 50 times a second. */
const FLOOD = { idle: 200, halfSent: 56, everyMs: 20 }
const PROBE_SECONDS = 6
/** Not in any document and not ASCII: every search reads the whole tree on its slowest path. */
const HARD_SEARCH = '/api/search?q=%C3%BCberpr%C3%BCfung'

function record(ctx: Ctx, scenario: string, endpoint: string, port: Port, figures: LoadFigures): string {
  ctx.bench.runs.push({ scenario, endpoint, port, figures })
  return `${port} ${endpoint}: p50 ${figures.p50Ms} ms, p99 ${figures.p99Ms} ms, ${figures.ok} ok, ${figures.errors} failed`
}

async function measure(ctx: Ctx, server: RunningServer, scenario: string): Promise<void> {
  for (const endpoint of ENDPOINTS) {
    const url = `${server.base}${endpoint}`
    await runOha(ctx.oha, url, { ...LOAD, requests: 2_000 })
    const figures = medianFigures(await sequence(REPEATS, () => runOha(ctx.oha, url, LOAD)))
    ctx.bench.runs.push({ scenario, endpoint, port: 'public', figures })
    say(`${endpoint}: ${figures.rps} req/s, p50 ${figures.p50Ms} ms, p99 ${figures.p99Ms} ms, ${figures.errors} errors`)
  }
  ctx.bench.peakRss.push({ scenario, bytes: peakRssBytes(server.proc.pid!) })
}

export function benchServerTasks(argv: readonly string[]): ListrTask<Ctx>[] {
  const updateBaseline = parseOptions('bench:server', argv, { 'update-baseline': { type: 'boolean' } }).values['update-baseline'] ?? false
  return [
    {
      title: `oha ${VERSIONS.oha} and the release binary`,
      task: async (ctx) => {
        ctx.config = loadConfig()
        ctx.oha = await ensureCargoTool(ctx.config.cacheDir, 'oha', VERSIONS.oha)
        await run([requireTool('cargo'), 'build', '--release', '--locked', '-p', 'doc-server'], { cwd: repoRoot })
        ctx.bin = join(repoRoot, 'target', 'release', 'doc-server')
        ctx.bench.oha = VERSIONS.oha
      },
    },
    {
      title: `calm, then with ${SLOW_CLIENTS} slow-header connections open`,
      task: async (ctx) => {
        await withServer(ctx.bin, DOCS, SERVER_ENV, async (server) => {
          await measure(ctx, server, 'calm')
          const slow = await openSlowHeaderClients(server.port, SLOW_CLIENTS)
          try {
            await sleep(500)
            await measure(ctx, server, 'slow-headers')
            if (slow.open() < SLOW_CLIENTS)
              throw new PipelineError(
                `bench-server: only ${slow.open()} of ${SLOW_CLIENTS} slow-header connections stayed open; the measurement does not show their cost`,
              )
          } finally {
            slow.close()
          }
        })
      },
    },
    {
      title: `flood of the public port (${FLOOD.idle} idle keep-alive, ${FLOOD.halfSent} half-sent heads, 50 new a second): probes on both ports`,
      task: async (ctx, task) => {
        await withServer(ctx.bin, DOCS, {}, async (server) => {
          const flood = await floodPublicPort(server.port, FLOOD)
          try {
            const { probes } = await probesDuring(ctx.oha, [`${server.adminBase}/health/live`, `${server.base}/health/live`], PROBE_SECONDS)
            task.output = [
              record(ctx, 'flood', '/health/live', 'admin', probes[0]!),
              record(ctx, 'flood', '/health/live', 'public', probes[1]!),
            ].join('; ')
          } finally {
            flood.close()
          }
        })
      },
    },
    {
      title: `a ${TREE_BYTES / 1e6} MB doc tree: peak RSS, then 16 searches saturating the CPU beside probes on both ports`,
      task: async (ctx, task) => {
        const dir = mkdtempSync(join(tmpdir(), 'bench-server-docs-'))
        try {
          ctx.bench.docTreeBytes = writeDocTree(dir, TREE_BYTES)
          // Held twice (text and prepared answers): about 100 MB.
          const env = { ...SERVER_ENV, DOCS_MAX_BYTES: String(128 * 1024 * 1024) }
          await withServer(ctx.bin, dir, env, async (server) => {
            ctx.bench.peakRss.push({ scenario: 'doc-tree-50MB-loaded', bytes: peakRssBytes(server.proc.pid!) })
            await runOha(ctx.oha, `${server.base}/api/docs/doc-000`, { requests: 400, concurrency: 8 })
            await runOha(ctx.oha, `${server.base}/api/search?q=rollout%20memory`, { requests: 40, concurrency: 4 })
            ctx.bench.peakRss.push({ scenario: 'doc-tree-50MB-under-load', bytes: peakRssBytes(server.proc.pid!) })
            const { probes, load } = await probesDuring(
              ctx.oha,
              [`${server.adminBase}/health/live`, `${server.base}/health/live`],
              PROBE_SECONDS,
              () => runOha(ctx.oha, `${server.base}${HARD_SEARCH}`, { seconds: PROBE_SECONDS + 2, concurrency: 16 }),
            )
            task.output = [
              record(ctx, 'search-saturation', '/health/live', 'admin', probes[0]!),
              record(ctx, 'search-saturation', '/health/live', 'public', probes[1]!),
              record(ctx, 'search-saturation', HARD_SEARCH, 'public', load!),
            ].join('; ')
          })
        } finally {
          rmSync(dir, { recursive: true, force: true })
        }
      },
    },
    {
      title: 'documents at DOCS_MAX_BYTES: peak RSS with 256 slow readers of the largest answer, then 256 full request heads',
      task: async (ctx, task) => {
        const dir = mkdtempSync(join(tmpdir(), 'bench-server-limit-'))
        try {
          writeDocsAtLimit(dir)
          for (const [scenario, open] of [
            ['memory-at-limit-slow-readers', (s: RunningServer) => openSlowReaders(s.port, '/api/docs/ctl-0', 256)],
            ['memory-at-limit-full-heads', (s: RunningServer) => openFullHeads(s.port, 256, 16_000)],
          ] as const) {
            const peak = await peakRssWhile(ctx.bin, dir, SERVER_ENV, open)
            ctx.bench.peakRss.push({ scenario, bytes: peak.bytes })
            task.output = `${scenario}: documents hold ${peak.held}, peak RSS ${mib(peak.bytes)} with ${peak.connections} connections`
          }
        } finally {
          rmSync(dir, { recursive: true, force: true })
        }
      },
    },
    {
      title: 'Results',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: (ctx, task) => {
        const b = ctx.bench
        const rows = b.runs.map((r) => [
          r.scenario,
          r.port ?? 'public',
          r.endpoint,
          r.figures.rps,
          r.figures.p50Ms,
          r.figures.p99Ms,
          r.figures.errors,
        ])
        const rss = b.peakRss.map((r) => [r.scenario, mib(r.bytes)])
        task.output = `${markdownTable(['scenario', 'port', 'endpoint', 'req/s', 'p50 ms', 'p99 ms', 'errors'], rows)}\n\n${markdownTable(['scenario', 'peak RSS'], rss)}`
        mkdirSync(ctx.config.reportsDir, { recursive: true })
        writeFileSync(
          join(ctx.config.reportsDir, 'bench-server.json'),
          `${JSON.stringify({ writtenAt: new Date().toISOString(), ...b }, null, 2)}\n`,
        )
        if (updateBaseline) {
          writeFileSync(BASELINE, `${JSON.stringify(serverBaselineFrom(b), null, 2)}\n`)
          return
        }
        const base = readServerBaseline(BASELINE)
        const problems = [...checkServerTargets(b), ...(base ? compareServerBaseline(b, base) : [])]
        if (problems.length > 0) throw new PipelineError(`bench-server: ${problems.join('; ')}`)
      },
    },
  ]
}

export const stage = defineStage<Ctx>({
  name: 'bench-server',
  tasks: benchServerTasks,
  initialCtx: () => ({ bench: { oha: '', runs: [], peakRss: [], slowHeaderConnections: SLOW_CLIENTS, docTreeBytes: 0 } }) as unknown as Ctx,
})

if (isMain(import.meta.url)) await runStage(stage)
