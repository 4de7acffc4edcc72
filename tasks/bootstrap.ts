/**
 * Prepares this machine for the tests and the pipeline: installs what is
 * missing and starts the local stand-ins for the outside world. Each piece is
 * built once per machine, cached outside the clone, and reused after that.
 * `npm test` runs this first; each stage also ensures its own needs.
 */
import type { ListrTask } from 'listr2'
import { ensureDebianPackages } from '../lib/tools/apt.ts'
import { isMain,runMain,taskList } from '../lib/core/cli.ts'
import { showOutput } from '../lib/core/output.ts'
import { requireTool } from '../lib/tools/which.ts'
import { VERSIONS } from '../lib/tools/versions.ts'
import { ensureActionlint } from '../lib/tools/actionlint.ts'
import { loadConfig } from '../lib/core/config.ts'
import { ensureBaseImages } from '../lib/sandbox/base-images.ts'
import { ensureDockerEngine } from '../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY,ensureRegistry } from '../lib/sandbox/registry.ts'
import { ensureClusterBinaries } from '../lib/tools/kube.ts'
import { NODE_PACKAGES } from '../lib/sandbox/node.ts'
import { ensureLocalDb } from '../lib/scan/trivy.ts'
import { ensureTrivy } from '../lib/tools/trivy.ts'
import { ensureCosign } from '../lib/tools/cosign.ts'
import { ensureKyverno } from '../lib/tools/kyverno.ts'

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
        const installed = await ensureDebianPackages([{ pkg: 'shellcheck', provides: 'shellcheck' }])
        task.title = installed.length ? `Debian packages for lint-test: installed ${installed.join(', ')}` : 'Debian packages for lint-test: present'
      },
    },
    // Each stage's local stand-ins are added below, in pipeline order.
    {
      title: 'Docker engine (build)',
      task: async (ctx: { docker?: string }, task) => {
        const engine = await ensureDockerEngine(loadConfig().docker)
        ctx.docker = engine.docker
        task.title = engine.started ? `Docker engine (build): started dockerd, log ${engine.log}` : `Docker engine (build): running (${engine.docker})`
      },
    },
    {
      title: `Local registry ${LOCAL_REGISTRY} (build)`,
      task: async (_ctx, task) => {
        const status = await ensureRegistry(LOCAL_REGISTRY)
        task.title = `Local registry ${LOCAL_REGISTRY} (build): answering, data in ${status.dataDir}`
      },
    },
    {
      title: 'Debian packages for the local cluster\'s node (deploy): CNI plugins, conntrack, socat, ethtool, iptables',
      task: async (_ctx, task) => {
        const installed = await ensureDebianPackages(NODE_PACKAGES)
        task.title = `Debian packages for the local cluster's node (deploy): ${installed.length ? `installed ${installed.join(', ')}` : 'present'}`
      },
    },
    {
      // Independent builds, side by side: on a new machine the Go builds wait on the module proxy
      // and the base images on Debian's mirrors and debootstrap, so overlapping them shortens the
      // first run; each keeps its own cache and lock, and a later run finds them all present.
      title: 'Built once per machine, side by side: base images, Trivy, cosign, actionlint, the cluster, Kyverno',
      task: (_ctx, task) =>
        task.newListr(
          showOutput([
            {
              title: 'Base images (build)',
              task: async (ctx: { docker?: string }, task) => {
                const images = await ensureBaseImages(ctx.docker ?? loadConfig().docker, loadConfig().cacheDir)
                task.title = `Base images (build): ${images.map((i) => `${i.name} ${i.source}`).join(', ')}`
              },
            },
            {
              title: `Trivy ${VERSIONS.trivy} and the local vulnerability DB (scan)`,
              task: async (_ctx, task) => {
                const cache = loadConfig().cacheDir
                const trivy = await ensureTrivy(cache)
                const db = await ensureLocalDb(cache)
                task.title = `Trivy v${trivy.version} and the local vulnerability DB (scan): ${db.built ? 'built' : 'cached'} from advisories/`
              },
            },
            {
              title: `cosign ${VERSIONS.cosign} (build, scan and deploy: signatures and attestations)`,
              task: async () => {
                await ensureCosign(loadConfig().cacheDir)
              },
            },
            {
              title: `actionlint ${VERSIONS.actionlint} (lint:workflows)`,
              task: async () => {
                await ensureActionlint()
              },
            },
            {
              // The cluster itself is started by whoever needs it (ci:deploy, the deploy e2e test, cluster:up).
              title: `Local Kubernetes binaries (deploy): Kubernetes ${VERSIONS.kubernetes} with kubelet and kube-proxy, etcd ${VERSIONS.etcd}, kwok ${VERSIONS.kwok}, helm ${VERSIONS.helm}`,
              task: async () => {
                await ensureClusterBinaries(loadConfig().cacheDir)
              },
            },
            {
              title: `Kyverno ${VERSIONS.kyverno} (deploy: the cluster's own check of signatures and scans)`,
              task: async () => {
                await ensureKyverno(loadConfig().cacheDir)
              },
            },
          ]),
          { concurrent: true, exitOnError: true, rendererOptions: { collapseSubtasks: false } },
        ),
    },
  ]
}

if (isMain(import.meta.url)) await runMain(() => taskList(bootstrapTasks()).run({}))
