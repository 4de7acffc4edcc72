/**
 * Runs the uvu suites: every `test/*.test.ts` (unit) and, unless `--unit`
 * is given, `test/e2e/*.test.ts` (the real tools end to end). A file name
 * fragment narrows the run: `tsx test/run.ts image-ref`. A suite whose
 * set-up failed fails the run (uvu alone would count it as passing).
 */
import { parse } from 'uvu/parse'
import { run } from 'uvu/run'
import { failIfSetUpFailed } from './helpers/hooks.ts'

const args = process.argv.slice(2)
const unitOnly = args.includes('--unit')
const filter = args.find((a) => !a.startsWith('--'))
const { suites } = await parse('test', /\.test\.ts$/, { cwd: new URL('..', import.meta.url).pathname })
// Unit files first (fast feedback), then end-to-end files in pipeline order.
const E2E_ORDER = ['precommit', 'build', 'scan', 'chart', 'deploy', 'rescan', 'workflow', 'ci']
const rank = (name: string) => {
  if (!name.startsWith('e2e')) return -1
  const i = E2E_ORDER.findIndex((stage) => name.startsWith(`e2e/${stage}`))
  return i === -1 ? E2E_ORDER.length : i
}
const picked = suites
  .filter((s) => (!unitOnly || !s.name.startsWith('e2e')) && (!filter || s.name.includes(filter)))
  .sort((a, b) => rank(a.name) - rank(b.name) || a.name.localeCompare(b.name))
if (picked.length === 0) {
  console.error(`test: no test file matches ${filter ?? 'test/**/*.test.ts'}`)
  process.exitCode = 1
} else {
  await run(picked, { bail: false })
  failIfSetUpFailed()
}
