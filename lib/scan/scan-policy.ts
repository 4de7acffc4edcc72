import { existsSync, readFileSync } from 'node:fs'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { PipelineError } from '../core/errors.ts'
import { SEVERITIES, secretWhere, type Finding, type SecretFinding, type Severity, type TrivyReport } from './trivy-report.ts'

/** What blocks: the same policy drives Trivy's outputs and the gate. */
export interface Policy {
  severities: readonly string[]
  /** When true, a finding without a fix does not block (it is still counted and listed). */
  ignoreUnfixed: boolean
}

/** One accepted risk from `.trivyignore.yaml`: which advisory, why, and until when. */
export interface IgnoreEntry {
  id: string
  statement: string
  /** YYYY-MM-DD; from this day on the entry no longer applies. */
  expiredAt: string
}

const ENTRY_KEYS = new Set(['id', 'statement', 'expired_at'])

function validDate(text: string): boolean {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text)) return false
  const d = new Date(`${text}T00:00:00Z`)
  return !Number.isNaN(d.getTime()) && d.toISOString().startsWith(text)
}

/**
 * Parses Trivy's YAML ignore format, stricter than Trivy: every entry needs an
 * id, a statement (why the risk is accepted) and an `expired_at` date, and
 * matches by id alone. `paths`/`purls` are refused because the gate could not
 * apply them the way Trivy does, and the two would then disagree.
 */
export function parseIgnoreFile(text: string, source: string): IgnoreEntry[] {
  let raw: unknown
  try {
    raw = parseYaml(text)
  } catch (err) {
    const why = (err instanceof Error ? err.message : String(err)).split('\n')[0]
    throw new PipelineError(`scan: ignore file ${source} does not parse: ${why}`)
  }
  if (raw === null || raw === undefined) return []
  if (typeof raw !== 'object' || Array.isArray(raw))
    throw new PipelineError(`scan: ignore file ${source} must be a mapping with a vulnerabilities list`)
  const top = raw as Record<string, unknown>
  for (const key of Object.keys(top)) {
    if (key !== 'vulnerabilities')
      throw new PipelineError(`scan: ignore file ${source} has "${key}"; only vulnerabilities are scanned, so only they can be ignored`)
  }
  const list = top.vulnerabilities ?? []
  if (!Array.isArray(list)) throw new PipelineError(`scan: ignore file ${source}: vulnerabilities must be a list`)
  const seen = new Set<string>()
  return list.map((item, i) => {
    const where = `scan: ignore file ${source}, entry ${i + 1}`
    if (typeof item !== 'object' || item === null || Array.isArray(item))
      throw new PipelineError(`${where} is not a mapping of id, statement, expired_at`)
    const e = item as Record<string, unknown>
    for (const key of Object.keys(e)) {
      if (!ENTRY_KEYS.has(key)) throw new PipelineError(`${where} has "${key}"; entries carry only id, statement and expired_at`)
    }
    if (typeof e.id !== 'string' || e.id.trim() === '') throw new PipelineError(`${where} has no id`)
    const id = e.id.trim()
    if (typeof e.statement !== 'string' || e.statement.trim() === '')
      throw new PipelineError(`${where} (${id}) has no statement saying why the risk is accepted`)
    const expiredAt = e.expired_at instanceof Date ? e.expired_at.toISOString().slice(0, 10) : String(e.expired_at ?? '')
    if (e.expired_at === undefined) throw new PipelineError(`${where} (${id}) has no expired_at date; every exception must end`)
    if (!validDate(expiredAt))
      throw new PipelineError(`${where} (${id}) has expired_at ${JSON.stringify(e.expired_at)}; expected a date like 2026-12-31`)
    if (seen.has(id)) throw new PipelineError(`${where} repeats ${id}; keep one entry per advisory`)
    seen.add(id)
    return { id, statement: e.statement.trim().replace(/\s+/g, ' '), expiredAt }
  })
}

/** Whole days from `day` to `date` (both YYYY-MM-DD, UTC). */
export function daysBetween(day: string, date: string): number {
  return Math.round((Date.parse(`${date}T00:00:00Z`) - Date.parse(`${day}T00:00:00Z`)) / 86_400_000)
}

