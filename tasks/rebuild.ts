/**
 * rebuild (`npm run ci:rebuild`): proves that a pushed digest is what its
 * commit builds to. Verifies the image's signature and provenance, clones the
 * commit afresh, rebuilds it on a builder with nothing cached from the build
 * arguments the provenance records (base images pinned by digest, the
 * commit's SOURCE_DATE_EPOCH), and compares digests. A match is attested
 * (signed, attached to the digest); a mismatch fails naming the layer or
 * config field that differs. `--image repo@sha256:…` and `--commit` default
 * to reports/build.json.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain, parseOptions } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { PipelineError, firstLine } from '../lib/core/errors.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { readReport, writeReport } from '../lib/core/reports.ts'
import { defineStage, need, runStage } from '../lib/core/stage.ts'
import { appendSummary, markdownTable, setOutput } from '../lib/core/summary.ts'
import { buildImage, type Builder } from '../lib/build/docker.ts'
import { parseImageName } from '../lib/build/registry.ts'
import { cleanClone, imageDifferences, readOciTarball, readPushedImage, sha256File } from '../lib/build/rebuild.ts'
import { PROVENANCE_PREDICATE_TYPE, checkProvenance } from '../lib/sign/attest.ts'
import { attestationsOf, signsDigest, verifiedReferrers } from '../lib/sign/cosign.ts'
import { builderIdMatches } from '../lib/sign/signers.ts'
import { signingFor } from '../lib/sign/sign.ts'
import { attestRebuild, rebuildInputs, type RebuildInputs } from '../lib/sign/rebuild.ts'
import { ensureBuildkit } from '../lib/tools/buildkit.ts'
import { VERSIONS } from '../lib/tools/versions.ts'
import { coldBuilder } from '../lib/sandbox/buildkitd.ts'

export interface RebuildCtx {
  config: Config
  started: number
  /** `repository@sha256:…` */
  image: string
  source: string
  inputs?: RebuildInputs
  clone?: string
  builder?: Builder & { stop?: () => Promise<void> }
  /** Where the rebuild ran, for the report and the attestation. */
  describe?: string
  rebuilt?: { digest: string; seconds: number }
  differences?: string[]
  identity?: string
}

export function rebuildInputsFrom(argv: readonly string[], config = loadConfig()): RebuildCtx {
  const { values } = parseOptions('ci:rebuild', argv, { image: { type: 'string' }, source: { type: 'string' } })
  const image = values.image ?? readReport(config.reportsDir, 'build').image.pinned
  if (!image)
    throw new PipelineError(
      'rebuild: build.json names no pushed digest (nothing was pushed); pass --image <repository>@sha256:… of a pushed image',
    )
  if (!parseImageName(image).digest)
    throw new PipelineError(`rebuild: --image ${image} is not pinned by digest; pass <repository>@sha256:…`)
  return { config, started: performance.now(), image, source: values.source ?? repoRoot }
}

const digestOf = (image: string) => image.split('@')[1]!
const registryAuth = (c: Config) => (c.registryUser && c.registryToken ? { user: c.registryUser, token: c.registryToken } : undefined)

function report(ctx: RebuildCtx, error: string | null): void {
  const rebuilt = ctx.rebuilt?.digest ?? null
  writeReport(ctx.config.reportsDir, 'rebuild', {
    image: ctx.image,
    commit: ctx.inputs?.commit ?? null,
    rebuiltDigest: rebuilt,
    match: rebuilt === digestOf(ctx.image),
    differences: ctx.differences ?? [],
    builder: ctx.describe ?? null,
    buildSeconds: ctx.rebuilt?.seconds ?? null,
    seconds: Math.round((performance.now() - ctx.started) / 100) / 10,
    attestedBy: ctx.identity ?? null,
    error,
  })
  appendSummary(
    `### rebuild\n\n${markdownTable(['image', 'rebuilt', 'match', 'build seconds'], [[digestOf(ctx.image), rebuilt ?? '-', rebuilt === digestOf(ctx.image) ? 'yes' : 'no', ctx.rebuilt?.seconds.toFixed(1) ?? '-']])}${(ctx.differences ?? []).map((d) => `\n- ${d}`).join('')}`,
  )
}

/** The receipt is written whatever happens; the clone and the cold builder never outlive the run. */
const reported =
  (fn: NonNullable<ListrTask<RebuildCtx>['task']>): ListrTask<RebuildCtx>['task'] =>
  async (ctx, task) => {
    try {
      return await fn(ctx, task)
    } catch (err) {
      report(ctx, firstLine(err))
      await cleanUp(ctx)
      throw err
    }
  }

async function cleanUp(ctx: RebuildCtx): Promise<void> {
  if (ctx.clone) rmSync(ctx.clone, { recursive: true, force: true })
  await ctx.builder?.stop?.()
  ctx.clone = undefined
  ctx.builder = undefined
}

