import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parse as parseYaml } from 'yaml'
import { loadConfig } from '../lib/core/config.ts'
import { admissionPlan, attestorValues, controllerValues, describeController, policyName, writeAdmissionValues } from '../lib/deploy/admission.ts'
import { ENVIRONMENTS_FILE, LOCAL_ENVIRONMENT, parseEnvironments, type Environment } from '../lib/deploy/environments.ts'
import type { Verifier } from '../lib/sign/cosign.ts'
import { DEFAULT_SIGNERS, GITHUB_OIDC_ISSUER, verifiersFor } from '../lib/sign/signers.ts'
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

const SOURCE = 'https://github.com/acme/docs'
const env = (text: string, name: string) => ({ local: false, settings: parseEnvironments(text, 'e.yaml')[name]! })
const LOCAL = { local: true, settings: LOCAL_ENVIRONMENT }

t('the policy is on for every cluster but the local one, which DEPLOY_ADMISSION=enforce turns on', () => {
  const local = admissionPlan(loadConfig({}, {}), LOCAL, { imageSigners: [s.key], scanSigners: [] }, LOCAL_REPO)
  assert.is(local.enforce, false)
  assert.equal(local.values, { enabled: false })
  assert.match(local.off ?? '', /DEPLOY_ADMISSION=enforce/)

  const forced = admissionPlan(loadConfig({ DEPLOY_ADMISSION: 'enforce', DEPLOY_ENV: 'staging', SCAN_MAX_AGE: '12h' }, {}), LOCAL, { imageSigners: [s.key], scanSigners: [] }, LOCAL_REPO)
  assert.is(forced.enforce, true)
  assert.is(forced.install, false, 'the local cluster starts its own with cluster:up')
  assert.is(forced.policy, 'doc-server-staging-doc-server')
  assert.equal(forced.values, { enabled: true, environment: 'staging', signers: { keys: [PEM], identities: [] }, scanSigners: { keys: [], identities: [] }, verdictRepository: `${LOCAL_REPO}-scan-verdict`, scanMaxAgeSeconds: 43200, allowInsecureRegistry: true })

  const prod = loadConfig({ KUBE_CONTEXT: 'prod-eu', DEPLOY_ENV: 'prod' }, {})
  const yaml = 'prod:\n  contexts: [prod-eu]\n  admission: install\n  scan: { maxAge: 6h }\n  scanSigners: [{ workflow: .github/workflows/rescan.yml, refs: [refs/heads/main], events: [schedule, workflow_dispatch] }]\n'
  const e = env(yaml, 'prod')
  // Exactly the verifiers deploy builds from environments.yaml.
  const signers = { imageSigners: verifiersFor(e.settings.signers, { source: SOURCE }), scanSigners: verifiersFor(e.settings.scanSigners, { source: SOURCE }) }
  const keyless = admissionPlan(prod, e, signers, 'ghcr.io/acme/agent-docs')
  assert.is(keyless.install, true)
  assert.equal(keyless.values.signers, { keys: [], identities: [{ subject: `${SOURCE}/.github/workflows/ci.yml@refs/heads/main`, issuer: GITHUB_OIDC_ISSUER }] })
  assert.equal(keyless.values.scanSigners, { keys: [], identities: [{ subject: `${SOURCE}/.github/workflows/rescan.yml@refs/heads/main`, issuer: GITHUB_OIDC_ISSUER }] }, 'one identity for both triggers')
  assert.is(keyless.values.scanMaxAgeSeconds, 6 * 3600, 'the environment tightens SCAN_MAX_AGE, as for deploy')
  assert.is(keyless.values.allowInsecureRegistry, false)
  const off = admissionPlan(prod, env('prod:\n  contexts: [prod-eu]\n  admission: off\n', 'prod'), signers, 'ghcr.io/acme/agent-docs')
  assert.equal(off.values, { enabled: false })
  assert.match(off.off ?? '', /off for prod in environments\.yaml/)
})

t('signers as attestors: a key by its PEM, a workflow by its identity or the anchored expression of a ref pattern', () => {
  const vs: Verifier[] = [...verifiersFor([...DEFAULT_SIGNERS, { workflow: '.github/workflows/ci.yml', refs: ['refs/heads/feature/*'], events: ['push'] }, { key: 'sha256:' + 'a'.repeat(64) }], { source: SOURCE, machineKey: { ...(s.key as Extract<Verifier, { kind: 'key' }>), fingerprint: 'sha256:' + 'a'.repeat(64) } }), s.key]
  const a = attestorValues(vs)
  assert.equal(a.keys, [PEM], 'the same key once')
  assert.is(a.identities.length, 2)
  assert.equal(a.identities[0], { subject: `${SOURCE}/.github/workflows/ci.yml@refs/heads/main`, issuer: GITHUB_OIDC_ISSUER })
  const pattern = (a.identities[1] as { subjectRegExp: string }).subjectRegExp
  assert.ok(new RegExp(pattern).test(`${SOURCE}/.github/workflows/ci.yml@refs/heads/feature/x`))
  assert.not.ok(new RegExp(pattern).test(`${SOURCE}/.github/workflows/ci.yml@refs/heads/main`))
  assert.not.ok(new RegExp(pattern).test(`${SOURCE}/.github/workflows/ci.yml@refs/heads/feature/x@refs/pull/1/merge`))
})

t('the values reach Helm typed, from a file', () => {
  const file = writeAdmissionValues(join(s.dir, 'deploy'), admissionPlan(loadConfig({ DEPLOY_ADMISSION: 'enforce' }, {}), LOCAL, { imageSigners: [s.key], scanSigners: [] }, LOCAL_REPO).values)
  const v = parseYaml(readFileSync(file, 'utf8')) as { admission: { enabled: unknown; scanMaxAgeSeconds: unknown; signers: { keys: string[] } } }
  assert.is(v.admission.enabled, true)
  assert.is(v.admission.scanMaxAgeSeconds, 86400)
  assert.equal(v.admission.signers.keys, [PEM])
})

t('environments.yaml: admission is enforce unless an environment says install or off; anything else is refused', () => {
  const envs = parseEnvironments('dev:\n  contexts: []\nstaging:\n  contexts: []\n  admission: off\nprod:\n  contexts: [p]\n  admission: install\n', 'e.yaml')
  assert.equal([envs.dev!.admission, envs.staging!.admission, envs.prod!.admission], ['enforce', 'off', 'install'])
  assert.throws(() => parseEnvironments('qa:\n  contexts: []\n  admission: maybe\n', 'e.yaml'), /^deploy: e\.yaml: qa\.admission: /)
  const committed: Environment['admission'][] = Object.values(parseEnvironments(readFileSync(ENVIRONMENTS_FILE, 'utf8'), 'environments.yaml')).map((e) => e.admission)
  assert.ok(committed.length >= 3 && committed.every((a) => a === 'enforce'), 'every committed environment enforces')
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
