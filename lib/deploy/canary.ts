/**
 * A release in steps: the new digest first runs as a canary, a Helm release
 * of its own (`<release>-canary`, the chart with `canary.enabled`) whose
 * Deployment runs beside the stable one behind the same Service, sized to
 * the environment's weight, while the stable release is not touched. Its
 * rollout is tracked like any other (a crash loop stops it at once), then
 * its smoke tests run in the cluster (`helm test`), then the analysis
 * judges its real traffic. Promoting is the ordinary tracked upgrade of the
 * stable release; aborting removes the canary release, and the stable pods
 * never changed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PipelineError, firstLine } from '../core/errors.ts'
import { say } from '../core/output.ts'
import { run } from '../core/run.ts'
import { waitFor } from '../core/wait.ts'
import { analyse, type AnalysisResult } from './analysis.ts'
import { CHART_DIR, chartFullname } from './deploy.ts'
import { shownUrl, type CanarySettings, type Environment } from './environments.ts'
import { history, uninstall, type HelmTarget, type Release } from './helm.ts'
import { getDeployment, listPods, type KubeTarget } from './kube.ts'
import { queryNumber } from './prometheus.ts'
import { RolloutStopped, upgradeTracked } from './track.ts'

export interface CanaryPlan {
  /** Why there is no canary (the release rolls out directly); the rest is then unset. */
  skip?: string
  settings?: CanarySettings
  stableReplicas?: number
  replicas?: number
  /** Where the analysis asks; unset when it is skipped. */
  prometheus?: string
  /** Why there is no analysis (the canary is judged by its smoke tests alone). */
  analysisSkip?: string
}

export interface SmokeResult {
  passed: boolean
  seconds: number
  /** The smoke test's own lines (each problem, then its verdict). */
  lines: string[]
}

/** What reports/deploy.json says about the canary. */
export interface CanaryFacts {
  /** `passed`: judged good and removed, the stable release is promoted next. */
  decision: 'skipped' | 'passed' | 'promoted' | 'aborted'
  reason: string | null
  weight: number | null
  replicas: number | null
  stableReplicas: number | null
  smoke: SmokeResult | null
  analysis: {
    prometheus: string | null
    skipped: string | null
    settings: CanarySettings['analysis'] | null
    result: AnalysisResult | null
  } | null
  seconds: number
}

export const canaryRelease = (r: Release): Release => ({ name: `${r.name}-canary`, namespace: r.namespace })
/** The canary's pods: the stable release's instance label and the canary track. */
export const canarySelector = (release: string) =>
  `app.kubernetes.io/name=doc-server,app.kubernetes.io/instance=${release},doc-server.dev/track=canary`
/** Kubernetes writes a pod's template hash and suffix in these letters (no vowels): `canary` or `smoke` can never be one. */
const SAFE = '[bcdfghjklmnpqrstvwxz2456789]'
/** Pod names as the Deployments make them (<deployment>-<template hash>-<suffix>), for Prometheus' `pod` label. */
export const stablePods = (release: string) => `${chartFullname(release)}-${SAFE}{5,10}-${SAFE}{5}`
export const canaryPods = (release: string) => `${chartFullname(release).slice(0, 56).replace(/-+$/, '')}-canary-${SAFE}{5,10}-${SAFE}{5}`

/** Canary pods for a weight: the share of all the release's pods they make, at least one (25 % beside 3 stable pods is 1 of 4). */
export function canaryReplicas(stable: number, weight: number): number {
  return Math.max(1, Math.round((stable * weight) / (100 - weight)))
}

export interface PlanInputs {
  envName: string
  env: Pick<Environment, 'canary' | 'prometheus'>
  kube: KubeTarget
  release: Release
  /** The deployed revision of the stable release; none means a first release. */
  previousRevision: number | undefined
  /** The local cluster's own Prometheus, when the target is the local cluster. */
  localPrometheus: string | undefined
  /** `--no-canary`. */
  direct: boolean
}

/**
 * Whether this deploy goes through a canary and how, decided before
 * anything changes: an environment that requires analysis but names no
 * Prometheus, or a Prometheus that does not answer, is refused here.
 */
