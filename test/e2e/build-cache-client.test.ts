/**
 * The build stage with the workflow's BuildKit cache settings and the docker
 * client the machine builds with. Debian's 20.10 client, whose `docker build`
 * is the classic builder, is refused in one line naming the variables and the
 * client, before anything is built; a client with buildx is let through.
 * Which of the two this machine has is read from the client itself, and each
 * case asserts its own outcome.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { buildFlags, buildImage, checkBuildCacheSupport, dockerClient } from '../../lib/build/docker.ts'
import { PipelineError } from '../../lib/core/errors.ts'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { requireTool } from '../../lib/tools/which.ts'
import { copyEnv } from '../helpers/repo-copy.ts'

const t = suite('e2e: build cache and client')

/** The client a bare `docker` resolves to (bootstrap installs Debian's on Debian), and whether its build is buildx. */
async function client(): Promise<{ docker: string; buildx: boolean }> {
  const docker = requireTool(dockerClient('docker'))
  const flags = await buildFlags(docker)
  return { docker, buildx: flags.has('--cache-to') && flags.has('--load') }
}

const refusal = async (docker: string, cache: { from?: string; to?: string }) =>
  checkBuildCacheSupport(docker, cache).then(
    () => '',
    (err: unknown) => {
      assert.instance(err, PipelineError)
      return (err as Error).message
    },
  )

t('BuildKit cache settings: refused in one line naming both for a classic client, accepted by buildx', async () => {
  const { docker, buildx } = await client()
  assert.is(await refusal(docker, {}), '', 'no cache settings: nothing to refuse')
  const both = await refusal(docker, { from: 'type=gha,scope=x', to: 'type=gha,mode=max,scope=x' })
  if (buildx) {
    assert.is(both, '', `${docker} has buildx: the cache settings pass`)
    return
  }
  assert.match(both, /^build: BUILD_CACHE_FROM and BUILD_CACHE_TO need a docker client whose build is buildx, but \S+ (\(20\.10[^)]*\) )?has no --cache-to or --load: set DOCKER to a client with buildx, or unset BUILD_CACHE_FROM and BUILD_CACHE_TO for a local build$/)
  assert.match(await refusal(docker, { from: 'type=gha,scope=x' }), /^build: BUILD_CACHE_FROM needs a docker client whose build is buildx, but \S+ .*has no --load:/)
})

t('a classic client refusing --cache-to fails with its own reason, not its usage hint', async () => {
  const { docker, buildx } = await client()
  const dir = mkdtempSync(join(tmpdir(), 'build-client-'))
  try {
    writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\n')
    const err = await buildImage({ docker, context: dir, dockerfile: join(dir, 'Dockerfile'), cacheTo: 'type=inline', caBundle: false }).then(() => undefined, (e: unknown) => e)
    if (buildx) {
      // A FROM scratch image with nothing in it is refused by some engines; either way --cache-to was understood.
      assert.not.match(String((err as Error | undefined)?.message ?? ''), /unknown flag/)
      return
    }
    assert.instance(err, PipelineError)
    assert.is((err as Error).message, 'docker build failed: unknown flag: --cache-to')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

t('BUILD_CACHE_FROM/BUILD_CACHE_TO with a classic docker build: the build stage refuses up front in one line', async () => {
  const { docker, buildx } = await client()
  if (buildx) {
    // The stage-level refusal exists for classic clients only; the client-level case above covers buildx.
    assert.is(await refusal(docker, { from: 'type=gha,scope=x', to: 'type=gha,mode=max,scope=x' }), '')
    return
  }
  const reports = mkdtempSync(join(tmpdir(), 'build-reports-'))
  const root = new URL('../..', import.meta.url).pathname
  try {
    const r = await run(['node_modules/.bin/tsx', 'tasks/build.ts'], {
      cwd: root,
      env: copyEnv({ REPORTS_DIR: reports, PUSH: 'false', DOCKER: docker, BUILD_CACHE_FROM: 'type=gha,scope=doc-server-image', BUILD_CACHE_TO: 'type=gha,mode=max,scope=doc-server-image' }),
      timeoutMs: 10 * 60_000,
      okCodes: ANY_EXIT,
    })
    const out = r.stdout + r.stderr
    assert.is.not(r.exitCode, 0)
    const last = out.trim().split('\n').at(-1) ?? ''
    assert.match(last, /^✖ build: BUILD_CACHE_FROM and BUILD_CACHE_TO need a docker client whose build is buildx, but \S+ (\(20\.10[^)]*\) )?has no --cache-to or --load: /)
    assert.not.match(out, /See 'docker build --help'/, 'never docker\'s usage hint')
    assert.not.match(out, /Base images:|Built in/, 'refused before base images and the build')
  } finally {
    rmSync(reports, { recursive: true, force: true })
  }
})

t.run()
