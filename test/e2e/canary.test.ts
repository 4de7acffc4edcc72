/**
 * The canary end to end, run as `npm run ci:deploy` runs it, on the local
 * cluster's real node with its real Prometheus, under a bounded load
 * through the release's Service (document reads and searches): a release
 * that is ready but serves an empty doc tree is stopped by its smoke test,
 * one whose doc tree makes its answers slow is stopped by the analysis on
 * p99, a good one is promoted, and a Prometheus that does not answer stops
 * the deploy before any canary starts. Every verdict is read from what the
 * cluster reports: the stable pods' image IDs, the release's history, the
 * pods left. The deploy runs in a copy of the repository whose
 * environments.yaml gives staging a canary with a short window (the local
 * cluster rehearses DEPLOY_ENV's canary); the copy reads this clone's
 * objects, so the commit the images are recorded as built from, with its
 * committed scan policy, is known there.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { stringify as toYaml } from 'yaml'
import { MIXED, pushVariant, slowDocs } from '../../bench/lib/deploy.ts'
import { runMixedLoad, serviceProgrammed, type LoadResult } from '../../bench/lib/load.ts'
import { loadConfig } from '../../lib/core/config.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import type { Report } from '../../lib/core/reports.ts'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { chartFullname, podSelector } from '../../lib/deploy/deploy.ts'
import { history, type HelmTarget } from '../../lib/deploy/helm.ts'
import { deleteNamespace, kubeFlags, type KubeTarget } from '../../lib/deploy/kube.ts'
import type { TrackedPod } from '../../lib/deploy/track.ts'
import { clusterStatus, ensureCluster, stopCluster } from '../../lib/sandbox/cluster.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { ensureRegistry } from '../../lib/sandbox/registry.ts'
import { keyFingerprint, localKeyPaths } from '../../lib/sign/cosign.ts'
import { cachedBinaries } from '../../lib/tools/kube.ts'
import { setUp } from '../helpers/hooks.ts'
import { unusedPort } from '../helpers/net.ts'
import { copyEnv, copyRepo } from '../helpers/repo-copy.ts'
import { writeBuildAndScan } from '../helpers/reports.ts'
import { attestAsScan, signAsBuild } from '../helpers/signed-image.ts'

const t = suite('e2e: canary (real node, real Prometheus)')
const ALL_OK = { okCodes: ANY_EXIT }
const REPO = '127.0.0.1:5000/local/agent-docs'
/** The commit the test images are recorded as built from: this clone's HEAD, which has the committed scan policy. */
let COMMIT = ''

/** The test environment's canary: 1 pod beside the 2 of staging, a 30 s window checked every 10 s, the default thresholds. */
// p99Slack below the default 10 ms: the padded release's searches are about ten times the stable
// pods' on an idle machine, yet only about 10 ms in all there, so with the default slack the verdict
// would turn on the machine's speed (24 ms on a loaded one, 9.8 ms on an idle one) instead of the ratio.
const CANARY = {
  weight: 34,
  analysis: { duration: '30s', interval: '10s', minRequests: 20, failedChecks: 2, inconclusive: 'wait', p99Slack: '5ms' },
}

interface State {
  cache: string
  startedCluster: boolean
  kube: KubeTarget
  helm: HelmTarget
  namespace: string
  reports: string
  copy: { dir: string; remove: () => void }
  d: { first: string; good: string; slow: string }
}
const s = {} as State
const release = () => ({ name: 'doc-server', namespace: s.namespace })

function environments(staging: Record<string, unknown>): void {
  const file = join(s.copy.dir, 'charts', 'doc-server', 'environments.yaml')
  writeFileSync(file, toYaml({ dev: { contexts: [] }, staging: { contexts: [], ...staging }, prod: { contexts: [] } }))
}