export function rebuildTasks(): ListrTask<RebuildCtx>[] {
  return [
    {
      title: 'Signature and provenance, from the registry',
      task: reported(async (ctx, task) => {
        // The image must be signed by whoever this run signs as: the same workflow and ref on GitHub, this machine's key here.
        const s = await signingFor(ctx.config)
        const referrers = await verifiedReferrers({ cosign: s.cosign, image: ctx.image }, s.verifier, ctx.config.cacheDir)
        if (!signsDigest(referrers.statements, digestOf(ctx.image)))
          throw new PipelineError(
            `rebuild: ${digestOf(ctx.image).slice(0, 19)}… has no signature by ${s.identity} (${referrers.bundles} bundle(s) in the registry); only a signed image is rebuilt and attested`,
          )
        const statements = attestationsOf(referrers, PROVENANCE_PREDICATE_TYPE)
        const inputs = rebuildInputs(statements, digestOf(ctx.image))
        checkProvenance(statements, {
          digest: digestOf(ctx.image),
          repository: inputs.buildArgs.SOURCE ?? 'local',
          commit: inputs.commit,
          allowDirty: false,
          builder: (id) => builderIdMatches(id, s.verifier),
        })
        ctx.inputs = inputs
        task.title = `Provenance: ${digestOf(ctx.image).slice(0, 19)}… is commit ${inputs.commit.slice(0, 12)}, bases ${inputs.buildArgs.CHEF_IMAGE!.split('@')[1]!.slice(7, 19)} and ${inputs.buildArgs.RUNTIME_IMAGE!.split('@')[1]!.slice(7, 19)}`
      }),
    },
    {
      title: 'A clean clone of the commit',
      task: reported(async (ctx, task) => {
        const inputs = need(ctx.inputs, 'the provenance')
        ctx.clone = await cleanClone(ctx.source, inputs.commit)
        const actual = sha256File(join(ctx.clone, inputs.dockerfile.path))
        if (actual !== inputs.dockerfile.sha256)
          throw new PipelineError(
            `rebuild: ${inputs.dockerfile.path} at ${inputs.commit.slice(0, 12)} hashes to ${actual.slice(0, 12)}, not ${inputs.dockerfile.sha256.slice(0, 12)} as the provenance says`,
          )
        task.title = `A clean clone of ${inputs.commit.slice(0, 12)} from ${ctx.source} (${ctx.clone})`
      }),
    },
    {
      title: 'A builder with nothing cached',
      task: reported(async (ctx, task) => {
        if (ctx.config.buildkitHost) {
          // The workflow's rebuild job has a builder of its own on a runner of its own.
          const { buildctl } = await ensureBuildkit(ctx.config.cacheDir, ['buildctl'])
          ctx.builder = { buildctl, addr: ctx.config.buildkitHost }
          ctx.describe = `BuildKit ${VERSIONS.buildkit} at ${ctx.config.buildkitHost}`
        } else {
          const cold = await coldBuilder(ctx.config.cacheDir, 'rebuild')
          ctx.builder = { ...cold.builder, stop: cold.stop }
          ctx.describe = `BuildKit ${VERSIONS.buildkit}, a buildkitd started empty for this rebuild`
        }
        task.title = `Builder: ${ctx.describe}`
      }),
    },
    {
      title: 'Rebuild from nothing (--no-cache, no cache import)',
      task: reported(async (ctx, task) => {
        const inputs = need(ctx.inputs, 'the provenance')
        const clone = need(ctx.clone, 'the clone')
        const out = mkdtempSync(join(tmpdir(), 'rebuild-image-'))
        try {
          const tar = join(out, 'image.tar')
          const built = await buildImage({
            builder: need(ctx.builder, 'the builder'),
            context: clone,
            dockerfile: join(clone, inputs.dockerfile.path),
            buildArgs: inputs.buildArgs,
            noCache: true,
            ociTar: tar,
          })
          ctx.rebuilt = { digest: need(built.digest, 'the rebuilt digest'), seconds: built.seconds }
          if (ctx.rebuilt.digest !== digestOf(ctx.image))
            ctx.differences = imageDifferences(await readPushedImage(ctx.image, registryAuth(ctx.config)), await readOciTarball(tar))
        } finally {
          rmSync(out, { recursive: true, force: true })
          await cleanUp(ctx)
        }
        task.title = `Rebuilt in ${ctx.rebuilt.seconds.toFixed(1)} s: ${ctx.rebuilt.digest}`
        if (ctx.differences)
          throw new PipelineError(
            `rebuild: ${digestOf(ctx.image).slice(0, 19)}… is not what commit ${inputs.commit.slice(0, 12)} builds to (${ctx.rebuilt.digest.slice(0, 19)}…): ${ctx.differences.join('; ')}`,
          )
      }),
    },
    {
      title: 'Attest the match',
      task: reported(async (ctx, task) => {
        const inputs = need(ctx.inputs, 'the provenance')
        const rebuilt = need(ctx.rebuilt, 'the rebuild')
        const dir = join(ctx.config.reportsDir, 'rebuild')
        mkdirSync(dir, { recursive: true })
        const repository = ctx.image.split('@')[0]!
        ctx.identity = await attestRebuild({
          config: ctx.config,
          image: ctx.image,
          outDir: dir,
          facts: {
            repository,
            digest: digestOf(ctx.image),
            commit: inputs.commit,
            rebuiltDigest: rebuilt.digest,
            builder: need(ctx.describe, 'the builder'),
            dockerfile: inputs.dockerfile,
            buildArgs: inputs.buildArgs,
            seconds: rebuilt.seconds,
            rebuiltAt: new Date().toISOString(),
          },
        })
        report(ctx, null)
        setOutput('rebuilt', rebuilt.digest)
        task.title = `Attested: the rebuild of ${inputs.commit.slice(0, 12)} is ${rebuilt.digest.slice(0, 19)}…, the pushed digest (signed by ${ctx.identity})`
      }),
    },
  ]
}

export const stage = defineStage<RebuildCtx>({ name: 'rebuild', tasks: rebuildTasks, initialCtx: (argv) => rebuildInputsFrom(argv) })

if (isMain(import.meta.url)) await runStage(stage)
