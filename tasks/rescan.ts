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
import { isMain, parseOptions } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { annotateError, appendSummary, markdownTable, setOutput } from '../lib/core/summary.ts'
import { readReport, writeReport, type Report } from '../lib/core/reports.ts'
import { lastWords, outputDetails, run } from '../lib/core/run.ts'
import { defineStage, need, runStage } from '../lib/core/stage.ts'
import type { Release } from '../lib/deploy/helm.ts'
import type { KubeTarget } from '../lib/deploy/kube.ts'
import { connectCluster, describeCluster } from '../lib/deploy/target.ts'
import { localClusterTarget } from '../lib/sandbox/cluster.ts'
import { runningImage, type RunningImage } from '../lib/deploy/running.ts'

type ScanFacts = Report<'scan'>
type Blocking = NonNullable<ScanFacts['blocking']>[number]

export interface RescanCtx {
  config: Config
  release: Release
  scanDir: string
  kube?: KubeTarget
  image?: RunningImage
  scan?: ScanFacts
}

export function rescanInputs(argv: readonly string[], config = loadConfig()): RescanCtx {
  parseOptions('rescan', argv, {})
  return { config, release: { name: config.releaseName, namespace: config.deployNamespace }, scanDir: join(config.reportsDir, 'rescan') }
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
  const where = (ctx: RescanCtx) => `release ${ctx.release.name} in ${ctx.release.namespace} (${need(ctx.kube, 'the cluster').context})`
  return [
    {
      title: 'Cluster',
      task: async (ctx, task) => {
        const config = ctx.config
        ctx.kube = await connectCluster(config, () => localClusterTarget(config.cacheDir))
        task.title = `Cluster: ${describeCluster(config, ctx.kube)}`
      },
    },
    {
      title: 'Release: the digest it runs',
      task: async (ctx, task) => {
        ctx.image = await runningImage(need(ctx.kube, 'the cluster'), ctx.release)
        task.title = `Release: ${where(ctx)} runs ${ctx.image.pinned} (${ctx.image.pods} pod${ctx.image.pods === 1 ? '' : 's'})`
      },
    },
    {
      title: "Scan with today's vulnerability DB (the scan stage)",
      task: async (ctx, task) => {
        const tsx = join(repoRoot, 'node_modules', '.bin', 'tsx')
        // Exit 1 is the scan gate failing: data for the verdict below, read from scan.json.
        const image = need(ctx.image, 'the running image')
        const r = await run([tsx, join(repoRoot, 'tasks', 'scan.ts'), '--image', image.pinned], { cwd: repoRoot, env: { ...process.env, REPORTS_DIR: ctx.scanDir }, okCodes: [1], timeoutMs: 30 * 60_000 })
        const scan = (ctx.scan = readReport(ctx.scanDir, 'scan'))
        // The result counts only once it is signed and attached to the digest: that is what deploy reads.
        if (!scan.attestation) throw new PipelineError(`rescan: the result for ${image.digest.slice(0, 19)}… was not signed and attached to it, so deploy would never see it: ${lastWords(`${r.stderr}\n${r.stdout}`, /✖/)}`, outputDetails(`${r.stderr}\n${r.stdout}`))
        task.title = `Scanned ${image.pinned}: ${scan.decision}${scan.db?.updatedAt ? ` (DB of ${scan.db.updatedAt})` : ''}`
      },
    },
    {
      title: 'Verdict',
      task: (ctx, task) => {
        const image = need(ctx.image, 'the running image')
        const scan = need(ctx.scan, 'the scan report')
        const failure = rescanVerdict(where(ctx), image, scan)
        const found = scan.blocking ?? []
        writeReport(ctx.config.reportsDir, 'rescan', {
          release: ctx.release.name, namespace: ctx.release.namespace, context: need(ctx.kube, 'the cluster').context, environment: ctx.config.deployEnv,
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

export const stage = defineStage<RescanCtx>({ name: 'rescan', tasks: rescanTasks, initialCtx: (argv) => rescanInputs(argv) })

if (isMain(import.meta.url)) await runStage(stage)