async function deploy(digest: string, env: NodeJS.ProcessEnv = {}) {
  writeBuildAndScan(s.reports, REPO, digest, { tag: 'e2e-canary', commit: COMMIT, branch: 'e2e' })
  const started = performance.now()
  const r = await run([join(s.copy.dir, 'node_modules', '.bin', 'tsx'), join(s.copy.dir, 'tasks', 'deploy.ts')], {
    cwd: s.copy.dir,
    env: copyEnv({
      REPORTS_DIR: s.reports,
      DEPLOY_ENV: 'staging',
      DEPLOY_NAMESPACE: s.namespace,
      RELEASE_NAME: 'doc-server',
      KUBE_CONTEXT: '',
      DEPLOY_TIMEOUT_SECS: '180',
      DEPLOY_VALUES_FILE: '',
      ...env,
    }),
    timeoutMs: 15 * 60_000,
    ...ALL_OK,
  })
  const out = (r.stdout + r.stderr).trim()
  const report = JSON.parse(readFileSync(join(s.reports, 'deploy.json'), 'utf8')) as Report<'deploy'>
  return { code: r.exitCode, out, last: out.split('\n').at(-1) ?? '', report, seconds: (performance.now() - started) / 1000 }
}

async function kubectl(...args: string[]) {
  return run([s.kube.kubectl, ...kubeFlags(s.kube), ...args], { timeoutMs: 60_000 })
}

async function pods(selector = podSelector('doc-server')): Promise<TrackedPod[]> {
  const r = await kubectl('-n', s.namespace, 'get', 'pods', '-l', selector, '-o', 'json')
  return (JSON.parse(r.stdout) as { items: TrackedPod[] }).items.filter((p) => !p.metadata.deletionTimestamp)
}

/** What the runtime reports each serving pod runs. */
async function imageIDs(): Promise<string[]> {
  return (await pods()).flatMap((p) => (p.status?.containerStatuses ?? []).map((c) => c.imageID ?? '')).sort()
}

/** The release's state that an aborted canary must leave as it was. */
async function stableState() {
  const dep = JSON.parse((await kubectl('-n', s.namespace, 'get', 'deployment', chartFullname('doc-server'), '-o', 'json')).stdout) as {
    metadata: { generation: number }
    spec: { template: { spec: { containers: { image: string }[] } } }
  }
  return {
    revision: (await history(s.helm, release())).at(-1)?.revision,
    generation: dep.metadata.generation,
    image: dep.spec.template.spec.containers[0]!.image,
    pods: (await pods()).map((p) => p.metadata.name).sort(),
  }
}

async function leftovers(): Promise<string[]> {
  const canaryPods = (await pods(`${podSelector('doc-server')},doc-server.dev/track=canary`)).map((p) => p.metadata.name)
  const releases = (await history(s.helm, { name: 'doc-server-canary', namespace: s.namespace })).map(
    (e) => `doc-server-canary revision ${e.revision} ${e.status}`,
  )
  const smoke = (await kubectl('-n', s.namespace, 'get', 'pods', '-o', 'name')).stdout.split('\n').filter((l) => l.includes('smoke-test'))
  return [...canaryPods, ...releases, ...smoke]
}

/** Reads and searches through the Service (bench:deploy's mix) while `during` runs; the load is capped in requests and time. */
async function underLoad<T>(during: () => Promise<T>): Promise<{ result: T; docs: LoadResult; searches: LoadResult }> {
  const host = (
    await kubectl('-n', s.namespace, 'get', 'service', chartFullname('doc-server'), '-o', 'jsonpath={.spec.clusterIP}')
  ).stdout.trim()
  for (let i = 0; i < 30 && !(await serviceProgrammed(host)); i++) await new Promise((r) => setTimeout(r, 1000))
  assert.ok(await serviceProgrammed(host), `kube-proxy has not programmed ${host}`)
  const ac = new AbortController()
  const loading = runMixedLoad({ host, port: 80, maxSeconds: 600, maxRequests: 300_000, signal: ac.signal }, MIXED)
  try {
    const result = await during()
    ac.abort()
    const [docs, searches] = Object.values(await loading) as [LoadResult, LoadResult]
    return { result, docs, searches }
  } finally {
    ac.abort()
    await loading
  }
}

