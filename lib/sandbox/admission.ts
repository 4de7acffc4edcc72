/**
 * The local cluster's admission controller (docs/admission.md): Kyverno,
 * built from source (lib/tools/kyverno.ts), its two images made the way ko
 * makes the published ones (the binary and its license files) on the runtime
 * base, like the other stand-ins, and pushed to the local registry, where the
 * node pulls them; installed with its upstream chart (lib/deploy/admission.ts).
 * `startAdmission` runs with `cluster:up`; `stopAdmission` scales it to zero,
 * which leaves its webhooks failing closed (what a crashed controller does).
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildImage } from '../build/docker.ts'
import { pushImage } from '../build/registry.ts'
import { loadConfig } from '../core/config.ts'
import { say } from '../core/output.ts'
import { run } from '../core/run.ts'
import { CONTROLLER, controllerState, controllerValues, describeController, installController, type ControllerImages, type ControllerState } from '../deploy/admission.ts'
import { kubeFlags, type KubeTarget } from '../deploy/kube.ts'
import { ensureKyverno, type KyvernoTool } from '../tools/kyverno.ts'
import { BASE_IMAGES, VERSIONS } from '../tools/versions.ts'
import { ensureBaseImages } from './base-images.ts'
import { API_SERVER_PORT, type LocalCluster } from './cluster.ts'
import { ensureDockerEngine } from './engine.ts'
import { LOCAL_REGISTRY, ensureRegistry } from './registry.ts'

/** Where the stand-in images go: the local registry, beside nothing the pipeline ships. */
export const CONTROLLER_REPOSITORY = `${LOCAL_REGISTRY}/doc-server-ci`

const target = (c: LocalCluster): KubeTarget => ({ kubectl: c.binaries.kubectl, kubeconfig: c.kubeconfig, context: c.context })

/** One image per binary, as ko lays it out: /ko-app/<binary>, the license files in KO_DATA_PATH. */
async function standInImage(docker: string, tool: KyvernoTool, binary: 'kyverno' | 'kyvernopre'): Promise<string> {
  const ctx = mkdtempSync(join(tmpdir(), `${binary}-image-`))
  try {
    cpSync(tool[binary], join(ctx, binary))
    cpSync(tool.kodata, join(ctx, 'kodata'), { recursive: true })
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [`FROM ${BASE_IMAGES.runtime}`, 'COPY kodata /var/run/ko', `COPY ${binary} /ko-app/${binary}`, 'ENV KO_DATA_PATH=/var/run/ko', `ENTRYPOINT ["/ko-app/${binary}"]`, ''].join('\n'),
    )
    const ref = `${CONTROLLER_REPOSITORY}/${binary}:${tool.version}`
    await buildImage({ docker, context: ctx, dockerfile: join(ctx, 'Dockerfile'), tags: [ref], caBundle: false })
    // By digest: the pod runs exactly what was built here.
    return `${ref}@${(await pushImage(docker, ref)).digest}`
  } finally {
    rmSync(ctx, { recursive: true, force: true })
  }
}

/**
 * Kyverno running on the local cluster at the pinned version: left alone
 * when it already is, else (first time, a version bump, scaled to zero)
 * its images are built and pushed and the chart installed.
 */
export async function startAdmission(cache: string, cluster: LocalCluster): Promise<{ started: boolean; state: ControllerState }> {
  const kube = target(cluster)
  const now = await controllerState(kube)
  if (now.installed && now.version === VERSIONS.kyverno && now.desired > 0 && now.ready >= now.desired) return { started: false, state: now }
  const tool = await ensureKyverno(cache)
  const docker = (await ensureDockerEngine(loadConfig().docker)).docker
  await ensureRegistry(LOCAL_REGISTRY)
  await ensureBaseImages(docker, cache, [BASE_IMAGES.runtime])
  say(`building the ${CONTROLLER.name} ${tool.version} images on ${BASE_IMAGES.runtime}`)
  const images: ControllerImages = { kyverno: await standInImage(docker, tool, 'kyverno'), kyvernopre: await standInImage(docker, tool, 'kyvernopre') }
  const helm = { helm: cluster.binaries.helm, kubeconfig: cluster.kubeconfig, context: cluster.context }
  await installController(helm, kube, tool, controllerValues({ images, apiServerPort: API_SERVER_PORT }))
  return { started: true, state: await controllerState(kube) }
}

/** Scales the controller to zero; its webhooks stay, so pods in a namespace with a policy are refused until it is back. */
export async function stopAdmission(cluster: LocalCluster): Promise<void> {
  const kube = target(cluster)
  await run([kube.kubectl, ...kubeFlags(kube), '-n', CONTROLLER.namespace, 'scale', 'deployment', CONTROLLER.deployment, '--replicas=0'], { timeoutMs: 60_000 })
  await run([kube.kubectl, ...kubeFlags(kube), '-n', CONTROLLER.namespace, 'wait', '--for=delete', 'pod', '-l', CONTROLLER.podSelector, '--timeout=120s'], { timeoutMs: 150_000, okCodes: [0, 1] })
}

/** One line for `cluster status`. */
export async function admissionStatus(cluster: LocalCluster): Promise<string> {
  return describeController(await controllerState(target(cluster)))
}
