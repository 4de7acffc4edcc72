import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { ensureGoTool, type GoToolSpec } from '../core/tools.ts'
import { VERSIONS } from '../core/versions.ts'

/** cosign from the Go module proxy, pinned and version-stamped like its release builds. */
export const COSIGN_SPEC: GoToolSpec = {
  binary: 'cosign',
  pkg: 'github.com/sigstore/cosign/v3/cmd/cosign',
  version: VERSIONS.cosign,
  env: { GOTOOLCHAIN: 'local' },
  ldflags: `-s -w -X sigs.k8s.io/release-utils/version.gitVersion=${VERSIONS.cosign}`,
}

/** The pinned cosign, built once per machine; a binary that is not exactly the pinned version is refused. */
export async function ensureCosign(cache: string, onLine?: (line: string) => void): Promise<string> {
  const path = await ensureGoTool(cache, COSIGN_SPEC, onLine)
  const out = await run([path, 'version', '--json'])
  let version = ''
  try {
    version = String((JSON.parse(out.stdout) as { gitVersion?: unknown }).gitVersion ?? '')
  } catch {
    throw new PipelineError(`cosign: ${path} did not report its version`, out.stdout)
  }
  if (version !== VERSIONS.cosign) throw new PipelineError(`cosign: ${path} is ${version || '?'}, not the pinned ${VERSIONS.cosign}; delete it so the pinned one is built`)
  return path
}

/** Who signs: the local key pair, or the workflow's OIDC identity (keyless, GitHub Actions). */
export type Signer = { kind: 'key'; key: string; pub: string; password: string } | { kind: 'keyless' }

/** Who must have signed: the local public key, or this repository's workflow. */
export type Verifier = { kind: 'key'; pub: string; fingerprint: string } | { kind: 'keyless'; identityRegexp: string; issuer: string }

export const GITHUB_OIDC_ISSUER = 'https://token.actions.githubusercontent.com'

const escapeRegexp = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')

/** The certificate identity of this repository's ci.yml, on any ref (keyless signatures in GitHub Actions). */
export function workflowIdentity(serverUrl: string, repository: string): Verifier {
  if (!/^[\w.-]+\/[\w.-]+$/.test(repository)) throw new PipelineError(`signing: GITHUB_REPOSITORY "${repository}" is not owner/name`)
  return { kind: 'keyless', identityRegexp: `^${escapeRegexp(`${serverUrl}/${repository}/.github/workflows/ci.yml@`)}refs/`, issuer: GITHUB_OIDC_ISSUER }
}

export interface LocalKeyPair {
  dir: string
  key: string
  pub: string
  passwordFile: string
}

export function localKeyPaths(cache: string): LocalKeyPair {
  const dir = join(cache, 'signing')
  return { dir, key: join(dir, 'cosign.key'), pub: join(dir, 'cosign.pub'), passwordFile: join(dir, 'cosign.password') }
}

/** sha256 of the public key's PEM: how reports name the local signing key. */
export function keyFingerprint(pubPem: string): string {
  return `sha256:${createHash('sha256').update(pubPem.trim()).digest('hex')}`
}

/**
 * The local signing key pair, created once under `<cache>/signing/` (mode 0700):
 * an encrypted cosign.key, cosign.pub, and the random password that encrypts
 * it. The password reaches cosign only through COSIGN_PASSWORD in its
 * environment, never argv. Built in a temporary directory and renamed, so an
 * interrupted run never leaves half a key pair.
 */
export async function ensureLocalKeyPair(cosign: string, cache: string, onLine?: (line: string) => void): Promise<Signer & { kind: 'key' }> {
  const p = localKeyPaths(cache)
  if (!existsSync(p.dir)) {
    const tmp = `${p.dir}.tmp-${process.pid}`
    rmSync(tmp, { recursive: true, force: true })
    mkdirSync(tmp, { recursive: true, mode: 0o700 })
    const password = randomBytes(32).toString('base64url')
    writeFileSync(join(tmp, 'cosign.password'), password, { mode: 0o600 })
    onLine?.(`creating the local signing key pair in ${p.dir} (once per machine)`)
    await run([cosign, 'generate-key-pair', '--output-key-prefix', join(tmp, 'cosign')], { env: { ...process.env, COSIGN_PASSWORD: password }, secrets: [password], timeoutMs: 60_000 })
    try {
      renameSync(tmp, p.dir)
    } catch {
      rmSync(tmp, { recursive: true, force: true }) // another run created it first
    }
  }
  for (const f of [p.key, p.pub, p.passwordFile]) {
    if (!existsSync(f)) throw new PipelineError(`signing: ${f} is missing; remove ${p.dir} so a new key pair is created (see docs/signing.md, rotating the local key)`)
  }
  return { kind: 'key', key: p.key, pub: p.pub, password: readFileSync(p.passwordFile, 'utf8').trim() }
}

/** The local public key as a verifier. */
export function localVerifier(cache: string): Verifier {
  const { pub } = localKeyPaths(cache)
  if (!existsSync(pub)) throw new PipelineError(`deploy: refused: no local signing key (${pub}); nothing this machine built was signed, run the build stage first`)
  return { kind: 'key', pub, fingerprint: keyFingerprint(readFileSync(pub, 'utf8')) }
}

/** How reports and errors name a verifier. */
export function describeVerifier(v: Verifier): string {
  return v.kind === 'key' ? `key ${v.fingerprint}` : `${v.identityRegexp} (issuer ${v.issuer})`
}

