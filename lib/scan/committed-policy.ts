/**
 * The committed scan policy (`.scan-policy.yaml` and the ignore file it names)
 * and its digest. The scan stage attests the digest of the policy it applied;
 * deploy computes the digest of the committed policy at the commit it deploys
 * and accepts only scans made under exactly that one.
 */
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { isAbsolute, join, relative } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { PipelineError } from '../core/errors.ts'
import { repoRoot } from '../core/paths.ts'
import { run } from '../core/run.ts'
import { SEVERITIES } from './trivy-report.ts'

export const POLICY_FILE = '.scan-policy.yaml'

/** SCAN_IGNORE_MAX_DAYS and the policy's ignoreMaxDays may not exceed this: an accepted risk is reviewed at least yearly. */
export const MAX_IGNORE_DAYS = 365

const PolicyFile = z.strictObject({
  severities: z.array(z.enum(SEVERITIES)).min(1),
  ignoreUnfixed: z.boolean(),
  ignoreFile: z.string().min(1),
  ignoreMaxDays: z.number().int().min(1).max(MAX_IGNORE_DAYS),
})

export type ScanPolicyFile = z.output<typeof PolicyFile>

/** A policy as applied: the settings, and the content of the ignore file it used. */
export interface AppliedPolicy {
  severities: string[]
  ignoreUnfixed: boolean
  ignoreMaxDays: number
  /** The ignore file's path as given (relative to the repository when inside it). */
  ignoreFile: string
  /** sha256 of the ignore file's bytes. */
  ignoreFileSha256: string
}

export function parsePolicyFile(text: string, source: string): ScanPolicyFile {
  let raw: unknown
  try {
    raw = parseYaml(text)
  } catch (err) {
    throw new PipelineError(`scan: ${source} does not parse: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`)
  }
  const parsed = PolicyFile.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new PipelineError(`scan: ${source}: ${issue.path.join('.') || '(the file)'}: ${issue.message}`)
  }
  return parsed.data
}

const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex')

/** The digest deploy compares: every setting that decides what blocks, and the ignore file's exact bytes. */
export function policyDigest(p: AppliedPolicy): string {
  const canonical = JSON.stringify({
    severities: [...p.severities].sort(),
    ignoreUnfixed: p.ignoreUnfixed,
    ignoreMaxDays: p.ignoreMaxDays,
    ignoreFileSha256: p.ignoreFileSha256,
  })
  return `sha256:${sha256(canonical)}`
}

/** The committed policy in a working tree (the scan stage's view). */
export function workingTreePolicy(root = repoRoot): AppliedPolicy & { file: ScanPolicyFile } {
  const path = join(root, POLICY_FILE)
  if (!existsSync(path)) throw new PipelineError(`scan: ${POLICY_FILE} is missing; it declares what the scan blocks on`)
  const file = parsePolicyFile(readFileSync(path, 'utf8'), POLICY_FILE)
  if (!existsSync(join(root, file.ignoreFile))) throw new PipelineError(`scan: ${POLICY_FILE} names ignore file ${file.ignoreFile}, which does not exist`)
  return { file, ...appliedPolicy(file, root) }
}

/** A policy as a scan applies it: its settings and the ignore file at `ignorePath`, read now. */
export function appliedPolicy(settings: { severities: readonly string[]; ignoreUnfixed: boolean; ignoreMaxDays: number; ignoreFile: string }, root = repoRoot): AppliedPolicy {
  const ignorePath = isAbsolute(settings.ignoreFile) ? settings.ignoreFile : join(root, settings.ignoreFile)
  if (!existsSync(ignorePath)) throw new PipelineError(`scan: ignore file ${settings.ignoreFile} does not exist`)
  const shown = relative(root, ignorePath)
  return { severities: [...settings.severities], ignoreUnfixed: settings.ignoreUnfixed, ignoreMaxDays: settings.ignoreMaxDays, ignoreFile: shown.startsWith('..') ? ignorePath : shown, ignoreFileSha256: sha256(new Uint8Array(readFileSync(ignorePath))) }
}

/** The committed policy as it is in `commit` (deploy's view): read from git, never from the working tree. */
export async function committedPolicy(commit: string, root = repoRoot): Promise<AppliedPolicy> {
  const known = await run(['git', 'cat-file', '-e', `${commit}^{commit}`], { cwd: root, okCodes: [1, 128] })
  if (known.exitCode !== 0) throw new PipelineError(`deploy: refused: commit ${commit.slice(0, 12)} is not in this clone, so its committed scan policy cannot be read; fetch the history the image was built from`)
  const show = async (path: string) => {
    const r = await run(['git', 'show', `${commit}:${path}`], { cwd: root, okCodes: [128] })
    if (r.exitCode !== 0) throw new PipelineError(`deploy: refused: commit ${commit.slice(0, 12)} has no ${path}, so no scan can have been made under its committed policy; rebuild from a newer commit`)
    return r.stdout
  }
  const file = parsePolicyFile(await show(POLICY_FILE), `${POLICY_FILE} at ${commit.slice(0, 12)}`)
  const ignore = await show(file.ignoreFile)
  return { severities: file.severities, ignoreUnfixed: file.ignoreUnfixed, ignoreMaxDays: file.ignoreMaxDays, ignoreFile: file.ignoreFile, ignoreFileSha256: sha256(ignore) }
}

/** How an attested policy differs from the committed one, for the refusal: "severities LOW (committed: CRITICAL, HIGH)". */
export function policyDifference(attested: Partial<AppliedPolicy>, committed: AppliedPolicy): string {
  const out: string[] = []
  const sev = (s: readonly string[] | undefined) => [...(s ?? [])].sort().join(', ') || 'none'
  if (sev(attested.severities) !== sev(committed.severities)) out.push(`severities ${sev(attested.severities)} (committed: ${sev(committed.severities)})`)
  if (attested.ignoreUnfixed !== committed.ignoreUnfixed) out.push(`ignoreUnfixed ${String(attested.ignoreUnfixed)} (committed: ${committed.ignoreUnfixed})`)
  if (attested.ignoreMaxDays !== committed.ignoreMaxDays) out.push(`ignoreMaxDays ${String(attested.ignoreMaxDays)} (committed: ${committed.ignoreMaxDays})`)
  if (attested.ignoreFileSha256 !== committed.ignoreFileSha256) out.push(`ignore file ${attested.ignoreFile ?? '?'} with other content (sha256 ${String(attested.ignoreFileSha256).slice(0, 12)}…, committed ${committed.ignoreFile} ${committed.ignoreFileSha256.slice(0, 12)}…)`)
  return out.join('; ') || 'no recorded difference (the digest itself differs)'
}
