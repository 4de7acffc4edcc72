/**
 * The in-toto statements the pipeline attaches to an image digest, and the
 * checks deploy runs on them. Plain functions on parsed JSON: cosign proves who
 * signed a statement, these prove it says what a deployable image needs.
 */
import { createHash } from 'node:crypto'
import { PipelineError } from '../core/errors.ts'
import { VERSIONS } from '../tools/versions.ts'
import type { Decision } from '../scan/scan-policy.ts'
import { policyDifference, type AppliedPolicy } from '../scan/committed-policy.ts'

/** The scan result's predicate type (cosign `--type` accepts a URI). */
export const SCAN_PREDICATE_TYPE = 'https://doc-server.dev/attestations/scan/v1'
/** cosign's short name for SLSA provenance v1 and the type it records. */
export const PROVENANCE_TYPE = 'slsaprovenance1'
export const PROVENANCE_PREDICATE_TYPE = 'https://slsa.dev/provenance/v1'
export const SBOM_TYPE = 'cyclonedx'
export const SBOM_PREDICATE_TYPE = 'https://cyclonedx.org/bom'
/** The build type our provenance describes. */
export const BUILD_TYPE = 'https://doc-server.dev/build/dockerfile/v1'
/** The severities every deployable scan must have blocked on, whatever SCAN_SEVERITIES said. */
export const REQUIRED_SEVERITIES = ['HIGH', 'CRITICAL'] as const

const DIGEST = /^sha256:[a-f0-9]{64}$/

export interface ProvenanceFacts {
  builderId: string
  /** Where the source lives (the OCI `source` label). */
  repository: string
  commit: string
  branch: string | null
  dirty: boolean
  dockerfile: { path: string; sha256: string }
  buildArgs: Record<string, string>
  startedOn: string
  finishedOn: string
  invocationId: string
}

/** SLSA provenance v1 for one build of Dockerfile.optimized. */
export function provenancePredicate(f: ProvenanceFacts) {
  return {
    buildDefinition: {
      buildType: BUILD_TYPE,
      externalParameters: { repository: f.repository, ref: f.branch, dockerfile: f.dockerfile.path, buildArgs: f.buildArgs },
      internalParameters: { dirty: f.dirty },
      resolvedDependencies: [
        { uri: `git+${f.repository}`, digest: { gitCommit: f.commit } },
        { uri: f.dockerfile.path, digest: { sha256: f.dockerfile.sha256 } },
      ],
    },
    runDetails: {
      builder: { id: f.builderId },
      metadata: { invocationId: f.invocationId, startedOn: f.startedOn, finishedOn: f.finishedOn },
    },
  }
}

export interface ScanFacts {
  digest: string
  repository: string
  decision: Decision
  /** The policy the gate applied, and its digest (see lib/scan/committed-policy.ts). */
  policy: AppliedPolicy & { digest: string }
  trivyVersion: string
  db: { source: string; updatedAt: string; repository?: string | null; digest?: string | null; advisories?: number | null; advisoriesHash?: string }
  scannedAt: string
  /** `rescan`: a digest scanned again later (the nightly rescan of what runs); `build`: the digest the build stage pushed. */
  kind: 'build' | 'rescan'
}

/** The scan result as a predicate: what the gate decided, under which policy, with which scanner and DB. */
export function scanPredicate(f: ScanFacts) {
  return {
    image: { repository: f.repository, digest: f.digest },
    decision: f.decision.decision,
    reason: f.decision.reason,
    policy: { digest: f.policy.digest, blockingSeverities: f.policy.severities, ignoreUnfixed: f.policy.ignoreUnfixed, ignoreMaxDays: f.policy.ignoreMaxDays, ignoreFile: f.policy.ignoreFile, ignoreFileSha256: f.policy.ignoreFileSha256 },
    counts: f.decision.counts,
    blockingIds: f.decision.blockingIds,
    ignored: f.decision.ignored.map((e) => ({ id: e.id, expiredAt: e.expiredAt, statement: e.statement, findings: e.findings })),
    scanner: { name: 'trivy', version: f.trivyVersion, db: f.db },
    scannedAt: f.scannedAt,
    kind: f.kind,
  }
}

export interface Statement {
  _type?: string
  predicateType?: string
  subject?: { name?: string; digest?: Record<string, string> }[]
  predicate?: Record<string, unknown>
}

export interface VerifiedStatement {
  statement: Statement
  /** Who signed it, when known (the verifier it verified against). */
  signer?: string
  /** sha256 of the signed payload (the statement as signed): what reports/deploy.json records. */
  digest: string
}

