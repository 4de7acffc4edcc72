import { PipelineError } from '../core/errors.ts'
import type { KubeTarget } from './kube.ts'
import { run } from '../core/run.ts'
import { quietly } from '../core/output.ts'

export interface HelmTarget extends Pick<KubeTarget, 'kubeconfig' | 'context'> {
  helm: string
}

export interface Release {
  name: string
  namespace: string
}

export interface HistoryEntry {
  revision: number
  status: string
  description?: string
  updated?: string
  app_version?: string
}

function flags(t: HelmTarget, r: Release): string[] {
  // helm spells the context flag differently from kubectl.
  return [...(t.kubeconfig ? ['--kubeconfig', t.kubeconfig] : []), '--kube-context', t.context, '--namespace', r.namespace]
}

/** The schema-violation lines of helm's error, without its preamble, as one line. */
export function schemaProblems(output: string): string | undefined {
  const lines = output.split('\n').map((l) => l.trim())
  const start = lines.findIndex((l) => /values don't meet the specifications of the schema/.test(l))
  if (start === -1) return undefined
  const problems = lines.slice(start + 1).filter((l) => l.startsWith('-') || l.startsWith('at ') || /^[a-zA-Z].*:/.test(l)).map((l) => l.replace(/^-\s*/, ''))
  // allOf/anyOf wrappers repeat what their specific line says; one line per value path is enough.
  const specific = problems.filter((l) => l && !/^doc-server:?$/.test(l) && !/'(allOf|anyOf|oneOf)' failed/.test(l))
  const seen = new Set<string>()
  const onePerPath = specific.filter((l) => {
    const path = /^at '([^']*)'/.exec(l)?.[1] ?? l
    if (seen.has(path)) return false
    seen.add(path)
    return true
  })
  return onePerPath.map((l) => l.replace(/^at '':/, 'at the top level:')).join('; ') || lines[start]
}

/** A chart `fail` message (`execution error at (...): <message>`), as the line a person reads. */
export function templateFailure(output: string): string | undefined {
  const m = /execution error at \([^)]*\): (.+)/.exec(output)
  return m?.[1]?.trim()
}

/**
 * Renders the chart offline with exactly the values the deploy will use, so
 * a value the schema or a chart rule refuses stops the deploy before any
 * cluster is touched.
 */
export async function renderChart(helm: string, release: Release, chart: string, valueFiles: readonly string[], sets: Record<string, string>): Promise<string> {
  const args = [helm, 'template', release.name, chart, '--namespace', release.namespace, ...valueFiles.flatMap((f) => ['--values', f]), ...Object.entries(sets).flatMap(([k, v]) => ['--set-string', `${k}=${v}`])]
  try {
    // The rendered manifests are checked, not shown.
    return (await quietly(() => run(args))).stdout
  } catch (err) {
    const out = err instanceof PipelineError ? (err.details ?? '') : String(err)
    const why = schemaProblems(out) ?? templateFailure(out) ?? out.split('\n').find((l) => /^Error:/.test(l))?.replace(/^Error:\s*/, '')
    throw new PipelineError(`chart: values refused: ${why ?? 'helm template failed'}`, out)
  }
}

export async function history(t: HelmTarget, r: Release): Promise<HistoryEntry[]> {
  const res = await quietly(() => run([t.helm, 'history', r.name, ...flags(t, r), '--max', '20', '-o', 'json'], { okCodes: [1], timeoutMs: 60_000 }))
  if (res.exitCode !== 0) {
    if (/release: not found/.test(res.stderr)) return []
    throw new PipelineError(`helm: cannot read the history of ${r.name} in ${r.namespace}`, res.stderr)
  }
  return (JSON.parse(res.stdout) as HistoryEntry[]).sort((a, b) => a.revision - b.revision)
}

/** What to do with a release left in pending-* by an interrupted helm: roll back, or uninstall if it never deployed. */
export function pendingRecovery(entries: readonly HistoryEntry[]): { action: 'none' } | { action: 'rollback'; from: HistoryEntry; to: number } | { action: 'uninstall'; from: HistoryEntry } {
  const last = entries[entries.length - 1]
  if (!last || !last.status.startsWith('pending-')) return { action: 'none' }
  const good = [...entries].reverse().find((e) => e.status === 'deployed' || e.status === 'superseded')
  return good ? { action: 'rollback', from: last, to: good.revision } : { action: 'uninstall', from: last }
}

export async function rollback(t: HelmTarget, r: Release, revision: number, timeoutSecs: number): Promise<void> {
  await run([t.helm, 'rollback', r.name, String(revision), ...flags(t, r), '--wait=watcher', '--timeout', `${timeoutSecs}s`], { timeoutMs: (timeoutSecs + 60) * 1000 })
}

export async function uninstall(t: HelmTarget, r: Release): Promise<void> {
  await run([t.helm, 'uninstall', r.name, ...flags(t, r), '--wait=watcher', '--timeout', '120s'], { timeoutMs: 180_000, okCodes: [] })
}

export interface UpgradeOptions {
  chart: string
  valueFiles: readonly string[]
  sets: Record<string, string>
  timeoutSecs: number
  /** Release labels (`--labels`), stored with the revision from the moment it is pending. */
  labels?: Record<string, string>
  /** Ends helm's wait early (the rollout tracker found a failure). */
  signal?: AbortSignal
}

/**
 * Helm 4's `--rollback-on-failure` (what Helm 3 called `--atomic`): a rollout
 * that is not ready within the timeout is rolled back by helm itself, and the
 * rollback waits too, so the command can take twice the timeout. `--wait=watcher`
 * is Helm 4's kstatus watcher (what `--rollback-on-failure` defaults to),
 * spelled out so the wait never silently becomes Helm 4's default `hookOnly`.
 */
export const UPGRADE_WAIT_FLAGS = ['--rollback-on-failure', '--wait=watcher'] as const

export function upgradeArgs(t: HelmTarget, r: Release, o: UpgradeOptions): string[] {
  return [
    t.helm, 'upgrade', r.name, o.chart, '--install', ...flags(t, r), '--create-namespace',
    ...o.valueFiles.flatMap((f) => ['--values', f]),
    ...Object.entries(o.sets).flatMap(([k, v]) => ['--set-string', `${k}=${v}`]),
    ...UPGRADE_WAIT_FLAGS, '--timeout', `${o.timeoutSecs}s`, '--history-max', '10',
    ...(o.labels && Object.keys(o.labels).length > 0 ? ['--labels', Object.entries(o.labels).map(([k, v]) => `${k}=${v}`).join(',')] : []),
  ]
}

export async function upgradeInstall(t: HelmTarget, r: Release, o: UpgradeOptions) {
  return run(upgradeArgs(t, r, o), { timeoutMs: (2 * o.timeoutSecs + 120) * 1000, ...(o.signal ? { signal: o.signal } : {}) })
}
