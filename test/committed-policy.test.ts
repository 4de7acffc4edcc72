import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { run } from '../lib/core/run.ts'
import { appliedPolicy, committedPolicy, parsePolicyFile, policyDifference, policyDigest, workingTreePolicy } from '../lib/scan/committed-policy.ts'

const t = suite('committed-policy')

const POLICY = 'severities: [HIGH, CRITICAL]\nignoreUnfixed: false\nignoreFile: .trivyignore.yaml\nignoreMaxDays: 90\n'

/** A real repository with the policy committed, then the ignore file edited in a second commit. */
async function repo(): Promise<{ dir: string; first: string; second: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'policy-'))
  const git = (...args: string[]) => run(['git', '-c', 'user.name=t', '-c', 'user.email=t@example.invalid', ...args], { cwd: dir })
  await git('init', '-q', '-b', 'main')
  writeFileSync(join(dir, '.scan-policy.yaml'), POLICY)
  writeFileSync(join(dir, '.trivyignore.yaml'), 'vulnerabilities: []\n')
  await git('add', '.')
  await git('commit', '-q', '-m', 'policy')
  const first = (await git('rev-parse', 'HEAD')).stdout.trim()
  writeFileSync(join(dir, '.trivyignore.yaml'), 'vulnerabilities:\n  - id: CVE-1\n    statement: s\n    expired_at: 2099-01-01\n')
  await git('commit', '-q', '-am', 'accept a risk')
  const second = (await git('rev-parse', 'HEAD')).stdout.trim()
  return { dir, first, second }
}

t('the digest covers the settings and the ignore file\'s bytes, and nothing else', () => {
  const base = { severities: ['HIGH', 'CRITICAL'], ignoreUnfixed: false, ignoreMaxDays: 90, ignoreFile: '.trivyignore.yaml', ignoreFileSha256: 'a'.repeat(64) }
  assert.is(policyDigest(base), policyDigest({ ...base, severities: ['CRITICAL', 'HIGH'] }), 'the order of severities does not matter')
  assert.is(policyDigest(base), policyDigest({ ...base, ignoreFile: 'elsewhere/same-bytes.yaml' }), 'where the file lies does not, its bytes do')
  for (const change of [{ severities: ['LOW'] }, { ignoreUnfixed: true }, { ignoreMaxDays: 365 }, { ignoreFileSha256: 'b'.repeat(64) }]) {
    assert.is.not(policyDigest({ ...base, ...change }), policyDigest(base), JSON.stringify(change))
  }
  assert.is(policyDifference({ ...base, severities: ['LOW'], ignoreMaxDays: 365 }, base), 'severities LOW (committed: CRITICAL, HIGH); ignoreMaxDays 365 (committed: 90)')
})

t('the policy file is strict: one line naming the field', () => {
  assert.equal(parsePolicyFile(POLICY, 'p').severities, ['HIGH', 'CRITICAL'])
  assert.throws(() => parsePolicyFile(POLICY.replace('90', '36500'), 'p'), /^scan: p: ignoreMaxDays: /)
  assert.throws(() => parsePolicyFile(POLICY.replace('HIGH', 'SEVERE'), 'p'), /^scan: p: severities\.0: /)
  assert.throws(() => parsePolicyFile(`${POLICY}extra: 1\n`, 'p'), /^scan: p: .*Unrecognized key/)
})

t('deploy reads the policy at the commit deployed, never the working tree; a commit without it or not in the clone is refused', async () => {
  const { dir, first, second } = await repo()
  try {
    const atFirst = await committedPolicy(first, dir)
    const atSecond = await committedPolicy(second, dir)
    assert.is.not(policyDigest(atFirst), policyDigest(atSecond), 'the accepted risk changed the committed policy')
    assert.is(policyDigest(atSecond), policyDigest(workingTreePolicy(dir)), 'the working tree at HEAD agrees with HEAD')
    writeFileSync(join(dir, '.trivyignore.yaml'), 'vulnerabilities: []\n# edited, not committed\n')
    assert.is(policyDigest(await committedPolicy(second, dir)), policyDigest(atSecond), 'an uncommitted edit changes nothing for deploy')
    assert.is.not(policyDigest(appliedPolicy({ ...atSecond, ignoreFile: '.trivyignore.yaml' }, dir)), policyDigest(atSecond), 'but the scan sees it as another policy')
    await committedPolicy('f'.repeat(40), dir).then(() => assert.unreachable('an unknown commit'), (e: Error) => assert.match(e.message, /commit ffffffffffff is not in this clone/))
    await run(['git', 'rm', '-q', '.scan-policy.yaml'], { cwd: dir })
    await run(['git', '-c', 'user.name=t', '-c', 'user.email=t@example.invalid', 'commit', '-q', '-m', 'drop'], { cwd: dir })
    const third = (await run(['git', 'rev-parse', 'HEAD'], { cwd: dir })).stdout.trim()
    await committedPolicy(third, dir).then(() => assert.unreachable('no policy'), (e: Error) => assert.match(e.message, /has no \.scan-policy\.yaml, so no scan can have been made under its committed policy/))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

t.run()
