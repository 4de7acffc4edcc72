/**
 * `npm run bench:server`: the release Doc Server under load, on loopback
 * only. oha (pinned, built from crates.io once per machine) measures
 * throughput and p50/p99 (median of 3 runs of 20,000 requests) for one
 * document and for a search, first on a calm
 * server, then while 200 slow-header connections are open; then the peak
 * RSS with a 50 MB doc tree. Figures go to `reports/bench-server.json` and
 * the log; a clear regression against `.ci/bench-server-baseline.json`
 * (or a missed target) fails the run. `--update-baseline` writes the
 * baseline from this run instead.
 */
import { mkdirSync,mkdtempSync,rmSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { checkServerTargets,compareServerBaseline,mib,openSlowHeaderClients,peakRssBytes,readServerBaseline,serverBaselineFrom,startServer,writeDocTree,type RunningServer,type ServerBench } from './lib/server.ts'
import { medianFigures,runOha } from './lib/oha.ts'
import { isMain,parseOptions } from '../lib/core/cli.ts'
import { loadConfig,type Config } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { markdownTable } from '../lib/core/summary.ts'
import { requireTool } from '../lib/tools/which.ts'
import { run } from '../lib/core/run.ts'
import { VERSIONS } from '../lib/tools/versions.ts'
import { defineStage,runStage } from '../lib/core/stage.ts'
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

async function measure(ctx: Ctx, server: RunningServer, scenario: string): Promise<void> {
  for (const endpoint of ENDPOINTS) {
    const url = `${server.base}${endpoint}`
    await runOha(ctx.oha, url, { ...LOAD, requests: 2_000 })
    const figures = medianFigures(await sequence(REPEATS, () => runOha(ctx.oha, url, LOAD)))
    ctx.bench.runs.push({ scenario, endpoint, figures })
    say(`${endpoint}: ${figures.rps} req/s, p50 ${figures.p50Ms} ms, p99 ${figures.p99Ms} ms, ${figures.errors} errors`)
  }
  ctx.bench.peakRss.push({ scenario, bytes: peakRssBytes(server.proc.pid!) })
}

async function sequence<T>(n: number, fn: () => Promise<T>): Promise<T[]> {
  const out: T[] = []
  for (let i = 0; i < n; i++) out.push(await fn())
  return out
}

async function withServer(ctx: Ctx, docs: string, env: Record<string, string>, fn: (s: RunningServer) => Promise<void>): Promise<void> {
  const server = await startServer(ctx.bin, docs, env)
  try {
    await fn(server)
  } finally {
    const code = await server.stop()
    if (code !== 0) throw new PipelineError(`bench-server: doc-server exited ${code} on SIGTERM: ${server.stderr().trim().split('\n').at(-1) ?? ''}`)
  }
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
        await withServer(ctx, DOCS, SERVER_ENV, async (server) => {
          await measure(ctx, server, 'calm')
          const slow = await openSlowHeaderClients(server.port, SLOW_CLIENTS)
          try {
            await sleep(500)
            await measure(ctx, server, 'slow-headers')
            if (slow.open() < SLOW_CLIENTS) throw new PipelineError(`bench-server: only ${slow.open()} of ${SLOW_CLIENTS} slow-header connections stayed open; the measurement does not show their cost`)
          } finally {
            slow.close()
          }
        })
      },
    },
    {
      title: `peak RSS with a ${TREE_BYTES / 1e6} MB doc tree`,
      task: async (ctx, task) => {
        const dir = mkdtempSync(join(tmpdir(), 'bench-server-docs-'))
        try {
          ctx.bench.docTreeBytes = writeDocTree(dir, TREE_BYTES)
          const env = { ...SERVER_ENV, DOCS_MAX_BYTES: String(64 * 1024 * 1024) }
          await withServer(ctx, dir, env, async (server) => {
            ctx.bench.peakRss.push({ scenario: 'doc-tree-50MB-loaded', bytes: peakRssBytes(server.proc.pid!) })
            await runOha(ctx.oha, `${server.base}/api/docs/doc-000`, { requests: 400, concurrency: 8 })
            await runOha(ctx.oha, `${server.base}/api/search?q=rollout%20memory`, { requests: 40, concurrency: 4 })
            ctx.bench.peakRss.push({ scenario: 'doc-tree-50MB-under-load', bytes: peakRssBytes(server.proc.pid!) })
            task.output = `loaded ${mib(ctx.bench.peakRss.at(-2)!.bytes)}, under load ${mib(ctx.bench.peakRss.at(-1)!.bytes)}`
          })
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
        const rows = b.runs.map((r) => [r.scenario, r.endpoint, r.figures.rps, r.figures.p50Ms, r.figures.p99Ms, r.figures.errors])
        const rss = b.peakRss.map((r) => [r.scenario, mib(r.bytes)])
        task.output = `${markdownTable(['scenario', 'endpoint', 'req/s', 'p50 ms', 'p99 ms', 'errors'], rows)}\n\n${markdownTable(['scenario', 'peak RSS'], rss)}`
        mkdirSync(ctx.config.reportsDir, { recursive: true })
        writeFileSync(join(ctx.config.reportsDir, 'bench-server.json'), `${JSON.stringify({ writtenAt: new Date().toISOString(), ...b }, null, 2)}\n`)
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
