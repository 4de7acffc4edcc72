/**
 * The deploy stage end to end, run as `npm run ci:deploy` runs it, against the
 * local cluster with its real node: the image the build stage pushed to the
 * local registry is pulled by digest, its containers run under the chart's
 * security context, probes decide readiness, and rollouts replace real pods.
 * Every assertion reads what the cluster (or the node's kernel) reports.
 * The cluster is started if needed and, if this test started it, stopped at
 * the end (state is kept). Each run's release lives in its own namespace.
 */
import { spawn } from 'node:child_process'
import { closeSync,mkdtempSync,openSync,readFileSync,rmSync,writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { pushVariant } from '../../bench/lib/deploy.ts'
import { cachedBinaries,type ClusterBinaries } from '../../lib/tools/kube.ts'
import { loadConfig } from '../../lib/core/config.ts'
import { CHART_DIR,chartFullname,podSelector } from '../../lib/deploy/deploy.ts'
import { history,type HelmTarget } from '../../lib/deploy/helm.ts'
import { deleteNamespace,kubeFlags,type KubeTarget } from '../../lib/deploy/kube.ts'
import { clusterStateDir,clusterStatus,ensureCluster,stopCluster } from '../../lib/sandbox/cluster.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { isLocalTarget,runLoad,serviceProgrammed,type LoadResult } from '../../bench/lib/load.ts'
import { CONTAINERD_NAMESPACE,nodeDirs } from '../../lib/sandbox/node-config.ts'
import { ensureRegistry } from '../../lib/sandbox/registry.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { writeReport,type Report } from '../../lib/core/reports.ts'
import { ANY_EXIT,run } from '../../lib/core/run.ts'
import type { TrackedPod } from '../../lib/deploy/track.ts'
import { copyEnv } from '../helpers/repo-copy.ts'
import { attestAsScan,signAsBuild } from '../helpers/signed-image.ts'
import { RolloutStopped,upgradeTracked } from '../../lib/deploy/track.ts'
import { setUp } from '../helpers/hooks.ts'
import { buildReportFor,scanReportFor,writeBuildAndScan } from '../helpers/reports.ts'
import { writeAdmissionValues } from '../../lib/deploy/admission.ts'

const t = suite('e2e: deploy (real node)')
const ALL_OK = { okCodes: ANY_EXIT }
const REPO = '127.0.0.1:5000/local/agent-docs'
/** The commit build.json names and every test image's signed provenance records (deploy checks the two agree). */
/** The commit the test images are recorded as built from: an ancestor of HEAD that has the committed scan policy (deploy reads it there). */
let COMMIT = ''
/** Where Dockerfile.optimized puts the served documents (DOCS_DIR). */
const DOCS_IN_IMAGE = 'usr/local/share/doc-server/docs'
/**
 * The second image serves one large document: 1 MiB (the server's per-document
 * limit) of a control character that JSON escapes to six bytes, so the 6 MiB
 * answer cannot fit in the socket buffers of a client that does not read, and
 * a request for it stays in flight for as long as that client waits.
 */
const LARGE_DOC = 'large'
const largeDoc = () => '\u0001'.repeat(1024 * 1024)
const fake = (n: number) => `sha256:${n.toString(16).padStart(2, '0').repeat(32)}`

interface State {
  cache: string
  startedCluster: boolean
  bins: ClusterBinaries
  kube: KubeTarget
  helm: HelmTarget
  docker: string
  namespace: string
  reports: string
  /** Working images, pushed: the build stage's own, and copies differing by one label (new digests). */
  digests: string[]
  /** Copies signed as built from this clone's HEAD and HEAD~1, for the commit-order test. */
  newer: { digest: string; sha: string }
  older: { digest: string; sha: string }
  /** A copy signed and scanned again and again, as repeated builds of one commit leave it. */
  quiet?: string
  /** Values that make every pod crash at start (the server refuses a DOCS_DIR that does not exist). */
  crashing: string
}
const s = {} as State
const release = () => ({ name: 'doc-server', namespace: s.namespace })

type Pod = TrackedPod

/** build.json and scan.json as the build and scan stages leave them for `d`. */
function reportsFor(d: string, scan: Report<'scan'> = scanReportFor(REPO, d), commit = COMMIT) {
  writeBuildAndScan(s.reports, REPO, d, { tag: 'e2e-deploy', commit, branch: 'e2e', scan })
}

async function deploy(env: NodeJS.ProcessEnv = {}, args: string[] = []) {
  const started = performance.now()
  const r = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'deploy.ts'), ...args], {
    cwd: repoRoot,
    env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: s.reports, DEPLOY_ENV: 'staging', DEPLOY_NAMESPACE: s.namespace, RELEASE_NAME: 'doc-server', KUBE_CONTEXT: '', DEPLOY_TIMEOUT_SECS: '180', DEPLOY_VALUES_FILE: '', ...env },
    ...ALL_OK,
  })
  const out = (r.stdout + r.stderr).trim()
  const report = JSON.parse(readFileSync(join(s.reports, 'deploy.json'), 'utf8')) as Report<'deploy'>
  return { code: r.exitCode, out, last: out.split('\n').at(-1) ?? '', report, seconds: (performance.now() - started) / 1000 }
}

