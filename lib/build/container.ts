import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { dockerEnv } from './docker.ts'
import { waitFor } from '../core/wait.ts'

export interface RunningContainer {
  id: string
  /** The host port the container's 8080 is published on (loopback only). */
  hostPort: number
}

/** Starts a container detached, publishing `containerPort` on a free loopback port. */
export async function startContainer(docker: string, image: string, opts: { name?: string; containerPort?: number; env?: Record<string, string> } = {}): Promise<RunningContainer> {
  const port = opts.containerPort ?? 8080
  const argv = [docker, 'run', '-d', '-p', `127.0.0.1::${port}`]
  if (opts.name) argv.push('--name', opts.name)
  for (const [k, v] of Object.entries(opts.env ?? {})) argv.push('-e', `${k}=${v}`)
  argv.push(image)
  const id = (await run(argv, { env: dockerEnv() })).stdout.trim()
  const mapped = (await run([docker, 'port', id, `${port}/tcp`], { env: dockerEnv() })).stdout.trim().split('\n')[0] ?? ''
  const hostPort = Number(mapped.split(':').pop())
  if (!Number.isInteger(hostPort) || hostPort <= 0) throw new PipelineError(`docker: container ${id.slice(0, 12)} has no published port for ${port}`)
  return { id, hostPort }
}

async function containerLogs(docker: string, id: string): Promise<string> {
  const r = await run([docker, 'logs', '--tail', '30', id], { env: dockerEnv(), okCodes: [1] }).catch(() => undefined)
  return r ? `${r.stdout}${r.stderr}` : ''
}

/**
 * Waits until the container's own HEALTHCHECK reports healthy (Docker runs it
 * inside the container); an exited or unhealthy container is an error with its log.
 */
export async function waitHealthy(docker: string, id: string, timeoutMs = 120_000): Promise<number> {
  const started = performance.now()
  let last = 'unknown'
  return waitFor(
    async () => {
      const r = await run([docker, 'inspect', '--format', '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}', id], { env: dockerEnv() })
      const [state, health] = r.stdout.trim().split(' ')
      last = `${state}/${health}`
      if (health === 'healthy') return (performance.now() - started) / 1000
      if (health === 'none') throw new PipelineError(`docker: container ${id.slice(0, 12)} has no HEALTHCHECK`)
      if (state !== 'running' || health === 'unhealthy') {
        throw new PipelineError(`docker: container ${id.slice(0, 12)} became ${last} instead of healthy`, await containerLogs(docker, id))
      }
      return undefined
    },
    { timeoutMs, intervalMs: 500, onTimeout: async () => new PipelineError(`docker: container ${id.slice(0, 12)} was not healthy within ${timeoutMs / 1000} s (last: ${last})`, await containerLogs(docker, id)) },
  )
}

export async function removeContainer(docker: string, id: string): Promise<void> {
  await run([docker, 'rm', '-f', id], { env: dockerEnv(), okCodes: [1] })
}
