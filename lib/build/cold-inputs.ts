/**
 * When a cold build can differ from the last one, and why a cook step missed.
 * A cold build's time depends on the dependency recipe (cargo-chef's
 * recipe.json: every manifest, Cargo.lock, cargo config, toolchain file), the
 * pinned toolchain, the base images and the Dockerfile; a code-only change
 * touches none of them, so its cold figure is the last one measured.
 */
import { createHash } from 'node:crypto'
import { existsSync,mkdtempSync,readFileSync,rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { BASE_IMAGES,VERSIONS } from '../tools/versions.ts'
import { imageId } from './docker.ts'
import { ensureCargoTool } from '../tools/cargo.ts'
import { writeJson } from '../core/json.ts'

/** cargo-chef's recipe.json, as `cargo chef prepare` writes it. */
export interface Recipe {
  skeleton: {
    manifests: { relative_path: string; contents: string }[]
    config_file: string | null
    lock_file: string | null
    rust_toolchain_file: unknown
  }
}

/** What a cold build depends on, each as a short hash, plus the recipe itself to explain a change. */
export interface ColdInputs {
  hashes: Record<string, string>
  recipe: Recipe
}

/** The last cold measurement, kept outside the clone. */
export interface ColdRecord {
  inputs: ColdInputs
  coldSeconds: number
  commit: string
  date: string
}

const hash = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 16)

