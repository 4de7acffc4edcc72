/**
 * Trivy's air-gapped path: its vulnerability DB as an OCI artifact in a
 * registry the scanner can reach (`trivy --db-repository`). The local default
 * publishes the DB built from advisories/ to the local registry in exactly the
 * layout Trivy's own DB has, so scanning through it is the code path a
 * company mirror takes too.
 */
import { createHash } from 'node:crypto'
import { existsSync,mkdirSync,mkdtempSync,readFileSync,readdirSync,rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { writeJson } from '../core/json.ts'

/**
 * Trivy's media types: it refuses a DB layer of any other type
 * (pkg/db/db.go `dbMediaType`); the config type is the one trivy-db's
 * release job gives `oras push`. The layer's title annotation names the file
 * Trivy unpacks (pkg/oci/artifact.go).
 */
export const TRIVY_DB_MEDIA_TYPES = {
  layer: 'application/vnd.aquasec.trivy.db.layer.v1.tar+gzip',
  config: 'application/vnd.aquasec.trivy.config.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
} as const
const TITLE = 'org.opencontainers.image.title'
/** How many advisories the DB was built from, and when: read back by whoever scans through the mirror. */
export const ADVISORIES_ANNOTATION = 'org.doc-server.trivy-db.advisories'
export const CREATED_ANNOTATION = 'org.opencontainers.image.created'

/** Trivy's DB schema version is the tag of its repositories (ghcr.io/aquasecurity/trivy-db:2). */
export function defaultDbRepository(registry: string, owner: string): string {
  return `${registry}/${owner}/trivy-db:2`
}

export interface OciRef {
  registry: string
  name: string
  tag: string
}

export function parseOciRef(ref: string): OciRef {
  const m = /^([^/]+)\/(.+):([^:/]+)$/.exec(ref)
  if (!m) throw new PipelineError(`trivy-db: ${ref} is not registry/name:tag`)
  return { registry: m[1]!, name: m[2]!, tag: m[3]! }
}

/** Only a registry on this machine is published to; a company mirror is read, never written. */
export function isLoopbackRegistry(registry: string): boolean {
  return /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/.test(registry)
}

function listJson(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name)
    return e.isDirectory() ? listJson(p) : e.isFile() && e.name.endsWith('.json') ? [p] : []
  })
}

/** The advisories the local DB is built from: one JSON file each (vuln-list layout). */
export function countAdvisories(dir: string): number {
  return existsSync(dir) ? listJson(dir).length : 0
}

