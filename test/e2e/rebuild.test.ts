/**
 * `npm run ci:rebuild` end to end, on a commit of a throwaway repository: the
 * build stage pushes and signs its image; the rebuild (a clean clone, an
 * empty buildkitd) gives the same digest and attests it, which deploy's
 * verification then reads. An image pushed from a tampered build (one byte
 * more in a document) but signed as that commit fails the rebuild, naming
 * the documents' layer; a deploy to an environment that requires the
 * rebuild attestation (prod: required in the committed environments.yaml) refuses it.
 */
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { buildImage, copyBuildContext, ociBuildArgs } from '../../lib/build/docker.ts'
import { loadConfig, type Config } from '../../lib/core/config.ts'
import { gitFacts, type GitFacts } from '../../lib/core/git.ts'
import { readReport } from '../../lib/core/reports.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { verifyImage } from '../../lib/deploy/verify.ts'
import { localVerifier } from '../../lib/sign/cosign.ts'
import { signBuild } from '../../lib/sign/sign.ts'
import { ensureBuildkitd } from '../../lib/sandbox/buildkitd.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { ensureCosign } from '../../lib/tools/cosign.ts'
import { attestAsScan, committedPolicyNow } from '../helpers/signed-image.ts'
import { copyEnv, copyRepo } from '../helpers/repo-copy.ts'
import { writeBuildAndScan } from '../helpers/reports.ts'
import { setUp } from '../helpers/hooks.ts'

const t = suite('e2e: rebuild')
const NAME = 'agent-docs-rebuild-e2e'
const REPO = `127.0.0.1:5000/local/${NAME}`
const s = {} as {
  config: Config
  copy: { dir: string; remove: () => void }
  reports: string
  git: GitFacts
  pinned: string
  tampered?: string
}

const inCopy = (task: string, env: NodeJS.ProcessEnv = {}, args: string[] = []) =>
  run(['node_modules/.bin/tsx', `tasks/${task}.ts`, ...args], {
    cwd: s.copy.dir,
    env: copyEnv({ REPORTS_DIR: s.reports, HUSKY: '0', ...env }),
    timeoutMs: 90 * 60_000,
    okCodes: ANY_EXIT,
  }).then((r) => ({ ...r, out: `${r.stdout}${r.stderr}`.trim() }))

setUp(t, 'e2e: rebuild', async () => {
  s.config = loadConfig()
  await ensureDockerEngine(s.config.docker)
  s.copy = await copyRepo('rebuild-e2e-')
  s.reports = mkdtempSync(join(tmpdir(), 'rebuild-reports-'))
  const git = (...a: string[]) => run(['git', ...a], { cwd: s.copy.dir, env: copyEnv({ HUSKY: '0' }) })
  await git('init', '-q', '-b', 'main')
  await git('add', '-A')
  await git('-c', 'user.email=test@example.invalid', '-c', 'user.name=test', 'commit', '-q', '--no-verify', '-m', 'the commit to rebuild')
  s.git = await gitFacts(s.copy.dir, {})
  const built = await inCopy('build', { IMAGE_NAME: NAME, IMAGE_TAG: s.git.sha, PUSH: 'true' })
  assert.is(built.exitCode, 0, `build stage failed:\n${built.out.split('\n').slice(-20).join('\n')}`)
  s.pinned = readReport(s.reports, 'build').image.pinned!
})

t.after(() => {
  s.copy?.remove()
  if (s.reports) rmSync(s.reports, { recursive: true, force: true })
})

t('the rebuild of a pushed commit gives its digest, and the match is attested where deploy reads it', async () => {
  const r = await inCopy('rebuild')
  assert.is(r.exitCode, 0, `ci:rebuild failed:\n${r.out.split('\n').slice(-20).join('\n')}`)
  const report = readReport(s.reports, 'rebuild')
  assert.is(report.match, true)
  assert.is(report.rebuiltDigest, s.pinned.split('@')[1])
  assert.is(report.commit, s.git.sha)
  assert.match(report.builder ?? '', /buildkitd started empty/)
  assert.match(r.out, /Attested: the rebuild of [0-9a-f]{12} is sha256:/)
  // Deploy's check, against the registry: signature, scan, provenance, and now the rebuild.
  const [repository, digest] = s.pinned.split('@') as [string, string]
  await attestAsScan(s.config, repository, digest, s.reports)
  const cosign = await ensureCosign(s.config.cacheDir)
  const sourceRepository = (await ociBuildArgs(s.copy.dir, s.git.sha)).SOURCE!
  const policy = committedPolicyNow()
  const v = await verifyImage({
    cosign,
    cache: s.config.cacheDir,
    imageSigners: [localVerifier(s.config.cacheDir)],
    scanSigners: [],
    repository,
    digest,
    sourceRepository,
    commit: s.git.sha,
    policy: { digest: policy.digest, committed: policy },
    maxAgeSecs: 3600,
    db: { maxAgeSecs: 30 * 86_400, sources: ['local'] },
    allowDirty: false,
    requireRebuild: true,
  })
  assert.is(v.rebuild?.builder, report.builder)
})

