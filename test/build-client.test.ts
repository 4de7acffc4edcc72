import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loginRefused } from '../lib/build/registry.ts'
import { buildFailure,parseBuildOutput } from '../lib/build/buildkit-log.ts'

const t = suite('build client')

t('a build that fails before any step names docker\'s error line, not its usage hint', () => {
  const text = "unknown flag: --cache-to\nSee 'docker build --help'.\n"
  assert.is(buildFailure(parseBuildOutput(text), text).message, 'docker build failed: unknown flag: --cache-to')
  const usage = '"docker build" requires exactly 1 argument.\nSee \'docker build --help\'.\n\nUsage:  docker build [OPTIONS] PATH | URL | -\n\nBuild an image from a Dockerfile\n'
  assert.is(buildFailure(parseBuildOutput(usage), usage).message, 'docker build failed: "docker build" requires exactly 1 argument.')
})

t('a refused login is told apart from a local failure, so only the refusal skips the retries', () => {
  assert.ok(loginRefused('Error response from daemon: login attempt to https://127.0.0.1:5443/v2/ failed with status: 401 Unauthorized'))
  assert.ok(loginRefused('Error response from daemon: Get "https://ghcr.io/v2/": denied: denied'))
  assert.ok(loginRefused('Error response from daemon: Get "https://registry-1.docker.io/v2/": unauthorized: incorrect username or password'))
  assert.not.ok(loginRefused('Got permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock'))
  assert.not.ok(loginRefused('Error response from daemon: Get "https://ghcr.io/v2/": dial tcp: lookup ghcr.io: no such host'))
})

t.run()
