import { createHash,randomBytes } from 'node:crypto'
import { existsSync,mkdirSync,mkdtempSync,readFileSync,renameSync,rmSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PipelineError, debugOn } from '../core/errors.ts'
import { ANY_EXIT, outputDetails, run } from '../core/run.ts'
import { quietly, say } from '../core/output.ts'
import { parseEnvelopes, type VerifiedStatement } from './attest.ts'

/** Who signs: the local key pair, or the workflow's OIDC identity (keyless, GitHub Actions). */
export type Signer = { kind: 'key'; key: string; pub: string; password: string } | { kind: 'keyless' }

/** Who must have signed: the local public key, or this repository's workflow. */
export type Verifier =
  | { kind: 'key'; pub: string; fingerprint: string }
  /** A GitHub Actions certificate: exactly `identity` (or matching `identityRegexp`), from `issuer`, its workflow-trigger and workflow-ref extensions naming `trigger` and `ref` when given. */
  | { kind: 'keyless'; identity?: string; identityRegexp?: string; issuer: string; trigger?: string; ref?: string }



/**
 * The identity a keyless signature made in this job carries: the running
 * workflow at the ref it ran from (GITHUB_WORKFLOW_REF), as Fulcio writes it
 * into the certificate. Only for reports; who may sign is decided by the
 * environment deployed to (lib/sign/signers.ts).
 */
