/**
 * `npm run bench:deploy`: the deploy path on the local cluster's real node.
 * Seconds from `helm upgrade` to every pod ready on the new digest; requests
 * sent, failed, p50 and p99 during that rolling update (a bounded load through
 * the Service's ClusterIP); seconds until a crash-looping release is back on
 * its previous revision, with rollout tracking and with Helm's plain
 * `--rollback-on-failure --wait=watcher`. Then the admission policy's cost, side
 * by side in two namespaces, without and with it (Kyverno started as
 * `cluster:up` starts it): the deploy stage's total time, the API server's
 * answer to a pod create, and a rolling restart under load. Needs the pushed
 * and scanned image of `npm run ci:image && npm run ci:scan` (reports/build.json,
 * reports/scan.json). Figures go to reports/bench-deploy.json; not a gate.
 */
import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
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
import { uninstall, upgradeInstall, type HelmTarget, type Release } from '../lib/deploy/helm.ts'
import { deleteNamespace, type KubeTarget } from '../lib/deploy/kube.ts'
import { writeAdmissionValues } from '../lib/deploy/admission.ts'
import type { LoadResult } from './lib/load.ts'
import { ensureCluster, type LocalCluster } from '../lib/sandbox/cluster.ts'
import { startAdmission } from '../lib/sandbox/admission.ts'
import { apiClient, createLatencies, deployStage, type CreateLatency } from './lib/admission.ts'
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
  cluster: LocalCluster
  /** Where the admission rounds' deploys keep their reports and values. */
  admissionReports?: string
  admission?: {
    deploys: { policy: Policy; round: number; seconds: number }[]
    creates: (CreateLatency & { policy: Policy })[]
    restarts: { policy: Policy; seconds: number; load: LoadResult }[]
  }
}

