import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { quietly } from '../core/output.ts'
import { ensureGoTool, type GoToolSpec } from './go.ts'
import { VERSIONS } from './versions.ts'

/** cosign from the Go module proxy, pinned and version-stamped like its release builds. */
export const COSIGN_SPEC: GoToolSpec = {
  binary: 'cosign',
  pkg: 'github.com/sigstore/cosign/v3/cmd/cosign',
  version: VERSIONS.cosign,
  env: { GOTOOLCHAIN: 'local' },
  ldflags: `-s -w -X sigs.k8s.io/release-utils/version.gitVersion=${VERSIONS.cosign}`,
}

/** The pinned cosign, built once per machine; a binary that is not exactly the pinned version is refused. */
export async function ensureCosign(cache: string): Promise<string> {
  const path = await ensureGoTool(cache, COSIGN_SPEC)
  // The version is read, not shown.
  const out = await quietly(() => run([path, 'version', '--json']))
  let version = ''
  try {
    version = String((JSON.parse(out.stdout) as { gitVersion?: unknown }).gitVersion ?? '')
  } catch {
    throw new PipelineError(`cosign: ${path} did not report its version`, out.stdout)
  }
  if (version !== VERSIONS.cosign)
    throw new PipelineError(`cosign: ${path} is ${version || '?'}, not the pinned ${VERSIONS.cosign}; delete it so the pinned one is built`)
  return path
}
