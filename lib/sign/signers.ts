/**
 * Who may sign, as cosign checks it. A workflow signer becomes one keyless
 * verifier per ref and event: the certificate's identity must be exactly
 * `<repository>/<workflow>@<ref>` (a ref pattern ending in `*` becomes an
 * anchored expression that cannot reach past the ref), issued to GitHub
 * Actions, and its workflow-trigger extension must name the event; for an
 * exact ref the workflow-ref extension must name it too. So a pull request
 * (`@refs/pull/7/merge`, trigger pull_request), another branch or a tag never
 * passes for `refs/heads/main` from a push. A key signer is the machine's own
 * public key, accepted only when its fingerprint is the one declared.
 */
import { z } from 'zod'
import { PipelineError } from '../core/errors.ts'
import type { Verifier } from './cosign.ts'

/** The OIDC issuer of GitHub Actions' tokens: the only keyless issuer a signer may have. */
export const GITHUB_OIDC_ISSUER = 'https://token.actions.githubusercontent.com'

/** A workflow of this repository, run from one of `refs` (a trailing `*` matches the rest of a ref) by one of `events`. */
const WorkflowSigner = z.strictObject({
  workflow: z.string().regex(/^\.github\/workflows\/[A-Za-z0-9._-]+\.ya?ml$/, 'a workflow file like .github/workflows/ci.yml'),
  refs: z.array(z.string().regex(/^refs\/(heads|tags)\/[A-Za-z0-9._/-]+\*?$/, 'a branch or tag ref like refs/heads/main, optionally ending in *')).min(1),
  events: z.array(z.enum(['push', 'schedule', 'workflow_dispatch', 'release'])).min(1),
})

/** A key pair's public key, pinned by the sha256 of its PEM (what the build stage prints as "key sha256:…"). */
const KeySigner = z.strictObject({ key: z.string().regex(/^sha256:[a-f0-9]{64}$/, 'sha256:<64 hex> of the public key PEM') })

/** One entry of an environment's `signers` or `scanSigners` (charts/doc-server/environments.yaml). */
export const Signer = z.union([WorkflowSigner, KeySigner])
export type SignerSpec = z.output<typeof Signer>

/** Every environment that is not the local cluster, unless it says otherwise: only ci.yml on main, from a push. */
export const DEFAULT_SIGNERS: SignerSpec[] = [{ workflow: '.github/workflows/ci.yml', refs: ['refs/heads/main'], events: ['push'] }]

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')

/** `https://github.com/owner/repo` from the OCI source the build labels the image with; anything else cannot name a workflow. */
export function githubRepository(source: string): string | undefined {
  const m = /^(https:\/\/[^/\s]+)\/([^/\s]+)\/([^/\s]+?)(?:\.git)?\/?$/.exec(source)
  return m ? `${m[1]}/${m[2]}/${m[3]}` : undefined
}

export function verifiersFor(specs: readonly SignerSpec[], o: { source: string; machineKey?: Extract<Verifier, { kind: 'key' }> }): Verifier[] {
  const out: Verifier[] = []
  for (const spec of specs) {
    if ('key' in spec) {
      if (o.machineKey?.fingerprint === spec.key) out.push(o.machineKey)
      continue
    }
    const repo = githubRepository(o.source)
    if (!repo) throw new PipelineError(`deploy: refused: signer ${spec.workflow} needs the image's source to be a GitHub repository, but it is ${o.source}`)
    for (const ref of spec.refs) {
      const base = `${repo}/${spec.workflow}@`
      for (const event of spec.events) {
        out.push(
          ref.endsWith('*')
            ? { kind: 'keyless', identityRegexp: `^${escape(base + ref.slice(0, -1))}[^@]+$`, issuer: GITHUB_OIDC_ISSUER, trigger: event }
            : { kind: 'keyless', identity: base + ref, issuer: GITHUB_OIDC_ISSUER, trigger: event, ref },
        )
      }
    }
  }
  return out
}

/** The builder id a signer's provenance must name (the build stage writes it from the same facts). */
export function builderIdMatches(builderId: string, v: Verifier): boolean {
  if (v.kind === 'key') return builderId === LOCAL_BUILDER_ID
  if (v.identity) return builderId === v.identity
  return new RegExp(v.identityRegexp ?? '^$').test(builderId)
}

/** The builder id of the local pipeline (a build signed with a key pair). */
export const LOCAL_BUILDER_ID = 'https://doc-server.dev/builders/local-pipeline'
