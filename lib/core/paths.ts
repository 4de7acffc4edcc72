import { homedir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root: lib/core/ sits two levels below it. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/**
 * Where tools, base-image inputs and local services keep their state: outside
 * the clone, so a fresh clone on the same machine reuses what was built once.
 */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DOC_SERVER_CACHE_DIR) return resolve(env.DOC_SERVER_CACHE_DIR)
  const base = env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(homedir(), '.cache')
  return join(base, 'doc-server-ci')
}

/** Where the local services (dockerd, registry, cluster) keep data and logs. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheDir(env), 'state')
}
