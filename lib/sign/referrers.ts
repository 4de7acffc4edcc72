/**
 * The Sigstore bundles a digest carries, read with the registry's own HTTP
 * API: the referrers index (the OCI referrers API, else the `sha256-<hex>` tag
 * cosign falls back to on a registry without it) in one request, then each
 * bundle it lists. A bundle never changes under its referrer manifest's
 * digest, so each is fetched once per machine and kept under
 * `<cache>/referrers/`; every later read costs the index alone, however many
 * builds and scans piled bundles on the digest. Nothing here is trusted:
 * cosign verifies every bundle (signature and subject) afterwards, and what
 * the registry serves must match the digests that name it.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { homedir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { PipelineError } from '../core/errors.ts'

/** The media type prefix of a Sigstore bundle (cosign v3 stores every signature and attestation as one). */
export const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle'
const INDEX = 'application/vnd.oci.image.index.v1+json'
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
/** Bundles fetched at once when several are new. */
const PARALLEL = 8

interface Descriptor {
  mediaType?: string
  artifactType?: string
  digest: string
  size?: number
}

export interface RegistryRead {
  /** repository@sha256:… */
  image: string
  /** Where fetched bundles are kept (`<DOC_SERVER_CACHE_DIR>`). */
  cache: string
  /** The environment whose DOCKER_CONFIG holds the registry's login, if any (the push's throwaway login). */
  env?: NodeJS.ProcessEnv
}

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Uint8Array
}

/** One GET, over https trusting the system's CAs and the registry's own docker CA (`/etc/docker/certs.d/<host>/ca.crt`), or plain http. */
function httpGet(url: string, headers: Record<string, string>, ca: string | undefined): Promise<Answer> {
  const client = url.startsWith('https:') ? https : http
  return new Promise((resolve, reject) => {
    const req = client.get(url, { headers, timeout: 30_000, ...(ca ? { ca: [...tls.rootCertificates, ca] } : {}) }, (res) => {
      const chunks: Uint8Array[] = []
      res.on('data', (c: Buffer) => chunks.push(new Uint8Array(c)))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: new Uint8Array(Buffer.concat(chunks)) }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`no answer from ${new URL(url).host} within 30 s`)))
    req.on('error', reject)
  })
}

/**
 * How to reach a registry the way docker and cosign do: https, trusting a CA
 * docker was given for it in /etc/docker/certs.d; plain http only for a
 * registry on loopback without one (the local registry).
 */
export function registryEndpoint(registry: string, certsDir = '/etc/docker/certs.d'): { base: string; ca: string | undefined } {
  const caFile = join(certsDir, registry, 'ca.crt')
  const ca = existsSync(caFile) ? readFileSync(caFile, 'utf8') : undefined
  const plain = !ca && /^(127\.0\.0\.1|localhost)(:\d+)?$/.test(registry)
  return { base: `${plain ? 'http' : 'https'}://${registry}`, ca }
}

/** user:password for the registry from the docker config cosign and docker use (DOCKER_CONFIG, else ~/.docker), if it holds one. */
export function dockerCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const file = join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json')
  if (!existsSync(file)) return undefined
  try {
    const auths = (JSON.parse(readFileSync(file, 'utf8')) as { auths?: Record<string, { auth?: string }> }).auths ?? {}
    const entry = auths[registry] ?? auths[`https://${registry}`] ?? auths[`http://${registry}`]
    return entry?.auth ? Buffer.from(entry.auth, 'base64').toString('utf8') : undefined
  } catch {
    return undefined
  }
}

/** The parameters of a `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge. */
export function bearerChallenge(header: string): Record<string, string> | undefined {
  if (!/^bearer\s/i.test(header)) return undefined
  return Object.fromEntries([...header.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]))
}

/**
 * GETs from one registry, answering its auth challenge once as docker does:
 * a bearer token from its realm (with the docker login when there is one,
 * else anonymous), or basic auth with the login.
 */
