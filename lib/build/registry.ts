import { mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { retry, run } from '../core/run.ts'
import { tmpdir } from 'node:os'
import { dockerEnv } from './docker.ts'
import { say } from '../core/output.ts'

/** The last line of a failed docker command that says why (the daemon's own words). */
function why(err: unknown): string {
  const details = err instanceof PipelineError ? err.details : undefined
  const lines = (details ?? (err instanceof Error ? err.message : String(err)))
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
  // docker prints progress on stdout and the reason on stderr; the details hold both.
  const reason = [...lines].reverse().find((l) => /error|refused|denied|unauthorized|failed|timeout|no such host|unreachable|EOF/i.test(l))
  return reason ?? lines.at(-1) ?? 'unknown error'
}

/** What a registry answers when it refuses a user name and token (distribution: 401 Unauthorized, GHCR: `denied: denied`, Docker Hub: `unauthorized: incorrect username or password`); a local `permission denied` is not one. */
const REFUSED = /unauthorized|authentication required|incorrect username or password|\bdenied: |\b401\b/i

/** Whether a failed login's reason is the registry refusing the credentials (not worth a retry). */
export function loginRefused(reason: string): boolean {
  return REFUSED.test(reason)
}

/**
 * A registry login that lasts only as long as the stage needs it: the
 * credentials go to a throwaway DOCKER_CONFIG (a fresh 0700 directory), never
 * to ~/.docker/config.json, and `end()` (or the process's exit) removes it.
 * Pass `env` to every docker call that must be logged in (push, pull).
 */
export interface RegistryLogin {
  registry: string
  env: NodeJS.ProcessEnv
  end: () => void
}

export async function registryLogin(docker: string, registry: string, user: string, token: string): Promise<RegistryLogin> {
  const dir = mkdtempSync(join(tmpdir(), 'docker-config-'))
  const end = () => rmSync(dir, { recursive: true, force: true })
  process.once('exit', end)
  const env = { DOCKER_CONFIG: dir }
  const login = () =>
    run([docker, 'login', registry, '--username', user, '--password-stdin'], {
      env: dockerEnv(env),
      input: token,
      secrets: [token],
      timeoutMs: 60_000,
    })
  // A refusal is an answer, not a network hiccup: asking again cannot change it.
  const refused = (err: unknown) => loginRefused(why(err))
  try {
    await retry(3, 2000, login, refused)
  } catch (err) {
    end()
    if (refused(err))
      throw new PipelineError(
        `registry: ${registry} refused the credentials of ${user} (REGISTRY_USER/REGISTRY_TOKEN): check the token and that it may push there`,
      )
    throw new PipelineError(`registry: login to ${registry} as ${user} failed: ${why(err)}`)
  }
  return { registry, env, end }
}

/** The digest `docker push` prints last: it exists only once the manifest (the tag) is written. */
export function parsePushDigest(output: string): { digest: string; size: number } | undefined {
  const m = /digest: (sha256:[a-f0-9]{64}) size: (\d+)/.exec(output)
  return m ? { digest: m[1]!, size: Number(m[2]) } : undefined
}

/**
 * Pushes with bounded retries. docker uploads every layer before it writes the
 * manifest, so a tag never names a half-pushed image: a failed attempt leaves
 * at most unreferenced blobs, which the next attempt reuses.
 */
export async function pushImage(
  docker: string,
  ref: string,
  opts: { attempts?: number; backoffMs?: number; secrets?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<{ digest: string; size: number; attempts: number }> {
  const attempts = opts.attempts ?? 3
  let used = 0
  try {
    return await retry(attempts, opts.backoffMs ?? 3000, async (attempt) => {
      used = attempt
      if (attempt > 1) say(`push attempt ${attempt} of ${attempts}`)
      const r = await run([docker, 'push', ref], { env: dockerEnv(opts.env), timeoutMs: 15 * 60_000, secrets: opts.secrets ?? [] })
      const d = parsePushDigest(r.stdout + r.stderr)
      if (!d) throw new PipelineError(`push: docker push ${ref} printed no digest`)
      return { ...d, attempts: attempt }
    })
  } catch (err) {
    throw new PipelineError(
      `push: ${ref} failed after ${used} attempt${used === 1 ? '' : 's'}: ${why(err)}`,
      err instanceof PipelineError ? err.details : undefined,
    )
  }
}

export async function pullImage(docker: string, ref: string, env?: NodeJS.ProcessEnv): Promise<void> {
  await retry(3, 3000, () => run([docker, 'pull', ref], { env: dockerEnv(env), timeoutMs: 10 * 60_000 })).catch((err) => {
    throw new PipelineError(`pull: ${ref} failed: ${why(err)}`, err instanceof PipelineError ? err.details : undefined)
  })
}

export async function removeImage(docker: string, ref: string): Promise<void> {
  await run([docker, 'image', 'rm', ref], { env: dockerEnv(), okCodes: [1] })
}

export async function tagImage(docker: string, source: string, target: string): Promise<void> {
  await run([docker, 'tag', source, target], { env: dockerEnv() })
}

/** Uncompressed size of a local image, as `docker image inspect` reports it. */
export async function imageBytes(docker: string, ref: string): Promise<number> {
  const r = await run([docker, 'image', 'inspect', '--format', '{{.Size}}', ref], { env: dockerEnv() })
  return Number(r.stdout.trim())
}

/**
 * Size as pushed: the registry's manifest (config and compressed layers),
 * which is what a node downloads. Plain HTTP is allowed for loopback registries only.
 */
export async function pushedBytes(docker: string, pinned: string, env?: NodeJS.ProcessEnv): Promise<number> {
  const insecure = /^(127\.0\.0\.1|localhost)(:\d+)?\//.test(pinned) ? ['--insecure'] : []
  const r = await retry(3, 2000, () =>
    run([docker, 'manifest', 'inspect', ...insecure, pinned], { env: dockerEnv(env), timeoutMs: 60_000 }),
  )
  const manifest = JSON.parse(r.stdout) as { config?: { size: number }; layers?: { size: number }[] }
  if (!manifest.layers) throw new PipelineError(`manifest: ${pinned} is a list, not one image manifest`)
  return (manifest.config?.size ?? 0) + manifest.layers.reduce((sum, l) => sum + l.size, 0)
}
