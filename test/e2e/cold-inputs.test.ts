/**
 * When the measure stage may reuse the last cold figure, and what a cook miss
 * is blamed on, decided from recipes the pinned cargo-chef makes of real
 * copies of this workspace (no Docker needed).
 */
import { appendFileSync,existsSync,mkdirSync,readFileSync,rmSync,writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { coldChanges,coldInputs,cookMissReason,prepareRecipe,readInputs,recipeChanges,type Recipe } from '../../lib/build/cold-inputs.ts'
import { writeJson } from '../../lib/core/json.ts'
import { copyBuildContext } from '../../lib/build/docker.ts'
import { CODE_CHANGE_FILE } from '../../lib/build/cold-warm.ts'
import { cacheDir,repoRoot } from '../../lib/core/paths.ts'
import { VERSIONS } from '../../lib/tools/versions.ts'
import { ensureCargoTool } from '../../lib/tools/cargo.ts'
import { setUp } from '../helpers/hooks.ts'

const t = suite('cold-inputs')
const s = {} as { chef: string; copy: string; base: Recipe }
const inputs = (recipe: Recipe, over: { dockerfile?: string; toolchain?: string; base?: string } = {}) =>
  coldInputs({ recipe, dockerfile: over.dockerfile ?? 'FROM x', toolchain: over.toolchain ?? `rust ${VERSIONS.rust}`, baseImages: { chef: over.base ?? 'sha256:1' } })

setUp(t, 'cold-inputs', async () => {
  s.chef = await ensureCargoTool(cacheDir(process.env), 'cargo-chef', VERSIONS.cargoChef)
  s.copy = copyBuildContext(repoRoot, 'cold-inputs-')
  s.base = await prepareRecipe(s.chef, s.copy)
})
t.after(() => {
  if (s.copy) rmSync(s.copy, { recursive: true, force: true })
})

t('a code-only change keeps every cold input: the last cold figure is reused', async () => {
  appendFileSync(join(s.copy, CODE_CHANGE_FILE), '\n// a code-only change\n')
  const now = await prepareRecipe(s.chef, s.copy)
  assert.equal(coldChanges(inputs(s.base), inputs(now)), [])
})

t('a Cargo.lock change calls for a cold build and names the crate and versions', async () => {
  const lockPath = join(s.copy, 'Cargo.lock')
  const lock = readFileSync(lockPath, 'utf8')
  const m = /\[\[package\]\]\nname = "itoa"\nversion = "([^"]+)"/.exec(lock)
  assert.ok(m, 'Cargo.lock has itoa')
  writeFileSync(lockPath, lock.replace(m![0], m![0].replace(m![1]!, '1.0.99')))
  try {
    const changes = coldChanges(inputs(s.base), inputs(await prepareRecipe(s.chef, s.copy)))
    assert.equal(changes, [`Cargo.lock changed: itoa ${m![1]} -> 1.0.99`])
  } finally {
    writeFileSync(lockPath, lock)
  }
})

t('a cook miss names a feature change, a new workspace crate, the toolchain, the Dockerfile and a base image', async () => {
  const manifest = join(s.copy, 'crates/doc-server/Cargo.toml')
  const text = readFileSync(manifest, 'utf8')
  writeFileSync(manifest, text.replace('"signal", "sync", "time"]', '"signal", "sync", "time", "fs"]'))
  const root = join(s.copy, 'Cargo.toml')
  const rootText = readFileSync(root, 'utf8')
  writeFileSync(root, rootText.replace('members = ["crates/doc-server"]', 'members = ["crates/doc-server", "crates/extra"]'))
  mkdirSync(join(s.copy, 'crates/extra/src'), { recursive: true })
  writeFileSync(join(s.copy, 'crates/extra/Cargo.toml'), '[package]\nname = "extra"\nversion = "0.1.0"\nedition = "2024"\n')
  writeFileSync(join(s.copy, 'crates/extra/src/lib.rs'), '')
  try {
    const now = await prepareRecipe(s.chef, s.copy)
    const changes = recipeChanges(s.base, now)
    assert.ok(changes.includes('new crate in the workspace: crates/extra/Cargo.toml'), changes.join(' | '))
    assert.ok(changes.some((c) => /^crates\/doc-server\/Cargo\.toml changed: \[dependencies\.tokio\] features = \[.*"fs"\]/.test(c)), changes.join(' | '))
    const other = coldChanges(inputs(s.base), inputs(s.base, { dockerfile: 'FROM y', toolchain: 'rust 1.96.0', base: 'sha256:2' }))
    assert.equal(other, ['Dockerfile changed', `toolchain rust ${VERSIONS.rust} -> rust 1.96.0`, 'base image chef changed'])
  } finally {
    writeFileSync(manifest, text)
    writeFileSync(root, rootText)
    rmSync(join(s.copy, 'crates/extra'), { recursive: true, force: true })
  }
})

t('the build stage names a cook miss against the last run\'s record, and its own inputs become the record', async () => {
  const file = join(s.copy, '.measure', 'last-inputs.json')
  let asked = 0
  const current = async () => (asked++, inputs(await prepareRecipe(s.chef, s.copy)))
  assert.is(await cookMissReason(file, current), 'cook step not cached; no earlier run on this machine to compare its recipe with')
  assert.is(asked, 0, 'without a record, cargo-chef is not even asked')
  assert.not.ok(existsSync(file))

  writeJson(file, inputs(s.base))
  const manifest = join(s.copy, 'crates/doc-server/Cargo.toml')
  const text = readFileSync(manifest, 'utf8')
  writeFileSync(manifest, text.replace('"signal", "sync", "time"]', '"signal", "sync", "time", "fs"]'))
  try {
    assert.match(await cookMissReason(file, current), /^cook step not cached because crates\/doc-server\/Cargo\.toml changed: \[dependencies\.tokio\] features = \[.*"fs"\]/)
    assert.ok(readInputs(file)!.recipe.skeleton.manifests.some((m) => m.contents.includes('"fs"')), 'this run is now the record')
    assert.match(await cookMissReason(file, current), /no recipe input changed since the last run: BuildKit evicted the layer/)
  } finally {
    writeFileSync(manifest, text)
    rmSync(join(s.copy, '.measure'), { recursive: true, force: true })
  }
})

t.run()
