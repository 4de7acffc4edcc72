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
import { isMain, parseOptions } from '../lib/core/cli.ts'
import { LOCAL_REGISTRY, loadConfig, type Config } from '../lib/core/config.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { appendSummary, setOutput } from '../lib/core/summary.ts'
import { readReport, writeReport, type Report } from '../lib/core/reports.ts'
import { POLICY_FILE, appliedPolicy, policyDifference, policyDigest, workingTreePolicy, type AppliedPolicy } from '../lib/scan/committed-policy.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { decide,isExpired,withCoverage,readIgnoreFile,today,trivyIgnoreYaml,type Decision,type IgnoreEntry,type Policy } from '../lib/scan/scan-policy.ts'
import { consoleSummary,markdownSummary,scanReport,type ScanSubject } from '../lib/scan/scan-summary.ts'
import { defineStage, need, runStage } from '../lib/core/stage.ts'
import { scanImage } from '../lib/scan/trivy.ts'
import { ensureTrivy } from '../lib/tools/trivy.ts'
import { dbAgeProblem, dbRegistry, prepareDb, scannedDbUpdatedAt, type DbFacts } from '../lib/scan/db-source.ts'
import { ensureRegistry } from '../lib/sandbox/registry.ts'
import { assertSarifAgrees,coverageProblem,readTrivyReport } from '../lib/scan/trivy-report.ts'
import { attestScan } from '../lib/sign/sign.ts'

export interface ScanCtx {
  config: Config
  /** `--from-report FILE`: re-gate an existing Trivy JSON report (never deployable). */
  fromReport: string | undefined
  /** `--image REPOSITORY@DIGEST`: scan this pushed digest instead of the one build.json names (the rescan does). */
  image: string | undefined
  policy: Policy
  /** The policy this scan applies: the committed one, unless SCAN_* variables override it (then never deployable). */
  applied: { severities: string[]; ignoreUnfixed: boolean; ignoreMaxDays: number; ignoreFile: string }
  committed: AppliedPolicy
  /** The applied policy's digest and how it differs from the committed one (null when it is the committed one). */
  digest?: string
  difference?: string | null
  day: string
  outDir: string
  entries?: IgnoreEntry[]
  ignoreForTrivy?: string
  subject?: ScanSubject
  trivy?: { path: string; version: string }
  db?: DbFacts
  dbCache?: string
  seconds?: number
  scannedAt?: string
  decision?: Decision
}

export function scanInputs(argv: readonly string[], config = loadConfig()): ScanCtx {
  const committed = workingTreePolicy()
  const applied = {
    severities: config.scanSeverities ?? committed.severities,
    ignoreUnfixed: config.scanIgnoreUnfixed ?? committed.ignoreUnfixed,
    ignoreMaxDays: config.scanIgnoreMaxDays ?? committed.ignoreMaxDays,
    ignoreFile: config.scanIgnoreFile ?? committed.ignoreFile,
  }
  const { values } = parseOptions('scan', argv, { 'from-report': { type: 'string' }, image: { type: 'string' } })
  if (values['from-report'] && values.image) throw new PipelineError('scan: --from-report and --image exclude each other: one re-gates a report, the other scans a pushed digest')
  if (values.image && !/^[^@\s]+\/[^@\s]+@sha256:[a-f0-9]{64}$/.test(values.image)) throw new PipelineError(`scan: --image ${values.image} is not repository@sha256:<64 hex>`)
  return {
    config,
    fromReport: values['from-report'] === undefined ? undefined : resolve(values['from-report']),
    image: values.image,
    policy: { severities: applied.severities, ignoreUnfixed: applied.ignoreUnfixed },
    applied,
    committed,
    day: today(),
    outDir: join(config.reportsDir, 'scan'),
  }
}

