/**
 * The deploy benchmark's measurements on the local cluster's real node:
 * helm upgrade to ready, a rolling update under bounded load, and how long a
 * crash-looping release takes to be stopped and rolled back with rollout
 * tracking versus Helm's plain `--rollback-on-failure --wait=watcher`.
 */
import { mkdirSync,mkdtempSync,rmSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname,join } from 'node:path'
import { pushImage } from '../../lib/build/registry.ts'
import { run } from '../../lib/core/run.ts'
import { dockerEnv } from '../../lib/build/docker.ts'
import { runLoad,serviceProgrammed,type LoadResult } from './load.ts'
import { chartFullname,podSelector } from '../../lib/deploy/deploy.ts'
import { history,pendingRecovery,rollback,upgradeInstall,type HelmTarget,type Release,type UpgradeOptions } from '../../lib/deploy/helm.ts'
import { kubeFlags,rolloutStatus,type KubeTarget } from '../../lib/deploy/kube.ts'
import { upgradeTracked } from '../../lib/deploy/track.ts'
import { waitFor } from '../../lib/core/wait.ts'
import { PipelineError } from '../../lib/core/errors.ts'

/** A copy of an image that differs by one label: the same server under a new digest. */
export async function pushVariant(docker: string, repository: string, base: string, label: string, files: Record<string, string> = {}): Promise<string> {
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
  const res = await run([k.kubectl, ...kubeFlags(k), '-n', r.namespace, 'get', 'service', chartFullname(r.name), '-o', 'jsonpath={.spec.clusterIP}'])
  const ip = res.stdout.trim()
  return waitFor(async () => ((await serviceProgrammed(ip)) ? ip : undefined), { timeoutMs: 30_000, intervalMs: 1000, onTimeout: () => new PipelineError(`bench: kube-proxy has not programmed ${ip} after 30 s`) })
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
export async function upgradeUnderLoad(t: HelmTarget, k: KubeTarget, r: Release, base: UpgradeOptions, repository: string, digest: string, maxSeconds: number): Promise<{ seconds: number; load: LoadResult }> {
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
export async function crashLoopRollback(t: HelmTarget, k: KubeTarget, r: Release, base: UpgradeOptions, repository: string, digest: string, badValues: string, graceSecs: number): Promise<{ tracked: number; plainHelm: number }> {
  const o = { ...base, valueFiles: [...base.valueFiles, badValues], sets: { 'image.repository': repository, 'image.digest': digest } }
  const tracked = await timed(() => upgradeTracked(t, r, o, { kube: k, image: `${repository}@${digest}`, selector: podSelector(r.name), graceSecs }).catch(() => undefined))
  const plain = await timed(() => upgradeInstall(t, r, o).catch(() => undefined))
  // Helm's --rollback-on-failure rolled back itself; anything left pending is settled so the next run starts clean.
  const plan = pendingRecovery(await history(t, r))
  if (plan.action === 'rollback') await rollback(t, r, plan.to, base.timeoutSecs)
  return { tracked: tracked.seconds, plainHelm: plain.seconds }
}
