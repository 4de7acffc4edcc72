import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../lib/core/config.ts'
import type { DeploymentJson } from '../lib/deploy/kube.ts'
import { creationRefused, describeFailure, notServing, restartBaseline, rolloutFailure, type TrackedPod, type TrackedReplicaSet } from '../lib/deploy/track.ts'

const t = suite('rollout tracking')
const NEW = `127.0.0.1:5000/local/agent-docs@sha256:${'b2'.repeat(32)}`
const OLD = `127.0.0.1:5000/local/agent-docs@sha256:${'a1'.repeat(32)}`
const NOW = Date.parse('2026-01-01T00:10:00Z')

function pod(name: string, image: string, status: NonNullable<NonNullable<TrackedPod['status']>['containerStatuses']>[number]): TrackedPod {
  return { metadata: { name }, spec: { containers: [{ name: 'doc-server', image }] }, status: { containerStatuses: [status] } }
}

t('a second restart is a crash loop; the first is not yet', () => {
  const once = pod('p1', NEW, { name: 'doc-server', restartCount: 1, state: { waiting: { reason: 'CrashLoopBackOff' } } })
  assert.is(rolloutFailure([once], NEW, 60, NOW), undefined)
  const twice = pod('p1', NEW, { name: 'doc-server', restartCount: 2, state: { waiting: { reason: 'CrashLoopBackOff' } }, lastState: { terminated: { reason: 'Error', exitCode: 2 } } })
  const f = rolloutFailure([twice], NEW, 60, NOW)!
  assert.is(f.kind, 'crash loop')
  assert.is(f.previous, true)
  assert.is(f.detail, 'restarted 2 times, Error, exit code 2')
  assert.is(describeFailure(f, 'error: DOCS_DIR /nope is not a directory'), 'pod p1: crash loop (restarted 2 times, Error, exit code 2); container doc-server last logged: error: DOCS_DIR /nope is not a directory')
})

t('image pull and config errors stop the rollout at once', () => {
  const pull = pod('p2', NEW, { name: 'doc-server', restartCount: 0, state: { waiting: { reason: 'ErrImagePull', message: 'not found' } } })
  assert.is(rolloutFailure([pull], NEW, 60, NOW)?.kind, 'image pull failure')
  assert.is(rolloutFailure([pull], NEW, 60, NOW)?.detail, 'ErrImagePull: not found')
  const cfg = pod('p3', NEW, { name: 'doc-server', restartCount: 0, state: { waiting: { reason: 'CreateContainerConfigError', message: 'secret "x" not found' } } })
  assert.is(rolloutFailure([cfg], NEW, 60, NOW)?.kind, 'container config error')
})

t('an unready running container fails only past the grace', () => {
  const young = pod('p4', NEW, { name: 'doc-server', ready: false, restartCount: 0, state: { running: { startedAt: '2026-01-01T00:09:30Z' } } })
  assert.is(rolloutFailure([young], NEW, 60, NOW), undefined)
  const old = pod('p4', NEW, { name: 'doc-server', ready: false, restartCount: 0, state: { running: { startedAt: '2026-01-01T00:08:30Z' } } })
  assert.is(rolloutFailure([old], NEW, 60, NOW)?.kind, 'readiness failing')
  const ready = pod('p4', NEW, { name: 'doc-server', ready: true, restartCount: 0, state: { running: { startedAt: '2026-01-01T00:08:30Z' } } })
  assert.is(rolloutFailure([ready], NEW, 60, NOW), undefined)
})

t('pods of the previous revision and terminating pods are not judged', () => {
  const old = pod('p5', OLD, { name: 'doc-server', restartCount: 5, state: { waiting: { reason: 'CrashLoopBackOff' } } })
  assert.is(rolloutFailure([old], NEW, 60, NOW), undefined)
  const leaving = { ...pod('p6', NEW, { name: 'doc-server', restartCount: 5 }), metadata: { name: 'p6', deletionTimestamp: '2026-01-01T00:09:00Z' } }
  assert.is(rolloutFailure([leaving], NEW, 60, NOW), undefined)
})

t('a pod creation refused for the new ReplicaSet stops the rollout, quoting the admission controller', () => {
  const rs = (name: string, image: string): TrackedReplicaSet => ({ metadata: { name }, spec: { template: { spec: { containers: [{ image }] } } } })
  const sets = [rs('doc-server-new', NEW), rs('doc-server-old', OLD)]
  const denied = 'Error creating: admission webhook "ivpol.validate.kyverno.svc-fail-finegrained-doc-server" denied the request: Policy doc-server failed: an image is not signed'
  const event = (name: string, at: string, reason = 'FailedCreate', message = denied) => ({ type: 'Warning', reason, message, involvedObject: { kind: 'ReplicaSet', name }, lastTimestamp: at })
  const since = Date.parse('2026-01-01T00:09:00Z')
  // Older events, other reasons and the previous revision's ReplicaSet are not this rollout's refusal.
  assert.is(creationRefused([event('doc-server-new', '2026-01-01T00:05:00Z'), event('doc-server-new', '2026-01-01T00:09:30Z', 'SuccessfulCreate'), event('doc-server-old', '2026-01-01T00:09:30Z')], sets, NEW, since), undefined)
  const f = creationRefused([event('doc-server-new', '2026-01-01T00:09:40Z', 'FailedCreate', 'Error creating: later'), event('doc-server-new', '2026-01-01T00:09:20Z')], sets, NEW, since)!
  assert.is(f.kind, 'pod creation refused')
  assert.is(describeFailure(f, undefined), 'replicaset doc-server-new: pod creation refused: admission webhook "ivpol.validate.kyverno.svc-fail-finegrained-doc-server" denied the request: Policy doc-server failed: an image is not signed')
})

