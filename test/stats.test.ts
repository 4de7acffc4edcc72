import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { median, percentile } from '../lib/core/stats.ts'

const t = suite('stats')

t('percentiles by nearest rank, medians of odd and even counts', () => {
  const v = Array.from({ length: 100 }, (_, i) => i + 1)
  assert.is(percentile(v, 50), 50)
  assert.is(percentile(v, 99), 99)
  assert.is(percentile([], 99), 0)
  assert.is(median([3, 1, 2]), 2)
  assert.is(median([4, 1, 3, 2]), 2.5)
  assert.is(median([]), 0)
})

t.run()
