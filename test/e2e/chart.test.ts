/**
 * charts/doc-server with the real, pinned Helm (built once from the Go module
 * proxy): `helm lint --strict` is clean for every environment, the rendered
 * manifests carry the promised safety settings, and bad values are refused
 * at template time with one clear line. No cluster is needed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parseAllDocuments } from 'yaml'
import { ensureHelm } from '../../lib/tools/kube.ts'
import { loadConfig } from '../../lib/core/config.ts'
import { CHART_DIR, valueFiles } from '../../lib/deploy/deploy.ts'
import { renderChart } from '../../lib/deploy/helm.ts'
import { run } from '../../lib/core/run.ts'
import { setUp } from '../helpers/hooks.ts'
import { LINT_ADMISSION } from '../../tasks/lint-chart.ts'

const t = suite('e2e: chart')
const s = {} as { helm: string; dir: string }
const DIGEST = `sha256:${'c3'.repeat(32)}`
const REPO = '127.0.0.1:5000/local/agent-docs'
const release = { name: 'doc-server', namespace: 'doc-server-test' }

type Manifest = { kind: string; metadata: { name: string }; spec: any; automountServiceAccountToken?: boolean }

async function render(env: string, sets: Record<string, string> = { 'image.repository': REPO, 'image.digest': DIGEST }, extra?: string): Promise<Manifest[]> {
  const out = await renderChart(s.helm, release, CHART_DIR, valueFiles(env, extra), { ...LINT_ADMISSION, ...sets })
  return parseAllDocuments(out).map((d) => d.toJS() as Manifest).filter(Boolean)
}
const kind = (ms: Manifest[], k: string) => ms.find((m) => m.kind === k)

function valuesFile(name: string, body: string): string {
  const file = join(s.dir, name)
  writeFileSync(file, body)
  return file
}

async function refused(body: string, re: RegExp) {
  try {
    await render('dev', { 'image.repository': REPO }, valuesFile(`bad-${Math.random().toString(36).slice(2)}.yaml`, body))
    assert.unreachable(`accepted:\n${body}`)
  } catch (err) {
    const msg = (err as Error).message
    assert.match(msg, /^chart: values refused: /)
    assert.match(msg, re)
    assert.not.match(msg, /\n/)
  }
}

setUp(t, 'e2e: chart', async () => {
  s.helm = await ensureHelm(loadConfig().cacheDir)
  s.dir = mkdtempSync(join(tmpdir(), 'chart-'))
})
t.after(() => {
  if (s.dir) rmSync(s.dir, { recursive: true, force: true })
})

t('helm lint --strict is clean for every environment', async () => {
  for (const env of ['dev', 'staging', 'prod']) {
    const sets = Object.entries({ 'image.digest': DIGEST, ...LINT_ADMISSION }).flatMap(([k, v]) => ['--set-string', `${k}=${v}`])
    const r = await run([s.helm, 'lint', '--strict', CHART_DIR, ...valueFiles(env, undefined).flatMap((f) => ['--values', f]), ...sets])
    assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/)
  }
})

t('the image is pinned by digest when one is given, by tag otherwise', async () => {
  const byDigest = kind(await render('dev'), 'Deployment')!
  assert.is(byDigest.spec.template.spec.containers[0].image, `${REPO}@${DIGEST}`)
  const byTag = kind(await render('dev', { 'image.repository': REPO, 'image.tag': 'abc123' }), 'Deployment')!
  assert.is(byTag.spec.template.spec.containers[0].image, `${REPO}:abc123`)
})

t('the deployment is safe to roll and to stop', async () => {
  const d = kind(await render('staging'), 'Deployment')!
  assert.equal(d.spec.strategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } })
  const pod = d.spec.template.spec
  const c = pod.containers[0]
  assert.is(c.readinessProbe.httpGet.path, '/health/ready')
  assert.is(c.livenessProbe.httpGet.path, '/health/live')
  assert.ok(c.startupProbe.httpGet.path)
  const shutdown = Number(c.env.find((e: { name: string }) => e.name === 'SHUTDOWN_TIMEOUT_SECS').value)
  assert.ok(pod.terminationGracePeriodSeconds > shutdown + c.lifecycle.preStop.sleep.seconds, 'grace period outlasts preStop + drain')
  assert.equal(pod.securityContext.seccompProfile, { type: 'RuntimeDefault' })
  assert.is(pod.securityContext.runAsUser, 65532)
  assert.is(c.securityContext.runAsNonRoot, true)
  assert.is(c.securityContext.readOnlyRootFilesystem, true)
  assert.is(c.securityContext.allowPrivilegeEscalation, false)
  assert.equal(c.securityContext.capabilities.drop, ['ALL'])
  assert.ok(c.resources.requests.cpu && c.resources.limits.memory)
  assert.is(pod.automountServiceAccountToken, false)
})

t('each environment renders its own shape', async () => {
  const dev = await render('dev')
  assert.is(kind(dev, 'Deployment')!.spec.replicas, 1)
  assert.not.ok(kind(dev, 'PodDisruptionBudget'))
  assert.not.ok(kind(dev, 'HorizontalPodAutoscaler'))
  assert.is(kind(dev, 'ServiceAccount')!.automountServiceAccountToken, false)
  assert.ok(kind(dev, 'Service'))
  const staging = await render('staging')
  assert.is(kind(staging, 'Deployment')!.spec.replicas, 2)
  assert.ok(kind(staging, 'PodDisruptionBudget'))
  const prod = await render('prod')
  assert.is(kind(prod, 'Deployment')!.spec.replicas, undefined, 'the HPA owns the replica count')
  assert.is(kind(prod, 'HorizontalPodAutoscaler')!.spec.minReplicas, 3)
  assert.ok(kind(prod, 'PodDisruptionBudget'))
  assert.ok(kind(prod, 'Deployment')!.spec.template.spec.topologySpreadConstraints[0].labelSelector.matchLabels)
})

t('the admission policy: pods in the release namespace only, by digest, signed, with a current passing scan; refused without a signer', async () => {
  const policy = kind(await render('prod'), 'ImageValidatingPolicy')!
  assert.is(policy.metadata.name, 'doc-server-test-doc-server')
  assert.is(policy.spec.failurePolicy, 'Fail')
  assert.equal(policy.spec.validationActions, ['Deny'])
  assert.equal(policy.spec.matchConstraints.namespaceSelector, { matchLabels: { 'kubernetes.io/metadata.name': 'doc-server-test' } })
  assert.equal(policy.spec.matchConstraints.resourceRules[0].resources, ['pods'])
  assert.is(policy.spec.validationConfigurations.mutateDigest, false, 'a tag is refused, never resolved')
  assert.equal(policy.spec.attestors.map((a: { name: string }) => a.name), ['signerKey0', 'verdictKey0'])
  assert.is(policy.spec.attestors[0].cosign.key.data, LINT_ADMISSION['admission.signers.keys[0]'])
  assert.is(policy.spec.attestors[1].cosign.source.repository, LINT_ADMISSION['admission.verdictRepository'])
  assert.match(policy.spec.validations[1].expression, /attestations\.signature, \[attestors\.signerKey0\]\) > 0/)
  assert.match(policy.spec.validations[2].expression, /attestations\.scan, \[attestors\.verdictKey0\]\) > 0/)
  assert.match(policy.spec.validations.at(-1).expression, /duration\('86400s'\)/)
  // Keyless signers as deploy verifies them: the image's signers sign the image; a scan signer (the rescan) only its verdict.
  const ci = 'https://github.com/acme/docs/.github/workflows/ci.yml@refs/heads/main'
  const rescan = 'https://github.com/acme/docs/.github/workflows/rescan.yml@refs/heads/main'
  const issuer = 'https://token.actions.githubusercontent.com'
  const keyless = kind(await render('prod', { 'image.repository': REPO, 'image.digest': DIGEST }, valuesFile('keyless.yaml', `admission:\n  signers:\n    keys: []\n    identities: [{ subject: "${ci}", issuer: "${issuer}" }, { subjectRegExp: "^x$", issuer: "${issuer}" }]\n  scanSigners:\n    keys: []\n    identities: [{ subject: "${rescan}", issuer: "${issuer}" }]\n`)), 'ImageValidatingPolicy')!
  const byName = Object.fromEntries(keyless.spec.attestors.map((a: { name: string; cosign: unknown }) => [a.name, a.cosign])) as Record<string, { keyless?: { identities: unknown[] }; source?: unknown }>
  assert.equal(Object.keys(byName), ['signerKey0', 'signerKeyless', 'verdictKey0', 'verdictKeyless'])
  assert.equal(byName.signerKeyless!.keyless!.identities, [{ issuer, subject: ci }, { issuer, subjectRegExp: '^x$' }])
  assert.equal(byName.verdictKeyless!.keyless!.identities, [{ issuer, subject: ci }, { issuer, subjectRegExp: '^x$' }, { issuer, subject: rescan }])
  assert.equal(byName.verdictKeyless!.source, { repository: LINT_ADMISSION['admission.verdictRepository'] })
  assert.match(keyless.spec.validations[1].expression, /\[attestors\.signerKey0, attestors\.signerKeyless\]/)
  assert.match(keyless.spec.validations[1].message, new RegExp(`by a lint signer \\(a pinned public key or ${ci.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} or \\^x\\$\\)`))
  assert.match(keyless.spec.validations[2].expression, /\[attestors\.verdictKey0, attestors\.verdictKeyless\]/)
  const off = await render('prod', { 'image.repository': REPO, 'image.digest': DIGEST }, valuesFile('off.yaml', 'admission:\n  enabled: false\n'))
  assert.not.ok(kind(off, 'ImageValidatingPolicy'))
  try {
    await renderChart(s.helm, release, CHART_DIR, valueFiles('prod', undefined), { 'image.repository': REPO, 'image.digest': DIGEST })
    assert.unreachable('rendered a policy without a signer')
  } catch (err) {
    assert.match((err as Error).message, /^chart: values refused: admission\.enabled needs admission\.signers\.keys/)
  }
})

t('bad values are refused at template time with one line', async () => {
  await refused('replicaCount: two\n', /replicaCount/)
  await refused('replicas: 3\n', /replicas/)
  await refused('image:\n  digest: sha256:xyz\n', /digest/)
  await refused('rollingUpdate:\n  maxSurge: 1\n  maxUnavailable: 1\n', /maxUnavailable/)
  await refused('shutdownTimeoutSeconds: 0\n', /shutdownTimeoutSeconds/)
  await refused('terminationGracePeriodSeconds: 20\n', /terminationGracePeriodSeconds \(20\) must exceed/)
  await refused('autoscaling:\n  enabled: true\n  minReplicas: 5\n  maxReplicas: 2\n', /minReplicas \(5\) is above/)
})

t.run()
