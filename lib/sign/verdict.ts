/**
 * The current scan verdict of a digest, for the admission controller
 * (docs/admission.md). Every scan attests its result beside the image, so
 * a digest scanned at build time and rescanned since carries several; deploy
 * judges the newest by its scan time. Kyverno cannot: it reads one payload per
 * predicate type, the last of them in the referrers index, which is sorted by
 * manifest digest, not by time (an older pass hid a newer fail when tried).
 * So each scan also attests its result into a repository of verdicts
 * (`<repository>-scan-verdict`) and cuts that digest's referrers index there
 * down to the verdict it just wrote: the controller sees exactly one, the
 * newest. The full history beside the image is untouched.
 *
 * The cut rewrites the referrers tag (`sha256-<hex>`) that cosign keeps on a
 * registry without a referrers API (Debian's docker-registry, GHCR); a
 * registry that has the API is refused with one line.
 */
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { SCAN_PREDICATE_TYPE } from './attest.ts'
import { attestImage, type CosignCall, type Signer } from './cosign.ts'

export const VERDICT_SUFFIX = '-scan-verdict'

/** Where the current verdicts of `repository`'s digests are kept. */
export function verdictRepository(repository: string): string {
  return `${repository}${VERDICT_SUFFIX}`
}

const INDEX = 'application/vnd.oci.image.index.v1+json'

interface Index {
  schemaVersion: number
  mediaType?: string
  manifests: { digest: string; mediaType?: string; size?: number; artifactType?: string }[]
}

/** host, repository path and the referrers tag cosign uses for `digest` there. */
function referrersTag(repository: string, digest: string) {
  const slash = repository.indexOf('/')
  return { host: repository.slice(0, slash), name: repository.slice(slash + 1), tag: digest.replace(':', '-') }
}

const loopback = (host: string) => /^(127\.0\.0\.1|localhost)(:\d+)?$/.test(host)

/** The docker config's login for `host` (what cosign and docker push with); a credential store is not read. */
export function dockerAuth(host: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  try {
    const config = JSON.parse(readFileSync(join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json'), 'utf8')) as { auths?: Record<string, { auth?: string }> }
    return config.auths?.[host]?.auth ?? config.auths?.[`https://${host}`]?.auth
  } catch {
    return undefined
  }
}

/**
 * One registry request, with the login a 401 asks for: Basic as an htpasswd
 * registry wants, or a Bearer token from the realm (GHCR, Docker Hub) for the
 * repository's pull and push scope. Plain http on loopback only.
 */
async function registry(method: 'GET' | 'PUT', repository: string, path: string, env: NodeJS.ProcessEnv, body?: string): Promise<Response> {
  const { host, name } = referrersTag(repository, 'sha256:')
  const url = `${loopback(host) ? 'http' : 'https'}://${host}/v2/${name}/${path}`
  const headers: Record<string, string> = { accept: INDEX, ...(body ? { 'content-type': INDEX } : {}) }
  const send = () => fetch(url, { method, headers, ...(body ? { body } : {}), signal: AbortSignal.timeout(30_000) })
  let res = await send()
  if (res.status !== 401) return res
  const auth = dockerAuth(host, env)
  const challenge = res.headers.get('www-authenticate') ?? ''
  if (/^basic/i.test(challenge)) {
    if (!auth) return res
    headers.authorization = `Basic ${auth}`
  } else {
    const realm = /realm="([^"]+)"/.exec(challenge)?.[1]
    if (!realm) return res
    const service = /service="([^"]+)"/.exec(challenge)?.[1]
    const token = new URL(realm)
    if (service) token.searchParams.set('service', service)
    token.searchParams.set('scope', `repository:${name}:pull,push`)
    const t = await fetch(token, { headers: auth ? { authorization: `Basic ${auth}` } : {}, signal: AbortSignal.timeout(30_000) })
    if (!t.ok) return res
    const { token: bearer, access_token: access } = (await t.json()) as { token?: string; access_token?: string }
    headers.authorization = `Bearer ${bearer ?? access}`
  }
  res = await send()
  return res
}

async function readIndex(repository: string, digest: string, env: NodeJS.ProcessEnv): Promise<Index | undefined> {
  const res = await registry('GET', repository, `manifests/${referrersTag(repository, digest).tag}`, env)
  if (res.status === 404) return undefined
  if (!res.ok) throw new PipelineError(`scan verdict: ${repository} answered ${res.status} to reading the referrers of ${digest.slice(0, 19)}…`)
  return (await res.json()) as Index
}

/**
 * Attests `predicateFile` (a scan result) for `call.image` into its verdict
 * repository and leaves that digest's referrers there at exactly this one.
 */
export async function publishVerdict(call: CosignCall, signer: Signer, predicateFile: string): Promise<string> {
  const [repository, digest] = call.image.split('@') as [string, string]
  const target = verdictRepository(repository)
  const env = { ...process.env, ...call.env }
  const before = await readIndex(target, digest, env)
  await attestImage({ ...call, env: { ...call.env, COSIGN_REPOSITORY: target } }, signer, SCAN_PREDICATE_TYPE, predicateFile)
  const after = await readIndex(target, digest, env)
  if (!after) throw new PipelineError(`scan verdict: ${target} keeps no referrers tag for ${digest.slice(0, 19)}… (a registry with the OCI referrers API), so older verdicts cannot be cut; the admission controller would judge an arbitrary one`)
  const added = after.manifests.filter((m) => !before?.manifests.some((b) => b.digest === m.digest))
  if (added.length !== 1) throw new PipelineError(`scan verdict: expected the one verdict just written among the referrers of ${digest.slice(0, 19)}… in ${target}, found ${added.length} new (another scan of the same digest at the same time?)`)
  if (after.manifests.length > 1) {
    const res = await registry('PUT', target, `manifests/${referrersTag(target, digest).tag}`, env, JSON.stringify({ ...after, manifests: added }))
    if (!res.ok) throw new PipelineError(`scan verdict: ${target} refused the referrers index with only the newest verdict (${res.status} ${(await res.text()).slice(0, 200)})`)
  }
  return `${target}@${added[0]!.digest}`
}
