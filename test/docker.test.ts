import { mkdtempSync,readFileSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { machineCaBundle,ociBuildArgs } from '../lib/build/docker.ts'
import { parsePushDigest } from '../lib/build/registry.ts'
import { buildBreakdown,buildFailure,compiledCrates,cookStep,parseBuildOutput,stepLabel } from '../lib/build/buildkit-log.ts'
import { DEBIAN_CLIENT, dockerClient } from '../lib/build/docker.ts'
import { DISTROLESS_CC_PACKAGES,DISTROLESS_STATIC_PACKAGES,ensureBaseImages,statusEntry } from '../lib/sandbox/base-images.ts'
import { registryConfig } from '../lib/sandbox/registry.ts'
import { run } from '../lib/core/run.ts'
import { BASE_IMAGES,VERSIONS } from '../lib/tools/versions.ts'

const t = suite('docker')
// Real BuildKit output (docker 20.10, --progress=plain) of Dockerfile.optimized.
const fixture = (name: string) => readFileSync(new URL(`./fixtures/buildkit/${name}`, import.meta.url), 'utf8')

t('the cook step cache hit is read from BuildKit\'s own CACHED line', () => {
  const steps = parseBuildOutput(fixture('warm-code-change.txt'))
  const cook = cookStep(steps)!
  assert.match(cook.name, /^\[cook 2\/2\] RUN .*cargo chef cook --release/)
  assert.is(cook.cached, true)
  const build = steps.find((s) => /cargo auditable build/.test(s.name))!
  assert.is(build.cached, false)
  assert.ok((build.seconds ?? 0) > 0)
  assert.equal(compiledCrates(build), ['doc-server'], 'only our crate compiles on a code-only change')
  assert.is(cookStep(parseBuildOutput('#1 [a 1/1] RUN cargo build\n#1 DONE 1.0s\n')), undefined)
})

t('the warm seconds split into compile and link, strip, UPX, export and the rest', () => {
  const b = buildBreakdown(parseBuildOutput(fixture('warm-code-change.txt')), 40)
  // cargo printed Finished 28.70 s into the 29.7 s step; upx took 5.2 s.
  assert.equal(b, { 'compile+link': 28.7, 'strip+sections': 1, upx: 5.2, export: 0, other: 5.1 })
  assert.is(parseBuildOutput('#23 exporting to image\n#23 DONE 0.4s\n')[0]!.name, 'exporting to image')
})

t('with UPX in the compile step, its seconds run from the packing: line to the step\'s end', () => {
  const steps = parseBuildOutput(fixture('warm-code-change-one-step.txt'))
  // cargo printed Finished at 2.204 s, packing: at 2.223 s, and the step took 2.6 s.
  assert.equal(buildBreakdown(steps, 3), { 'compile+link': 2.2, 'strip+sections': 0, upx: 0.4, export: 0, other: 0.4 })
  assert.equal(compiledCrates(steps.find((s) => /cargo auditable build/.test(s.name))), ['doc-server'])
  assert.is(cookStep(steps)!.cached, true)
})

t('a cook step that ran is not a cache hit', () => {
  const text = '#16 [cook 2/2] RUN cargo chef cook --release --recipe-path recipe.json\n#16 0.5    Compiling serde v1.0.0\n#16 DONE 74.3s\n'
  const cook = cookStep(parseBuildOutput(text))!
  assert.is(cook.cached, false)
  assert.is(cook.seconds, 74.3)
  assert.equal(compiledCrates(cook), ['serde'])
})

t('a compile error names the Dockerfile step and the compiler\'s first error', () => {
  const text = fixture('compile-error.txt')
  const err = buildFailure(parseBuildOutput(text), text)
  assert.is(err.message, 'docker build failed at [build 3/4] RUN cargo auditable build --release --locked --bin doc-server && …: error: this file contains an unclosed delimiter')
  assert.match(err.details ?? '', /--> crates\/doc-server\/src\/main\.rs:\d+:\d+/)
  assert.match(err.details ?? '', /error: could not compile `doc-server`/)
  assert.ok((err.details ?? '').split('\n').length <= 40, 'the error block, not the whole log')
  assert.not.match(err.details ?? '', /Compiling/)
})

t('a failing step without a compiler error shows the tool\'s own last words', () => {
  const text = fixture('upx-env-error.txt')
  const err = buildFailure(parseBuildOutput(text), text)
  assert.match(err.message, /^docker build failed at \[build 4\/4\] RUN if .*: upx: invalid string 'true' in environment variable 'UPX'$/)
})

t('a failure outside any step still gives one line', () => {
  const text = 'failed to solve with frontend dockerfile.v0: failed to read dockerfile: open Dockerfile: no such file or directory\n'
  assert.match(buildFailure(parseBuildOutput(text), text).message, /^docker build failed: failed to solve with frontend dockerfile\.v0/)
})

t('step labels drop mount flags and stay short', () => {
  assert.is(stepLabel('[cook 2/2] RUN --mount=type=secret,id=ca-bundle,target=/x     cargo chef cook'), '[cook 2/2] RUN cargo chef cook')
  assert.is(stepLabel('[b 1/2] RUN make  &&  make install'), '[b 1/2] RUN make && …')
  assert.is(stepLabel('x'.repeat(200)).length, 90)
})

t('the digest comes from docker push\'s last line', () => {
  const out = 'abc: Pushed\nlatest: digest: sha256:' + 'e'.repeat(64) + ' size: 1153\n'
  assert.equal(parsePushDigest(out), { digest: `sha256:${'e'.repeat(64)}`, size: 1153 })
  assert.is(parsePushDigest('abc: Retrying in 5 seconds'), undefined)
})

t('OCI labels carry the commit, its date, and never credentials from the remote URL', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'oci-'))
  const git = (...a: string[]) => run(['git', ...a], { cwd: dir })
  await git('init', '-q')
  await git('-c', 'user.email=t@example.invalid', '-c', 'user.name=t', 'commit', '-q', '--allow-empty', '-m', 'x')
  await git('remote', 'add', 'origin', 'https://bot:ghp_secret123@github.com/acme/doc.git')
  const sha = (await git('rev-parse', 'HEAD')).stdout.trim()
  const args = await ociBuildArgs(dir, sha, {})
  assert.is(args.SOURCE, 'https://github.com/acme/doc.git')
  assert.is(args.REVISION, sha)
  assert.match(args.CREATED!, /^\d{4}-\d\d-\d\dT/)
  const gh = await ociBuildArgs(dir, sha, { GITHUB_REPOSITORY: 'acme/doc', GITHUB_SERVER_URL: 'https://github.com' })
  assert.is(gh.SOURCE, 'https://github.com/acme/doc')
})

