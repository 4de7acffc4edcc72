/**
 * An independent rebuild of a pushed image: a clean clone of its commit, built
 * again with nothing cached from the build arguments its signed provenance
 * records, and compared with what was pushed. A mismatch is named by the
 * layer (and the Dockerfile step that made it) or the config field that
 * differs, so the cause can be found, not guessed.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { fetchBlob, fetchManifest, type RegistryAuth } from './registry.ts'

export interface Descriptor {
  mediaType?: string
  digest: string
  size: number
}
export interface ImageManifest {
  mediaType?: string
  config: Descriptor
  layers: Descriptor[]
  annotations?: Record<string, string>
}
export interface ImageConfig {
  created?: string
  config?: Record<string, unknown>
  history?: { created_by?: string; empty_layer?: boolean; created?: string }[]
  rootfs?: { diff_ids?: string[] }
  [k: string]: unknown
}
/** One image, as the comparison reads it. */
export interface ImageParts {
  digest: string
  manifest: ImageManifest
  config: ImageConfig
}

/**
 * A clean clone of `commit` from `source` (a path or URL) in a new
 * directory: no untracked, ignored or modified file of any working tree
 * comes along. The caller removes it.
 */
export async function cleanClone(source: string, commit: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'rebuild-clone-'))
  const env = { ...process.env, GIT_TERMINAL_PROMPT: '0' }
  try {
    await run(['git', 'clone', '--quiet', '--no-local', '--no-checkout', source, dir], { env, timeoutMs: 10 * 60_000 })
    const has = await run(['git', 'cat-file', '-e', `${commit}^{commit}`], { cwd: dir, env, okCodes: [0, 1, 128] })
    if (has.exitCode !== 0)
      throw new PipelineError(`rebuild: commit ${commit.slice(0, 12)} is not in ${source}; fetch it (a shallow clone may lack it)`)
    await run(['git', '-c', 'advice.detachedHead=false', 'checkout', '--quiet', '--detach', commit], { cwd: dir, env })
    return dir
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
}

export function sha256File(path: string): string {
  return createHash('sha256')
    .update(new Uint8Array(readFileSync(path)))
    .digest('hex')
}

/** The image in an OCI layout tarball (buildctl's `type=oci` output): its manifest digest, manifest and config. */
export async function readOciTarball(tar: string): Promise<ImageParts> {
  const dir = mkdtempSync(join(tmpdir(), 'oci-layout-'))
  try {
    await run(['tar', '-xf', tar, '-C', dir, 'index.json', 'blobs'], { timeoutMs: 5 * 60_000 })
    const blob = (d: string) => {
      const p = join(dir, 'blobs', ...d.split(':'))
      if (!existsSync(p)) throw new PipelineError(`rebuild: ${tar} has no blob ${d}`)
      return JSON.parse(readFileSync(p, 'utf8')) as unknown
    }
    const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests?: Descriptor[] }
    const top = index.manifests?.[0]
    if (!top) throw new PipelineError(`rebuild: ${tar} names no image in its index.json`)
    const manifest = blob(top.digest) as ImageManifest
    return { digest: top.digest, manifest, config: blob(manifest.config.digest) as ImageConfig }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The pushed image's manifest and config, read from its registry by digest. */
export async function readPushedImage(pinned: string, auth?: RegistryAuth): Promise<ImageParts> {
  const { digest, body } = await fetchManifest(pinned, auth)
  const manifest = body as ImageManifest
  if (!Array.isArray(manifest.layers)) throw new PipelineError(`rebuild: ${pinned} is an index, not one image manifest`)
  return { digest, manifest, config: (await fetchBlob(pinned, manifest.config.digest, auth)) as ImageConfig }
}

const short = (d: string) => `${d.slice(0, 19)}…`

/** The Dockerfile step that made each layer: the config's history entries that are not empty layers, in order. */
export function layerSteps(config: ImageConfig): string[] {
  return (config.history ?? [])
    .filter((h) => !h.empty_layer)
    .map((h) =>
      (h.created_by ?? '?')
        .replace(/\s+# buildkit$/, '')
        .replace(/\s+/g, ' ')
        .trim(),
    )
}

/** Paths of the values that differ between two JSON documents (`config.Labels.org.opencontainers.image.revision`), at most `max`. */
export function jsonDifferences(a: unknown, b: unknown, path = '', max = 5): string[] {
  if (JSON.stringify(a) === JSON.stringify(b)) return []
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x)
  if (!isObj(a) || !isObj(b)) return [path || '(the document)']
  const out: string[] = []
  for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    for (const d of jsonDifferences(a[k], b[k], path ? `${path}.${k}` : k, max)) if (out.length < max) out.push(d)
  }
  return out
}

/**
 * What differs between the pushed image and its rebuild, one phrase each:
 * every layer whose digest differs, named by its position and the step that
 * made it, and the config fields that differ. Empty when the digests match.
 */
export function imageDifferences(pushed: ImageParts, rebuilt: ImageParts): string[] {
  if (pushed.digest === rebuilt.digest) return []
  const out: string[] = []
  const steps = layerSteps(pushed.config)
  const n = Math.max(pushed.manifest.layers.length, rebuilt.manifest.layers.length)
  if (pushed.manifest.layers.length !== rebuilt.manifest.layers.length)
    out.push(`the pushed image has ${pushed.manifest.layers.length} layers, the rebuild ${rebuilt.manifest.layers.length}`)
  for (let i = 0; i < n; i++) {
    const [p, r] = [pushed.manifest.layers[i], rebuilt.manifest.layers[i]]
    if (p?.digest === r?.digest) continue
    out.push(
      `layer ${i + 1} of ${n} (${steps[i] ?? 'no history entry'}) differs: pushed ${p ? short(p.digest) : 'none'}, rebuilt ${r ? short(r.digest) : 'none'}`,
    )
  }
  if (pushed.manifest.config.digest !== rebuilt.manifest.config.digest) {
    // The layers' own digests are listed above; the rest of the config is what a person looks for.
    const strip = (c: ImageConfig) => ({ ...c, rootfs: undefined })
    const fields = jsonDifferences(strip(pushed.config), strip(rebuilt.config))
    if (fields.length > 0) out.push(`the image config differs in ${fields.join(', ')}`)
  }
  if (out.length === 0)
    out.push(`the manifests differ in ${jsonDifferences(pushed.manifest, rebuilt.manifest).join(', ') || 'their encoding'}`)
  return out
}