/**
 * An accepted risk is reviewed at least every `maxDays` (SCAN_IGNORE_MAX_DAYS):
 * an entry expiring further ahead is refused, so "accept until 2099" cannot
 * turn an exception into a permanent one.
 */
export function checkIgnoreHorizon(entries: readonly IgnoreEntry[], source: string, day: string, maxDays: number): void {
  for (const e of entries) {
    const ahead = daysBetween(day, e.expiredAt)
    if (ahead > maxDays) {
      throw new PipelineError(
        `scan: ignore file ${source}: ${e.id} expires on ${e.expiredAt}, ${ahead} days ahead; at most SCAN_IGNORE_MAX_DAYS=${maxDays} days are allowed, so set an earlier expired_at and review it then`,
      )
    }
  }
}

/**
 * Reads the ignore file; a missing one is an error, since a typo in its path
 * would otherwise pass unnoticed. With `horizon`, entries expiring more than
 * `maxDays` after `day` are refused.
 */
export function readIgnoreFile(path: string, horizon?: { day: string; maxDays: number }): IgnoreEntry[] {
  if (!existsSync(path))
    throw new PipelineError(
      `scan: ignore file ${path} does not exist; create it (an empty vulnerabilities list is fine) or set SCAN_IGNORE_FILE`,
    )
  const entries = parseIgnoreFile(readFileSync(path, 'utf8'), path)
  if (horizon) checkIgnoreHorizon(entries, path, horizon.day, horizon.maxDays)
  return entries
}

/** Today as YYYY-MM-DD in UTC, the clock Trivy compares `expired_at` with. */
export function today(now = new Date()): string {
  return now.toISOString().slice(0, 10)
}

/**
 * Trivy drops an entry once its `expired_at` (midnight UTC) is in the past,
 * so on the expiry day itself the entry is already gone; the gate agrees.
 */
export function isExpired(entry: IgnoreEntry, day: string): boolean {
  return entry.expiredAt <= day
}

/**
 * The ignore file handed to Trivy: only entries still in force, so Trivy's
 * JSON, SARIF and SBOMs suppress exactly what the gate accepts.
 */
export function trivyIgnoreYaml(entries: readonly IgnoreEntry[], day: string): string {
  const active = entries.filter((e) => !isExpired(e, day))
  const header = `# Written by the scan stage from the validated ignore file: entries in force on ${day}.\n`
  return header + stringifyYaml({ vulnerabilities: active.map((e) => ({ id: e.id, statement: e.statement, expired_at: e.expiredAt })) })
}

export function isUnfixed(f: Finding): boolean {
  return f.fixed === '' || (f.status !== '' && f.status !== 'fixed')
}

export interface Decision {
  decision: 'pass' | 'fail'
  reason: string
  /** Findings by severity after the ignore file (unfixed ones included). */
  counts: Record<Severity, number>
  blocking: Finding[]
  blockingIds: string[]
  /** Entries in force that suppressed findings. */
  ignored: { id: string; statement: string; expiredAt: string; findings: number }[]
  /** Expired entries that would have covered a finding: it blocks again. */
  expired: { id: string; statement: string; expiredAt: string; findings: number }[]
  /** Findings the policy lets through only because they have no fix yet. */
  unfixedAllowed: number
  /** Every secret found (suppressed ones included: no ignore entry can accept a secret). */
  secrets: SecretFinding[]
  /** Secrets of a blocking severity: a baked-in key blocks like a vulnerability. */
  blockingSecrets: SecretFinding[]
}

function short(f: Finding): string {
  const aka = f.aliases.length > 0 ? ` [${f.aliases.join(', ')}]` : ''
  return `${f.id}${aka} in ${f.pkg} ${f.installed} (${f.fixed ? `fixed in ${f.fixed}` : 'no fix yet'})`
}

/**
 * The gate: a pure function of the report, the policy, the ignore entries and
 * the date. It fails when any finding of a blocking severity remains after the
 * policy; an expired ignore entry is not applied, and the reason says so.
 */
