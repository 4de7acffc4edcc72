/**
 * The deploy's guards against the wrong cluster and the wrong order: a
 * KUBE_CONTEXT must be declared for the environment it is used with, and a
 * release moves only forward in git history unless a rollback is asked for.
 * Both are decided before anything changes in the cluster.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { PipelineError } from '../core/errors.ts'
import { repoRoot } from '../core/paths.ts'
import { run } from '../core/run.ts'
import { kubeFlags, type KubeTarget } from './kube.ts'

/** The committed list of contexts each environment may be deployed to. */
export const ENVIRONMENTS_FILE = join(repoRoot, 'charts', 'doc-server', 'environments.yaml')

/** Helm release labels (`helm upgrade --labels`) that record what a revision deployed, and how long it may take. */
export const COMMIT_LABEL = 'doc-server.dev/commit'
export const TIMEOUT_LABEL = 'doc-server.dev/timeout-secs'

const refused = (why: string) => new PipelineError(`deploy: refused: ${why}`)

/** Parses environments.yaml: `<env>: { contexts: [name, ...] }` for every environment. */
export function parseEnvironments(text: string, source: string): Record<string, string[]> {
  let raw: unknown
  try {
    raw = parseYaml(text)
  } catch (err) {
    throw new PipelineError(`deploy: ${source} does not parse: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`)
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new PipelineError(`deploy: ${source} must map each environment to its contexts`)
  const out: Record<string, string[]> = {}
  for (const [env, body] of Object.entries(raw as Record<string, unknown>)) {
    const contexts = (body as { contexts?: unknown } | null)?.contexts
    // `admission` is read by lib/deploy/admission.ts (environmentAdmission).
    if (typeof body !== 'object' || body === null || Object.keys(body).some((k) => k !== 'contexts' && k !== 'admission') || !Array.isArray(contexts) || contexts.some((c) => typeof c !== 'string' || c.trim() === '')) {
      throw new PipelineError(`deploy: ${source}: ${env} must be { contexts: [context names] }`)
    }
    out[env] = contexts.map((c: string) => c.trim())
  }
  return out
}

/**
 * A context may be used for an environment only if environments.yaml declares
 * it there, so a KUBE_CONTEXT meant for dev can never receive a prod deploy
 * (or the reverse). The local cluster's context is always allowed.
 */
export function requireDeclaredContext(env: string, context: string | undefined, localContext: string, file = ENVIRONMENTS_FILE): void {
  if (!context || context === localContext) return
  if (!existsSync(file)) throw refused(`${file} is missing; it declares which contexts each DEPLOY_ENV may use`)
  const declared = parseEnvironments(readFileSync(file, 'utf8'), file)[env] ?? []
  if (!declared.includes(context)) {
    throw refused(`KUBE_CONTEXT "${context}" is not declared for DEPLOY_ENV=${env} in ${file.replace(`${repoRoot}/`, '')} (declared: ${declared.join(', ') || 'none'}); add it there or use the right context`)
  }
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
  const r = await run([k.kubectl, ...kubeFlags(k), '--request-timeout=20s', 'get', 'secrets', '-n', release.namespace, '-l', `owner=helm,name=${release.name}`, '-o', 'json'], { timeoutMs: 60_000 })
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
export function recordLabels(commit: string | undefined, timeoutSecs: number): Record<string, string> {
  return { ...(commit ? { [COMMIT_LABEL]: commit } : {}), [TIMEOUT_LABEL]: String(timeoutSecs) }
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
 * rollback. Returns a note when the order was overridden.
 */
export async function checkOrder(running: string | undefined, next: string | undefined, allowOlder: boolean, cwd = repoRoot): Promise<string | undefined> {
  if (!running || running === next) return undefined
  const short = (c: string) => c.slice(0, 12)
  if (!next) {
    if (allowOlder) return `the release runs ${short(running)}; build.json names no commit, deployed anyway (--allow-older)`
    throw refused(`the release runs commit ${short(running)} and build.json names no commit, so the order cannot be checked; pass --allow-older to deploy it anyway`)
  }
  const forward = await isAncestor(running, next, cwd)
  if (forward === true) return undefined
  if (allowOlder) return `rolled ${short(running)} back to ${short(next)} (--allow-older)`
  if (forward === undefined) throw refused(`the release runs commit ${short(running)}, which is not in this clone, so ${short(next)} cannot be shown to descend from it; fetch the full history, or pass --allow-older to roll back on purpose`)
  throw refused(`commit ${short(next)} does not descend from ${short(running)}, which the release runs (an older or diverged pipeline); pass --allow-older to roll back on purpose`)
}
