import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { ensureGoTool, type GoToolSpec } from './go.ts'
import { VERSIONS } from './versions.ts'

const bare = (v: string) => v.replace(/^v/, '')

/** Trivy from the Go module proxy, pinned; jsonv2 is what Trivy's JSON code needs with this Go. */
export const TRIVY_SPEC: GoToolSpec = {
  binary: 'trivy',
  pkg: 'github.com/aquasecurity/trivy/cmd/trivy',
  version: VERSIONS.trivy,
  env: { GOEXPERIMENT: 'jsonv2' },
  ldflags: `-s -w -X github.com/aquasecurity/trivy/pkg/version/app.ver=${bare(VERSIONS.trivy)}`,
}

/** The tool that builds a Trivy DB from a vuln-list style directory. */
export const TRIVY_DB_SPEC: GoToolSpec = {
  binary: 'trivy-db',
  pkg: 'github.com/aquasecurity/trivy-db/cmd/trivy-db',
  version: VERSIONS.trivyDb,
}

/** Releases that must never run (v0.69.4 was compromised). */
const REFUSED_TRIVY = ['0.69.4']

/**
 * The pinned Trivy, built once per machine, and checked: the binary must say
 * it is exactly the pinned version, so a swapped or stale binary cannot scan.
 */
export async function ensureTrivy(cache: string): Promise<{ path: string; version: string }> {
  const path = await ensureGoTool(cache, TRIVY_SPEC)
  const out = await run([path, 'version', '--format', 'json'])
  let version = ''
  try {
    version = String((JSON.parse(out.stdout) as { Version?: unknown }).Version ?? '')
  } catch {
    throw new PipelineError(`trivy: ${path} did not report its version`, out.stdout)
  }
  if (REFUSED_TRIVY.includes(version)) throw new PipelineError(`trivy: ${path} is v${version}, a compromised release; delete it`)
  if (version !== bare(VERSIONS.trivy))
    throw new PipelineError(`trivy: ${path} is v${version || '?'}, not the pinned ${VERSIONS.trivy}; delete it so the pinned one is built`)
  return { path, version }
}
