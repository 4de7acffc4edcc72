import { mkdirSync,readFileSync,rmSync,writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { processAlive } from './run.ts'
import { say } from './output.ts'
import { sleep } from './wait.ts'

/**
 * One build (or cluster start) at a time per directory: a test and a bootstrap
 * started together would otherwise delete each other's half-built binaries.
 * A lock whose owner has died is taken over.
 */
export async function withLock<T>(lock: string, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      mkdirSync(lock)
      break
    } catch {
      let owner = 0
      try {
        owner = Number(readFileSync(join(lock, 'pid'), 'utf8').trim())
      } catch {
        // Just taken (no pid written yet) or just released: look again shortly.
      }
      if (owner && !processAlive(owner)) {
        rmSync(lock, { recursive: true, force: true })
        continue
      }
      say(`waiting for another build (pid ${owner || '?'}) that holds ${lock}`)
      await sleep(5000)
    }
  }
  writeFileSync(join(lock, 'pid'), String(process.pid))
  try {
    return await fn()
  } finally {
    rmSync(lock, { recursive: true, force: true })
  }
}
