import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { canaryPods, canaryReplicas, canarySelector, describePlan, planCanary, stablePods, type PlanInputs } from '../lib/deploy/canary.ts'
import { CanarySettings } from '../lib/deploy/environments.ts'

const t = suite('canary')
const settings = CanarySettings.parse({ weight: 25 })
// These plans end before the cluster is asked anything: no target is needed.
const inputs = (over: Partial<PlanInputs>): PlanInputs => ({
  envName: 'prod',
  env: { canary: settings },
  kube: { kubectl: '/nonexistent/kubectl', kubeconfig: undefined, context: 'none' },
  release: { name: 'doc-server', namespace: 'ns' },
  previousRevision: 3,
  localPrometheus: undefined,
  direct: false,
  ...over,
})

t('the canary is sized to its weight of all the pods, at least one', () => {
  assert.is(canaryReplicas(3, 25), 1, '1 of 4')
  assert.is(canaryReplicas(2, 25), 1, '1 of 3: never none')
  assert.is(canaryReplicas(9, 25), 3, '3 of 12')
  assert.is(canaryReplicas(10, 50), 10)
  assert.is(canaryReplicas(1, 5), 1)
})

t('pod names select the stable and the canary Deployment apart, as Prometheus labels them', () => {
  const whole = (re: string) => new RegExp(`^${re}$`)
  const stable = whole(stablePods('doc-server'))
  const canary = whole(canaryPods('doc-server'))
  assert.ok(stable.test('doc-server-7c9f8d6b5-x2k4q'))
  assert.not.ok(stable.test('doc-server-canary-5d8b9c7f4-9wz2m'), 'a canary pod is not a stable one')
  assert.not.ok(stable.test('doc-server-smoke-test'))
  assert.ok(canary.test('doc-server-canary-5d8b9c7f4-9wz2m'))
  assert.not.ok(canary.test('doc-server-7c9f8d6b5-x2k4q'))
  assert.ok(whole(stablePods('web')).test('web-doc-server-7c9f8d6b5-x2k4q'), 'the chart prefixes other release names')
  assert.is(
    canarySelector('doc-server'),
    'app.kubernetes.io/name=doc-server,app.kubernetes.io/instance=doc-server,doc-server.dev/track=canary',
  )
})

t('no canary set, --no-canary, or a first release: a direct rollout, saying why', async () => {
  assert.is((await planCanary(inputs({ envName: 'dev', env: {} }))).skip, 'none set for dev in environments.yaml; direct rollout')
  assert.is((await planCanary(inputs({ direct: true }))).skip, '--no-canary; direct rollout')
  const first = await planCanary(inputs({ previousRevision: undefined }))
  assert.is(first.skip, 'first release: no stable pods to compare with; direct rollout')
  assert.is(describePlan(first), 'Canary: skipped (first release: no stable pods to compare with; direct rollout)')
})

t('a release name too long for its canary release is refused in one line', async () => {
  try {
    await planCanary(inputs({ release: { name: 'a'.repeat(50), namespace: 'ns' } }))
    assert.unreachable('accepted')
  } catch (err) {
    assert.match(
      (err as Error).message,
      /^deploy: refused: RELEASE_NAME a{50} is too long for its canary release a{50}-canary \(Helm allows 53 characters\)$/,
    )
  }
})

t('describes the plan it runs', () => {
  const plan = { settings, stableReplicas: 3, replicas: 1, prometheus: 'http://u:p@prom:9090' }
  assert.is(
    describePlan(plan),
    'Canary: 1 of 4 pods on the new digest (weight 25 %); smoke tests; analysis 120 s every 15 s through http://prom:9090',
  )
  assert.match(
    describePlan({
      ...plan,
      prometheus: undefined,
      analysisSkip: 'environments.yaml names no Prometheus for staging; the canary is judged by its smoke tests alone',
    }),
    /; no analysis: environments\.yaml names no Prometheus for staging/,
  )
})

t.run()
