/**
 * Deploy's proof that the image is one this pipeline built, scanned and
 * signed, read from the registry (never from local reports), before any
 * cluster is touched.
 */
import { ociBuildArgs } from '../build/docker.ts'
import type { Config } from '../core/config.ts'
import { repoRoot } from '../core/paths.ts'
import { PipelineError } from '../core/errors.ts'
import { PROVENANCE_PREDICATE_TYPE,SBOM_PREDICATE_TYPE,SCAN_PREDICATE_TYPE,checkProvenance,checkScan,forDigest,type ProvenanceVerdict,type ScanVerdict,type VerifiedStatement } from '../sign/attest.ts'
import { describeVerifier,downloadReferrers,localKeyPaths,localVerifier,signsDigest,verifyBundles,type Verifier } from '../sign/cosign.ts'
import { builderIdMatches,verifiersFor } from '../sign/signers.ts'
import { committedPolicy,policyDigest,type AppliedPolicy } from '../scan/committed-policy.ts'
import type { Environment } from './environments.ts'
import { existsSync } from 'node:fs'
import { ensureCosign } from '../tools/cosign.ts'
import { say } from '../core/output.ts'

/** What reports/deploy.json records under `verified`. */
export interface Verified {
  identity: string
  scan: ScanVerdict
  provenance: ProvenanceVerdict
  sbom: { attestation: string }
  /** Said aloud when the check was relaxed (a dirty build on the local cluster). */
  note: string | null
}

export interface VerifyOptions {
  cosign: string
  /** Who may sign the image, its provenance and SBOM (and its scans). */
  imageSigners: readonly Verifier[]
  /** Who may also sign scan results (the nightly rescan), never an image. */
  scanSigners: readonly Verifier[]
  repository: string
  digest: string
  /** The repository the source must come from (the OCI `source` label the build sets). */
  sourceRepository: string
  commit: string
  /** The committed scan policy at `commit`, and its digest. */
  policy: { digest: string; committed: AppliedPolicy }
  maxAgeSecs: number
  db: { maxAgeSecs: number; sources: readonly string[] }
  allowDirty: boolean
  now?: Date
  /** Receives cosign's commands and whole output (the report's details), also when a check fails. */
  log?: string[]
}

const short = (d: string) => `${d.slice(0, 19)}…`
const names = (vs: readonly Verifier[]) => vs.map(describeVerifier).join(' or ')

/** The verified statements of one type; none is a refusal naming the type, the signers and what the registry held. */
function required(statements: readonly VerifiedStatement[], bundles: number, o: VerifyOptions, predicateType: string, signers: readonly Verifier[]): VerifiedStatement[] {
  const found = statements.filter((s) => s.statement.predicateType === predicateType)
  if (found.length === 0) throw new PipelineError(`deploy: refused: ${short(o.digest)} has no ${predicateType} attestation signed by ${names(signers)} (${statements.length} of its ${bundles} bundle(s) verify, none of that type)`)
  return found
}

/**
 * Signature, scan, provenance and SBOM of `repository@digest`, from one read
 * of its referrers verified offline against each allowed signer; the first
 * failing check throws one line. The signature, provenance and SBOM must be
 * by an image signer; a scan result may also be by a scan signer. Each check
 * passed says one line; cosign's own output goes to `log`, and to the screen
 * only with DEBUG.
 */
