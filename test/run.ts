/**
 * Runs the uvu suites: every `test/*.test.ts` (unit) and, unless `--unit`
 * is given, `test/e2e/*.test.ts` (the real tools end to end). File name
 * fragments narrow the run to files matching any of them: `tsx test/run.ts image-ref e2e/deploy`. A suite whose
 * set-up failed fails the run (uvu alone would count it as passing).
 */
import { parse } from 'uvu/parse'
import { run } from 'uvu/run'
import { failIfSetUpFailed } from './helpers/hooks.ts'

const args = process.argv.slice(2)
const unitOnly = args.includes('--unit')
const filters = args.filter((a) => !a.startsWith('--'))
const { suites } = await parse('test', /\.test\.ts$/, { cwd: new URL('..', import.meta.url).pathname })
// Unit files first (fast feedback), then end-to-end files in pipeline order.
const E2E_ORDER = ['precommit', 'build', 'scan', 'chart', 'deploy', 'rescan', 'workflow', 'ci']
const rank = (name: string) => {
  if (!name.startsWith('e2e')) return -1
  const i = E2E_ORDER.findIndex((stage) => name.startsWith(`e2e/${stage}`))
  return i === -1 ? E2E_ORDER.length : i
}
const picked = suites
  .filter((s) => (!unitOnly || !s.name.startsWith('e2e')) && (filters.length === 0 || filters.some((f) => s.name.includes(f))))
  .sort((a, b) => rank(a.name) - rank(b.name) || a.name.localeCompare(b.name))
if (picked.length === 0) {
  console.error(`test: no test file matches ${filters.length ? filters.join(' or ') : 'test/**/*.test.ts'}`)
  process.exitCode = 1
} else {
  await run(picked, { bail: false })
  failIfSetUpFailed()
}
