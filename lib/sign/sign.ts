/**
 * What the build and scan stages attach to the pushed digest: the signature
 * and SLSA provenance (build), the CycloneDX SBOM and the scan result (scan).
 * Locally with the machine's key pair, in GitHub Actions keyless.
 */
import { createHash,randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join,relative } from 'node:path'
import type { Config } from '../core/config.ts'
import { repoRoot } from '../core/paths.ts'
import type { GitFacts } from '../core/git.ts'
import { firstLine } from '../core/errors.ts'
import { say } from '../core/output.ts'
import { PROVENANCE_PREDICATE_TYPE, PROVENANCE_TYPE, SBOM_PREDICATE_TYPE, SBOM_TYPE, SCAN_PREDICATE_TYPE, alreadyAttested, provenancePredicate, scanPredicate, type ScanFacts } from './attest.ts'
import { publishVerdict } from './verdict.ts'
import { attestImage, describeVerifier, ensureLocalKeyPair, keyFingerprint, signImage, signsDigest, verifiedReferrers, workflowRunIdentity, type CosignCall, type Referrers, type Signer, type Verifier } from './cosign.ts'
import { GITHUB_OIDC_ISSUER, LOCAL_BUILDER_ID } from './signers.ts'
import { ensureCosign } from '../tools/cosign.ts'
import { writeJson } from '../core/json.ts'

export interface Signing {
  cosign: string
  signer: Signer
  /** Who a verifier will expect: what this signer's earlier signatures verify against. */
  verifier: Verifier
  /** Who a verifier will expect, for reports. */
  identity: string
}

/** The signer for this run: keyless in GitHub Actions, else the local key pair (created once). */
export async function signingFor(config: Config, env: NodeJS.ProcessEnv = process.env): Promise<Signing> {
  const cosign = await ensureCosign(config.cacheDir)
  if (config.github) {
    // Earlier signatures by this very workflow, at this ref, are what a rerun would repeat.
    const identity = workflowRunIdentity(env)
    return { cosign, signer: { kind: 'keyless' }, verifier: { kind: 'keyless', identity, issuer: GITHUB_OIDC_ISSUER }, identity }
  }
  const signer = await ensureLocalKeyPair(cosign, config.cacheDir)
  const v: Verifier = { kind: 'key', pub: signer.pub, fingerprint: keyFingerprint(readFileSync(signer.pub, 'utf8')) }
  return { cosign, signer, verifier: v, identity: describeVerifier(v) }
}

/**
 * Who built: in GitHub Actions the workflow run, named as its keyless
 * signature names it (so deploy can hold the two together), else the local
 * pipeline.
 */
export function builderId(env: NodeJS.ProcessEnv = process.env): { id: string; invocation: string } {
  if (env.GITHUB_ACTIONS === 'true' && env.GITHUB_REPOSITORY) {
    const base = `${env.GITHUB_SERVER_URL ?? 'https://github.com'}/${env.GITHUB_REPOSITORY}`
    return { id: workflowRunIdentity(env), invocation: `${base}/actions/runs/${env.GITHUB_RUN_ID ?? ''}/attempts/${env.GITHUB_RUN_ATTEMPT ?? '1'}` }
  }
  return { id: LOCAL_BUILDER_ID, invocation: randomUUID() }
}

export interface BuildSigning {
  identity: string
  provenance: string
  /** What this run attached; false where the digest already carried it (a rebuild of the same commit). */
  added: { signature: boolean; provenance: boolean }
}

/**
 * What the digest already carries from this signer, read once. Unreadable
 * (a registry hiccup) means nothing is known: the caller attaches everything
 * anew, which is always safe, and says so.
 */
async function carried(call: CosignCall, s: Signing): Promise<Referrers> {
  try {
    return await verifiedReferrers(call, s.verifier)
  } catch (err) {
    say(`could not read what the digest already carries (${firstLine(err)}); attaching everything anew`)
    return { bundles: 0, statements: [] }
  }
}

/** Signs the pushed digest and attaches SLSA provenance for it; the predicate is also kept in `<reports>/build/`. */
export async function signBuild(o: {
  config: Config
  image: string
  git: GitFacts
  dockerfile: string
  buildArgs: Record<string, string>
  startedOn: Date
  outDir: string
  /** The push's login (its throwaway DOCKER_CONFIG): the signature and provenance go to the same registry. */
  env?: NodeJS.ProcessEnv
}): Promise<BuildSigning> {
  const s = await signingFor(o.config)
  const call = { cosign: s.cosign, image: o.image, ...(o.env ? { env: o.env } : {}) }
  // Signing or attesting again what the digest already carries would only pile up referrers that every verification reads.
  const existing = await carried(call, s)
  const signature = !signsDigest(existing.statements, o.image.split('@')[1] ?? '')
  if (signature) await signImage(call, s.signer)
  else say(`already signed by ${s.identity}: no new signature`)
  const builder = builderId()
  const predicate = provenancePredicate({
    builderId: builder.id,
    invocationId: builder.invocation,
    repository: o.buildArgs.SOURCE ?? 'local',
    commit: o.git.sha,
    branch: o.git.branch ?? null,
    dirty: o.git.dirty,
    dockerfile: { path: relative(repoRoot, o.dockerfile) || o.dockerfile, sha256: createHash('sha256').update(new Uint8Array(readFileSync(o.dockerfile))).digest('hex') },
    buildArgs: o.buildArgs,
    startedOn: o.startedOn.toISOString(),
    finishedOn: new Date().toISOString(),
  })
  const file = join(o.outDir, 'provenance.json')
  writeJson(file, predicate)
  const provenance = !alreadyAttested(existing.statements, PROVENANCE_PREDICATE_TYPE, predicate)
  if (provenance) await attestImage(call, s.signer, PROVENANCE_TYPE, file)
  else say('provenance of the same build definition already attested: not attested again')
  return { identity: s.identity, provenance: 'reports/build/provenance.json', added: { signature, provenance } }
}

/** Attaches the CycloneDX SBOM and the scan result to the scanned digest, and makes the result its current verdict (verdict.ts). */
export async function attestScan(o: { config: Config; image: string; facts: ScanFacts; sbom: string; outDir: string; }): Promise<string> {
  const s = await signingFor(o.config)
  const call = { cosign: s.cosign, image: o.image }
  const existing = await carried(call, s)
  if (!alreadyAttested(existing.statements, SBOM_PREDICATE_TYPE, JSON.parse(readFileSync(o.sbom, 'utf8')))) await attestImage(call, s.signer, SBOM_TYPE, o.sbom)
  else say('an identical SBOM is already attested: not attested again')
  const file = join(o.outDir, 'scan-attestation.json')
  const predicate = scanPredicate(o.facts)
  writeJson(file, predicate)
  // Only an identical result is skipped: every new verdict (a newer scan, pass or fail) is attested.
  if (!alreadyAttested(existing.statements, SCAN_PREDICATE_TYPE, predicate)) await attestImage(call, s.signer, SCAN_PREDICATE_TYPE, file)
  else say('an identical scan result is already attested: not attested again')
  // The current verdict, for the admission controller, is this result even when it was attested before.
  await publishVerdict(call, s.signer, file)
  return s.identity
}
