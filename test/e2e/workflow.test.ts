/**
 * `npm run lint:workflows` with the real, pinned actionlint (built once from the
 * Go module proxy) and shellcheck: the repository's workflow is clean, and a
 * copy broken in each way the check exists for fails with the tool's own message.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { repoRoot } from '../../lib/core/paths.ts'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { WORKFLOWS_DIR } from '../../tasks/lint-workflows.ts'

const t = suite('e2e: lint:workflows')
const ALL_OK = { okCodes: ANY_EXIT }
const ORIGINAL = readFileSync(join(WORKFLOWS_DIR, 'ci.yml'), 'utf8')

async function lint(dir?: string) {
  const r = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), 'tasks/lint-workflows.ts', ...(dir ? [dir] : [])], {
    cwd: repoRoot,
    env: { ...process.env, FORCE_COLOR: '0' },
    ...ALL_OK,
  })
  const lastLine = r.stderr.trimEnd().split('\n').pop() ?? ''
  return { ...r, out: r.stdout + r.stderr, lastLine }
}

/** Lints a copy of ci.yml changed by `edit`, in a directory of its own. */
async function lintBroken(edit: (text: string) => string) {
  const changed = edit(ORIGINAL)
  assert.is.not(changed, ORIGINAL, 'the edit must change the workflow')
  const dir = mkdtempSync(join(tmpdir(), 'workflows-'))
  try {
    writeFileSync(join(dir, 'ci.yml'), changed)
    return await lint(dir)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

t("the repository's workflows pass actionlint, shellcheck and the pin rule", async () => {
  const r = await lint()
  assert.is(r.exitCode, 0, r.out)
  assert.match(r.out, /actionlint and shellcheck on \d+ file\(s\): clean/)
  assert.match(r.out, /Every action pinned to a commit SHA: clean/)
})

t("a broken expression fails with actionlint's own message, named last", async () => {
  const r = await lintBroken((w) => w.replace('github.event.pull_request.number', 'github.pull_request_number'))
  assert.is(r.exitCode, 1)
  assert.match(r.out, /ci\.yml:\d+:\d+: property "pull_request_number" is not defined in object type .*\[expression\]/)
  assert.match(r.lastLine, /^✖ lint:workflows: 1 problem\(s\) in .*; first: ci\.yml:\d+:\d+: property "pull_request_number"/)
})

t('a job that needs a job that does not exist fails', async () => {
  const r = await lintBroken((w) => w.replace('needs: build-image\n', 'needs: build-images\n'))
  assert.is(r.exitCode, 1)
  assert.match(r.out, /job "scan-image" needs job "build-images" which does not exist/)
})

t('an unpinned action fails, naming it and where', async () => {
  const r = await lintBroken((w) => w.replace(/actions\/cache@[0-9a-f]{40} # v[\d.]+/g, 'actions/cache@v4'))
  assert.is(r.exitCode, 1)
  assert.match(
    r.out,
    /ci\.yml:\d+:15: action "actions\/cache@v4" must be pinned to a full 40-character commit SHA, not a tag or branch \[pinned-actions\]/,
  )
  assert.match(r.lastLine, /^✖ lint:workflows: [1-9]\d* problem\(s\)/)
})

t('shellcheck checks the run: scripts', async () => {
  const r = await lintBroken((w) => w.replace('>> "$GITHUB_OUTPUT"', '>> $GITHUB_OUTPUT'))
  assert.is(r.exitCode, 1)
  assert.match(r.out, /shellcheck reported issue in this script: SC2086/)
})

t.run()