async function kubectl(...args: string[]) {
  return run([s.bins.kubectl, ...kubeFlags(s.kube), ...args], { timeoutMs: 60_000 })
}

async function pods(): Promise<Pod[]> {
  const r = await kubectl('-n', s.namespace, 'get', 'pods', '-l', podSelector('doc-server'), '-o', 'json')
  return (JSON.parse(r.stdout) as { items: Pod[] }).items.filter((p) => !p.metadata.deletionTimestamp)
}

/** What the runtime reports each serving pod actually runs (the resolved image, not the spec). */
async function imageIDs(): Promise<string[]> {
  return (await pods()).flatMap((p) => (p.status?.containerStatuses ?? []).map((c) => c.imageID ?? '')).sort()
}

async function clusterIp(): Promise<string> {
  const ip = (await kubectl('-n', s.namespace, 'get', 'service', chartFullname('doc-server'), '-o', 'jsonpath={.spec.clusterIP}')).stdout.trim()
  for (let i = 0; i < 30 && !(await serviceProgrammed(ip)); i++) await new Promise((r) => setTimeout(r, 1000))
  assert.ok(await serviceProgrammed(ip), `kube-proxy has not programmed ${ip}; no traffic is sent to an address it does not own`)
  return ip
}

/** Load through the Service for as long as `during` runs (capped in requests and time). */
async function underLoad<T>(during: () => Promise<T>, maxSeconds: number): Promise<{ result: T; load: LoadResult }> {
  const host = await clusterIp()
  const ac = new AbortController()
  const loading = runLoad({ host, port: 80, path: '/api/docs', concurrency: 4, maxRequests: 20_000, maxSeconds, signal: ac.signal })
  try {
    return { result: await during(), load: await (ac.abort(), loading) }
  } finally {
    ac.abort()
    await loading
  }
}

