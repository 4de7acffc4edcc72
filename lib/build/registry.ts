import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { retry, run } from '../core/run.ts'
import { tmpdir } from 'node:os'
import { dockerEnv } from './docker.ts'
import { say } from '../core/output.ts'

/** The last line of a failed docker command that says why (the daemon's own words). */
function why(err: unknown): string {
  const details = err instanceof PipelineError ? err.details : undefined
  const lines = (details ?? (err instanceof Error ? err.message : String(err)))
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
  // docker prints progress on stdout and the reason on stderr; the details hold both.
  const reason = [...lines].reverse().find((l) => /error|refused|denied|unauthorized|failed|timeout|no such host|unreachable|EOF/i.test(l))
  return reason ?? lines.at(-1) ?? 'unknown error'
}

/** What a registry answers when it refuses a user name and token (distribution: 401 Unauthorized, GHCR: `denied: denied`, Docker Hub: `unauthorized: incorrect username or password`); a local `permission denied` is not one. */
const REFUSED = /unauthorized|authentication required|incorrect username or password|\bdenied: |\b401\b/i

/** Whether a failed login's reason is the registry refusing the credentials (not worth a retry). */
export function loginRefused(reason: string): boolean {
  return REFUSED.test(reason)
}

/**
 * A registry login that lasts only as long as the stage needs it: the
 * credentials go to a throwaway DOCKER_CONFIG (a fresh 0700 directory), never
 * to ~/.docker/config.json, and `end()` (or the process's exit) removes it.
 * Pass `env` to every docker call that must be logged in (push, pull).
 */
export interface RegistryLogin {
  registry: string
  env: NodeJS.ProcessEnv
  end: () => void
}

export async function registryLogin(docker: string, registry: string, user: string, token: string): Promise<RegistryLogin> {
  const dir = mkdtempSync(join(tmpdir(), 'docker-config-'))
  const end = () => rmSync(dir, { recursive: true, force: true })
  process.once('exit', end)
  const env = { DOCKER_CONFIG: dir }
  const login = () =>
    run([docker, 'login', registry, '--username', user, '--password-stdin'], {
      env: dockerEnv(env),
      input: token,
      secrets: [token],
      timeoutMs: 60_000,
    })
  // A refusal is an answer, not a network hiccup: asking again cannot change it.
  const refused = (err: unknown) => loginRefused(why(err))
  try {
    await retry(3, 2000, login, refused)
  } catch (err) {
    end()
    if (refused(err))
      throw new PipelineError(
        `registry: ${registry} refused the credentials of ${user} (REGISTRY_USER/REGISTRY_TOKEN): check the token and that it may push there`,
      )
    throw new PipelineError(`registry: login to ${registry} as ${user} failed: ${why(err)}`)
  }
  return { registry, env, end }
}

/** The digest `docker push` prints last: it exists only once the manifest (the tag) is written. */
export function parsePushDigest(output: string): { digest: string; size: number } | undefined {
  const m = /digest: (sha256:[a-f0-9]{64}) size: (\d+)/.exec(output)
  return m ? { digest: m[1]!, size: Number(m[2]) } : undefined
}

/**
 * Pushes with bounded retries. docker uploads every layer before it writes the
 * manifest, so a tag never names a half-pushed image: a failed attempt leaves
 * at most unreferenced blobs, which the next attempt reuses.
 */
