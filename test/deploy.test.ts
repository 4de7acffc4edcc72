import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parse as parseYaml } from 'yaml'
import { goBinaryName, kubeLdflags, kubernetesWrapperGoMod } from '../lib/tools/kube.ts'
import { loadConfig } from '../lib/core/config.ts'
import { chartFullname, deployableImage, podSelector, readDeployInputs, valueFiles } from '../lib/deploy/deploy.ts'
import { pendingRecovery, schemaProblems, templateFailure, upgradeArgs, type HistoryEntry } from '../lib/deploy/helm.ts'
import { firstFailureReason, podsNotRunning, type EventJson, type PodJson } from '../lib/deploy/kube.ts'
import { API_SERVER_PORT, kwokctlConfig } from '../lib/sandbox/cluster.ts'
import { POD_SUBNET, SANDBOX_IMAGE, cniConflist, containerdConfig, kubeletConfig, nodeDirs, registryHostsToml } from '../lib/sandbox/node-config.ts'
import { iptablesWords } from '../lib/sandbox/node.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { writeReport, type Report } from '../lib/core/reports.ts'
import { parseAction } from '../tasks/cluster.ts'
import { checkOrder, labelValue, recordLabels, requireOlderAllowed, runningCommit } from '../lib/deploy/guard.ts'
import { ENVIRONMENTS_FILE, LOCAL_ENVIRONMENT, environmentFor, parseEnvironments } from '../lib/deploy/environments.ts'
import { DEFAULT_SIGNERS } from '../lib/sign/signers.ts'
import { run } from '../lib/core/run.ts'
import { refusal } from './helpers/refusal.ts'
import { deployInputs } from '../tasks/deploy.ts'

const t = suite('deploy')

const D1 = `sha256:${'a1'.repeat(32)}`
const D2 = `sha256:${'b2'.repeat(32)}`
const REPO = '127.0.0.1:5000/local/agent-docs'
const build = (digest: string | null = D1): Report<'build'> => ({
  image: { ref: `${REPO}:abc`, digest, repository: REPO, tag: 'abc', pinned: digest ? `${REPO}@${digest}` : null },
  commit: { sha: 'c'.repeat(40), branch: 'main', dirty: false },
  pushed: digest !== null,
  seconds: 1,
  build: { seconds: 1, cookCacheHit: true, cookMiss: null },
  healthySeconds: 1,
  signature: null,
})
const pass = (digest = D1): Report<'scan'> => ({ decision: 'pass', reason: 'clean', image: { scanned: `${REPO}@${digest}`, source: 'remote', digest } })

t('deploys exactly the built digest, pinned, when the scan passed it', () => {
  const img = deployableImage(build(), pass())
  assert.is(img.digest, D1)
  assert.is(img.repository, REPO)
  assert.is(img.pinned, `${REPO}@${D1}`)
  assert.is(img.commit, 'c'.repeat(40))
})

t('refuses a missing digest, a missing or failed scan, and a different scanned digest', () => {
  refusal(() => deployableImage(build(null), pass()), /names no image digest/)
  refusal(() => deployableImage(build(), undefined), /scan\.json is missing/)
  refusal(() => deployableImage(build(), { decision: 'fail', reason: '2 CRITICAL', image: { scanned: `${REPO}@${D1}`, source: 'remote', digest: D1 } }), /did not pass \(decision: fail; 2 CRITICAL\)/)
  refusal(() => deployableImage(build(), { decision: 'pass', reason: 'clean' }), /does not say which digest/)
  refusal(() => deployableImage(build(D1), pass(D2)), /is not the built image/)
})

t('a --from-report re-gate never makes an image deployable, even when it passed', () => {
  refusal(() => deployableImage(build(), { decision: 'pass', reason: 'clean', image: { scanned: 'x', source: 'report', ref: 'x' }, deployable: false }), /--from-report re-gate: a useful check, but it never makes an image deployable/)
  refusal(() => deployableImage(build(), { decision: 'pass', reason: 'clean', image: { scanned: 'x', source: 'report', digest: D1 } }), /never makes an image deployable/)
  // A pass under SCAN_* overrides is no pass for deploy either; the registry check refuses it too (checkScan).
  refusal(() => deployableImage(build(), { ...pass(), committedPolicy: false, deployable: false }), /made under another scan policy than the committed \.scan-policy\.yaml/)
})