export async function verifyImage(o: VerifyOptions): Promise<Verified> {
  if (o.imageSigners.length === 0) throw new PipelineError('deploy: refused: this environment declares no signer whose signatures can be checked here (a key signer must be this machine\'s key)')
  const call = { cosign: o.cosign, image: `${o.repository}@${o.digest}` }
  const log = o.log ?? []
  let bundles: string[]
  try {
    bundles = await downloadReferrers(call, log)
  } catch (err) {
    throw new PipelineError(`deploy: refused: ${(err as Error).message}`, err instanceof PipelineError ? err.details : undefined)
  }
  const verified = async (vs: readonly Verifier[]) => (await Promise.all(vs.map((v) => verifyBundles(call, bundles, v, log)))).flat()
  const byImageSigner = await verified(o.imageSigners)
  const signature = byImageSigner.find((s) => signsDigest([s], o.digest))
  if (!signature) {
    const why = bundles.length === 0 ? 'the registry holds no signature or attestation for it' : byImageSigner.length === 0 ? `none of its ${bundles.length} bundle(s) verifies` : 'only attestations verify, no image signature (cosign sign) for this digest'
    throw new PipelineError(`deploy: refused: ${short(o.digest)} has no signature by ${names(o.imageSigners)}: ${why}`)
  }
  const identity = signature.signer ?? names(o.imageSigners)
  say(`signature: signed by ${identity}`)
  const scans = [...byImageSigner, ...(await verified(o.scanSigners))]
  const scan = checkScan(required(scans, bundles.length, o, SCAN_PREDICATE_TYPE, [...o.imageSigners, ...o.scanSigners]), { digest: o.digest, now: o.now ?? new Date(), maxAgeSecs: o.maxAgeSecs, policy: o.policy, db: o.db })
  say(`scan: passed at ${scan.scannedAt} by Trivy ${scan.trivy} under the committed policy ${short(scan.policyDigest)}, signed by ${scan.signer ?? '?'}; no failure since (${scan.verdicts} verdict${scan.verdicts === 1 ? '' : 's'} read)`)
  const builders = (id: string) => o.imageSigners.some((v) => builderIdMatches(id, v))
  const provenance = checkProvenance(required(byImageSigner, bundles.length, o, PROVENANCE_PREDICATE_TYPE, o.imageSigners), { digest: o.digest, repository: o.sourceRepository, commit: o.commit, allowDirty: o.allowDirty, builder: builders })
  say(`provenance: commit ${provenance.commit.slice(0, 12)}${provenance.dirty ? ' (dirty)' : ''} of ${provenance.repository}, built by ${provenance.builder} (attestation ${short(provenance.attestation)})`)
  const sboms = forDigest(required(byImageSigner, bundles.length, o, SBOM_PREDICATE_TYPE, o.imageSigners), o.digest, SBOM_PREDICATE_TYPE, 'SBOM')
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

/** Who deploy accepts as the signer of an image and of its scans: the admission policy is made from the same list. */
export interface DeploySigners {
  imageSigners: Verifier[]
  scanSigners: Verifier[]
  /** The `source` the build stage labels the image with and records in its provenance. */
  sourceRepository: string
}

/** The environment's signers (on the local cluster, this machine's own key) for an image built from `commit`. */
export async function deploySigners(config: Config, commit: string, env: { local: boolean; settings: Environment }): Promise<DeploySigners> {
  const sourceRepository = (await ociBuildArgs(repoRoot, commit)).SOURCE!
  const machineKey = existsSync(localKeyPaths(config.cacheDir).pub) ? localVerifier(config.cacheDir) : undefined
  if (env.local) {
    if (!machineKey) throw new PipelineError(`deploy: refused: no local signing key (${localKeyPaths(config.cacheDir).pub}); nothing this machine built was signed, run the build stage first`)
    return { imageSigners: [machineKey], scanSigners: [], sourceRepository }
  }
  return {
    imageSigners: verifiersFor(env.settings.signers, { source: sourceRepository, machineKey }),
    scanSigners: verifiersFor(env.settings.scanSigners, { source: sourceRepository, machineKey }),
    sourceRepository,
  }
}

/** The bound on a scan's age deploy applies: SCAN_MAX_AGE, tightened by the environment. */
export function scanMaxAgeSecs(config: Config, env: Environment): number {
  return Math.min(config.scanMaxAgeSecs, env.scan.maxAge ?? Infinity)
}

/**
 * The deploy stage's call: the environment's signers (on the local cluster,
 * this machine's own key), the committed scan policy at the commit deployed,
 * the environment's bounds, and the local-cluster allowance for dirty builds.
 */
export async function verifyForDeploy(config: Config, image: { repository: string; digest: string; commit: string }, env: { local: boolean; settings: Environment }, log?: string[]): Promise<Verified> {
  const cosign = await ensureCosign(config.cacheDir)
  const { imageSigners, scanSigners, sourceRepository } = await deploySigners(config, image.commit, env)
  const committed = await committedPolicy(image.commit)
  return verifyImage({
    cosign,
    imageSigners,
    scanSigners,
    repository: image.repository,
    digest: image.digest,
    sourceRepository,
    commit: image.commit,
    policy: { digest: policyDigest(committed), committed },
    maxAgeSecs: scanMaxAgeSecs(config, env.settings),
    db: { maxAgeSecs: env.settings.scan.dbMaxAge, sources: env.settings.scan.dbSources },
    allowDirty: env.local,
    ...(log ? { log } : {}),
  })
}
