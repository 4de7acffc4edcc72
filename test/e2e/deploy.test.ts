/**
 * The deploy stage end to end, run as `npm run ci:deploy` runs it, against the
 * local cluster (real kube-apiserver, controller-manager, scheduler and etcd;
 * kwok simulating nodes and pod status). It builds and starts that cluster if
 * needed and, if it started it, stops it again at the end (state is kept).
 * Every release it makes lives in its own namespace, removed afterwards.
 *
 * kwok runs no containers and no probes: a pod is "ready" because a kwok stage
 * says so, and the failing rollout is a project stage that keeps pods
 * annotated `simulate.doc-server.dev/readiness: never` unready.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { cachedBinaries, type ClusterBinaries } from '../../lib/local/cluster-build.ts'
import { loadConfig } from '../../lib/core/config.ts'
import { CHART_DIR, podSelector, type DeployReport } from '../../lib/deploy/deploy.ts'
import { history, type HelmTarget } from '../../lib/deploy/helm.ts'
import { deleteNamespace, listPods, type KubeTarget } from '../../lib/deploy/kube.ts'
import { NEVER_READY_ANNOTATION, clusterStatus, ensureCluster, stopCluster } from '../../lib/local/cluster.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { writeReport } from '../../lib/core/report.ts'
import { ensureDockerEngine } from '../../lib/local/docker.ts'
import { LOCAL_REGISTRY, ensureRegistry } from '../../lib/local/registry.ts'
import { pushSignedImage, removeTinyImages } from '../helpers/signed-image.ts'
import { ANY_EXIT, run } from '../../lib/core/run.ts'

const t = suite('e2e: deploy')
const ALL_OK = { okCodes: ANY_EXIT }
const REPO = '127.0.0.1:5000/local/deploy-e2e'
/** Digests 1-4 are real images in the local registry, signed and attested as the pipeline does (deploy verifies them); 5 is only ever given to helm directly. */
const digest = (n: number) => s.digests[n] ?? `sha256:${n.toString(16).padStart(2, '0').repeat(32)}`
/** The commit reportsFor's build.json names, and the signed provenance of digests 1-4. */
const COMMIT = 'e'.repeat(40)

interface State {
  cache: string
  startedCluster: boolean
  bins: ClusterBinaries
  kube: KubeTarget
  helm: HelmTarget
  namespace: string
  reports: string
  neverReady: string
  digests: Record<number, string>
  commits: Record<number, string>
  docker: string
}
const s = {} as State
const release = () => ({ name: 'doc-server', namespace: s.namespace })

/** build.json and scan.json as the build and scan stages leave them for `d`. */
function reportsFor(d: string, scan: object = { decision: 'pass', image: { ref: `${REPO}@${d}`, digest: d } }, commit = COMMIT) {
  writeReport(s.reports, 'build', { image: { ref: `${REPO}:e2e@${d}`, digest: d, repository: REPO, tag: 'e2e' }, pushed: true, commit: { sha: commit, branch: 'e2e', dirty: false } })
  writeReport(s.reports, 'scan', scan)
}

async function deploy(env: NodeJS.ProcessEnv = {}, args: string[] = []) {
  const r = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'deploy.ts'), ...args], {
    cwd: repoRoot,
    env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: s.reports, DEPLOY_ENV: 'staging', DEPLOY_NAMESPACE: s.namespace, RELEASE_NAME: 'doc-server', KUBE_CONTEXT: '', DEPLOY_TIMEOUT_SECS: '120', DEPLOY_VALUES_FILE: '', ...env },
    ...ALL_OK,
  })
  const out = (r.stdout + r.stderr).trim()
  const report = JSON.parse(readFileSync(join(s.reports, 'deploy.json'), 'utf8')) as DeployReport
  return { code: r.exitCode, out, last: out.split('\n').at(-1) ?? '', report }
}

async function podImages(): Promise<string[]> {
  const pods = await listPods(s.kube, s.namespace, podSelector('doc-server'))
  return pods.filter((p) => !p.metadata.deletionTimestamp).map((p) => p.spec.containers[0]!.image).sort()
}