/** The workspace's recipe, made by the pinned cargo-chef exactly as the planner stage makes it. */
export async function prepareRecipe(cargoChef: string, root: string): Promise<Recipe> {
  const dir = mkdtempSync(join(tmpdir(), 'doc-server-recipe-'))
  try {
    const path = join(dir, 'recipe.json')
    await run([cargoChef, 'chef', 'prepare', '--recipe-path', path], { cwd: root })
    return parseRecipe(readFileSync(path, 'utf8'), path)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

export function parseRecipe(text: string, source: string): Recipe {
  let r: Partial<Recipe>
  try {
    r = JSON.parse(text)
  } catch {
    throw new PipelineError(`measure: ${source} is not cargo-chef's recipe JSON`)
  }
  if (!Array.isArray(r.skeleton?.manifests)) throw new PipelineError(`measure: ${source} has no skeleton.manifests; was it written by cargo chef prepare?`)
  return r as Recipe
}

export function coldInputs(o: { recipe: Recipe; dockerfile: string; toolchain: string; baseImages: Record<string, string> }): ColdInputs {
  const hashes: Record<string, string> = { recipe: hash(JSON.stringify(o.recipe)), Dockerfile: hash(o.dockerfile), toolchain: o.toolchain }
  for (const [name, id] of Object.entries(o.baseImages)) hashes[`base image ${name}`] = id
  return { hashes, recipe: o.recipe }
}

/** `name version` of every package in a Cargo.lock. */
function lockedPackages(lock: string | null): Map<string, string> {
  const out = new Map<string, string>()
  for (const m of (lock ?? '').matchAll(/\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"/g)) out.set(`${m[1]}@${m[2]}`, m[1]!)
  return out
}

/** Lines of `now` not in `prev`, with the TOML table each sits in: `[dependencies.tokio] features = […]`. */
function changedLines(prev: string, now: string): string[] {
  const had = new Set(prev.split('\n').map((l) => l.trim()))
  let table = ''
  const out: string[] = []
  for (const raw of now.split('\n')) {
    const l = raw.trim()
    if (/^\[.*\]$/.test(l)) table = l
    if (l && !had.has(l)) out.push(/^\[/.test(l) ? l : `${table} ${l}`.trim())
  }
  for (const l of prev.split('\n').map((x) => x.trim())) if (l && !now.includes(l) && !out.length) out.push(`removed ${l}`)
  return out
}

/** What differs between two recipes, one short phrase per change. */
export function recipeChanges(prev: Recipe, now: Recipe): string[] {
  const out: string[] = []
  const before = new Map(prev.skeleton.manifests.map((m) => [m.relative_path, m.contents]))
  const after = new Map(now.skeleton.manifests.map((m) => [m.relative_path, m.contents]))
  for (const p of after.keys()) if (!before.has(p)) out.push(`new crate in the workspace: ${p}`)
  for (const p of before.keys()) if (!after.has(p)) out.push(`crate removed from the workspace: ${p}`)
  for (const [p, contents] of after) {
    const old = before.get(p)
    if (old !== undefined && old !== contents) out.push(`${p} changed: ${changedLines(old, contents).slice(0, 2).join('; ') || 'whitespace'}`)
  }
  if (prev.skeleton.lock_file !== now.skeleton.lock_file) {
    const a = lockedPackages(prev.skeleton.lock_file)
    const b = lockedPackages(now.skeleton.lock_file)
    const versionsOf = (m: Map<string, string>, name: string) => [...m].filter(([, n]) => n === name).map(([k]) => k.split('@')[1]).join(',')
    const names = [...new Set([...a.values(), ...b.values()])].sort()
    const diffs = names.filter((n) => versionsOf(a, n) !== versionsOf(b, n)).map((n) => `${n} ${versionsOf(a, n) || '(none)'} -> ${versionsOf(b, n) || '(none)'}`)
    out.push(`Cargo.lock changed: ${diffs.slice(0, 3).join(', ') || 'no version changed (sources or checksums)'}${diffs.length > 3 ? ` and ${diffs.length - 3} more` : ''}`)
  }
  if (JSON.stringify(prev.skeleton.config_file) !== JSON.stringify(now.skeleton.config_file)) out.push('.cargo/config.toml changed')
  if (JSON.stringify(prev.skeleton.rust_toolchain_file) !== JSON.stringify(now.skeleton.rust_toolchain_file)) out.push('rust-toolchain file changed')
  return out
}

/**
 * Why a cold build may differ from the recorded one (empty: it cannot), one
 * phrase per input: the recipe's own changes, then the Dockerfile, the
 * toolchain and each base image.
 */
export function coldChanges(prev: ColdInputs, now: ColdInputs): string[] {
  const out: string[] = []
  if (prev.hashes.recipe !== now.hashes.recipe) {
    const c = recipeChanges(prev.recipe, now.recipe)
    out.push(...(c.length > 0 ? c : ['the dependency recipe changed']))
  }
  for (const key of new Set([...Object.keys(prev.hashes), ...Object.keys(now.hashes)])) {
    if (key === 'recipe' || prev.hashes[key] === now.hashes[key]) continue
    out.push(key === 'toolchain' ? `toolchain ${prev.hashes[key] ?? '(none)'} -> ${now.hashes[key] ?? '(none)'}` : `${key} changed`)
  }
  return out
}

export function readColdRecord(path: string): ColdRecord | undefined {
  if (!existsSync(path)) return undefined
  try {
    const r = JSON.parse(readFileSync(path, 'utf8')) as ColdRecord
    if (typeof r.coldSeconds !== 'number' || !r.inputs?.hashes || !r.inputs.recipe) return undefined
    return r
  } catch {
    // A damaged record only costs one cold build, which rewrites it.
    return undefined
  }
}

/** Where the measure stage keeps its cold record, last inputs and history: outside the clone. */
export function measureStateFiles(cache: string): { cold: string; last: string; history: string } {
  const dir = join(cache, 'measure')
  return { cold: join(dir, 'cold.json'), last: join(dir, 'last-inputs.json'), history: join(dir, 'history.jsonl') }
}

/** Whether this run builds cold, and the one line that says why (or which figure it reuses). */
export function decideCold(record: ColdRecord | undefined, now: ColdInputs, forced: boolean): { cold: boolean; why: string } {
  if (forced) return { cold: true, why: 'cold build asked for (--cold)' }
  if (!record) return { cold: true, why: 'no cold build recorded on this machine yet' }
  const changes = coldChanges(record.inputs, now)
  if (changes.length > 0) return { cold: true, why: `cold build: ${changes.join('; ')}` }
  return { cold: false, why: `cold figure reused from ${record.commit.slice(0, 8)} on ${record.date.slice(0, 10)} (no recipe, Dockerfile, toolchain or base image change since)` }
}

/** One line on why the warm build's cook step ran, from the previous run's inputs. */
const NO_EARLIER_RUN = 'cook step not cached; no earlier run on this machine to compare its recipe with'

export function explainCookMiss(previous: ColdInputs | undefined, now: ColdInputs): string {
  if (!previous) return NO_EARLIER_RUN
  const changes = coldChanges(previous, now)
  if (changes.length > 0) return `cook step not cached because ${changes.join('; ')}`
  return 'cook step not cached though no recipe input changed since the last run: BuildKit evicted the layer, or cook and build differ in target, profile or RUSTFLAGS'
}

/** This workspace's cold inputs on this machine: what the cook step's cache key is made of. */
export async function currentColdInputs(docker: string, cacheDir: string, root: string): Promise<ColdInputs> {
  const chef = await ensureCargoTool(cacheDir, 'cargo-chef', VERSIONS.cargoChef)
  const baseImages = { chef: await imageId(docker, BASE_IMAGES.chef), runtime: await imageId(docker, BASE_IMAGES.runtime) }
  const toolchain = `rust ${VERSIONS.rust}, cargo-chef ${VERSIONS.cargoChef}, cargo-auditable ${VERSIONS.cargoAuditable}`
  return coldInputs({ recipe: await prepareRecipe(chef, root), dockerfile: readFileSync(join(root, 'Dockerfile.optimized'), 'utf8'), toolchain, baseImages })
}

/**
 * Why the build stage's cook step missed, against the inputs the last run on
 * this machine recorded in `file` (the measure stage records them every run);
 * this run's `current` inputs become the record. Without a record there is
 * nothing to compare, and `current` is not asked (it may have to install
 * cargo-chef, as on a fresh CI runner).
 */
export async function cookMissReason(file: string, current: () => Promise<ColdInputs>): Promise<string> {
  const previous = readInputs(file)
  if (!previous) return NO_EARLIER_RUN
  const now = await current()
  writeJson(file, now)
  return explainCookMiss(previous, now)
}

export function readInputs(path: string): ColdInputs | undefined {
  if (!existsSync(path)) return undefined
  try {
    const i = JSON.parse(readFileSync(path, 'utf8')) as ColdInputs
    return i.hashes && i.recipe ? i : undefined
  } catch {
    return undefined
  }
}
