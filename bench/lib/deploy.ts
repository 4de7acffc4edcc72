/**
 * The deploy benchmark's measurements on the local cluster's real node:
 * helm upgrade to ready, a rolling update under bounded load, how long a
 * crash-looping release takes to be stopped and rolled back with rollout
 * tracking versus Helm's plain `--rollback-on-failure --wait=watcher`, and a
 * release through a canary (smoke tests, analysis against the local
 * Prometheus, promotion or abort) under a mixed load of reads and searches.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { pushImage } from '../../lib/build/registry.ts'
import { run } from '../../lib/core/run.ts'
import { dockerEnv } from '../../lib/build/docker.ts'
import { runLoad, runMixedLoad, serviceProgrammed, type LoadResult, type Route } from './load.ts'
import { CanaryAborted, planCanary, runCanary, type CanaryFacts } from '../../lib/deploy/canary.ts'
import type { CanarySettings } from '../../lib/deploy/environments.ts'
import { LOCAL_PROMETHEUS_URL } from '../../lib/sandbox/prometheus.ts'
import { chartFullname, podSelector } from '../../lib/deploy/deploy.ts'
import {
  history,
  pendingRecovery,
  rollback,
  upgradeInstall,
  type HelmTarget,
  type Release,
  type UpgradeOptions,
} from '../../lib/deploy/helm.ts'
import { kubeFlags, rolloutStatus, type KubeTarget } from '../../lib/deploy/kube.ts'
import { upgradeTracked } from '../../lib/deploy/track.ts'
import { sleep, waitFor } from '../../lib/core/wait.ts'
import { PipelineError } from '../../lib/core/errors.ts'

/** A copy of an image that differs by one label: the same server under a new digest. */
export async function pushVariant(
  docker: string,
  repository: string,
  base: string,
  label: string,
  files: Record<string, string> = {},
): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'doc-server-variant-'))
  try {
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, 'files', path)), { recursive: true })
      writeFileSync(join(dir, 'files', path), text)
    }
    const copy = Object.keys(files).length ? 'COPY files/ /\n' : ''
    writeFileSync(join(dir, 'Dockerfile'), `FROM ${base}\n${copy}LABEL dev.doc-server.variant="${label}"\n`)
    const ref = `${repository}:variant-${label}`
    await run([docker, 'build', '--quiet', '--tag', ref, dir], { env: dockerEnv(), timeoutMs: 300_000 })
    return (await pushImage(docker, ref)).digest
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The Service's ClusterIP, once kube-proxy has a rule for it (so traffic cannot leave the machine). */
export async function programmedClusterIp(k: KubeTarget, r: Release): Promise<string> {
  const res = await run([
    k.kubectl,
    ...kubeFlags(k),
    '-n',
    r.namespace,
    'get',
    'service',
    chartFullname(r.name),
    '-o',
    'jsonpath={.spec.clusterIP}',
  ])
  const ip = res.stdout.trim()
  return waitFor(async () => ((await serviceProgrammed(ip)) ? ip : undefined), {
    timeoutMs: 30_000,
    intervalMs: 1000,
    onTimeout: () => new PipelineError(`bench: kube-proxy has not programmed ${ip} after 30 s`),
  })
}

export interface Timed<T> {
  seconds: number
  value: T
}

async function timed<T>(fn: () => Promise<T>): Promise<Timed<T>> {
  const t0 = performance.now()
  const value = await fn()
  return { seconds: Math.round((performance.now() - t0) / 100) / 10, value }
}

/** An upgrade to `digest` while a bounded load runs through the Service, until the rollout is complete. */
export async function upgradeUnderLoad(
  t: HelmTarget,
  k: KubeTarget,
  r: Release,
  base: UpgradeOptions,
  repository: string,
  digest: string,
  maxSeconds: number,
): Promise<{ seconds: number; load: LoadResult }> {
  const host = await programmedClusterIp(k, r)
  const ac = new AbortController()
  const loading = runLoad({ host, port: 80, path: '/api/docs', concurrency: 4, maxRequests: 50_000, maxSeconds, signal: ac.signal })
  // Helm's --wait does not count minReadySeconds; `rollout status` waits until the Deployment is complete.
  const up = await timed(async () => {
    await upgradeInstall(t, r, { ...base, sets: { ...base.sets, 'image.repository': repository, 'image.digest': digest } })
    await rolloutStatus(k, r.namespace, chartFullname(r.name))
  })
  ac.abort()
  return { seconds: up.seconds, load: await loading }
}

/**
 * A crash-looping upgrade: seconds until the release is back on its previous
 * revision, with tracking, and with plain `helm --rollback-on-failure --wait=watcher` (which sits
 * out its timeout before rolling back).
 */
export async function crashLoopRollback(
  t: HelmTarget,
  k: KubeTarget,
  r: Release,
  base: UpgradeOptions,
  repository: string,
  digest: string,
  badValues: string,
  graceSecs: number,
): Promise<{ tracked: number; plainHelm: number }> {
  const o = { ...base, valueFiles: [...base.valueFiles, badValues], sets: { 'image.repository': repository, 'image.digest': digest } }
  const tracked = await timed(() =>
    upgradeTracked(t, r, o, { kube: k, image: `${repository}@${digest}`, selector: podSelector(r.name), graceSecs }).catch(() => undefined),
  )
  const plain = await timed(() => upgradeInstall(t, r, o).catch(() => undefined))
  // Helm's --rollback-on-failure rolled back itself; anything left pending is settled so the next run starts clean.
  const plan = pendingRecovery(await history(t, r))
  if (plan.action === 'rollback') await rollback(t, r, plan.to, base.timeoutSecs)
  return { tracked: tracked.seconds, plainHelm: plain.seconds }
}

