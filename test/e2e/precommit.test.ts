/**
 * The lint-test stage against real cargo, rustfmt, clippy and git: a change
 * that breaks one check fails the stage naming that check, and the husky hook
 * refuses to commit it. Each case runs on a throwaway copy of the repository.
 */
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { copyEnv, copyRepo } from '../helpers/repo-copy.ts'

const t = suite('e2e: lint-test')
const LIB = join('crates', 'doc-server', 'src', 'lib.rs')
const ALL_OK = { okCodes: ANY_EXIT }

async function precommit(dir: string) {
  return run(['node_modules/.bin/tsx', 'tasks/precommit.ts'], { cwd: dir, env: copyEnv(), ...ALL_OK })
}

t('a misformatted Rust file fails the stage, naming rustfmt', async () => {
  const copy = await copyRepo('precommit-fmt-')
  try {
    // Valid, lint-clean Rust that rustfmt would lay out differently.
    appendFileSync(join(copy.dir, LIB), '\n#[allow(dead_code)]\nconst   BADLY_FORMATTED :u8=1;\n')
    const r = await precommit(copy.dir)
    const out = r.stdout + r.stderr
    assert.is.not(r.exitCode, 0)
    assert.match(out, /lint-test failed: rustfmt\b/)
    assert.not.match(out, /lint-test failed: .*clippy/)
    assert.match(out, /BADLY_FORMATTED/, "shows rustfmt's own diff")
  } finally {
    copy.remove()
  }
})

t('a clippy pedantic warning fails the stage, and the hook refuses the commit', async () => {
  const copy = await copyRepo('precommit-clippy-')
  try {
    // Compiles and is formatted, but a pedantic lint (a truncating cast) fires.
    appendFileSync(join(copy.dir, LIB), '\n#[must_use]\npub fn truncates(x: u64) -> u32 {\n    x as u32\n}\n')
    const r = await precommit(copy.dir)
    const out = r.stdout + r.stderr
    assert.is.not(r.exitCode, 0)
    assert.match(out, /lint-test failed: clippy\b/)
    assert.match(out, /cast_possible_truncation|as u32/, "shows clippy's own error")

    const git = (...args: string[]) => run(['git', ...args], { cwd: copy.dir, env: copyEnv({ HUSKY: '' }), ...ALL_OK })
    await git('init', '-q', '-b', 'main')
    await git('config', 'user.email', 'test@example.invalid')
    await git('config', 'user.name', 'test')
    const husky = await run(['node_modules/.bin/husky'], { cwd: copy.dir, env: copyEnv(), ...ALL_OK })
    assert.is(husky.exitCode, 0, husky.stderr)
    await git('add', '-A')
    const commit = await git('commit', '-q', '-m', 'adds a pedantic warning')
    assert.is.not(commit.exitCode, 0, 'the hook must block the commit')
    assert.match(commit.stdout + commit.stderr, /lint-test failed: clippy/)
    const log = await git('rev-parse', '--verify', '-q', 'HEAD')
    assert.is.not(log.exitCode, 0, 'no commit was created')
  } finally {
    copy.remove()
  }
})

t.run()
