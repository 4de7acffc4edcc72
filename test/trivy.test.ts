import { cpSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { repoRoot } from '../lib/core/paths.ts'
import { ANY_EXIT, run } from '../lib/core/run.ts'
import { ADVISORIES_DIR, advisoriesHash, isLocalRegistry, trivyCacheDir } from '../lib/scan/trivy.ts'
import { TRIVY_SPEC } from '../lib/tools/trivy.ts'
import { VERSIONS } from '../lib/tools/versions.ts'

const t = suite('trivy')
const SCRIPT = join(repoRoot, 'scripts', 'scan_image.sh')
const ALL_OK = { okCodes: ANY_EXIT }

t('Trivy is pinned, never the compromised v0.69.4, and built with jsonv2', () => {
  assert.is(TRIVY_SPEC.version, VERSIONS.trivy)
  assert.is.not(VERSIONS.trivy, 'v0.69.4')
  assert.is(TRIVY_SPEC.env?.GOEXPERIMENT, 'jsonv2')
  assert.match(TRIVY_SPEC.ldflags ?? '', new RegExp(`app\\.ver=${VERSIONS.trivy.slice(1).replace(/\./g, '\\.')}$`))
})

t('--insecure is for a registry on this machine only', () => {
  assert.ok(isLocalRegistry('127.0.0.1:5000/local/agent-docs@sha256:1'))
  assert.ok(isLocalRegistry('localhost:5000/x/y:z'))
  assert.not.ok(isLocalRegistry('ghcr.io/o/n@sha256:1'))
  assert.not.ok(isLocalRegistry('127.0.0.1.evil.example/o/n:t'))
})

t('the local and the downloaded DB never share a cache directory', () => {
  assert.is.not(trivyCacheDir('/c', 'local'), trivyCacheDir('/c', 'remote'))
})

t('the advisories hash changes when an advisory changes, and only then', () => {
  const dir = mkdtempSync(join(tmpdir(), 'adv-'))
  cpSync(ADVISORIES_DIR, dir, { recursive: true })
  const before = advisoriesHash(dir)
  assert.is(advisoriesHash(dir), before)
  writeFileSync(join(dir, 'ghsa', 'extra.json'), '{}')
  assert.is.not(advisoriesHash(dir), before)
  assert.throws(() => advisoriesHash(join(dir, 'missing')), /advisories directory .* is missing/)
})

t('the scan script refuses bad arguments with one line and exit 2, before running Trivy', async () => {
  const cases: [string[], RegExp][] = [
    [['img'], /^scan_image: --out is required$/],
    [['--out', '/tmp/x'], /^scan_image: no image given$/],
    [['--out', '/tmp/x', '--image-src', 'ftp', 'img'], /^scan_image: --image-src must be remote or docker, not ftp$/],
    [['--out', '/tmp/x', '--bogus', 'img'], /^scan_image: unknown option --bogus$/],
    [['--out', '/tmp/x', 'a', 'b'], /^scan_image: one image only/],
    [['--out', '/tmp/x', '--ignorefile', '/nonexistent.yaml', 'img'], /^scan_image: ignore file \/nonexistent\.yaml does not exist$/],
  ]
  for (const [args, re] of cases) {
    const r = await run([SCRIPT, ...args], { env: { ...process.env, TRIVY: '/bin/true' }, ...ALL_OK })
    assert.is(r.exitCode, 2, args.join(' '))
    assert.match(r.stderr.trim(), re)
  }
  const missing = await run([SCRIPT, '--out', '/tmp/x', 'img'], { env: { ...process.env, TRIVY: '/nonexistent/trivy' }, ...ALL_OK })
  assert.match(missing.stderr.trim(), /^scan_image: trivy not found/)
})

t('an offline scan without a DB fails closed before Trivy runs', async () => {
  const empty = mkdtempSync(join(tmpdir(), 'nodb-'))
  const r = await run([SCRIPT, '--out', join(empty, 'out'), '--cache-dir', empty, '--offline', 'img'], {
    env: { ...process.env, TRIVY: '/bin/true' },
    ...ALL_OK,
  })
  assert.is(r.exitCode, 2)
  assert.match(r.stderr.trim(), /^scan_image: no Trivy DB in .*\/db: an offline scan needs one/)
})

t.run()
