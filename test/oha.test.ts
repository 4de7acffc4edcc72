import { readFileSync } from 'node:fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { medianFigures, ohaArgs, parseOha } from '../bench/lib/oha.ts'

const t = suite('oha')

// oha 1.16.0 `--output-format json`, 2000 requests over 16 connections to the static binary on loopback.
const fixture = readFileSync(new URL('./fixtures/oha/static-2000.json', import.meta.url), 'utf8')

t("oha's real JSON report gives requests, 2xx, req/s and p50/p99 in ms", () => {
  const f = parseOha(fixture)
  assert.is(f.requests, 2000)
  assert.is(f.ok, 2000)
  assert.is(f.errors, 0)
  assert.is(f.rps, 39592)
  assert.is(f.p50Ms.toFixed(3), '0.347')
  assert.is(f.p99Ms.toFixed(3), '1.669')
})

t('a report without its figures, or not JSON, is one clear line', () => {
  assert.throws(() => parseOha('{"summary":{}}'), /^oha: its JSON report has no summary\.requestsPerSec or p50\/p99 latency$/)
  assert.throws(() => parseOha('Summary:\n  Success rate: 100%'), /^oha: its output is not JSON$/)
})

t('medians of several runs, figure by figure', () => {
  const f = parseOha(fixture)
  assert.is(
    medianFigures([
      { ...f, p99Ms: 1 },
      { ...f, p99Ms: 9 },
      { ...f, p99Ms: 2 },
    ]).p99Ms,
    2,
  )
})

t("a duration-bounded run's last requests, cut by its end, are not failures", () => {
  const timed = JSON.stringify({
    summary: { requestsPerSec: 20 },
    latencyPercentiles: { p50: 0.001, p99: 0.002 },
    statusCodeDistribution: { '200': 60 },
    errorDistribution: { 'aborted due to deadline': 1 },
  })
  assert.equal(parseOha(timed), { requests: 60, ok: 60, errors: 0, rps: 20, p50Ms: 1, p99Ms: 2 })
})

t('oha runs are bounded by a count or a duration, at a rate and on new connections when asked', () => {
  const url = 'http://127.0.0.1:9/health/live'
  assert.equal(ohaArgs(url, { requests: 100, concurrency: 4 }), [
    '--no-tui',
    '--output-format',
    'json',
    '-n',
    '100',
    '-c',
    '4',
    '-t',
    '10s',
    url,
  ])
  assert.equal(ohaArgs(url, { seconds: 6, concurrency: 1, perSecond: 20, newConnections: true }), [
    '--no-tui',
    '--output-format',
    'json',
    '-z',
    '6s',
    '-c',
    '1',
    '-q',
    '20',
    '--disable-keepalive',
    '-t',
    '10s',
    url,
  ])
  assert.throws(() => ohaArgs(url, { concurrency: 1 }), /a request count or a duration/)
  assert.throws(() => ohaArgs(url, { requests: 1, seconds: 1, concurrency: 1 }), /a request count or a duration/)
})

t.run()
