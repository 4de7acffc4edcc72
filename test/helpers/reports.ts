/**
 * build.json and scan.json as the build and scan stages write them, for tests
 * that start a later stage from a given digest. They go through the same
 * schemas as the stages' own reports.
 */
import { writeReport, type Report } from '../../lib/core/reports.ts'

export function buildReportFor(repository: string, digest: string | null, o: { tag?: string; commit?: string; branch?: string | null; dirty?: boolean } = {}): Report<'build'> {
  const tag = o.tag ?? 'test'
  return {
    image: { ref: `${repository}:${tag}`, digest, repository, tag, pinned: digest ? `${repository}@${digest}` : null },
    commit: { sha: o.commit ?? 'c'.repeat(40), branch: o.branch ?? null, dirty: o.dirty ?? false },
    pushed: digest !== null,
    seconds: 0,
    build: { seconds: 0, cookCacheHit: null, cookMiss: null },
    healthySeconds: null,
    signature: null,
  }
}

export function scanReportFor(repository: string, digest: string, decision: 'pass' | 'fail' = 'pass', reason = decision === 'pass' ? 'no blocking finding' : 'a blocking finding'): Report<'scan'> {
  return { decision, reason, image: { scanned: `${repository}@${digest}`, source: 'remote', digest }, deployable: true }
}

/** Both reports in `dir`, as a passing scan of a pushed build leaves them. */
export function writeBuildAndScan(dir: string, repository: string, digest: string, o: Parameters<typeof buildReportFor>[2] & { scan?: Report<'scan'> } = {}): void {
  writeReport(dir, 'build', buildReportFor(repository, digest, o))
  writeReport(dir, 'scan', o.scan ?? scanReportFor(repository, digest))
}