setUp(t, 'e2e: deploy (real node)', async () => {
  const config = loadConfig()
  s.cache = config.cacheDir
  s.docker = (await ensureDockerEngine(config.docker)).docker
  await ensureRegistry('127.0.0.1:5000')
  const kubectlBin = cachedBinaries(s.cache).find((b) => b.name === 'kubectl')!
  s.startedCluster = (await clusterStatus(s.cache, kubectlBin.present ? kubectlBin.path : undefined)) !== 'running'
  const cluster = await ensureCluster(s.cache)
  s.bins = cluster.binaries
  s.kube = { kubectl: s.bins.kubectl, kubeconfig: cluster.kubeconfig, context: cluster.context }
  s.helm = { helm: s.bins.helm, kubeconfig: cluster.kubeconfig, context: cluster.context }
  s.namespace = `doc-server-e2e-${process.pid}`
  s.reports = mkdtempSync(join(tmpdir(), 'deploy-e2e-'))
  // The real image, as the build stage pushes it (BuildKit's cache makes this quick after the first build).
  const built = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'build.ts')], {
    cwd: repoRoot,
    env: copyEnv({ REPORTS_DIR: s.reports, IMAGE_TAG: 'e2e-deploy', PUSH: 'true', REGISTRY: '127.0.0.1:5000' }),
    timeoutMs: 60 * 60_000,
    ...ALL_OK,
  })
  assert.is(built.exitCode, 0, `build stage failed:\n${(built.stdout + built.stderr).split('\n').slice(-20).join('\n')}`)
  const d1 = (JSON.parse(readFileSync(join(s.reports, 'build.json'), 'utf8')) as { image: { digest: string } }).image.digest
  s.digests = [d1, await pushVariant(s.docker, REPO, `${REPO}@${d1}`, 'e2e-2', { [`${DOCS_IN_IMAGE}/${LARGE_DOC}.md`]: largeDoc() }), await pushVariant(s.docker, REPO, `${REPO}@${d1}`, 'e2e-3')]
  // Deploy verifies signatures and attestations in the registry: each digest gets what the build and scan stages attach.
  const [newer, older] = [(await run(['git', 'rev-parse', 'HEAD'], { cwd: repoRoot })).stdout.trim(), await olderWithPolicy()]
  COMMIT = older
  const git = { sha: COMMIT, shortSha: COMMIT.slice(0, 7), branch: 'e2e', dirty: false }
  for (const d of s.digests) {
    await signAsBuild(config, REPO, d, git, s.reports)
    await attestAsScan(config, REPO, d, s.reports)
  }
  for (const [key, sha] of [['newer', newer], ['older', older]] as const) {
    const digest = await pushVariant(s.docker, REPO, `${REPO}@${d1}`, `e2e-${key}`)
    await signAsBuild(config, REPO, digest, { sha, shortSha: sha.slice(0, 7), branch: 'e2e', dirty: false }, s.reports)
    await attestAsScan(config, REPO, digest, s.reports)
    s[key] = { digest, sha }
  }
  s.crashing = join(s.reports, 'bad-docs-dir.yaml')
  writeFileSync(s.crashing, 'docsDir: /no/such/docs\n')
})

/** The newest ancestor of HEAD (not HEAD) whose tree has the committed scan policy: an older commit deploy can still judge. */
async function olderWithPolicy(): Promise<string> {
  const ancestors = (await run(['git', 'rev-list', '--max-count=200', 'HEAD~1'], { cwd: repoRoot })).stdout.trim().split('\n')
  for (const c of ancestors) if ((await run(['git', 'cat-file', '-e', `${c}:.scan-policy.yaml`], { cwd: repoRoot, okCodes: [128] })).exitCode === 0) return c
  throw new Error('no ancestor of HEAD has .scan-policy.yaml')
}

t.after(async () => {
  // Clean-up must not hide a test's own failure (a cluster that went away, say), nor a set-up that stopped half-way.
  if (s.helm && s.namespace) {
    await run([s.helm.helm, 'uninstall', 'doc-server', '--kubeconfig', s.kube.kubeconfig!, '--kube-context', s.kube.context, '-n', s.namespace, '--wait'], ALL_OK)
    await deleteNamespace(s.kube, s.namespace).catch((err: Error) => console.error(`e2e: deploy: namespace ${s.namespace} not removed: ${err.message}`))
  }
  if (s.reports) rmSync(s.reports, { recursive: true, force: true })
  if (s.startedCluster) await stopCluster(s.cache)
})

