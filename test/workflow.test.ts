/**
 * The GitHub Actions workflow, read as data: GitHub cannot be reached from
 * here, so what it would do is checked against what the pipeline does locally
 * (tasks/ci.ts ORDER, lib/core/config.ts shouldPush, lib/tools/versions.ts). actionlint
 * itself runs in test/e2e/workflow.test.ts.
 */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parse } from 'yaml'
import { loadConfig, shouldPush } from '../lib/core/config.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { trivyCacheDir } from '../lib/scan/trivy.ts'
import { DEFAULT_SIGNERS, verifiersFor } from '../lib/sign/signers.ts'
import { VERSIONS } from '../lib/tools/versions.ts'
import { ORDER } from '../tasks/ci.ts'
import { WORKFLOWS_DIR, unpinnedActions, workflowFiles } from '../tasks/lint-workflows.ts'

interface Step {
  id?: string
  name?: string
  uses?: string
  run?: string
  if?: string
  with?: Record<string, unknown>
  env?: Record<string, string>
}
interface Job {
  needs?: string | string[]
  if?: string
  permissions?: Record<string, string>
  outputs?: Record<string, string>
  environment?: string | { name: string }
  concurrency?: { group: string; 'cancel-in-progress': boolean | string }
  env?: Record<string, string>
  steps: Step[]
}
interface Workflow {
  on: Record<string, unknown>
  permissions?: Record<string, string>
  concurrency?: { group: string; 'cancel-in-progress': boolean | string }
  jobs: Record<string, Job>
}

const FILE = join(WORKFLOWS_DIR, 'ci.yml')
const TEXT = readFileSync(FILE, 'utf8')
const wf = parse(TEXT) as Workflow
const JOBS = ['lint-test', 'build-image', 'scan-image', 'pull-request', 'deploy']
/** The jobs that run the pipeline's stages for pushes; pull-request runs build and scan read-only instead of build-image and scan-image. */
const STAGE_JOBS = JOBS.filter((j) => j !== 'pull-request')

const needsOf = (job: Job) => (job.needs === undefined ? [] : ([] as string[]).concat(job.needs))
const tasksRun = (job: Job) => job.steps.flatMap((s) => [...(s.run ?? '').matchAll(/\btsx\s+tasks\/([\w-]+)\.ts\b/g)].map((m) => m[1]!))
const stepRunning = (job: Job, file: string) => job.steps.find((s) => tasksRun({ steps: [s] }).includes(file))
const usesOf = (job: Job, action: string) => job.steps.filter((s) => s.uses?.split('@')[0] === action)

/** The jobs in the order `needs` forces, ties broken by their order in the file. */
function jobOrder(jobs: Record<string, Job>): string[] {
  const done: string[] = []
  const names = Object.keys(jobs)
  while (done.length < names.length) {
    const next = names.find((n) => !done.includes(n) && needsOf(jobs[n]!).every((d) => done.includes(d)))
    if (!next) throw new Error(`needs form a cycle among ${names.filter((n) => !done.includes(n)).join(', ')}`)
    done.push(next)
  }
  return done
}

const t = suite('workflow')

t('jobs chained by needs: lint-test → build-image → scan-image → deploy, and pull-request beside them', () => {
  assert.equal(Object.keys(wf.jobs), JOBS)
  assert.equal(needsOf(wf.jobs['lint-test']!), [])
  assert.equal(needsOf(wf.jobs['build-image']!), ['lint-test'])
  assert.equal(needsOf(wf.jobs['scan-image']!), ['build-image'])
  assert.equal(needsOf(wf.jobs['pull-request']!), ['lint-test'])
  assert.ok(needsOf(wf.jobs.deploy!).includes('scan-image'), 'deploy waits for the scan gate')
  assert.equal(jobOrder(wf.jobs), JOBS)
})

