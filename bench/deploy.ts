/**
 * `npm run bench:deploy`: the deploy path on the local cluster's real node.
 * Seconds from `helm upgrade` to every pod ready on the new digest; requests
 * sent, failed, p50 and p99 during that rolling update (a bounded load through
 * the Service's ClusterIP); seconds until a crash-looping release is back on
 * its previous revision, with rollout tracking and with Helm's plain
 * `--rollback-on-failure --wait=watcher`. Needs the pushed image of `npm run ci:image`
 * (reports/build.json). Figures go to reports/bench-deploy.json; not a gate.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { markdownTable } from '../lib/core/summary.ts'
import { readReport } from '../lib/core/reports.ts'
import { defineStage, runStage } from '../lib/core/stage.ts'
import { crashLoopRollback, pushVariant, upgradeUnderLoad } from './lib/deploy.ts'
import { CHART_DIR, valueFiles } from '../lib/deploy/deploy.ts'
import { upgradeInstall, type HelmTarget, type Release } from '../lib/deploy/helm.ts'
import { deleteNamespace, type KubeTarget } from '../lib/deploy/kube.ts'
import { writeAdmissionValues } from '../lib/deploy/admission.ts'
import type { LoadResult } from './lib/load.ts'
import { ensureCluster } from '../lib/sandbox/cluster.ts'
import { ensureDockerEngine } from '../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY, ensureRegistry } from '../lib/sandbox/registry.ts'

interface BenchCtx {
  config: Config
  repository: string
  digests: string[]
  kube: KubeTarget
  helm: HelmTarget
  release: Release
  upgrades: { to: string; seconds: number; load: LoadResult }[]
  crash?: { tracked: number; plainHelm: number; timeoutSecs: number; graceSecs: number }
}

const TIMEOUT_SECS = 120
const GRACE_SECS = 30

// Helm run by hand, as a deploy does it but without the admission policy (measured on its own below).
const base = (reports: string) => ({ chart: CHART_DIR, valueFiles: [...valueFiles('staging', undefined), writeAdmissionValues(reports, { enabled: false })], sets: {}, timeoutSecs: TIMEOUT_SECS })

function tasks(): ListrTask<BenchCtx>[] {
  return [
    {
      title: 'Image and local cluster',
      task: async (ctx, task) => {
        const build = readReport(ctx.config.reportsDir, 'build')
        const { digest, repository } = build.image
        if (!digest || !repository.startsWith(`${LOCAL_REGISTRY}/`) || !build.pushed) {
          throw new PipelineError(`bench:deploy: reports/build.json names no image pushed to ${LOCAL_REGISTRY}; run \`npm run ci:image\` first`)
        }
        const docker = (await ensureDockerEngine(ctx.config.docker)).docker
        await ensureRegistry(LOCAL_REGISTRY)
        const cluster = await ensureCluster(ctx.config.cacheDir)
        ctx.kube = { kubectl: cluster.binaries.kubectl, kubeconfig: cluster.kubeconfig, context: cluster.context }
        ctx.helm = { helm: cluster.binaries.helm, kubeconfig: cluster.kubeconfig, context: cluster.context }
        ctx.repository = repository
        ctx.digests = [digest, await pushVariant(docker, repository, `${repository}@${digest}`, 'bench-b')]
        ctx.release = { name: 'doc-server', namespace: 'doc-server-bench' }
        await deleteNamespace(ctx.kube, ctx.release.namespace)
        await upgradeInstall(ctx.helm, ctx.release, { ...base(ctx.config.reportsDir), sets: { 'image.repository': repository, 'image.digest': digest } })
        task.title = `Image and local cluster: ${repository}@${digest.slice(0, 19)}… installed`
      },
    },
    {
      title: 'Rolling updates under load (helm upgrade → all pods ready)',
      task: async (ctx, task) => {
        ctx.upgrades = []
        for (const d of [ctx.digests[1]!, ctx.digests[0]!]) {
          task.output = `upgrading to ${d.slice(0, 19)}…`
          const r = await upgradeUnderLoad(ctx.helm, ctx.kube, ctx.release, base(ctx.config.reportsDir), ctx.repository, d, 180)
          ctx.upgrades.push({ to: d, ...r })
        }
        task.title = `Rolling updates under load: ${ctx.upgrades.map((u) => `${u.seconds} s, ${u.load.failed}/${u.load.sent} failed`).join('; ')}`
      },
    },
    {
      title: `Crash-looping release: tracked vs plain helm --rollback-on-failure --wait (timeout ${TIMEOUT_SECS}s)`,
      task: async (ctx, task) => {
        const bad = join(ctx.config.reportsDir, 'bench-deploy-bad-values.yaml')
        writeFileSync(bad, 'docsDir: /no/such/docs\n')
        const r = await crashLoopRollback(ctx.helm, ctx.kube, ctx.release, base(ctx.config.reportsDir), ctx.repository, ctx.digests[1]!, bad, GRACE_SECS)
        ctx.crash = { ...r, timeoutSecs: TIMEOUT_SECS, graceSecs: GRACE_SECS }
        task.title = `Crash-looping release rolled back: tracked ${r.tracked} s, plain helm ${r.plainHelm} s`
      },
    },
    {
      title: 'Report',
      task: async (ctx, task) => {
        await deleteNamespace(ctx.kube, ctx.release.namespace)
        const rows = ctx.upgrades.map((u) => [`upgrade to ${u.to.slice(7, 19)}`, `${u.seconds}`, `${u.load.sent}`, `${u.load.failed}`, `${u.load.p50Ms}`, `${u.load.p99Ms}`])
        const file = join(ctx.config.reportsDir, 'bench-deploy.json')
        mkdirSync(ctx.config.reportsDir, { recursive: true })
        writeFileSync(file, `${JSON.stringify({ writtenAt: new Date().toISOString(), replicas: 2, upgrades: ctx.upgrades, crashLoop: ctx.crash }, null, 2)}\n`)
        console.log(markdownTable(['rollout', 'helm upgrade → ready (s)', 'requests', 'failed', 'p50 ms', 'p99 ms'], rows))
        console.log(markdownTable(['crash-looping release', 'seconds to rolled back'], [['rollout tracking', `${ctx.crash!.tracked}`], [`plain helm --rollback-on-failure --wait (timeout ${TIMEOUT_SECS}s)`, `${ctx.crash!.plainHelm}`]]))
        task.title = `Report: ${file}`
      },
    },
  ]
}

export const stage = defineStage<BenchCtx>({ name: 'bench-deploy', tasks, initialCtx: () => ({ config: loadConfig() }) as BenchCtx })

if (isMain(import.meta.url)) await runStage(stage)