t('reads the reports from REPORTS_DIR; a missing scan report is a refusal', () => {
  const dir = mkdtempSync(join(tmpdir(), 'deploy-'))
  assert.throws(() => readDeployInputs(dir), /build\.json is missing; run the build stage first/)
  writeReport(dir, 'build', build())
  refusal(() => readDeployInputs(dir), /scan\.json is missing/)
  writeReport(dir, 'scan', pass())
  assert.is(readDeployInputs(dir).digest, D1)
})

t('a malformed or older report is refused in one line naming the field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'deploy-'))
  // The shape older toolkits wrote: a bare commit and no image.pinned.
  writeFileSync(join(dir, 'build.json'), JSON.stringify({ ...build(), commit: 'c'.repeat(40) }))
  assert.throws(() => readDeployInputs(dir), (e: Error) => /build\.json is not a build report this toolkit reads \(commit: .*\); run the build stage again$/.test(e.message))
  writeFileSync(join(dir, 'build.json'), JSON.stringify(build('sha256:xyz')))
  assert.throws(() => readDeployInputs(dir), /\(image\.digest: a sha256:<64 hex> digest\)/)
  assert.throws(() => writeReport(dir, 'scan', { decision: 'maybe', reason: '' } as unknown as Report<'scan'>), /scan\.json would not be valid: decision:/)
})

t('every environment has a values file; an unknown one or a missing extra file is refused', () => {
  for (const env of ['dev', 'staging', 'prod']) assert.ok(valueFiles(env, undefined)[0]!.endsWith(`values-${env}.yaml`))
  refusal(() => valueFiles('qa', undefined), /environment "qa" has no values file/)
  refusal(() => valueFiles('dev', '/nonexistent/extra.yaml'), /DEPLOY_VALUES_FILE/)
  assert.throws(() => loadConfig({ DEPLOY_ENV: 'qa' }, {}), /DEPLOY_ENV="qa"/)
})

t('names follow the chart helpers', () => {
  assert.is(chartFullname('doc-server'), 'doc-server')
  assert.is(chartFullname('docs'), 'docs-doc-server')
  assert.is(podSelector('docs'), 'app.kubernetes.io/name=doc-server,app.kubernetes.io/instance=docs')
})

t('a stuck release is rolled back to its last good revision, or uninstalled', () => {
  const h = (revision: number, status: string): HistoryEntry => ({ revision, status })
  assert.equal(pendingRecovery([h(1, 'superseded'), h(2, 'deployed')]), { action: 'none' })
  assert.equal(pendingRecovery([]), { action: 'none' })
  assert.equal(pendingRecovery([h(1, 'superseded'), h(2, 'deployed'), h(3, 'pending-upgrade')]), { action: 'rollback', from: h(3, 'pending-upgrade'), to: 2 })
  assert.equal(pendingRecovery([h(1, 'deployed'), h(2, 'failed'), h(3, 'pending-rollback')]), { action: 'rollback', from: h(3, 'pending-rollback'), to: 1 })
  assert.equal(pendingRecovery([h(1, 'pending-install')]), { action: 'uninstall', from: h(1, 'pending-install') })
})

const pod = (name: string, image: string, extra: Partial<PodJson['status']> = {}, deleting = false): PodJson => ({
  metadata: { name, ...(deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}) },
  spec: { containers: [{ name: 'doc-server', image }] },
  status: { phase: 'Running', containerStatuses: [{ name: 'doc-server', ready: true, image }], ...extra },
})

t('the first failure reason is the earliest warning about our objects, not helm\'s timeout', () => {
  const since = Date.parse('2026-01-01T10:00:00Z')
  const ev = (at: string, name: string, reason: string, message: string, type = 'Warning'): EventJson => ({ type, reason, message, involvedObject: { kind: 'Pod', name }, lastTimestamp: at })
  const events = [
    ev('2026-01-01T10:00:09Z', 'doc-server-7d9-x', 'Unhealthy', 'Readiness probe failed: 503'),
    ev('2026-01-01T10:00:05Z', 'doc-server-7d9-x', 'FailedScheduling', '0/2 nodes are available'),
    ev('2026-01-01T09:00:00Z', 'doc-server-old', 'BackOff', 'an hour-old event'),
    ev('2026-01-01T10:00:01Z', 'other-app-1', 'Failed', 'not ours'),
    ev('2026-01-01T10:00:02Z', 'doc-server-7d9-x', 'Scheduled', 'fine', 'Normal'),
  ]
  assert.is(firstFailureReason(events, [], 'doc-server', since), 'Pod doc-server-7d9-x: FailedScheduling: 0/2 nodes are available')
  const waiting = pod('doc-server-1', 'img', { containerStatuses: [{ name: 'doc-server', ready: false, state: { waiting: { reason: 'ImagePullBackOff', message: 'not found' } } }] })
  assert.is(firstFailureReason([], [waiting], 'doc-server', since), 'Pod doc-server-1: container doc-server ImagePullBackOff: not found')
  const unready = pod('doc-server-2', 'img', { containerStatuses: [], conditions: [{ type: 'Ready', status: 'False', reason: 'ContainersNotReady' }] })
  assert.is(firstFailureReason([], [unready], 'doc-server', since), 'Pod doc-server-2: Ready=False (ContainersNotReady)')
  assert.is(firstFailureReason([], [], 'doc-server', since), undefined)
})