export function workflowRunIdentity(env: NodeJS.ProcessEnv = process.env): string {
  const ref = env.GITHUB_WORKFLOW_REF ?? ''
  if (!/^[\w.-]+\/[\w.-]+\/\.github\/workflows\/[^@\s]+@refs\/\S+$/.test(ref)) throw new PipelineError(`signing: GITHUB_WORKFLOW_REF "${ref}" is not owner/repo/.github/workflows/<file>@<ref>`)
  return `${env.GITHUB_SERVER_URL ?? 'https://github.com'}/${ref}`
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
export async function ensureLocalKeyPair(cosign: string, cache: string): Promise<Signer & { kind: 'key' }> {
  const p = localKeyPaths(cache)
  if (!existsSync(p.dir)) {
    const tmp = `${p.dir}.tmp-${process.pid}`
    rmSync(tmp, { recursive: true, force: true })
    mkdirSync(tmp, { recursive: true, mode: 0o700 })
    const password = randomBytes(32).toString('base64url')
    writeFileSync(join(tmp, 'cosign.password'), password, { mode: 0o600 })
    say(`creating the local signing key pair in ${p.dir} (once per machine)`)
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
export function localVerifier(cache: string): Extract<Verifier, { kind: 'key' }> {
  const { pub } = localKeyPaths(cache)
  if (!existsSync(pub)) throw new PipelineError(`deploy: refused: no local signing key (${pub}); nothing this machine built was signed, run the build stage first`)
  return { kind: 'key', pub, fingerprint: keyFingerprint(readFileSync(pub, 'utf8')) }
}

/** How reports and errors name a verifier. */
export function describeVerifier(v: Verifier): string {
  if (v.kind === 'key') return `key ${v.fingerprint}`
  return `${v.identity ?? v.identityRegexp ?? '?'}${v.trigger ? ` (${v.trigger})` : ''}`
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

export function verifierArgs(v: Verifier): string[] {
  if (v.kind === 'key') return ['--key', v.pub, '--insecure-ignore-tlog=true']
  return [
    ...(v.identity ? ['--certificate-identity', v.identity] : ['--certificate-identity-regexp', v.identityRegexp ?? '^$']),
    '--certificate-oidc-issuer', v.issuer,
    ...(v.trigger ? ['--certificate-github-workflow-trigger', v.trigger] : []),
    ...(v.ref ? ['--certificate-github-workflow-ref', v.ref] : []),
  ]
}

export interface CosignCall {
  cosign: string
  /** repository@sha256:… */
  image: string
  /** Variables for the registry (DOCKER_CONFIG of a throwaway login), beyond the signer's own. */
  env?: NodeJS.ProcessEnv
}

/** Signs exactly the digest (never a tag). */
export async function signImage(c: CosignCall, s: Signer): Promise<void> {
  const { env, secrets } = signerEnv(s, c.env)
  await run([c.cosign, 'sign', '--yes', ...signerArgs(s), ...registryFlags(c.image), c.image], { env, secrets, timeoutMs: 180_000 })
}

/** Attaches a signed in-toto attestation (`type`: cosign's short name or a predicate type URI) to the digest. */
export async function attestImage(c: CosignCall, s: Signer, type: string, predicateFile: string): Promise<void> {
  const { env, secrets } = signerEnv(s, c.env)
  await run([c.cosign, 'attest', '--yes', '--type', type, '--predicate', predicateFile, ...signerArgs(s), ...registryFlags(c.image), c.image], { env, secrets, timeoutMs: 180_000 })
}

/** cosign's complaint, one line: its last `Error:` line, else the exit. */
export function cosignReason(err: unknown): string {
  const details = err instanceof PipelineError ? (err.details ?? '') : ''
  const line = details.split('\n').reverse().find((l) => /^Error:|error during command execution/.test(l.trim()))
  return (line ?? (err as Error).message).replace(/^Error:\s*/, '').trim()
}

/** The in-toto predicate type cosign v3 signs an image with (`cosign sign` writes it as a bundle like any attestation). */
export const SIGNATURE_PREDICATE_TYPE = 'https://sigstore.dev/cosign/sign/v1'

/** Whether the verified statements include a signature of the image itself, not merely attestations beside it. */
export function signsDigest(statements: readonly VerifiedStatement[], digest: string): boolean {
  const hex = digest.replace(/^sha256:/, '')
  return statements.some((s) => s.statement.predicateType === SIGNATURE_PREDICATE_TYPE && (s.statement.subject ?? []).some((x) => x.digest?.sha256 === hex))
}

/** The media type prefix of a Sigstore bundle (cosign v3 stores every signature and attestation as one). */
const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle'
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', digest: `sha256:${createHash('sha256').update('{}').digest('hex')}`, size: 2 }

/** The bundles among `cosign download attestation`'s lines (one JSON document a line; older formats are skipped). */
export function bundleLines(output: string): string[] {
  return output.split('\n').filter((line) => {
    if (!line.trim().startsWith('{')) return false
    try {
      return String((JSON.parse(line) as { mediaType?: unknown }).mediaType ?? '').startsWith(BUNDLE_MEDIA_TYPE)
    } catch {
      return false
    }
  })
}

/**
 * An OCI image layout holding `bundles` as referrers of `digest`, the layout
 * `cosign save` writes and `cosign verify --local-image` reads: index.json
 * names the image (annotation kind=dev.cosignproject.cosign/image), and each
 * bundle is a blob with a manifest whose subject is that image. The image's
 * own blobs are not needed to verify what refers to it.
 */
export function writeReferrerLayout(dir: string, digest: string, bundles: readonly string[]): void {
  const blobs = join(dir, 'blobs', 'sha256')
  mkdirSync(blobs, { recursive: true })
  const blob = (text: string) => {
    const hex = createHash('sha256').update(text).digest('hex')
    writeFileSync(join(blobs, hex), text)
    return { digest: `sha256:${hex}`, size: Buffer.byteLength(text) }
  }
  blob('{}')
  for (const b of bundles) {
    const mediaType = String((JSON.parse(b) as { mediaType?: unknown }).mediaType)
    const layer = blob(b)
    blob(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: mediaType, config: EMPTY_CONFIG, layers: [{ mediaType, ...layer }], subject: { mediaType: OCI_MANIFEST, digest, size: 0 } }))
  }
  writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}')
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: OCI_MANIFEST, digest, size: 0, annotations: { kind: 'dev.cosignproject.cosign/image' } }] }))
}

/** What one read of a digest's referrers proved. */
export interface Referrers {
  /** Bundles the registry holds for the digest. */
  bundles: number
  /** The statements (signatures and attestations, any type) whose signature verified against the verifier, about this digest. */
  statements: VerifiedStatement[]
}

