import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { PipelineError } from '../lib/core/errors.ts'
import { withOutput } from '../lib/core/output.ts'
import { GIT_REPOSITORY_VARIABLES, redact, retry, run, succeeds } from '../lib/core/run.ts'

const t = suite('run')

t('runs a real command, timing it and streaming its lines', async () => {
  const lines: string[] = []
  const r = await withOutput(
    (l) => lines.push(l),
    () => run(['sh', '-c', 'echo one; echo two >&2; echo three']),
  )
  assert.is(r.exitCode, 0)
  assert.is(r.stdout, 'one\nthree\n')
  assert.ok(r.seconds >= 0)
  assert.equal(lines.sort(), ['one', 'three', 'two'])
})

t('arguments are passed as they are, never through a shell', async () => {
  const r = await run(['printf', '%s', '$(echo pwned); rm -rf /tmp/nothing'])
  assert.is(r.stdout, '$(echo pwned); rm -rf /tmp/nothing')
})

t('a failure names the command and exit code and keeps the output tail', async () => {
  try {
    await run(['sh', '-c', 'echo "error: it broke" >&2; exit 3'])
    assert.unreachable()
  } catch (err) {
    assert.instance(err, PipelineError)
    assert.is((err as PipelineError).message, '`sh -c` exited 3')
    assert.match((err as PipelineError).details ?? '', /error: it broke/)
  }
})

t('exit codes that are data do not throw', async () => {
  const r = await run(['sh', '-c', 'exit 1'], { okCodes: [1] })
  assert.is(r.exitCode, 1)
  assert.is(await succeeds(['false']), false)
  assert.is(await succeeds(['true']), true)
  assert.is(await succeeds(['/no/such/binary']), false)
})

t('secrets never reach output or errors', async () => {
  assert.is(redact('token=ghs_abcdef here', ['ghs_abcdef']), 'token=*** here')
  try {
    await run(['sh', '-c', 'echo "login ghs_abcdef failed" >&2; exit 1'], { secrets: ['ghs_abcdef'] })
    assert.unreachable()
  } catch (err) {
    assert.not.match((err as PipelineError).details ?? '', /ghs_abcdef/)
  }
})

t('retries are bounded', async () => {
  let calls = 0
  await retry(3, 1, async () => {
    calls++
    if (calls < 3) throw new Error('flaky')
    return 'ok'
  })
  assert.is(calls, 3)
  calls = 0
  try {
    await retry(2, 1, async () => {
      calls++
      throw new Error('down')
    })
    assert.unreachable()
  } catch (err) {
    assert.is((err as Error).message, 'down')
  }
  assert.is(calls, 2)
})

t('a child never inherits the variables that tie git to a repository, whatever env it is given', async () => {
  const outer = {
    PATH: process.env.PATH,
    GIT_INDEX_FILE: '/outer/.git/index.lock',
    GIT_DIR: '/outer/.git',
    GIT_WORK_TREE: '/outer',
    GIT_PREFIX: 'sub/',
    GIT_EDITOR: 'true',
  }
  const r = await run(['sh', '-c', 'env | grep ^GIT_ | sort || true'], { env: outer })
  assert.is(r.stdout, 'GIT_EDITOR=true\n', 'only what does not locate a repository passes')
  const saved = process.env.GIT_INDEX_FILE
  process.env.GIT_INDEX_FILE = '/outer/.git/index.lock'
  try {
    assert.is((await run(['sh', '-c', 'echo "${GIT_INDEX_FILE-unset}"'])).stdout, 'unset\n', 'nor from the inherited environment')
  } finally {
    if (saved === undefined) delete process.env.GIT_INDEX_FILE
    else process.env.GIT_INDEX_FILE = saved
  }
})

t("the list is git's own list of repository-local variables", async () => {
  const local = (await run(['git', 'rev-parse', '--local-env-vars'])).stdout.trim().split('\n')
  assert.equal([...GIT_REPOSITORY_VARIABLES].sort(), local.sort())
})

t.run()
