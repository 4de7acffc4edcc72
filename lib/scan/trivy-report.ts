import { existsSync, readFileSync } from 'node:fs'
import { PipelineError } from '../core/errors.ts'

/** Trivy's severities, worst first. */
export const SEVERITIES = ['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'UNKNOWN'] as const
export type Severity = (typeof SEVERITIES)[number]

/** The only JSON layout this gate reads; Trivy has written it since v0.20. */
export const TRIVY_SCHEMA_VERSION = 2

/** One vulnerability in one installed package, as the gate sees it. */
export interface Finding {
  id: string
  /** Other names of the same advisory (a GHSA id next to its CVE). */
  aliases: string[]
  pkg: string
  installed: string
  /** Empty when no fixed version exists. */
  fixed: string
  /** Trivy's status: fixed, affected, will_not_fix, ...; empty in old reports. */
  status: string
  severity: Severity
  /** The scanned target inside the artifact (OS, a binary's path, a lock file). */
  target: string
  title: string
  url: string
}

/**
 * A secret Trivy's secret scanner found in a file of the image: where it is and
 * which rule matched, never the matched text (the report's Match and Code are
 * not read, so nothing downstream can print them).
 */
export interface SecretFinding {
  ruleId: string
  category: string
  title: string
  severity: Severity
  /** The file inside the image. */
  target: string
  startLine: number
  endLine: number
}

/** One entry of the report's Results: what Trivy looked at. */
export interface ResultInfo {
  target: string
  /** os-pkgs, lang-pkgs, secret, ... */
  class: string
  /** debian, rustbinary, ... */
  type: string
  packages: number
}

export interface TrivyReport {
  artifact: string
  results: ResultInfo[]
  secrets: SecretFinding[]
  /** Secrets Trivy itself suppressed; judged again like suppressed vulnerabilities. */
  suppressedSecrets: SecretFinding[]
  findings: Finding[]
  /**
   * Vulnerabilities Trivy itself suppressed (ignore file, VEX), from
   * `--show-suppressed`. The gate judges them again under its own policy, so a
   * report made with a laxer ignore file cannot pass for clean.
   */
  suppressed: Finding[]
  /** Packages listed by `--list-all-pkgs`, per target: what the SBOM will contain. */
  packages: { target: string; name: string; version: string }[]
  /** The OS Trivy detected (`debian 12.5`), if any. */
  os: string | undefined
}

type Json = Record<string, unknown>

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
const str = (v: unknown): string => (typeof v === 'string' ? v : '')

/**
 * Parses a Trivy JSON report (`trivy image --format json`) and refuses, with
 * one line, anything it cannot vouch for: not JSON, another SchemaVersion, no
 * `Results` (a scan that saw no packages cannot call an image clean), or
 * results whose vulnerabilities lack an id, a package or a known severity.
 * A result without `Vulnerabilities` is clean: Trivy omits the empty list.
 */
export function parseTrivyReport(text: string, source: string): TrivyReport {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw new PipelineError(`scan: ${source} is not valid JSON (a truncated or failed scan)`)
  }
  if (!isObject(raw)) throw new PipelineError(`scan: ${source} is not a Trivy report (expected a JSON object)`)
  if (raw.SchemaVersion !== TRIVY_SCHEMA_VERSION) {
    const seen = raw.SchemaVersion === undefined ? 'no SchemaVersion' : `SchemaVersion ${JSON.stringify(raw.SchemaVersion)}`
    throw new PipelineError(`scan: ${source} has ${seen}; the gate reads only Trivy's SchemaVersion ${TRIVY_SCHEMA_VERSION}`)
  }
  if (!('Results' in raw))
    throw new PipelineError(`scan: ${source} has no Results: Trivy found nothing to scan, so it cannot vouch for the image`)
  if (!Array.isArray(raw.Results)) throw new PipelineError(`scan: ${source} has malformed Results (expected a list)`)
  if (raw.Results.length === 0)
    throw new PipelineError(`scan: ${source} has empty Results: Trivy listed nothing it scanned, so it cannot vouch for the image`)

  const findings: Finding[] = []
  const suppressed: Finding[] = []
  const packages: TrivyReport['packages'] = []
  const results: ResultInfo[] = []
  const secrets: SecretFinding[] = []
  const suppressedSecrets: SecretFinding[] = []
  raw.Results.forEach((result, i) => {
    if (!isObject(result) || typeof result.Target !== 'string')
      throw new PipelineError(`scan: ${source} has a malformed result #${i + 1} (no Target)`)
    const target = result.Target
    for (const key of ['Vulnerabilities', 'Packages', 'ExperimentalModifiedFindings', 'Secrets'] as const) {
      if (result[key] !== undefined && result[key] !== null && !Array.isArray(result[key])) {
        throw new PipelineError(`scan: ${source} has malformed ${key} in ${target} (expected a list)`)
      }
    }
    const listed = (result.Packages as unknown[] | undefined) ?? []
    for (const p of listed) {
      if (isObject(p)) packages.push({ target, name: str(p.Name), version: str(p.Version) })
    }
    results.push({ target, class: str(result.Class), type: str(result.Type), packages: listed.length })
    ;((result.Secrets as unknown[] | undefined) ?? []).forEach((v, j) =>
      secrets.push(toSecret(v, target, `${source}: ${target} secret #${j + 1}`)),
    )
    ;((result.Vulnerabilities as unknown[] | undefined) ?? []).forEach((v, j) =>
      findings.push(toFinding(v, target, `${source}: ${target} vulnerability #${j + 1}`)),
    )
    ;((result.ExperimentalModifiedFindings as unknown[] | undefined) ?? []).forEach((m, j) => {
      const where = `${source}: ${target} suppressed finding #${j + 1}`
      if (!isObject(m)) throw new PipelineError(`scan: ${where} is not an object`)
      if (m.Type === 'vulnerability') suppressed.push(toFinding(m.Finding, target, where))
      if (m.Type === 'secret') suppressedSecrets.push(toSecret(m.Finding, target, where))
    })
  })
  const os =
    isObject(raw.Metadata) && isObject(raw.Metadata.OS) ? `${str(raw.Metadata.OS.Family)} ${str(raw.Metadata.OS.Name)}`.trim() : undefined
  return { artifact: str(raw.ArtifactName), results, secrets, suppressedSecrets, findings, suppressed, packages, os: os || undefined }
}

