/**
 * Registry credentials never outlive the run that was given them: the local
 * services (dockerd, the registry, the cluster) start with only the variables
 * they need, and a login lives in a throwaway docker config. Checked where a
 * leaked token would be read: /proc/<pid>/environ of every process, and every
 * file under the home and cache directories the run wrote.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../../lib/core/config.ts'
import { removeImage } from '../../lib/build/registry.ts'
import { cacheDir } from '../../lib/core/paths.ts'
import { ensureBaseImages } from '../../lib/sandbox/base-images.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { ensureRegistry, stopRegistry } from '../../lib/sandbox/registry.ts'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { copyEnv } from '../helpers/repo-copy.ts'
import { unusedPort } from '../helpers/net.ts'
import { leaksOf, processesHolding } from '../helpers/secrets.ts'
import { setUp } from '../helpers/hooks.ts'

const t = suite('e2e: build credentials')
const TAG = `e2e-creds-${process.pid}`
let docker = ''

setUp(t, 'e2e: build credentials', async () => {
  const config = loadConfig()
  docker = (await ensureDockerEngine(config.docker)).docker
  await ensureBaseImages(docker, config.cacheDir)
})

t("a local service starts with only the variables it needs, never the run's token", async () => {
  const cache = mkdtempSync(join(tmpdir(), 'service-env-'))
  const token = `tok-${randomBytes(12).toString('hex')}`
  const saved = process.env.REGISTRY_TOKEN
  process.env.REGISTRY_TOKEN = token
  const env = { ...process.env, DOC_SERVER_CACHE_DIR: cache }
  try {
    const status = await ensureRegistry(`127.0.0.1:${await unusedPort()}`, env)
    assert.ok(status.pid, 'started by this test')
    const environ = readFileSync(`/proc/${status.pid}/environ`, 'utf8').split('\0').filter(Boolean)
    const names = environ.map((e) => e.split('=')[0])
    assert.ok(names.includes('PATH'))
    assert.not.ok(names.includes('REGISTRY_TOKEN'), `the registry was given ${names.join(' ')}`)
    assert.not.ok(environ.join('\n').includes(token))
  } finally {
    if (saved === undefined) delete process.env.REGISTRY_TOKEN
    else process.env.REGISTRY_TOKEN = saved
    await stopRegistry(env)
    rmSync(cache, { recursive: true, force: true })
  }
})

t('after a build stage run that logged in and pushed, no process and no file under home or cache holds the token', async () => {
  const reports = mkdtempSync(join(tmpdir(), 'build-reports-'))
  const root = new URL('../..', import.meta.url).pathname
  const user = 'ci-test'
  const token = `tok-${randomBytes(12).toString('hex')}`
  const since = Date.now() - 1000
  try {
    const r = await run(['node_modules/.bin/tsx', 'tasks/build.ts'], {
      cwd: root,
      env: copyEnv({
        REPORTS_DIR: reports,
        IMAGE_TAG: TAG,
        PUSH: 'true',
        REGISTRY: '127.0.0.1:5000',
        REGISTRY_USER: user,
        REGISTRY_TOKEN: token,
      }),
      timeoutMs: 60 * 60_000,
      okCodes: ANY_EXIT,
    })
    const out = r.stdout + r.stderr
    assert.is(r.exitCode, 0, `build stage failed:\n${out.split('\n').slice(-30).join('\n')}`)
    assert.match(out, /Registry login: ci-test at 127\.0\.0\.1:5000/, 'the stage logged in')
    assert.not.ok(out.includes(token), 'the token is in the output')
    assert.equal(processesHolding(token), [], 'processes with the token in their environment')
    const dirs = [homedir(), cacheDir(), reports, tmpdir()]
    assert.equal(await leaksOf(token, user, dirs, since), [], 'files holding the token')
    const configs = readdirSync(tmpdir()).filter((f) => f.startsWith('docker-config-') && statSync(join(tmpdir(), f)).mtimeMs >= since)
    assert.equal(configs, [], 'the throwaway docker config is gone')
  } finally {
    await removeImage(docker, `127.0.0.1:5000/local/agent-docs:${TAG}`)
    rmSync(reports, { recursive: true, force: true })
  }
})

t.run()