t('pods must run exactly the pinned image; terminating pods do not count', () => {
  const pinned = `r/o/n@${D1}`
  assert.equal(podsNotRunning([pod('a', pinned), pod('old', `r/o/n@${D2}`, {}, true)], pinned, D1), [])
  assert.match(podsNotRunning([pod('b', `r/o/n@${D2}`)], pinned, D1).join(), /^b\/doc-server runs r\/o\/n@sha256:b2/)
  const wrongId = pod('c', pinned, { containerStatuses: [{ name: 'doc-server', ready: true, imageID: `r/o/n@${D2}` }] })
  assert.match(podsNotRunning([wrongId], pinned, D1)[0]!, /reports image/)
  const unready = pod('d', pinned, { containerStatuses: [{ name: 'doc-server', ready: false }] })
  assert.match(podsNotRunning([unready], pinned, D1)[0]!, /not ready/)
})

t('helm errors become one line: schema violations and chart rules', () => {
  const schema = `Error: values don't meet the specifications of the schema(s) in the following chart(s):\ndoc-server:\n- at '/replicaCount': got string, want integer\n`
  assert.is(schemaProblems(schema), "at '/replicaCount': got string, want integer")
  assert.is(templateFailure('Error: execution error at (doc-server/templates/deployment.yaml:2:4): autoscaling.minReplicas (5) is above autoscaling.maxReplicas (2)'), 'autoscaling.minReplicas (5) is above autoscaling.maxReplicas (2)')
  assert.is(schemaProblems('Error: something else'), undefined)
  const nested = `Error: values don't meet the specifications of the schema(s) in the following chart(s):\ndoc-server:\n- at '/resources/requests': 'allOf' failed\n  - at '/resources/requests/cpu': 'anyOf' failed\n    - at '/resources/requests/cpu': 'lots' does not match pattern '^[0-9]+$'\n    - at '/resources/requests/cpu': got string, want number\n- at '': additional properties 'replicas' not allowed\n`
  assert.is(schemaProblems(nested), "at '/resources/requests/cpu': 'lots' does not match pattern '^[0-9]+$'; at the top level: additional properties 'replicas' not allowed")
})

t('Helm 4 upgrade: --rollback-on-failure with the watcher wait, never the deprecated --atomic', () => {
  const argv = upgradeArgs({ helm: 'helm', kubeconfig: '/k', context: 'c' }, { name: 'doc-server', namespace: 'ns' }, { chart: '/chart', valueFiles: ['/v.yaml'], sets: { 'image.digest': 'sha256:x' }, timeoutSecs: 90 })
  assert.ok(argv.includes('--rollback-on-failure'))
  assert.ok(argv.includes('--wait=watcher'), 'the strategy is spelled out, not left to what a bare --wait or --rollback-on-failure imply')
  assert.not.ok(argv.includes('--atomic'))
  assert.not.ok(argv.includes('--wait'))
  assert.equal(argv.slice(argv.indexOf('--timeout'), argv.indexOf('--timeout') + 2), ['--timeout', '90s'])
  assert.equal(argv.slice(argv.indexOf('--set-string'), argv.indexOf('--set-string') + 2), ['--set-string', 'image.digest=sha256:x'])
})

