/**
 * Which cluster a deploy or a rescan talks to (lib/deploy/target.ts), and the
 * digest a release runs (lib/deploy/running.ts), against the real local
 * cluster: a context that is not in the kubeconfig or does not answer is one
 * line; no KUBE_CONTEXT means the caller's local cluster; a release is read
 * back as the digest its Deployment pins, with the pods that run it.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig, type Config } from '../../lib/core/config.ts'
import { run } from '../../lib/core/run.ts'
import { waitFor } from '../../lib/core/wait.ts'
import { chartFullname } from '../../lib/deploy/deploy.ts'
import { kubeFlags, type KubeTarget } from '../../lib/deploy/kube.ts'
import { runningImage } from '../../lib/deploy/running.ts'
import { connectCluster } from '../../lib/deploy/target.ts'
import { localClusterTarget } from '../../lib/sandbox/cluster.ts'
import { setUp } from '../helpers/hooks.ts'

const t = suite('e2e: cluster target and running image')
const s = { config: {} as Config, kube: {} as KubeTarget, work: '', namespace: `target-e2e-${process.pid}` }
const DIGEST = `sha256:${'7'.repeat(64)}`
const REPO = '127.0.0.1:5000/target-e2e/doc-server'

setUp(t, 'e2e: cluster target and running image', async () => {
  s.config = loadConfig()
  s.kube = await localClusterTarget(s.config.cacheDir)
  s.work = mkdtempSync(join(tmpdir(), 'target-e2e-'))
  await kubectl('create', 'namespace', s.namespace)
})

t.after(async () => {
  if (s.kube.kubectl) await run([s.kube.kubectl, ...kubeFlags(s.kube), 'delete', 'namespace', s.namespace, '--wait=false'], { okCodes: [1] }).catch(() => undefined)
  if (s.work) rmSync(s.work, { recursive: true, force: true })
})

const kubectl = (...args: string[]) => run([s.kube.kubectl, ...kubeFlags(s.kube), ...args])

/** KUBE_CONTEXT as a user sets it: a context name, found through KUBECONFIG. */
async function withKubeconfig<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const before = process.env.KUBECONFIG
  process.env.KUBECONFIG = file
  try {
    return await fn()
  } finally {
    if (before === undefined) delete process.env.KUBECONFIG
    else process.env.KUBECONFIG = before
  }
}

const failure = (p: Promise<unknown>) => p.then(() => '', (e: Error) => e.message)

t('KUBE_CONTEXT must be a context of the kubeconfig, and must answer', async () => {
  const kubeconfig = s.kube.kubeconfig!
  const named = await withKubeconfig(kubeconfig, () => connectCluster({ ...s.config, kubeContext: s.kube.context }))
  assert.is(named.context, s.kube.context)
  assert.is(named.kubeconfig, undefined, 'the user\'s own kubeconfig, not one the toolkit picked')
  const missing = await withKubeconfig(kubeconfig, () => failure(connectCluster({ ...s.config, kubeContext: 'no-such-context' })))
  assert.match(missing, new RegExp(`^cluster: KUBE_CONTEXT "no-such-context" is not a context in ${kubeconfig} \\(it has: ${s.kube.context}\\)$`))
  const dead = join(s.work, 'dead-kubeconfig')
  writeFileSync(dead, readFileSync(kubeconfig, 'utf8').replace(/server: https?:\/\/[^\s]+/g, 'server: https://127.0.0.1:1'))
  const silent = await withKubeconfig(dead, () => failure(connectCluster({ ...s.config, kubeContext: s.kube.context })))
  assert.match(silent, new RegExp(`^cluster: context "${s.kube.context}" does not answer /readyz`))
})

t('without KUBE_CONTEXT: the cluster the caller starts, or one line saying what to set', async () => {
  let started = 0
  const local = await connectCluster({ ...s.config, kubeContext: undefined }, async () => (started++, s.kube))
  assert.is(started, 1)
  assert.equal(local, s.kube)
  assert.is(await failure(connectCluster({ ...s.config, kubeContext: undefined })), 'deploy: no cluster: set KUBE_CONTEXT to a context of your kubeconfig')
})

function deployment(release: string, image: string): string {
  const labels = { 'app.kubernetes.io/name': 'doc-server', 'app.kubernetes.io/instance': release }
  return JSON.stringify({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: chartFullname(release), namespace: s.namespace, labels },
    spec: { replicas: 2, selector: { matchLabels: labels }, template: { metadata: { labels }, spec: { containers: [{ name: 'doc-server', image }] } } },
  })
}

t('the running image is the digest the Deployment pins, with the pods that run it; anything else is one line', async () => {
  const release = { name: 'pinned', namespace: s.namespace }
  assert.match(await failure(runningImage(s.kube, release)), new RegExp(`^rescan: release pinned has no deployment ${chartFullname('pinned')} in namespace ${s.namespace}; nothing runs there to rescan$`))
  const file = join(s.work, 'pinned.json')
  writeFileSync(file, deployment('pinned', `${REPO}@${DIGEST}`))
  await kubectl('apply', '-f', file)
  // The pods exist (pulling or not) as soon as the ReplicaSet creates them.
  const image = await waitFor(async () => {
    const r = await runningImage(s.kube, release)
    return r.pods === 2 ? r : undefined
  }, { timeoutMs: 60_000, intervalMs: 500, onTimeout: () => new Error('the Deployment\'s 2 pods were never created') })
  assert.equal(image, { pinned: `${REPO}@${DIGEST}`, repository: REPO, digest: DIGEST, pods: 2 })
  writeFileSync(file, deployment('tagged', `${REPO}:latest`))
  await kubectl('apply', '-f', file)
  assert.match(await failure(runningImage(s.kube, { name: 'tagged', namespace: s.namespace })), /runs 127\.0\.0\.1:5000\/target-e2e\/doc-server:latest, not an image pinned by digest; deploy with the deploy stage first$/)
})

t.run()
