/**
 * The deploy's guards against the wrong cluster and the wrong order: a
 * KUBE_CONTEXT must be declared for the environment it is used with, and a
 * release moves only forward in git history unless a rollback is asked for.
 * Both are decided before anything changes in the cluster.
 */
import { PipelineError } from '../core/errors.ts'
import { repoRoot } from '../core/paths.ts'
import { run } from '../core/run.ts'
import { quietly } from '../core/output.ts'
import type { Environment } from './environments.ts'
import { kubeFlags, type KubeTarget } from './kube.ts'

/** Helm release labels (`helm upgrade --labels`) that record what a revision deployed, and how long it may take. */
export const COMMIT_LABEL = 'doc-server.dev/commit'
export const TIMEOUT_LABEL = 'doc-server.dev/timeout-secs'
/** Why an older commit was deployed on purpose (--allow-older --reason). */
export const REASON_LABEL = 'doc-server.dev/allow-older-reason'

const refused = (why: string) => new PipelineError(`deploy: refused: ${why}`)

/**
 * `--allow-older` as the environment allows it: never, only with a `--reason`
 * (recorded on the release), or freely. Decided before anything is read from
 * the cluster.
 */
export function requireOlderAllowed(envName: string, env: Pick<Environment, 'allowOlder'>, allowOlder: boolean, reason: string | undefined): void {
  if (!allowOlder) return
  if (env.allowOlder === 'never') throw refused(`DEPLOY_ENV=${envName} never takes --allow-older; roll forward with a new commit instead`)
  if (env.allowOlder === 'with-reason' && !reason) throw refused(`DEPLOY_ENV=${envName} takes --allow-older only with --reason "<why>", which is recorded on the release`)
}

/** A Kubernetes label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends) that still reads as the reason. */
export function labelValue(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]+/g, '-').slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '')
}

/** What one revision of a release recorded about itself (its labels on Helm's storage Secret). */
export interface RevisionRecord {
  revision: number
  status: string
  commit: string | undefined
  timeoutSecs: number | undefined
}

interface SecretList {
  items: { metadata: { labels?: Record<string, string> } }[]
}

/** Every stored revision of the release with what it recorded, oldest first (Helm keeps them as Secrets labelled owner=helm). */
export async function releaseRecords(k: KubeTarget, release: { name: string; namespace: string }): Promise<RevisionRecord[]> {
  // Helm's release Secrets hold each revision's whole manifest: read, never shown.
  const r = await quietly(() => run([k.kubectl, ...kubeFlags(k), '--request-timeout=20s', 'get', 'secrets', '-n', release.namespace, '-l', `owner=helm,name=${release.name}`, '-o', 'json'], { timeoutMs: 60_000 }))
  const list = JSON.parse(r.stdout) as SecretList
  return list.items
    .map((i) => i.metadata.labels ?? {})
    .map((l) => ({
      revision: Number(l.version),
      status: l.status ?? '',
      commit: l[COMMIT_LABEL] || undefined,
      timeoutSecs: /^\d+$/.test(l[TIMEOUT_LABEL] ?? '') ? Number(l[TIMEOUT_LABEL]) : undefined,
    }))
    .filter((x) => Number.isInteger(x.revision))
    .sort((a, b) => a.revision - b.revision)
}

/** The labels a deploy records on the revision it creates. */
export function recordLabels(commit: string, timeoutSecs: number, reason?: string): Record<string, string> {
  const why = reason ? labelValue(reason) : ''
  return { [COMMIT_LABEL]: commit, [TIMEOUT_LABEL]: String(timeoutSecs), ...(why ? { [REASON_LABEL]: why } : {}) }
}

/** The commit the release runs now: the one its deployed revision recorded. */
export function runningCommit(records: readonly RevisionRecord[]): string | undefined {
  return [...records].reverse().find((x) => x.status === 'deployed')?.commit
}

/** Whether `older` is `newer` or one of its ancestors; undefined when git cannot tell (a commit not in this clone). */
export async function isAncestor(older: string, newer: string, cwd = repoRoot): Promise<boolean | undefined> {
  const r = await run(['git', 'merge-base', '--is-ancestor', older, newer], { cwd, okCodes: [0, 1, 128] })
  return r.exitCode === 0 ? true : r.exitCode === 1 ? false : undefined
}

/**
 * A deploy must carry the release forward: the commit being deployed has to
 * descend from the one the release runs, so a slow older pipeline can never
 * overwrite a newer deploy. `allowOlder` (`--allow-older`) is the explicit
 * rollback, with its `reason` when given. Returns a note when the order was
 * overridden.
 */
export async function checkOrder(running: string | undefined, next: string, allowOlder: boolean, reason?: string, cwd = repoRoot): Promise<string | undefined> {
  if (!running || running === next) return undefined
  const short = (c: string) => c.slice(0, 12)
  const forward = await isAncestor(running, next, cwd)
  if (forward === true) return undefined
  if (allowOlder) return `rolled ${short(running)} back to ${short(next)} (--allow-older${reason ? `: ${reason}` : ''})`
  if (forward === undefined) throw refused(`the release runs commit ${short(running)}, which is not in this clone, so ${short(next)} cannot be shown to descend from it; fetch the full history, or pass --allow-older to roll back on purpose`)
  throw refused(`commit ${short(next)} does not descend from ${short(running)}, which the release runs (an older or diverged pipeline); pass --allow-older to roll back on purpose`)
}