/** The in-toto statements inside the DSSE envelopes cosign printed (or a Sigstore bundle holding one). */
export function parseEnvelopes(lines: readonly string[]): VerifiedStatement[] {
  return lines.map((line) => {
    let env: { payload?: string; dsseEnvelope?: { payload?: string } }
    try {
      env = JSON.parse(line) as typeof env
    } catch {
      throw new PipelineError('deploy: refused: cosign printed an attestation that is not JSON')
    }
    const payload = env.payload ?? env.dsseEnvelope?.payload
    if (!payload) throw new PipelineError('deploy: refused: an attestation has no payload')
    const raw = Buffer.from(payload, 'base64')
    let statement: Statement
    try {
      statement = JSON.parse(raw.toString('utf8')) as Statement
    } catch {
      throw new PipelineError('deploy: refused: an attestation payload is not an in-toto statement')
    }
    return { statement, digest: `sha256:${createHash('sha256').update(new Uint8Array(raw)).digest('hex')}` }
  })
}

const refused = (why: string) => new PipelineError(`deploy: refused: ${why}`)
const short = (d: string) => `${d.slice(0, 19)}…`

/**
 * Only statements about exactly this digest. One that names another subject
 * was copied from another image: that is refused outright, not skipped.
 */
export function forDigest(all: readonly VerifiedStatement[], digest: string, predicateType: string, what: string): VerifiedStatement[] {
  if (!DIGEST.test(digest)) throw refused(`"${digest}" is not sha256:<64 hex>`)
  const hex = digest.slice('sha256:'.length)
  const ofType = all.filter((s) => s.statement.predicateType === predicateType)
  for (const s of ofType) {
    const subjects = (s.statement.subject ?? []).map((x) => x.digest?.sha256)
    if (!subjects.includes(hex)) throw refused(`a ${what} attestation attached to ${short(digest)} is about ${subjects[0] ? short(`sha256:${subjects[0]}`) : 'no digest'}: copied from another image`)
  }
  if (ofType.length === 0) throw refused(`${short(digest)} has no ${what} attestation (${predicateType})`)
  return ofType
}

export interface ScanExpectations {
  digest: string
  now: Date
  maxAgeSecs: number
  /** The committed scan policy at the commit deployed, and its digest: only scans made under it count. */
  policy: { digest: string; committed: AppliedPolicy }
  /** The environment's bounds on the DB a passing scan used. */
  db: { maxAgeSecs: number; sources: readonly string[] }
  /** Trivy version the pipeline pins (bare, no v). */
  trivyVersion?: string
}

export interface ScanVerdict {
  attestation: string
  scannedAt: string
  trivy: string
  db: unknown
  blockingSeverities: string[]
  ignored: string[]
  policyDigest: string
  /** Who signed the scan deploy relied on. */
  signer: string | null
  /** Scan results of this digest under the committed policy that were read (passes and failures). */
  verdicts: number
}

const fmtAge = (secs: number) => (secs >= 7200 ? `${Math.round(secs / 360) / 10} h` : `${Math.round(secs / 60)} min`)

interface ScanPredicate {
  image?: { digest?: string }
  decision?: string
  reason?: string
  policy?: { digest?: string; blockingSeverities?: unknown; ignoreUnfixed?: unknown; ignoreMaxDays?: unknown; ignoreFile?: unknown; ignoreFileSha256?: unknown }
  blockingIds?: unknown
  ignored?: { id?: string; expiredAt?: string }[]
  scanner?: { name?: string; version?: string; db?: { source?: string; updatedAt?: string } }
  scannedAt?: string
  kind?: string
}

const validDay = (text: unknown): text is string => typeof text === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(text) && new Date(`${text}T00:00:00Z`).toISOString().startsWith(text)

/** "rescan by … at …: 1 blocking (CVE-2021-45710)" for a refusal. */
function describeScan(s: VerifiedStatement, p: ScanPredicate): string {
  const ids = Array.isArray(p.blockingIds) ? (p.blockingIds as unknown[]).map(String) : []
  const who = s.signer ? ` signed by ${s.signer}` : ''
  return `the ${p.kind === 'rescan' ? 'rescan' : 'scan'} at ${p.scannedAt}${who} found ${p.reason ?? 'no reason recorded'}${ids.length ? ` (${ids.join(', ')})` : ''}`
}

/**
 * The scan results of the digest decide together, not the newest alone:
 * only scans made under the committed policy count (one under a laxer policy
 * proves nothing, whoever signed it); among those, the newest pass must not
 * be followed by a failure (a failing rescan blocks until a newer pass). That
 * pass must be by the pinned Trivy, have blocked on at least HIGH and
 * CRITICAL, be no older than `maxAgeSecs`, have used a DB the environment
 * accepts and that was fresh enough, and rely on no ignore entry that has
 * expired. A result with an unreadable or future time is refused, never sorted.
 */
