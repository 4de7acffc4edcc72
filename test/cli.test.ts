import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { buildFailure, parseBuildOutput } from '../lib/build/buildkit-log.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { ANY_EXIT, run } from '../lib/core/run.ts'

const t = suite('cli')
const root = new URL('..', import.meta.url).pathname

/** The failing stage fixture, run as a stage is, with the given environment. */
async function failingStage(env: NodeJS.ProcessEnv) {
  const r = await run([join(root, 'node_modules/.bin/tsx'), join(root, 'test/fixtures/debug/failing-tool.ts')], {
    cwd: root,
    env: { ...process.env, DEBUG: '', FORCE_COLOR: '0', ...env },
    okCodes: ANY_EXIT,
  })
  return { ...r, out: r.stdout + r.stderr }
}

t('a failing tool shows its last lines and one red line; no stack trace without DEBUG', async () => {
  const r = await failingStage({})
  assert.is(r.exitCode, 1)
  assert.match(r.out, /tool line 60$/m)
  assert.not.match(r.out, /tool line 1$/m, 'only the tail')
  assert.not.match(r.out, /^\s+at /m, 'no stack trace')
  assert.match(r.out.trim().split('\n').at(-1)!, /^✖ `sh -c` exited 3$/)
})

t("with DEBUG set, the failing tool's full output and the stack trace", async () => {
  const r = await failingStage({ DEBUG: '1' })
  assert.is(r.exitCode, 1)
  for (let i = 1; i <= 60; i++) assert.match(r.out, new RegExp(`tool line ${i}$`, 'm'))
  assert.match(r.out, /error: the tool gave up/)
  assert.match(r.out, /^PipelineError: `sh -c` exited 3\n\s+at /m, 'the stack trace')
  assert.match(r.out.trim().split('\n').at(-1)!, /^✖ `sh -c` exited 3$/, 'still ends with the one line')
})

t('DEBUG from .env counts like DEBUG from the environment', async () => {
  // lib finds `.env` at the repository root above it: a scratch root with lib, the fixture and .env.
  const dir = mkdtempSync(join(tmpdir(), 'debug-dotenv-'))
  try {
    for (const path of ['lib', 'package.json', 'test/fixtures/debug']) cpSync(join(root, path), join(dir, path), { recursive: true })
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
    writeFileSync(join(dir, '.env'), 'DEBUG=1\n')
    const r = await run([join(root, 'node_modules/.bin/tsx'), join(dir, 'test/fixtures/debug/failing-tool.ts')], {
      cwd: dir,
      env: { ...process.env, DEBUG: '', FORCE_COLOR: '0' },
      okCodes: ANY_EXIT,
    })
    assert.match(r.stdout + r.stderr, /tool line 1$/m)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

t('with DEBUG, a build failure carries the whole build log, not only the error block', () => {
  const log = [
    '#1 [internal] load build definition',
    '#1 DONE 0.0s',
    '#5 [build 3/4] RUN cargo build',
    '#5 1.2 error[E0425]: cannot find value `x`',
    '#5 1.3 error: could not compile `doc-server`',
    '#5 ERROR: process did not complete successfully',
  ].join('\n')
  const saved = process.env.DEBUG
  try {
    delete process.env.DEBUG
    const short = buildFailure(parseBuildOutput(log), log)
    assert.not.match(short.details ?? '', /load build definition/)
    process.env.DEBUG = '1'
    const full = buildFailure(parseBuildOutput(log), log)
    assert.instance(full, PipelineError)
    assert.is(full.message, short.message, 'the one line does not change')
    assert.match(full.details ?? '', /#1 \[internal\] load build definition/)
  } finally {
    if (saved === undefined) delete process.env.DEBUG
    else process.env.DEBUG = saved
  }
})

t.run()
