import { lstatSync, readFileSync, readdirSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'

/** A loopback port nothing listens on: bound, read, released. */
export async function unusedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))))
    })
  })
}

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
 */
export function leaksOf(token: string, user: string, dirs: readonly string[], sinceMs: number, maxBytes = 4 * 1024 * 1024): string[] {
  const needles = forms(token, user)
  const found = new Set<string>()
  const seen = new Set<string>()
  const walk = (dir: string) => {
    if (seen.has(dir)) return
    seen.add(dir)
    let entries: string[]
    try {
      entries = readdirSync(dir)
    } catch {
      return
    }
    for (const name of entries) {
      const path = join(dir, name)
      try {
        const st = lstatSync(path)
        if (st.isDirectory()) walk(path)
        else if (st.isFile() && st.mtimeMs >= sinceMs && st.size <= maxBytes) {
          const text = readFileSync(path, 'latin1')
          if (needles.some((n) => text.includes(n))) found.add(path)
        }
      } catch {
        // Removed while we looked.
      }
    }
  }
  for (const d of dirs) walk(d)
  return [...found]
}