t('the jobs run the stages in the order of `npm run ci:build`', () => {
  const stagesByJob = jobOrder(wf.jobs).filter((n) => STAGE_JOBS.includes(n)).map((name) => tasksRun(wf.jobs[name]!))
  assert.equal(stagesByJob, [['precommit'], ['build', 'measure'], ['scan'], ['deploy']])
  assert.equal(stagesByJob.flat(), ORDER.map((s) => s.file))
  // The first job carries the name the local run gives that stage.
  assert.is(JOBS[0], ORDER[0].name)
})

t('every task a step runs exists', () => {
  const run = Object.values(wf.jobs).flatMap(tasksRun)
  assert.ok(run.length >= 5)
  const missing = run.filter((f) => !existsSync(join(repoRoot, 'tasks', `${f}.ts`)))
  assert.equal(missing, [], `the workflow runs tasks that do not exist: ${missing.map((f) => `tasks/${f}.ts`).join(', ')}`)
})

t('steps hold wiring only: each run step is one command or the kubeconfig hand-off', () => {
  for (const [name, job] of Object.entries(wf.jobs)) {
    for (const step of job.steps.filter((s) => s.run)) {
      const lines = step.run!.trim().split('\n')
      if (step.name === 'Cluster credentials from the environment') continue
      assert.is(lines.length, 1, `${name}: "${step.name ?? step.run}" grew into a script; put it in a task`)
    }
  }
})

t('triggers: push to main and feature/**, pull requests, manual runs, a weekly cold measurement that never deploys', () => {
  assert.equal(Object.keys(wf.on).sort(), ['pull_request', 'push', 'schedule', 'workflow_dispatch'])
  assert.equal((wf.on.schedule as { cron: string }[]).length, 1)
  const measure = wf.jobs['build-image']!.steps!.find((s) => s.name === 'measure')!
  assert.match(measure.run!, /--cold/, 'the scheduled run measures cold whatever the inputs say')
  assert.match(wf.jobs.deploy!.if as string, /github\.event_name != 'schedule'/, 'a scheduled run deploys nothing')
  const history = wf.jobs['build-image']!.steps!.find((s) => s.with?.path === '~/.cache/doc-server-ci/measure')
  assert.ok(history, 'the measure history and cold record are cached between runs')
  assert.equal((wf.on.push as { branches: string[] }).branches, ['main', 'feature/**'])
  assert.ok(wf.on.pull_request === null || Object.keys(wf.on.pull_request as object).length === 0, 'every pull request is built and scanned')
})

t('permissions are least privilege, job by job', () => {
  assert.ok(wf.permissions !== undefined && Object.keys(wf.permissions).every((k) => k === 'contents' && wf.permissions![k] === 'read'), 'top level grants nothing beyond contents: read')
  const writes = Object.fromEntries(Object.entries(wf.jobs).map(([name, job]) => {
    assert.ok(job.permissions, `${name} declares its permissions`)
    assert.is(job.permissions!.contents, 'read', `${name}: contents: read`)
    return [name, Object.entries(job.permissions!).filter(([, v]) => v === 'write').map(([k]) => k)]
  }))
  assert.equal(writes, { 'lint-test': [], 'build-image': ['packages', 'id-token'], 'scan-image': ['packages', 'security-events', 'id-token'], 'pull-request': ['security-events'], deploy: [] })
  assert.not.match(TEXT, /write-all|read-all/)
})

t('keyless signing: id-token only on the jobs that sign; deploy reads signatures from the registry and verifies them', () => {
  const withIdToken = Object.entries(wf.jobs).filter(([, j]) => j.permissions?.['id-token'] !== undefined).map(([n]) => n)
  assert.equal(withIdToken, ['build-image', 'scan-image'])
  assert.is(wf.jobs.deploy!.permissions!.packages, 'read')
  const steps = wf.jobs.deploy!.steps
  const login = steps.findIndex((s) => /docker login ghcr\.io/.test(s.run ?? ''))
  const deploy = steps.findIndex((s) => /tasks\/deploy\.ts/.test(s.run ?? ''))
  assert.ok(login !== -1 && login < deploy, 'deploy logs in to ghcr.io before verifying')
  // The identity deploy expects by default is this repository's ci.yml (the file these jobs live in) on main, from a push.
  const [v] = verifiersFor(DEFAULT_SIGNERS, { source: 'https://github.com/acme/doc-server' })
  assert.ok(v?.kind === 'keyless')
  assert.is(v.identity, 'https://github.com/acme/doc-server/.github/workflows/ci.yml@refs/heads/main')
  assert.is(v.trigger, 'push')
  assert.ok(existsSync(join(repoRoot, '.github', 'workflows', 'ci.yml')))
})

