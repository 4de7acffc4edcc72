import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ORDER, parseArgs, summaryTable } from '../tasks/ci.ts'

const t = suite('ci')

t('the whole pipeline runs by default', () => {
  assert.equal(parseArgs([]), { from: 'lint-test', until: 'deploy' })
})

t('--from and --until pick part of it', () => {
  assert.equal(parseArgs(['--from', 'build', '--until', 'scan']), { from: 'build', until: 'scan' })
  assert.equal(parseArgs(['--until', 'lint-test']), { from: 'lint-test', until: 'lint-test' })
})

t('bad arguments are refused with one line', () => {
  assert.throws(() => parseArgs(['--from', 'shipit']), /--from needs one of lint-test, build, measure, scan, deploy, not "shipit"/)
  assert.throws(() => parseArgs(['--until']), /^ci: Option '--until <value>' argument missing; usage: ci --from <value> --until <value>$/)
  assert.throws(() => parseArgs(['--from', 'scan', '--until', 'build']), /--from scan comes after --until build/)
  assert.throws(() => parseArgs(['--fast']), /^ci: Unknown option '--fast'; usage: ci --from <value> --until <value>$/)
})

t('the order is the pipeline\'s', () => {
  assert.equal(ORDER.map((s) => s.name), ['lint-test', 'build', 'measure', 'scan', 'deploy'])
})

t('the summary shows durations only for stages that ran', () => {
  const table = summaryTable([
    { stage: 'lint-test', result: 'passed', seconds: 12.34 },
    { stage: 'build', result: 'failed', seconds: 1, reason: 'x' },
    { stage: 'scan', result: 'not run', seconds: 0 },
  ])
  assert.match(table, /\| lint-test \| passed \| 12\.3 \|/)
  assert.match(table, /\| build \| failed \| 1\.0 \|/)
  assert.match(table, /\| scan \| not run \| - \|/)
})

t.run()