setUp(t, 'e2e: canary', async () => {
  const config = loadConfig()
  s.cache = config.cacheDir
  const docker = (await ensureDockerEngine(config.docker)).docker
  await ensureRegistry('127.0.0.1:5000')
  const kubectlBin = cachedBinaries(s.cache).find((b) => b.name === 'kubectl')!
  s.startedCluster = (await clusterStatus(s.cache, kubectlBin.present ? kubectlBin.path : undefined)) !== 'running'
  const cluster = await ensureCluster(s.cache)
  s.kube = { kubectl: cluster.binaries.kubectl, kubeconfig: cluster.kubeconfig, context: cluster.context }
  s.helm = { helm: cluster.binaries.helm, kubeconfig: cluster.kubeconfig, context: cluster.context }
  s.namespace = `doc-server-canary-e2e-${process.pid}`
  s.reports = mkdtempSync(join(tmpdir(), 'canary-e2e-'))
  // The real image, as the build stage pushes it: its binary runs the smoke test.
  const built = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'build.ts')], {
    cwd: repoRoot,
    env: copyEnv({ REPORTS_DIR: s.reports, IMAGE_TAG: 'e2e-canary', PUSH: 'true', REGISTRY: '127.0.0.1:5000' }),
    timeoutMs: 60 * 60_000,
    ...ALL_OK,
  })
  assert.is(built.exitCode, 0, `build stage failed:\n${(built.stdout + built.stderr).split('\n').slice(-20).join('\n')}`)
  const first = (JSON.parse(readFileSync(join(s.reports, 'build.json'), 'utf8')) as { image: { digest: string } }).image.digest
  const base = `${REPO}@${first}`
  s.d = {
    first,
    good: await pushVariant(docker, REPO, base, 'e2e-canary-good'),
    slow: await pushVariant(docker, REPO, base, 'e2e-canary-slow', slowDocs()),
  }
  COMMIT = (await run(['git', 'rev-parse', 'HEAD'], { cwd: repoRoot })).stdout.trim()
  const git = { sha: COMMIT, shortSha: COMMIT.slice(0, 7), branch: 'e2e', dirty: false }
  for (const d of Object.values(s.d)) {
    await signAsBuild(config, REPO, d, git, s.reports)
    await attestAsScan(config, REPO, d, s.reports)
  }
  s.copy = await copyRepo('canary-e2e-')
  // A repository of its own that borrows this clone's objects (no copy of them): deploy reads the commit's scan policy there.
  await run(['git', 'init', '-q'], { cwd: s.copy.dir, env: copyEnv() })
  const objects = (await run(['git', 'rev-parse', '--path-format=absolute', '--git-common-dir'], { cwd: repoRoot })).stdout.trim()
  writeFileSync(join(s.copy.dir, '.git', 'objects', 'info', 'alternates'), `${join(objects, 'objects')}\n`)
  // The same origin as this clone: the source deploy expects in the provenance is read from it.
  const origin = (await run(['git', 'remote', 'get-url', 'origin'], { cwd: repoRoot, okCodes: [0, 2, 128] })).stdout.trim()
  if (origin) await run(['git', 'remote', 'add', 'origin', origin], { cwd: s.copy.dir, env: copyEnv() })
  environments({ canary: CANARY })
})

t.after(async () => {
  if (s.helm && s.namespace) {
    for (const name of ['doc-server-canary', 'doc-server'])
      await run(
        [s.helm.helm, 'uninstall', name, '--kubeconfig', s.kube.kubeconfig!, '--kube-context', s.kube.context, '-n', s.namespace, '--wait'],
        ALL_OK,
      )
    await deleteNamespace(s.kube, s.namespace).catch((err: Error) =>
      console.error(`e2e: canary: namespace ${s.namespace} not removed: ${err.message}`),
    )
  }
  s.copy?.remove()
  if (s.reports) rmSync(s.reports, { recursive: true, force: true })
  if (s.startedCluster) await stopCluster(s.cache)
})