export async function pushImage(
  docker: string,
  ref: string,
  opts: { attempts?: number; backoffMs?: number; secrets?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<{ digest: string; size: number; attempts: number }> {
  const attempts = opts.attempts ?? 3
  let used = 0
  try {
    return await retry(attempts, opts.backoffMs ?? 3000, async (attempt) => {
      used = attempt
      if (attempt > 1) say(`push attempt ${attempt} of ${attempts}`)
      const r = await run([docker, 'push', ref], { env: dockerEnv(opts.env), timeoutMs: 15 * 60_000, secrets: opts.secrets ?? [] })
      const d = parsePushDigest(r.stdout + r.stderr)
      if (!d) throw new PipelineError(`push: docker push ${ref} printed no digest`)
      return { ...d, attempts: attempt }
    })
  } catch (err) {
    throw new PipelineError(
      `push: ${ref} failed after ${used} attempt${used === 1 ? '' : 's'}: ${why(err)}`,
      err instanceof PipelineError ? err.details : undefined,
    )
  }
}

export async function pullImage(docker: string, ref: string, env?: NodeJS.ProcessEnv): Promise<void> {
  await retry(3, 3000, () => run([docker, 'pull', ref], { env: dockerEnv(env), timeoutMs: 10 * 60_000 })).catch((err) => {
    throw new PipelineError(`pull: ${ref} failed: ${why(err)}`, err instanceof PipelineError ? err.details : undefined)
  })
}

export async function removeImage(docker: string, ref: string): Promise<void> {
  await run([docker, 'image', 'rm', ref], { env: dockerEnv(), okCodes: [1] })
}

export async function tagImage(docker: string, source: string, target: string): Promise<void> {
  await run([docker, 'tag', source, target], { env: dockerEnv() })
}

/** Uncompressed size of a local image, as `docker image inspect` reports it. */
export async function imageBytes(docker: string, ref: string): Promise<number> {
  const r = await run([docker, 'image', 'inspect', '--format', '{{.Size}}', ref], { env: dockerEnv() })
  return Number(r.stdout.trim())
}

/**
 * Size as pushed: the registry's manifest (config and compressed layers),
 * which is what a node downloads. Read over the registry API, as the rebuild
 * reads it: in a local ci:build the registry refused the docker 20.10
 * client's `manifest inspect` of the OCI image BuildKit pushed ("OCI manifest
 * found, but accept header does not support OCI manifests"), three tries in a
 * row. Plain HTTP for loopback registries only.
 */
export async function pushedBytes(pinned: string, auth?: RegistryAuth): Promise<number> {
  const manifest = (await fetchManifest(pinned, auth)).body as { config?: { size: number }; layers?: { size: number }[] }
  if (!manifest.layers) throw new PipelineError(`manifest: ${pinned} is a list, not one image manifest`)
  return (manifest.config?.size ?? 0) + manifest.layers.reduce((sum, l) => sum + l.size, 0)
}

/** A base image's name as Docker reads it: `alpine` is docker.io/library/alpine, `gcr.io/x/y:tag` names its registry. */
export interface ImageName {
  registry: string
  repository: string
  tag?: string
  digest?: string
}

export function parseImageName(name: string): ImageName {
  const m = /^([^@]+?)(?::([\w][\w.-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?$/.exec(name.trim())
  if (!m) throw new PipelineError(`image: "${name}" is not name[:tag][@sha256:<64 hex>]`)
  const parts = m[1]!.split('/')
  const hasRegistry = parts.length > 1 && /[.:]|^localhost$/.test(parts[0]!)
  const registry = hasRegistry ? parts.shift()! : 'docker.io'
  if (registry === 'docker.io' && parts.length === 1) parts.unshift('library')
  return { registry, repository: parts.join('/'), ...(m[2] ? { tag: m[2] } : {}), ...(m[3] ? { digest: m[3] } : {}) }
}

/** The types a manifest may have: an index (multi-platform) or one image, OCI or Docker's. */
const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ')

/** The registry host that serves a name (docker.io's API lives at registry-1.docker.io). */
function apiBase(registry: string, plainHttp: boolean): string {
  const host = registry === 'docker.io' ? 'registry-1.docker.io' : registry
  return `${plainHttp ? 'http' : 'https'}://${host}/v2`
}

/** Credentials for a registry that wants them (GHCR: the workflow's user and token). */
export interface RegistryAuth {
  user: string
  token: string
}

const basic = (a: RegistryAuth) => `Basic ${Buffer.from(`${a.user}:${a.token}`).toString('base64')}`

/**
 * The Authorization header a registry's 401 challenge asks for: a pull token
 * from its token service (Docker Hub, GCR, GHCR; anonymous, or with `auth`),
 * or Basic credentials (htpasswd registries).
 */
async function authorization(challenge: string | null, repository: string, auth?: RegistryAuth): Promise<string | undefined> {
  if (/^Basic\b/i.test(challenge ?? '')) return auth ? basic(auth) : undefined
  const bearer = /^Bearer\s+(.*)$/i.exec(challenge ?? '')?.[1]
  if (!bearer) return undefined
  const params = Object.fromEntries([...bearer.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]))
  if (!params.realm) return undefined
  const url = new URL(params.realm)
  if (params.service) url.searchParams.set('service', params.service)
  url.searchParams.set('scope', `repository:${repository}:pull`)
  const res = await fetch(url, { headers: auth ? { Authorization: basic(auth) } : {}, signal: AbortSignal.timeout(30_000) })
  if (!res.ok) throw new PipelineError(`registry: ${url.host} gave no pull token for ${repository} (HTTP ${res.status})`)
  const body = (await res.json()) as { token?: string; access_token?: string }
  const token = body.token ?? body.access_token
  return token ? `Bearer ${token}` : undefined
}

/** A GET or HEAD on the registry API, answering its auth challenge once. */
async function registryRequest(
  url: string,
  repository: string,
  init: { method: 'GET' | 'HEAD'; accept?: string },
  auth?: RegistryAuth,
): Promise<Response> {
  const ask = (authz?: string) =>
    fetch(url, {
      method: init.method,
      headers: { ...(init.accept ? { Accept: init.accept } : {}), ...(authz ? { Authorization: authz } : {}) },
      signal: AbortSignal.timeout(60_000),
    })
  const res = await retry(3, 2000, () => ask())
  if (res.status !== 401) return res
  return ask(await authorization(res.headers.get('www-authenticate'), repository, auth))
}

/**
 * The digest a registry serves for `name` (its tag, or the digest it already
 * names), asked of `mirror` instead when given (as buildkitd's mirror
 * config does: the same repository path on the mirror host). Anonymous:
 * base images are public. An index digest pins every platform at once.
 */
export async function manifestDigest(name: string, opts: { mirror?: string } = {}): Promise<string> {
  const n = parseImageName(name)
  const host = opts.mirror ?? n.registry
  const plainHttp = /^(127\.0\.0\.1|localhost)(:\d+)?$/.test(host)
  const url = `${apiBase(host, plainHttp)}/${n.repository}/manifests/${n.digest ?? n.tag ?? 'latest'}`
  const where = opts.mirror ? `${name} (from ${opts.mirror})` : name
  try {
    const res = await registryRequest(url, n.repository, { method: 'HEAD', accept: MANIFEST_ACCEPT })
    const digest = res.headers.get('docker-content-digest')
    if (!res.ok || !digest || !/^sha256:[a-f0-9]{64}$/.test(digest))
      throw new PipelineError(`HTTP ${res.status}${res.ok ? ' without a Docker-Content-Digest' : ''}`)
    if (n.digest && digest !== n.digest) throw new PipelineError(`the registry serves ${digest} for it`)
    return digest
  } catch (err) {
    throw new PipelineError(`registry: cannot resolve ${where} to a digest: ${err instanceof Error ? err.message : String(err)}`)
  }
}

/** `name@digest`, the tag kept for people to read (BuildKit resolves by the digest alone). */
export function pinnedName(name: string, digest: string): string {
  return `${name.replace(/@sha256:[a-f0-9]{64}$/, '')}@${digest}`
}

/** `registry/path@sha256:…` split into its API base and repository (the pipeline's own images name their registry). */
function pinnedParts(pinned: string): { base: string; repository: string; digest: string } {
  const n = parseImageName(pinned)
  if (!n.digest) throw new PipelineError(`image: ${pinned} is not pinned by digest`)
  return { base: apiBase(n.registry, /^(127\.0\.0\.1|localhost)(:\d+)?$/.test(n.registry)), repository: n.repository, digest: n.digest }
}

/** The manifest a registry serves for a pinned image, checked against its digest. */
export async function fetchManifest(pinned: string, auth?: RegistryAuth): Promise<{ digest: string; body: unknown }> {
  const p = pinnedParts(pinned)
  const res = await registryRequest(
    `${p.base}/${p.repository}/manifests/${p.digest}`,
    p.repository,
    { method: 'GET', accept: MANIFEST_ACCEPT },
    auth,
  )
  if (!res.ok) throw new PipelineError(`registry: ${pinned}: manifest not served (HTTP ${res.status})`)
  const bytes = new Uint8Array(await res.arrayBuffer())
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`
  if (digest !== p.digest) throw new PipelineError(`registry: ${pinned}: the manifest served hashes to ${digest}`)
  return { digest, body: JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown }
}

/** A JSON blob (an image config) of a pinned image's repository, checked against its digest. */
export async function fetchBlob(pinned: string, blob: string, auth?: RegistryAuth): Promise<unknown> {
  const p = pinnedParts(pinned)
  const res = await registryRequest(`${p.base}/${p.repository}/blobs/${blob}`, p.repository, { method: 'GET' }, auth)
  if (!res.ok) throw new PipelineError(`registry: ${pinned}: blob ${blob} not served (HTTP ${res.status})`)
  const bytes = new Uint8Array(await res.arrayBuffer())
  if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== blob)
    throw new PipelineError(`registry: ${pinned}: blob ${blob} does not hash to its digest`)
  return JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown
}
