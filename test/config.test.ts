import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { VARIABLES, loadConfig, precommitChecks, readDotenv, shouldPush } from '../lib/core/config.ts'
import { repoRoot } from '../lib/core/paths.ts'

const t = suite('config')

t('embedded defaults work with no configuration at all', () => {
  const c = loadConfig({}, {})
  assert.is(c.registry, '127.0.0.1:5000')
  assert.is(c.imageOwner, 'local')
  assert.is(c.imageName, 'agent-docs')
  assert.is(c.deployEnv, 'dev')
  assert.is(c.deployNamespace, 'doc-server-dev')
  assert.is(c.trivyDbSource, 'local')
  assert.is(c.scanSeverities, undefined, 'the committed policy (.scan-policy.yaml) decides')
  assert.is(c.github, false)
  assert.is(c.buildCacheFrom, undefined)
})

t('the BuildKit cache settings pass through as given', () => {
  const c = loadConfig({ BUILD_CACHE_FROM: 'type=gha,scope=x', BUILD_CACHE_TO: 'type=gha,mode=max,scope=x' }, {})
  assert.is(c.buildCacheFrom, 'type=gha,scope=x')
  assert.is(c.buildCacheTo, 'type=gha,mode=max,scope=x')
})

t('GitHub Actions context fills in registry, owner, tag and credentials', () => {
  const c = loadConfig({ GITHUB_ACTIONS: 'true', GITHUB_REPOSITORY_OWNER: 'Doc-Team', GITHUB_SHA: 'f'.repeat(40), GITHUB_TOKEN: 'ghs_secret', GITHUB_ACTOR: 'bot', GITHUB_EVENT_NAME: 'push' }, {})
  assert.is(c.registry, 'ghcr.io')
  assert.is(c.imageOwner, 'doc-team')
  assert.is(c.imageTag, 'f'.repeat(40))
  assert.is(c.registryToken, 'ghs_secret')
  assert.is(c.trivyDbSource, 'remote')
})

t('PRECOMMIT_CHECKS narrows lint-test to the checks it names; unset, all run', () => {
  assert.equal(loadConfig({}, {}).precommitChecks, ['rustfmt', 'clippy', 'cargo-test', 'tsc', 'unit-tests', 'shellcheck'])
  assert.equal(loadConfig({ PRECOMMIT_CHECKS: ' tsc, unit-tests ' }, {}).precommitChecks, ['tsc', 'unit-tests'])
  assert.equal(precommitChecks({ DEPLOY_ENV: 'qa' }, { PRECOMMIT_CHECKS: 'tsc' }), ['tsc'], 'the hook reads only its own variable, .env included')
})

t('bad values give one line naming the variable', () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ PUSH: 'maybe' }, /^config: PUSH="maybe" is not valid: expected one of auto, true, false/],
    [{ DEPLOY_ENV: 'qa' }, /DEPLOY_ENV="qa"/],
    [{ DEPLOY_TIMEOUT_SECS: 'abc' }, /DEPLOY_TIMEOUT_SECS="abc"/],
    [{ SCAN_SEVERITIES: 'HIGH,SEVERE' }, /SCAN_SEVERITIES="SEVERE"/],
    [{ SCAN_IGNORE_UNFIXED: 'perhaps' }, /SCAN_IGNORE_UNFIXED/],
    [{ REGISTRY: 'http://x' }, /REGISTRY/],
    [{ IMAGE_NAME: 'Agent Docs' }, /IMAGE_NAME/],
    [{ RELEASE_NAME: 'Doc_Server' }, /RELEASE_NAME/],
    [{ PRECOMMIT_CHECKS: 'tsc,lint' }, /^config: PRECOMMIT_CHECKS="lint" is not valid: expected one of rustfmt, clippy/],
  ]
  for (const [env, re] of cases) {
    try {
      loadConfig(env, {})
      assert.unreachable(`accepted ${JSON.stringify(env)}`)
    } catch (err) {
      const msg = (err as Error).message
      assert.match(msg, re)
      assert.not.match(msg, /\n/)
    }
  }
})

t('the environment wins over .env, and .env typos are refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'))
  const file = join(dir, '.env')
  writeFileSync(file, 'IMAGE_NAME=from-dotenv\nDEPLOY_ENV=staging\n')
  const dotenv = readDotenv(file)
  const c = loadConfig({ DEPLOY_ENV: 'prod' }, dotenv)
  assert.is(c.imageName, 'from-dotenv')
  assert.is(c.deployEnv, 'prod')
  writeFileSync(file, 'IMAGE_NAMES=typo\n')
  assert.throws(() => readDotenv(file), /unknown variable IMAGE_NAMES/)
})

t('pull requests never push, whatever PUSH says', () => {
  const pr = loadConfig({ GITHUB_ACTIONS: 'true', GITHUB_EVENT_NAME: 'pull_request', PUSH: 'true' }, {})
  assert.is(shouldPush(pr, 'main'), false)
  const push = loadConfig({ GITHUB_ACTIONS: 'true', GITHUB_EVENT_NAME: 'push' }, {})
  assert.is(shouldPush(push, 'main'), true)
  assert.is(shouldPush(push, 'feature/x'), true)
  assert.is(shouldPush(push, 'experiment'), false)
  assert.is(shouldPush(loadConfig({}, {}), undefined), true)
  assert.is(shouldPush(loadConfig({ PUSH: 'false' }, {}), 'main'), false)
})

t('the README documents every variable', () => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
  for (const v of VARIABLES) assert.ok(readme.includes(`| \`${v.name}\``), `README lacks ${v.name}`)
})

t.run()