/** What users do meanwhile: three readers of a document and one searcher (of a word no document holds, so every search reads the whole tree), a new connection per request. */
export const MIXED: readonly Route[] = [
  { path: '/api/docs/getting-started', concurrency: 3 },
  { path: '/api/search?q=zqxjkv', concurrency: 1 },
]

export interface CanaryRun {
  /** From the deploy's start (the canary plan) to promoted (stable rolled out) or aborted (canary removed). */
  seconds: number
  outcome: 'promoted' | 'aborted'
  reason: string | null
  facts: CanaryFacts
  load: Record<string, LoadResult>
}

/**
 * A release of `digest` (with `extraValues` layered over the base values)
 * as the deploy stage runs it where the environment asks for a canary:
 * plan, canary beside the stable pods, smoke tests, analysis through the
 * local Prometheus, then the tracked upgrade of the stable release, or the
 * abort; all under the mixed load through the Service.
 */
export async function canaryUnderLoad(
  t: HelmTarget,
  k: KubeTarget,
  r: Release,
  base: UpgradeOptions,
  repository: string,
  digest: string,
  canary: CanarySettings,
  graceSecs: number,
  extraValues: string[] = [],
): Promise<CanaryRun> {
  const host = await programmedClusterIp(k, r)
  const ac = new AbortController()
  const loading = runMixedLoad({ host, port: 80, maxRequests: 500_000, maxSeconds: 900, signal: ac.signal }, MIXED)
  const sets = { 'image.repository': repository, 'image.digest': digest }
  const image = `${repository}@${digest}`
  const o = { ...base, valueFiles: [...base.valueFiles, ...extraValues], sets }
  const started = performance.now()
  let facts: CanaryFacts
  let outcome: CanaryRun['outcome'] = 'promoted'
  let reason: string | null = null
  try {
    const previousRevision = [...(await history(t, r))].reverse().find((e) => e.status === 'deployed')?.revision
    const plan = await planCanary({
      envName: 'bench',
      env: { canary },
      kube: k,
      release: r,
      previousRevision,
      localPrometheus: LOCAL_PROMETHEUS_URL,
      direct: false,
    })
    if (plan.skip) throw new PipelineError(`bench: the canary was skipped: ${plan.skip}`)
    facts = await runCanary(
      { helm: t, kube: k, release: r, image, valueFiles: o.valueFiles, sets, timeoutSecs: base.timeoutSecs, graceSecs },
      plan,
      digest,
    )
    await upgradeTracked(t, r, o, { kube: k, image, selector: podSelector(r.name), graceSecs })
    await rolloutStatus(k, r.namespace, chartFullname(r.name))
    facts.decision = 'promoted'
  } catch (err) {
    if (!(err instanceof CanaryAborted)) throw err
    facts = err.facts
    outcome = 'aborted'
    reason = err.message
  } finally {
    ac.abort()
  }
  const seconds = Math.round((performance.now() - started) / 100) / 10
  return { seconds, outcome, reason, facts, load: await loading }
}

/** A direct rolling update (no canary) of `digest` with `extraValues`, under the mixed load: seconds to fully rolled out, and what users saw. */
export async function directUnderLoad(
  t: HelmTarget,
  k: KubeTarget,
  r: Release,
  base: UpgradeOptions,
  repository: string,
  digest: string,
  extraValues: string[] = [],
  afterSeconds = 0,
): Promise<{ seconds: number; load: Record<string, LoadResult> }> {
  const host = await programmedClusterIp(k, r)
  const ac = new AbortController()
  const loading = runMixedLoad({ host, port: 80, maxRequests: 500_000, maxSeconds: 900, signal: ac.signal }, MIXED)
  const up = await timed(async () => {
    await upgradeInstall(t, r, {
      ...base,
      valueFiles: [...base.valueFiles, ...extraValues],
      sets: { 'image.repository': repository, 'image.digest': digest },
    })
    await rolloutStatus(k, r.namespace, chartFullname(r.name))
  })
  // Users keep reading what went live for a moment after the rollout.
  await sleep(afterSeconds * 1000)
  ac.abort()
  return { seconds: up.seconds, load: await loading }
}

/**
 * A slower release, honestly: the image's four documents and 24 more of
 * 1 MiB of prose (24 MiB, within DOCS_MAX_BYTES), so every search that finds
 * nothing reads 24 MiB where the stable pods read a few KiB. Paths inside the
 * image, for pushVariant.
 */
export function slowDocs(): Record<string, string> {
  const line = 'release canary document server probe window metric stable digest cluster\n'
  const body = line.repeat(Math.floor((1024 * 1024 - 64) / line.length))
  return Object.fromEntries(
    Array.from({ length: 24 }, (_, i) => [
      `usr/local/share/doc-server/docs/padding-${String(i).padStart(2, '0')}.md`,
      `# Padding ${i}\n\n${body}`,
    ]),
  )
}
