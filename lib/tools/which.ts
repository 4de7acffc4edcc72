import { existsSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { PipelineError } from '../core/errors.ts'

/** How to get a tool the pipeline expects on the machine, for the one-line error. */
const HOW_TO_GET: Record<string, string> = {
  cargo: 'install Rust with rustup (https://rustup.rs), then `rustup component add clippy rustfmt`',
  git: '`apt-get install git`',
  go: 'install Go 1.26 or newer (Kubernetes 1.36 and Helm 4 need it) (https://go.dev/dl) and put it on PATH',
  shellcheck: "`apt-get install shellcheck` (or your platform's shellcheck package)",
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