t('the Kubernetes wrapper module pins every staging module to the matching v0 version', () => {
  const upstream = 'module k8s.io/kubernetes\n\nrequire (\n\tk8s.io/api v0.0.0\n\tk8s.io/client-go v0.0.0\n\tgithub.com/x/y v1.2.3\n)\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/sample-cli-plugin => ./staging/src/k8s.io/sample-cli-plugin\n)\n'
  const mod = kubernetesWrapperGoMod('v1.36.3', upstream)
  assert.match(mod, /require k8s\.io\/kubernetes v1\.36\.3/)
  assert.match(mod, /\tk8s\.io\/api => k8s\.io\/api v0\.36\.3/)
  assert.match(mod, /\tk8s\.io\/client-go => k8s\.io\/client-go v0\.36\.3/)
  assert.not.match(mod, /sample-cli-plugin/, 'only required modules: the proxy lacks some replaced ones')
  assert.throws(() => kubernetesWrapperGoMod('1.36', upstream), /not v1\.<minor>\.<patch>/)
  assert.match(kubeLdflags('v1.36.3'), /-X k8s\.io\/component-base\/version\.gitVersion=v1\.36\.3 /)
  assert.match(kubeLdflags('v1.36.3'), /gitMinor=36/)
  assert.is(goBinaryName('go.etcd.io/etcd/server/v3'), 'server')
  assert.is(goBinaryName('k8s.io/kubernetes/cmd/kubectl'), 'kubectl')
})

t('the control plane runs no simulated node, on its own port', () => {
  const bins = { kubeApiserver: '/b/kube-apiserver', kubeControllerManager: '/b/kcm', kubeScheduler: '/b/ks', kubectl: '/b/kubectl', kubelet: '/b/kubelet', kubeProxy: '/b/kube-proxy', etcd: '/b/etcd', kwok: '/b/kwok', kwokctl: '/b/kwokctl', helm: '/b/helm' }
  const opts = (JSON.parse(kwokctlConfig(bins)) as { options: { disable: string[]; kubeApiserverPort: number; kubeApiserverBinary: string } }).options
  assert.equal(opts.disable, ['kwok-controller'])
  assert.is(opts.kubeApiserverPort, API_SERVER_PORT)
  assert.is(opts.kubeApiserverBinary, '/b/kube-apiserver')
})

t('the node\'s containerd is separate from Docker\'s and carries the settings this machine needs', () => {
  const d = nodeDirs('/c/state/node-cluster/node')
  const toml = containerdConfig(d)
  assert.match(toml, /^root = "\/c\/state\/node-cluster\/node\/containerd\/root"$/m)
  assert.match(toml, /address = "\/c\/state\/node-cluster\/node\/containerd\/containerd\.sock"/)
  assert.match(toml, /restrict_oom_score_adj = true/)
  assert.match(toml, /SystemdCgroup = false/)
  assert.match(toml, new RegExp(`sandbox_image = "${SANDBOX_IMAGE}"`))
  assert.match(registryHostsToml('127.0.0.1:5000'), /\[host\."http:\/\/127\.0\.0\.1:5000"\]/)
  const cni = cniConflist(d) as { plugins: { type: string; ipam?: { ranges: { subnet: string }[][] } }[] }
  assert.equal(cni.plugins.map((p) => p.type), ['bridge', 'portmap', 'firewall', 'loopback'])
  assert.is(cni.plugins[0]!.ipam!.ranges[0]![0]!.subnet, POD_SUBNET)
  const kubelet = kubeletConfig(d) as Record<string, unknown>
  assert.is(kubelet.failCgroupV1, false)
  assert.is(kubelet.cgroupDriver, 'cgroupfs')
  assert.is(kubelet.containerRuntimeEndpoint, `unix://${d.containerd.socket}`)
})

t('iptables -S rules split into words with quoted comments kept whole', () => {
  assert.equal(iptablesWords('-A POSTROUTING -s 10.88.0.5/32 -m comment --comment "name: \\"doc-server-pods\\" id: \\"abc\\"" -j CNI-1f'), ['-A', 'POSTROUTING', '-s', '10.88.0.5/32', '-m', 'comment', '--comment', 'name: "doc-server-pods" id: "abc"', '-j', 'CNI-1f'])
})

t('cluster actions are up, down, status and delete', () => {
  assert.is(parseAction(['up']), 'up')
  assert.is(parseAction(['down']), 'down')
  assert.throws(() => parseAction([]), /^cluster: use one of up, down, status, delete$/)
  assert.throws(() => parseAction(['start']), /not "start"/)
})