t('the first release rolls out directly, saying why', async () => {
  const r = await deploy(s.d.first)
  assert.is(r.code, 0, r.out)
  assert.match(r.out, /Canary: skipped \(first release: no stable pods to compare with; direct rollout\)/)
  assert.equal(r.report.canary, {
    decision: 'skipped',
    reason: 'first release: no stable pods to compare with; direct rollout',
    weight: null,
    replicas: null,
    stableReplicas: null,
    smoke: null,
    analysis: null,
    seconds: 0,
  })
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.d.first}`), id)
})

t('a release that is ready but serves an empty doc tree is aborted by its smoke test; the stable pods never change', async () => {
  const before = await stableState()
  const empty = join(s.reports, 'empty-docs.yaml')
  // /tmp is the pod's own empty scratch volume: the server starts, is ready, and serves nothing.
  writeFileSync(empty, 'docsDir: /tmp\n')
  const { result: r, docs } = await underLoad(() => deploy(s.d.good, { DEPLOY_VALUES_FILE: empty }))
  assert.is.not(r.code, 0, r.out)
  assert.match(
    r.last,
    new RegExp(
      `^✖ deploy: canary ${s.d.good.slice(0, 19)}… aborted, stable pods unchanged: smoke test failed: \\d+ of 7 checks against [0-9.]+:80: `,
    ),
    r.last,
  )
  assert.match(r.out, /smoke test: GET \/api\/docs\/getting-started answered 404, expected 200 \(document not found\)/)
  assert.is(r.report.result, 'aborted')
  assert.is(r.report.canary?.decision, 'aborted')
  assert.is(r.report.canary?.smoke?.passed, false)
  assert.is(r.report.canary?.analysis?.result, null, 'no analysis after a failed smoke test')
  assert.equal(await stableState(), before, 'the stable release, Deployment and pods are as they were')
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.d.first}`), `the stable pods run ${id}`)
  assert.equal(await leftovers(), [], 'no canary pod, release or smoke-test pod is left')
  // Users reached the canary (1 pod of 3) until the smoke test stopped it: its answers were 404s.
  console.log(
    `      wrong release: aborted after ${r.seconds.toFixed(1)} s; ${docs.failed} of ${docs.sent} document reads failed meanwhile (${docs.failures.slice(0, 2).join(', ')})`,
  )
  assert.ok(
    docs.failures.every((f) => f === 'status 404'),
    docs.failures.join('; '),
  )
  assert.ok(docs.failed < docs.sent / 2, 'the stable pods kept serving')
})

