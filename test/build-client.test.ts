import { existsSync,mkdtempSync,rmSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { buildImage,checkBuildCacheSupport } from '../lib/build/docker.ts'
import { loginRefused } from '../lib/build/registry.ts'
import { buildFailure,parseBuildOutput } from '../lib/build/buildkit-log.ts'
import { PipelineError } from '../lib/core/errors.ts'

const t = suite('build client')
/** Debian's docker.io client: `docker build` is the classic builder, without buildx's flags. */
const DEBIAN_CLIENT = '/usr/bin/docker'

t('a build that fails before any step names docker\'s error line, not its usage hint', () => {
  const text = "unknown flag: --cache-to\nSee 'docker build --help'.\n"
  assert.is(buildFailure(parseBuildOutput(text), text).message, 'docker build failed: unknown flag: --cache-to')
  const usage = '"docker build" requires exactly 1 argument.\nSee \'docker build --help\'.\n\nUsage:  docker build [OPTIONS] PATH | URL | -\n\nBuild an image from a Dockerfile\n'
  assert.is(buildFailure(parseBuildOutput(usage), usage).message, 'docker build failed: "docker build" requires exactly 1 argument.')
})

t('the real Debian client refusing --cache-to fails with its own reason', async () => {
  if (!existsSync(DEBIAN_CLIENT)) return
  const dir = mkdtempSync(join(tmpdir(), 'build-client-'))
  try {
    writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\n')
    await buildImage({ docker: DEBIAN_CLIENT, context: dir, dockerfile: join(dir, 'Dockerfile'), cacheTo: 'type=inline', caBundle: false })
    assert.unreachable('the classic builder accepted --cache-to')
  } catch (err) {
    assert.instance(err, PipelineError)
    assert.is((err as Error).message, 'docker build failed: unknown flag: --cache-to')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

t('BuildKit cache settings with a client whose build is not buildx are refused in one line naming both', async () => {
  if (!existsSync(DEBIAN_CLIENT)) return
  await checkBuildCacheSupport(DEBIAN_CLIENT, {})
  const refused = async (cache: { from?: string; to?: string }) => {
    try {
      await checkBuildCacheSupport(DEBIAN_CLIENT, cache)
      return ''
    } catch (err) {
      assert.instance(err, PipelineError)
      return (err as Error).message
    }
  }
  const both = await refused({ from: 'type=gha,scope=x', to: 'type=gha,mode=max,scope=x' })
  assert.match(both, /^build: BUILD_CACHE_FROM and BUILD_CACHE_TO need a docker client whose build is buildx, but \/usr\/bin\/docker (\(20\.10[^)]*\) )?has no --cache-to or --load: set DOCKER to a client with buildx, or unset BUILD_CACHE_FROM and BUILD_CACHE_TO for a local build$/)
  assert.match(await refused({ from: 'type=gha,scope=x' }), /^build: BUILD_CACHE_FROM needs a docker client whose build is buildx, but \/usr\/bin\/docker .*has no --load:/)
})

t('a refused login is told apart from a local failure, so only the refusal skips the retries', () => {
  assert.ok(loginRefused('Error response from daemon: login attempt to https://127.0.0.1:5443/v2/ failed with status: 401 Unauthorized'))
  assert.ok(loginRefused('Error response from daemon: Get "https://ghcr.io/v2/": denied: denied'))
  assert.ok(loginRefused('Error response from daemon: Get "https://registry-1.docker.io/v2/": unauthorized: incorrect username or password'))
  assert.not.ok(loginRefused('Got permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock'))
  assert.not.ok(loginRefused('Error response from daemon: Get "https://ghcr.io/v2/": dial tcp: lookup ghcr.io: no such host'))
})

t.run()
