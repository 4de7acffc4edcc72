/**
 * `npm run ci:rescan` end to end: a release deployed to the local cluster while
 * its digest scanned clean is reported once an advisory naming a crate it ships
 * is published. The "publication" is a temporary advisories directory
 * (SCAN_ADVISORIES_DIR): without the tokio advisory at deploy time, with it the
 * next night. Real Trivy, real trivy-db, the real scan stage, the local
 * registry and cluster (kwok runs no containers, so the digest in the pod spec
 * is what "runs").
 */
import { cpSync,mkdirSync,mkdtempSync,readFileSync,rmSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { removeImage } from '../../lib/build/registry.ts'
import { loadConfig } from '../../lib/core/config.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { readReport,writeReport } from '../../lib/core/reports.ts'
import { ANY_EXIT,run } from '../../lib/core/run.ts'
import { deleteNamespace,type KubeTarget } from '../../lib/deploy/kube.ts'
import { cachedBinaries } from '../../lib/tools/kube.ts'
import { clusterStatus,ensureCluster,stopCluster } from '../../lib/sandbox/cluster.ts'
import { ensureBaseImages } from '../../lib/sandbox/base-images.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY,ensureRegistry } from '../../lib/sandbox/registry.ts'
import { ADVISORIES_DIR,ensureLocalDb } from '../../lib/scan/trivy.ts'
import { ensureTrivy } from '../../lib/tools/trivy.ts'
import { pushVulnerableImage } from '../helpers/vulnerable-image.ts'
import { signAsBuild } from '../helpers/signed-image.ts'
import { copyEnv } from '../helpers/repo-copy.ts'
import { setUp } from '../helpers/hooks.ts'
import { buildReportFor } from '../helpers/reports.ts'

const t = suite('e2e: rescan')
const ALL_OK = { okCodes: ANY_EXIT }
const TOKIO = join('ghsa', 'advisories', 'github-reviewed', '2022', '01', 'GHSA-fg7r-2g4j-5cgr')

interface State {
  cache: string
  docker: string
  startedCluster: boolean
  kube: KubeTarget
  helm: string
  namespace: string
  work: string
  reports: string
  advisories: string
  vuln?: { repository: string; digest: string; ref: string }
  /** The Doc Server image as the build stage pushed and signed it: the build that "fixes" the finding. */
  server?: { repository: string; digest: string }
  /** The commit both images are recorded as built from (this checkout's HEAD: deploy reads its committed scan policy). */
  commit: string
}
const s = {} as State

const tsx = join(repoRoot, 'node_modules', '.bin', 'tsx')
async function stage(file: 'deploy' | 'rescan', env: NodeJS.ProcessEnv = {}) {
  const r = await run([tsx, join(repoRoot, 'tasks', `${file}.ts`)], {
    cwd: repoRoot,
    env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: s.reports, DEPLOY_ENV: 'staging', DEPLOY_NAMESPACE: s.namespace, RELEASE_NAME: 'doc-server', KUBE_CONTEXT: '', DEPLOY_TIMEOUT_SECS: '120', DEPLOY_VALUES_FILE: '', TRIVY_DB_SOURCE: 'local', SCAN_ADVISORIES_DIR: s.advisories, ...env },
    ...ALL_OK,
  })
  const out = (r.stdout + r.stderr).trim()
  return { code: r.exitCode, out, last: out.split('\n').at(-1) ?? '' }
}
/**
 * trivy-db refuses to build a DB without any advisory ("no such bucket"), so the
 * deploy-time directory holds one about a crate the image does not ship,
 * derived from the tokio advisory with its identity and package replaced.
 */
