import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { deflateSync } from 'node:zlib'
import { ensureDebianPackages } from '../../lib/tools/apt.ts'
import { buildImage } from '../../lib/build/docker.ts'
import { pushImage, removeImage } from '../../lib/build/registry.ts'
import { LOCAL_REGISTRY } from '../../lib/sandbox/registry.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { run } from '../../lib/core/run.ts'
import { BASE_IMAGES } from '../../lib/tools/versions.ts'

export const FIXTURE_IMAGES = join(repoRoot, 'test', 'fixtures', 'scan-images')
export type FixtureKind = 'vulnerable' | 'clean' | 'secret'
/** Where the secret image carries its private key. */
export const SECRET_FILE = '/etc/doc-server/tls.key'

export interface FixtureImage {
  repository: string
  digest: string
  ref: string
  /** The secret image's key, so a test can check it never shows up anywhere. */
  key?: string
}

/**
 * Builds one of the scan fixture images (see test/fixtures/scan-images/Dockerfile)
 * on the runtime base image (or `base`: the real Doc Server image, for a fixture
 * a node can run) and pushes it to the local registry. The secret image's key is
 * made fresh by openssl each time: no key is ever committed.
 */
export async function pushFixtureImage(
  docker: string,
  work: string,
  kind: FixtureKind,
  base: string = BASE_IMAGES.runtime,
): Promise<FixtureImage> {
  await ensureDebianPackages([
    { pkg: 'binutils', provides: 'objcopy' },
    { pkg: 'openssl', provides: 'openssl' },
  ])
  const ctx = join(work, `${kind}-context`)
  rmSync(ctx, { recursive: true, force: true })
  mkdirSync(join(ctx, 'extra'), { recursive: true })
  const deps = kind === 'vulnerable' ? 'vulnerable' : 'clean'
  writeFileSync(join(ctx, 'dep-v0.zlib'), new Uint8Array(deflateSync(readFileSync(join(FIXTURE_IMAGES, `dep-v0.${deps}.json`), 'utf8'))))
  copyFileSync('/bin/true', join(ctx, 'base.elf'))
  await run([
    'objcopy',
    '--add-section',
    `.dep-v0=${join(ctx, 'dep-v0.zlib')}`,
    '--set-section-flags',
    '.dep-v0=noload,readonly',
    join(ctx, 'base.elf'),
    join(ctx, 'scan-fixture'),
  ])
  chmodSync(join(ctx, 'scan-fixture'), 0o755)
  let key: string | undefined
  if (kind === 'secret') {
    const file = join(ctx, 'extra', SECRET_FILE)
    mkdirSync(join(file, '..'), { recursive: true })
    await run(['openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', file])
    key = readFileSync(file, 'utf8')
  }
  const repository = `${LOCAL_REGISTRY}/local/scan-fixture-${kind}`
  const ref = `${repository}:e2e-${process.pid}`
  await buildImage({
    docker,
    context: ctx,
    dockerfile: join(FIXTURE_IMAGES, 'Dockerfile'),
    tags: [ref],
    buildArgs: { RUNTIME_IMAGE: base, RUN_ID: `${process.pid}-${Date.now()}` },
  })
  const pushed = await pushImage(docker, ref)
  return { repository, digest: pushed.digest, ref, key }
}

/** Removes what pushFixtureImage made: the manifest in the shared registry and the local tag. */
export async function removeFixtureImage(docker: string, image: FixtureImage): Promise<void> {
  await fetch(`http://${image.repository.replace(`${LOCAL_REGISTRY}/`, `${LOCAL_REGISTRY}/v2/`)}/manifests/${image.digest}`, {
    method: 'DELETE',
  }).catch(() => undefined)
  await removeImage(docker, image.ref)
}

/** Every line of a PEM body: none may appear in a report, a summary or a log. */
export function keyLines(pem: string): string[] {
  return pem
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length >= 16 && !l.startsWith('-----'))
}