export function checkScan(statements: readonly VerifiedStatement[], e: ScanExpectations): ScanVerdict {
  const mine = forDigest(statements, e.digest, SCAN_PREDICATE_TYPE, 'scan').map((s) => ({ s, p: (s.statement.predicate ?? {}) as ScanPredicate }))
  const times = new Map<VerifiedStatement, number>()
  for (const { s, p } of mine) {
    const at = Date.parse(p.scannedAt ?? '')
    if (typeof p.scannedAt !== 'string' || Number.isNaN(at)) throw refused(`a scan attestation of ${short(e.digest)} (${short(s.digest)}) has no readable scan time (${JSON.stringify(p.scannedAt ?? null)})`)
    if (at > e.now.getTime() + 300_000) throw refused(`a scan attestation of ${short(e.digest)} (${short(s.digest)}) is dated in the future (${p.scannedAt})`)
    if (p.image?.digest !== e.digest) throw refused(`a scan attestation attached to ${short(e.digest)} names image ${p.image?.digest ? short(p.image.digest) : 'none'}`)
    times.set(s, at)
  }
  const when = (x: { s: VerifiedStatement }) => times.get(x.s)!
  const committed = mine.filter(({ p }) => p.policy?.digest === e.policy.digest).sort((a, b) => when(b) - when(a))
  if (committed.length === 0) {
    const newest = [...mine].sort((a, b) => when(b) - when(a))[0]!
    const attested = newest.p.policy ?? {}
    const seen = { severities: Array.isArray(attested.blockingSeverities) ? (attested.blockingSeverities as unknown[]).map(String) : [], ignoreUnfixed: attested.ignoreUnfixed as boolean, ignoreMaxDays: attested.ignoreMaxDays as number, ignoreFile: attested.ignoreFile as string, ignoreFileSha256: attested.ignoreFileSha256 as string }
    throw refused(`no scan of ${short(e.digest)} was made under the committed scan policy (${short(e.policy.digest)}); the newest, at ${newest.p.scannedAt}, was made under another: ${policyDifference(seen, e.policy.committed)}`)
  }
  const pass = committed.find(({ p }) => p.decision === 'pass')
  if (!pass) throw refused(`the scan of ${short(e.digest)} did not pass: ${describeScan(committed[0]!.s, committed[0]!.p)}`)
  const failedSince = committed.filter((x) => x.p.decision !== 'pass' && when(x) > when(pass))
  if (failedSince.length > 0) {
    const f = failedSince[failedSince.length - 1]!
    throw refused(`a newer scan of ${short(e.digest)} failed after the pass of ${pass.p.scannedAt}: ${describeScan(f.s, f.p)}; a newer passing scan must follow before it deploys`)
  }
  const p = pass.p
  const pinned = e.trivyVersion ?? VERSIONS.trivy.replace(/^v/, '')
  if (p.scanner?.name !== 'trivy' || p.scanner.version !== pinned) throw refused(`the scan of ${short(e.digest)} was made by ${p.scanner?.name ?? '?'} ${p.scanner?.version ?? '?'}, not the pinned Trivy ${pinned}`)
  const severities = Array.isArray(p.policy?.blockingSeverities) ? (p.policy.blockingSeverities as unknown[]).map(String) : []
  const missing = REQUIRED_SEVERITIES.filter((s) => !severities.includes(s))
  if (missing.length > 0) throw refused(`the scan of ${short(e.digest)} did not block on ${missing.join(', ')} (it blocked on ${severities.join(', ') || 'nothing'})`)
  const age = (e.now.getTime() - when(pass)) / 1000
  if (age > e.maxAgeSecs) throw refused(`the scan of ${short(e.digest)} is ${fmtAge(age)} old, over the bound of ${fmtAge(e.maxAgeSecs)} (SCAN_MAX_AGE or the environment's scan.maxAge); run the scan stage again`)
  const db = p.scanner.db ?? {}
  if (!e.db.sources.includes(String(db.source))) throw refused(`the scan of ${short(e.digest)} used a ${db.source ?? 'unnamed'} vulnerability DB; this environment accepts ${e.db.sources.join(' or ')}`)
  const built = Date.parse(db.updatedAt ?? '')
  if (Number.isNaN(built)) throw refused(`the scan of ${short(e.digest)} does not say when its vulnerability DB was built`)
  const dbAge = (when(pass) - built) / 1000
  if (dbAge > e.db.maxAgeSecs) throw refused(`the scan of ${short(e.digest)} used a vulnerability DB ${fmtAge(dbAge)} old at scan time, over this environment's scan.dbMaxAge (${fmtAge(e.db.maxAgeSecs)})`)
  const day = e.now.toISOString().slice(0, 10)
  for (const i of p.ignored ?? []) {
    if (!validDay(i.expiredAt)) throw refused(`the scan of ${short(e.digest)} relied on ignore entry ${i.id ?? '?'} with an expiry that is not a date (${JSON.stringify(i.expiredAt ?? null)})`)
    if (i.expiredAt <= day) throw refused(`the scan of ${short(e.digest)} relied on ignore entry ${i.id ?? '?'}, which expired on ${i.expiredAt}; run the scan stage again`)
  }
  return { attestation: pass.s.digest, scannedAt: p.scannedAt!, trivy: p.scanner.version, db: p.scanner.db ?? null, blockingSeverities: severities, ignored: (p.ignored ?? []).map((i) => String(i.id)), policyDigest: e.policy.digest, signer: pass.s.signer ?? null, verdicts: committed.length }
}

