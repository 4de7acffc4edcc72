import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { Config } from '../core/config.ts'
import { PipelineError, firstLine } from '../core/errors.ts'
import { history, pendingRecovery, rollback, uninstall, type HelmTarget, type Release } from './helm.ts'
import { firstFailureReason, listEvents, listPods, rolloutStatus, type KubeTarget } from './kube.ts'
import { waitServing } from './track.ts'
import type { RevisionRecord } from './guard.ts'
import { repoRoot } from '../core/paths.ts'
import { readReport, writeReport, type Report } from '../core/reports.ts'
import type { Verified } from './verify.ts'
import { say } from '../core/output.ts'

export const CHART_DIR = join(repoRoot, 'charts', 'doc-server')
const CHART_NAME = 'doc-server'

export interface DeployImage {
  repository: string
  digest: string
  /** repository@digest: what the pods must run. */
  pinned: string
  pushed: boolean
  commit: string
}

const refused = (why: string) => new PipelineError(`deploy: refused: ${why}`)

/**
 * The one image deploy may ship: the build's digest, and only if the scan
 * passed that very digest. Anything missing or different is refused.
 */
export function deployableImage(build: Report<'build'>, scan: Report<'scan'> | undefined): DeployImage {
  const digest = build.image.digest
  if (!digest) throw refused('reports/build.json names no image digest; run the build stage (with a push) first')
  const repo = build.image.repository
  if (!repo.includes('/')) throw refused('reports/build.json names no image repository (registry/owner/name)')
  if (!scan) throw refused('reports/scan.json is missing; the image must pass the scan stage first')
  if (scan.image?.source === 'report') throw refused('reports/scan.json is a --from-report re-gate: a useful check, but it never makes an image deployable; run the scan stage on the pushed digest')
  if (scan.committedPolicy === false) throw refused('reports/scan.json was made under another scan policy than the committed .scan-policy.yaml (SCAN_* overrides); scan again without them')
  if (scan.deployable === false) throw refused('reports/scan.json says the scan is not deployable (not a pushed digest); run the scan stage on the pushed digest')
  if (scan.decision !== 'pass') throw refused(`the scan of ${digest.slice(0, 19)} did not pass (decision: ${scan.decision}${scan.reason ? `; ${scan.reason}` : ''})`)
  const scanned = scan.image?.digest
  if (!scanned) throw refused('reports/scan.json does not say which digest it scanned; run the scan stage again')
  if (scanned !== digest) throw refused(`the scanned image ${scanned.slice(0, 19)}… is not the built image ${digest.slice(0, 19)}…; scan the build being deployed`)
  return { repository: repo, digest, pinned: `${repo}@${digest}`, pushed: build.pushed, commit: build.commit.sha }
}

/** Reads both reports; a missing scan report is a refusal, not a crash. */
export function readDeployInputs(reportsDir: string): DeployImage {
  const build = readReport(reportsDir, 'build')
  let scan: Report<'scan'> | undefined
  try {
    scan = readReport(reportsDir, 'scan')
  } catch (err) {
    if (!/is missing/.test((err as Error).message)) throw err
  }
  return deployableImage(build, scan)
}

/** The chart's value files for an environment, in the order helm layers them. */
export function valueFiles(env: string, extra: string | undefined, chartDir = CHART_DIR): string[] {
  const envFile = join(chartDir, `values-${env}.yaml`)
  if (!existsSync(envFile)) throw refused(`environment "${env}" has no values file (${envFile})`)
  if (extra && !existsSync(extra)) throw refused(`DEPLOY_VALUES_FILE ${extra} does not exist`)
  return extra ? [envFile, extra] : [envFile]
}

/** The Deployment's name, as the chart's `doc-server.fullname` computes it. */
export function chartFullname(release: string): string {
  const name = release.includes(CHART_NAME) ? release : `${release}-${CHART_NAME}`
  return name.slice(0, 63).replace(/-+$/, '')
}

export function podSelector(release: string): string {
  return `app.kubernetes.io/name=${CHART_NAME},app.kubernetes.io/instance=${release}`
}

export type DeployResult = Report<'deploy'>['result']