export async function planCanary(p: PlanInputs): Promise<CanaryPlan> {
  const settings = p.env.canary
  if (!settings) return { skip: `none set for ${p.envName} in environments.yaml; direct rollout` }
  if (p.direct) return { skip: '--no-canary; direct rollout' }
  if (p.previousRevision === undefined) return { skip: 'first release: no stable pods to compare with; direct rollout' }
  if (canaryRelease(p.release).name.length > 53)
    throw new PipelineError(
      `deploy: refused: RELEASE_NAME ${p.release.name} is too long for its canary release ${canaryRelease(p.release).name} (Helm allows 53 characters)`,
    )
  const stable = await getDeployment(p.kube, p.release.namespace, chartFullname(p.release.name)).catch(() => undefined)
  const stableReplicas = stable?.spec.replicas ?? 0
  if (stableReplicas < 1) return { skip: `the stable deployment ${chartFullname(p.release.name)} runs no pods; direct rollout` }
  const plan: CanaryPlan = { settings, stableReplicas, replicas: canaryReplicas(stableReplicas, settings.weight) }
  const prometheus = p.env.prometheus ?? p.localPrometheus
  if (!prometheus) {
    if (settings.analysis.required)
      throw new PipelineError(
        `deploy: refused: ${p.envName} requires canary analysis (canary.analysis.required) but environments.yaml names no Prometheus for it; declare its prometheus URL`,
      )
    return {
      ...plan,
      analysisSkip: `environments.yaml names no Prometheus for ${p.envName}; the canary is judged by its smoke tests alone`,
    }
  }
  try {
    await queryNumber(prometheus, 'vector(1)')
  } catch (err) {
    throw new PipelineError(`deploy: canary analysis cannot run: ${firstLine(err)}; no canary was started, the stable pods are unchanged`)
  }
  return { ...plan, prometheus }
}

export interface CanaryDeploy {
  helm: HelmTarget
  kube: KubeTarget
  release: Release
  /** repository@digest. */
  image: string
  valueFiles: readonly string[]
  sets: Record<string, string>
  timeoutSecs: number
  graceSecs: number
}

/**
 * Removes the canary release, if there is one (a left-over of an interrupted
 * deploy too), and returns once none of its pods serves any more: each is
 * gone or terminating, which takes it out of the Service at once, while its
 * requests in flight drain.
 */
export async function removeCanary(helm: HelmTarget, kube: KubeTarget, release: Release): Promise<boolean> {
  const canary = canaryRelease(release)
  if ((await history(helm, canary)).length === 0) return false
  await uninstall(helm, canary)
  const serving = async () =>
    (await listPods(kube, release.namespace, canarySelector(release.name))).filter((p) => !p.metadata.deletionTimestamp).length
  await waitFor(async () => ((await serving()) === 0 ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 500,
    onTimeout: () => new PipelineError(`deploy: the canary release ${canary.name} was removed but its pods still serve after 60 s`),
  })
  return true
}

/**
 * Installs the canary release beside the stable one and waits, tracked,
 * until its pods are ready; a rollout failure removes it and throws
 * RolloutStopped (or Helm's own error).
 */
