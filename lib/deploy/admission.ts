/**
 * The admission controller as a deploy sees it (docs/admission.md):
 * Kyverno, installed with its upstream chart (pinned, from the module zip:
 * lib/tools/kyverno.ts) running only its admission controller, its state read
 * from the cluster before Helm runs, and the chart's policy checked to be
 * enforced after. Kyverno's webhooks fail closed: while it is down, every pod
 * in a namespace with a policy is refused, so a deploy there must know first.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import type { Config } from '../core/config.ts'
import { PipelineError } from '../core/errors.ts'
import { writeJson } from '../core/json.ts'
import { say } from '../core/output.ts'
import { waitFor } from '../core/wait.ts'
import { run } from '../core/run.ts'
import type { Verifier } from '../sign/cosign.ts'
import { verdictRepository } from '../sign/verdict.ts'
import { ensureKyverno, type KyvernoTool } from '../tools/kyverno.ts'
import { VERSIONS } from '../tools/versions.ts'
import { chartFullname } from './deploy.ts'
import type { Environment } from './environments.ts'
import { scanMaxAgeSecs, type DeploySigners } from './verify.ts'
import { history, uninstall, type HelmTarget } from './helm.ts'
import { kubeFlags, listPods, type KubeTarget } from './kube.ts'

/** Where the upstream chart puts the admission controller (release `kyverno` in namespace `kyverno`). */
export const CONTROLLER = {
  name: 'Kyverno',
  namespace: 'kyverno',
  release: 'kyverno',
  deployment: 'kyverno-admission-controller',
  podSelector: 'app.kubernetes.io/component=admission-controller,app.kubernetes.io/instance=kyverno',
} as const

/** Image references for the controller's two containers (`registry/repository:tag[@digest]`). */
export interface ControllerImages {
  kyverno: string
  kyvernopre: string
}

/** `registry/repository:tag` as the chart's image values ({registry, repository, tag}). */
function imageValues(ref: string) {
  const slash = ref.indexOf('/')
  const colon = ref.indexOf(':', ref.lastIndexOf('/'))
  return { registry: ref.slice(0, slash), repository: ref.slice(slash + 1, colon), tag: ref.slice(colon + 1) }
}

/**
 * Values for Kyverno's own chart: its admission controller only (the chart's
 * background, cleanup and reports controllers serve policies this project
 * does not use) and no verification cache, so a rescan that fails blocks the
 * next pod at once rather than when a cached pass expires (60 min upstream).
 * With `images` (the local cluster), the controller runs stand-in images on
 * the host network, since the registry it verifies against is on the node's
 * loopback, talks to the API server on loopback (`apiServerPort`), and the
 * chart's hooks that need images of their own are off.
 */
export function controllerValues(o: { images?: ControllerImages; apiServerPort?: number } = {}): Record<string, unknown> {
  const off = { enabled: false }
  const values: Record<string, unknown> = {
    backgroundController: off,
    cleanupController: off,
    reportsController: off,
    admissionController: {
      replicas: 1,
      container: { extraArgs: { imageVerifyCacheEnabled: false } },
    },
  }
  if (!o.images) return values
  return {
    ...values,
    crds: { migration: off },
    webhooksCleanup: off,
    policyReportsCleanup: off,
    // The local control plane's certificate names only loopback, not the kubernetes Service's IP: on
    // the host network the API server is reached where the certificate says it is.
    global: { extraEnvVars: [{ name: 'KUBERNETES_SERVICE_HOST', value: '127.0.0.1' }, { name: 'KUBERNETES_SERVICE_PORT', value: String(o.apiServerPort) }] },
    admissionController: {
      replicas: 1,
      hostNetwork: true,
      // Two pods cannot hold the host's webhook port at once: the old one goes first.
      updateStrategy: { type: 'Recreate', rollingUpdate: null },
      container: { image: imageValues(o.images.kyverno), extraArgs: { imageVerifyCacheEnabled: false } },
      initContainer: { image: imageValues(o.images.kyvernopre) },
    },
  }
}

/**
 * Installs (or upgrades) the controller: the policies.kyverno.io CRDs from the
 * module (upstream ships them in a chart from a remote repository), then the
 * chart, waiting until the admission controller is ready.
 */