t('the CA bundle handed to builds is the machine\'s own, when there is one', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ca-'))
  writeFileSync(join(dir, 'ca.pem'), 'x')
  assert.is(machineCaBundle({ SSL_CERT_FILE: join(dir, 'ca.pem') }), join(dir, 'ca.pem'))
})

t('a bare docker client resolves to Debian\'s when it is installed; a configured path is kept', () => {
  assert.is(dockerClient('/opt/docker'), '/opt/docker')
  assert.is(dockerClient('docker', (path) => path === DEBIAN_CLIENT), DEBIAN_CLIENT)
  assert.is(dockerClient('docker', () => false), 'docker', 'without Debian\'s client, the first docker on PATH')
})

t('dpkg status entries say installed, as scanners expect', () => {
  const entry = statusEntry('Package: libssl3\nSource: openssl\nVersion: 3.0.17-1~deb12u2\nArchitecture: amd64\n')
  assert.is(entry, 'Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: 3.0.17-1~deb12u2\nArchitecture: amd64\n')
})

t('the static stand-in is distroless static\'s five packages: no C library; cc adds the C and C++ runtime', async () => {
  assert.equal([...DISTROLESS_STATIC_PACKAGES], ['base-files', 'netbase', 'tzdata', 'media-types', 'ca-certificates'])
  for (const p of DISTROLESS_STATIC_PACKAGES) assert.ok((DISTROLESS_CC_PACKAGES as readonly string[]).includes(p))
  assert.ok((DISTROLESS_CC_PACKAGES as readonly string[]).includes('libc6'))
  assert.is(BASE_IMAGES.runtime, 'gcr.io/distroless/static-debian12:nonroot')
  try {
    await ensureBaseImages('/nonexistent/docker', tmpdir(), ['example.invalid/base:1'])
    assert.unreachable('an unknown base image was accepted')
  } catch (err) {
    assert.match((err as Error).message, /^base images: no stand-in is known for example\.invalid\/base:1; use one of /)
  }
})

t('the local registry listens on loopback only, its data outside the clone', () => {
  const cfg = registryConfig('127.0.0.1:5000', '/cache/registry/data')
  assert.match(cfg, /^ {2}addr: 127\.0\.0\.1:5000$/m)
  assert.match(cfg, /rootdirectory: \/cache\/registry\/data/)
})

t('the Dockerfiles default to the pinned names in lib/tools/versions.ts, and pull no frontend', () => {
  const root = new URL('..', import.meta.url)
  const optimized = readFileSync(new URL('Dockerfile.optimized', root), 'utf8')
  assert.match(optimized, new RegExp(`^ARG CHEF_IMAGE=${BASE_IMAGES.chef.replace(/[.]/g, '\\.')}$`, 'm'))
  assert.match(optimized, new RegExp(`^ARG RUNTIME_IMAGE=${BASE_IMAGES.runtime.replace(/[.]/g, '\\.')}$`, 'm'))
  assert.match(optimized, new RegExp(`^ARG CARGO_AUDITABLE_VERSION=${VERSIONS.cargoAuditable.replace(/[.]/g, '\\.')}$`, 'm'))
  for (const f of ['Dockerfile.optimized', 'bench/Dockerfile.naive', 'bench/Dockerfile.cache-mount']) {
    const text = readFileSync(new URL(f, root), 'utf8')
    assert.not.match(text, /^#\s*syntax\s*=/m, `${f} would pull a frontend image`)
    assert.ok(text.includes(BASE_IMAGES.chef), `${f} builds on the pinned chef image`)
  }
  const ignore = readFileSync(new URL('.dockerignore', root), 'utf8').split('\n')
  for (const p of ['target/', 'node_modules/', 'reports/']) assert.ok(ignore.includes(p), `.dockerignore keeps ${p} out`)
  assert.not.ok(ignore.some((l) => /^Cargo\.lock$|^\*\.lock$/.test(l.trim())), 'Cargo.lock stays in the context')
})

t.run()
