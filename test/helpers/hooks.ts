/**
 * uvu swallows an error thrown by a suite's `before` hook: its runner returns
 * from a `finally` block, so the suite reports "0 / N" with no error and the
 * whole run exits 0. setUp registers the hook so that its error is printed,
 * naming the suite, and recorded; test/run.ts then fails the run
 * (failIfSetUpFailed).
 */
import type { Test } from 'uvu'

const store = globalThis as { __setUpFailures?: string[] }
const failures = (store.__setUpFailures ??= [])

export function setUp<T>(t: Test<T>, suiteName: string, fn: () => Promise<void> | void): void {
  t.before(async () => {
    try {
      await fn()
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err))
      failures.push(`${suiteName}: ${e.message.split('\n')[0]}`)
      console.error(`\n${suiteName}: set-up failed, so none of its tests ran:\n${e.stack ?? e.message}\n`)
      throw err
    }
  })
}

/** After every suite ran: a set-up that failed fails the run, one line each. */
export function failIfSetUpFailed(): void {
  if (failures.length === 0) return
  for (const f of failures) console.error(`test: set-up failed: ${f}`)
  process.exitCode = 1
}
