import { cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { mkdirSync } from 'node:fs'
import { run } from '../../lib/run.ts'
import { repoRoot } from '../../lib/paths.ts'

/**
 * A throwaway copy of the working tree (tracked and untracked-but-not-ignored
 * files), with node_modules linked in. Tests break things there, never here.
 */
export async function copyRepo(prefix = 'repo-copy-'): Promise<{ dir: string; remove: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const files = (await run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], { cwd: repoRoot })).stdout.split('\0').filter(Boolean)
  for (const f of files) {
    mkdirSync(dirname(join(dir, f)), { recursive: true })
    try {
      cpSync(join(repoRoot, f), join(dir, f), { preserveTimestamps: true })
    } catch {
      // A file deleted in the working tree but still tracked: nothing to copy.
    }
  }
  symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'))
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/**
 * The environment for running the pipeline inside a copy: dependencies compiled
 * once for the real repo are reused through the shared target directory.
 */
export function copyEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, CARGO_TARGET_DIR: process.env.CARGO_TARGET_DIR ?? join(repoRoot, 'target'), FORCE_COLOR: '0', ...extra }
}
