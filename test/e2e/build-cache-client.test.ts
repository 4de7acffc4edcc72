/**
 * The build stage with the workflow's BuildKit cache settings and Debian's
 * docker client, whose `docker build` is the classic builder: refused in one
 * line, naming the variables and the client, before anything is built.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { copyEnv } from '../helpers/repo-copy.ts'

const t = suite('e2e: build cache and client')

t('BUILD_CACHE_FROM/BUILD_CACHE_TO with a classic docker build are refused up front in one line', async () => {
  if (!existsSync('/usr/bin/docker')) return
  const reports = mkdtempSync(join(tmpdir(), 'build-reports-'))
  const root = new URL('../..', import.meta.url).pathname
  try {
    const r = await run(['node_modules/.bin/tsx', 'tasks/build.ts'], {
      cwd: root,
      env: copyEnv({ REPORTS_DIR: reports, PUSH: 'false', DOCKER: '/usr/bin/docker', BUILD_CACHE_FROM: 'type=gha,scope=doc-server-image', BUILD_CACHE_TO: 'type=gha,mode=max,scope=doc-server-image' }),
      timeoutMs: 10 * 60_000,
      okCodes: ANY_EXIT,
    })
    const out = r.stdout + r.stderr
    assert.is.not(r.exitCode, 0)
    const last = out.trim().split('\n').at(-1) ?? ''
    assert.match(last, /^✖ build: BUILD_CACHE_FROM and BUILD_CACHE_TO need a docker client whose build is buildx, but \/usr\/bin\/docker \(20\.10[^)]*\) has no --cache-to or --load: /)
    assert.not.match(out, /See 'docker build --help'/, 'never docker\'s usage hint')
    assert.not.match(out, /Base images:|Built in/, 'refused before base images and the build')
  } finally {
    rmSync(reports, { recursive: true, force: true })
  }
})

t.run()