type Policy = 'off' | 'on'
const POLICIES: Policy[] = ['off', 'on']
const admissionNamespace = (p: Policy) => `doc-server-bench-policy-${p}`
const CREATES = 30

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
        const cluster = (ctx.cluster = await ensureCluster(ctx.config.cacheDir))
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
      title: 'Admission: the deploy stage without and with the policy (2 rounds, first installs)',
      task: async (ctx, task) => {
        const scan = readReport(ctx.config.reportsDir, 'scan')
        if (scan.decision !== 'pass' || scan.image?.digest !== ctx.digests[0]) throw new PipelineError('bench:deploy: reports/scan.json is no passing scan of the built digest; run `npm run ci:scan` first')
        await startAdmission(ctx.config.cacheDir, ctx.cluster)
        const reports = mkdtempSync(join(tmpdir(), 'bench-admission-'))
        for (const f of ['build.json', 'scan.json']) copyFileSync(join(ctx.config.reportsDir, f), join(reports, f))
        ctx.admission = { deploys: [], creates: [], restarts: [] }
        for (const round of [1, 2]) {
          for (const policy of POLICIES) {
            const release = { name: 'doc-server', namespace: admissionNamespace(policy) }
            await uninstall(ctx.helm, release)
            await deleteNamespace(ctx.kube, release.namespace)
            task.output = `round ${round}: deploying with the policy ${policy}`
            const d = await deployStage(reports, release.namespace, policy === 'on')
            ctx.admission.deploys.push({ policy, round, seconds: d.seconds })
          }
        }
        ctx.admissionReports = reports
        task.title = `Admission: deploy stage ${POLICIES.map((p) => `policy ${p} ${ctx.admission!.deploys.filter((d) => d.policy === p).map((d) => `${d.seconds} s`).join(', ')}`).join('; ')}`
      },
    },
    {
      title: `Admission: the API server's answer to a pod create (dry run, ${CREATES} per namespace, alternating)`,
      task: async (ctx, task) => {
        const a = ctx.admission!
        const latencies = await createLatencies(await apiClient(ctx.kube), POLICIES.map(admissionNamespace), `${ctx.repository}@${ctx.digests[0]}`, CREATES)
        a.creates = latencies.map((l, i) => ({ ...l, policy: POLICIES[i]! }))
        task.title = `Admission per pod create: ${a.creates.map((c) => `policy ${c.policy} median ${c.medianMs} ms, p95 ${c.p95Ms} ms`).join('; ')}`
      },
    },
    {
      title: 'Admission: a rolling restart under load without and with the policy',
      task: async (ctx, task) => {
        const a = ctx.admission!
        for (const policy of POLICIES) {
          const release = { name: 'doc-server', namespace: admissionNamespace(policy) }
          // The values the deploy left (its admission file), with one pod annotation changed: new pods, the same image.
          const files = [...valueFiles('staging', undefined), join(ctx.admissionReports!, 'deploy', policy === 'on' ? 'admission-values.yaml' : 'admission-off.yaml')]
          const o = { chart: CHART_DIR, valueFiles: files, sets: { 'podAnnotations.bench-restart': String(Date.now()) }, timeoutSecs: TIMEOUT_SECS }
          a.restarts.push({ policy, ...(await upgradeUnderLoad(ctx.helm, ctx.kube, release, o, ctx.repository, ctx.digests[0]!, 180)) })
        }
        for (const policy of POLICIES) {
          await uninstall(ctx.helm, { name: 'doc-server', namespace: admissionNamespace(policy) })
          await deleteNamespace(ctx.kube, admissionNamespace(policy))
        }
        task.title = `Admission, rolling restart: ${a.restarts.map((r) => `policy ${r.policy} ${r.seconds} s, ${r.load.failed}/${r.load.sent} failed`).join('; ')}`
      },
    },
    {
      title: 'Report',
      task: async (ctx, task) => {
        await deleteNamespace(ctx.kube, ctx.release.namespace)
        const rows = ctx.upgrades.map((u) => [`upgrade to ${u.to.slice(7, 19)}`, `${u.seconds}`, `${u.load.sent}`, `${u.load.failed}`, `${u.load.p50Ms}`, `${u.load.p99Ms}`])
        const file = join(ctx.config.reportsDir, 'bench-deploy.json')
        mkdirSync(ctx.config.reportsDir, { recursive: true })
        writeFileSync(file, `${JSON.stringify({ writtenAt: new Date().toISOString(), replicas: 2, upgrades: ctx.upgrades, crashLoop: ctx.crash, admission: ctx.admission }, null, 2)}\n`)
        console.log(markdownTable(['rollout', 'helm upgrade → ready (s)', 'requests', 'failed', 'p50 ms', 'p99 ms'], rows))
        console.log(markdownTable(['crash-looping release', 'seconds to rolled back'], [['rollout tracking', `${ctx.crash!.tracked}`], [`plain helm --rollback-on-failure --wait (timeout ${TIMEOUT_SECS}s)`, `${ctx.crash!.plainHelm}`]]))
        const a = ctx.admission!
        const side = (f: (p: Policy) => string) => POLICIES.map(f)
        console.log(markdownTable(['admission (Kyverno)', 'without the policy', 'with the policy'], [
          ['deploy stage, first install of 2 pods (2 rounds)', ...side((p) => a.deploys.filter((d) => d.policy === p).map((d) => `${d.seconds} s`).join(', '))],
          [`pod create, dry run: median / p95 (${CREATES} each)`, ...side((p) => { const c = a.creates.find((x) => x.policy === p)!; return `${c.medianMs} / ${c.p95Ms} ms` })],
          ['rolling restart under load → ready', ...side((p) => { const r = a.restarts.find((x) => x.policy === p)!; return `${r.seconds} s, ${r.load.failed}/${r.load.sent} failed` })],
        ]))
        task.title = `Report: ${file}`
      },
    },
  ]
}

export const stage = defineStage<BenchCtx>({ name: 'bench-deploy', tasks, initialCtx: () => ({ config: loadConfig() }) as BenchCtx })

if (isMain(import.meta.url)) await runStage(stage)
