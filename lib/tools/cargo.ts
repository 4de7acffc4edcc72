import { existsSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { run } from '../core/run.ts'
import { requireTool } from './which.ts'
import { say } from '../core/output.ts'

/** A pinned crates.io tool built once with the machine's cargo into `<cache>/tools/<crate>/<version>/bin`. */
export async function ensureCargoTool(cache: string, crate: string, version: string): Promise<string> {
  const dir = join(cache, 'tools', crate, version)
  const bin = join(dir, 'bin', crate)
  if (existsSync(bin)) return bin
  const tmp = `${dir}.tmp-${process.pid}`
  rmSync(tmp, { recursive: true, force: true })
  say(`building ${crate} ${version} from crates.io (once per machine)`)
  await run([requireTool('cargo'), 'install', '--locked', crate, '--version', version, '--root', tmp], {
    env: { ...process.env, CARGO_TARGET_DIR: join(tmp, 'target') },
  })
  rmSync(join(tmp, 'target'), { recursive: true, force: true })
  rmSync(dir, { recursive: true, force: true })
  renameSync(tmp, dir)
  return bin
}
