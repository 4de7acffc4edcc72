import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { deflateSync } from 'node:zlib'
import { ensureDebianPackages } from '../../lib/core/apt.ts'
import { buildImage, pushImage } from '../../lib/build/docker.ts'
import { LOCAL_REGISTRY } from '../../lib/local/registry.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { run } from '../../lib/core/run.ts'
import { BASE_IMAGES } from '../../lib/core/versions.ts'

const FIXTURE = join(repoRoot, 'test', 'fixtures', 'vulnerable-image')

/** An ELF whose .dep-v0 section claims tokio 1.13.0, in an image on the runtime base; pushed to the local registry. */
export async function pushVulnerableImage(docker: string, work: string): Promise<{ repository: string; digest: string; ref: string }> {
  await ensureDebianPackages([{ pkg: 'binutils', provides: 'objcopy' }])
  const ctx = join(work, 'vuln-context')
  mkdirSync(ctx, { recursive: true })
  writeFileSync(join(ctx, 'dep-v0.zlib'), new Uint8Array(deflateSync(readFileSync(join(FIXTURE, 'dep-v0.json'), 'utf8'))))
  copyFileSync('/bin/true', join(ctx, 'base.elf'))
  await run(['objcopy', '--add-section', `.dep-v0=${join(ctx, 'dep-v0.zlib')}`, '--set-section-flags', '.dep-v0=noload,readonly', join(ctx, 'base.elf'), join(ctx, 'scan-fixture')])
  chmodSync(join(ctx, 'scan-fixture'), 0o755)
  const repository = `${LOCAL_REGISTRY}/local/scan-fixture-vulnerable`
  const ref = `${repository}:e2e-${process.pid}`
  await buildImage({ docker, context: ctx, dockerfile: join(FIXTURE, 'Dockerfile'), tags: [ref], buildArgs: { RUNTIME_IMAGE: BASE_IMAGES.runtime, RUN_ID: `${process.pid}-${Date.now()}` } })
  const pushed = await pushImage(docker, ref)
  return { repository, digest: pushed.digest, ref }
}

