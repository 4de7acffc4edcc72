import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { PipelineError } from './errors.ts'
import { run } from './run.ts'

/** How to get a tool the pipeline expects on the machine, for the one-line error. */
const HOW_TO_GET: Record<string, string> = {
  cargo: 'install Rust with rustup (https://rustup.rs), then `rustup component add clippy rustfmt`',
  git: '`apt-get install git`',
  go: 'install Go 1.26 or newer (Kubernetes 1.36 and Helm 4 need it) (https://go.dev/dl) and put it on PATH',
  shellcheck: '`apt-get install shellcheck` (or your platform\'s shellcheck package)',
  docker: '`apt-get install docker.io` (Debian) or Docker Engine for your platform',
  dockerd: '`apt-get install docker.io`',
  'docker-registry': '`apt-get install docker-registry`',
  debootstrap: '`apt-get install debootstrap`',
  node: 'install Node.js 20 or newer',
}

/** The absolute path of `name` on PATH (or `name` itself when it is a path), or undefined. */
export function findTool(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (name.includes('/')) return existsSync(name) ? name : undefined
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name)
  }
  return undefined
}

/** Like findTool, but a missing tool is a one-line error that says how to install it. */
export function requireTool(name: string, env: NodeJS.ProcessEnv = process.env): string {
  const found = findTool(name, env)
  if (found) return found
  const base = name.split('/').pop() ?? name
  const how = HOW_TO_GET[base] ?? `install ${base} and put it on PATH`
  throw new PipelineError(`${base} not found: ${how}`)
}

export interface GoToolSpec {
  /** Name of the binary produced. */
  binary: string
  /** Go package path to install, e.g. github.com/rhysd/actionlint/cmd/actionlint. */
  pkg: string
  version: string
  /** Extra environment (GOEXPERIMENT, CGO_ENABLED). */
  env?: Record<string, string>
  ldflags?: string
}

/**
 * A pinned Go tool: built once per machine from the Go module proxy with
 * `go install pkg@version` into `<cache>/tools/<binary>/<version>/`, then reused.
 * The binary is moved into place only after a successful build, so an
 * interrupted build never leaves a broken tool behind.
 */
export async function ensureGoTool(cache: string, spec: GoToolSpec, onLine?: (line: string) => void): Promise<string> {
  const dir = join(cache, 'tools', spec.binary, spec.version)
  const bin = join(dir, spec.binary)
  if (existsSync(bin)) return bin
  requireTool('go')
  const tmp = `${dir}.tmp-${process.pid}`
  rmSync(tmp, { recursive: true, force: true })
  mkdirSync(tmp, { recursive: true })
  const args = ['go', 'install', '-trimpath']
  if (spec.ldflags) args.push(`-ldflags=${spec.ldflags}`)
  args.push(`${spec.pkg}@${spec.version}`)
  onLine?.(`building ${spec.binary} ${spec.version} from the Go module proxy (once per machine)`)
  await run(args, { env: { ...process.env, ...spec.env, GOBIN: tmp, CGO_ENABLED: spec.env?.CGO_ENABLED ?? '0' }, cwd: tmp, onLine })
  mkdirSync(dir, { recursive: true })
  renameSync(join(tmp, spec.binary), bin)
  rmSync(tmp, { recursive: true, force: true })
  return bin
}
