import type { Decision, Policy } from './scan-policy.ts'
import { describeDb, type DbFacts } from './db-source.ts'
import { markdownTable } from '../core/summary.ts'
import { SEVERITIES, type Finding, type SecretFinding } from './trivy-report.ts'

/** What was scanned: a pushed digest, a local image, or an existing report. */
export interface ScanSubject {
  /** The reference Trivy scanned, or the report file re-gated. */
  scanned: string
  source: 'remote' | 'docker' | 'report'
  digest?: string
  ref?: string
}

/** A secret by rule, severity, file and line: never its value. */
const secretRow = (x: SecretFinding) => [x.severity, x.ruleId, x.target, x.startLine > 0 ? String(x.startLine) : '-']
const SECRET_HEAD = ['severity', 'rule', 'file', 'line']

const name = (f: Finding) => (f.aliases.length > 0 ? `${f.id} (${f.aliases.join(', ')})` : f.id)

function pad(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd())
}

/** The short table the stage prints: counts by severity, then what blocks and why (the decision line is the caller's). */
export function consoleSummary(d: Decision, db?: DbFacts): string {
  const lines = db ? [dbLine(db)] : []
  lines.push(...pad([['severity', ...SEVERITIES], ['findings', ...SEVERITIES.map((s) => String(d.counts[s]))]]))
  if (d.blocking.length > 0) {
    lines.push('', 'blocking:')
    lines.push(...pad([['severity', 'id', 'package', 'installed', 'fixed in'], ...d.blocking.map((f) => [f.severity, name(f), f.pkg, f.installed, f.fixed || '(no fix yet)'])]).map((l) => `  ${l}`))
  }
  if (d.secrets.length > 0) {
    lines.push('', `secrets (${d.blockingSecrets.length} blocking; values never shown):`)
    lines.push(...pad([SECRET_HEAD, ...d.secrets.map(secretRow)]).map((l) => `  ${l}`))
  }
  for (const e of d.expired) lines.push(`expired: ignore entry ${e.id} expired on ${e.expiredAt} and no longer applies ("${e.statement}")`)
  for (const e of d.ignored) lines.push(`ignored: ${e.id} until ${e.expiredAt} (${e.findings} finding${e.findings === 1 ? '' : 's'}): ${e.statement}`)
  if (d.unfixedAllowed > 0) lines.push(`allowed: ${d.unfixedAllowed} finding(s) without a fix (SCAN_IGNORE_UNFIXED=true)`)
  return lines.join('\n')
}

/** Where the DB came from, how many advisories it holds and when it was built. */
export function dbLine(db: DbFacts): string {
  return `vulnerability DB: ${db.source}${db.repository ? ` via ${db.repository}` : ''}, ${describeDb(db)}`
}

/** The same facts for the GitHub job summary. */
export function markdownSummary(d: Decision, subject: ScanSubject, policy: Policy, db?: DbFacts): string {
  const parts = [
    `### scan: ${d.decision === 'pass' ? 'passed' : 'FAILED'}`,
    `\`${subject.scanned}\` (${subject.source}); blocking: ${policy.severities.join(', ')}${policy.ignoreUnfixed ? ', fixed only' : ''}${db ? `; ${dbLine(db)}` : ''}`,
    markdownTable([...SEVERITIES], [SEVERITIES.map((s) => d.counts[s])]),
  ]
  if (d.blocking.length > 0) {
    parts.push(markdownTable(['severity', 'id', 'package', 'installed', 'fixed in'], d.blocking.map((f) => [f.severity, name(f), f.pkg, f.installed, f.fixed || '(no fix yet)'])))
  }
  if (d.secrets.length > 0) parts.push(markdownTable(SECRET_HEAD, d.secrets.map(secretRow)))
  const notes = [
    ...d.expired.map((e) => `- **expired**: ignore entry \`${e.id}\` expired on ${e.expiredAt}; its finding blocks again`),
    ...d.ignored.map((e) => `- ignored until ${e.expiredAt}: \`${e.id}\`: ${e.statement}`),
  ]
  if (notes.length > 0) parts.push(notes.join('\n'))
  parts.push(d.reason)
  return parts.join('\n\n')
}

/** The body of reports/scan.json: the decision and the facts behind it, for deploy and for people. */
export function scanReport(d: Decision, subject: ScanSubject, policy: Policy & { ignoreFile: string }, extra: Record<string, unknown> = {}) {
  return {
    decision: d.decision,
    reason: d.reason,
    image: subject,
    policy,
    counts: d.counts,
    blockingIds: d.blockingIds,
    blocking: d.blocking.map((f) => ({ id: f.id, aliases: f.aliases, severity: f.severity, pkg: f.pkg, installed: f.installed, fixed: f.fixed, target: f.target })),
    ignored: d.ignored,
    expired: d.expired,
    unfixedAllowed: d.unfixedAllowed,
    secrets: d.secrets.map((x) => ({ ruleId: x.ruleId, category: x.category, severity: x.severity, file: x.target, startLine: x.startLine, endLine: x.endLine, blocking: d.blockingSecrets.includes(x) })),
    ...extra,
  }
}
