/**
 * scan: Trivy on exactly the image the build pushed (its digest), then the
 * gate. Trivy scans once into JSON; SARIF and the SBOMs are converted from
 * that JSON under the same ignore file, so every output tells one story. The
 * gate reads the JSON itself and fails when a blocking severity remains after
 * the policy; Trivy's exit code is never the findings signal.
 * `tsx tasks/scan.ts --from-report FILE` re-gates an existing Trivy JSON report.
 */
import { mkdirSync,readFileSync,writeFileSync } from 'node:fs'
import { join,resolve } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain } from '../lib/core/cli.ts'
import { loadConfig,type Config } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { appendSummary,readReport,setOutput,writeReport } from '../lib/core/report.ts'
import { decide,isExpired,withCoverage,readIgnoreFile,today,trivyIgnoreYaml,type Decision,type IgnoreEntry,type Policy } from '../lib/scan/scan-policy.ts'
import { consoleSummary,markdownSummary,scanReport,type ScanSubject } from '../lib/scan/scan-summary.ts'
import { defineStage,runStage } from '../lib/core/stage.ts'
import { scanImage } from '../lib/scan/trivy.ts'
import { ensureTrivy } from '../lib/tools/trivy.ts'
import { prepareDb,scannedDbUpdatedAt,type DbFacts } from '../lib/scan/db-source.ts'
import { assertSarifAgrees,coverageProblem,readTrivyReport } from '../lib/scan/trivy-report.ts'
import { attestScan } from '../lib/sign/sign.ts'

export interface ScanCtx {
  config: Config
  fromReport?: string
  policy: Policy
  entries: IgnoreEntry[]
  day: string
  outDir: string
  ignoreForTrivy: string
  subject: ScanSubject
  trivy?: { path: string; version: string }
  db?: DbFacts
  dbCache?: string
  seconds?: number
  scannedAt?: string
  decision?: Decision
}

/** The part of reports/build.json this stage reads (stages share facts, never code). */
interface BuildFacts {
  image: { ref: string; digest: string | null; repository: string }
  pushed: boolean
}

export function parseScanArgs(argv: readonly string[]): { fromReport?: string } {
  if (argv.length === 0) return {}
  if (argv[0] === '--from-report' && argv.length === 2 && argv[1] && !argv[1].startsWith('--')) return { fromReport: resolve(argv[1]) }
  throw new PipelineError(`scan: unknown arguments "${argv.join(' ')}"; the only option is --from-report FILE`)
}

/** The pushed digest when there is one (what deploy will run); otherwise the local image, by reference. */
export function scanSubject(build: BuildFacts): ScanSubject {
  if (build.pushed && build.image.digest) {
    return { scanned: `${build.image.repository}@${build.image.digest}`, source: 'remote', ref: build.image.ref, digest: build.image.digest }
  }
  if (!build.image.ref) throw new PipelineError('scan: build.json names no image; run the build stage again')
  return { scanned: build.image.ref, source: 'docker', ref: build.image.ref }
}

const fromReport = (ctx: ScanCtx) => ctx.fromReport !== undefined
const notForReports = (ctx: ScanCtx) => fromReport(ctx) && 'not needed to re-gate a report'