t('bad input is refused with one line before the cluster is touched', async () => {
  const cases: [string, () => void, NodeJS.ProcessEnv, RegExp][] = [
    ['no digest', () => writeReport(s.reports, 'build', buildReportFor(REPO, null)), {}, /names no image digest/],
    ['scan failed', () => reportsFor(fake(1), scanReportFor(REPO, fake(1), 'fail', '1 CRITICAL')), {}, /did not pass \(decision: fail; 1 CRITICAL\)/],
    ['scan of another digest', () => reportsFor(fake(1), scanReportFor(REPO, fake(2))), {}, /is not the built image/],
    ['unsigned digest', () => reportsFor(fake(1)), {}, /deploy: refused: sha256:.{12}… has no signature by/],
    ['schema violation', () => (reportsFor(s.digests[0]!), writeFileSync(join(s.reports, 'bad.yaml'), 'replicaCount: many\n')), { DEPLOY_VALUES_FILE: join(s.reports, 'bad.yaml') }, /chart: values refused: .*replicaCount/],
    ['grace not below the timeout', () => reportsFor(fake(1)), { DEPLOY_READINESS_GRACE_SECS: '200' }, /DEPLOY_READINESS_GRACE_SECS="200" is not valid/],
    ['unknown environment', () => reportsFor(s.digests[0]!), { DEPLOY_ENV: 'qa' }, /DEPLOY_ENV="qa" is not valid/],
    ['undeclared context', () => reportsFor(s.digests[0]!), { KUBE_CONTEXT: 'no-such-context', KUBECONFIG: s.kube.kubeconfig }, /^✖ deploy: refused: KUBE_CONTEXT "no-such-context" is not declared for DEPLOY_ENV=staging in charts\/doc-server\/environments\.yaml/],
    // The local cluster's own context, named: its name grants nothing, it must be declared like any other (the target's own checks: test/e2e/target.test.ts).
    ['the local context by name', () => reportsFor(s.digests[0]!), { KUBE_CONTEXT: s.kube.context, KUBECONFIG: s.kube.kubeconfig! }, new RegExp(`^✖ deploy: refused: KUBE_CONTEXT "${s.kube.context}" is not declared for DEPLOY_ENV=staging`)],
  ]
  for (const [what, arrange, env, re] of cases) {
    arrange()
    const r = await deploy(env)
    assert.is.not(r.code, 0, what)
    assert.match(r.last, re, `${what}: ${r.last}`)
  }
  assert.is((await kubectl('get', 'namespace', s.namespace).catch(() => undefined)) === undefined, true, 'nothing was created')
})

t('install, then a rolling upgrade under load: every pod runs the pushed digest, no request fails', async () => {
  const [d1, d2] = s.digests as [string, string]
  reportsFor(d1)
  const first = await deploy()
  assert.is(first.code, 0, first.out)
  assert.is(first.report.result, 'deployed')
  const ids1 = await imageIDs()
  assert.is(ids1.length, 2)
  for (const id of ids1) assert.ok(id.endsWith(`@${d1}`), `the runtime reports ${id}, not ${d1}`)

  reportsFor(d2)
  const { result: second, load } = await underLoad(() => deploy(), 150)
  assert.is(second.code, 0, second.out)
  assert.is(second.report.previousRevision, 1)
  const ids2 = await imageIDs()
  assert.is(ids2.length, 2)
  for (const id of ids2) assert.ok(id.endsWith(`@${d2}`), `the runtime reports ${id}, not ${d2}`)
  assert.ok(load.sent >= 50, `only ${load.sent} requests were sent during the rollout`)
  assert.is(load.failed, 0, `${load.failed} of ${load.sent} requests failed during the rolling update: ${load.failures.join('; ')}`)
})

