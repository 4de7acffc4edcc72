import { readFileSync } from 'node:fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { medianFigures, parseOha } from '../bench/lib/oha.ts'

const t = suite('oha')

// oha 1.16.0 `--output-format json`, 2000 requests over 16 connections to the static binary on loopback.
const fixture = readFileSync(new URL('./fixtures/oha/static-2000.json', import.meta.url), 'utf8')

t('oha\'s real JSON report gives requests, 2xx, req/s and p50/p99 in ms', () => {
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
  assert.is(medianFigures([{ ...f, p99Ms: 1 }, { ...f, p99Ms: 9 }, { ...f, p99Ms: 2 }]).p99Ms, 2)
})

t.run()