function toSecret(v: unknown, target: string, where: string): SecretFinding {
  if (!isObject(v)) throw new PipelineError(`scan: ${where} is not an object`)
  if (typeof v.RuleID !== 'string' || v.RuleID === '') throw new PipelineError(`scan: ${where} has no RuleID`)
  const severity = v.Severity === undefined || v.Severity === '' ? 'UNKNOWN' : v.Severity
  if (!(SEVERITIES as readonly unknown[]).includes(severity))
    throw new PipelineError(`scan: ${where} (${v.RuleID}) has unknown Severity ${JSON.stringify(v.Severity)}`)
  const line = (n: unknown) => (typeof n === 'number' && Number.isInteger(n) ? n : 0)
  return {
    ruleId: v.RuleID,
    category: str(v.Category),
    title: str(v.Title),
    severity: severity as Severity,
    target,
    startLine: line(v.StartLine),
    endLine: line(v.EndLine),
  }
}

/**
 * A report about an image must show Trivy saw what the image is made of: a
 * result listing the OS packages, and one listing the crates of the Rust
 * binary (the `.dep-v0` the image ships). A report without them (a scan that
 * did not recognise the OS, lost the binary's dependency list, or was made
 * without `--list-all-pkgs`) says nothing about those packages, so it cannot
 * call the image clean.
 */