/**
 * cosign, quietly: the command and everything it printed go to `log` (a
 * report's details), and to the screen only with DEBUG. An exit whose stderr
 * matches `answer` is an answer (nothing found), not a failure: '' is
 * returned. A failure throws cosign's own reason, with the tail of its stderr
 * as details: its stdout here is bundles and payloads, which belong in the
 * log, not under a one-line error.
 */
async function quietCosign(argv: string[], c: CosignCall, log: string[], answer?: RegExp): Promise<string> {
  log.push(`$ cosign ${argv.slice(1).join(' ')}`)
  const go = () => run(argv, { env: { ...process.env, ...c.env }, timeoutMs: 180_000, okCodes: ANY_EXIT })
  const r = debugOn() ? await go() : await quietly(go)
  log.push(...[r.stderr, r.stdout].filter((t) => t.trim()).map((t) => t.replace(/\s+$/, '')))
  if (r.exitCode === 0) return r.stdout
  log.push(`(exit ${r.exitCode})`)
  if (answer?.test(r.stderr)) return ''
  throw new PipelineError(cosignReason(new PipelineError(`\`cosign ${argv[1]}\` exited ${r.exitCode}`, r.stderr)), outputDetails(r.stderr))
}

/**
 * Every signature and attestation of the digest, read from the registry once
 * and verified offline in one cosign run, so the time does not grow with how
 * often the digest was signed, built or scanned. `cosign download attestation`
 * fetches the referrers index and each bundle once; `cosign verify
 * --local-image` then checks every bundle's signature against the verifier and
 * its in-toto subject against the digest, and prints the envelopes that pass.
 * A registry that cannot be read throws; bundles that do not verify (another
 * signer, an edited payload, another image's statement) are simply absent.
 * cosign's whole output goes to `log`.
 */
export async function verifiedReferrers(c: CosignCall, v: Verifier, log: string[] = []): Promise<Referrers> {
  const bundles = await downloadReferrers(c, log)
  return { bundles: bundles.length, statements: await verifyBundles(c, bundles, v, log) }
}

/** Every bundle the registry holds for the digest, read once (a registry that cannot be read throws). */
export async function downloadReferrers(c: CosignCall, log: string[] = []): Promise<string[]> {
  const digest = c.image.split('@')[1] ?? ''
  const downloaded = await quietCosign([c.cosign, 'download', 'attestation', ...registryFlags(c.image), c.image], c, log).catch((err: unknown): never => {
    throw new PipelineError(`cannot read the signatures and attestations of ${digest.slice(0, 19)}… from ${c.image.split('@')[0]}: ${(err as Error).message}`, err instanceof PipelineError ? err.details : undefined)
  })
  return bundleLines(downloaded)
}

/**
 * The statements among `bundles` whose signature verifies against `v`,
 * offline (`cosign verify --local-image` on a layout of them), each tagged
 * with who signed it. Bundles by anyone else are simply absent.
 */
export async function verifyBundles(c: CosignCall, bundles: readonly string[], v: Verifier, log: string[] = []): Promise<VerifiedStatement[]> {
  if (bundles.length === 0) return []
  const digest = c.image.split('@')[1] ?? ''
  const dir = mkdtempSync(join(tmpdir(), 'referrers-'))
  try {
    writeReferrerLayout(dir, digest, bundles)
    // None verifying is an answer (cosign exits 1, "no matching attestations"), not a failure.
    const out = await quietCosign([c.cosign, 'verify', '--local-image', ...verifierArgs(v), '--output', 'text', dir], c, log, /no matching attestations/).catch((err: unknown): never => {
      throw new PipelineError(`cosign could not verify the bundles of ${digest.slice(0, 19)}…: ${(err as Error).message}`, err instanceof PipelineError ? err.details : undefined)
    })
    const signer = describeVerifier(v)
    return parseEnvelopes(out.split('\n').filter((l) => l.trim().startsWith('{'))).map((s) => ({ ...s, signer }))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The verified statements of one predicate type, from one read of the referrers. */
export function attestationsOf(r: Referrers, predicateType: string): VerifiedStatement[] {
  return r.statements.filter((s) => s.statement.predicateType === predicateType)
}