t('the runtime enforces the security context: uid 65532, read-only root filesystem (seen from the node)', async () => {
  const d = nodeDirs(join(clusterStateDir(s.cache), 'node'))
  const pod = (await pods())[0]!
  const id = (pod.status?.containerStatuses?.[0]?.containerID ?? '').replace(/^containerd:\/\//, '')
  assert.ok(id, 'the pod reports a container id')
  const tasks = (await run(['ctr', '--address', d.containerd.socket, '--namespace', CONTAINERD_NAMESPACE, 'tasks', 'ls'])).stdout
  const pid = Number(tasks.split('\n').find((l) => l.startsWith(id))?.trim().split(/\s+/)[1])
  assert.ok(pid > 0, `containerd runs no task for ${id}`)
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  assert.match(status, /^Uid:\s+65532\s+65532\s+65532\s+65532$/m, 'the server process runs as 65532')
  assert.match(status, /^CapEff:\s+0+$/m, 'with no capabilities')
  // Even root on the node cannot write into the container's root filesystem: its mount is read-only.
  let code = ''
  try {
    closeSync(openSync(`/proc/${pid}/root/e2e-write-probe`, 'w'))
  } catch (err) {
    code = (err as NodeJS.ErrnoException).code ?? ''
  }
  assert.is(code, 'EROFS', 'a write to the container root filesystem fails as read-only')
})

t('a slow in-flight request completes while its pod is being replaced (preStop, then SIGTERM drain)', async () => {
  const pod = (await pods())[0]!
  const podIp = (JSON.parse((await kubectl('-n', s.namespace, 'get', 'pod', pod.metadata.name, '-o', 'json')).stdout) as { status: { podIP: string } }).status.podIP
  assert.ok(isLocalTarget(podIp), `${podIp} is an address of the node's own pod network`)
  // A whole request for the large document, then no reading: the server's answer fills the socket
  // buffers and waits, in flight, through preStop and SIGTERM, until this client reads again.
  const sock = connect(8080, podIp)
  sock.pause()
  const chunks: Uint8Array[] = []
  sock.on('data', (d: Uint8Array) => chunks.push(d))
  const closed = new Promise<void>((res) => sock.on('close', () => res()))
  await new Promise<void>((res, rej) => (sock.once('connect', () => res()), sock.once('error', rej)))
  sock.write(`GET /api/docs/${LARGE_DOC} HTTP/1.1\r\nHost: doc-server\r\nConnection: close\r\n\r\n`)
  await kubectl('-n', s.namespace, 'delete', 'pod', pod.metadata.name, '--wait=false')
  // preStop (5 s in the chart's defaults), then SIGTERM: the server stops accepting but owes this answer.
  await new Promise((res) => setTimeout(res, 9000))
  const terminating = await kubectl('-n', s.namespace, 'get', 'pod', pod.metadata.name, '-o', 'jsonpath={.metadata.deletionTimestamp}').then((r) => r.stdout.trim(), () => 'gone')
  assert.ok(terminating && terminating !== 'gone', 'the pod was still draining, being replaced, while the request was in flight')
  sock.resume()
  await closed
  const response = Buffer.concat(chunks)
  const headEnd = response.indexOf('\r\n\r\n')
  const head = response.subarray(0, headEnd).toString()
  assert.match(head, /^HTTP\/1\.1 200 OK/, `the in-flight request got: ${head.slice(0, 80)}`)
  const length = Number(/content-length: (\d+)/i.exec(head)?.[1])
  assert.ok(length > 6_000_000, `a large answer (${length} bytes)`)
  assert.is(response.length - headEnd - 4, length, 'the whole body arrived')
  await kubectl('-n', s.namespace, 'rollout', 'status', `deployment/${chartFullname('doc-server')}`, '--timeout=90s')
})

t('a crashing release is stopped and rolled back within 60 s, quoting the server; the old pods keep serving', async () => {
  const [, d2, d3] = s.digests as [string, string, string]
  const values = join(s.reports, 'bad-docs-dir.yaml')
  writeFileSync(values, 'docsDir: /no/such/docs\n')
  reportsFor(d3)
  const before = (await history(s.helm, release())).at(-1)!.revision
  const { result: r, load } = await underLoad(() => deploy({ DEPLOY_VALUES_FILE: values }), 120)
  assert.is.not(r.code, 0)
  assert.ok(r.seconds < 60, `stopped and rolled back after ${r.seconds.toFixed(1)} s`)
  assert.match(r.last, new RegExp(`rolled back to revision ${before}`))
  assert.match(r.last, /crash loop \(restarted 2 times/, r.last)
  assert.match(r.last, /DOCS_DIR="\/no\/such\/docs" does not exist/, `the server's own error line: ${r.last}`)
  assert.is(r.report.result, 'rolled-back')
  assert.is(load.failed, 0, `the previous revision stopped serving: ${load.failures.join('; ')}`)
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${d2}`), `after the rollback the runtime reports ${id}`)
})

t('a digest the node cannot pull fails fast as an image-pull failure and is rolled back', async () => {
  // The deploy stage never hands Helm a digest nobody signed (the first test): that refusal comes before the
  // cluster. The tracker is what stops a digest the node still cannot pull (a registry that lost it, a pull
  // secret gone), so here it drives Helm itself, exactly as the stage does after verification.
  const [, d2] = s.digests as [string, string]
  const missing = fake(9)
  const before = (await history(s.helm, release())).at(-1)!.revision
  const started = performance.now()
  let err: unknown
  try {
    await upgradeTracked(
      s.helm,
      release(),
      { chart: CHART_DIR, valueFiles: [join(CHART_DIR, 'values-staging.yaml'), writeAdmissionValues(s.reports, { enabled: false })], sets: { 'image.repository': REPO, 'image.digest': missing }, timeoutSecs: 180 },
      { kube: s.kube, image: `${REPO}@${missing}`, selector: podSelector('doc-server'), graceSecs: 60 },
    )
  } catch (e) {
    err = e
  }
  const seconds = (performance.now() - started) / 1000
  assert.instance(err, RolloutStopped, `the rollout was not stopped: ${String(err)}`)
  assert.ok(seconds < 60, `took ${seconds.toFixed(1)} s`)
  assert.match((err as RolloutStopped).reason, /image pull failure \((ErrImagePull|ImagePullBackOff)/)
  const last = (await history(s.helm, release())).at(-1)!
  assert.is(last.status, 'deployed')
  assert.ok(last.revision > before, 'a rollback is a new revision')
  assert.match(last.description ?? '', new RegExp(`Rollback to ${before}`))
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${d2}`), `after the rollback the runtime reports ${id}`)
})

