import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { baseImageArgs, buildImage, buildctlArgs, frontendBuildArgs, imageExporterOptions, pushFailed } from '../lib/build/docker.ts'
import { BASE_IMAGES } from '../lib/tools/versions.ts'
import { loginRefused } from '../lib/build/registry.ts'
import { buildFailure, parseBuildOutput } from '../lib/build/buildkit-log.ts'
import { PipelineError } from '../lib/core/errors.ts'

const t = suite('build client')

t("a build that fails before any step names docker's error line, not its usage hint", () => {
  const text = "unknown flag: --cache-to\nSee 'docker build --help'.\n"
  assert.is(buildFailure(parseBuildOutput(text), text).message, 'image build failed: unknown flag: --cache-to')
  const usage =
    '"docker build" requires exactly 1 argument.\nSee \'docker build --help\'.\n\nUsage:  docker build [OPTIONS] PATH | URL | -\n\nBuild an image from a Dockerfile\n'
  assert.is(buildFailure(parseBuildOutput(usage), usage).message, 'image build failed: "docker build" requires exactly 1 argument.')
})

const B = { buildctl: '/opt/buildctl', addr: 'unix:///run/bk.sock' }
const FILES = { metadata: '/tmp/m.json', dockerTar: '/tmp/i.tar' }

t('buildctl gets the dockerfile frontend with the context, the file, the build arguments and the target', () => {
  const argv = buildctlArgs(
    B,
    {
      builder: B,
      context: '/src',
      dockerfile: '/src/docker/Dockerfile.x',
      buildArgs: { A: '1', B: 'x y' },
      target: 'runtime',
      noCache: true,
      caBundle: '/ca.crt',
    },
    FILES,
  )
  assert.equal(argv.slice(0, 7), [
    '/opt/buildctl',
    '--addr',
    'unix:///run/bk.sock',
    'build',
    '--progress=plain',
    '--frontend',
    'dockerfile.v0',
  ])
  const pairs = (flag: string) => argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []))
  assert.equal(pairs('--local'), ['context=/src', 'dockerfile=/src/docker'])
  assert.equal(pairs('--opt'), ['filename=Dockerfile.x', 'build-arg:A=1', 'build-arg:B=x y', 'target=runtime'])
  assert.equal(pairs('--secret'), ['id=ca-bundle,src=/ca.crt'])
  assert.ok(argv.includes('--no-cache'))
  assert.equal(pairs('--metadata-file'), ['/tmp/m.json'])
  assert.equal(pairs('--output'), [], 'no output asked for: a cache-only build')
})

t('SOURCE_DATE_EPOCH reaches the exporters only, with rewrite-timestamp, and the push and the OCI tarball share their options', () => {
  const args = { REVISION: 'abc', SOURCE_DATE_EPOCH: '1764547200' }
  const argv = buildctlArgs(
    B,
    {
      builder: B,
      context: '/c',
      dockerfile: '/c/Dockerfile',
      buildArgs: args,
      push: ['r/a:1', 'r/a:2'],
      ociTar: '/tmp/o.tar',
      caBundle: false,
    },
    FILES,
  )
  const outputs = argv.flatMap((a, i) => (a === '--output' ? [argv[i + 1]!] : []))
  assert.equal(outputs, [
    'type=image,"name=r/a:1,r/a:2",push=true,oci-mediatypes=true,compression=gzip,source-date-epoch=1764547200,rewrite-timestamp=true',
    'type=oci,dest=/tmp/o.tar,oci-mediatypes=true,compression=gzip,source-date-epoch=1764547200,rewrite-timestamp=true',
  ])
  // Given to the frontend it would date WORKDIR's directory and so change every later step's cache key with each commit.
  assert.not.ok(argv.some((a) => a.startsWith('build-arg:SOURCE_DATE_EPOCH')))
  assert.ok(argv.includes('build-arg:REVISION=abc'))
  assert.not.ok(argv.includes('--secret'), 'no CA bundle when told so')
  // The final stage always runs again, so no layer of it carries the time of a build older than the commit.
  assert.equal(argv.slice(argv.indexOf('no-cache=runtime') - 1, argv.indexOf('no-cache=runtime') + 1), ['--opt', 'no-cache=runtime'])
  const artifacts = buildctlArgs(
    B,
    { builder: B, context: '/c', dockerfile: '/c/Dockerfile', target: 'artifacts', outputDir: '/tmp/a', caBundle: false },
    FILES,
  )
  assert.not.ok(
    artifacts.some((a) => a.startsWith('no-cache')),
    'not for a files-only export of another stage',
  )
  assert.equal(frontendBuildArgs(args), [['REVISION', 'abc']])
  assert.equal(imageExporterOptions({}), ['oci-mediatypes=true', 'compression=gzip'], 'no epoch, no rewrite')
})

