import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { CONTEXT_ENTRIES } from '../lib/build/docker.ts'
import { gitFacts } from '../lib/core/git.ts'
import { run } from '../lib/core/run.ts'

const t = suite('git')

/** A real repository with a committed crate, as the build sees the workspace. */
async function repo(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'git-facts-'))
  const git = (...args: string[]) => run(['git', '-c', 'user.name=t', '-c', 'user.email=t@example.invalid', ...args], { cwd: dir })
  await git('init', '-q', '-b', 'main')
  mkdirSync(join(dir, 'crates', 'doc-server', 'src'), { recursive: true })
  writeFileSync(join(dir, 'crates', 'doc-server', 'src', 'main.rs'), 'fn main() {}\n')
  writeFileSync(join(dir, 'Cargo.toml'), '[workspace]\n')
  writeFileSync(join(dir, '.gitignore'), '/target/\n')
  await git('add', '.')
  await git('commit', '-q', '-m', 'init')
  return dir
}

const env = {} as NodeJS.ProcessEnv

t('an untracked file among what the build copies makes the tree dirty; one elsewhere or ignored does not', async () => {
  const dir = await repo()
  try {
    assert.is((await gitFacts(dir, env, CONTEXT_ENTRIES)).dirty, false, 'a clean checkout')
    writeFileSync(join(dir, 'notes.txt'), 'not part of the build\n')
    mkdirSync(join(dir, 'target'), { recursive: true })
    writeFileSync(join(dir, 'target', 'out.bin'), 'ignored\n')
    assert.is((await gitFacts(dir, env, CONTEXT_ENTRIES)).dirty, false, 'outside the build context, or ignored')
    writeFileSync(join(dir, 'crates', 'doc-server', 'build.rs'), 'fn main() { /* runs in the build */ }\n')
    assert.is((await gitFacts(dir, env, CONTEXT_ENTRIES)).dirty, true, 'an untracked build.rs enters the build')
    assert.is((await gitFacts(dir, env)).dirty, false, 'without build inputs named, only tracked changes count')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

t('a changed tracked file anywhere makes it dirty', async () => {
  const dir = await repo()
  try {
    writeFileSync(join(dir, '.gitignore'), '/target/\n/reports/\n')
    assert.is((await gitFacts(dir, env, CONTEXT_ENTRIES)).dirty, true)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

t.run()