function writeUnrelatedAdvisory(dir: string) {
  const tokio = JSON.parse(readFileSync(join(ADVISORIES_DIR, TOKIO, 'GHSA-fg7r-2g4j-5cgr.json'), 'utf8'))
  const id = 'GHSA-e2e0-e2e0-e2e0'
  const advisory = { ...tokio, id, aliases: [], summary: 'Test advisory about a crate no image ships', references: [], affected: tokio.affected.map((a: { package: object }) => ({ ...a, package: { ecosystem: 'crates.io', name: 'doc-server-e2e-unshipped-crate' } })) }
  const at = join(dir, 'ghsa', 'advisories', 'github-reviewed', '2022', '01', id)
  mkdirSync(at, { recursive: true })
  writeFileSync(join(at, `${id}.json`), JSON.stringify(advisory, null, 2))
}
const rescanJson = () => JSON.parse(readFileSync(join(s.reports, 'rescan.json'), 'utf8'))

setUp(t, 'e2e: rescan', async () => {
  const config = loadConfig({ ...process.env }, {})
  s.cache = config.cacheDir
  s.docker = (await ensureDockerEngine(config.docker)).docker
  await ensureRegistry(LOCAL_REGISTRY)
  await ensureBaseImages(s.docker, s.cache)
  await ensureTrivy(s.cache)
  const kubectl = cachedBinaries(s.cache).find((b) => b.name === 'kubectl')!
  s.startedCluster = (await clusterStatus(s.cache, kubectl.present ? kubectl.path : undefined)) !== 'running'
  const cluster = await ensureCluster(s.cache)
  s.kube = { kubectl: cluster.binaries.kubectl, kubeconfig: cluster.kubeconfig, context: cluster.context }
  s.helm = cluster.binaries.helm
  s.namespace = `doc-server-rescan-${process.pid}`
  s.work = mkdtempSync(join(tmpdir(), 'rescan-e2e-'))
  s.reports = join(s.work, 'reports')
  // Deploy time: the advisories as they were before the tokio advisory was published.
  s.advisories = join(s.work, 'advisories')
  writeUnrelatedAdvisory(s.advisories)
  // What runs must really run on the node: the Doc Server image the build stage pushes (BuildKit's
  // cache makes this quick), with the fixture's binary listing tokio 1.13.0 added on top.
  const buildReports = join(s.work, 'build-reports')
  const built = await run([tsx, join(repoRoot, 'tasks', 'build.ts')], { cwd: repoRoot, env: copyEnv({ REPORTS_DIR: buildReports, IMAGE_TAG: 'e2e-rescan', PUSH: 'true', REGISTRY: LOCAL_REGISTRY }), timeoutMs: 60 * 60_000, ...ALL_OK })
  assert.is(built.exitCode, 0, `build stage failed:\n${(built.stdout + built.stderr).split('\n').slice(-20).join('\n')}`)
  const server = readReport(buildReports, 'build').image
  s.server = { repository: server.repository, digest: server.digest! }
  s.commit = readReport(buildReports, 'build').commit.sha
  s.vuln = await pushVulnerableImage(s.docker, s.work, `${server.repository}@${server.digest}`)
  // Deploy verifies a signature and provenance from the registry: sign it as the build stage would.
  await signAsBuild(config, s.vuln.repository, s.vuln.digest, { sha: s.commit, shortSha: s.commit.slice(0, 12), branch: undefined, dirty: false }, s.work)
})

t.after(async () => {
  if (s.kube) {
    await run([s.helm, 'uninstall', 'doc-server', '--kubeconfig', s.kube.kubeconfig!, '--kube-context', s.kube.context, '-n', s.namespace, '--wait'], ALL_OK)
    await deleteNamespace(s.kube, s.namespace).catch(() => undefined)
  }
  if (s.vuln) {
    await fetch(`http://${s.vuln.repository.replace(`${LOCAL_REGISTRY}/`, `${LOCAL_REGISTRY}/v2/`)}/manifests/${s.vuln.digest}`, { method: 'DELETE' }).catch(() => undefined)
    await removeImage(s.docker, s.vuln.ref)
  }
  if (s.work) rmSync(s.work, { recursive: true, force: true })
  // The next scan on this machine finds the DB built from the repository's advisories again.
  await ensureLocalDb(s.cache, ADVISORIES_DIR)
  if (s.startedCluster) await stopCluster(s.cache)
})

