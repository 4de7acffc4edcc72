import { mkdtempSync, rmSync, appendFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { appendHistory, readHistory, sparkline, sustainedRegressions, trendRows, type HistoryEntry } from '../lib/build/history.ts'
import { DEFAULT_TOLERANCE, type Baseline } from '../lib/build/measure.ts'

const t = suite('history')
const baseline: Baseline = {
  image: { bytes: 3_000_000, compressedBytes: 1_500_000 },
  build: { warmSeconds: 10 },
  tolerance: DEFAULT_TOLERANCE,
}
const run = (warm: number, bytes = 3_000_000): HistoryEntry => ({
  commit: 'abcdef0123456789',
  date: '2026-11-27T03:00:00.000Z',
  imageBytes: bytes,
  compressedBytes: 1_500_000,
  warmSeconds: warm,
  coldSeconds: null,
  cookCacheHit: true,
})

t('one slow run among normal ones is noise, not a regression', () => {
  assert.equal(sustainedRegressions([run(10), run(11), run(9), run(10), run(60)], baseline), [])
})

t('a slowdown that persists over most of the window fails, naming the median', () => {
  const r = sustainedRegressions([run(10), run(10), run(30), run(31), run(29)], baseline)
  assert.equal(r, ["warm build slowed for 5 runs: median 29.0 s against the baseline's 10.0 s (tolerance 50% and 10 s)"])
})

t('too few runs are never called sustained', () => {
  assert.equal(sustainedRegressions([run(60), run(60)], baseline), [])
})

t('an image that stays bigger is a sustained regression too', () => {
  assert.match(
    sustainedRegressions([run(10, 4_000_000), run(10, 4_000_000), run(10, 4_000_000)], baseline)[0]!,
    /^image grew for 3 runs: median 4\.00 MB against the baseline's 3\.00 MB/,
  )
})

t('history is appended as JSON lines outside the clone; a torn line is skipped', () => {
  const dir = mkdtempSync(join(tmpdir(), 'history-'))
  try {
    const path = join(dir, 'measure', 'history.jsonl')
    appendHistory(path, run(10))
    appendFileSync(path, '{"commit":"torn')
    appendFileSync(path, '\n')
    appendHistory(path, { ...run(12), coldSeconds: 95.5 })
    const h = readHistory(path)
    assert.equal(
      h.map((e) => e.warmSeconds),
      [10, 12],
    )
    assert.equal(trendRows(h)[1], ['2026-11-27 03:00', 'abcdef01', '3.00 MB', '1.50 MB', '12.0 s', '95.5 s', 'hit'])
    assert.is(trendRows(h)[0]![5], 'reused')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

t('the sparkline runs from the lowest to the highest bar', () => {
  assert.is(sparkline([1, 5, 9]), '▁▅█')
  assert.is(sparkline([4, 4]), '▁▁')
})

t.run()