export function coverageProblem(report: TrivyReport, source: string): string | undefined {
  const os = report.results.find((r) => r.class === 'os-pkgs')
  if (!os) return `${source} has no result for the image's OS packages: Trivy did not recognise the OS, so it cannot vouch for them`
  if (os.packages === 0)
    return `${source} lists no OS packages for ${os.target}: scan with --list-all-pkgs, or Trivy found no package database`
  const crates = report.results.find((r) => r.class === 'lang-pkgs' && r.type === 'rustbinary')
  if (!crates)
    return `${source} has no result for the binary's crates (rustbinary): the image lost its .dep-v0 dependency list, so Trivy cannot vouch for them`
  if (crates.packages === 0) return `${source} lists no crates for ${crates.target}: scan with --list-all-pkgs`
  return undefined
}

/** The same check as an error, for callers that stop on it. */
export function assertCoverage(report: TrivyReport, source: string): void {
  const problem = coverageProblem(report, source)
  if (problem) throw new PipelineError(`scan: ${problem}`)
}

/** `file:line` of a secret, the way people look it up. */
export function secretWhere(s: SecretFinding): string {
  return `${s.target}${s.startLine > 0 ? `:${s.startLine}` : ''}`
}

function toFinding(v: unknown, target: string, where: string): Finding {
  if (!isObject(v)) throw new PipelineError(`scan: ${where} is not an object`)
  for (const key of ['VulnerabilityID', 'PkgName', 'InstalledVersion'] as const) {
    if (typeof v[key] !== 'string' || v[key] === '') throw new PipelineError(`scan: ${where} has no ${key}`)
  }
  // Trivy itself reads a missing severity as UNKNOWN; anything else unknown is a report we do not understand.
  const severity = v.Severity === undefined || v.Severity === '' ? 'UNKNOWN' : v.Severity
  if (!(SEVERITIES as readonly unknown[]).includes(severity))
    throw new PipelineError(`scan: ${where} (${str(v.VulnerabilityID)}) has unknown Severity ${JSON.stringify(v.Severity)}`)
  const aliases = Array.isArray(v.VendorIDs) ? v.VendorIDs.filter((a): a is string => typeof a === 'string') : []
  return {
    id: v.VulnerabilityID as string,
    aliases,
    pkg: v.PkgName as string,
    installed: v.InstalledVersion as string,
    fixed: str(v.FixedVersion),
    status: str(v.Status),
    severity: severity as Severity,
    target,
    title: str(v.Title),
    url: str(v.PrimaryURL),
  }
}

/** Reads and parses a report file; a missing file is a failed scan, not a clean one. */
export function readTrivyReport(path: string): TrivyReport {
  if (!existsSync(path)) throw new PipelineError(`scan: Trivy report ${path} is missing`)
  return parseTrivyReport(readFileSync(path, 'utf8'), path)
}

/**
 * Checks that the SARIF about to be published lists exactly the findings the
 * gate decided on (one result per finding); a mismatch fails the scan.
 */
export function assertSarifAgrees(report: TrivyReport, sarifText: string, source: string): number {
  const sarif = sarifRuleIds(sarifText, source)
  const json = [...report.findings.map((f) => f.id), ...report.secrets.map((x) => x.ruleId)].sort()
  if (sarif.length !== json.length || sarif.some((id, i) => id !== json[i])) {
    throw new PipelineError(
      `scan: ${source} lists ${sarif.length} results but the JSON report has ${json.length} findings and secrets; the outputs disagree`,
    )
  }
  return sarif.length
}

/**
 * The rule id of every result in a Trivy SARIF file, one per finding, so the
 * published SARIF can be checked against the report the gate decided on.
 */
export function sarifRuleIds(text: string, source: string): string[] {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw new PipelineError(`scan: ${source} is not valid JSON`)
  }
  if (!isObject(raw) || !Array.isArray(raw.runs)) throw new PipelineError(`scan: ${source} is not SARIF (no runs)`)
  const ids: string[] = []
  for (const runObj of raw.runs) {
    const results = isObject(runObj) && Array.isArray(runObj.results) ? runObj.results : []
    for (const r of results) if (isObject(r) && typeof r.ruleId === 'string') ids.push(r.ruleId)
  }
  return ids.sort()
}