const RECORDED = 30

t('a release left in pending-upgrade by a killed helm is recovered, judged by the timeout recorded with it', async () => {
  // A real interrupted upgrade: helm is killed while it waits for pods that crash at start and never become ready.
  const helm = spawn(s.helm.helm, ['upgrade', 'doc-server', CHART_DIR, '--kubeconfig', s.kube.kubeconfig!, '--kube-context', s.kube.context, '-n', s.namespace,
    '--values', join(CHART_DIR, 'values-staging.yaml'), '--values', writeAdmissionValues(s.reports, { enabled: false }), '--values', s.crashing, '--set-string', `image.repository=${REPO}`, '--set-string', `image.digest=${s.digests[2]}`, '--wait', '--timeout', '600s',
    // What the deploy stage records: this revision's own deploy allows itself RECORDED seconds.
    '--labels', `doc-server.dev/commit=${COMMIT},doc-server.dev/timeout-secs=${RECORDED}`], { stdio: 'ignore' })
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
  reportsFor(s.digests[0]!)
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
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.digests[0]}`), `after the recovery the runtime reports ${id}`)
})

t('an older commit is refused before anything changes; --allow-older rolls back on purpose', async () => {
  const [newer, older] = [s.newer.sha, s.older.sha]
  // The release runs the test commit eeee…, which is in no clone: the order cannot be shown.
  reportsFor(s.newer.digest, undefined, newer)
  const unknown = await deploy()
  assert.is.not(unknown.code, 0)
  assert.match(unknown.last, /^✖ deploy: refused: the release runs commit eeeeeeeeeeee, which is not in this clone/)
  const moved = await deploy({}, ['--allow-older'])
  assert.is(moved.code, 0, moved.out)
  assert.is(moved.report.commit, newer)
  const before = await history(s.helm, release())

  reportsFor(s.older.digest, undefined, older)
  const r = await deploy()
  assert.is.not(r.code, 0)
  assert.is(r.last, `✖ deploy: refused: commit ${older.slice(0, 12)} does not descend from ${newer.slice(0, 12)}, which the release runs (an older or diverged pipeline); pass --allow-older to roll back on purpose`)
  assert.equal(await history(s.helm, release()), before, 'no revision was made')
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.newer.digest}`), `the refused deploy left ${id}`)

  const back = await deploy({}, ['--allow-older'])
  assert.is(back.code, 0, back.out)
  assert.match(back.report.order ?? '', new RegExp(`^rolled ${newer.slice(0, 12)} back to ${older.slice(0, 12)} \\(--allow-older\\)$`))
  for (const id of await imageIDs()) assert.ok(id.endsWith(`@${s.older.digest}`), `after --allow-older the runtime reports ${id}`)
})