const sha256 = (data: Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`

/** db.tar.gz as Trivy's DB artifact holds it: trivy.db and metadata.json at the root; same input, same bytes. */
export async function dbTarball(dbDir: string): Promise<Uint8Array> {
  for (const f of ['trivy.db', 'metadata.json']) if (!existsSync(join(dbDir, f))) throw new PipelineError(`trivy-db: ${join(dbDir, f)} is missing; nothing to publish`)
  const work = mkdtempSync(join(tmpdir(), 'trivy-db-'))
  try {
    const tar = join(work, 'db.tar')
    await run(['tar', '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-cf', tar, '-C', dbDir, 'trivy.db', 'metadata.json'])
    return new Uint8Array(gzipSync(new Uint8Array(readFileSync(tar)), { level: 9 }))
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

export interface Manifest {
  schemaVersion: 2
  mediaType: string
  config: { mediaType: string; digest: string; size: number }
  layers: { mediaType: string; digest: string; size: number; annotations: Record<string, string> }[]
  annotations: Record<string, string>
}

/** The OCI manifest of a DB artifact: one layer, Trivy's media types, and what the DB holds. */
export function dbManifest(layer: Uint8Array, config: Uint8Array, facts: { advisories: number; updatedAt: string }): Manifest {
  return {
    schemaVersion: 2,
    mediaType: TRIVY_DB_MEDIA_TYPES.manifest,
    config: { mediaType: TRIVY_DB_MEDIA_TYPES.config, digest: sha256(config), size: config.length },
    layers: [{ mediaType: TRIVY_DB_MEDIA_TYPES.layer, digest: sha256(layer), size: layer.length, annotations: { [TITLE]: 'db.tar.gz' } }],
    annotations: { [ADVISORIES_ANNOTATION]: String(facts.advisories), ...(facts.updatedAt ? { [CREATED_ANNOTATION]: facts.updatedAt } : {}) },
  }
}

async function check(res: Response, what: string): Promise<Response> {
  if (!res.ok) throw new PipelineError(`trivy-db: ${what} failed: HTTP ${res.status} ${(await res.text().catch(() => '')).slice(0, 200).replace(/\s+/g, ' ')}`)
  return res
}

/** One blob, by the registry API: a monolithic upload (POST, then PUT with the digest), skipped when present. */
async function pushBlob(base: string, data: Uint8Array, digest: string): Promise<void> {
  if ((await fetch(`${base}/blobs/${digest}`, { method: 'HEAD' })).ok) return
  const start = await check(await fetch(`${base}/blobs/uploads/`, { method: 'POST' }), 'starting a blob upload')
  const location = start.headers.get('location')
  if (!location) throw new PipelineError('trivy-db: the registry gave no upload location')
  const url = new URL(location, base)
  url.searchParams.set('digest', digest)
  await check(await fetch(url, { method: 'PUT', body: new Blob([new Uint8Array(data)]), headers: { 'content-type': 'application/octet-stream' } }), `uploading ${digest.slice(0, 19)}`)
}

/** Publishes the DB in `dbDir` as `ref` over plain HTTP (a registry on this machine); returns the manifest digest. */
export async function publishDb(dbDir: string, ref: string, facts: { advisories: number; updatedAt: string }): Promise<string> {
  const r = parseOciRef(ref)
  if (!isLoopbackRegistry(r.registry)) throw new PipelineError(`trivy-db: refusing to publish to ${r.registry}; the pipeline publishes only to a registry on this machine (a company mirror is filled by its owners)`)
  const base = `http://${r.registry}/v2/${r.name}`
  const layer = await dbTarball(dbDir)
  const config = new TextEncoder().encode('{}')
  const manifest = dbManifest(layer, config, facts)
  await pushBlob(base, config, manifest.config.digest)
  await pushBlob(base, layer, manifest.layers[0]!.digest)
  const body = JSON.stringify(manifest)
  await check(await fetch(`${base}/manifests/${r.tag}`, { method: 'PUT', body, headers: { 'content-type': TRIVY_DB_MEDIA_TYPES.manifest } }), `writing the manifest ${ref}`)
  return sha256(new TextEncoder().encode(body))
}

/** The manifest's digest and annotations as the registry serves them now, or undefined when it has none. */
export async function readDbManifest(ref: string, insecure: boolean): Promise<{ digest: string; manifest: Manifest } | undefined> {
  const r = parseOciRef(ref)
  const res = await fetch(`${insecure ? 'http' : 'https'}://${r.registry}/v2/${r.name}/manifests/${r.tag}`, { headers: { accept: TRIVY_DB_MEDIA_TYPES.manifest }, signal: AbortSignal.timeout(10_000) }).catch(() => undefined)
  if (!res || !res.ok) return undefined
  const text = await res.text()
  return { digest: res.headers.get('docker-content-digest') ?? sha256(new TextEncoder().encode(text)), manifest: JSON.parse(text) as Manifest }
}

export interface MirroredDb {
  repository: string
  digest: string
  advisories: number
  updatedAt: string
  published: boolean
}

/**
 * The local DB, in the mirror: published when the mirror does not serve the
 * build of these advisories (new advisories, a wiped registry), else reused.
 * A marker beside the DB remembers which manifest holds which build.
 */
export async function ensureDbMirror(dbDir: string, hash: string, ref: string, facts: { advisories: number; updatedAt: string }): Promise<MirroredDb> {
  const marker = join(dbDir, 'published.json')
  const seen = existsSync(marker) ? (JSON.parse(readFileSync(marker, 'utf8')) as { ref?: string; hash?: string; digest?: string }) : {}
  const served = await readDbManifest(ref, true)
  if (served && seen.ref === ref && seen.hash === hash && seen.digest === served.digest) {
    return { repository: ref, digest: served.digest, ...facts, published: false }
  }
  const digest = await publishDb(dbDir, ref, facts)
  writeJson(marker, { ref, hash, digest })
  return { repository: ref, digest, ...facts, published: true }
}

/**
 * Where Trivy keeps a DB downloaded from a mirror: one directory per manifest
 * digest, because Trivy re-downloads only when its copy is stale by date, and
 * a rebuilt local DB is not.
 */
export function mirrorCacheDir(trivyRoot: string, digest: string): string {
  const dir = join(trivyRoot, 'mirror', digest.replace(/^sha256:/, '').slice(0, 16))
  mkdirSync(dir, { recursive: true })
  return dir
}
