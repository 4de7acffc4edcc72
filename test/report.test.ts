import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { annotateError, appendSummary, markdownTable, setOutput } from '../lib/core/summary.ts'
import { readReport, writeReport } from '../lib/core/reports.ts'
import { buildReportFor } from './helpers/reports.ts'

const t = suite('report')

t('a report is written as JSON and read back', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rep-'))
  const digest = `sha256:${'1'.repeat(64)}`
  const path = writeReport(dir, 'build', buildReportFor('r/o/n', digest, { tag: 't' }))
  const raw = JSON.parse(readFileSync(path, 'utf8'))
  assert.is(raw.stage, 'build')
  assert.is(raw.image.digest, digest)
  assert.ok(!Number.isNaN(Date.parse(raw.writtenAt)))
  assert.equal(readReport(dir, 'build').image.ref, 'r/o/n:t')
  assert.equal(readdirSync(dir), ['build.json'], 'no temp file left behind')
})

t('a missing or corrupt report names the stage to run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rep-'))
  assert.throws(() => readReport(dir, 'scan'), /scan\.json is missing; run the scan stage first/)
  writeFileSync(join(dir, 'scan.json'), '{"half":')
  assert.throws(() => readReport(dir, 'scan'), /not valid JSON/)
})

t('markdown tables escape pipes', () => {
  assert.is(markdownTable(['a', 'b'], [['x|y', 1]]), '| a | b |\n| --- | --- |\n| x\\|y | 1 |')
})

t('the job summary and outputs are written only in GitHub Actions', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rep-'))
  const summary = join(dir, 'summary.md')
  assert.is(appendSummary('# hi', {}), false)
  assert.is(appendSummary('# hi', { GITHUB_STEP_SUMMARY: summary }), true)
  appendSummary('two', { GITHUB_STEP_SUMMARY: summary })
  assert.is(readFileSync(summary, 'utf8'), '# hi\n\ntwo\n\n')
  const out = join(dir, 'out')
  assert.is(setOutput('digest', 'sha256:1', { GITHUB_OUTPUT: out }), true)
  assert.is(readFileSync(out, 'utf8'), 'digest=sha256:1\n')
  assert.throws(() => setOutput('x', 'a\nb', { GITHUB_OUTPUT: out }), /one line/)
})

t('an error annotation only in GitHub Actions, escaped to one workflow command', () => {
  const out: string[] = []
  assert.is(annotateError('rescan: x', 'a', {}, (l) => out.push(l)), false)
  assert.equal(out, [])
  assert.is(annotateError('rescan: new, bad', '1 finding: 100%\nsecond line', { GITHUB_ACTIONS: 'true' }, (l) => out.push(l)), true)
  assert.equal(out, ['\n::error title=rescan%3A new%2C bad::1 finding: 100%25%0Asecond line\n'])
})

t.run()
