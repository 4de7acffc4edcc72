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
import { PROVENANCE_TYPE,SBOM_TYPE,SCAN_PREDICATE_TYPE,provenancePredicate,scanPredicate,type ScanFacts } from './attest.ts'
import { publishVerdict } from './verdict.ts'
import { attestImage,describeVerifier,ensureLocalKeyPair,keyFingerprint,signImage,workflowIdentity,type Signer,type Verifier } from './cosign.ts'
import { ensureCosign } from '../tools/cosign.ts'
import { writeJson } from '../core/json.ts'

export interface Signing {
  cosign: string
  signer: Signer
  /** Who a verifier will expect, for reports. */
  identity: string
}

/** The signer for this run: keyless in GitHub Actions, else the local key pair (created once). */
export async function signingFor(config: Config, env: NodeJS.ProcessEnv = process.env): Promise<Signing> {
  const cosign = await ensureCosign(config.cacheDir)
  if (config.github) {
    const v = workflowIdentity(env.GITHUB_SERVER_URL ?? 'https://github.com', env.GITHUB_REPOSITORY ?? '')
    return { cosign, signer: { kind: 'keyless' }, identity: describeVerifier(v) }
  }
  const signer = await ensureLocalKeyPair(cosign, config.cacheDir)
  const v: Verifier = { kind: 'key', pub: signer.pub, fingerprint: keyFingerprint(readFileSync(signer.pub, 'utf8')) }
  return { cosign, signer, identity: describeVerifier(v) }
}

/** Who built: this repository's workflow run in GitHub Actions, else the local pipeline. */
export function builderId(env: NodeJS.ProcessEnv = process.env): { id: string; invocation: string } {
  if (env.GITHUB_ACTIONS === 'true' && env.GITHUB_REPOSITORY) {
    const base = `${env.GITHUB_SERVER_URL ?? 'https://github.com'}/${env.GITHUB_REPOSITORY}`
    return { id: `${base}/.github/workflows/ci.yml@${env.GITHUB_REF ?? ''}`, invocation: `${base}/actions/runs/${env.GITHUB_RUN_ID ?? ''}/attempts/${env.GITHUB_RUN_ATTEMPT ?? '1'}` }
  }
  return { id: 'https://doc-server.dev/builders/local-pipeline', invocation: randomUUID() }
}

export interface BuildSigning {
  identity: string
  provenance: string
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
  await signImage(call, s.signer)
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
  await attestImage(call, s.signer, PROVENANCE_TYPE, file)
  return { identity: s.identity, provenance: 'reports/build/provenance.json' }
}

/** Attaches the CycloneDX SBOM and the scan result to the scanned digest, and makes the result its current verdict (verdict.ts). */
export async function attestScan(o: { config: Config; image: string; facts: ScanFacts; sbom: string; outDir: string; }): Promise<string> {
  const s = await signingFor(o.config)
  const call = { cosign: s.cosign, image: o.image }
  await attestImage(call, s.signer, SBOM_TYPE, o.sbom)
  const file = join(o.outDir, 'scan-attestation.json')
  writeJson(file, scanPredicate(o.facts))
  await attestImage(call, s.signer, SCAN_PREDICATE_TYPE, file)
  await publishVerdict(call, s.signer, file)
  return s.identity
}
