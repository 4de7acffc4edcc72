/**
 * The image is reproducible: the same sources and build arguments, built on
 * two buildkitd daemons that share nothing (each started empty, its own
 * state), from two different directories, minutes apart, give one digest;
 * a one-byte change in a document gives another, and only the documents'
 * layer differs. A third empty builder that imports the first one's cache
 * from the local registry (`type=registry`, as the workflow's `type=gha`)
 * skips the cook step and still gives the same digest.
 */
import { appendFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { baseImageArgs, buildImage, copyBuildContext, ociBuildArgs, type BuildResult, type Builder } from '../../lib/build/docker.ts'
import { cookStep } from '../../lib/build/buildkit-log.ts'
import { imageDifferences, readOciTarball } from '../../lib/build/rebuild.ts'
import { manifestDigest, pinnedName } from '../../lib/build/registry.ts'
import { LOCAL_REGISTRY } from '../../lib/sandbox/registry.ts'
import { loadConfig } from '../../lib/core/config.ts'
import { gitFacts } from '../../lib/core/git.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { buildkitFor, coldBuilder } from '../../lib/sandbox/buildkitd.ts'
import { ensureDockerEngine } from '../../lib/sandbox/engine.ts'
import { VERSIONS } from '../../lib/tools/versions.ts'
import { setUp } from '../helpers/hooks.ts'

const t = suite('e2e: reproducible image')
const CACHE_REF = `127.0.0.1:5000/local/agent-docs-e2e-cache:repro-${process.pid}`
const s = {} as {
  args: Record<string, string>
  bases: Record<string, string>
  work: string
  dirs: string[]
  first?: { digest: string; finished: number }
}

/** A build of `context` into an OCI tarball on `builder`; its digest and the tarball. */
async function build(
  builder: Builder,
  context: string,
  extra: { cacheTo?: string; cacheFrom?: string } = {},
): Promise<BuildResult & { tar: string }> {
  const tar = join(mkdtempSync(join(s.work, 'out-')), 'image.tar')
  const r = await buildImage({
    builder,
    context,
    dockerfile: join(context, 'Dockerfile.optimized'),
    buildArgs: s.args,
    ociTar: tar,
    ...extra,
  })
  // For the record (docs/reproducible.md): what each build took and gave; nothing is asserted on time.
  console.log(
    `built ${context.split('/').pop()} in ${r.seconds.toFixed(1)} s (cook ${cookStep(r.steps)?.cached ? 'cached' : 'run'}): ${r.digest}`,
  )
  return { ...r, tar }
}

setUp(t, 'e2e: reproducible image', async () => {
  const config = loadConfig()
  const docker = (await ensureDockerEngine(config.docker)).docker
  // The base images published where BuildKit pulls them, pinned by digest as the build stage pins them.
  const setup = await buildkitFor(config, docker)
  s.bases = setup.bases
  s.args = { ...(await ociBuildArgs(repoRoot, (await gitFacts(repoRoot)).sha)), ...baseImageArgs(setup.bases) }
  s.work = mkdtempSync(join(tmpdir(), 'repro-e2e-'))
  s.dirs = [copyBuildContext(repoRoot, 'repro-a-'), copyBuildContext(repoRoot, 'repro-b-')]
})

t.after(() => {
  for (const d of [...(s.dirs ?? []), s.work]) if (d) rmSync(d, { recursive: true, force: true })
})

t('each base image is pinned to the digest its registry serves for the tag (asked as BUILDKIT_HOST builds ask it)', async () => {
  for (const [name, pinned] of Object.entries(s.bases)) {
    assert.is(pinnedName(name, await manifestDigest(name, { mirror: LOCAL_REGISTRY })), pinned)
    assert.is(await manifestDigest(pinned, { mirror: LOCAL_REGISTRY }), pinned.split('@')[1], 'by digest too')
  }
  try {
    await manifestDigest('gcr.io/distroless/no-such-image:nonroot', { mirror: LOCAL_REGISTRY })
    assert.unreachable('an unknown image resolved')
  } catch (err) {
    assert.match(
      (err as Error).message,
      /^registry: cannot resolve gcr\.io\/distroless\/no-such-image:nonroot \(from 127\.0\.0\.1:5000\) to a digest: HTTP 404$/,
    )
  }
})

t('two empty builders, two directories, minutes apart: one digest; a one-byte doc change: another, in the docs layer only', async () => {
  const a = await coldBuilder(loadConfig().cacheDir, 'repro-a')
  let first: BuildResult & { tar: string }
  try {
    first = await build(a.builder, s.dirs[0]!, { cacheTo: `type=registry,ref=${CACHE_REF},mode=max` })
  } finally {
    await a.stop()
  }
  assert.is(cookStep(first.steps)?.cached, false, 'the first builder had nothing cached')
  const finished = Date.now()
  const b = await coldBuilder(loadConfig().cacheDir, 'repro-b')
  try {
    const second = await build(b.builder, s.dirs[1]!)
    assert.is(cookStep(second.steps)?.cached, false, 'the second builder had nothing cached either')
    assert.ok(Date.now() - finished > 10_000, 'the second build ran later')
    const diff = imageDifferences(await readOciTarball(first.tar), await readOciTarball(second.tar))
    assert.is(second.digest, first.digest, `BuildKit ${VERSIONS.buildkit}: the two builds differ: ${diff.join('; ')}`)

    // One byte more in one document: only the docs' layer may change.
    const docs = join(s.dirs[1]!, 'crates', 'doc-server', 'docs')
    appendFileSync(
      join(
        docs,
        readdirSync(docs)
          .filter((f) => f.endsWith('.md'))
          .sort()[0]!,
      ),
      'x',
    )
    const changed = await build(b.builder, s.dirs[1]!)
    assert.is.not(changed.digest, first.digest)
    const differences = imageDifferences(await readOciTarball(first.tar), await readOciTarball(changed.tar))
    assert.is(differences.length, 1, differences.join('; '))
    assert.match(differences[0]!, /^layer \d+ of \d+ \(COPY \/out\/docs \/usr\/local\/share\/doc-server\/docs\) differs: /)
  } finally {
    await b.stop()
  }
  s.first = { digest: first.digest!, finished }
})

t('an empty builder importing the registry cache skips the cook step and gives the same digest', async () => {
  assert.ok(s.first, 'the first build ran')
  const c = await coldBuilder(loadConfig().cacheDir, 'repro-c')
  try {
    const third = await build(c.builder, s.dirs[0]!, { cacheFrom: `type=registry,ref=${CACHE_REF}` })
    assert.is(cookStep(third.steps)?.cached, true, 'the cook step came from the imported cache')
    assert.is(third.digest, s.first!.digest)
  } finally {
    await c.stop()
  }
})

t.run()
