import { mkdtempSync,readdirSync,rmSync,statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { checkServerTargets,compareServerBaseline,peakRssBytes,serverBaselineFrom,writeDocTree,type ServerBench } from '../bench/lib/server.ts'
import { medianFigures,parseOha,runOha,type LoadFigures } from '../bench/lib/oha.ts'

const t = suite('bench-server')

/** The shape of oha 1.16's `--output-format json`, trimmed to what is read. */
const OHA_JSON = JSON.stringify({
  summary: { successRate: 1, total: 1.25, requestsPerSec: 15998.7 },
  latencyPercentiles: { p10: 0.0004, p50: 0.000812, p99: 0.0031459, 'p99.9': 0.005 },
  statusCodeDistribution: { '200': 19990, '503': 4 },
  errorDistribution: { 'connection closed before message completed': 6 },
})

const figures = (rps: number, p99Ms: number, errors = 0): LoadFigures => ({ requests: 1000, ok: 1000 - errors, errors, rps, p50Ms: p99Ms / 4, p99Ms })

const bench = (over: { rps?: number; p99?: number; slowP99?: number; rss?: number; slowRss?: number } = {}): ServerBench => ({
  oha: '1.16.0',
  runs: [
    { scenario: 'calm', endpoint: '/api/search?q=health', figures: figures(over.rps ?? 10_000, over.p99 ?? 2) },
    { scenario: 'slow-headers', endpoint: '/api/search?q=health', figures: figures(9_000, over.slowP99 ?? 3) },
  ],
  peakRss: [
    { scenario: 'slow-headers', bytes: over.slowRss ?? 12 * 1024 * 1024 },
    { scenario: 'doc-tree-50MB-loaded', bytes: over.rss ?? 60 * 1024 * 1024 },
  ],
  slowHeaderConnections: 200,
  docTreeBytes: 50_000_000,
})

t('oha JSON becomes milliseconds, throughput and error counts', () => {
  assert.equal(parseOha(OHA_JSON), { requests: 20_000, ok: 19_990, errors: 10, rps: 15_999, p50Ms: 0.812, p99Ms: 3.146 })
  assert.throws(() => parseOha('Summary:\n  Success rate: 100%'), /not JSON/)
})

t('several runs summarise as medians, counts as sums', () => {
  const m = medianFigures([figures(100, 9, 1), figures(300, 1), figures(200, 2)])
  assert.equal(m, { requests: 3000, ok: 2999, errors: 1, rps: 200, p50Ms: 0.5, p99Ms: 2 })
  assert.is(medianFigures([figures(100, 2), figures(200, 4)]).p99Ms, 3)
})

t('a run like the baseline passes; a clear slowdown or growth is flagged', () => {
  const base = serverBaselineFrom(bench())
  assert.equal(compareServerBaseline(bench({ rps: 7_000, p99: 5 }), base), [])
  const worse = compareServerBaseline(bench({ rps: 3_000, p99: 20, rss: 120 * 1024 * 1024 }), base)
  assert.is(worse.length, 3, worse.join('\n'))
  assert.match(worse[0]!, /throughput fell to 3000 req\/s from 10000/)
  assert.match(worse[1]!, /p99 rose to 20 ms from 2 ms/)
  assert.match(worse[2]!, /peak RSS \(doc-tree-50MB-loaded\) grew to 120.0 MiB from 60.0 MiB/)
})

t('targets: slow-header p99 within a few times calm, RSS under the dev pod limit, no errors', () => {
  assert.equal(checkServerTargets(bench()), [])
  const missed = checkServerTargets(bench({ slowP99: 40, slowRss: 70 * 1024 * 1024 }))
  assert.is(missed.length, 2, missed.join('\n'))
  assert.match(missed[0]!, /p99 with 200 slow-header connections is 40 ms/)
  assert.match(missed[1]!, /not under the dev pod's 64.0 MiB/)
  const b = bench()
  b.runs[0]!.figures.errors = 3
  assert.match(checkServerTargets(b).join('\n'), /3 of 1000 requests failed/)
})

t('the generated doc tree has the asked size in files under the 1 MiB limit', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-tree-'))
  try {
    const written = writeDocTree(dir, 3_000_000, 500_000)
    const files = readdirSync(dir)
    assert.ok(written >= 3_000_000 && written < 3_600_000, String(written))
    assert.is(files.reduce((n, f) => n + statSync(join(dir, f)).size, 0), written)
    for (const f of files) assert.ok(statSync(join(dir, f)).size <= 1024 * 1024, f)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

t('peak RSS is read from /proc', () => {
  const rss = peakRssBytes(process.pid)
  assert.ok(rss > 10 * 1024 * 1024 && rss < 4 * 1024 * 1024 * 1024, String(rss))
})

t('load is only ever sent to loopback', async () => {
  for (const url of ['http://10.0.0.1:8080/', 'http://example.com/', 'http://127.0.0.1.example.com/']) {
    await runOha('/bin/false', url, { requests: 1, concurrency: 1 }).then(
      () => assert.unreachable(url),
      (err: Error) => assert.match(err.message, /is not a loopback address/),
    )
  }
})

t.run()