t('every action is pinned to a full commit SHA with its release noted', () => {
  const uses = Object.values(wf.jobs).flatMap((j) => j.steps.map((s) => s.uses).filter((u): u is string => u !== undefined))
  assert.ok(uses.length > 10)
  for (const u of uses) assert.match(u, /^[\w.-]+\/[\w./-]+@[0-9a-f]{40}$/, u)
  assert.equal(unpinnedActions('ci.yml', TEXT), [])
  assert.not.match(TEXT, /aquasecurity\/trivy-action/, 'Trivy runs from our pinned build, not the action whose tags were hijacked')
})

t('pull requests build and scan but never push or deploy', () => {
  const build = stepRunning(wf.jobs['build-image']!, 'build')!
  assert.is(build.env?.PUSH, undefined, 'the build leaves pushing to lib/core/config.ts shouldPush')
  // The build step's literal environment, as a pull request's runner would see it.
  const literal = Object.fromEntries(Object.entries(build.env ?? {}).filter(([, v]) => !String(v).includes('${{')))
  const pr = loadConfig({ ...literal, GITHUB_ACTIONS: 'true', GITHUB_EVENT_NAME: 'pull_request', GITHUB_REPOSITORY_OWNER: 'o', GITHUB_SHA: 'a'.repeat(40) }, {})
  assert.is(shouldPush(pr, 'main'), false)
  assert.is(shouldPush(pr, 'feature/x'), false)
  const deploy = wf.jobs.deploy!
  assert.match(deploy.if ?? '', /github\.event_name != 'pull_request'/)
  assert.match(deploy.if ?? '', /needs\.build-image\.outputs\.digest != ''/, 'only a pushed image (one with a registry digest) deploys')
})

t('pull requests: build and scan with a read-only token; the jobs that push and sign never run for them', () => {
  for (const name of ['build-image', 'scan-image']) assert.is(wf.jobs[name]!.if, "github.event_name != 'pull_request'", `${name} never runs for a pull request`)
  const pr = wf.jobs['pull-request']!
  assert.is(pr.if, "github.event_name == 'pull_request'")
  assert.is(pr.permissions!['id-token'], undefined, 'no OIDC token: nothing is signed')
  assert.ok(pr.permissions!.packages === undefined || pr.permissions!.packages === 'read', 'no packages: write: nothing is pushed')
  assert.equal(tasksRun(pr), ['build', 'scan'])
  assert.ok(!JSON.stringify(pr).includes('secrets.GITHUB_TOKEN'), 'no token reaches its steps')
  const [sarif] = usesOf(pr, 'github/codeql-action/upload-sarif')
  assert.match(sarif!.if!, /github\.event\.pull_request\.head\.repo\.full_name == github\.repository/, 'a fork\'s token cannot upload')
})

t('GHCR with GITHUB_TOKEN, handed only to the steps that talk to the registry', () => {
  const holders = Object.entries(wf.jobs).flatMap(([name, job]) => job.steps.filter((s) => JSON.stringify(s).includes('secrets.GITHUB_TOKEN')).map((s) => `${name}: ${s.name}`))
  assert.equal(holders, ['build-image: build', 'build-image: measure', 'scan-image: Log in to ghcr.io to pull the image by digest and attach attestations', 'deploy: Log in to ghcr.io to read signatures and attestations'])
  const scan = wf.jobs['scan-image']!
  const login = scan.steps.find((s) => s.name?.startsWith('Log in to ghcr.io'))!
  assert.match(login.run!, /^docker login ghcr\.io --username "\$GITHUB_ACTOR" --password-stdin/, 'the token goes through stdin, never argv')
  assert.is(login.if, "needs.build-image.outputs.digest != ''", 'only a pushed image is pulled')
  assert.ok(scan.steps.indexOf(login) < scan.steps.indexOf(stepRunning(scan, 'scan')!))
})