t('no release in the namespace: one line, nothing scanned', async () => {
  const r = await stage('rescan')
  assert.is.not(r.code, 0)
  assert.match(r.last, new RegExp(`rescan: release doc-server has no deployment doc-server in namespace ${s.namespace}; nothing runs there to rescan`))
})

t('a digest scanned clean and deployed is reported once an advisory against it is published', async () => {
  // Deploy time: the scan stage passes the digest with the DB of that day, and deploy ships it.
  const { repository, digest } = s.vuln!
  writeReport(s.reports, 'build', buildReportFor(repository, digest, { tag: 'e2e', commit: s.commit }))
  const scanned = await run([tsx, join(repoRoot, 'tasks', 'scan.ts')], { cwd: repoRoot, env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: s.reports, TRIVY_DB_SOURCE: 'local', SCAN_ADVISORIES_DIR: s.advisories }, ...ALL_OK })
  assert.is(scanned.exitCode, 0, scanned.stdout + scanned.stderr)
  const deployed = await stage('deploy')
  assert.is(deployed.code, 0, deployed.out)

  // The same night: nothing new, the rescan passes and says which digest runs.
  const clean = await stage('rescan')
  assert.is(clean.code, 0, clean.out)
  assert.is(rescanJson().decision, 'pass')
  assert.is(rescanJson().image, `${repository}@${digest}`)

  // The advisory is published; the next rescan of the same running digest fails, naming it.
  cpSync(join(ADVISORIES_DIR, TOKIO), join(s.advisories, TOKIO), { recursive: true })
  const found = await stage('rescan')
  assert.is.not(found.code, 0, found.out)
  assert.match(found.last, new RegExp(`rescan: release doc-server in ${s.namespace} \\(${s.kube.context}\\) runs ${digest.slice(0, 19)}…, which now has 1 blocking finding: CVE-2021-45710 \\(HIGH, tokio 1\\.13\\.0, fixed in `))
  const report = rescanJson()
  assert.is(report.decision, 'fail')
  assert.equal(report.findings.map((f: { id: string }) => f.id), ['CVE-2021-45710'])
  assert.is(report.digest, digest)
  // The scan stage's own outputs, for code scanning: the SARIF names the finding too.
  assert.match(readFileSync(join(s.reports, 'rescan', 'scan', 'trivy.sarif'), 'utf8'), /CVE-2021-45710/)
  // The failing result was signed and attached to the running digest, where deploy reads it.
  assert.ok(readReport(join(s.reports, 'rescan'), 'scan').attestation, 'the rescan attested its result')

  // A redeploy of that digest (its build-time pass still fresh) is refused, naming the rescan and the CVE.
  const again = await stage('deploy')
  assert.is.not(again.code, 0, again.out)
  assert.match(again.last, new RegExp(`deploy: refused: a newer scan of ${digest.slice(0, 19)}… failed after the pass of .*: the rescan at .* signed by key sha256:\\w+ found 1 HIGH\\/CRITICAL finding remains: CVE-2021-45710 .*\\(CVE-2021-45710\\); a newer passing scan must follow before it deploys$`), again.last)

  // A new build that fixes it (the Doc Server image without the vulnerable binary) is scanned and deploys.
  writeReport(s.reports, 'build', buildReportFor(s.server!.repository, s.server!.digest, { tag: 'e2e-fixed', commit: s.commit }))
  const fixedScan = await run([tsx, join(repoRoot, 'tasks', 'scan.ts')], { cwd: repoRoot, env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: s.reports, TRIVY_DB_SOURCE: 'local', SCAN_ADVISORIES_DIR: s.advisories }, ...ALL_OK })
  assert.is(fixedScan.exitCode, 0, fixedScan.stdout + fixedScan.stderr)
  const fixed = await stage('deploy')
  assert.is(fixed.code, 0, fixed.out)
  assert.is(readReport(s.reports, 'deploy').digest, s.server!.digest)
})

t.run()