t('the deploy job outlives a failed rollout and its rollback (2 x DEPLOY_TIMEOUT_SECS)', () => {
  const file = join(repoRoot, '.github', 'workflows', 'ci.yml')
  assert.ok(existsSync(file), 'the pipeline workflow exists')
  const wf = parseYaml(readFileSync(file, 'utf8')) as { jobs?: Record<string, { 'timeout-minutes'?: number; steps?: { run?: string }[] }> }
  const job = Object.values(wf.jobs ?? {}).find((j) => (j.steps ?? []).some((s) => /tasks\/deploy\.ts|ci:deploy/.test(s.run ?? '')))
  assert.ok(job, 'a workflow job runs the deploy stage')
  const timeout = loadConfig({}, {}).deployTimeoutSecs
  assert.ok((job!['timeout-minutes'] ?? 360) * 60 > 2 * timeout + 120, `deploy job timeout ${job!['timeout-minutes']} min is too short for 2 x ${timeout}s`)
})

t('a KUBE_CONTEXT must be declared for its DEPLOY_ENV; only no KUBE_CONTEXT means the local cluster', () => {
  const dir = mkdtempSync(join(tmpdir(), 'envs-'))
  const file = join(dir, 'environments.yaml')
  writeFileSync(file, 'dev:\n  contexts: [dev-cluster]\nprod:\n  contexts: [prod-eu]\n')
  assert.is(environmentFor('dev', 'dev-cluster', file).local, false)
  assert.is(environmentFor('prod', 'prod-eu', file).local, false)
  assert.equal(environmentFor('prod', undefined, file), { local: true, settings: LOCAL_ENVIRONMENT })
  // A context that happens to be named like the local cluster's grants nothing by its name.
  refusal(() => environmentFor('prod', 'kwok-doc-server', file), /KUBE_CONTEXT "kwok-doc-server" is not declared for DEPLOY_ENV=prod/)
  refusal(() => environmentFor('prod', 'dev-cluster', file), /KUBE_CONTEXT "dev-cluster" is not declared for DEPLOY_ENV=prod in .*environments\.yaml \(declared: prod-eu\); add it there or use the right context$/)
  refusal(() => environmentFor('staging', 'prod-eu', file), /not declared for DEPLOY_ENV=staging .*\(declared: none\)/)
  refusal(() => environmentFor('dev', 'x', join(dir, 'missing.yaml')), /missing\.yaml is missing; it declares which contexts each DEPLOY_ENV may use/)
  assert.throws(() => parseEnvironments('dev: [a]\n', 'e.yaml'), /^deploy: e\.yaml: dev: /)
  assert.throws(() => parseEnvironments('dev:\n  contexts: [a]\n  context: b\n', 'e.yaml'), /e\.yaml: dev: Unrecognized key: "context"/)
  assert.throws(() => parseEnvironments('dev: [', 'e.yaml'), /e\.yaml does not parse/)
  assert.throws(() => parseEnvironments('prod:\n  contexts: []\n  scan: { maxAge: 9999d }\n', 'e.yaml'), /e\.yaml: prod\.scan\.maxAge: scan\.maxAge="9999d" is not valid: expected a duration above 0 and at most 30d/)
  assert.throws(() => parseEnvironments('prod:\n  contexts: []\n  signers: [{ workflow: .github/workflows/ci.yml, refs: [refs/pull/*], events: [push] }]\n', 'e.yaml'), /prod\.signers\.0/)
})

t('the committed environments file: every environment, prod signed only by ci.yml on main from a push, the rescan a scan signer only', () => {
  const envs = parseEnvironments(readFileSync(ENVIRONMENTS_FILE, 'utf8'), ENVIRONMENTS_FILE)
  assert.equal(Object.keys(envs).sort(), ['dev', 'prod', 'staging'])
  for (const env of ['dev', 'staging', 'prod']) assert.ok(existsSync(join(repoRoot, 'charts', 'doc-server', `values-${env}.yaml`)), `${env} has values`)
  assert.equal(envs.prod!.signers, DEFAULT_SIGNERS)
  assert.equal(envs.staging!.signers, DEFAULT_SIGNERS, 'an environment that names no signer gets the strict default')
  assert.ok(envs.prod!.scanSigners.every((x) => 'workflow' in x && x.workflow === '.github/workflows/rescan.yml'))
  assert.ok(envs.prod!.signers.every((x) => !('workflow' in x) || x.workflow !== '.github/workflows/rescan.yml'), 'the rescan never signs an image')
  assert.is(envs.prod!.allowOlder, 'with-reason')
  assert.equal(envs.prod!.scan.dbSources, ['remote'])
})

