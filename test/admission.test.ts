import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parse as parseYaml } from 'yaml'
import { loadConfig } from '../lib/core/config.ts'
import { admissionPlan, controllerValues, describeController, environmentAdmission, policyName, writeAdmissionValues } from '../lib/deploy/admission.ts'
import { parseEnvironments } from '../lib/deploy/guard.ts'
import { workflowIdentity, type Verifier } from '../lib/sign/cosign.ts'
import { dockerAuth, verdictRepository } from '../lib/sign/verdict.ts'
import { airGappedChart } from '../lib/tools/kyverno.ts'

const t = suite('admission')
const s = {} as { dir: string; pub: string; key: Verifier }
const PEM = '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n'
const LOCAL_REPO = '127.0.0.1:5000/local/agent-docs'

t.before(() => {
  s.dir = mkdtempSync(join(tmpdir(), 'admission-unit-'))
  s.pub = join(s.dir, 'cosign.pub')
  writeFileSync(s.pub, PEM)
  s.key = { kind: 'key', pub: s.pub, fingerprint: 'sha256:x' }
})
t.after(() => rmSync(s.dir, { recursive: true, force: true }))

t('the upstream chart loses only the dependencies that live in remote chart repositories', () => {
  const chart = parseYaml(airGappedChart(['name: kyverno', 'dependencies:', '  - name: grafana', '    condition: grafana.enabled', '  - name: kyverno-api', '    repository: "https://kyverno.github.io/api"', '  - name: crds', ''].join('\n'))) as { name: string; dependencies: { name: string }[] }
  assert.is(chart.name, 'kyverno')
  assert.equal(chart.dependencies.map((d) => d.name), ['grafana', 'crds'])
})

t('the local cluster runs the stand-in images on the host network, its verification cache off; a real cluster keeps upstream images', () => {
  const local = controllerValues({ images: { kyverno: '127.0.0.1:5000/doc-server-ci/kyverno:v1.19.1@sha256:ab', kyvernopre: '127.0.0.1:5000/doc-server-ci/kyvernopre:v1.19.1@sha256:cd' }, apiServerPort: 16443 }) as { admissionController: Record<string, any>; global: { extraEnvVars: { name: string; value: string }[] } }
  // The local API server's certificate names loopback only: Kyverno, on the host network, reaches it there.
  assert.equal(local.global.extraEnvVars, [{ name: 'KUBERNETES_SERVICE_HOST', value: '127.0.0.1' }, { name: 'KUBERNETES_SERVICE_PORT', value: '16443' }])
  assert.equal(local.admissionController.container.image, { registry: '127.0.0.1:5000', repository: 'doc-server-ci/kyverno', tag: 'v1.19.1@sha256:ab' })
  assert.equal(local.admissionController.initContainer.image, { registry: '127.0.0.1:5000', repository: 'doc-server-ci/kyvernopre', tag: 'v1.19.1@sha256:cd' })
  assert.is(local.admissionController.hostNetwork, true)
  assert.is(local.admissionController.container.extraArgs.imageVerifyCacheEnabled, false)
  const real = controllerValues() as { admissionController: Record<string, any>; backgroundController: { enabled: boolean } }
  assert.is(real.admissionController.container.image, undefined)
  assert.is(real.admissionController.hostNetwork, undefined)
  assert.is(real.admissionController.container.extraArgs.imageVerifyCacheEnabled, false)
  assert.is(real.backgroundController.enabled, false)
})

