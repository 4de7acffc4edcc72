import * as assert from 'uvu/assert'

/** `fn` must throw the deploy stage's one-line refusal, matching `re`. */
export function refusal(fn: () => unknown, re: RegExp): void {
  try {
    fn()
    assert.unreachable('accepted')
  } catch (err) {
    const msg = (err as Error).message
    assert.match(msg, re)
    assert.match(msg, /^deploy: refused: /)
    assert.not.match(msg, /\n/, 'one line')
  }
}