t('--allow-older as the environment allows it; the reason is recorded on the release as a label', () => {
  requireOlderAllowed('dev', { allowOlder: 'free' }, true, undefined)
  requireOlderAllowed('prod', { allowOlder: 'with-reason' }, false, undefined)
  requireOlderAllowed('prod', { allowOlder: 'with-reason' }, true, 'bad release 1.4: answers 500 on /docs')
  refusal(() => requireOlderAllowed('prod', { allowOlder: 'with-reason' }, true, undefined), /^deploy: refused: DEPLOY_ENV=prod takes --allow-older only with --reason "<why>", which is recorded on the release$/)
  refusal(() => requireOlderAllowed('prod', { allowOlder: 'never' }, true, 'x'), /never takes --allow-older/)
  const labels = recordLabels('c'.repeat(40), 300, 'bad release 1.4: answers 500 on /docs!')
  assert.is(labels['doc-server.dev/allow-older-reason'], 'bad-release-1.4-answers-500-on-docs')
  assert.is(labelValue('x'.repeat(80)).length, 63)
  const config = loadConfig({}, {})
  assert.is(deployInputs(['--allow-older', '--reason', 'rollback of 1.4'], config).reason, 'rollback of 1.4')
  assert.throws(() => deployInputs(['--reason', 'why'], config), /--reason goes with --allow-older/)
  assert.throws(() => deployInputs(['--allow-older', '--reason', ' '], config), /--reason needs the words/)
})

async function rejects(p: Promise<unknown>, re: RegExp) {
  try {
    await p
    assert.unreachable('accepted')
  } catch (err) {
    assert.match((err as Error).message, re)
    assert.not.match((err as Error).message, /\n/)
  }
}

t('a deploy moves the release forward in git history; older or unknown commits need --allow-older', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'order-'))
  const git = async (...args: string[]) => (await run(['git', '-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], { cwd: dir })).stdout.trim()
  await git('init', '-q')
  const commit = async (msg: string) => (await git('commit', '-q', '--allow-empty', '-m', msg), git('rev-parse', 'HEAD'))
  const a = await commit('a')
  const b = await commit('b')
  await git('checkout', '-q', '-b', 'side', a)
  const side = await commit('side')
  assert.is(await checkOrder(undefined, b, false, undefined, dir), undefined, 'first install')
  assert.is(await checkOrder(a, b, false, undefined, dir), undefined, 'forward')
  assert.is(await checkOrder(b, b, false, undefined, dir), undefined, 'the same commit again')
  await rejects(checkOrder(b, a, false, undefined, dir), new RegExp(`^deploy: refused: commit ${a.slice(0, 12)} does not descend from ${b.slice(0, 12)}, which the release runs \\(an older or diverged pipeline\\); pass --allow-older to roll back on purpose$`))
  await rejects(checkOrder(b, side, false, undefined, dir), /does not descend from/)
  await rejects(checkOrder('e'.repeat(40), b, false, undefined, dir), /the release runs commit eeeeeeeeeeee, which is not in this clone, .*fetch the full history, or pass --allow-older/)
  assert.is(await checkOrder(b, a, true, undefined, dir), `rolled ${b.slice(0, 12)} back to ${a.slice(0, 12)} (--allow-older)`)
  assert.is(await checkOrder(b, a, true, 'bad 1.4', dir), `rolled ${b.slice(0, 12)} back to ${a.slice(0, 12)} (--allow-older: bad 1.4)`)
})

t('the release records its commit and timeout; the running commit is the deployed revision\'s', () => {
  assert.equal(recordLabels('c'.repeat(40), 300), { 'doc-server.dev/commit': 'c'.repeat(40), 'doc-server.dev/timeout-secs': '300' })
  const rec = (revision: number, status: string, commit?: string) => ({ revision, status, commit, timeoutSecs: 300 })
  assert.is(runningCommit([rec(1, 'superseded', 'a'), rec(2, 'deployed', 'b'), rec(3, 'failed', 'c')]), 'b')
  assert.is(runningCommit([rec(1, 'failed', 'a')]), undefined)
  assert.is(deployableImage({ ...build(), commit: { sha: 'd'.repeat(40), branch: null, dirty: false } }, pass()).commit, 'd'.repeat(40), 'the build stage\'s commit')
  const config = loadConfig({}, {})
  assert.is(deployInputs([], config).allowOlder, false)
  assert.is(deployInputs(['--allow-older'], config).allowOlder, true)
  assert.throws(() => deployInputs(['--force'], config), /^deploy: Unknown option '--force'.*; usage: deploy --allow-older --reason <value>$/)
})

t.run()
