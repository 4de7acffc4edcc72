import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { run } from '../core/run.ts'
import { requireTool } from './which.ts'
import { say } from '../core/output.ts'

export interface GoToolSpec {
  /** Name of the binary produced. */
  binary: string
  /** Go package path to install, e.g. github.com/rhysd/actionlint/cmd/actionlint. */
  pkg: string
  version: string
  /** Extra environment (GOEXPERIMENT, CGO_ENABLED). */
  env?: Record<string, string>
  ldflags?: string
  /** Build tags (`-tags`), e.g. to leave out optional parts of a large tool. */
  tags?: readonly string[]
}

/**
 * A pinned Go tool: built once per machine from the Go module proxy with
 * `go install pkg@version` into `<cache>/tools/<binary>/<version>/`, then reused.
 * The binary is moved into place only after a successful build, so an
 * interrupted build never leaves a broken tool behind.
 */
export async function ensureGoTool(cache: string, spec: GoToolSpec): Promise<string> {
  const dir = join(cache, 'tools', spec.binary, spec.version)
  const bin = join(dir, spec.binary)
  if (existsSync(bin)) return bin
  requireTool('go')
  const tmp = `${dir}.tmp-${process.pid}`
  rmSync(tmp, { recursive: true, force: true })
  mkdirSync(tmp, { recursive: true })
  const args = ['go', 'install', '-trimpath']
  if (spec.ldflags) args.push(`-ldflags=${spec.ldflags}`)
  if (spec.tags?.length) args.push(`-tags=${spec.tags.join(',')}`)
  args.push(`${spec.pkg}@${spec.version}`)
  say(`building ${spec.binary} ${spec.version} from the Go module proxy (once per machine)`)
  await run(args, { env: { ...process.env, ...spec.env, GOBIN: tmp, CGO_ENABLED: spec.env?.CGO_ENABLED ?? '0' }, cwd: tmp })
  mkdirSync(dir, { recursive: true })
  renameSync(join(tmp, spec.binary), bin)
  rmSync(tmp, { recursive: true, force: true })
  return bin
}
