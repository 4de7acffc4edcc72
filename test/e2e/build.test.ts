/**
 * The build stage against the real Docker engine, BuildKit and the local
 * registry: build, push, pull by digest, run until the image's own
 * HEALTHCHECK says healthy; a compile error named by step and message; a
 * registry that is down. Builds reuse the BuildKit cache: the cold build
 * belongs to `npm run ci:measure`, not to every test run.
 */
import { appendFileSync,mkdtempSync,readFileSync,rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../../lib/core/config.ts'
import { removeContainer,startContainer,waitHealthy } from '../../lib/build/container.ts'
import { pushImage,removeImage,tagImage } from '../../lib/build/registry.ts'
import { PipelineError } from '../../lib/core/errors.ts'
import { ensureBaseImages } from '../../lib/sandbox/base-images.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { dockerEnv } from '../../lib/build/docker.ts'
import { ensureRegistry,registryAnswers,stopRegistry } from '../../lib/sandbox/registry.ts'
import { ANY_EXIT,run } from '../../lib/core/run.ts'
import { BASE_IMAGES } from '../../lib/tools/versions.ts'
import { readReport } from '../../lib/core/reports.ts'
import { unusedPort } from '../helpers/net.ts'
import { copyEnv,copyRepo } from '../helpers/repo-copy.ts'
import { setUp } from '../helpers/hooks.ts'

const t = suite('e2e: build')
const ALL_OK = { okCodes: ANY_EXIT }
const TAG = `e2e-${process.pid}`
let docker = ''

async function buildStage(cwd: string, env: NodeJS.ProcessEnv) {
  return run(['node_modules/.bin/tsx', 'tasks/build.ts'], { cwd, env: copyEnv(env), timeoutMs: 60 * 60_000, ...ALL_OK })
}

setUp(t, 'e2e: build', async () => {
  const config = loadConfig()
  docker = (await ensureDockerEngine(config.docker)).docker
  await ensureBaseImages(docker, config.cacheDir)
})

t('build, push, pull by digest and run until healthy through the local registry', async () => {
  const reports = mkdtempSync(join(tmpdir(), 'build-reports-'))
  const root = new URL('../..', import.meta.url).pathname
  let container: string | undefined
  try {
    const r = await buildStage(root, { REPORTS_DIR: reports, IMAGE_TAG: TAG, PUSH: 'true', REGISTRY: '127.0.0.1:5000' })
    assert.is(r.exitCode, 0, `build stage failed:\n${(r.stdout + r.stderr).split('\n').slice(-30).join('\n')}`)
    const report = readReport(reports, 'build')
    assert.is(report.image.ref, `127.0.0.1:5000/local/agent-docs:${TAG}`)
    assert.match(report.image.digest ?? '', /^sha256:[a-f0-9]{64}$/)
    assert.is(report.pushed, true)
    assert.match(report.commit.sha, /^[0-9a-f]{40}$/)
    assert.ok((report.healthySeconds ?? 0) > 0, 'the stage waited for healthy')
    // Signed by digest with the machine's key, with SLSA provenance for this commit beside it.
    assert.match(report.signature?.identity ?? '', /^key sha256:[0-9a-f]{64}$/)
    const provenance = JSON.parse(readFileSync(join(reports, 'build', 'provenance.json'), 'utf8')) as { buildDefinition: { resolvedDependencies: { digest: { gitCommit?: string } }[]; internalParameters: { dirty: boolean } } }
    assert.is(provenance.buildDefinition.resolvedDependencies[0]!.digest.gitCommit, report.commit.sha)
    assert.is(provenance.buildDefinition.internalParameters.dirty, report.commit.dirty)

    // The registry itself serves the manifest under that digest.
    const manifest = await fetch(`http://127.0.0.1:5000/v2/local/agent-docs/manifests/${report.image.digest}`, {
      headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
    })
    assert.is(manifest.status, 200)

    const inspect = JSON.parse((await run([docker, 'image', 'inspect', report.image.pinned!], { env: dockerEnv() })).stdout)[0]
    assert.is(inspect.Config.User, '65532:65532')
    assert.equal(inspect.Config.Healthcheck.Test, ['CMD', '/usr/local/bin/doc-server', '--health-check'])
    assert.is(inspect.Config.StopSignal, 'SIGTERM')
    assert.ok('8080/tcp' in inspect.Config.ExposedPorts)
    assert.is(inspect.Config.Labels['org.opencontainers.image.revision'], report.commit.sha)
    assert.ok(inspect.Size < 100 * 1000 * 1000, `image is ${inspect.Size} bytes`)

    const started = await startContainer(docker, report.image.pinned!)
    container = started.id
    await waitHealthy(docker, started.id)
    const res = await fetch(`http://127.0.0.1:${started.hostPort}/api/docs`)
    assert.is(res.status, 200)
    const body = (await res.json()) as unknown
    assert.ok(JSON.stringify(body).includes('getting-started'), 'the sample docs are served')

    // distroless: no shell to run anything else with.
    const shell = await run([docker, 'run', '--rm', '--entrypoint', '/bin/sh', report.image.pinned!, '-c', 'true'], { env: dockerEnv(), ...ALL_OK })
    assert.is.not(shell.exitCode, 0)
  } finally {
    if (container) await removeContainer(docker, container)
    await removeImage(docker, `127.0.0.1:5000/local/agent-docs:${TAG}`)
    rmSync(reports, { recursive: true, force: true })
  }
})

t('a compile error fails the stage naming the Dockerfile step and the compiler error', async () => {
  const copy = await copyRepo('build-broken-')
  const reports = mkdtempSync(join(tmpdir(), 'build-reports-'))
  try {
    const git = (...a: string[]) => run(['git', ...a], { cwd: copy.dir, env: copyEnv({ HUSKY: '0' }) })
    await git('init', '-q', '-b', 'main')
    await git('-c', 'user.email=test@example.invalid', '-c', 'user.name=test', 'commit', '-q', '--allow-empty', '-m', 'base')
    appendFileSync(join(copy.dir, 'crates', 'doc-server', 'src', 'main.rs'), '\nfn broken_by_the_test( {\n')
    const r = await buildStage(copy.dir, { REPORTS_DIR: reports, PUSH: 'false' })
    const out = r.stdout + r.stderr
    assert.is.not(r.exitCode, 0)
    const last = out.trim().split('\n').at(-1) ?? ''
    assert.match(last, /docker build failed at \[build \d+\/\d+\] RUN cargo auditable build/)
    assert.match(last, /error(\[E\d+\])?: /, 'the compiler\'s own error line')
    assert.match(out, /src\/main\.rs/, 'the error block points at the file')
  } finally {
    copy.remove()
    rmSync(reports, { recursive: true, force: true })
  }
})

t('a registry that is down fails after bounded retries with one clear line', async () => {
  const port = await unusedPort()
  const ref = `127.0.0.1:${port}/local/agent-docs:${TAG}-down`
  await tagImage(docker, BASE_IMAGES.runtime, ref)
  try {
    await pushImage(docker, ref, { attempts: 2, backoffMs: 100 })
    assert.unreachable('push to a registry that is down succeeded')
  } catch (err) {
    assert.instance(err, PipelineError)
    const msg = (err as Error).message
    assert.match(msg, new RegExp(`^push: 127\\.0\\.0\\.1:${port}/local/agent-docs:${TAG}-down failed after 2 attempts: `))
    assert.match(msg, /connection refused/)
    assert.not.match(msg, /\n/)
  } finally {
    await removeImage(docker, ref)
  }
})

t('a local registry starts from nothing, serves /v2/ and stops, its data outside the clone', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'registry-state-'))
  const addr = `127.0.0.1:${await unusedPort()}`
  const env = { ...process.env, DOC_SERVER_CACHE_DIR: cache }
  try {
    assert.is(await registryAnswers(addr), false)
    const status = await ensureRegistry(addr, env)
    assert.ok(status.running)
    assert.ok(status.pid, 'started by us, so stoppable by us')
    assert.ok(status.dataDir.startsWith(cache))
    const res = await fetch(`http://${addr}/v2/`)
    assert.is(res.status, 200)
    assert.is((await ensureRegistry(addr, env)).pid, status.pid, 'a running registry is reused, not restarted')
    assert.is(await stopRegistry(env), true)
    assert.is(await registryAnswers(addr), false)
  } finally {
    await stopRegistry(env)
    rmSync(cache, { recursive: true, force: true })
  }
})

t.run()