export async function startCanary(d: CanaryDeploy, replicas: number): Promise<void> {
  if (await removeCanary(d.helm, d.kube, d.release)) say(`removed a canary left by an earlier deploy`)
  const dir = mkdtempSync(join(tmpdir(), 'doc-server-canary-'))
  try {
    // Typed values (a boolean, a number): --set-string would hand the schema strings.
    const values = join(dir, 'canary.yaml')
    writeFileSync(values, `canary:\n  enabled: true\n  of: ${d.release.name}\n  replicas: ${replicas}\n`)
    const canary = canaryRelease(d.release)
    await upgradeTracked(
      d.helm,
      canary,
      { chart: CHART_DIR, valueFiles: [...d.valueFiles, values], sets: d.sets, timeoutSecs: d.timeoutSecs },
      { kube: d.kube, image: d.image, selector: canarySelector(d.release.name), graceSecs: d.graceSecs },
    )
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The chart's smoke test (`helm test`) against the canary's own Service; its lines from the test pod's log. */
export async function smokeTest(helm: HelmTarget, release: Release, timeoutSecs: number): Promise<SmokeResult> {
  const started = performance.now()
  const canary = canaryRelease(release)
  const flags = [
    ...(helm.kubeconfig ? ['--kubeconfig', helm.kubeconfig] : []),
    '--kube-context',
    helm.context,
    '--namespace',
    canary.namespace,
  ]
  const r = await run([helm.helm, 'test', canary.name, ...flags, '--logs', '--timeout', `${timeoutSecs}s`], {
    okCodes: [1],
    timeoutMs: (timeoutSecs + 60) * 1000,
  })
  const out = `${r.stdout}\n${r.stderr}`
  const lines = out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^doc-server: smoke test/.test(l))
    .map((l) => l.replace(/^doc-server: /, ''))
  if (r.exitCode === 0 && lines.length === 0) lines.push('helm test passed (no smoke test log)')
  if (r.exitCode !== 0 && !lines.some((l) => l.startsWith('smoke test failed'))) {
    const why =
      out
        .split('\n')
        .find((l) => /^Error:/.test(l.trim()))
        ?.trim()
        .replace(/^Error:\s*/, '') ?? firstLine(out)
    lines.push(`smoke test failed: ${why}`)
  }
  return { passed: r.exitCode === 0, seconds: Math.round((performance.now() - started) / 100) / 10, lines }
}

/** The analysis of the running canary against the stable pods, through the planned Prometheus. */
export async function analyseCanary(plan: CanaryPlan, release: Release): Promise<AnalysisResult> {
  const url = plan.prometheus!
  return analyse({
    settings: plan.settings!.analysis,
    query: (promql) => queryNumber(url, promql),
    namespace: release.namespace,
    canaryPods: canaryPods(release.name),
    stablePods: stablePods(release.name),
  })
}

/** The canary's part of reports/deploy.json. */
export function canaryFacts(
  plan: CanaryPlan | undefined,
  o: { decision: CanaryFacts['decision']; reason: string | null; smoke?: SmokeResult; analysis?: AnalysisResult; seconds: number },
): CanaryFacts {
  const s = plan?.settings
  return {
    decision: o.decision,
    reason: o.reason,
    weight: s?.weight ?? null,
    replicas: plan?.replicas ?? null,
    stableReplicas: plan?.stableReplicas ?? null,
    smoke: o.smoke ?? null,
    analysis: s
      ? {
          prometheus: plan?.prometheus ? shownUrl(plan.prometheus) : null,
          skipped: plan?.analysisSkip ?? null,
          settings: s.analysis,
          result: o.analysis ?? null,
        }
      : null,
    seconds: o.seconds,
  }
}

/** How a rollout failure of the canary reads. */
export function canaryRolloutFailure(err: unknown): string {
  return err instanceof RolloutStopped
    ? `the canary did not become ready: ${err.reason}`
    : `the canary did not become ready: ${firstLine(err)}`
}

/** The canary was removed; the stable pods never changed. `facts` is what the report keeps. */
export class CanaryAborted extends PipelineError {
  constructor(
    readonly facts: CanaryFacts,
    message: string,
  ) {
    super(message)
  }
}

const SMOKE_TIMEOUT_SECS = 180

/**
 * The canary from start to verdict: its tracked rollout, the smoke tests,
 * the analysis. A failure at any step removes it and throws CanaryAborted
 * whose message is the last line to print (the step, the check, the figure
 * and the threshold). A canary that passed is removed too: the stable
 * release's own rollout (the promotion) replaces the capacity it lent.
 */
export async function runCanary(d: CanaryDeploy, plan: CanaryPlan, digest: string): Promise<CanaryFacts> {
  const started = performance.now()
  const seconds = () => Math.round((performance.now() - started) / 100) / 10
  const abort = async (reason: string, o: { smoke?: SmokeResult; analysis?: AnalysisResult } = {}) => {
    say(`aborting the canary: ${reason}`)
    await removeCanary(d.helm, d.kube, d.release).catch((err: unknown) => {
      throw new PipelineError(
        `deploy: the canary failed (${reason}) and could not be removed: ${firstLine(err)}; remove the release ${canaryRelease(d.release).name} by hand`,
      )
    })
    const facts = canaryFacts(plan, { decision: 'aborted', reason, ...o, seconds: seconds() })
    return new CanaryAborted(facts, `deploy: canary ${digest.slice(0, 19)}… aborted, stable pods unchanged: ${reason}`)
  }
  say(`starting ${plan.replicas} canary pod(s) beside ${plan.stableReplicas} stable`)
  try {
    await startCanary(d, plan.replicas!)
  } catch (err) {
    throw await abort(canaryRolloutFailure(err))
  }
  say('smoke tests: helm test against the canary')
  const smoke = await smokeTest(d.helm, d.release, SMOKE_TIMEOUT_SECS)
  if (!smoke.passed) throw await abort(smoke.lines.at(-1)!, { smoke })
  let analysis: AnalysisResult | undefined
  if (!plan.analysisSkip) {
    say(`analysis over ${plan.settings!.analysis.duration / 1000} s through ${shownUrl(plan.prometheus!)}`)
    try {
      analysis = await analyseCanary(plan, d.release)
    } catch (err) {
      throw await abort(`analysis failed: ${firstLine(err)}`, { smoke })
    }
    if (analysis.result !== 'pass')
      throw await abort(`analysis ${analysis.result === 'fail' ? 'failed' : 'was inconclusive'}: ${analysis.reason}`, { smoke, analysis })
  }
  await removeCanary(d.helm, d.kube, d.release)
  return canaryFacts(plan, {
    decision: 'passed',
    reason: plan.analysisSkip ?? null,
    smoke,
    ...(analysis ? { analysis } : {}),
    seconds: seconds(),
  })
}

/** The task title for a plan. */
export function describePlan(p: CanaryPlan): string {
  if (p.skip) return `Canary: skipped (${p.skip})`
  const a = p.settings!.analysis
  const analysis = p.analysisSkip
    ? `no analysis: ${p.analysisSkip}`
    : `analysis ${a.duration / 1000} s every ${a.interval / 1000} s through ${shownUrl(p.prometheus!)}`
  return `Canary: ${p.replicas} of ${p.replicas! + p.stableReplicas!} pods on the new digest (weight ${p.settings!.weight} %); smoke tests; ${analysis}`
}

/** The task title once the canary passed. */
export function describePassed(f: CanaryFacts): string {
  const checks = f.analysis?.result?.steps.length
  return `Canary: passed its smoke tests${checks ? ` and ${checks} analysis checks` : ` (${f.reason})`} in ${f.seconds} s; removed, the stable release is promoted`
}
