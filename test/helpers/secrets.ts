import { readFileSync, readdirSync } from 'node:fs'
import { ANY_EXIT, run } from '../../lib/core/run.ts'

/** The forms a token takes at rest: as given, and base64 of `user:token` as docker's config.json stores it. */
function forms(token: string, user: string): string[] {
  return [token, Buffer.from(`${user}:${token}`).toString('base64'), Buffer.from(token).toString('base64')]
}

/** Every process whose environment holds `token`, as `pid command`. */
export function processesHolding(token: string): string[] {
  const found: string[] = []
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${pid}/environ`, 'latin1').includes(token)) {
        found.push(`${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim()}`)
      }
    } catch {
      // Gone already, or a kernel thread.
    }
  }
  return found
}

/**
 * Files under `dirs` changed since `sinceMs` that hold the token in any of its
 * forms. Files that did not change cannot hold a token made for this run;
 * large ones (build caches, binaries another build is writing) are skipped.
 * `find` lists them: walking half a million inodes from node takes minutes.
 */
export async function leaksOf(token: string, user: string, dirs: readonly string[], sinceMs: number, maxKiB = 4096): Promise<string[]> {
  const needles = forms(token, user)
  const listed = await run(
    ['find', ...dirs, '-xdev', '-type', 'f', '-newermt', `@${Math.floor(sinceMs / 1000)}`, '-size', `-${maxKiB + 1}k`, '-print0'],
    { okCodes: ANY_EXIT },
  )
  const found = new Set<string>()
  for (const path of listed.stdout.split('\0').filter(Boolean)) {
    try {
      const text = readFileSync(path, 'latin1')
      if (needles.some((n) => text.includes(n))) found.add(path)
    } catch {
      // Removed since find listed it.
    }
  }
  return [...found]
}
