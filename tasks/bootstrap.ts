/**
 * Prepares this machine for the tests and the pipeline: installs what is
 * missing and starts the local stand-ins for the outside world. Each piece is
 * built once per machine, cached outside the clone, and reused after that.
 * `npm test` runs this first; each stage also ensures its own needs.
 */
import type { ListrTask } from 'listr2'
import { ensureDebianPackages } from '../lib/core/apt.ts'
import { isMain, runMain, taskList } from '../lib/core/cli.ts'
import { requireTool } from '../lib/core/tools.ts'
import { VERSIONS } from '../lib/core/versions.ts'
import { ensureActionlint } from './lint-workflows.ts'
import { loadConfig } from '../lib/core/config.ts'
import { ensureBaseImages } from '../lib/local/base-images.ts'
import { ensureDockerEngine } from '../lib/local/docker.ts'
import { LOCAL_REGISTRY, ensureRegistry } from '../lib/local/registry.ts'
import { ensureClusterBinaries } from '../lib/local/cluster-build.ts'
import { ensureLocalDb, ensureTrivy } from '../lib/scan/trivy.ts'
import { ensureCosign } from '../lib/sign/cosign.ts'

export function bootstrapTasks(): ListrTask<object>[] {
  return [
    {
      title: 'Toolchains: cargo, go, git',
      task: () => {
        for (const tool of ['cargo', 'go', 'git']) requireTool(tool)
      },
    },
    {
      title: 'Debian packages for lint-test',
      task: async (_ctx, task) => {
        const installed = await ensureDebianPackages([{ pkg: 'shellcheck', provides: 'shellcheck' }], (l) => (task.output = l))
        task.title = installed.length ? `Debian packages for lint-test: installed ${installed.join(', ')}` : 'Debian packages for lint-test: present'
      },
    },
    // Each stage's local stand-ins are added below, in pipeline order.
    {
      title: 'Docker engine (build)',
      task: async (ctx: { docker?: string }, task) => {
        const engine = await ensureDockerEngine(loadConfig().docker, (l) => (task.output = l))
        ctx.docker = engine.docker
        task.title = engine.started ? `Docker engine (build): started dockerd, log ${engine.log}` : `Docker engine (build): running (${engine.docker})`
      },
    },
    {
      title: `Local registry ${LOCAL_REGISTRY} (build)`,
      task: async (_ctx, task) => {
        const status = await ensureRegistry(LOCAL_REGISTRY, (l) => (task.output = l))
        task.title = `Local registry ${LOCAL_REGISTRY} (build): answering, data in ${status.dataDir}`
      },
    },
    {
      title: 'Base images (build)',
      task: async (ctx: { docker?: string }, task) => {
        const images = await ensureBaseImages(ctx.docker ?? loadConfig().docker, loadConfig().cacheDir, (l) => (task.output = l))
        task.title = `Base images (build): ${images.map((i) => `${i.name} ${i.source}`).join(', ')}`
      },
    },
    {
      title: `Trivy ${VERSIONS.trivy} and the local vulnerability DB (scan)`,
      task: async (_ctx, task) => {
        const cache = loadConfig().cacheDir
        const trivy = await ensureTrivy(cache, (l) => (task.output = l))
        const db = await ensureLocalDb(cache, (l) => (task.output = l))
        task.title = `Trivy v${trivy.version} and the local vulnerability DB (scan): ${db.built ? 'built' : 'cached'} from advisories/`
      },
    },
    {
      title: `cosign ${VERSIONS.cosign} (build, scan and deploy: signatures and attestations)`,
      task: async (_ctx, task) => {
        await ensureCosign(loadConfig().cacheDir, (l) => (task.output = l))
      },
    },
    {
      title: `actionlint ${VERSIONS.actionlint} (lint:workflows)`,
      task: async (_ctx, task) => {
        await ensureActionlint((l) => (task.output = l))
      },
    },
    {
      // The cluster itself is started by whoever needs it (ci:deploy, the deploy e2e test, cluster:up).
      title: `Local Kubernetes binaries (deploy): Kubernetes ${VERSIONS.kubernetes}, etcd ${VERSIONS.etcd}, kwok ${VERSIONS.kwok}, helm ${VERSIONS.helm}`,
      task: async (_ctx, task) => {
        await ensureClusterBinaries(loadConfig().cacheDir, (l) => (task.output = l))
      },
    },
  ]
}

if (isMain(import.meta.url)) await runMain(() => taskList(bootstrapTasks()).run({}))