t('restarts from before the deploy (a node that restarted its pods) are no crash loop; this deploy\'s are', () => {
  const b = restartBaseline(Date.parse('2026-01-01T00:05:00Z'))
  const status = (restartCount: number) => ({ name: 'doc-server', restartCount, state: { running: { startedAt: '2026-01-01T00:09:50Z' } }, lastState: { terminated: { reason: 'Unknown', exitCode: 255 } } })
  const old = (restartCount: number): TrackedPod => ({ ...pod('p7', NEW, status(restartCount)), metadata: { name: 'p7', uid: 'u7', creationTimestamp: '2025-12-29T08:00:00Z' } })
  assert.is(rolloutFailure([old(3)], NEW, 60, NOW, b), undefined, 'restarted by three nights of cluster:down')
  assert.is(rolloutFailure([old(4)], NEW, 60, NOW, b), undefined, 'and once more as the node came back during this deploy')
  assert.is(rolloutFailure([old(5)], NEW, 60, NOW, b)?.detail, 'restarted 2 times, Unknown, exit code 255')
  const fresh: TrackedPod = { ...pod('p8', NEW, status(2)), metadata: { name: 'p8', uid: 'u8', creationTimestamp: '2026-01-01T00:06:00Z' } }
  assert.is(rolloutFailure([fresh], NEW, 60, NOW, b)?.kind, 'crash loop', 'a pod of this rollout counts from zero')
  assert.is(rolloutFailure([old(3)], NEW, 60, NOW)?.kind, 'crash loop', 'without a baseline every restart counts')
})

t('DEPLOY_READINESS_GRACE_SECS: default far below the timeout, validated against it', () => {
  assert.is(loadConfig({}, {}).deployReadinessGraceSecs, 60)
  assert.is(loadConfig({ DEPLOY_TIMEOUT_SECS: '30' }, {}).deployReadinessGraceSecs, 15)
  assert.is(loadConfig({ DEPLOY_READINESS_GRACE_SECS: '20' }, {}).deployReadinessGraceSecs, 20)
  assert.throws(() => loadConfig({ DEPLOY_READINESS_GRACE_SECS: '300' }, {}), /DEPLOY_READINESS_GRACE_SECS="300" is not valid: expected fewer seconds than DEPLOY_TIMEOUT_SECS \(300\)/)
  assert.throws(() => loadConfig({ DEPLOY_READINESS_GRACE_SECS: 'soon' }, {}), /DEPLOY_READINESS_GRACE_SECS="soon"/)
})

const DIGEST = NEW.split('@')[1]!
const dep = (status: NonNullable<DeploymentJson['status']>, replicas = 2, generation = 3): DeploymentJson => ({ metadata: { generation }, spec: { replicas, template: { spec: { containers: [{ name: 'doc-server', image: NEW }] } } }, status })
const rolledOut = { observedGeneration: 3, replicas: 2, updatedReplicas: 2, readyReplicas: 2, availableReplicas: 2 }
const serving = (name: string, ready = true, imageID = `docker.io/x@${DIGEST}`) => pod(name, NEW, { name: 'doc-server', ready, imageID, restartCount: 0, state: { running: { startedAt: '2026-01-01T00:09:00Z' } } })

t('serving: every live pod on the digest and ready, as many as wanted, and the deployment agrees', () => {
  assert.is(notServing(dep(rolledOut), [serving('a'), serving('b')], NEW, DIGEST), undefined)
  const leaving = { ...pod('old', OLD, { name: 'doc-server', ready: true }), metadata: { name: 'old', deletionTimestamp: '2026-01-01T00:09:30Z' } }
  assert.is(notServing(dep(rolledOut), [serving('a'), serving('b'), leaving], NEW, DIGEST), undefined, 'a terminating pod of the previous revision does not count')
})

t('not serving yet: a restarted pod not ready, an old pod still live, too few pods, a deployment behind (stale or not)', () => {
  // The deployment still says rolled out (as it did before the node restarted its pods); the pod says otherwise.
  assert.is(notServing(dep(rolledOut), [serving('a'), serving('b', false)], NEW, DIGEST), 'b/doc-server is not ready')
  assert.match(notServing(dep(rolledOut), [serving('a'), pod('old', OLD, { name: 'doc-server', ready: true })], NEW, DIGEST) ?? '', /^old\/doc-server runs .*@sha256:a1/)
  assert.is(notServing(dep(rolledOut), [serving('a')], NEW, DIGEST), '1 of 2 pods exist')
  assert.is(notServing(dep({ ...rolledOut, availableReplicas: 1 }), [serving('a'), serving('b')], NEW, DIGEST), 'the deployment counts 2 updated, 1 available of 2')
  assert.is(notServing(dep({ ...rolledOut, observedGeneration: 2 }), [serving('a'), serving('b')], NEW, DIGEST), 'the deployment counts 2 updated, 2 available of 2')
  assert.match(notServing(dep(rolledOut), [serving('a'), serving('b', true, `x@${OLD.split('@')[1]}`)], NEW, DIGEST) ?? '', /^b\/doc-server reports image x@sha256:a1/)
})

t.run()
