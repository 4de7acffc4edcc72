/**
 * Deploy's proof that the image is one this pipeline built, scanned and
 * signed, read from the registry (never from local reports), before any
 * cluster is touched.
 */
import { ociBuildArgs } from '../build/docker.ts'
import type { Config } from '../core/config.ts'
import { repoRoot } from '../core/paths.ts'
import { PROVENANCE_TYPE,SBOM_TYPE,SCAN_PREDICATE_TYPE,checkProvenance,checkScan,forDigest,parseEnvelopes,type ProvenanceVerdict,type ScanVerdict } from '../sign/attest.ts'
import { describeVerifier,localVerifier,verifiedAttestations,verifySignature,workflowIdentity,type Verifier } from '../sign/cosign.ts'
import { ensureCosign } from '../tools/cosign.ts'
import { REBUILD_PREDICATE_TYPE,checkRebuild,type RebuildVerdict } from '../sign/rebuild.ts'

/** What reports/deploy.json records under `verified`. */
export interface Verified {
  identity: string
  scan: ScanVerdict
  provenance: ProvenanceVerdict
  sbom: { attestation: string }
  /** The matching independent rebuild, when the environment requires one (null otherwise). */
  rebuild: RebuildVerdict | null
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
  verifier: Verifier
  repository: string
  digest: string
  /** The repository the source must come from (the OCI `source` label the build sets). */
  sourceRepository: string
  commit?: string
  maxAgeSecs: number
  allowDirty: boolean
  /** The environment requires a rebuild attestation (environments.yaml `rebuild: required`). */
  requireRebuild?: boolean
  now?: Date
}

/** Signature, scan, provenance and SBOM of `repository@digest`; the first failing check throws one line. */
export async function verifyImage(o: VerifyOptions): Promise<Verified> {
  const call = { cosign: o.cosign, image: `${o.repository}@${o.digest}` }
  await verifySignature(call, o.verifier)
  const scan = checkScan(parseEnvelopes(await verifiedAttestations(call, o.verifier, SCAN_PREDICATE_TYPE)), { digest: o.digest, now: o.now ?? new Date(), maxAgeSecs: o.maxAgeSecs })
  const provenance = checkProvenance(parseEnvelopes(await verifiedAttestations(call, o.verifier, PROVENANCE_TYPE)), { digest: o.digest, repository: o.sourceRepository, ...(o.commit ? { commit: o.commit } : {}), allowDirty: o.allowDirty })
  const sboms = forDigest(parseEnvelopes(await verifiedAttestations(call, o.verifier, SBOM_TYPE)), o.digest, 'https://cyclonedx.org/bom', 'SBOM')
  const rebuild = o.requireRebuild ? checkRebuild(parseEnvelopes(await verifiedAttestations(call, o.verifier, REBUILD_PREDICATE_TYPE)), { digest: o.digest, commit: provenance.commit }) : null
  return {
    identity: describeVerifier(o.verifier),
    scan,
    provenance,
    sbom: { attestation: sboms[sboms.length - 1]!.digest },
    rebuild,
    note: provenance.dirty ? 'built from a working tree with uncommitted changes: accepted by the local cluster only' : null,
  }
}

/** The deploy stage's call: the pinned cosign, the expected identity, and the local-cluster allowance for dirty builds. */
export async function verifyForDeploy(config: Config, image: { repository: string; digest: string; commit?: unknown }, requireRebuild = false): Promise<Verified> {
  const verifier = expectedVerifier(config)
  const cosign = await ensureCosign(config.cacheDir)
  // build.json names the commit as a string (older) or { sha, … }.
  const c = image.commit
  const commit = typeof c === 'string' ? c : typeof (c as { sha?: unknown } | undefined)?.sha === 'string' ? (c as { sha: string }).sha : undefined
  // The same `source` the build stage labels the image with and records in its provenance.
  const sourceRepository = (await ociBuildArgs(repoRoot, commit ?? 'HEAD')).SOURCE!
  return verifyImage({ cosign, verifier, repository: image.repository, digest: image.digest, sourceRepository, ...(commit ? { commit } : {}), maxAgeSecs: config.scanMaxAgeSecs, allowDirty: !config.kubeContext, requireRebuild })
}
