/**
 * `npm run ci:build` stops at the right gate: a clippy warning stops it at
 * lint-test before anything is built or pushed, and an image with a blocking
 * vulnerability stops it at scan before anything is deployed. Real cargo,
 * registry, Trivy and the real chain in tasks/ci.ts.
 */
import { appendFileSync,existsSync,mkdtempSync,readFileSync,rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../../lib/core/config.ts'
import { ensureBaseImages } from '../../lib/sandbox/base-images.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY,ensureRegistry } from '../../lib/sandbox/registry.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { ANY_EXIT,run } from '../../lib/core/run.ts'
import { ensureLocalDb } from '../../lib/scan/trivy.ts'
import { ensureTrivy } from '../../lib/tools/trivy.ts'
import { copyEnv,copyRepo } from '../helpers/repo-copy.ts'
import { pushVulnerableImage } from '../helpers/vulnerable-image.ts'
import { setUp } from '../helpers/hooks.ts'
import { buildReportFor } from '../helpers/reports.ts'
import { writeReport } from '../../lib/core/reports.ts'

const t = suite('e2e: ci:build')
const ALL_OK = { okCodes: ANY_EXIT }
const lastLine = (r: { stdout: string; stderr: string }) => (r.stdout + r.stderr).trim().split('\n').at(-1) ?? ''
const rows = (reports: string) => JSON.parse(readFileSync(join(reports, 'ci.json'), 'utf8')).stages as { stage: string; result: string; reason?: string }[]
const resultOf = (reports: string, stage: string) => rows(reports).find((r) => r.stage === stage)?.result

async function tags(repository: string): Promise<string[]> {
  const res = await fetch(`http://${LOCAL_REGISTRY}/v2/${repository}/tags/list`)
  if (res.status === 404) return []
  return ((await res.json()) as { tags: string[] | null }).tags ?? []
}

setUp(t, 'e2e: ci:build', async () => {
  const config = loadConfig({ ...process.env }, {})
  await ensureDockerEngine(config.docker)
  await ensureRegistry(LOCAL_REGISTRY)
})

t('a clippy warning stops the run at lint-test; nothing is built or pushed', async () => {
  const copy = await copyRepo('ci-clippy-')
  try {
    appendFileSync(join(copy.dir, 'crates', 'doc-server', 'src', 'lib.rs'), '\n#[must_use]\npub fn truncates(x: u64) -> u32 {\n    x as u32\n}\n')
    const git = (...args: string[]) => run(['git', ...args], { cwd: copy.dir, env: copyEnv({ HUSKY: '0' }) })
    await git('init', '-q', '-b', 'main')
    await git('-c', 'user.email=t@example.invalid', '-c', 'user.name=t', 'add', '-A')
    await git('-c', 'user.email=t@example.invalid', '-c', 'user.name=t', 'commit', '-q', '--no-verify', '-m', 'breaks clippy')
    const sha = (await git('rev-parse', 'HEAD')).stdout.trim()

    const r = await run(['node_modules/.bin/tsx', 'tasks/ci.ts'], { cwd: copy.dir, env: copyEnv(), ...ALL_OK })
    assert.is.not(r.exitCode, 0)
    assert.match(lastLine(r), /lint-test failed: clippy/, 'the gate\'s reason is the last line')
    const reports = join(copy.dir, 'reports')
    assert.is(resultOf(reports, 'lint-test'), 'failed')
    for (const later of ['build', 'measure', 'scan', 'deploy']) assert.is(resultOf(reports, later), 'not run', later)
    assert.not.ok(existsSync(join(reports, 'build.json')), 'no build report')
    assert.not.ok((await tags('local/agent-docs')).includes(sha), 'nothing was pushed for this commit')
  } finally {
    copy.remove()
  }
})

t('an image with a blocking vulnerability stops the run at scan; nothing is deployed', async () => {
  const config = loadConfig({ ...process.env }, {})
  const docker = (await ensureDockerEngine(config.docker)).docker
  await ensureBaseImages(docker, config.cacheDir)
  await ensureTrivy(config.cacheDir)
  await ensureLocalDb(config.cacheDir)
  const reports = mkdtempSync(join(tmpdir(), 'ci-vuln-'))
  try {
    const vuln = await pushVulnerableImage(docker, reports)
    writeReport(reports, 'build', buildReportFor(vuln.repository, vuln.digest))
    const r = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'ci.ts'), '--from', 'scan'], {
      cwd: repoRoot,
      env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: reports },
      ...ALL_OK,
    })
    assert.is.not(r.exitCode, 0)
    assert.match(lastLine(r), /CVE-2021-45710/, 'the last line names the advisory')
    assert.is(resultOf(reports, 'scan'), 'failed')
    assert.is(resultOf(reports, 'deploy'), 'not run')
    assert.not.ok(existsSync(join(reports, 'deploy.json')), 'no deploy report: deploy never started')
    assert.is(JSON.parse(readFileSync(join(reports, 'scan.json'), 'utf8')).decision, 'fail')
  } finally {
    rmSync(reports, { recursive: true, force: true })
  }
})

t.run()