function registryClient(registry: string, env: NodeJS.ProcessEnv) {
  const { base, ca } = registryEndpoint(registry)
  let authorization: string | undefined
  const once = async (path: string, accept?: string): Promise<Answer> => {
    const headers = () => ({ ...(accept ? { accept } : {}), ...(authorization ? { authorization } : {}) })
    const sent = authorization
    const res = await httpGet(`${base}${path}`, headers(), ca)
    if (res.status !== 401) return res
    // Another request got the token meanwhile; or this one carried it and was refused all the same.
    if (authorization !== sent) return httpGet(`${base}${path}`, headers(), ca)
    if (sent) return res
    const creds = dockerCredentials(registry, env)
    const basic = creds ? `Basic ${Buffer.from(creds).toString('base64')}` : undefined
    const challenge = bearerChallenge(String(res.headers['www-authenticate'] ?? ''))
    if (challenge?.realm) {
      const q = new URLSearchParams({
        ...(challenge.service ? { service: challenge.service } : {}),
        ...(challenge.scope ? { scope: challenge.scope } : {}),
      })
      const t = await httpGet(`${challenge.realm}?${q}`, basic ? { authorization: basic } : {}, ca)
      if (t.status !== 200)
        throw new PipelineError(`${registry} refused a token to read it (${t.status})${creds ? '' : '; there is no docker login for it'}`)
      const body = JSON.parse(Buffer.from(t.body).toString('utf8')) as { token?: string; access_token?: string }
      authorization = `Bearer ${body.token ?? body.access_token ?? ''}`
    } else if (basic) {
      authorization = basic
    } else {
      return res
    }
    return httpGet(`${base}${path}`, headers(), ca)
  }
  return (path: string, accept?: string) => follow(`${base}${path}`, () => once(path, accept), ca)
}

/** A GET that follows a registry's redirects (GHCR serves blobs from a CDN), never carrying its authorization to another host. */
async function follow(url: string, get: () => Promise<Answer>, ca: string | undefined): Promise<Answer> {
  let res = await get()
  for (let hop = 0; hop < 3 && [301, 302, 303, 307, 308].includes(res.status) && res.headers.location; hop++) {
    url = new URL(String(res.headers.location), url).toString()
    res = await httpGet(url, {}, ca)
  }
  return res
}

const sha256 = (data: Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`

/** The body, which must hash to `digest`: content-addressed, so anything else is not what was asked for. */
function exactly(res: Answer, digest: string, what: string): string {
  if (res.status !== 200) throw new PipelineError(`the registry answered ${res.status} for ${what} ${digest.slice(0, 19)}…`)
  if (sha256(res.body) !== digest)
    throw new PipelineError(`the registry served ${what} ${digest.slice(0, 19)}… with other content (${sha256(res.body).slice(0, 19)}…)`)
  return Buffer.from(res.body).toString('utf8')
}

/**
 * The bundles attached to `image`, one JSON document each, in the order the
 * referrers index lists them: the index fetched now, each bundle from the
 * cache or, the first time, from the registry. Referrers that are not
 * Sigstore bundles are skipped.
 */
export async function readBundles(r: RegistryRead): Promise<string[]> {
  const [repository, digest] = r.image.split('@') as [string, string]
  const slash = repository.indexOf('/')
  const registry = repository.slice(0, slash)
  const name = repository.slice(slash + 1)
  const get = registryClient(registry, { ...process.env, ...r.env })
  let res = await get(`/v2/${name}/referrers/${digest}`, INDEX)
  // distribution v2 and other registries without the API: the tag schema cosign writes instead.
  if (res.status !== 200 || !String(res.headers['content-type'] ?? '').includes('index'))
    res = await get(`/v2/${name}/manifests/${digest.replace(':', '-')}`, INDEX)
  if (res.status === 404) return []
  if (res.status !== 200) throw new PipelineError(`the registry answered ${res.status} for the referrers of ${digest.slice(0, 19)}…`)
  const index = JSON.parse(Buffer.from(res.body).toString('utf8')) as { manifests?: Descriptor[] }
  const wanted = (index.manifests ?? []).filter((m) => !m.artifactType || m.artifactType.startsWith(BUNDLE_MEDIA_TYPE))
  const dir = join(r.cache, 'referrers', 'sha256')
  mkdirSync(dir, { recursive: true })
  const fetchOne = async (m: Descriptor): Promise<string | undefined> => {
    const file = join(dir, m.digest.replace(/^sha256:/, ''))
    if (existsSync(file)) return readFileSync(file, 'utf8')
    const manifest = JSON.parse(exactly(await get(`/v2/${name}/manifests/${m.digest}`, MANIFEST), m.digest, 'referrer manifest')) as {
      layers?: Descriptor[]
    }
    const layer = manifest.layers?.length === 1 ? manifest.layers[0]! : undefined
    if (!layer?.mediaType?.startsWith(BUNDLE_MEDIA_TYPE)) return undefined
    const bundle = exactly(await get(`/v2/${name}/blobs/${layer.digest}`), layer.digest, 'bundle')
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, bundle)
    renameSync(tmp, file)
    return bundle
  }
  const out: (string | undefined)[] = []
  for (let i = 0; i < wanted.length; i += PARALLEL) out.push(...(await Promise.all(wanted.slice(i, i + PARALLEL).map(fetchOne))))
  return out.filter((b): b is string => b !== undefined)
}
