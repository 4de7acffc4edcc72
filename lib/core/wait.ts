/** The one way the toolkit waits: a pause, and a bounded poll until something is so. */

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export interface WaitOptions {
  timeoutMs: number
  intervalMs: number
  /** The error for a wait that ran out (one line naming what never happened). */
  onTimeout: () => Error | Promise<Error>
}

/**
 * Polls `check` until it returns something other than undefined, and returns
 * that; at the deadline throws `onTimeout()`. `check` throws to end the wait
 * early with its own error (a crashed process, a refused request).
 */
export async function waitFor<T>(check: () => T | undefined | Promise<T | undefined>, o: WaitOptions): Promise<T> {
  const deadline = performance.now() + o.timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (performance.now() >= deadline) throw await o.onTimeout()
    await sleep(Math.min(o.intervalMs, Math.max(0, deadline - performance.now())))
  }
}
