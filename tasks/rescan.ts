/**
 * rescan (`npm run ci:rescan`): the image a release runs, scanned again with
 * today's vulnerability DB. A digest scanned clean when it was built is
 * otherwise never scanned again, while advisories are published every day
 * against images already running. The digest comes from the cluster (the
 * Deployment the release templates), the scan is the scan stage itself
 * (tasks/scan.ts, run with its reports in `<REPORTS_DIR>/rescan/`), and a
 * HIGH or CRITICAL finding (SCAN_SEVERITIES) fails this stage naming it.
 */
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { annotateError, appendSummary, markdownTable, readReport, setOutput, writeReport } from '../lib/core/report.ts'
import { run } from '../lib/core/run.ts'
import { defineStage, runStage } from '../lib/core/stage.ts'
import type { Release } from '../lib/deploy/helm.ts'
import type { KubeTarget } from '../lib/deploy/kube.ts'
import { connectCluster, describeCluster } from '../lib/deploy/target.ts'
import { runningImage, type RunningImage } from '../lib/deploy/running.ts'

interface Blocking { id: string; aliases: string[]; severity: string; pkg: string; installed: string; fixed: string }
interface ScanFacts { decision?: string; reason?: string; blocking?: Blocking[]; db?: { source: string; updatedAt: string } | null }

export interface RescanCtx {
  config: Config
  release: Release
  kube: KubeTarget
  image?: RunningImage
  scanDir: string
  scan?: ScanFacts
}

/** One finding as a person reads it: `CVE-… (HIGH, tokio 1.13.0, fixed in 1.13.1)`. */
export function findingLine(f: Blocking): string {
  return `${f.id} (${f.severity}, ${f.pkg} ${f.installed}, ${f.fixed ? `fixed in ${f.fixed}` : 'no fix yet'})`
}

/** The stage's verdict from the scan's report: nothing blocks, or one line naming every blocking finding. */
export function rescanVerdict(where: string, image: RunningImage, scan: ScanFacts): string | undefined {
  if (scan.decision === 'pass') return undefined
  const found = scan.blocking ?? []
  if (found.length === 0) return `rescan: the scan of ${image.pinned} did not pass: ${scan.reason ?? 'no reason recorded'}`
  return `rescan: ${where} runs ${image.digest.slice(0, 19)}…, which now has ${found.length} blocking finding${found.length === 1 ? '' : 's'}: ${found.map(findingLine).join('; ')}`
}

export function rescanTasks(): ListrTask<RescanCtx>[] {
  const where = (ctx: RescanCtx) => `release ${ctx.release.name} in ${ctx.release.namespace} (${ctx.kube.context})`
  return [
    {
      title: 'Cluster',
      task: async (ctx, task) => {
        const config = (ctx.config = loadConfig())
        ctx.release = { name: config.releaseName, namespace: config.deployNamespace }
        ctx.scanDir = join(config.reportsDir, 'rescan')
        ctx.kube = await connectCluster(config)
        task.title = `Cluster: ${describeCluster(config, ctx.kube)}`
      },
    },
    {
      title: 'Release: the digest it runs',
      task: async (ctx, task) => {
        ctx.image = await runningImage(ctx.kube, ctx.release)
        // The facts the scan stage reads, as the build stage would leave them: a pushed digest.
        writeReport(ctx.scanDir, 'build', { image: { ref: ctx.image.pinned, digest: ctx.image.digest, repository: ctx.image.repository }, pushed: true, source: `running in ${where(ctx)}` })
        task.title = `Release: ${where(ctx)} runs ${ctx.image.pinned} (${ctx.image.pods} pod${ctx.image.pods === 1 ? '' : 's'})`
      },
    },
    {
      title: "Scan with today's vulnerability DB (the scan stage)",
      task: async (ctx, task) => {
        const tsx = join(repoRoot, 'node_modules', '.bin', 'tsx')
        // Exit 1 is the scan gate failing: data for the verdict below, read from scan.json.
        await run([tsx, join(repoRoot, 'tasks', 'scan.ts')], { cwd: repoRoot, env: { ...process.env, REPORTS_DIR: ctx.scanDir }, okCodes: [1], timeoutMs: 30 * 60_000 })
        ctx.scan = readReport<ScanFacts>(ctx.scanDir, 'scan')
        task.title = `Scanned ${ctx.image!.pinned}: ${ctx.scan.decision ?? 'no decision'}${ctx.scan.db?.updatedAt ? ` (DB of ${ctx.scan.db.updatedAt})` : ''}`
      },
    },
    {
      title: 'Verdict',
      task: (ctx, task) => {
        const image = ctx.image!
        const scan = ctx.scan!
        const failure = rescanVerdict(where(ctx), image, scan)
        const found = scan.blocking ?? []
        writeReport(ctx.config.reportsDir, 'rescan', {
          release: ctx.release.name, namespace: ctx.release.namespace, context: ctx.kube.context, environment: ctx.config.deployEnv,
          image: image.pinned, digest: image.digest, pods: image.pods, decision: failure ? 'fail' : 'pass', reason: failure ?? scan.reason ?? null,
          findings: found.map((f) => ({ id: f.id, aliases: f.aliases, severity: f.severity, pkg: f.pkg, installed: f.installed, fixed: f.fixed })), db: scan.db ?? null,
          scanReports: 'rescan/',
        })
        setOutput('rescan-decision', failure ? 'fail' : 'pass')
        const rows = found.map((f) => [f.severity, f.id, f.pkg, f.installed, f.fixed || '(no fix yet)'])
        appendSummary(`### rescan: ${failure ? 'NEW FINDINGS' : 'clean'}\n\n\`${image.pinned}\`, running in ${where(ctx)}\n\n${rows.length ? markdownTable(['severity', 'id', 'package', 'installed', 'fixed in'], rows) : 'No blocking finding.'}`)
        if (failure) {
          annotateError('rescan: new findings in what runs', failure)
          throw new PipelineError(failure)
        }
        task.title = `Verdict: ${image.digest.slice(0, 19)}… still passes: ${scan.reason ?? ''}`
      },
    },
  ]
}

export const stage = defineStage<RescanCtx>({ name: 'rescan', tasks: rescanTasks, initialCtx: () => ({}) as RescanCtx })

if (isMain(import.meta.url)) await runStage(stage)
