/**
 * Deploy's proof that the image is one this pipeline built, scanned and
 * signed, read from the registry (never from local reports), before any
 * cluster is touched.
 */
import { ociBuildArgs } from '../build/docker.ts'
import type { Config } from '../core/config.ts'
import { repoRoot } from '../core/paths.ts'
import { PipelineError } from '../core/errors.ts'
import { PROVENANCE_PREDICATE_TYPE, SBOM_PREDICATE_TYPE, SCAN_PREDICATE_TYPE, checkProvenance, checkScan, forDigest, type ProvenanceVerdict, type ScanVerdict, type VerifiedStatement } from '../sign/attest.ts'
import { attestationsOf, describeVerifier, localVerifier, signsDigest, verifiedReferrers, workflowIdentity, type Referrers, type Verifier } from '../sign/cosign.ts'
import { ensureCosign } from '../tools/cosign.ts'
import { quietly, say } from '../core/output.ts'

/** What reports/deploy.json records under `verified`. */
export interface Verified {
  identity: string
  scan: ScanVerdict
  provenance: ProvenanceVerdict
  sbom: { attestation: string }
  /** Said aloud when the check was relaxed (a dirty build on the local cluster). */
  note: string | null
}

/** In GitHub Actions, this repository's ci.yml (keyless); elsewhere the machine's own public key. */
export function expectedVerifier(config: Config, env: NodeJS.ProcessEnv = process.env): Verifier {
  if (config.github) return workflowIdentity(env.GITHUB_SERVER_URL ?? 'https://github.com', env.GITHUB_REPOSITORY ?? '')
  return localVerifier(config.cacheDir)
}

export interface VerifyOptions {
  cosign: string
  /** `<DOC_SERVER_CACHE_DIR>`: bundles already read are kept there. */
  cache: string
  verifier: Verifier
  repository: string
  digest: string
  /** The repository the source must come from (the OCI `source` label the build sets). */
  sourceRepository: string
  commit?: string
  maxAgeSecs: number
  allowDirty: boolean
  now?: Date
  /** Receives cosign's commands and whole output (the report's details), also when a check fails. */
  log?: string[]
}

const short = (d: string) => `${d.slice(0, 19)}…`

/** The verified statements of one type; none is a refusal naming the type, the signer and what the registry held. */
function required(r: Referrers, o: VerifyOptions, predicateType: string): VerifiedStatement[] {
  const found = attestationsOf(r, predicateType)
  if (found.length === 0) throw new PipelineError(`deploy: refused: ${short(o.digest)} has no ${predicateType} attestation signed by ${describeVerifier(o.verifier)} (${r.statements.length} of its ${r.bundles} bundle(s) verify, none of that type)`)
  return found
}

/**
 * Signature, scan, provenance and SBOM of `repository@digest`, from one read
 * of its referrers verified offline; the first failing check throws one line.
 * Each check passed says one line (who signed, which scan, which provenance,
 * which SBOM); cosign's own output goes to `log`, and to the screen only with
 * DEBUG.
 */
export async function verifyImage(o: VerifyOptions): Promise<Verified> {
  const call = { cosign: o.cosign, image: `${o.repository}@${o.digest}` }
  let r: Referrers
  try {
    r = await verifiedReferrers(call, o.verifier, o.cache, o.log)
  } catch (err) {
    throw new PipelineError(`deploy: refused: ${(err as Error).message}`, err instanceof PipelineError ? err.details : undefined)
  }
  const identity = describeVerifier(o.verifier)
  if (!signsDigest(r.statements, o.digest)) {
    const why = r.bundles === 0 ? 'the registry holds no signature or attestation for it' : r.statements.length === 0 ? `none of its ${r.bundles} bundle(s) verifies` : 'only attestations verify, no image signature (cosign sign) for this digest'
    throw new PipelineError(`deploy: refused: ${short(o.digest)} has no signature by ${identity}: ${why}`)
  }
  say(`signature: signed by ${identity}`)
  const scan = checkScan(required(r, o, SCAN_PREDICATE_TYPE), { digest: o.digest, now: o.now ?? new Date(), maxAgeSecs: o.maxAgeSecs })
  say(`scan: passed at ${scan.scannedAt} by Trivy ${scan.trivy}, blocking ${scan.blockingSeverities.join(', ')} (attestation ${short(scan.attestation)})`)
  const provenance = checkProvenance(required(r, o, PROVENANCE_PREDICATE_TYPE), { digest: o.digest, repository: o.sourceRepository, ...(o.commit ? { commit: o.commit } : {}), allowDirty: o.allowDirty })
  say(`provenance: commit ${provenance.commit.slice(0, 12)}${provenance.dirty ? ' (dirty)' : ''} of ${provenance.repository}, built by ${provenance.builder} (attestation ${short(provenance.attestation)})`)
  const sboms = forDigest(required(r, o, SBOM_PREDICATE_TYPE), o.digest, SBOM_PREDICATE_TYPE, 'SBOM')
  const sbom = sboms[sboms.length - 1]!.digest
  say(`SBOM: CycloneDX (attestation ${short(sbom)})`)
  return {
    identity,
    scan,
    provenance,
    sbom: { attestation: sbom },
    note: provenance.dirty ? 'built from a working tree with uncommitted changes: accepted by the local cluster only' : null,
  }
}

/** The deploy stage's call: the pinned cosign, the expected identity, and the local-cluster allowance for dirty builds. */
export async function verifyForDeploy(config: Config, image: { repository: string; digest: string; commit?: unknown }, log?: string[]): Promise<Verified> {
  const verifier = expectedVerifier(config)
  const cosign = await ensureCosign(config.cacheDir)
  // build.json names the commit as a string (older) or { sha, … }.
  const c = image.commit
  const commit = typeof c === 'string' ? c : typeof (c as { sha?: unknown } | undefined)?.sha === 'string' ? (c as { sha: string }).sha : undefined
  // The same `source` the build stage labels the image with and records in its provenance.
  const sourceRepository = (await quietly(() => ociBuildArgs(repoRoot, commit ?? 'HEAD'))).SOURCE!
  return verifyImage({ cosign, cache: config.cacheDir, verifier, repository: image.repository, digest: image.digest, sourceRepository, ...(commit ? { commit } : {}), maxAgeSecs: config.scanMaxAgeSecs, allowDirty: !config.kubeContext, ...(log ? { log } : {}) })
}
