import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { sleep, waitFor } from '../lib/core/wait.ts'

const t = suite('wait')

t('returns the first value the check gives, after as many polls as it took', async () => {
  let calls = 0
  const v = await waitFor(() => (++calls === 3 ? 'ready' : undefined), { timeoutMs: 5000, intervalMs: 5, onTimeout: () => new Error('never') })
  assert.is(v, 'ready')
  assert.is(calls, 3)
})

t('at the deadline, the one-line error; a throwing check ends the wait at once', async () => {
  const started = performance.now()
  await waitFor(() => undefined, { timeoutMs: 50, intervalMs: 10, onTimeout: () => new Error('x never answered') }).then(
    () => assert.unreachable('a wait that never succeeds must fail'),
    (e: Error) => assert.is(e.message, 'x never answered'),
  )
  assert.ok(performance.now() - started >= 50, 'it waited until the deadline')
  let calls = 0
  const err = await waitFor(() => { calls++; throw new Error('crashed') }, { timeoutMs: 5000, intervalMs: 5, onTimeout: () => new Error('timeout') }).catch((e: Error) => e)
  assert.is((err as Error).message, 'crashed')
  assert.is(calls, 1)
})

t('sleep waits at least as long as asked', async () => {
  const started = performance.now()
  await sleep(30)
  assert.ok(performance.now() - started >= 29)
})

t.run()