export function scanTasks(argv: readonly string[] = []): ListrTask<ScanCtx>[] {
  return [
    {
      title: 'Policy',
      task: (ctx, task) => {
        ctx.config = loadConfig()
        // Until the gate has decided, the recorded decision is a failure: a crash can never read as clean.
        writeReport(ctx.config.reportsDir, 'scan', { decision: 'fail', reason: 'the scan started but did not finish' })
        Object.assign(ctx, parseScanArgs(argv))
        ctx.policy = { severities: ctx.config.scanSeverities, ignoreUnfixed: ctx.config.scanIgnoreUnfixed }
        ctx.day = today()
        ctx.entries = readIgnoreFile(ctx.config.scanIgnoreFile, { day: ctx.day, maxDays: ctx.config.scanIgnoreMaxDays })
        ctx.outDir = join(ctx.config.reportsDir, 'scan')
        mkdirSync(ctx.outDir, { recursive: true })
        ctx.ignoreForTrivy = join(ctx.outDir, 'trivyignore.yaml')
        writeFileSync(ctx.ignoreForTrivy, trivyIgnoreYaml(ctx.entries, ctx.day))
        const expired = ctx.entries.filter((e) => isExpired(e, ctx.day)).length
        task.title = `Policy: ${ctx.policy.severities.join(', ')} block${ctx.policy.ignoreUnfixed ? ' (fixable only)' : ''}; ${ctx.entries.length} ignore entr${ctx.entries.length === 1 ? 'y' : 'ies'}${expired ? `, ${expired} expired` : ''}`
      },
    },
    {
      title: 'Image from build.json',
      skip: (ctx) => fromReport(ctx) && `re-gating ${ctx.fromReport}`,
      task: (ctx, task) => {
        ctx.subject = scanSubject(readReport<BuildFacts>(ctx.config.reportsDir, 'build'))
        task.title = `Image: ${ctx.subject.scanned} (${ctx.subject.source === 'remote' ? 'pushed digest, from the registry' : 'not pushed: the local image'})`
      },
    },
    {
      title: 'Trivy',
      skip: notForReports,
      task: async (ctx, task) => {
        ctx.trivy = await ensureTrivy(ctx.config.cacheDir)
        task.title = `Trivy v${ctx.trivy.version} (${ctx.trivy.path})`
      },
    },
    {
      title: 'Vulnerability DB',
      skip: notForReports,
      task: async (ctx, task) => {
        const choice = await prepareDb(ctx.config)
        ctx.db = choice.facts
        ctx.dbCache = choice.trivyCache
        task.title = `Vulnerability DB: ${choice.title}`
      },
    },
    {
      title: 'Scan',
      skip: notForReports,
      task: async (ctx, task) => {
        ctx.scannedAt = new Date().toISOString()
        const r = await scanImage({
          trivy: ctx.trivy!.path,
          image: ctx.subject.scanned,
          out: ctx.outDir,
          imageSrc: ctx.subject.source === 'remote' ? 'remote' : 'docker',
          trivyCache: ctx.dbCache!,
          offline: false,
          dbRepository: ctx.db!.repository,
          ignoreFile: ctx.ignoreForTrivy,
        })
        ctx.seconds = r.seconds
        ctx.db!.updatedAt = scannedDbUpdatedAt(ctx.dbCache!) || ctx.db!.updatedAt
        const results = assertSarifAgrees(readTrivyReport(join(ctx.outDir, 'trivy.json')), readFileSync(join(ctx.outDir, 'trivy.sarif'), 'utf8'), 'trivy.sarif')
        task.title = `Scanned ${ctx.subject.scanned} in ${r.seconds.toFixed(1)} s: JSON, SARIF (${results} result${results === 1 ? '' : 's'}), CycloneDX and SPDX SBOMs in ${ctx.outDir}`
      },
    },
    {
      title: 'Gate',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: async (ctx, task) => {
        const path = ctx.fromReport ?? join(ctx.outDir, 'trivy.json')
        const report = readTrivyReport(path)
        if (fromReport(ctx)) ctx.subject = { scanned: path, source: 'report', ref: report.artifact }
        const d = withCoverage(decide(report, ctx.policy, ctx.entries, ctx.day), coverageProblem(report, path))
        ctx.decision = d
        const artifacts = fromReport(ctx) ? {} : { json: 'scan/trivy.json', sarif: 'scan/trivy.sarif', cyclonedx: 'scan/sbom.cdx.json', spdx: 'scan/sbom.spdx.json', ignoreFile: 'scan/trivyignore.yaml' }
        writeReport(ctx.config.reportsDir, 'scan', scanReport(d, ctx.subject, { ...ctx.policy, ignoreFile: ctx.config.scanIgnoreFile }, {
          day: ctx.day,
          trivy: ctx.trivy?.version ?? null,
          db: ctx.db ?? null,
          seconds: ctx.seconds ?? null,
          artifacts,
          // A re-gated report proves nothing about an image in the registry: it is never attested, never deployable.
          deployable: !fromReport(ctx) && ctx.subject.source === 'remote',
        }))
        setOutput('scan-decision', d.decision)
        appendSummary(markdownSummary(d, ctx.subject, ctx.policy, ctx.db))
        // Pass or fail, the pushed digest gets the result: deploy reads the newest, so a failing rescan blocks.
        if (!fromReport(ctx) && ctx.subject.source === 'remote') {
          const subject = ctx.subject as Required<ScanSubject>
          task.output = 'attaching the SBOM and the scan result to the digest'
          const facts = { digest: subject.digest, repository: subject.scanned.split('@')[0]!, decision: d, policy: ctx.policy, trivyVersion: ctx.trivy!.version, db: ctx.db!, scannedAt: ctx.scannedAt! }
          await attestScan({ config: ctx.config, image: subject.scanned, facts, sbom: join(ctx.outDir, 'sbom.cdx.json'), outDir: ctx.outDir })
        }
        // On failure the table goes under the one-line reason, so the reason stays the last line on screen.
        if (d.decision === 'fail') throw new PipelineError(`scan gate failed: ${d.reason}`, consoleSummary(d, ctx.db))
        task.output = consoleSummary(d, ctx.db)
        task.title = `Gate passed: ${d.reason}`
      },
    },
  ]
}

// Only a direct run reads the command line; inside `npm run ci:build` the arguments are the chain's.
export const stage = defineStage<ScanCtx>({
  name: 'scan',
  tasks: () => scanTasks(isMain(import.meta.url) ? process.argv.slice(2) : []),
  initialCtx: () => ({}) as ScanCtx,
})

if (isMain(import.meta.url)) await runStage(stage)