t('a release whose answers are several times slower is aborted by the analysis on p99, naming it', async () => {
  const before = await stableState()
  // Its documents take more room than the default allows: its values make room for them.
  const room = join(s.reports, 'room-for-docs.yaml')
  writeFileSync(room, 'limits:\n  docsMaxBytes: 100663296\nresources:\n  limits:\n    memory: 256Mi\n')
  const { result: r, searches } = await underLoad(() => deploy(s.d.slow, { DEPLOY_VALUES_FILE: room }))
  assert.is.not(r.code, 0, r.out)
  assert.match(
    r.last,
    new RegExp(
      `^✖ deploy: canary ${s.d.slow.slice(0, 19)}… aborted, stable pods unchanged: analysis failed: p99 [0-9.]+ ms (\\(at most|is [0-9.]+ times the stable pods' [0-9.]+ ms \\(at most 2 times, or 5\\.0 ms more\\)); 2 of 2 allowed failed checks$`,
    ),
    r.last,
  )
  const analysis = r.report.canary?.analysis?.result
  assert.is(r.report.canary?.smoke?.passed, true, 'its documents are all there: the smoke test passed')
  assert.is(analysis?.result, 'fail')
  assert.match(analysis?.check ?? '', /^p99/)
  const failedSteps = analysis!.steps.filter((x) => x.verdict === 'fail')
  assert.is(failedSteps.length, 2)
  for (const step of failedSteps)
    assert.ok(step.canary.p99Ms! > 2 * step.stable.p99Ms!, `canary p99 ${step.canary.p99Ms} ms against stable ${step.stable.p99Ms} ms`)
  assert.equal(await stableState(), before)
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.d.first}`), `the stable pods run ${id}`)
  assert.equal(await leftovers(), [])
  console.log(
    `      slow release: aborted after ${r.seconds.toFixed(1)} s; canary p99 ${failedSteps.map((x) => x.canary.p99Ms).join(', ')} ms against stable ${failedSteps.map((x) => x.stable.p99Ms).join(', ')} ms; searches through the Service p99 ${searches.p99Ms} ms`,
  )
})

t('a good release passes its smoke test and analysis and is promoted: every pod runs its digest', async () => {
  const { result: r, docs, searches } = await underLoad(() => deploy(s.d.good))
  assert.is(r.code, 0, r.out)
  assert.is(r.report.result, 'deployed')
  const c = r.report.canary!
  assert.is(c.decision, 'promoted')
  assert.equal([c.weight, c.replicas, c.stableReplicas], [34, 1, 2])
  assert.is(c.smoke?.passed, true)
  assert.match(c.smoke!.lines.at(-1)!, /^smoke test passed: 4 documents, the list, search and health at /)
  assert.is(c.analysis?.result?.result, 'pass')
  assert.is(c.analysis?.prometheus, 'http://127.0.0.1:19090')
  const steps = c.analysis!.result!.steps
  assert.ok(steps.filter((x) => x.verdict === 'pass').length >= 3, 'a window of passing checks')
  for (const step of steps.filter((x) => x.verdict === 'pass')) {
    assert.ok(step.canary.requests >= 20 && step.stable.requests > 0, JSON.stringify(step))
    assert.is(step.canary.successRate, 100)
    assert.is(step.checks.length, 5)
  }
  const ids = await imageIDs()
  assert.is(ids.length, 2)
  for (const id of ids) assert.ok(id.endsWith(`@${s.d.good}`), `after the promotion the runtime reports ${id}`)
  assert.equal(await leftovers(), [])
  assert.is(docs.failed + searches.failed, 0, `${docs.failures.concat(searches.failures).join('; ')}`)
  console.log(
    `      good release: promoted after ${r.seconds.toFixed(1)} s (canary ${c.seconds} s); canary p99 ${steps.map((x) => x.canary.p99Ms).join(', ')} ms against stable ${steps.map((x) => x.stable.p99Ms).join(', ')} ms; ${docs.sent + searches.sent} requests, none failed`,
  )
})

t('a Prometheus that does not answer stops the deploy in one line before any canary starts', async () => {
  // The cluster as a real one is deployed to: its context declared for staging, with the Prometheus the file names
  // (the local cluster's own is used only without KUBE_CONTEXT) and this machine's key as the signer.
  const port = await unusedPort()
  const key = keyFingerprint(readFileSync(localKeyPaths(s.cache).pub, 'utf8'))
  environments({ contexts: [s.kube.context], signers: [{ key }], prometheus: `http://127.0.0.1:${port}`, canary: CANARY })
  try {
    const before = await stableState()
    const r = await deploy(s.d.first, { KUBE_CONTEXT: s.kube.context, KUBECONFIG: s.kube.kubeconfig! })
    assert.is.not(r.code, 0, r.out)
    assert.is(
      r.last,
      `✖ deploy: canary analysis cannot run: Prometheus at http://127.0.0.1:${port} does not answer (ECONNREFUSED); no canary was started, the stable pods are unchanged`,
    )
    assert.is(r.report.result, 'failed')
    assert.equal(await stableState(), before)
    for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.d.good}`), id)
    assert.equal(await leftovers(), [])
  } finally {
    environments({ canary: CANARY })
  }
})

t.run()