/** Flags for a plain-http registry on loopback (the local one); none for any other registry. */
export function registryFlags(image: string): string[] {
  const host = image.split('/')[0] ?? ''
  return /^(127\.0\.0\.1|localhost)(:\d+)?$/.test(host) ? ['--allow-insecure-registry', '--allow-http-registry'] : []
}

/**
 * Key signing is offline: no transparency log, no signing config fetched from
 * the public Sigstore TUF root. Keyless (GitHub Actions) uses Fulcio and Rekor
 * through the workflow's OIDC token, the cosign defaults.
 */
function signerArgs(s: Signer): string[] {
  return s.kind === 'key' ? ['--key', s.key, '--tlog-upload=false', '--use-signing-config=false'] : []
}

function signerEnv(s: Signer, extra: NodeJS.ProcessEnv = {}): { env: NodeJS.ProcessEnv; secrets: string[] } {
  if (s.kind !== 'key') return { env: { ...process.env, ...extra }, secrets: [] }
  return { env: { ...process.env, ...extra, COSIGN_PASSWORD: s.password }, secrets: [s.password] }
}

function verifierArgs(v: Verifier): string[] {
  return v.kind === 'key' ? ['--key', v.pub, '--insecure-ignore-tlog=true'] : ['--certificate-identity-regexp', v.identityRegexp, '--certificate-oidc-issuer', v.issuer]
}

export interface CosignCall {
  cosign: string
  /** repository@sha256:… */
  image: string
  onLine?: (line: string) => void
  /** Variables for the registry (DOCKER_CONFIG of a throwaway login), beyond the signer's own. */
  env?: NodeJS.ProcessEnv
}

/** Signs exactly the digest (never a tag). */
export async function signImage(c: CosignCall, s: Signer): Promise<void> {
  const { env, secrets } = signerEnv(s, c.env)
  await run([c.cosign, 'sign', '--yes', ...signerArgs(s), ...registryFlags(c.image), c.image], { env, secrets, onLine: c.onLine, timeoutMs: 180_000 })
}

/** Attaches a signed in-toto attestation (`type`: cosign's short name or a predicate type URI) to the digest. */
export async function attestImage(c: CosignCall, s: Signer, type: string, predicateFile: string): Promise<void> {
  const { env, secrets } = signerEnv(s, c.env)
  await run([c.cosign, 'attest', '--yes', '--type', type, '--predicate', predicateFile, ...signerArgs(s), ...registryFlags(c.image), c.image], { env, secrets, onLine: c.onLine, timeoutMs: 180_000 })
}

/** cosign's complaint, one line: its last `Error:` line, else the exit. */
function cosignReason(err: unknown): string {
  const details = err instanceof PipelineError ? (err.details ?? '') : ''
  const line = details.split('\n').reverse().find((l) => /^Error:|error during command execution/.test(l.trim()))
  return (line ?? (err as Error).message).replace(/^Error:\s*/, '').trim()
}

/** The simple-signing types cosign writes for an image signature (v3, and older releases). */
const SIGNATURE_TYPES = ['https://sigstore.dev/cosign/sign/v1', 'cosign container image signature']

/**
 * Whether cosign's verified payloads include a signature of the image itself.
 * `cosign verify` also accepts the attestation bundles beside an image (their
 * payload is an in-toto statement): those alone are not a signature of it.
 */
export function signsDigest(verifyOutput: string, digest: string): boolean {
  let payloads: unknown
  try {
    payloads = JSON.parse(verifyOutput.trim() || '[]')
  } catch {
    return false
  }
  return Array.isArray(payloads) && payloads.some((p) => {
    const critical = (p as { critical?: { type?: string; image?: { 'docker-manifest-digest'?: string } } }).critical
    return SIGNATURE_TYPES.includes(critical?.type ?? '') && critical?.image?.['docker-manifest-digest'] === digest
  })
}

/** Verifies the image's own signature by the verifier; throws one line naming cosign's reason. */
export async function verifySignature(c: CosignCall, v: Verifier): Promise<void> {
  const digest = c.image.split('@')[1] ?? ''
  const refusal = (why: string) => new PipelineError(`deploy: refused: ${digest.slice(0, 19)}… has no signature by ${describeVerifier(v)}: ${why}`)
  let out: string
  try {
    out = (await run([c.cosign, 'verify', ...verifierArgs(v), ...registryFlags(c.image), '--output', 'json', c.image], { onLine: c.onLine, timeoutMs: 180_000 })).stdout
  } catch (err) {
    throw refusal(cosignReason(err))
  }
  if (!signsDigest(out, digest)) throw refusal('only attestations verify, no image signature (cosign sign) for this digest')
}

/**
 * The attestations of one type that verify against the verifier, as cosign
 * prints them (one DSSE envelope per line). None that verify is an error.
 */
export async function verifiedAttestations(c: CosignCall, v: Verifier, type: string): Promise<string[]> {
  try {
    const out = await run([c.cosign, 'verify-attestation', '--type', type, ...verifierArgs(v), ...registryFlags(c.image), c.image], { onLine: c.onLine, timeoutMs: 180_000 })
    return out.stdout.split('\n').filter((l) => l.trim().startsWith('{'))
  } catch (err) {
    throw new PipelineError(`deploy: refused: ${c.image.split('@')[1]?.slice(0, 19)}… has no ${type} attestation signed by ${describeVerifier(v)}: ${cosignReason(err)}`)
  }
}