/** What reports/deploy.json holds besides the release's names; `verified` is null when the registry was not reached, `details` is the verification's own output (cosign's commands and all they printed), which the screen shows only with DEBUG. */
export type DeployOutcome = Omit<Report<'deploy'>, 'release' | 'namespace' | 'environment' | 'verified'> & { verified: Verified | null; details: string | null }

export function writeDeployReport(config: Config, r: DeployOutcome): string {
  return writeReport(config.reportsDir, 'deploy', { release: config.releaseName, namespace: config.deployNamespace, environment: config.deployEnv, ...r })
}

/**
 * A release left in pending-* by an interrupted helm (a killed job, a lost
 * runner) blocks every later upgrade. It is rolled back to its last good
 * revision, or uninstalled if it never deployed. A pending revision younger
 * than the timeout its own deploy recorded (`records`, the revision's labels)
 * may be that deploy still running: refused. The caller's timeout is used
 * only for a revision that recorded none (made by another tool).
 */
export async function recoverPendingRelease(t: HelmTarget, r: Release, timeoutSecs: number, now = Date.now(), records: readonly RevisionRecord[] = []): Promise<string | undefined> {
  const plan = pendingRecovery(await history(t, r))
  if (plan.action === 'none') return undefined
  const from = plan.from
  const ageSecs = Math.round((now - (Date.parse(from.updated ?? '') || 0)) / 1000)
  const recorded = records.find((x) => x.revision === from.revision)?.timeoutSecs
  const limit = recorded ?? timeoutSecs
  if (ageSecs < limit) {
    const which = recorded !== undefined ? `its recorded timeout is ${recorded}s` : `it recorded no timeout; DEPLOY_TIMEOUT_SECS is ${timeoutSecs}s`
    throw new PipelineError(`deploy: release ${r.name} has been ${from.status} for ${ageSecs}s (revision ${from.revision}; ${which}); another deploy may still be running. Retry after ${limit - ageSecs}s`)
  }
  if (plan.action === 'rollback') {
    say(`revision ${from.revision} is stuck in ${from.status}: rolling back to revision ${plan.to}`)
    await rollback(t, r, plan.to, timeoutSecs)
    return `revision ${from.revision} was stuck in ${from.status}; rolled back to revision ${plan.to}`
  }
  say(`revision ${from.revision} is stuck in ${from.status} and never deployed: uninstalling it`)
  await uninstall(t, r)
  return `revision ${from.revision} was stuck in ${from.status} and never deployed; uninstalled`
}

/** After a failed upgrade: did helm roll back, to which revision, and why did the rollout fail? */
export async function explainFailure(k: KubeTarget, t: HelmTarget, r: Release, sinceMs: number): Promise<{ rolledBackTo: number | undefined; revision: number | undefined; reason: string | undefined }> {
  const entries = await history(t, r).catch(() => [])
  const last = entries[entries.length - 1]
  const m = last?.status === 'deployed' ? /^Rollback to (\d+)/.exec(last.description ?? '') : null
  const [events, pods] = await Promise.all([listEvents(k, r.namespace).catch(() => []), listPods(k, r.namespace, podSelector(r.name)).catch(() => [])])
  return { rolledBackTo: m ? Number(m[1]) : undefined, revision: last?.revision, reason: firstFailureReason(events, pods, chartFullname(r.name), sinceMs) }
}

/** After Helm's rollback: the previous revision's pods are serving again, or one line saying they are not. */
export async function confirmRollback(k: KubeTarget, r: Release): Promise<string | undefined> {
  try {
    await rolloutStatus(k, r.namespace, chartFullname(r.name))
    return undefined
  } catch (err) {
    return `the rolled-back revision is not healthy either: ${firstLine(err)}`
  }
}

/**
 * The rollout is complete and every serving pod runs exactly the deployed
 * image, ready: waited for (within what is left of the deploy timeout), with
 * the rollout tracker naming a pod that cannot become ready.
 */
export async function verifyRollout(k: KubeTarget, r: Release, pinned: string, digest: string, o: { graceSecs: number; deadline: number; timeoutSecs: number }): Promise<number> {
  return waitServing({ kube: k, namespace: r.namespace, deployment: chartFullname(r.name), selector: podSelector(r.name), image: pinned, digest, ...o })
}
