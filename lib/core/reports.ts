/**
 * The stages' contracts: what each `reports/<stage>.json` holds, as one
 * schema per report. Reports are written and read only through these, so a
 * stage never writes a shape the next one cannot read, and a malformed or
 * older report fails in one line naming the field, not deep in the next stage.
 * The schemas name what later stages read; a report may carry more facts
 * (written as they are, after the check), which a reader does not see.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { z } from 'zod'
import { PipelineError } from './errors.ts'
import { writeJson } from './json.ts'

const digest = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'a sha256:<64 hex> digest')

export const BuildReport = z.object({
  image: z.object({
    ref: z.string().min(1),
    digest: digest.nullable(),
    repository: z.string().min(1),
    tag: z.string().min(1),
    pinned: z.string().nullable(),
  }),
  commit: z.object({ sha: z.string().regex(/^[0-9a-f]{40}$/, 'a 40-hex commit'), branch: z.string().nullable(), dirty: z.boolean() }),
  pushed: z.boolean(),
  seconds: z.number(),
  build: z.object({ seconds: z.number(), cookCacheHit: z.boolean().nullable(), cookMiss: z.string().nullable() }),
  healthySeconds: z.number().nullable(),
  /** Who signed the pushed digest, and the provenance attached to it; null when nothing was pushed. */
  signature: z.object({ identity: z.string(), provenance: z.string(), added: z.object({ signature: z.boolean(), provenance: z.boolean() }) }).nullable(),
})

const finding = z.object({
  id: z.string(),
  aliases: z.array(z.string()),
  severity: z.string(),
  pkg: z.string(),
  installed: z.string(),
  fixed: z.string(),
})

export const ScanReport = z.object({
  decision: z.enum(['pass', 'fail']),
  reason: z.string(),
  /** What was scanned; absent only in the report a scan writes before it has decided. */
  image: z.object({ scanned: z.string(), source: z.enum(['remote', 'docker', 'report']), digest: digest.optional(), ref: z.string().optional() }).optional(),
  /** false for a `--from-report` re-gate, which never makes anything deployable. */
  deployable: z.boolean().optional(),
  blocking: z.array(finding).optional(),
  db: z.object({ source: z.string(), updatedAt: z.string() }).nullable().optional(),
  /** The digest of the policy the gate applied, and whether it is the committed one. */
  policyDigest: z.string().optional(),
  committedPolicy: z.boolean().optional(),
  /** Who signed the result attached to the digest; null until (or unless) it is attached. */
  attestation: z.object({ identity: z.string() }).nullable().optional(),
})

export const MeasureReport = z.object({
  image: z.object({ ref: z.string(), digest: digest.nullable(), bytes: z.number(), compressedBytes: z.number().nullable() }),
  binary: z.object({ bytesBeforeUpx: z.number(), bytesAfterUpx: z.number() }),
  build: z.object({
    coldSeconds: z.number(),
    cold: z.object({ measured: z.boolean(), commit: z.string(), date: z.string(), why: z.string() }),
    warmSeconds: z.number(),
    cookCacheHit: z.boolean().nullable(),
    improvementPct: z.number(),
    warmCompiledCrates: z.array(z.string()),
  }),
  warmBreakdown: z.record(z.string(), z.number()),
  cookMiss: z.string().nullable(),
  regressions: z.array(z.string()),
  missedTargets: z.array(z.string()),
})

export const DeployReport = z.object({
  release: z.string(),
  namespace: z.string(),
  environment: z.string(),
  context: z.string().nullable(),
  revision: z.number().nullable(),
  previousRevision: z.number().nullable(),
  digest: digest.nullable(),
  image: z.string().nullable(),
  commit: z.string().nullable(),
  order: z.string().nullable(),
  result: z.enum(['deployed', 'rolled-back', 'failed']),
  reason: z.string().nullable(),
  recovered: z.string().nullable(),
  seconds: z.number(),
  /** What was verified in the registry before the cluster was touched; null when it was not reached. */
  verified: z.object({ identity: z.string() }).nullable(),
  /** The verification's own output (cosign's commands and all they printed), shown on screen only with DEBUG. */
  details: z.string().nullable(),
})

export const RescanReport = z.object({
  release: z.string(),
  namespace: z.string(),
  context: z.string(),
  environment: z.string(),
  image: z.string(),
  digest,
  pods: z.number(),
  decision: z.enum(['pass', 'fail']),
  reason: z.string().nullable(),
  findings: z.array(finding),
})

const stageRow = z.object({ stage: z.string(), result: z.string(), seconds: z.number() })

export const CiReport = z.object({ stages: z.array(stageRow) })

export const BenchFeedbackReport = z.object({
  rows: z.array(z.object({ run: z.enum(['before', 'after']), seconds: z.number(), stages: z.array(stageRow) })),
  ratio: z.number(),
})

/** Every report, by the stage that writes it. */
export const REPORTS = {
  build: BuildReport,
  measure: MeasureReport,
  scan: ScanReport,
  deploy: DeployReport,
  rescan: RescanReport,
  ci: CiReport,
  'bench-feedback': BenchFeedbackReport,
} as const

export type Stage = keyof typeof REPORTS
export type Report<S extends Stage> = z.output<(typeof REPORTS)[S]>

export function reportPath(reportsDir: string, stage: Stage): string {
  return join(reportsDir, `${stage}.json`)
}

/** `image.digest: a sha256:<64 hex> digest`: the first problem, by its path in the report. */
function firstIssue(err: z.ZodError): string {
  const issue = err.issues[0]
  if (!issue) return 'does not match its schema'
  const at = issue.path.length ? issue.path.join('.') : '(the whole report)'
  return `${at}: ${issue.message}`
}

/**
 * Writes `reports/<stage>.json` through its schema, atomically (temp file,
 * then rename), so a crashed stage never leaves a half-written report and a
 * stage cannot write what the next one would refuse.
 */
export function writeReport<S extends Stage>(reportsDir: string, stage: S, data: z.input<(typeof REPORTS)[S]> & Record<string, unknown>): string {
  const checked = REPORTS[stage].safeParse(data)
  if (!checked.success) throw new PipelineError(`report: ${stage}.json would not be valid: ${firstIssue(checked.error)}`)
  const path = reportPath(reportsDir, stage)
  writeJson(path, { stage, writtenAt: new Date().toISOString(), ...data })
  return path
}

/** Reads another stage's report through its schema; anything missing or malformed is one line naming the stage to run. */
export function readReport<S extends Stage>(reportsDir: string, stage: S): Report<S> {
  const path = reportPath(reportsDir, stage)
  if (!existsSync(path)) throw new PipelineError(`report: ${path} is missing; run the ${stage} stage first`)
  let raw: unknown
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    throw new PipelineError(`report: ${path} is not valid JSON; run the ${stage} stage again`)
  }
  const parsed = REPORTS[stage].safeParse(raw)
  if (!parsed.success) throw new PipelineError(`report: ${path} is not a ${stage} report this toolkit reads (${firstIssue(parsed.error)}); run the ${stage} stage again`)
  return parsed.data as Report<S>
}
