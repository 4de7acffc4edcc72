/**
 * build: turns the commit into an image. Builds Dockerfile.optimized with
 * BuildKit, pushes it (never for pull requests), pulls it back by digest and
 * runs it until its own HEALTHCHECK says healthy. Hands `reports/build.json`
 * (reference and digest) to the stages after it.
 */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { isMain } from '../lib/core/cli.ts'
import { loadConfig,shouldPush,type Config } from '../lib/core/config.ts'
import { CONTEXT_ENTRIES, buildImage, checkBuildCacheSupport, ociBuildArgs, type BuildResult } from '../lib/build/docker.ts'
import { removeContainer,startContainer,waitHealthy } from '../lib/build/container.ts'
import { pullImage,pushImage,registryLogin,removeImage,tagImage,type RegistryLogin } from '../lib/build/registry.ts'
import { cookMissReason,currentColdInputs,measureStateFiles } from '../lib/build/cold-inputs.ts'
import { gitFacts,type GitFacts } from '../lib/core/git.ts'
import { formatRef,imageRef,pinnedRef,repository,type ImageRef } from '../lib/build/image-ref.ts'
import { ensureBaseImages } from '../lib/sandbox/base-images.ts'
import { ensureDockerEngine } from '../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY,ensureRegistry } from '../lib/sandbox/registry.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { appendSummary, markdownTable, setOutput } from '../lib/core/summary.ts'
import { writeReport, type Report } from '../lib/core/reports.ts'
import { defineStage, need, runStage } from '../lib/core/stage.ts'
import { signBuild,type BuildSigning } from '../lib/sign/sign.ts'

export interface BuildCtx {
  root: string
  config: Config
  started: number
  git: GitFacts
  ref: ImageRef
  push: boolean
  docker?: string
  /** A login in a throwaway docker config, ended once the image is pulled back. */
  login?: RegistryLogin
  build?: BuildResult
  /** Why the cook step was rebuilt, when it was. */
  cookMiss?: string
  buildArgs?: Record<string, string>
  signed?: BuildSigning
  healthySeconds?: number
}

/** The commit, the reference it becomes and whether it is pushed: known before anything runs. */
export async function buildInputs(root = repoRoot): Promise<BuildCtx> {
  const config = loadConfig()
  // Untracked files among what the build copies make it dirty too: they would enter the image.
  const git = await gitFacts(root, process.env, CONTEXT_ENTRIES)
  const ref = imageRef({ registry: config.registry, owner: config.imageOwner, name: config.imageName, tag: config.imageTag ?? git.sha })
  return { root, config, started: performance.now(), git, ref, push: shouldPush(config, git.branch) }
}

