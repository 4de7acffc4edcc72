/**
 * The cluster's own check, end to end on the local cluster's real node
 * (docs/admission.md): Kyverno, built from source and installed by
 * `cluster:up`'s code, enforces the chart's policy in the release's
 * namespace. The pipeline's own build, scan and deploy are admitted; pods of
 * an unsigned digest, of a digest signed by another key, of one whose newest
 * scan failed, and of a tag are refused at admission with Kyverno's message
 * while the running pods keep serving; with Kyverno stopped, pods there are
 * refused (fail closed), a deploy stops in one line naming it, and its own
 * namespace and kube-system stay schedulable. Kyverno is left running.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { pushVariant } from '../../bench/lib/deploy.ts'
import { runLoad, serviceProgrammed, type LoadResult } from '../../bench/lib/load.ts'
import { loadConfig, type Config } from '../../lib/core/config.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { sleep, waitFor } from '../../lib/core/wait.ts'
import { CONTROLLER } from '../../lib/deploy/admission.ts'
import { CHART_DIR, chartFullname, podSelector } from '../../lib/deploy/deploy.ts'
import type { Report } from '../../lib/core/reports.ts'
import { history, type HelmTarget } from '../../lib/deploy/helm.ts'
import { deleteNamespace, kubeFlags, type EventJson, type KubeTarget } from '../../lib/deploy/kube.ts'
import { RolloutStopped, upgradeTracked, type TrackedPod } from '../../lib/deploy/track.ts'
import { startAdmission, stopAdmission } from '../../lib/sandbox/admission.ts'
import { ensureCluster, type LocalCluster } from '../../lib/sandbox/cluster.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { ensureRegistry } from '../../lib/sandbox/registry.ts'
import { VERSIONS } from '../../lib/tools/versions.ts'
import { setUp } from '../helpers/hooks.ts'
import { copyEnv } from '../helpers/repo-copy.ts'
import { attestAsScan, passingDecision, signAsBuild } from '../helpers/signed-image.ts'

const t = suite('e2e: deploy under admission (Kyverno, real node)')
const ALL_OK = { okCodes: ANY_EXIT }
const REPO = '127.0.0.1:5000/local/agent-docs'
const tsx = join(repoRoot, 'node_modules', '.bin', 'tsx')

interface State {
  config: Config
  cluster: LocalCluster
  kube: KubeTarget
  helm: HelmTarget
  docker: string
  namespace: string
  work: string
  reports: string
  /** The build stage's image, scanned by the scan stage. */
  built: string
  /** Copies of it (new digests), each given what one refused case needs. */
  unsigned: string
  otherKey: string
  failedScan: string
}
const s = {} as State
const release = () => ({ name: 'doc-server', namespace: s.namespace })
const deployment = () => `deployment/${chartFullname('doc-server')}`

async function kubectl(...args: string[]) {
  return run([s.kube.kubectl, ...kubeFlags(s.kube), ...args], { timeoutMs: 120_000 })
}

async function stage(name: 'build' | 'scan' | 'deploy', env: NodeJS.ProcessEnv = {}) {
  const r = await run([tsx, join(repoRoot, 'tasks', `${name}.ts`)], { cwd: repoRoot, env: copyEnv({ REPORTS_DIR: s.reports, ...env }), timeoutMs: 60 * 60_000, ...ALL_OK })
  const out = (r.stdout + r.stderr).trim()
  return { code: r.exitCode, out, last: out.split('\n').at(-1) ?? '' }
}

const deploy = async () => {
  const r = await stage('deploy', { DEPLOY_ENV: 'staging', DEPLOY_NAMESPACE: s.namespace, RELEASE_NAME: 'doc-server', KUBE_CONTEXT: '', DEPLOY_ADMISSION: 'enforce', DEPLOY_TIMEOUT_SECS: '180' })
  return { ...r, report: JSON.parse(readFileSync(join(s.reports, 'deploy.json'), 'utf8')) as Report<'deploy'> }
}