t('the policy is on for every cluster but the local one, which DEPLOY_ADMISSION=enforce turns on', () => {
  const local = admissionPlan(loadConfig({}, {}), s.key, LOCAL_REPO, 'enforce')
  assert.is(local.enforce, false)
  assert.equal(local.values, { enabled: false })
  assert.match(local.off ?? '', /DEPLOY_ADMISSION=enforce/)

  const forced = admissionPlan(loadConfig({ DEPLOY_ADMISSION: 'enforce', DEPLOY_ENV: 'staging', SCAN_MAX_AGE: '12h' }, {}), s.key, LOCAL_REPO, 'enforce')
  assert.is(forced.enforce, true)
  assert.is(forced.install, false)
  assert.is(forced.policy, 'doc-server-staging-doc-server')
  assert.equal(forced.values, { enabled: true, environment: 'staging', signer: { key: PEM }, verdictRepository: `${LOCAL_REPO}-scan-verdict`, scanMaxAgeSeconds: 43200, allowInsecureRegistry: true })

  const prod = loadConfig({ KUBE_CONTEXT: 'prod-eu', DEPLOY_ENV: 'prod' }, {})
  // Exactly the identity deploy verifies with.
  const workflow = workflowIdentity('https://github.com', 'acme/docs') as Verifier & { kind: 'keyless' }
  const keyless = admissionPlan(prod, workflow, 'ghcr.io/acme/agent-docs', 'install')
  assert.is(keyless.install, true)
  assert.equal(keyless.values.signer, { keyless: { identityRegexp: workflow.identityRegexp, issuer: 'https://token.actions.githubusercontent.com' } })
  assert.is(keyless.values.allowInsecureRegistry, false)
  assert.match(admissionPlan(prod, s.key, 'ghcr.io/acme/agent-docs', 'off').off ?? '', /off for prod in environments\.yaml/)
})

t('the values reach Helm typed, from a file', () => {
  const file = writeAdmissionValues(join(s.dir, 'deploy'), admissionPlan(loadConfig({ DEPLOY_ADMISSION: 'enforce' }, {}), s.key, LOCAL_REPO, 'enforce').values)
  const v = parseYaml(readFileSync(file, 'utf8')) as { admission: { enabled: unknown; scanMaxAgeSeconds: unknown; signer: { key: string } } }
  assert.is(v.admission.enabled, true)
  assert.is(v.admission.scanMaxAgeSeconds, 86400)
  assert.is(v.admission.signer.key, PEM)
})

t('environments.yaml: admission is enforce unless an environment says install or off; anything else is refused', () => {
  const file = join(s.dir, 'environments.yaml')
  writeFileSync(file, 'dev:\n  contexts: []\nstaging:\n  contexts: []\n  admission: off\nprod:\n  contexts: [p]\n  admission: install\nqa:\n  contexts: []\n  admission: maybe\n')
  assert.is(environmentAdmission('dev', file), 'enforce')
  assert.is(environmentAdmission('staging', file), 'off')
  assert.is(environmentAdmission('prod', file), 'install')
  assert.throws(() => environmentAdmission('qa', file), /qa\.admission must be enforce, install or off, not "maybe"/)
  assert.equal(parseEnvironments(readFileSync(file, 'utf8'), file).prod, ['p'])
  for (const env of ['dev', 'staging', 'prod']) assert.is.not(environmentAdmission(env), undefined)
})

t('names: the policy as the chart makes it, the verdict repository beside the image, the controller and its state', () => {
  assert.is(policyName('doc-server-e2e-1234', 'doc-server'), 'doc-server-e2e-1234-doc-server')
  assert.is(policyName('n'.repeat(60), 'doc-server').length, 63)
  assert.is(verdictRepository('ghcr.io/acme/agent-docs'), 'ghcr.io/acme/agent-docs-scan-verdict')
  assert.is(describeController({ installed: true, version: 'v1.19.1', desired: 0, ready: 0, detail: 'scaled to 0' }), 'Kyverno v1.19.1 (kyverno/kyverno-admission-controller) has 0 of 0 pods ready (scaled to 0)')
  assert.match(describeController({ installed: false, version: undefined, desired: 0, ready: 0, detail: 'not installed' }), /^Kyverno is not installed/)
})

t('the verdict repository is written with the login cosign uses (the docker config)', () => {
  const dir = join(s.dir, 'docker')
  assert.is(dockerAuth('ghcr.io', { DOCKER_CONFIG: dir }), undefined)
  mkdirSync(dir)
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: { 'ghcr.io': { auth: 'dTp0' }, 'https://index.docker.io/v1/': { auth: 'x' } } }))
  assert.is(dockerAuth('ghcr.io', { DOCKER_CONFIG: dir }), 'dTp0')
  assert.is(dockerAuth('127.0.0.1:5443', { DOCKER_CONFIG: dir }), undefined)
})

t.run()
