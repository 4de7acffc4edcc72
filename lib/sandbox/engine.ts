import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { ensureDebianPackages } from '../tools/apt.ts'
import { PipelineError } from '../core/errors.ts'
import { lastWords } from '../core/run.ts'
import { stateDir } from '../core/paths.ts'
import { findTool } from '../tools/which.ts'
import { startDetached } from './service.ts'
import { DEBIAN_CLIENT, dockerClient, engineAnswers } from '../build/docker.ts'
import { say } from '../core/output.ts'

export interface EngineStatus {
  docker: string
  /** True when this call started dockerd. */
  started: boolean
  pid?: number
  log?: string
}

/**
 * A Docker engine that answers. One that already runs is used as it is; on a
 * Debian machine as root, Debian's docker.io is installed when missing and
 * dockerd started in the background (log and pidfile under the state dir),
 * since CI machines start with no engine. Elsewhere one line says what to do.
 */
export async function ensureDockerEngine(configured: string, env: NodeJS.ProcessEnv = process.env): Promise<EngineStatus> {
  let docker = dockerClient(configured)
  if (findTool(docker) && (await engineAnswers(docker))) return { docker, started: false }
  const root = process.getuid?.() === 0
  if (!root || !findTool('apt-get')) {
    throw new PipelineError(
      'docker: no Docker engine answers `docker info`: install Docker Engine (Debian: apt-get install docker.io), start it, or set DOCKER to a client that reaches one',
    )
  }
  await ensureDebianPackages([
    { pkg: 'docker.io', provides: '/usr/sbin/dockerd' },
    { pkg: 'docker.io', provides: DEBIAN_CLIENT },
  ])
  docker = dockerClient(configured)
  if (await engineAnswers(docker)) return { docker, started: false }

  const dir = join(stateDir(env), 'docker')
  mkdirSync(dir, { recursive: true })
  const log = join(dir, 'dockerd.log')
  const pidfile = join(dir, 'dockerd.pid')
  say(`starting dockerd (log: ${log})`)
  const started = await startDetached({
    binary: '/usr/sbin/dockerd',
    args: ['--pidfile', pidfile],
    log,
    ready: () => engineAnswers(docker),
    timeoutMs: 60_000,
    pollMs: 1000,
  })
  if (started.ok) return { docker, started: true, ...(started.pid ? { pid: started.pid } : {}), log }
  const why = started.exited !== null ? `exited ${started.exited}` : 'did not answer within 60 s and was stopped'
  throw new PipelineError(`docker: dockerd ${why}: ${lastWords(started.logTail ?? '')} (log: ${log})`, started.logTail)
}
