import { existsSync } from 'node:fs'
import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { findTool } from './which.ts'
import { say } from '../core/output.ts'

/** A Debian package and a file it installs, which tells whether it is there. */
export interface DebianNeed {
  pkg: string
  provides: string
}

/**
 * Installs the Debian packages whose files are missing. Only as root on a
 * Debian-like machine (this project's CI and dev machines); elsewhere a clear
 * line says what to install, since silently sudo-ing is not ours to do.
 */
export async function ensureDebianPackages(needs: readonly DebianNeed[]): Promise<string[]> {
  const missing = needs.filter((n) => !(n.provides.includes('/') ? existsSync(n.provides) : findTool(n.provides)))
  if (missing.length === 0) return []
  const pkgs = [...new Set(missing.map((n) => n.pkg))]
  if (process.getuid?.() !== 0 || !findTool('apt-get')) {
    throw new PipelineError(
      `missing ${missing.map((n) => n.provides).join(', ')}: install the packages ${pkgs.join(' ')} (Debian/Ubuntu: apt-get install ${pkgs.join(' ')})`,
    )
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  say(`apt-get install ${pkgs.join(' ')}`)
  await run(['apt-get', 'update', '-qq'], { env })
  await run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...pkgs], { env })
  return pkgs
}
