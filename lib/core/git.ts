import { run } from './run.ts'
import { PipelineError } from './errors.ts'
import { repoRoot } from './paths.ts'

export interface GitFacts {
  sha: string
  shortSha: string
  branch: string | undefined
  dirty: boolean
}

/**
 * The commit being shipped. In GitHub Actions the checkout is a detached head,
 * so the platform's variables name the branch; locally git does. The tree is
 * dirty when a tracked file changed, or when a file git does not track (and
 * does not ignore) sits under `untrackedIn`: the paths that enter the build,
 * where an untracked build.rs would run in the build.
 */
export async function gitFacts(cwd = repoRoot, env: NodeJS.ProcessEnv = process.env, untrackedIn: readonly string[] = []): Promise<GitFacts> {
  const git = (...args: string[]) => run(['git', ...args], { cwd }).then((r) => r.stdout.trim())
  let sha: string
  try {
    sha = env.GITHUB_SHA || (await git('rev-parse', 'HEAD'))
  } catch {
    throw new PipelineError(`git: ${cwd} has no commit yet; commit first so the image can be traced to one`)
  }
  if (!/^[0-9a-f]{40}$/.test(sha)) throw new PipelineError(`git: "${sha}" is not a full commit sha`)
  const branch = env.GITHUB_HEAD_REF || env.GITHUB_REF_NAME || (await git('rev-parse', '--abbrev-ref', 'HEAD').catch(() => ''))
  const changed = (await git('status', '--porcelain', '--untracked-files=no')) !== ''
  const untracked = untrackedIn.length > 0 && (await git('status', '--porcelain', '--untracked-files=all', '--', ...untrackedIn)).split('\n').some((l) => l.startsWith('??'))
  const dirty = changed || untracked
  return { sha, shortSha: sha.slice(0, 12), branch: branch && branch !== 'HEAD' ? branch : undefined, dirty }
}