/** An attestation payload (base64 of a JSON object, as in a DSSE envelope) or an envelope's payload field. */
const PAYLOAD = /eyJ[A-Za-z0-9+/]{40,}|"payload"\s*:/
/** Output length with every number as one character: durations, revisions and times vary between runs, the words do not. */
const wordsLength = (out: string) => out.replace(/\d+/g, '#').length

t('one digest built and scanned ten times: deploy prints one line per check and no payload, no more than after one; cosign\'s output is in the report', async () => {
  const config = loadConfig()
  const git = { sha: s.newer.sha, shortSha: s.newer.sha.slice(0, 7), branch: 'e2e', dirty: false }
  const digest = await pushVariant(s.docker, REPO, `${REPO}@${s.digests[0]}`, `e2e-quiet-${process.pid}`)
  s.quiet = digest
  await signAsBuild(config, REPO, digest, git, s.reports)
  await attestAsScan(config, REPO, digest, s.reports)
  reportsFor(digest, undefined, s.newer.sha)
  const rolled = await deploy()
  assert.is(rolled.code, 0, rolled.out)
  // Deployed again unchanged: the output to compare with, Helm having nothing to roll out either time.
  const once = await deploy()
  assert.is(once.code, 0, once.out)
  for (let i = 0; i < 9; i++) {
    await signAsBuild(config, REPO, digest, git, s.reports)
    await attestAsScan(config, REPO, digest, s.reports)
  }
  const tenth = await deploy()
  assert.is(tenth.code, 0, tenth.out)
  for (const r of [rolled, once, tenth]) assert.not.match(r.out, PAYLOAD, `an attestation payload on screen:\n${r.out}`)
  for (const check of [/signature: signed by key sha256:[0-9a-f]{64}$/, /scan: passed at \S+ by Trivy /, /provenance: commit [0-9a-f]{12} of /, /SBOM: CycloneDX \(attestation sha256:/]) {
    assert.is(tenth.out.split('\n').filter((l) => check.test(l)).length, 1, `one line for ${check}:\n${tenth.out}`)
  }
  assert.is(tenth.out.split('\n').length, once.out.split('\n').length, `after ten builds:\n${tenth.out}\nafter one:\n${once.out}`)
  assert.ok(wordsLength(tenth.out) <= wordsLength(once.out), `the output grew from ${once.out.length} to ${tenth.out.length} bytes`)
  assert.match(tenth.report.details ?? '', /^\$ cosign verify --local-image /m, 'the report holds the verification\'s own commands')
  assert.match(tenth.report.details ?? '', PAYLOAD, 'and their whole output')
  const debug = await deploy({ DEBUG: '1' })
  assert.is(debug.code, 0, debug.out)
  assert.match(debug.out, PAYLOAD, 'with DEBUG, cosign\'s own output is on screen too')
})

t('after cluster:down, the next deploy waits for the pods the node restarts: it passes, every pod ready on the digest', async () => {
  assert.ok(s.quiet, 'the test above deployed a digest')
  reportsFor(s.quiet!, undefined, s.newer.sha)
  const before = (await pods()).flatMap((p) => (p.status?.containerStatuses ?? []).map((c) => c.containerID ?? ''))
  const down = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'cluster.ts'), 'down'], { cwd: repoRoot, timeoutMs: 300_000, ...ALL_OK })
  assert.is(down.exitCode, 0, down.stdout + down.stderr)
  // Helm finds nothing to change and the Deployment still says what it said before the stop; the pods are being restarted.
  const r = await deploy()
  assert.is(r.code, 0, r.out)
  assert.is(r.report.result, 'deployed')
  const now = await pods()
  assert.is(now.length, 2)
  for (const p of now) {
    for (const c of p.status?.containerStatuses ?? []) {
      assert.ok(c.ready, `${p.metadata.name} is not ready after the deploy passed`)
      assert.ok(c.imageID?.endsWith(`@${s.quiet}`), `${p.metadata.name} runs ${c.imageID}`)
      assert.not.ok(before.includes(c.containerID ?? ''), `${p.metadata.name} still reports container ${c.containerID} from before the stop`)
    }
  }
})

t.run()