async function imageIDs(): Promise<string[]> {
  const r = await kubectl('-n', s.namespace, 'get', 'pods', '-l', podSelector('doc-server'), '-o', 'json')
  return (JSON.parse(r.stdout) as { items: TrackedPod[] }).items.filter((p) => !p.metadata.deletionTimestamp).flatMap((p) => (p.status?.containerStatuses ?? []).map((c) => c.imageID ?? ''))
}

/** Load through the Service for as long as `during` runs. */
async function underLoad<T>(during: () => Promise<T>, maxSeconds: number): Promise<{ result: T; load: LoadResult }> {
  const ip = (await kubectl('-n', s.namespace, 'get', 'service', chartFullname('doc-server'), '-o', 'jsonpath={.spec.clusterIP}')).stdout.trim()
  for (let i = 0; i < 30 && !(await serviceProgrammed(ip)); i++) await sleep(1000)
  assert.ok(await serviceProgrammed(ip), `kube-proxy has not programmed ${ip}`)
  const ac = new AbortController()
  const loading = runLoad({ host: ip, port: 80, path: '/api/docs', concurrency: 4, maxRequests: 20_000, maxSeconds, signal: ac.signal })
  try {
    return { result: await during(), load: await (ac.abort(), loading) }
  } finally {
    ac.abort()
    await loading
  }
}

/** The first FailedCreate of a ReplicaSet in the namespace since `since`: what the cluster said when it refused a pod. */
async function refusalSince(since: number): Promise<string> {
  return waitFor(
    async () => {
      const r = await kubectl('-n', s.namespace, 'get', 'events', '--field-selector', 'reason=FailedCreate', '-o', 'json')
      return (JSON.parse(r.stdout) as { items: EventJson[] }).items.find((e) => Date.parse(e.lastTimestamp ?? e.eventTime ?? '') >= since - 1000)?.message
    },
    { timeoutMs: 60_000, intervalMs: 1000, onTimeout: () => new Error('no pod creation was refused within 60 s') },
  )
}

/** A key pair of its own, in a cache of its own that shares the pinned tools. */
function otherSigner(): Config {
  const cache = join(s.work, 'other-cache')
  mkdirSync(cache, { recursive: true })
  symlinkSync(join(s.config.cacheDir, 'tools'), join(cache, 'tools'))
  return loadConfig({ ...process.env, DOC_SERVER_CACHE_DIR: cache })
}

setUp(t, 'e2e: deploy under admission', async () => {
  s.config = loadConfig()
  s.docker = (await ensureDockerEngine(s.config.docker)).docker
  await ensureRegistry('127.0.0.1:5000')
  s.cluster = await ensureCluster(s.config.cacheDir)
  s.kube = { kubectl: s.cluster.binaries.kubectl, kubeconfig: s.cluster.kubeconfig, context: s.cluster.context }
  s.helm = { helm: s.cluster.binaries.helm, kubeconfig: s.cluster.kubeconfig, context: s.cluster.context }
  // What `npm run cluster:up` does: Kyverno built once, its images made and pushed, its chart installed.
  await startAdmission(s.config.cacheDir, s.cluster)
  s.namespace = `doc-server-adm-${process.pid}`
  s.work = mkdtempSync(join(tmpdir(), 'admission-e2e-'))
  s.reports = join(s.work, 'reports')
  // The pipeline's own image, as its build and scan stages leave it: signed, provenance, SBOM, a passing scan and its verdict.
  const built = await stage('build', { IMAGE_TAG: 'e2e-admission', PUSH: 'true', REGISTRY: '127.0.0.1:5000' })
  assert.is(built.code, 0, `build stage failed:\n${built.out.split('\n').slice(-20).join('\n')}`)
  const scanned = await stage('scan')
  assert.is(scanned.code, 0, `scan stage failed:\n${scanned.out.split('\n').slice(-20).join('\n')}`)
  s.built = (JSON.parse(readFileSync(join(s.reports, 'build.json'), 'utf8')) as { image: { digest: string } }).image.digest
  const git = { sha: 'e'.repeat(40), shortSha: 'eeeeeee', branch: 'e2e', dirty: false }
  s.unsigned = await pushVariant(s.docker, REPO, `${REPO}@${s.built}`, 'adm-unsigned')
  s.otherKey = await pushVariant(s.docker, REPO, `${REPO}@${s.built}`, 'adm-other-key')
  const other = otherSigner()
  await signAsBuild(other, REPO, s.otherKey, git, s.work)
  await attestAsScan(other, REPO, s.otherKey, s.work)
  // Passed an hour ago, failed since: a rescan found something.
  s.failedScan = await pushVariant(s.docker, REPO, `${REPO}@${s.built}`, 'adm-failed-scan')
  await signAsBuild(s.config, REPO, s.failedScan, git, s.work)
  await attestAsScan(s.config, REPO, s.failedScan, s.work, { scannedAt: new Date(Date.now() - 3600_000).toISOString() })
  await attestAsScan(s.config, REPO, s.failedScan, s.work, { decision: { ...passingDecision(), decision: 'fail', reason: '1 CRITICAL' }, scannedAt: new Date().toISOString() })
})

