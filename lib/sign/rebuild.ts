/**
 * The rebuild attestation: a signed statement that the commit, rebuilt from
 * a clean clone on a builder with nothing cached, gave exactly the digest
 * that was pushed. The signature on an image says who pushed it; this says
 * what is in it. Deploy requires it where environments.yaml says so.
 */
import { join } from 'node:path'
import type { Config } from '../core/config.ts'
import { PipelineError } from '../core/errors.ts'
import { writeJson } from '../core/json.ts'
import { PROVENANCE_PREDICATE_TYPE, forDigest, type VerifiedStatement } from './attest.ts'
import { attestImage } from './cosign.ts'
import { signingFor } from './sign.ts'

export const REBUILD_PREDICATE_TYPE = 'https://doc-server.dev/attestations/rebuild/v1'

export interface RebuildFacts {
  repository: string
  /** The pushed digest, which the rebuild matched. */
  digest: string
  commit: string
  /** What the rebuild gave. Only a match is ever attested. */
  rebuiltDigest: string
  /** `BuildKit v0.34.2 at unix://…` */
  builder: string
  dockerfile: { path: string; sha256: string }
  buildArgs: Record<string, string>
  seconds: number
  rebuiltAt: string
}

export function rebuildPredicate(f: RebuildFacts) {
  return {
    image: { repository: f.repository, digest: f.digest },
    commit: f.commit,
    rebuilt: { digest: f.rebuiltDigest, builder: f.builder, cache: 'none', seconds: Math.round(f.seconds * 10) / 10 },
    match: f.rebuiltDigest === f.digest,
    dockerfile: f.dockerfile,
    buildArgs: f.buildArgs,
    rebuiltAt: f.rebuiltAt,
  }
}

/** Signs the rebuild's result and attaches it to the digest (the predicate is also kept in `outDir`). */
export async function attestRebuild(o: {
  config: Config
  image: string
  facts: RebuildFacts
  outDir: string
  env?: NodeJS.ProcessEnv
}): Promise<string> {
  if (o.facts.rebuiltDigest !== o.facts.digest)
    throw new PipelineError(`rebuild: refusing to attest a rebuild that gave ${o.facts.rebuiltDigest}, not ${o.facts.digest}`)
  const s = await signingFor(o.config)
  const file = join(o.outDir, 'rebuild-attestation.json')
  writeJson(file, rebuildPredicate(o.facts))
  await attestImage({ cosign: s.cosign, image: o.image, ...(o.env ? { env: o.env } : {}) }, s.signer, REBUILD_PREDICATE_TYPE, file)
  return s.identity
}

export interface RebuildVerdict {
  attestation: string
  rebuiltAt: string
  builder: string
}

const refused = (why: string) => new PipelineError(`deploy: refused: ${why}`)
const short = (d: string) => `${d.slice(0, 19)}…`

/**
 * A rebuild attestation for exactly this digest that says the rebuild gave
 * this digest, from the commit the provenance names.
 */
export function checkRebuild(statements: readonly VerifiedStatement[], e: { digest: string; commit: string }): RebuildVerdict {
  const mine = forDigest(statements, e.digest, REBUILD_PREDICATE_TYPE, 'rebuild')
  const when = (s: VerifiedStatement) => Date.parse(String(s.statement.predicate?.rebuiltAt ?? '')) || 0
  const newest = [...mine].sort((a, b) => when(b) - when(a))[0]!
  const p = (newest.statement.predicate ?? {}) as Partial<ReturnType<typeof rebuildPredicate>>
  if (p.image?.digest !== e.digest)
    throw refused(`the rebuild attestation names image ${p.image?.digest ? short(p.image.digest) : 'none'}, not ${short(e.digest)}`)
  if (p.rebuilt?.digest !== e.digest || p.match !== true)
    throw refused(
      `the rebuild of ${short(e.digest)} gave ${p.rebuilt?.digest ? short(p.rebuilt.digest) : 'no digest'}: it does not reproduce`,
    )
  if (p.commit !== e.commit)
    throw refused(
      `the rebuild of ${short(e.digest)} was of commit ${String(p.commit).slice(0, 12)}, not ${e.commit.slice(0, 12)} as its provenance says`,
    )
  return { attestation: newest.digest, rebuiltAt: String(p.rebuiltAt), builder: String(p.rebuilt.builder) }
}

/** What a rebuild needs from the image's provenance: the commit, the Dockerfile and the exact build arguments. */
export interface RebuildInputs {
  commit: string
  dirty: boolean
  dockerfile: { path: string; sha256: string }
  buildArgs: Record<string, string>
}

/**
 * The newest provenance statement for this digest, read for a rebuild. The
 * base images must be pinned by digest in it: a tag may have moved since.
 */
export function rebuildInputs(statements: readonly VerifiedStatement[], digest: string): RebuildInputs {
  const mine = forDigest(statements, digest, PROVENANCE_PREDICATE_TYPE, 'provenance')
  const finished = (s: VerifiedStatement) =>
    Date.parse(
      String(
        (s.statement.predicate as { runDetails?: { metadata?: { finishedOn?: string } } } | undefined)?.runDetails?.metadata?.finishedOn ??
          '',
      ),
    ) || 0
  const p = ([...mine].sort((a, b) => finished(b) - finished(a))[0]!.statement.predicate ?? {}) as {
    buildDefinition?: {
      externalParameters?: { dockerfile?: string; buildArgs?: Record<string, string> }
      internalParameters?: { dirty?: boolean }
      resolvedDependencies?: { uri?: string; digest?: Record<string, string> }[]
    }
  }
  const def = p.buildDefinition ?? {}
  const buildArgs = def.externalParameters?.buildArgs ?? {}
  const path = def.externalParameters?.dockerfile
  const commit = def.resolvedDependencies?.find((d) => d.uri?.startsWith('git+'))?.digest?.gitCommit
  const sha256 = def.resolvedDependencies?.find((d) => d.uri === path)?.digest?.sha256
  const why = (what: string) =>
    new PipelineError(`rebuild: the provenance of ${digest.slice(0, 19)}… ${what}; it cannot be rebuilt from it`)
  if (!commit) throw why('names no commit')
  if (!path || !sha256) throw why('names no Dockerfile with its sha256')
  if (!buildArgs.SOURCE_DATE_EPOCH) throw why('has no SOURCE_DATE_EPOCH build argument (built before builds were reproducible)')
  for (const arg of ['CHEF_IMAGE', 'RUNTIME_IMAGE'])
    if (!/@sha256:[a-f0-9]{64}$/.test(buildArgs[arg] ?? '')) throw why(`does not pin ${arg} by digest (${buildArgs[arg] ?? 'unset'})`)
  return { commit, dirty: def.internalParameters?.dirty === true, dockerfile: { path, sha256 }, buildArgs }
}
