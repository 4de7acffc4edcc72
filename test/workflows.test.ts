/**
 * Rules every workflow in .github/workflows keeps, read as data (ci.yml's own
 * wiring is test/workflow.test.ts): actions on releases that run on Node 24,
 * a tools cache per job, the nightly rescan and the toolkit's end-to-end job.
 */
import { existsSync, readFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parse } from 'yaml'
import { repoRoot } from '../lib/core/paths.ts'
import { WORKFLOWS_DIR, workflowFiles } from '../tasks/lint-workflows.ts'

interface Step { name?: string; uses?: string; run?: string; if?: string; with?: Record<string, unknown>; env?: Record<string, string>; 'continue-on-error'?: unknown }
interface Job { 'timeout-minutes'?: number; permissions?: Record<string, string>; environment?: string | { name: string }; 'continue-on-error'?: unknown; steps: Step[] }
interface Workflow { on: Record<string, unknown>; jobs: Record<string, Job> }

const files = workflowFiles(WORKFLOWS_DIR)
const texts = Object.fromEntries(files.map((f) => [basename(f), readFileSync(f, 'utf8')]))
const wfs = Object.fromEntries(Object.entries(texts).map(([f, text]) => [f, parse(text) as Workflow]))
const jobs = Object.entries(wfs).flatMap(([file, wf]) => Object.entries(wf.jobs).map(([name, job]) => ({ id: `${file}:${name}`, job })))
const usesOf = (job: Job, action: string) => job.steps.filter((s) => s.uses?.split('@')[0] === action)

/**
 * The first release of each action whose action.yml says `runs.using: node24`
 * (read from each action's repository at its tags). Node 20 is past its end of
 * life and is leaving the runners.
 */
const FIRST_NODE24: Record<string, string> = {
  'actions/checkout': '5.0.0',
  'actions/setup-node': '5.0.0',
  'actions/setup-go': '7.0.0',
  'actions/cache': '5.0.0',
  'actions/upload-artifact': '6.0.0',
  'actions/download-artifact': '7.0.0',
  'Swatinem/rust-cache': '2.9.0',
  'docker/setup-buildx-action': '4.0.0',
  'crazy-max/ghaction-github-runtime': '4.0.0',
  'github/codeql-action/upload-sarif': '4.0.0',
}
const semver = (v: string) => v.replace(/^v/, '').split('.').map(Number)
const atLeast = (v: string, min: string) => {
  const [a, b] = [semver(v), semver(min)]
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0)
  return true
}

const t = suite('workflows')