async function namespaceExists(): Promise<boolean> {
  const r = await run([s.bins.kubectl, '--kubeconfig', s.kube.kubeconfig!, '--context', s.kube.context, 'get', 'namespace', s.namespace], ALL_OK)
  return r.exitCode === 0
}

t.before(async () => {
  s.cache = loadConfig().cacheDir
  const kubectl = cachedBinaries(s.cache).find((b) => b.name === 'kubectl')!
  s.startedCluster = (await clusterStatus(s.cache, kubectl.present ? kubectl.path : undefined)) !== 'running'
  const cluster = await ensureCluster(s.cache)
  s.bins = cluster.binaries
  s.kube = { kubectl: s.bins.kubectl, kubeconfig: cluster.kubeconfig, context: cluster.context }
  s.helm = { helm: s.bins.helm, kubeconfig: cluster.kubeconfig, context: cluster.context }
  s.namespace = `doc-server-e2e-${process.pid}`
  s.reports = mkdtempSync(join(tmpdir(), 'deploy-e2e-'))
  const config = loadConfig({ ...process.env }, {})
  const docker = (s.docker = (await ensureDockerEngine(config.docker)).docker)
  await ensureRegistry(LOCAL_REGISTRY)
  s.digests = {}
  s.commits = {}
  for (const n of [1, 2, 3, 4]) {
    s.digests[n] = await pushSignedImage({ config, docker, repository: REPO, label: `deploy-${n}`, git: { sha: COMMIT, shortSha: COMMIT.slice(0, 12), branch: undefined, dirty: false }, work: s.reports })
  }
  // Digests 6 and 7: built from this clone's HEAD and HEAD~1, for the commit-order test.
  for (const [n, rev] of [[6, 'HEAD'], [7, 'HEAD~1']] as const) {
    const sha = (await run(['git', 'rev-parse', rev], { cwd: repoRoot })).stdout.trim()
    s.commits[n] = sha
    s.digests[n] = await pushSignedImage({ config, docker, repository: REPO, label: `deploy-${n}`, git: { sha, shortSha: sha.slice(0, 12), branch: undefined, dirty: false }, work: s.reports })
  }
  s.neverReady = join(s.reports, 'never-ready.yaml')
  writeFileSync(s.neverReady, `podAnnotations:\n  ${NEVER_READY_ANNOTATION}: never\n`)
})

t.after(async () => {
  await run([s.helm.helm, 'uninstall', 'doc-server', '--kubeconfig', s.kube.kubeconfig!, '--kube-context', s.kube.context, '-n', s.namespace, '--wait'], ALL_OK)
  // Clean-up must not hide a test's own failure (a cluster that went away, say).
  await deleteNamespace(s.kube, s.namespace).catch((err: Error) => console.error(`e2e: deploy: namespace ${s.namespace} not removed: ${err.message}`))
  rmSync(s.reports, { recursive: true, force: true })
  if (s.docker) await removeTinyImages(s.docker)
  if (s.startedCluster) await stopCluster(s.cache)
})

