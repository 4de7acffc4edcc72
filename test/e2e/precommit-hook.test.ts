/**
 * The real husky hook in a throwaway clone, driven by the commit forms that
 * make git export repository-locating variables (GIT_INDEX_FILE, GIT_DIR, …)
 * into the hook: `git commit -a`, `git commit <path>` and `git commit --amend`.
 * The hook runs the unit tests (PRECOMMIT_CHECKS keeps it to them), and those
 * run git in temporary repositories of their own: an inherited GIT_INDEX_FILE
 * would make them write into this clone's index and fail.
 */
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { copyEnv, copyRepo } from '../helpers/repo-copy.ts'

const t = suite('e2e: pre-commit hook')

t('git commit -a, git commit <path> and git commit --amend pass through the real hook', async () => {
  const copy = await copyRepo('precommit-hook-')
  // HUSKY unset so the hook runs; only the unit tests, which run git in repositories of their own.
  const env = copyEnv({ HUSKY: '', PRECOMMIT_CHECKS: 'unit-tests' })
  const git = (...args: string[]) => run(['git', ...args], { cwd: copy.dir, env, okCodes: ANY_EXIT })
  const ok = async (...args: string[]) => {
    const r = await git(...args)
    assert.is(r.exitCode, 0, `git ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`)
    return r
  }
  try {
    await ok('init', '-q', '-b', 'main')
    await ok('config', 'user.email', 'test@example.invalid')
    await ok('config', 'user.name', 'test')
    await ok('add', '-A')
    await ok('commit', '-q', '--no-verify', '-m', 'initial')
    const husky = await run(['node_modules/.bin/husky'], { cwd: copy.dir, env, okCodes: ANY_EXIT })
    assert.is(husky.exitCode, 0, husky.stderr)

    appendFileSync(join(copy.dir, 'README.md'), '\nOne more line.\n')
    const all = await ok('commit', '-a', '-m', 'commit -a')
    assert.match(all.stdout + all.stderr, /unit tests/, 'the hook ran the unit tests')
    assert.match(all.stdout + all.stderr, /rustfmt.*SKIPPED|SKIPPED.*rustfmt/i, 'says which checks PRECOMMIT_CHECKS left out')

    appendFileSync(join(copy.dir, 'README.md'), '\nAnd another.\n')
    appendFileSync(join(copy.dir, 'Cargo.toml'), '\n# left out of the next commit\n')
    await ok('commit', '-m', 'commit <path>', '--', 'README.md')
    const files = (await ok('show', '--name-only', '--format=', 'HEAD')).stdout.trim()
    assert.is(files, 'README.md', 'only the named path was committed')
    assert.match((await ok('status', '--porcelain')).stdout, /^ M Cargo\.toml$/m, 'the other change is still in the working tree')

    await ok('commit', '-q', '--amend', '-m', 'commit <path>, amended')
    assert.is((await ok('log', '-1', '--format=%s')).stdout.trim(), 'commit <path>, amended')
    assert.is((await ok('rev-list', '--count', 'HEAD')).stdout.trim(), '3')
    // The clone's index is whole: its tree can be written and fsck finds nothing wrong.
    await ok('write-tree')
    await ok('fsck', '--no-progress')
  } finally {
    copy.remove()
  }
})

t.run()
