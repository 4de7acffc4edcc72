/**
 * Which vulnerability DB a scan uses, and what it holds. `local` builds the DB
 * from advisories/, publishes it to a registry on this machine and scans
 * through that mirror; `remote` lets Trivy download it, from
 * TRIVY_DB_REPOSITORY (a company mirror) or its default repositories. Either
 * way the report says where the DB came from, how many advisories it holds
 * (when known) and when it was built, so a pass against a tiny local DB is
 * never mistaken for a full scan.
 */
import { join, relative } from 'node:path'
import { repoRoot } from '../core/paths.ts'
import { LOCAL_REGISTRY, type Config } from '../core/config.ts'
import { PipelineError } from '../core/errors.ts'
import { ADVISORIES_ANNOTATION, countAdvisories, defaultDbRepository, ensureDbMirror, isLoopbackRegistry, mirrorCacheDir, parseOciRef, readDbManifest } from './db-mirror.ts'
import { dbUpdatedAt, ensureLocalDb, trivyCacheDir } from './trivy.ts'

export interface DbFacts {
  source: 'local' | 'remote'
  /** The OCI repository Trivy downloads from; null for Trivy's default ones. */
  repository: string | null
  /** The mirror's manifest digest, when known. */
  digest: string | null
  /** How many advisories the DB holds; null when the mirror does not say (Trivy's public DB). */
  advisories: number | null
  /** The DB's UpdatedAt: when it was built. */
  updatedAt: string
  /** For the local DB: the hash of the advisory files it was built from. */
  advisoriesHash?: string
}

export interface DbChoice {
  facts: DbFacts
  /** Trivy's --cache-dir for this DB. */
  trivyCache: string
  /** One line for the task title. */
  title: string
}

/**
 * The DB a scan will use, published to the local mirror first when it is the
 * local one (whose registry the caller has started: see `dbRegistry`).
 */
export async function prepareDb(config: Config): Promise<DbChoice> {
  if (config.trivyDbSource === 'remote') {
    const repository = config.trivyDbRepository ?? null
    const served = repository ? await readDbManifest(repository, isLoopbackRegistry(parseOciRef(repository).registry)) : undefined
    const count = Number(served?.manifest.annotations?.[ADVISORIES_ANNOTATION] ?? NaN)
    const facts: DbFacts = { source: 'remote', repository, digest: served?.digest ?? null, advisories: Number.isInteger(count) ? count : null, updatedAt: '' }
    return { facts, trivyCache: trivyCacheDir(config.cacheDir, 'remote'), title: `Trivy downloads it from ${repository ?? 'its default repositories'} (TRIVY_DB_SOURCE=remote)` }
  }
  const repository = config.trivyDbRepository ?? defaultDbRepository(LOCAL_REGISTRY, config.imageOwner)
  const registry = parseOciRef(repository).registry
  if (!isLoopbackRegistry(registry)) {
    throw new PipelineError(`config: TRIVY_DB_REPOSITORY=${repository} is not on this machine; TRIVY_DB_SOURCE=local publishes the DB built from advisories/ to a local registry. To scan through a company mirror, set TRIVY_DB_SOURCE=remote`)
  }
  const db = await ensureLocalDb(config.cacheDir, config.scanAdvisoriesDir)
  const mirrored = await ensureDbMirror(join(db.cacheDir, 'db'), db.hash, repository, { advisories: countAdvisories(config.scanAdvisoriesDir), updatedAt: db.updatedAt })
  const facts: DbFacts = { source: 'local', repository, digest: mirrored.digest, advisories: mirrored.advisories, updatedAt: db.updatedAt, advisoriesHash: db.hash }
  const what = `${db.built ? 'built now' : 'cached'}, ${mirrored.published ? 'published to' : 'served by'} ${repository}`
  return { facts, trivyCache: mirrorCacheDir(join(config.cacheDir, 'trivy'), mirrored.digest), title: `local, from ${relative(repoRoot, config.scanAdvisoriesDir) || config.scanAdvisoriesDir} (${what}): ${describeDb(facts)}` }
}

/** The registry the local DB is published to, when this scan uses one: the caller makes sure it answers. */
export function dbRegistry(config: Config): string | undefined {
  if (config.trivyDbSource === 'remote') return undefined
  return parseOciRef(config.trivyDbRepository ?? defaultDbRepository(LOCAL_REGISTRY, config.imageOwner)).registry
}

/** After the scan: what Trivy actually loaded, from the metadata of the DB in its cache. */
export function scannedDbUpdatedAt(trivyCache: string): string {
  return dbUpdatedAt(trivyCache)
}

/** "1 advisory, built 2026-11-27T03:00:00Z" or "advisories not counted, built …". */
export function describeDb(f: DbFacts): string {
  const count = f.advisories === null ? 'advisories not counted (the mirror does not say)' : `${f.advisories} advisor${f.advisories === 1 ? 'y' : 'ies'}`
  return `${count}, built ${f.updatedAt || 'at an unknown time'}`
}

/**
 * A downloaded DB built longer ago than `maxAgeSecs` (SCAN_DB_MAX_AGE) makes
 * the scan fail: a pass against last month's advisories says little. The local
 * DB is exempt: it is built from advisories/, whose content is committed.
 */
export function dbAgeProblem(db: DbFacts, maxAgeSecs: number, now = new Date()): string | undefined {
  if (db.source !== 'remote') return undefined
  const built = Date.parse(db.updatedAt)
  if (Number.isNaN(built)) return `the vulnerability DB does not say when it was built (UpdatedAt ${JSON.stringify(db.updatedAt)}); its age cannot be checked`
  const hours = (now.getTime() - built) / 3_600_000
  if (hours * 3600 > maxAgeSecs) return `the vulnerability DB was built ${hours.toFixed(0)} h ago (${db.updatedAt}), over SCAN_DB_MAX_AGE (${maxAgeSecs / 3600} h); let Trivy download a fresh one`
  return undefined
}