t('bad input is refused with one line before the cluster is touched', async () => {
  const cases: [string, () => void, NodeJS.ProcessEnv, RegExp][] = [
    ['no digest', () => writeReport(s.reports, 'build', { image: { ref: `${REPO}:e2e` } }), {}, /names no image digest/],
    ['scan failed', () => reportsFor(digest(1), { decision: 'fail', reason: '1 CRITICAL', digest: digest(1) }), {}, /did not pass \(decision: fail; 1 CRITICAL\)/],
    ['scan of another digest', () => reportsFor(digest(1), { decision: 'pass', digest: digest(2) }), {}, /is not the built image/],
    ['unknown environment', () => reportsFor(digest(1)), { DEPLOY_ENV: 'qa' }, /DEPLOY_ENV="qa" is not valid/],
    ['schema violation', () => writeFileSync(join(s.reports, 'bad.yaml'), 'replicaCount: many\n'), { DEPLOY_VALUES_FILE: join(s.reports, 'bad.yaml') }, /chart: values refused: .*replicaCount/],
    ['undeclared context', () => undefined, { KUBE_CONTEXT: 'no-such-context', KUBECONFIG: s.kube.kubeconfig }, /^✖ deploy: refused: KUBE_CONTEXT "no-such-context" is not declared for DEPLOY_ENV=staging in charts\/doc-server\/environments\.yaml/],
    ['missing context', () => writeFileSync(join(s.reports, 'empty-kubeconfig'), 'apiVersion: v1\nkind: Config\n'), { KUBE_CONTEXT: s.kube.context, KUBECONFIG: join(s.reports, 'empty-kubeconfig') }, new RegExp(`KUBE_CONTEXT "${s.kube.context}" is not a context`)],
  ]
  for (const [what, arrange, env, re] of cases) {
    arrange()
    const r = await deploy(env)
    assert.is.not(r.code, 0, what)
    assert.match(r.last, re, `${what}: ${r.last}`)
  }
  // An API server nobody listens on: a copy of the local kubeconfig pointing at a closed port.
  const dead = join(s.reports, 'dead-kubeconfig')
  writeFileSync(dead, readFileSync(s.kube.kubeconfig!, 'utf8').replace(/server: https?:\/\/[^\s]+/g, 'server: https://127.0.0.1:1'))
  reportsFor(digest(1))
  const r = await deploy({ KUBE_CONTEXT: s.kube.context, KUBECONFIG: dead })
  assert.is.not(r.code, 0)
  assert.match(r.last, /context "kwok-doc-server" does not answer \/readyz/)
  assert.is(r.report.result, 'failed')
  assert.is(await namespaceExists(), false, 'nothing was created')
})

t('a first install and an upgrade run exactly the deployed digests', async () => {
  reportsFor(digest(1))
  const first = await deploy()
  assert.is(first.code, 0, first.out)
  assert.is(first.report.result, 'deployed')
  assert.is(first.report.revision, 1)
  assert.is(first.report.digest, digest(1))
  // Verified from the registry first: who signed, and the attestations relied on.
  assert.match(first.report.verified?.identity ?? '', /^key sha256:[0-9a-f]{64}$/)
  assert.is(first.report.verified?.provenance.commit, COMMIT)
  assert.match(first.report.verified?.scan.attestation ?? '', /^sha256:[0-9a-f]{64}$/)
  assert.equal(await podImages(), [`${REPO}@${digest(1)}`, `${REPO}@${digest(1)}`])

  reportsFor(digest(2))
  const second = await deploy()
  assert.is(second.code, 0, second.out)
  assert.is(second.report.revision, 2)
  assert.is(second.report.previousRevision, 1)
  assert.equal(await podImages(), [`${REPO}@${digest(2)}`, `${REPO}@${digest(2)}`])
})

t('a rollout that never becomes ready is rolled back, with the reason, exiting non-zero', async () => {
  reportsFor(digest(3))
  const r = await deploy({ DEPLOY_VALUES_FILE: s.neverReady, DEPLOY_TIMEOUT_SECS: '25' })
  assert.is.not(r.code, 0)
  assert.match(r.last, /rolled back to revision 2/)
  assert.match(r.last, /Unhealthy: Readiness probe failed/)
  assert.is(r.report.result, 'rolled-back')
  assert.is(r.report.previousRevision, 2)
  const h = await history(s.helm, release())
  assert.equal(h.slice(-2).map((e) => e.status), ['failed', 'deployed'])
  assert.equal(await podImages(), [`${REPO}@${digest(2)}`, `${REPO}@${digest(2)}`], 'the previous digest still serves')
})

const RECORDED = 30