/** The pushed digest when there is one (what deploy will run); otherwise the local image, by reference. */
export function scanSubject(build: Pick<Report<'build'>, 'image' | 'pushed'>): ScanSubject {
  if (build.pushed && build.image.digest) {
    return { scanned: `${build.image.repository}@${build.image.digest}`, source: 'remote', ref: build.image.ref, digest: build.image.digest }
  }
  if (!build.image.ref) throw new PipelineError('scan: build.json names no image; run the build stage again')
  return { scanned: build.image.ref, source: 'docker', ref: build.image.ref }
}

const fromReport = (ctx: ScanCtx) => ctx.fromReport !== undefined
const notForReports = (ctx: ScanCtx) => fromReport(ctx) && 'not needed to re-gate a report'

/** A digest given on the command line: scanned from the registry like a pushed build. */
export function givenSubject(pinned: string): ScanSubject {
  return { scanned: pinned, source: 'remote', ref: pinned, digest: pinned.slice(pinned.indexOf('@') + 1) }
}

export function scanTasks(): ListrTask<ScanCtx>[] {
  return [
    {
      title: 'Policy',
      task: (ctx, task) => {
        // Until the gate has decided, the recorded decision is a failure: a crash can never read as clean.
        writeReport(ctx.config.reportsDir, 'scan', { decision: 'fail', reason: 'the scan started but did not finish' })
        const { applied } = ctx
        const entries = (ctx.entries = readIgnoreFile(resolve(repoRoot, applied.ignoreFile), { day: ctx.day, maxDays: applied.ignoreMaxDays }))
        const policy = appliedPolicy(applied)
        ctx.digest = policyDigest(policy)
        ctx.difference = ctx.digest === policyDigest(ctx.committed) ? null : policyDifference(policy, ctx.committed)
        mkdirSync(ctx.outDir, { recursive: true })
        ctx.ignoreForTrivy = join(ctx.outDir, 'trivyignore.yaml')
        writeFileSync(ctx.ignoreForTrivy, trivyIgnoreYaml(entries, ctx.day))
        const expired = entries.filter((e) => isExpired(e, ctx.day)).length
        const which = ctx.difference ? `NOT the committed policy (${ctx.difference}): this scan can never make the image deployable` : `the committed ${POLICY_FILE}, ${ctx.digest.slice(0, 19)}…`
        task.title = `Policy: ${ctx.policy.severities.join(', ')} block${ctx.policy.ignoreUnfixed ? ' (fixable only)' : ''}; ${entries.length} ignore entr${entries.length === 1 ? 'y' : 'ies'}${expired ? `, ${expired} expired` : ''}; ${which}`
      },
    },
    {
      title: 'Image from build.json',
      skip: (ctx) => fromReport(ctx) && `re-gating ${ctx.fromReport}`,
      task: (ctx, task) => {
        ctx.subject = ctx.image ? givenSubject(ctx.image) : scanSubject(readReport(ctx.config.reportsDir, 'build'))
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
        if (dbRegistry(ctx.config) === LOCAL_REGISTRY) await ensureRegistry(LOCAL_REGISTRY)
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
        const subject = need(ctx.subject, 'the image to scan')
        const db = need(ctx.db, 'the vulnerability DB')
        const dbCache = need(ctx.dbCache, "the DB's cache")
        ctx.scannedAt = new Date().toISOString()
        const r = await scanImage({
          trivy: need(ctx.trivy, 'Trivy').path,
          image: subject.scanned,
          out: ctx.outDir,
          imageSrc: subject.source === 'remote' ? 'remote' : 'docker',
          trivyCache: dbCache,
          offline: false,
          dbRepository: db.repository,
          ignoreFile: need(ctx.ignoreForTrivy, 'the ignore file'),
        })
        ctx.seconds = r.seconds
        db.updatedAt = scannedDbUpdatedAt(dbCache) || db.updatedAt
        const results = assertSarifAgrees(readTrivyReport(join(ctx.outDir, 'trivy.json')), readFileSync(join(ctx.outDir, 'trivy.sarif'), 'utf8'), 'trivy.sarif')
        task.title = `Scanned ${subject.scanned} in ${r.seconds.toFixed(1)} s: JSON, SARIF (${results} result${results === 1 ? '' : 's'}), CycloneDX and SPDX SBOMs in ${ctx.outDir}`
      },
    },
    {
      title: 'Gate',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: async (ctx, task) => {
        const path = ctx.fromReport ?? join(ctx.outDir, 'trivy.json')
        const report = readTrivyReport(path)
        const subject: ScanSubject = ctx.fromReport ? { scanned: path, source: 'report', ref: report.artifact } : need(ctx.subject, 'the image scanned')
        ctx.subject = subject
        const decided = withCoverage(decide(report, ctx.policy, need(ctx.entries, 'the ignore entries'), ctx.day), coverageProblem(report, path))
        const d = ctx.db ? withCoverage(decided, dbAgeProblem(ctx.db, ctx.config.scanDbMaxAgeSecs)) : decided
        ctx.decision = d
        const artifacts = fromReport(ctx) ? {} : { json: 'scan/trivy.json', sarif: 'scan/trivy.sarif', cyclonedx: 'scan/sbom.cdx.json', spdx: 'scan/sbom.spdx.json', ignoreFile: 'scan/trivyignore.yaml' }
        const body = scanReport(d, subject, { ...ctx.policy, ignoreFile: ctx.applied.ignoreFile }, {
          policyDigest: need(ctx.digest, 'the policy digest'),
          committedPolicy: ctx.difference === null,
          day: ctx.day,
          trivy: ctx.trivy?.version ?? null,
          db: ctx.db ?? null,
          seconds: ctx.seconds ?? null,
          artifacts,
          // A re-gated report proves nothing about an image in the registry: it is never attested, never deployable.
          deployable: !fromReport(ctx) && subject.source === 'remote' && ctx.difference === null,
        })
        // Until the result is attached to the digest, the report says it is not: deploy (and the rescan) read only what the registry holds.
        writeReport(ctx.config.reportsDir, 'scan', { ...body, attestation: null })
        setOutput('scan-decision', d.decision)
        appendSummary(markdownSummary(d, subject, ctx.policy, ctx.db))
        // Pass or fail, the pushed digest gets the result: deploy weighs every result, so a failing rescan blocks.
        if (!fromReport(ctx) && subject.source === 'remote') {
          task.output = 'attaching the SBOM and the scan result to the digest'
          const facts = { digest: need(subject.digest, 'the scanned digest'), repository: subject.scanned.slice(0, subject.scanned.indexOf('@')), decision: d, policy: { ...appliedPolicy(ctx.applied), digest: need(ctx.digest, 'the policy digest') }, trivyVersion: need(ctx.trivy, 'Trivy').version, db: need(ctx.db, 'the vulnerability DB'), scannedAt: need(ctx.scannedAt, 'the scan time'), kind: ctx.image ? ('rescan' as const) : ('build' as const) }
          const identity = await attestScan({ config: ctx.config, image: subject.scanned, facts, sbom: join(ctx.outDir, 'sbom.cdx.json'), outDir: ctx.outDir })
          writeReport(ctx.config.reportsDir, 'scan', { ...body, attestation: { identity } })
        }
        // On failure the table goes under the one-line reason, so the reason stays the last line on screen.
        if (d.decision === 'fail') throw new PipelineError(`scan gate failed: ${d.reason}`, consoleSummary(d, ctx.db))
        task.output = consoleSummary(d, ctx.db)
        task.title = `Gate passed: ${d.reason}`
      },
    },
  ]
}

export const stage = defineStage<ScanCtx>({
  name: 'scan',
  tasks: scanTasks,
  initialCtx: (argv) => scanInputs(argv),
})

if (isMain(import.meta.url)) await runStage(stage)