export async function installController(helm: HelmTarget, kube: KubeTarget, tool: KyvernoTool, values: Record<string, unknown>): Promise<void> {
  say(`installing ${CONTROLLER.name} ${tool.version} CRDs`)
  await run([kube.kubectl, ...kubeFlags(kube), 'apply', '--server-side', '--force-conflicts', '-f', tool.crds], { timeoutMs: 120_000 })
  const dir = mkdtempSync(join(tmpdir(), 'kyverno-values-'))
  try {
    const file = join(dir, 'values.json')
    writeJson(file, values)
    // A first install that failed or was cut short has nothing to upgrade: it is removed and made again.
    const release = { name: CONTROLLER.release, namespace: CONTROLLER.namespace }
    const entries = await history(helm, release)
    if (entries.length > 0 && !entries.some((e) => e.status === 'deployed' || e.status === 'superseded')) await uninstall(helm, release)
    say(`helm upgrade --install ${CONTROLLER.release} (${CONTROLLER.name} ${tool.version}) in ${CONTROLLER.namespace}`)
    const flags = [...(helm.kubeconfig ? ['--kubeconfig', helm.kubeconfig] : []), '--kube-context', helm.context, '--namespace', CONTROLLER.namespace]
    await run([helm.helm, 'upgrade', CONTROLLER.release, tool.chart, '--install', ...flags, '--create-namespace', '--values', file, '--wait=watcher', '--timeout', '300s', '--history-max', '5'], { timeoutMs: 420_000 })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

export interface ControllerState {
  installed: boolean
  /** The image tag the admission controller runs (its version). */
  version: string | undefined
  desired: number
  ready: number
  /** Why it is not ready, when it is not: scaled to 0, or its pods' own waiting reasons. */
  detail: string | undefined
}

interface DeploymentState {
  spec?: { replicas?: number; template?: { spec?: { containers?: { image?: string }[] } } }
  status?: { readyReplicas?: number }
}

/** The admission controller's Deployment and pods, as the cluster reports them. */
export async function controllerState(kube: KubeTarget): Promise<ControllerState> {
  const r = await run([kube.kubectl, ...kubeFlags(kube), '--request-timeout=10s', '-n', CONTROLLER.namespace, 'get', 'deployment', CONTROLLER.deployment, '-o', 'json', '--ignore-not-found'], { timeoutMs: 30_000 })
  if (!r.stdout.trim()) return { installed: false, version: undefined, desired: 0, ready: 0, detail: 'not installed' }
  const d = JSON.parse(r.stdout) as DeploymentState
  const image = d.spec?.template?.spec?.containers?.[0]?.image ?? ''
  const version = /:(v[^@]+)/.exec(image.slice(image.lastIndexOf('/')))?.[1]
  const desired = d.spec?.replicas ?? 1
  const ready = d.status?.readyReplicas ?? 0
  let detail: string | undefined
  if (desired === 0) detail = 'scaled to 0'
  else if (ready < desired) {
    const pods = await listPods(kube, CONTROLLER.namespace, CONTROLLER.podSelector).catch(() => [])
    const reasons = pods.flatMap((p) => (p.status?.containerStatuses ?? []).map((c) => c.state?.waiting?.reason ?? c.state?.terminated?.reason).filter(Boolean))
    detail = reasons.length ? [...new Set(reasons)].join(', ') : pods.length ? 'starting' : 'no pod'
  }
  return { installed: true, version, desired, ready, detail }
}

export function describeController(s: ControllerState): string {
  const what = `${CONTROLLER.name} ${s.version ?? ''}`.trim()
  if (!s.installed) return `${CONTROLLER.name} is not installed (no deployment ${CONTROLLER.namespace}/${CONTROLLER.deployment})`
  return `${what} (${CONTROLLER.namespace}/${CONTROLLER.deployment}) has ${s.ready} of ${s.desired} pods ready${s.detail ? ` (${s.detail})` : ''}`
}

/**
 * Before Helm: a controller that is not running refuses every pod of the
 * release (its webhooks fail closed), so the deploy stops here, in one line,
 * instead of waiting for Helm's timeout.
 */
export async function requireController(kube: KubeTarget, namespace: string, how: string): Promise<ControllerState> {
  const s = await controllerState(kube)
  if (s.installed && s.ready > 0 && s.ready >= s.desired) {
    if (s.version && s.version !== VERSIONS.kyverno) say(`${CONTROLLER.name} ${s.version} runs, not the pinned ${VERSIONS.kyverno}`)
    return s
  }
  throw new PipelineError(`deploy: refused: the admission controller is not running: ${describeController(s)}, so every pod in ${namespace} would be refused; ${how}`)
}

interface PolicyStatus {
  status?: { conditionStatus?: { ready?: boolean; message?: string; conditions?: { type?: string; status?: string; message?: string }[] } }
}

/**
 * After Helm: the chart's policy is in the cluster and Kyverno reports it
 * ready (compiled, its webhook configured), so from now on a pod that breaks
 * it is refused. Kyverno configures its webhook a few seconds after a policy
 * appears.
 */
export async function waitPolicyEnforced(kube: KubeTarget, policy: string, timeoutMs = 60_000): Promise<void> {
  let last = 'not found'
  await waitFor(
    async () => {
      const r = await run([kube.kubectl, ...kubeFlags(kube), '--request-timeout=10s', 'get', 'imagevalidatingpolicies.policies.kyverno.io', policy, '-o', 'json', '--ignore-not-found'], { timeoutMs: 30_000, okCodes: [0, 1] })
      if (r.exitCode !== 0) {
        last = r.stderr.trim().split('\n').pop() ?? 'kubectl failed'
        return undefined
      }
      if (!r.stdout.trim()) return undefined
      const s = (JSON.parse(r.stdout) as PolicyStatus).status?.conditionStatus
      if (s?.ready) return true
      last = s?.conditions?.find((c) => c.status !== 'True')?.message ?? s?.message ?? 'not ready yet'
      return undefined
    },
    { timeoutMs, intervalMs: 1000, onTimeout: () => new PipelineError(`deploy: the admission policy ${policy} is not enforced after ${Math.round(timeoutMs / 1000)} s: ${last}`) },
  )
}

/** The policy's name, as the chart's template makes it. */
export function policyName(namespace: string, release: string): string {
  return `${namespace}-${chartFullname(release)}`.slice(0, 63).replace(/-+$/, '')
}

export interface AdmissionPlan {
  enforce: boolean
  install: boolean
  policy: string
  /** The chart's `admission` values. */
  values: Record<string, unknown>
  /** Why the policy is off, when it is. */
  off?: string
}

/** A list of signers as the chart's attestors take them: public keys (PEM) and keyless identities. */
export interface AttestorValues {
  keys: string[]
  identities: ({ subject: string; issuer: string } | { subjectRegExp: string; issuer: string })[]
}

/**
 * Deploy's verifiers as Kyverno attestors: a key signer becomes its public
 * key, a workflow signer its certificate identity (exact, or the anchored
 * expression of a ref pattern) and issuer. Kyverno's ImageValidatingPolicy
 * cannot read the workflow-trigger and workflow-ref extensions that deploy
 * also checks (docs/admission.md says what that leaves open).
 */
export function attestorValues(verifiers: readonly Verifier[]): AttestorValues {
  const keys = new Set<string>()
  const identities = new Map<string, AttestorValues['identities'][number]>()
  for (const v of verifiers) {
    if (v.kind === 'key') keys.add(readFileSync(v.pub, 'utf8'))
    else if (v.identity) identities.set(`=${v.identity} ${v.issuer}`, { subject: v.identity, issuer: v.issuer })
    else identities.set(`~${v.identityRegexp} ${v.issuer}`, { subjectRegExp: v.identityRegexp ?? '^$', issuer: v.issuer })
  }
  return { keys: [...keys], identities: [...identities.values()] }
}

/**
 * The chart's admission values for this deploy: the signers deploy verifies
 * with (the image's, and for its scan verdict also the scan signers'), the
 * scan bound it verifies against, and the verdict repository of the image's
 * repository. Off where the environment says so, and on the local cluster
 * unless DEPLOY_ADMISSION=enforce.
 */
export function admissionPlan(config: Config, env: { local: boolean; settings: Environment }, signers: Pick<DeploySigners, 'imageSigners' | 'scanSigners'>, repository: string): AdmissionPlan {
  const policy = policyName(config.deployNamespace, config.releaseName)
  const asked = env.settings.admission
  const off = asked === 'off' ? `off for ${config.deployEnv} in environments.yaml` : env.local && config.deployAdmission !== 'enforce' ? 'off on the local cluster (DEPLOY_ADMISSION=enforce turns it on)' : undefined
  const values = off
    ? { enabled: false }
    : {
        enabled: true,
        environment: config.deployEnv,
        signers: attestorValues(signers.imageSigners),
        scanSigners: attestorValues(signers.scanSigners),
        verdictRepository: verdictRepository(repository),
        scanMaxAgeSeconds: scanMaxAgeSecs(config, env.settings),
        allowInsecureRegistry: /^(127\.0\.0\.1|localhost)(:\d+)?\//.test(repository),
      }
  return { enforce: !off, install: !off && asked === 'install' && !env.local, policy, values, ...(off ? { off } : {}) }
}

/**
 * The chart's admission values as a file Helm layers over the environment's
 * (typed: --set-string cannot carry booleans). `{ enabled: false }` is what a
 * Helm run that is not a deploy (a bench, a test of something else) passes.
 */
export function writeAdmissionValues(dir: string, values: AdmissionPlan['values']): string {
  mkdirSync(dir, { recursive: true })
  const file = join(dir, values.enabled ? 'admission-values.yaml' : 'admission-off.yaml')
  writeFileSync(file, stringify({ admission: values }))
  return file
}

/**
 * Before Helm: on a real cluster whose environment asks for it, the pinned
 * Kyverno is installed (upstream images, its chart from the module); then it
 * must be running, or the deploy stops in one line naming it and its state.
 */
export async function prepareAdmission(config: Config, kube: KubeTarget, helm: HelmTarget, plan: AdmissionPlan): Promise<ControllerState> {
  if (plan.install) await installController(helm, kube, await ensureKyverno(config.cacheDir), controllerValues())
  const how = config.kubeContext ? `start it, or set admission: install for ${config.deployEnv} in environments.yaml` : 'start it with `npm run cluster:up`'
  return requireController(kube, config.deployNamespace, how)
}
