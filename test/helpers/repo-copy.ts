import { cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { mkdirSync } from 'node:fs'
import { childEnv, run } from '../../lib/core/run.ts'
import { cacheDir, repoRoot } from '../../lib/core/paths.ts'

/**
 * A throwaway copy of the working tree (tracked and untracked-but-not-ignored
 * files), with node_modules linked in. Tests break things there, never here.
 */
export async function copyRepo(prefix = 'repo-copy-'): Promise<{ dir: string; remove: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const files = (await run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], { cwd: repoRoot })).stdout
    .split('\0')
    .filter(Boolean)
    // A copy's own node_modules is a symlink (linked below), which git lists as a file.
    .filter((f) => f !== 'node_modules' && !f.startsWith('node_modules/'))
  for (const f of files) {
    mkdirSync(dirname(join(dir, f)), { recursive: true })
    try {
      // Fresh timestamps: cargo then rebuilds the workspace crates of every copy
      // instead of trusting artifacts another copy left in the shared target dir.
      cpSync(join(repoRoot, f), join(dir, f))
    } catch {
      // A file deleted in the working tree but still tracked: nothing to copy.
    }
  }
  symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'))
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * The environment for running the pipeline inside a copy. Copies share one
 * target directory of their own, outside the clone, so dependencies compile
 * once per machine. Never the real repository's: cargo records the crate's
 * files by relative path and mtime, so a copy's artifacts (built from the
 * copy's broken source) would look fresh to the real tree and be reused there.
 * Git's repository-locating variables (set when the tests run inside a git
 * hook) are dropped: they name the outer repository, never the copy.
 */
export function copyEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...childEnv(process.env), CARGO_TARGET_DIR: join(cacheDir(), 'test-copies', 'target'), FORCE_COLOR: '0', ...extra }
}