t.after(async () => {
  // Never leave the cluster without its controller; clean-up must not hide a test's own failure.
  if (s.cluster) await startAdmission(s.config.cacheDir, s.cluster).catch((err: Error) => console.error(`e2e: admission: Kyverno not restarted: ${err.message}`))
  if (s.namespace && s.kube) {
    await run([s.helm.helm, 'uninstall', 'doc-server', '--kubeconfig', s.kube.kubeconfig!, '--kube-context', s.kube.context, '-n', s.namespace, '--wait'], ALL_OK)
    await deleteNamespace(s.kube, s.namespace).catch((err: Error) => console.error(`e2e: admission: namespace ${s.namespace} not removed: ${err.message}`))
  }
  if (s.work) rmSync(s.work, { recursive: true, force: true })
})

t("the pipeline's own build, scan and deploy are admitted; the policy is enforced in the release's namespace", async () => {
  const r = await deploy()
  assert.is(r.code, 0, r.out)
  assert.is(r.report.result, 'deployed')
  assert.match(r.out, new RegExp(`Admission controller: Kyverno ${VERSIONS.kyverno.replace(/\./g, '\\.')} \\(kyverno/kyverno-admission-controller\\) has 1 of 1 pods ready`))
  assert.match(r.out, new RegExp(`policy ${s.namespace}-doc-server enforced`))
  const ids = await imageIDs()
  assert.is(ids.length, 2)
  for (const id of ids) assert.ok(id.endsWith(`@${s.built}`), `the runtime reports ${id}`)
})