t('concurrency: superseded pull-request runs cancelled, one deploy per environment', () => {
  assert.match(wf.concurrency!.group, /github\.event\.pull_request\.number/)
  assert.match(wf.concurrency!.group, /github\.run_id/, 'pushes get a group each, so none is cancelled')
  assert.is(wf.concurrency!['cancel-in-progress'], true)
  const deploy = wf.jobs.deploy!
  const envName = typeof deploy.environment === 'string' ? deploy.environment : deploy.environment!.name
  assert.match(envName, /refs\/heads\/main' && 'prod' \|\| 'dev'/)
  assert.is(deploy.concurrency!.group, `deploy-${envName}`)
  assert.is(deploy.concurrency!['cancel-in-progress'], false, 'a running rollout is never cut short')
  assert.is(deploy.env!.DEPLOY_ENV, envName, 'the task deploys to the environment whose secrets it got')
})

t('the digest travels as a job output and the reports as artifacts', () => {
  const build = wf.jobs['build-image']!
  assert.is(build.outputs!.digest, '${{ steps.build.outputs.digest }}')
  assert.is(stepRunning(build, 'build')!.id, 'build')
  // tasks/build.ts writes these step outputs; the jobs after it read nothing else.
  const buildSource = readFileSync(join(repoRoot, 'tasks', 'build.ts'), 'utf8')
  for (const name of Object.keys(build.outputs!)) assert.match(buildSource, new RegExp(`setOutput\\('${name}'`), `tasks/build.ts sets no "${name}" output`)
  const uploaded = (job: Job) => usesOf(job, 'actions/upload-artifact').map((s) => s.with!.name)
  const downloaded = (job: Job) => usesOf(job, 'actions/download-artifact').map((s) => s.with!.name)
  assert.ok(uploaded(build).includes('reports-build-image'))
  assert.ok(downloaded(wf.jobs['scan-image']!).includes('reports-build-image'))
  assert.ok(uploaded(wf.jobs['scan-image']!).includes('reports-scan-image'))
  assert.equal(downloaded(wf.jobs.deploy!), ['reports-scan-image'], 'deploy reads the reports scan passed')
  for (const name of ['build-image', 'scan-image', 'deploy']) {
    const reports = usesOf(wf.jobs[name]!, 'actions/upload-artifact').filter((s) => String(s.with!.name).startsWith('reports-'))
    assert.is(reports.length, 1, `${name} uploads its reports`)
    assert.is(reports[0]!.if, 'always()', `${name} keeps its reports when it fails`)
    assert.is(reports[0]!.with!.path, 'reports/')
  }
})

t('an unpushed image reaches scan-image as an artifact, a pushed one through the registry', () => {
  const build = wf.jobs['build-image']!
  const scan = wf.jobs['scan-image']!
  const [saved] = usesOf(build, 'actions/upload-artifact').filter((s) => s.with!.name === 'image')
  const [loaded] = usesOf(scan, 'actions/download-artifact').filter((s) => s.with!.name === 'image')
  assert.is(saved?.if, "steps.build.outputs.digest == ''")
  assert.is(loaded?.if, "needs.build-image.outputs.digest == ''")
  assert.ok(build.steps.some((s) => s.if === saved!.if && /^docker save /.test(s.run ?? '')))
  const load = scan.steps.findIndex((s) => s.if === loaded!.if && /^docker load /.test(s.run ?? ''))
  assert.ok(load !== -1 && load < scan.steps.indexOf(stepRunning(scan, 'scan')!), 'loaded before the scan')
})

t('caches: rust-cache for lint-test, BuildKit in the GitHub cache, the Trivy DB', () => {
  assert.is(usesOf(wf.jobs['lint-test']!, 'Swatinem/rust-cache').length, 1)
  const build = wf.jobs['build-image']!
  const env = stepRunning(build, 'build')!.env!
  assert.match(env.BUILD_CACHE_FROM!, /^type=gha,.*scope=doc-server-image/)
  assert.match(env.BUILD_CACHE_TO!, /^type=gha,.*mode=max.*scope=doc-server-image/)
  // Only the build step uses the cache-exporting builder; measure's builds keep the engine's.
  const [buildx] = usesOf(build, 'docker/setup-buildx-action')
  assert.is(buildx!.with!.use, false)
  assert.is(env.BUILDX_BUILDER, `\${{ steps.${buildx!.id}.outputs.name }}`)
  assert.is(stepRunning(build, 'measure')!.env?.BUILDX_BUILDER, undefined)
  const steps = build.steps.map((s) => s.uses?.split('@')[0] ?? s.run)
  const runtime = steps.indexOf('crazy-max/ghaction-github-runtime')
  assert.ok(steps.indexOf('docker/setup-buildx-action') < runtime && runtime === steps.indexOf('npx tsx tasks/build.ts') - 1, 'the cache token is exposed right before the build')
  const trivy = usesOf(wf.jobs['scan-image']!, 'actions/cache').find((s) => String(s.with!.path).includes('trivy'))
  assert.ok(trivy, 'the Trivy DB is cached')
  // Where the scan stage keeps the public DB (lib/scan/trivy.ts), under the default cache directory.
  assert.is(String(trivy!.with!.path), trivyCacheDir('~/.cache/doc-server-ci', 'remote'))
  assert.match(String(trivy!.with!.key), /\$\{\{ steps\.day\.outputs\.day \}\}$/, 'a new DB cache a day')
})

t('the token that writes the Actions cache reaches the build step and no other run step', () => {
  const build = wf.jobs['build-image']!
  const runtime = build.steps.findIndex((s) => s.uses?.split('@')[0] === 'crazy-max/ghaction-github-runtime')
  const buildStep = build.steps.indexOf(stepRunning(build, 'build')!)
  const withdraw = build.steps.findIndex((s, i) => i > runtime && /\bACTIONS_RUNTIME_TOKEN\b/.test(s.run ?? ''))
  assert.ok(runtime !== -1 && withdraw !== -1, 'the exported token is withdrawn again')
  // Between the action that exports the ACTIONS_* variables and the step that blanks them: the build only.
  assert.equal(build.steps.slice(runtime + 1, withdraw).map((s) => s.name ?? s.run), [build.steps[buildStep]!.name])
  const blank = build.steps[withdraw]!
  assert.is(blank.if, 'always()', 'withdrawn also when the build fails')
  assert.match(blank.run!, /^printf '%s=\\n' .*>> "\$GITHUB_ENV"$/)
  for (const v of ['ACTIONS_RUNTIME_TOKEN', 'ACTIONS_RESULTS_URL', 'ACTIONS_CACHE_URL']) assert.ok(blank.run!.split(/\s+/).includes(v), `${v} is blanked`)
  // No other job exposes the runtime.
  for (const [name, job] of Object.entries(wf.jobs)) if (name !== 'build-image') assert.is(usesOf(job, 'crazy-max/ghaction-github-runtime').length, 0, name)
})

t('scan-image sends its findings to code scanning, whatever the verdict', () => {
  const scan = wf.jobs['scan-image']!
  const [sarif] = usesOf(scan, 'github/codeql-action/upload-sarif')
  assert.ok(sarif)
  assert.match(sarif!.if!, /^always\(\)/)
  const file = String(sarif!.with!.sarif_file)
  assert.match(file, /^reports\/scan\/[\w.-]+\.sarif$/)
  assert.ok(sarif!.if!.includes(`hashFiles('${file}')`), 'uploads only a SARIF that exists')
  // The scan stage decides the file name; once it exists, both must agree.
  const writers = ['tasks/scan.ts', 'scripts/scan_image.sh', 'lib/scan/trivy-report.ts'].map((f) => join(repoRoot, f)).filter(existsSync)
  if (writers.some((f) => /\.sarif\b/.test(readFileSync(f, 'utf8')))) {
    assert.ok(writers.some((f) => readFileSync(f, 'utf8').includes(basename(file))), `the scan stage writes no ${basename(file)}`)
  }
})

t('deploy: the environment\'s kubeconfig secret, written private, and its context', () => {
  const deploy = wf.jobs.deploy!
  const creds = deploy.steps.find((s) => s.env?.KUBECONFIG_B64)!
  assert.is(creds.env!.KUBECONFIG_B64, '${{ secrets.KUBECONFIG_B64 }}')
  assert.match(creds.run!, /umask 077[\s\S]*base64 --decode > "\$RUNNER_TEMP\/kubeconfig"[\s\S]*KUBECONFIG=.*>> "\$GITHUB_ENV"/)
  assert.is(stepRunning(deploy, 'deploy')!.env!.KUBE_CONTEXT, '${{ vars.KUBE_CONTEXT }}')
  assert.ok(deploy.steps.indexOf(creds) < deploy.steps.indexOf(stepRunning(deploy, 'deploy')!))
  assert.ok(deploy.steps.some((s) => s.if === 'always()' && /rm -f "\$RUNNER_TEMP\/kubeconfig"/.test(s.run ?? '')))
})

t('toolchains: Node 24 everywhere, Rust as pinned in lib/tools/versions.ts', () => {
  for (const [name, job] of Object.entries(wf.jobs)) {
    const [node] = usesOf(job, 'actions/setup-node')
    assert.is(String(node?.with?.['node-version']), '24', `${name} sets up Node 24`)
    assert.ok(job.steps.some((s) => s.run?.startsWith('npm ci')), `${name} installs from the lockfile`)
  }
  assert.is(String(wf.jobs['lint-test']!.env!.RUSTUP_TOOLCHAIN), VERSIONS.rust)
})

const SHA = 'a'.repeat(40)
t('the pin rule: tags, branches, short SHAs and bare SHAs are refused', () => {
  const doc = (uses: string) => `jobs:\n  j:\n    steps:\n      - uses: ${uses}\n`
  assert.equal(unpinnedActions('w.yml', doc(`actions/checkout@${SHA} # v5.0.0`)), [])
  assert.equal(unpinnedActions('w.yml', doc('./.github/actions/local')), [])
  assert.equal(unpinnedActions('w.yml', doc(`docker://alpine@sha256:${'b'.repeat(64)}`)), [])
  assert.match(unpinnedActions('w.yml', doc('actions/checkout@v5'))[0]!, /^w\.yml:4:15: action "actions\/checkout@v5" must be pinned to a full 40-character commit SHA/)
  assert.match(unpinnedActions('w.yml', doc('actions/checkout@main'))[0]!, /must be pinned/)
  assert.match(unpinnedActions('w.yml', doc('actions/checkout@08c6903'))[0]!, /must be pinned/)
  assert.match(unpinnedActions('w.yml', doc(`actions/checkout@${SHA}`))[0]!, /without its release as a comment/)
  assert.match(unpinnedActions('w.yml', doc('docker://alpine:3.20'))[0]!, /pinned by digest/)
  assert.match(unpinnedActions('w.yml', `jobs:\n  call:\n    uses: org/repo/.github/workflows/x.yml@v1\n`)[0]!, /must be pinned/, 'reusable workflows too')
})

t('a directory without workflows is an error, not a pass', () => {
  const empty = mkdtempSync(join(tmpdir(), 'wf-'))
  assert.throws(() => workflowFiles(empty), /no workflow files/)
  assert.throws(() => workflowFiles(join(empty, 'absent')), /does not exist/)
  assert.ok(workflowFiles(WORKFLOWS_DIR).map((f) => basename(f)).includes('ci.yml'))
})

t.run()