t('an image pushed from a tampered build and signed as the commit fails the rebuild, naming the docs layer', async () => {
  // What a compromised builder would push (the provenance names the Dockerfile by its path in the repository, as the build's does): the commit plus one byte in a document, under the commit's provenance.
  const provenance = JSON.parse(readFileSync(join(s.reports, 'build', 'provenance.json'), 'utf8')) as {
    buildDefinition: { externalParameters: { buildArgs: Record<string, string> } }
  }
  const args = provenance.buildDefinition.externalParameters.buildArgs
  const ctx = copyBuildContext(s.copy.dir, 'tampered-')
  try {
    const docs = join(ctx, 'crates', 'doc-server', 'docs')
    appendFileSync(
      join(
        docs,
        readdirSync(docs)
          .filter((f) => f.endsWith('.md'))
          .sort()[0]!,
      ),
      'x',
    )
    const { builder } = await ensureBuildkitd(s.config.cacheDir)
    const built = await buildImage({
      builder,
      context: ctx,
      dockerfile: join(ctx, 'Dockerfile.optimized'),
      buildArgs: args,
      push: [`${REPO}:tampered-${process.pid}`],
    })
    s.tampered = `${REPO}@${built.digest!}`
  } finally {
    rmSync(ctx, { recursive: true, force: true })
  }
  await signBuild({
    config: s.config,
    image: s.tampered,
    git: s.git,
    dockerfile: join(repoRoot, 'Dockerfile.optimized'),
    buildArgs: args,
    startedOn: new Date(),
    outDir: mkdtempSync(join(s.reports, 'tampered-')),
  })
  const r = await inCopy('rebuild', {}, ['--image', s.tampered])
  assert.is.not(r.exitCode, 0)
  const last = r.out.split('\n').at(-1) ?? ''
  assert.match(
    last,
    new RegExp(
      `^✖ rebuild: ${s.tampered.split('@')[1]!.slice(0, 19)}… is not what commit ${s.git.sha.slice(0, 12)} builds to \\(sha256:[0-9a-f]{12}…\\): layer \\d+ of \\d+ \\(COPY /out/docs /usr/local/share/doc-server/docs\\) differs: pushed sha256:`,
    ),
  )
  assert.not.match(last, /doc-server\.dep-v0|\/usr\/local\/bin\/doc-server\)/, 'only the docs layer differs')
  const report = readReport(s.reports, 'rebuild')
  assert.is(report.match, false)
  assert.is(report.rebuiltDigest, s.pinned.split('@')[1], 'the rebuild gave what the commit builds to')
  assert.is(report.attestedBy, null)
})

t('a deploy to prod, which requires the rebuild attestation, refuses a digest without one before any cluster is touched', async () => {
  assert.ok(s.tampered, 'the tampered image was pushed')
  const [repository, digest] = s.tampered!.split('@') as [string, string]
  await attestAsScan(s.config, repository, digest, s.reports)
  writeBuildAndScan(s.reports, repository, digest, { commit: s.git.sha, branch: 'main' })
  // The committed prod, with this machine's key as its signer and a context to name (the rebuild requirement is the committed one).
  const key = localVerifier(s.config.cacheDir).fingerprint
  const envs = readFileSync(join(s.copy.dir, 'charts/doc-server/environments.yaml'), 'utf8')
  assert.match(envs, /\n  rebuild: required\n/, 'the committed prod requires the rebuild')
  writeFileSync(
    join(s.copy.dir, 'charts/doc-server/environments.yaml'),
    `prod:\n  contexts: [prod-eu-west-1]\n  signers: [{ key: ${key} }]\n  scan: { dbSources: [local] }\n  rebuild: required\n`,
  )
  const r = await inCopy('deploy', {
    DEPLOY_ENV: 'prod',
    KUBE_CONTEXT: 'prod-eu-west-1',
    DEPLOY_NAMESPACE: `doc-server-rebuild-e2e-${process.pid}`,
  })
  assert.is.not(r.exitCode, 0)
  assert.match(
    r.out.split('\n').at(-1) ?? '',
    new RegExp(
      `^✖ deploy: refused: ${digest.slice(0, 19)}… has no https://doc-server\\.dev/attestations/rebuild/v1 attestation signed by key sha256:`,
    ),
  )
  const report = readReport(s.reports, 'deploy')
  assert.is(report.context, null, 'no cluster was contacted')
})

t.run()
