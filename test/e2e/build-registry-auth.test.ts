/**
 * The login path against a registry that wants one the way GHCR does: Debian's
 * docker-registry with htpasswd (bcrypt) behind TLS, its CA trusted by the
 * engine (test/helpers/auth-registry.ts). The right token pushes; a wrong one
 * stops the stage in one line before anything is built or sent; the token
 * shows up in no output, report, file or process environment.
 */
import { randomBytes } from 'node:crypto'
import { existsSync,mkdtempSync,readFileSync,rmSync } from 'node:fs'
import { homedir,tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../../lib/core/config.ts'
import { removeImage } from '../../lib/build/registry.ts'
import { cacheDir } from '../../lib/core/paths.ts'
import { AUTH_REGISTRY,ensureAuthRegistry,tlsStatus } from '../helpers/auth-registry.ts'
import { ensureBaseImages } from '../../lib/sandbox/base-images.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { ANY_EXIT,run } from '../../lib/core/run.ts'
import { readReport } from '../../lib/core/reports.ts'
import { copyEnv } from '../helpers/repo-copy.ts'
import { leaksOf,processesHolding } from '../helpers/secrets.ts'
import { setUp } from '../helpers/hooks.ts'

const t = suite('e2e: registry login')
const TAG = `e2e-auth-${process.pid}`
const USER = 'ci-test'
const TOKEN = `tok-${randomBytes(12).toString('hex')}`
const WRONG = `tok-${randomBytes(12).toString('hex')}`
const MANIFEST_TYPES = 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json'
let docker = ''
let ca = ''
const since = Date.now() - 1000

async function buildStage(reports: string, env: NodeJS.ProcessEnv) {
  const root = new URL('../..', import.meta.url).pathname
  const r = await run(['node_modules/.bin/tsx', 'tasks/build.ts'], {
    cwd: root,
    env: copyEnv({ REPORTS_DIR: reports, IMAGE_TAG: TAG, PUSH: 'true', REGISTRY: AUTH_REGISTRY, REGISTRY_USER: USER, ...env }),
    timeoutMs: 60 * 60_000,
    okCodes: ANY_EXIT,
  })
  return { ...r, out: r.stdout + r.stderr }
}

setUp(t, 'e2e: registry login', async () => {
  const config = loadConfig()
  docker = (await ensureDockerEngine(config.docker)).docker
  await ensureBaseImages(docker, config.cacheDir)
  const registry = await ensureAuthRegistry(USER, TOKEN)
  ca = readFileSync(registry.caCert, 'utf8')
})

t('the registry wants a login over TLS, with a CA the engine trusts', async () => {
  assert.ok(existsSync(`/etc/docker/certs.d/${AUTH_REGISTRY}/ca.crt`))
  assert.is(await tlsStatus(AUTH_REGISTRY, ca), 401, 'anonymous')
  assert.is(await tlsStatus(AUTH_REGISTRY, ca, { user: USER, token: WRONG }), 401, 'a wrong token')
  assert.is(await tlsStatus(AUTH_REGISTRY, ca, { user: USER, token: TOKEN }), 200, 'the right token')
  const htpasswd = readFileSync(join(cacheDir(), 'state', 'registry-auth', 'htpasswd'), 'utf8')
  assert.match(htpasswd, new RegExp(`^${USER}:\\$2y\\$`), 'bcrypt, never the token itself')
})

t('with the right token the stage logs in, pushes and pulls back by digest', async () => {
  const reports = mkdtempSync(join(tmpdir(), 'build-reports-'))
  try {
    const r = await buildStage(reports, { REGISTRY_TOKEN: TOKEN })
    assert.is(r.exitCode, 0, `build stage failed:\n${r.out.split('\n').slice(-30).join('\n')}`)
    assert.match(r.out, new RegExp(`Registry login: ${USER} at 127\\.0\\.0\\.1:5443`))
    const report = readReport(reports, 'build')
    assert.is(report.image.ref, `${AUTH_REGISTRY}/local/agent-docs:${TAG}`)
    assert.match(report.image.digest ?? '', /^sha256:[a-f0-9]{64}$/)
    const path = `/v2/local/agent-docs/manifests/${report.image.digest}`
    assert.is(await tlsStatus(AUTH_REGISTRY, ca, { user: USER, token: TOKEN }, path, { Accept: MANIFEST_TYPES }), 200, 'the registry serves the pushed manifest')
    assert.is(await tlsStatus(AUTH_REGISTRY, ca, undefined, path, { Accept: MANIFEST_TYPES }), 401, 'and only to a logged-in client')

    assert.not.ok(r.out.includes(TOKEN), 'the token is in the output')
    assert.not.ok(readFileSync(join(reports, 'build.json'), 'utf8').includes(TOKEN), 'the token is in the report')
    assert.equal(processesHolding(TOKEN), [], 'processes with the token in their environment')
    assert.equal(await leaksOf(TOKEN, USER, [homedir(), cacheDir(), reports, tmpdir()], since), [], 'files holding the token')
  } finally {
    await removeImage(docker, `${AUTH_REGISTRY}/local/agent-docs:${TAG}`)
    rmSync(reports, { recursive: true, force: true })
  }
})

t('a wrong token stops the stage in one line naming the registry, before anything is built or sent', async () => {
  const reports = mkdtempSync(join(tmpdir(), 'build-reports-'))
  try {
    const started = performance.now()
    const r = await buildStage(reports, { REGISTRY_TOKEN: WRONG, IMAGE_NAME: 'agent-docs-refused' })
    const seconds = (performance.now() - started) / 1000
    assert.is.not(r.exitCode, 0)
    const last = r.out.trim().split('\n').at(-1) ?? ''
    assert.match(last, /^✖ registry: 127\.0\.0\.1:5443 refused the credentials of ci-test \(REGISTRY_USER\/REGISTRY_TOKEN\)/)
    assert.not.match(r.out, /Built in|Pushed|Build Dockerfile\.optimized/, 'nothing was built or pushed')
    assert.ok(seconds < 60, `a refusal is not retried (${seconds.toFixed(1)} s)`)
    const tags = await tlsStatus(AUTH_REGISTRY, ca, { user: USER, token: TOKEN }, '/v2/local/agent-docs-refused/tags/list')
    assert.is(tags, 404, 'the registry never heard of the repository: no layer was sent')
    assert.not.ok(r.out.includes(WRONG), 'the token is in the output')
    assert.equal(await leaksOf(WRONG, USER, [homedir(), cacheDir(), reports, tmpdir()], since), [], 'files holding the token')
  } finally {
    rmSync(reports, { recursive: true, force: true })
  }
})

t.run()