export interface ProvenanceExpectations {
  digest: string
  repository: string
  /** The commit build.json names. */
  commit: string
  /** The local cluster accepts a build of uncommitted changes; a real cluster never does. */
  allowDirty: boolean
  /** Whether a builder id is one of the environment's image signers (a workflow run, or the local pipeline for a key). */
  builder: (id: string) => boolean
}

export interface ProvenanceVerdict {
  attestation: string
  builder: string
  repository: string
  commit: string
  dirty: boolean
}

/** Provenance for exactly this digest, from this repository and commit, of a clean tree (unless allowed). */
export function checkProvenance(statements: readonly VerifiedStatement[], e: ProvenanceExpectations): ProvenanceVerdict {
  const mine = forDigest(statements, e.digest, PROVENANCE_PREDICATE_TYPE, 'provenance')
  const finished = (s: VerifiedStatement) => Date.parse(String((s.statement.predicate as { runDetails?: { metadata?: { finishedOn?: string } } } | undefined)?.runDetails?.metadata?.finishedOn ?? '')) || 0
  const newest = [...mine].sort((a, b) => finished(b) - finished(a))[0]!
  const p = (newest.statement.predicate ?? {}) as ReturnType<typeof provenancePredicate>
  const def = p.buildDefinition
  if (def?.buildType !== BUILD_TYPE) throw refused(`the provenance of ${short(e.digest)} is not of this pipeline's build type (${String(def?.buildType)})`)
  const repository = def.externalParameters?.repository
  if (repository !== e.repository) throw refused(`${short(e.digest)} was built from ${repository ?? 'an unnamed repository'}, not ${e.repository}`)
  const commit = def.resolvedDependencies?.find((d) => d.uri === `git+${repository}`)?.digest as { gitCommit?: string } | undefined
  if (!commit?.gitCommit) throw refused(`the provenance of ${short(e.digest)} names no commit`)
  if (commit.gitCommit !== e.commit) throw refused(`${short(e.digest)} was built from commit ${commit.gitCommit.slice(0, 12)}, not ${e.commit.slice(0, 12)} as build.json says`)
  const dirty = def.internalParameters?.dirty
  if (typeof dirty !== 'boolean') throw refused(`the provenance of ${short(e.digest)} does not say whether the tree was clean`)
  if (dirty && !e.allowDirty) throw refused(`${short(e.digest)} was built from a working tree with uncommitted changes; commit and rebuild (only the local cluster takes dirty builds)`)
  const builder = p.runDetails?.builder?.id
  if (typeof builder !== 'string' || !e.builder(builder)) throw refused(`the provenance of ${short(e.digest)} names builder ${builder ?? 'none'}, which is not one of this environment's signers`)
  return { attestation: newest.digest, builder, repository, commit: commit.gitCommit, dirty }
}

/** JSON with every object's keys sorted: two documents are the same statement when these agree, however they were spaced or ordered. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}

/**
 * Whether `predicate` is already attested among `existing` (verified, same
 * signer, same type): for a scan result or an SBOM only an identical
 * predicate, so every new verdict is attested; for provenance, one whose
 * build definition and builder are identical, since a rebuild of the same
 * definition to the same digest only adds its run's id and times.
 */
export function alreadyAttested(existing: readonly VerifiedStatement[], predicateType: string, predicate: unknown): boolean {
  const key = (p: unknown) => {
    if (predicateType !== PROVENANCE_PREDICATE_TYPE) return canonicalJson(p)
    const prov = (p ?? {}) as { buildDefinition?: unknown; runDetails?: { builder?: unknown } }
    return canonicalJson({ buildDefinition: prov.buildDefinition, builder: prov.runDetails?.builder })
  }
  const want = key(predicate)
  return existing.some((s) => s.statement.predicateType === predicateType && key(s.statement.predicate) === want)
}