t('kubectl set image to an unsigned digest, one signed by another key, one whose newest scan failed, and a tag: each refused by Kyverno; the running pods keep serving', async () => {
  const cases: [string, string, RegExp][] = [
    ['unsigned', `${REPO}@${s.unsigned}`, /is not signed \(cosign sign\) by a staging signer/],
    ['signed by another key', `${REPO}@${s.otherKey}`, /is not signed \(cosign sign\) by a staging signer/],
    ['newest scan failed', `${REPO}@${s.failedScan}`, /the newest scan of an image did not pass/],
    ['a tag', `${REPO}:e2e-admission`, /an image is given by tag/],
  ]
  const { result: refusals, load } = await underLoad(async () => {
    const seen: string[] = []
    for (const [what, image, re] of cases) {
      const since = Date.now()
      await kubectl('-n', s.namespace, 'set', 'image', deployment(), `doc-server=${image}`)
      const message = await refusalSince(since)
      assert.match(message, /admission webhook "[^"]*kyverno[^"]*" denied the request/, `${what}: ${message}`)
      assert.match(message, re, `${what}: ${message}`)
      seen.push(what)
      await kubectl('-n', s.namespace, 'rollout', 'undo', deployment())
      await kubectl('-n', s.namespace, 'rollout', 'status', deployment(), '--timeout=90s')
    }
    return seen
  }, 300)
  assert.is(refusals.length, 4)
  assert.ok(load.sent >= 50, `only ${load.sent} requests were sent`)
  assert.is(load.failed, 0, `${load.failed} of ${load.sent} requests failed: ${load.failures.join('; ')}`)
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.built}`), `after the refusals the runtime reports ${id}`)
})

t("rollout tracking stops at the first refused pod creation, quoting Kyverno, and rolls back", async () => {
  // What a Helm run with an image the policy refuses meets: the ReplicaSet's FailedCreate, not a pod.
  const before = (await history(s.helm, release())).at(-1)?.revision
  assert.ok(before, 'no release to roll back to: the first deploy did not stay')
  const started = performance.now()
  let err: unknown
  try {
    const files = [join(CHART_DIR, 'values-staging.yaml'), join(s.reports, 'deploy', 'admission-values.yaml')]
    await upgradeTracked(s.helm, release(), { chart: CHART_DIR, valueFiles: files, sets: { 'image.repository': REPO, 'image.digest': s.unsigned }, timeoutSecs: 180 }, { kube: s.kube, image: `${REPO}@${s.unsigned}`, selector: podSelector('doc-server'), graceSecs: 60 })
  } catch (e) {
    err = e
  }
  const seconds = (performance.now() - started) / 1000
  assert.instance(err, RolloutStopped, `the rollout was not stopped: ${String(err)}`)
  assert.ok(seconds < 60, `took ${seconds.toFixed(1)} s`)
  assert.match((err as RolloutStopped).reason, /^replicaset doc-server-[a-z0-9]+: pod creation refused: admission webhook .* denied the request: .*is not signed \(cosign sign\)/)
  const last = (await history(s.helm, release())).at(-1)!
  assert.is(last.status, 'deployed')
  assert.match(last.description ?? '', new RegExp(`Rollback to ${before}`))
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.built}`), `after the rollback the runtime reports ${id}`)
})

t('Kyverno stopped: pods in the namespace are refused, a deploy fails in one line naming it, the old release keeps serving; kube-system and its own namespace stay schedulable', async () => {
  await stopAdmission(s.cluster)
  try {
    const refused = await run([s.kube.kubectl, ...kubeFlags(s.kube), '-n', s.namespace, 'run', 'adm-probe', `--image=${REPO}@${s.built}`, '--restart=Never'], ALL_OK)
    assert.is.not(refused.exitCode, 0, 'a pod was admitted while the controller was down')
    assert.match(refused.stderr, /failed calling webhook "[^"]*kyverno[^"]*"/, refused.stderr)

    for (const ns of ['kube-system', CONTROLLER.namespace]) {
      const name = `adm-probe-${process.pid}`
      await kubectl('-n', ns, 'run', name, `--image=${REPO}@${s.built}`, '--restart=Never')
      try {
        await kubectl('-n', ns, 'wait', '--for=condition=Ready', `pod/${name}`, '--timeout=90s')
      } finally {
        await kubectl('-n', ns, 'delete', 'pod', name, '--wait=false')
      }
    }

    const { result: r, load } = await underLoad(() => deploy(), 120)
    assert.is.not(r.code, 0)
    assert.match(r.last, new RegExp(`deploy: refused: the admission controller is not running: Kyverno ${VERSIONS.kyverno.replace(/\./g, '\\.')} \\(kyverno/kyverno-admission-controller\\) has 0 of 0 pods ready \\(scaled to 0\\), so every pod in ${s.namespace} would be refused; start it with \`npm run cluster:up\``))
    assert.not.match(r.out, /helm upgrade --install doc-server/, 'Helm never ran')
    assert.is(load.failed, 0, `the old release stopped serving: ${load.failures.join('; ')}`)
    for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.built}`), `the old release runs ${id}`)
  } finally {
    await startAdmission(s.config.cacheDir, s.cluster)
  }
  const again = await deploy()
  assert.is(again.code, 0, again.out)
})

t.run()