t('every action is on a release that runs on Node 24, and Node 24 is what the jobs set up', () => {
  let seen = 0
  for (const [file, text] of Object.entries(texts)) {
    for (const m of text.matchAll(/uses:\s*([\w.-]+\/[\w./-]+)@[0-9a-f]{40}\s*#\s*(v?[\d.]+)/g)) {
      const [, action, version] = m
      assert.ok(action! in FIRST_NODE24, `${file}: ${action} is not classified; add the first release whose runs.using is node24`)
      assert.ok(atLeast(version!, FIRST_NODE24[action!]!), `${file}: ${action}@${version} runs on Node 20; use ${FIRST_NODE24[action!]} or later`)
      seen++
    }
  }
  assert.ok(seen > 20)
  for (const { id, job } of jobs) {
    for (const s of usesOf(job, 'actions/setup-node')) assert.is(String(s.with?.['node-version']), '24', `${id} sets up Node 24`)
  }
})

t('each job caches the tools it builds under a key of its own', () => {
  const keys = jobs.flatMap(({ id, job }) => job.steps.filter((s) => s.uses?.startsWith('actions/cache@') && String(s.with?.path ?? '').includes('doc-server-ci/tools')).map((s) => ({ id, key: String(s.with!.key) })))
  assert.ok(keys.length >= 4, 'scan-image, deploy, rescan and the toolkit job cache their tools')
  for (const a of keys) {
    const shared = keys.filter((b) => b !== a && b.key === a.key)
    assert.equal(shared.map((b) => b.id), [], `${a.id} shares its tools cache key ${a.key}: the first job to save wins and the other never saves what it built`)
    assert.match(a.key, /\$\{\{ hashFiles\('lib\/tools\/versions\.ts'\) \}\}/, `${a.id}: a new pin means a new cache`)
  }
  // Whoever builds tools caches them.
  for (const { id, job } of jobs) {
    const builds = job.steps.some((s) => /tsx tasks\/(scan|deploy|rescan)\.ts|npm test/.test(s.run ?? ''))
    if (builds) assert.ok(keys.some((k) => k.id === id), `${id} builds pinned tools but caches none`)
  }
})

t('the nightly rescan: scheduled and by hand, the scan of what prod runs, signed as prod\'s scan signer, its own SARIF category', () => {
  const wf = wfs['rescan.yml']!
  assert.equal(Object.keys(wf.on).sort(), ['schedule', 'workflow_dispatch'])
  assert.match(String((wf.on.schedule as { cron: string }[])[0]!.cron), /^\d+ \d+ \* \* \*$/, 'once a day')
  const [[, job]] = Object.entries(wf.jobs) as [[string, Job]]
  const rescan = job.steps.find((s) => /^npx tsx tasks\/rescan\.ts$/.test(s.run ?? ''))
  assert.ok(rescan && existsSync(join(repoRoot, 'tasks', 'rescan.ts')))
  assert.is(rescan!['continue-on-error'], undefined, 'a new finding fails the run visibly')
  assert.is(job['continue-on-error'], undefined)
  const envName = typeof job.environment === 'string' ? job.environment : job.environment?.name
  assert.ok(envName && envName !== 'prod', 'not the deploying environment: no approval gate at night, no credential that can deploy')
  const [sarif] = usesOf(job, 'github/codeql-action/upload-sarif')
  assert.match(sarif!.if!, /^always\(\)/)
  assert.is(sarif!.with!.sarif_file, 'reports/rescan/scan/trivy.sarif')
  const ciCategories = Object.values(wfs['ci.yml']!.jobs).flatMap((j) => usesOf(j, 'github/codeql-action/upload-sarif').map((s) => s.with!.category))
  assert.ok(sarif!.with!.category && !ciCategories.includes(sarif!.with!.category), 'its own category, so it never replaces the build scan\'s alerts')
  // Where tasks/rescan.ts runs the scan stage: <REPORTS_DIR>/rescan.
  assert.match(readFileSync(join(repoRoot, 'tasks', 'rescan.ts'), 'utf8'), /join\(config\.reportsDir, 'rescan'\)/)
  // It signs its result (id-token) and attaches it beside the digest (packages): deploy reads it, so a failing rescan blocks.
  assert.equal(Object.entries(job.permissions!).filter(([, v]) => v === 'write').map(([k]) => k).sort(), ['id-token', 'packages', 'security-events'])
})

t('the toolkit job runs the README\'s test command on toolkit changes, bounded, with logs on failure', () => {
  const wf = wfs['toolkit.yml']!
  for (const event of ['push', 'pull_request']) {
    const paths = (wf.on[event] as { paths: string[] }).paths
    for (const p of ['tasks/**', 'lib/**', 'test/**', 'package-lock.json']) assert.ok(paths.includes(p), `${event} on ${p}`)
  }
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
  const command = /^npm ci && (npm test)\s+#/m.exec(readme)?.[1]
  assert.is(command, 'npm test', 'the README names the test command')
  const [[, job]] = Object.entries(wf.jobs) as [[string, Job]]
  assert.ok(job.steps.some((s) => s.run?.startsWith('npm ci')))
  assert.ok(job.steps.some((s) => new RegExp(`(^| )${command}$`).test(s.run ?? '')), 'runs npm test itself')
  assert.ok((job['timeout-minutes'] ?? 0) > 0 && job['timeout-minutes']! <= 120)
  const [logs] = usesOf(job, 'actions/upload-artifact')
  assert.is(logs?.if, 'failure()')
  assert.match(String(logs!.with!.path), /reports\//)
  assert.match(String(logs!.with!.path), /\.log/)
})

t.run()