t('a release left in pending-upgrade by a killed helm is recovered, judged by the timeout recorded with it', async () => {
  // A real interrupted upgrade: helm is killed while it waits for pods that never become ready.
  const helm = spawn(s.helm.helm, ['upgrade', 'doc-server', CHART_DIR, '--kubeconfig', s.kube.kubeconfig!, '--kube-context', s.kube.context, '-n', s.namespace,
    '--values', join(CHART_DIR, 'values-staging.yaml'), '--values', s.neverReady, '--set-string', `image.repository=${REPO}`, '--set-string', `image.digest=${digest(5)}`, '--wait', '--timeout', '600s',
    // What the deploy stage records: this revision's own deploy allows itself RECORDED seconds.
    '--labels', `doc-server.dev/commit=${'e'.repeat(40)},doc-server.dev/timeout-secs=${RECORDED}`], { stdio: 'ignore' })
  let helmEnded = false
  const exited = new Promise<void>((res) => helm.once('exit', () => res(void (helmEnded = true))))
  let pending: { revision: number; updated?: string } | undefined
  while (!pending) {
    // helm waits up to 600 s for pods that never get ready, so it cannot end on its own before we see pending-upgrade.
    if (helmEnded) assert.unreachable('helm upgrade ended before the release was pending-upgrade')
    await new Promise((res) => setTimeout(res, 500))
    pending = (await history(s.helm, release())).find((e) => e.status === 'pending-upgrade')
  }
  helm.kill('SIGKILL')
  await exited
  assert.is((await history(s.helm, release())).at(-1)!.status, 'pending-upgrade')

  // Younger than the timeout recorded with it, it may be that deploy still running: refused and
  // untouched, however short the caller's own DEPLOY_TIMEOUT_SECS.
  reportsFor(digest(4))
  const early = await deploy({ DEPLOY_TIMEOUT_SECS: '1' })
  assert.is.not(early.code, 0)
  assert.match(early.last, new RegExp(`has been pending-upgrade for \\d+s \\(revision ${pending.revision}; its recorded timeout is ${RECORDED}s\\); another deploy may still be running`))
  assert.is((await history(s.helm, release())).at(-1)!.status, 'pending-upgrade')

  // Older than its recorded timeout: rolled back to the last good revision, then the new digest
  // deploys, however long the caller's own DEPLOY_TIMEOUT_SECS.
  while (Date.now() - Date.parse(pending.updated ?? '') <= RECORDED * 1000) await new Promise((res) => setTimeout(res, 1000))
  const r = await deploy({ DEPLOY_TIMEOUT_SECS: '600' })
  assert.is(r.code, 0, r.out)
  assert.match(r.report.recovered ?? '', new RegExp(`revision ${pending.revision} was stuck in pending-upgrade; rolled back to revision \\d+`))
  assert.is(r.report.result, 'deployed')
  assert.equal(await podImages(), [`${REPO}@${digest(4)}`, `${REPO}@${digest(4)}`])
})

t('an older commit is refused before anything changes; --allow-older rolls back on purpose', async () => {
  const [newer, older] = [s.commits[6]!, s.commits[7]!]
  // The release runs the test commit eeee…, which is in no clone: the order cannot be shown.
  reportsFor(digest(6), undefined, newer)
  const unknown = await deploy()
  assert.is.not(unknown.code, 0)
  assert.match(unknown.last, /^✖ deploy: refused: the release runs commit eeeeeeeeeeee, which is not in this clone/)
  const moved = await deploy({}, ['--allow-older'])
  assert.is(moved.code, 0, moved.out)
  assert.is(moved.report.commit, newer)
  const before = await history(s.helm, release())

  reportsFor(digest(7), undefined, older)
  const r = await deploy()
  assert.is.not(r.code, 0)
  assert.is(r.last, `✖ deploy: refused: commit ${older.slice(0, 12)} does not descend from ${newer.slice(0, 12)}, which the release runs (an older or diverged pipeline); pass --allow-older to roll back on purpose`)
  assert.equal(await history(s.helm, release()), before, 'no revision was made')
  assert.equal(await podImages(), [`${REPO}@${digest(6)}`, `${REPO}@${digest(6)}`])

  const back = await deploy({}, ['--allow-older'])
  assert.is(back.code, 0, back.out)
  assert.match(back.report.order ?? '', new RegExp(`^rolled ${newer.slice(0, 12)} back to ${older.slice(0, 12)} \\(--allow-older\\)$`))
  assert.equal(await podImages(), [`${REPO}@${digest(7)}`, `${REPO}@${digest(7)}`])
})

t.run()