export function buildTasks(): ListrTask<BuildCtx>[] {
  return [
    {
      title: 'Commit and image reference',
      task: (ctx, task) => {
        const why = ctx.push ? 'will push' : ctx.config.pullRequest ? 'pull request: build only, no push' : 'PUSH=false: build only'
        task.title = `${formatRef(ctx.ref)} (${why}${ctx.git.dirty ? '; working tree has uncommitted changes' : ''})`
      },
    },
    {
      title: 'Docker engine',
      task: async (ctx, task) => {
        const engine = await ensureDockerEngine(ctx.config.docker)
        ctx.docker = engine.docker
        await checkBuildCacheSupport(engine.docker, { from: ctx.config.buildCacheFrom, to: ctx.config.buildCacheTo })
        task.title = engine.started ? `Docker engine: started dockerd (log: ${engine.log})` : `Docker engine: running (${engine.docker})`
      },
    },
    {
      title: `Local registry ${LOCAL_REGISTRY}`,
      enabled: (ctx) => ctx.push && ctx.config.registry === LOCAL_REGISTRY,
      task: async (_ctx, task) => {
        const status = await ensureRegistry(LOCAL_REGISTRY)
        task.title = `Local registry ${LOCAL_REGISTRY}: answering (data: ${status.dataDir})`
      },
    },
    {
      title: 'Base images',
      task: async (ctx, task) => {
        const docker = need(ctx.docker, 'the Docker engine')
        const images = await ensureBaseImages(docker, ctx.config.cacheDir)
        task.title = `Base images: ${images.map((i) => `${i.name} (${i.source})`).join(', ')}`
      },
    },
    {
      title: 'Registry login',
      enabled: (ctx) => ctx.push && !!ctx.config.registryUser && !!ctx.config.registryToken,
      task: async (ctx, task) => {
        const docker = need(ctx.docker, 'the Docker engine')
        ctx.login = await registryLogin(docker, ctx.config.registry, ctx.config.registryUser!, ctx.config.registryToken!)
        task.title = `Registry login: ${ctx.config.registryUser} at ${ctx.config.registry}`
      },
    },
    {
      title: 'Build Dockerfile.optimized',
      task: async (ctx, task) => {
        const docker = need(ctx.docker, 'the Docker engine')
        ctx.build = await buildImage({
          docker: docker,
          context: ctx.root,
          dockerfile: join(ctx.root, 'Dockerfile.optimized'),
          tags: [formatRef(ctx.ref)],
          buildArgs: (ctx.buildArgs = await ociBuildArgs(ctx.root, ctx.git.sha)),
          ...(ctx.config.buildCacheFrom ? { cacheFrom: ctx.config.buildCacheFrom } : {}),
          ...(ctx.config.buildCacheTo ? { cacheTo: ctx.config.buildCacheTo } : {}),
        })
        // A miss is named by what changed in the recipe since the last run (cargo-chef's recooks are otherwise a mystery).
        if (ctx.build.cookCacheHit === false) ctx.cookMiss = await cookMissReason(measureStateFiles(ctx.config.cacheDir).last, () => currentColdInputs(docker, ctx.config.cacheDir, ctx.root))
        task.title = `Built in ${ctx.build.seconds.toFixed(1)} s (${ctx.build.cookCacheHit === null ? 'no cook step seen' : (ctx.cookMiss ?? 'cook step cached')})`
      },
    },
    {
      title: 'Push',
      skip: (ctx) => (ctx.push ? false : 'not pushed (pull request or PUSH=false); later stages refuse to deploy an unpushed image'),
      task: async (ctx, task) => {
        const docker = need(ctx.docker, 'the Docker engine')
        const pushed = await pushImage(docker, formatRef(ctx.ref), { secrets: ctx.config.registryToken ? [ctx.config.registryToken] : [], ...(ctx.login ? { env: ctx.login.env } : {}) })
        ctx.ref = { ...ctx.ref, digest: pushed.digest }
        task.title = `Pushed ${pinnedRef(ctx.ref)}`
      },
    },
    {
      title: 'Sign the digest and attach SLSA provenance',
      skip: (ctx) => ctx.ref.digest === undefined && 'not pushed: nothing in a registry to sign',
      task: async (ctx, task) => {
        const dir = join(ctx.config.reportsDir, 'build')
        mkdirSync(dir, { recursive: true })
        ctx.signed = await signBuild({ config: ctx.config, image: pinnedRef(ctx.ref), git: ctx.git, dockerfile: join(ctx.root, 'Dockerfile.optimized'), buildArgs: need(ctx.buildArgs, 'the build arguments'), startedOn: new Date(Date.now() - (performance.now() - ctx.started)), outDir: dir, ...(ctx.login ? { env: ctx.login.env } : {}) })
        const d = `${need(ctx.ref.digest, 'the pushed digest').slice(0, 19)}…`
        const { signature, provenance } = ctx.signed.added
        const what = signature && provenance ? `Signed ${d} with provenance` : signature ? `Signed ${d}; its provenance was already attested` : provenance ? `${d} was already signed; provenance attested` : `${d} already carries its signature and provenance: nothing added`
        task.title = `${what} (${ctx.signed.identity})`
      },
    },
    {
      title: 'Pull by digest and run until healthy',
      task: async (ctx, task) => {
        const docker = need(ctx.docker, 'the Docker engine')
        let image = formatRef(ctx.ref)
        if (ctx.ref.digest) {
          // Drop the local copy first, so the image that runs is the one the registry serves.
          await removeImage(docker, formatRef({ ...ctx.ref, digest: undefined }))
          await pullImage(docker, pinnedRef(ctx.ref), ctx.login?.env)
          ctx.login?.end()
          await tagImage(docker, pinnedRef(ctx.ref), formatRef({ ...ctx.ref, digest: undefined }))
          image = pinnedRef(ctx.ref)
        }
        const container = await startContainer(docker, image)
        try {
          ctx.healthySeconds = await waitHealthy(docker, container.id)
        } finally {
          await removeContainer(docker, container.id)
        }
        task.title = `${ctx.ref.digest ? 'Pulled by digest, ran' : 'Ran the local image'}: healthy after ${ctx.healthySeconds.toFixed(1)} s (its own HEALTHCHECK)`
      },
    },
    {
      title: 'Report',
      task: (ctx, task) => {
        const built = need(ctx.build, 'the build')
        const report: Report<'build'> = {
          image: { ref: formatRef({ ...ctx.ref, digest: undefined }), digest: ctx.ref.digest ?? null, repository: repository(ctx.ref), tag: ctx.ref.tag!, pinned: ctx.ref.digest ? pinnedRef(ctx.ref) : null },
          commit: { sha: ctx.git.sha, branch: ctx.git.branch ?? null, dirty: ctx.git.dirty },
          pushed: ctx.ref.digest !== undefined,
          seconds: (performance.now() - ctx.started) / 1000,
          build: { seconds: built.seconds, cookCacheHit: built.cookCacheHit, cookMiss: ctx.cookMiss ?? null },
          healthySeconds: ctx.healthySeconds ?? null,
          signature: ctx.signed ?? null,
        }
        const path = writeReport(ctx.config.reportsDir, 'build', report)
        setOutput('image', report.image.ref)
        if (report.image.digest) setOutput('digest', report.image.digest)
        appendSummary(`### build\n\n${markdownTable(['image', 'digest', 'pushed', 'build seconds'], [[report.image.ref, report.image.digest ?? '-', report.pushed ? 'yes' : 'no', report.build.seconds.toFixed(1)]])}`)
        task.title = `Report: ${path}`
      },
    },
  ]
}

export const stage = defineStage<BuildCtx>({
  name: 'build',
  tasks: () => buildTasks(),
  initialCtx: () => buildInputs(),
})

if (isMain(import.meta.url)) await runStage(stage)
