/**
 * What the static image costs or saves against the dynamically linked one on
 * distroless cc: sizes, the packages its SBOM lists, start-to-ready time and
 * the server's throughput and p99 under the same bounded loopback load.
 */
import { mkdtempSync,readFileSync,rmSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runOha, type LoadFigures } from './oha.ts'
import { PipelineError } from '../../lib/core/errors.ts'
import { BASE_IMAGES } from '../../lib/tools/versions.ts'
import { trivyIgnoreYaml,today } from '../../lib/scan/scan-policy.ts'
import { scanImage } from '../../lib/scan/trivy.ts'
import { removeContainer,startContainer } from '../../lib/build/container.ts'
import { waitFor } from '../../lib/core/wait.ts'

/** The two ways the bench builds Dockerfile.optimized: the build arguments are the whole difference. */
export const RUNTIMES = [
  { key: 'cc', label: 'dynamic glibc on distroless cc', buildArgs: { RUNTIME_IMAGE: BASE_IMAGES.runtimeCc, TARGET_FEATURES: '-crt-static' } },
  { key: 'static', label: 'static glibc on distroless static', buildArgs: { RUNTIME_IMAGE: BASE_IMAGES.runtime, TARGET_FEATURES: '+crt-static' } },
] as const

/** The same bounded load for both images: a fixed number of requests over a few keep-alive connections. */
export const LOAD = { requests: 20_000, connections: 16, path: '/api/docs/getting-started' } as const


export interface SbomCounts {
  osPackages: string[]
  crates: string[]
}

const ready = (port: number) => fetch(`http://127.0.0.1:${port}/health/ready`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false)

/** Milliseconds from `docker run` to the first 200 from /health/ready, polled from the host. */
export async function startToReady(docker: string, image: string): Promise<number> {
  const t0 = performance.now()
  const c = await startContainer(docker, image)
  try {
    return await waitFor(
      async () => ((await ready(c.hostPort)) ? performance.now() - t0 : undefined),
      { timeoutMs: 30_000, intervalMs: 10, onTimeout: () => new PipelineError(`bench: ${image} never became ready`) },
    )
  } finally {
    await removeContainer(docker, c.id)
  }
}

/** OS packages (pkg:deb) and crates (pkg:cargo) a CycloneDX SBOM lists, by name. */
export function sbomCounts(cdxText: string, source: string): SbomCounts {
  let cdx: { components?: { name?: string; purl?: string }[] }
  try {
    cdx = JSON.parse(cdxText)
  } catch {
    throw new PipelineError(`bench: ${source} is not JSON`)
  }
  const names = (prefix: string) => [...new Set((cdx.components ?? []).filter((c) => c.purl?.startsWith(prefix)).map((c) => c.name ?? '?'))].sort()
  return { osPackages: names('pkg:deb/'), crates: names('pkg:cargo/') }
}

/** The SBOM the scan stage would write for `pinned`, made with the same script and the local DB. */
export async function sbomOf(pinned: string, trivy: string, trivyCache: string): Promise<SbomCounts> {
  const out = mkdtempSync(join(tmpdir(), 'doc-server-sbom-'))
  try {
    const ignoreFile = join(out, 'trivyignore.yaml')
    writeFileSync(ignoreFile, trivyIgnoreYaml([], today()))
    await scanImage({ trivy, image: pinned, out, imageSrc: 'remote', trivyCache, offline: true, ignoreFile })
    return sbomCounts(readFileSync(join(out, 'sbom.cdx.json'), 'utf8'), `${pinned} sbom.cdx.json`)
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
}

/** A bounded run of oha against a container published on loopback (the only address load may go to). */
export async function loadRun(oha: string, docker: string, image: string): Promise<LoadFigures> {
  const c = await startContainer(docker, image)
  try {
    const url = `http://127.0.0.1:${c.hostPort}`
    await waitFor(async () => (await ready(c.hostPort)) || undefined, { timeoutMs: 10_000, intervalMs: 20, onTimeout: () => new PipelineError(`bench: ${image} never became ready`) })
    const figures = await runOha(oha, `${url}${LOAD.path}`, { requests: LOAD.requests, concurrency: LOAD.connections })
    if (figures.ok !== LOAD.requests) throw new PipelineError(`bench: ${image} answered ${figures.ok} of ${LOAD.requests} requests with 200`)
    return figures
  } finally {
    await removeContainer(docker, c.id)
  }
}