export function decide(report: TrivyReport, policy: Policy, entries: readonly IgnoreEntry[], day: string): Decision {
  const byId = new Map(entries.map((e) => [e.id, e]))
  const counts = Object.fromEntries(SEVERITIES.map((s) => [s, 0])) as Record<Severity, number>
  const ignored = new Map<string, Decision['ignored'][number]>()
  const expired = new Map<string, Decision['expired'][number]>()
  const blocking: Finding[] = []
  let unfixedAllowed = 0
  // What Trivy suppressed is judged again: only an entry in force here may accept it.
  const all = [...report.findings, ...report.suppressed]
  for (const f of all) {
    const entry = byId.get(f.id)
    if (entry && !isExpired(entry, day)) {
      const row = ignored.get(entry.id) ?? { id: entry.id, statement: entry.statement, expiredAt: entry.expiredAt, findings: 0 }
      row.findings++
      ignored.set(entry.id, row)
      continue
    }
    if (entry) {
      const row = expired.get(entry.id) ?? { id: entry.id, statement: entry.statement, expiredAt: entry.expiredAt, findings: 0 }
      row.findings++
      expired.set(entry.id, row)
    }
    counts[f.severity]++
    if (!policy.severities.includes(f.severity)) continue
    if (policy.ignoreUnfixed && isUnfixed(f)) {
      unfixedAllowed++
      continue
    }
    blocking.push(f)
  }
  // A secret cannot be accepted: the fix is to take it out of the image (and rotate it).
  const secrets = [...report.secrets, ...report.suppressedSecrets]
  const blockingSecrets = secrets.filter((x) => policy.severities.includes(x.severity))
  blocking.sort(
    (a, b) => SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity) || a.id.localeCompare(b.id) || a.pkg.localeCompare(b.pkg),
  )
  const blockingIds = [...new Set(blocking.map((f) => f.id))]
  const expiredNote = [...expired.values()].map((e) => `ignore entry ${e.id} expired on ${e.expiredAt}`).join('; ')
  const sev = policy.severities.join('/')
  let reason: string
  const parts: string[] = []
  if (blockingSecrets.length > 0) {
    const listed = blockingSecrets
      .slice(0, 3)
      .map((x) => `${x.ruleId} (${x.severity}) in ${secretWhere(x)}`)
      .join(', ')
    const more = blockingSecrets.length > 3 ? ` and ${blockingSecrets.length - 3} more` : ''
    parts.push(`${blockingSecrets.length} ${sev} secret${blockingSecrets.length === 1 ? '' : 's'} in the image: ${listed}${more}`)
  }
  if (blocking.length > 0) {
    const listed = blocking.slice(0, 3).map(short).join(', ')
    const more = blocking.length > 3 ? ` and ${blocking.length - 3} more` : ''
    parts.push(
      `${blocking.length} ${sev} finding${blocking.length === 1 ? ' remains' : 's remain'}: ${listed}${more}${expiredNote ? ` (${expiredNote})` : ''}`,
    )
  }
  if (parts.length > 0) {
    reason = parts.join('; ')
  } else {
    const open = all.length - [...ignored.values()].reduce((n, e) => n + e.findings, 0)
    const notes = [`${open} finding${open === 1 ? '' : 's'}, none blocking`]
    if (ignored.size > 0) notes.push(`${ignored.size} accepted by the ignore file`)
    if (unfixedAllowed > 0) notes.push(`${unfixedAllowed} ${sev} without a fix allowed by SCAN_IGNORE_UNFIXED`)
    if (secrets.length > 0) notes.push(`${secrets.length} secret${secrets.length === 1 ? '' : 's'} below ${sev}`)
    reason = `no ${sev} vulnerability or secret remains after the policy (${notes.join('; ')})`
  }
  return {
    decision: blocking.length > 0 || blockingSecrets.length > 0 ? 'fail' : 'pass',
    reason,
    counts,
    blocking,
    blockingIds,
    ignored: [...ignored.values()],
    expired: [...expired.values()],
    unfixedAllowed,
    secrets,
    blockingSecrets,
  }
}

/**
 * A report that does not cover the OS packages and the binary's crates fails
 * whatever it lists: the decision says why, so it is recorded (and attested)
 * like any other failure.
 */
export function withCoverage(d: Decision, problem: string | undefined): Decision {
  return problem ? { ...d, decision: 'fail', reason: problem } : d
}
