import { createHash } from 'node:crypto'
import { cpSync,existsSync,mkdirSync,readFileSync,readdirSync,renameSync,rmSync,writeFileSync } from 'node:fs'
import { join,relative } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { repoRoot } from '../core/paths.ts'
import { run } from '../core/run.ts'
import { ensureGoTool } from '../tools/go.ts'
import { VERSIONS } from '../tools/versions.ts'
import { TRIVY_DB_SPEC } from '../tools/trivy.ts'
import { say } from '../core/output.ts'

/** Where Trivy keeps DBs and layer caches: the local DB and the downloaded one never share a directory. */
export function trivyCacheDir(cache: string, source: 'local' | 'remote'): string {
  return join(cache, 'trivy', source)
}

/** The advisories the local DB is built from (vuln-list layout, see advisories/README.md). */
export const ADVISORIES_DIR = join(repoRoot, 'advisories')

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name)
    return e.isDirectory() ? listFiles(p) : e.isFile() ? [p] : []
  })
}

/** A hash of the advisory files (names and contents) and the trivy-db version: what the DB was built from. */
export function advisoriesHash(dir = ADVISORIES_DIR): string {
  if (!existsSync(dir)) throw new PipelineError(`trivy-db: advisories directory ${dir} is missing`)
  const h = createHash('sha256').update(`trivy-db ${VERSIONS.trivyDb}\n`)
  for (const file of listFiles(dir).sort()) h.update(`${relative(dir, file)}\n`).update(new Uint8Array(readFileSync(file))).update('\n')
  return h.digest('hex')
}

export interface LocalDb {
  cacheDir: string
  hash: string
  updatedAt: string
  built: boolean
}

/**
 * The vulnerability DB for offline scans, built with the pinned trivy-db from
 * the advisories in this repository and installed as `<cache>/trivy/local/db`
 * (Trivy's layout). Rebuilt only when the advisory files change; installed by
 * rename, so an interrupted build leaves the previous DB in place.
 */
export async function ensureLocalDb(cache: string, advisories = ADVISORIES_DIR): Promise<LocalDb> {
  const trivyCache = trivyCacheDir(cache, 'local')
  const dbDir = join(trivyCache, 'db')
  const marker = join(dbDir, 'advisories.sha256')
  const hash = advisoriesHash(advisories)
  const installed = existsSync(marker) && readFileSync(marker, 'utf8').trim() === hash && existsSync(join(dbDir, 'trivy.db'))
  if (!installed) {
    const builder = await ensureGoTool(cache, TRIVY_DB_SPEC)
    const work = join(trivyCache, `build-${process.pid}`)
    rmSync(work, { recursive: true, force: true })
    const src = join(work, 'vuln-list')
    cpSync(advisories, src, { recursive: true })
    // trivy-db's GHSA source also walks CocoaPods specs and refuses a missing directory.
    mkdirSync(join(src, 'cocoapods-specs', 'Specs'), { recursive: true })
    const sources = readdirSync(advisories, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name)
    const out = join(work, 'out')
    say(`building the local Trivy DB from ${relative(repoRoot, advisories)} (${sources.join(', ')})`)
    await run([builder, 'build', '--cache-dir', src, '--output-dir', out, '--update-interval', '8760h', ...sources.flatMap((s) => ['--only-update', s])], {
      cwd: work,
    })
    for (const f of ['trivy.db', 'metadata.json']) {
      if (!existsSync(join(out, f))) throw new PipelineError(`trivy-db: build wrote no ${f}`)
    }
    writeFileSync(join(out, 'advisories.sha256'), `${hash}\n`)
    const old = `${dbDir}.old-${process.pid}`
    if (existsSync(dbDir)) renameSync(dbDir, old)
    renameSync(out, dbDir)
    rmSync(old, { recursive: true, force: true })
    rmSync(work, { recursive: true, force: true })
  }
  return { cacheDir: trivyCache, hash, updatedAt: dbUpdatedAt(trivyCache), built: !installed }
}

/** The DB's UpdatedAt from its metadata.json, or '' when there is none. */
export function dbUpdatedAt(trivyCache: string): string {
  try {
    return String((JSON.parse(readFileSync(join(trivyCache, 'db', 'metadata.json'), 'utf8')) as { UpdatedAt?: unknown }).UpdatedAt ?? '')
  } catch {
    return ''
  }
}

export interface ScanOptions {
  trivy: string
  image: string
  out: string
  imageSrc: 'remote' | 'docker'
  trivyCache: string
  offline: boolean
  /** Trivy's --db-repository: the OCI repository (mirror) the DB is downloaded from. */
  dbRepository?: string | null
  ignoreFile: string
}

/** A registry on this machine speaks plain HTTP; only there is `--insecure` allowed. */
export function isLocalRegistry(image: string): boolean {
  return /^(127\.0\.0\.1|localhost)(:\d+)?\//.test(image)
}

/** What the scanner may see of the environment: where it runs and how it reaches registries, nothing that configures Trivy. */
const SCANNER_VARIABLES = ['PATH', 'HOME', 'TMPDIR', 'LANG', 'XDG_CACHE_HOME', 'DOCKER_CONFIG', 'DOCKER_HOST', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy']

export function scannerEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return Object.fromEntries(SCANNER_VARIABLES.filter((k) => env[k] !== undefined).map((k) => [k, env[k]]))
}

/** Runs scripts/scan_image.sh; any non-zero exit is a broken scan, never a finding. */
export async function scanImage(o: ScanOptions): Promise<{ seconds: number }> {
  const argv = [join(repoRoot, 'scripts', 'scan_image.sh'), '--out', o.out, '--image-src', o.imageSrc, '--cache-dir', o.trivyCache, '--ignorefile', o.ignoreFile]
  if (o.offline) argv.push('--offline')
  if (o.dbRepository) argv.push('--db-repository', o.dbRepository)
  if (o.imageSrc === 'remote' && isLocalRegistry(o.image)) argv.push('--insecure')
  argv.push(o.image)
  try {
    // Trivy reads TRIVY_* variables and a trivy.yaml in its working directory: it gets neither (the script drops them too).
    mkdirSync(o.out, { recursive: true })
    const r = await run(argv, { cwd: o.out, env: { ...scannerEnv(), TRIVY: o.trivy } })
    return { seconds: r.seconds }
  } catch (err) {
    if (!(err instanceof PipelineError)) throw err
    const last = err.details?.split('\n').reverse().find((l) => l.startsWith('scan_image: '))
    throw new PipelineError(last ? `scan: ${last.replace(/^scan_image: /, '')}` : `scan: ${err.message}`, err.details)
  }
}