t('cache import and export are passed as BuildKit takes them; the engine builder refuses what it cannot do', async () => {
  const argv = buildctlArgs(
    B,
    {
      builder: B,
      context: '/c',
      dockerfile: '/c/Dockerfile',
      cacheFrom: 'type=gha,scope=s',
      cacheTo: 'type=registry,ref=127.0.0.1:5000/x:cache,mode=max',
      load: { docker: 'docker', name: 'x:1' },
      caBundle: false,
    },
    FILES,
  )
  assert.equal(argv.slice(argv.indexOf('--import-cache'), argv.indexOf('--import-cache') + 2), ['--import-cache', 'type=gha,scope=s'])
  assert.equal(argv.slice(argv.indexOf('--export-cache'), argv.indexOf('--export-cache') + 2), [
    '--export-cache',
    'type=registry,ref=127.0.0.1:5000/x:cache,mode=max',
  ])
  assert.ok(argv.includes('type=docker,name=x:1,dest=/tmp/i.tar,oci-mediatypes=true,compression=gzip'))
  try {
    await buildImage({ builder: { docker: '/nonexistent/docker' }, context: '/c', dockerfile: '/c/Dockerfile', push: ['r/a:1'] })
    assert.unreachable('the engine builder accepted a push')
  } catch (err) {
    assert.instance(err, PipelineError)
    assert.match((err as Error).message, /^build: the Docker engine's builder only loads images or exports files here/)
  }
})

t('base images become build arguments pinned by digest; an unpinned one is refused', () => {
  const d = `sha256:${'a'.repeat(64)}`
  const pinned = { [BASE_IMAGES.chef]: `${BASE_IMAGES.chef}@${d}`, [BASE_IMAGES.runtime]: `${BASE_IMAGES.runtime}@${d}` }
  assert.equal(baseImageArgs(pinned), { CHEF_IMAGE: `${BASE_IMAGES.chef}@${d}`, RUNTIME_IMAGE: `${BASE_IMAGES.runtime}@${d}` })
  assert.throws(
    () => baseImageArgs({ [BASE_IMAGES.chef]: pinned[BASE_IMAGES.chef]! }),
    /^build: base image gcr\.io\/distroless\/static-debian12:nonroot \(RUNTIME_IMAGE\) was not pinned to a digest$/,
  )
})

t('a build that failed while pushing is told apart from one that failed building', () => {
  assert.ok(
    pushFailed(
      parseBuildOutput('#20 exporting to image\n#20 pushing layers\n#20 ERROR: failed to push 127.0.0.1:1/x: connection refused\n'),
    ),
  )
  assert.not.ok(
    pushFailed(parseBuildOutput('#12 [build 4/4] RUN cargo build\n#12 ERROR: process did not complete successfully: exit code: 101\n')),
  )
})

t('a refused login is told apart from a local failure, so only the refusal skips the retries', () => {
  assert.ok(loginRefused('Error response from daemon: login attempt to https://127.0.0.1:5443/v2/ failed with status: 401 Unauthorized'))
  assert.ok(loginRefused('Error response from daemon: Get "https://ghcr.io/v2/": denied: denied'))
  assert.ok(
    loginRefused('Error response from daemon: Get "https://registry-1.docker.io/v2/": unauthorized: incorrect username or password'),
  )
  assert.not.ok(loginRefused('Got permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock'))
  assert.not.ok(loginRefused('Error response from daemon: Get "https://ghcr.io/v2/": dial tcp: lookup ghcr.io: no such host'))
})

t.run()
