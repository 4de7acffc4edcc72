/**
 * deploy: ships exactly the digest the scan passed, with Helm, to DEPLOY_ENV.
 * Every refusal (no digest, no passing scan, no signature or attestation in the
 * registry that vouches for the digest, unknown environment, values the
 * chart refuses, a missing context, a silent cluster, an admission
 * controller that is not running) happens before anything is changed. A rollout that does not become ready is rolled back by Helm;
 * the stage then names the first real reason and exits non-zero. Either way
 * reports/deploy.json says what happened.
 */
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { ensureHelm } from '../lib/tools/kube.ts'
import { isMain, parseOptions } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { CHART_DIR, confirmRollback, explainFailure, podSelector, readDeployInputs, recoverPendingRelease, valueFiles, verifyRollout, writeDeployReport, type DeployImage, type DeployResult } from '../lib/deploy/deploy.ts'
import { PipelineError, firstLine } from '../lib/core/errors.ts'
import { history, renderChart, type HelmTarget, type Release } from '../lib/deploy/helm.ts'
import type { KubeTarget } from '../lib/deploy/kube.ts'
import { connectCluster, describeCluster } from '../lib/deploy/target.ts'
import { checkOrder, recordLabels, releaseRecords, requireDeclaredContext, runningCommit } from '../lib/deploy/guard.ts'
import { RolloutStopped, upgradeTracked } from '../lib/deploy/track.ts'
import { CLUSTER_CONTEXT, localClusterTarget } from '../lib/sandbox/cluster.ts'
import { appendSummary, markdownTable, setOutput } from '../lib/core/summary.ts'
import { defineStage, need, runStage } from '../lib/core/stage.ts'
import { expectedVerifier, verifyForDeploy, type Verified } from '../lib/deploy/verify.ts'
import { admissionPlan, describeController, prepareAdmission, waitPolicyEnforced, writeAdmissionValues, type AdmissionPlan } from '../lib/deploy/admission.ts'

export interface DeployCtx {
  started: number
  config: Config
  release: Release
  /** `--allow-older`: deploy a commit older than the one the release runs. */
  allowOlder: boolean
  image?: DeployImage
  files: string[]
  sets: Record<string, string>
  helm?: HelmTarget
  kube?: KubeTarget
  recovered?: string
  order?: string
  previousRevision?: number
  revision?: number
  result?: DeployResult
  verified?: Verified
  admission?: AdmissionPlan
}

type Task = ListrTask<DeployCtx>['task']

export function deployInputs(argv: readonly string[], config = loadConfig()): DeployCtx {
  const { values } = parseOptions('deploy', argv, { 'allow-older': { type: 'boolean' } })
  return { started: performance.now(), config, release: { name: config.releaseName, namespace: config.deployNamespace }, allowOlder: values['allow-older'] ?? false, files: [], sets: {} }
}

function report(ctx: DeployCtx, result: DeployResult, reason: string | null): void {
  writeDeployReport(ctx.config, {
    context: ctx.kube?.context ?? null,
    revision: ctx.revision ?? null,
    previousRevision: ctx.previousRevision ?? null,
    digest: ctx.image?.digest ?? null,
    image: ctx.image?.pinned ?? null,
    result,
    reason,
    recovered: ctx.recovered ?? null,
    commit: ctx.image?.commit ?? null,
    order: ctx.order ?? null,
    seconds: Math.round((performance.now() - ctx.started) / 100) / 10,
    verified: ctx.verified ?? null,
  })
  const c = ctx.config
  appendSummary(`### deploy\n\n${markdownTable(['environment', 'release', 'revision', 'digest', 'result'], [[c.deployEnv, `${c.deployNamespace}/${c.releaseName}`, ctx.revision ?? '-', ctx.image?.digest ?? '-', reason ? `${result}: ${reason}` : result]])}`)
}

/** Whatever a task throws, the report is written first: it is the run's receipt. */
const reported = (fn: Task): Task => async (ctx, task) => {
  try {
    return await fn(ctx, task)
  } catch (err) {
    report(ctx, ctx.result ?? 'failed', firstLine(err))
    throw err
  }
}

export function deployTasks(): ListrTask<DeployCtx>[] {
  return [
    {
      title: 'Image: the digest the scan passed',
      task: reported((ctx, task) => {
        ctx.image = readDeployInputs(ctx.config.reportsDir)
        ctx.sets = { 'image.repository': ctx.image.repository, 'image.digest': ctx.image.digest }
        task.title = `Image: ${ctx.image.pinned}`
      }),
    },
    {
      title: 'Signature and attestations, from the registry',
      task: reported(async (ctx, task) => {
        ctx.verified = await verifyForDeploy(ctx.config, need(ctx.image, 'the image'))
        const v = ctx.verified
        task.title = `Verified: signed by ${v.identity}; scan passed at ${v.scan.scannedAt} (Trivy ${v.scan.trivy}); provenance ${v.provenance.commit.slice(0, 12)}${v.note ? `; ${v.note}` : ''}`
      }),
    },
    {
      title: 'Chart values',
      task: reported(async (ctx, task) => {
        const config = ctx.config
        ctx.admission = admissionPlan(config, expectedVerifier(config), need(ctx.image, 'the image').repository)
        ctx.files = [...valueFiles(config.deployEnv, config.deployValuesFile), writeAdmissionValues(join(config.reportsDir, 'deploy'), ctx.admission.values)]
        const helm = await ensureHelm(config.cacheDir)
        ctx.helm = { helm, kubeconfig: undefined, context: '' }
        await renderChart(helm, ctx.release, CHART_DIR, ctx.files, ctx.sets)
        task.title = `Chart values: ${config.deployEnv} accepted by the schema; admission policy ${ctx.admission.off ?? `${ctx.admission.policy} on`}`
      }),
    },
    {
      title: 'Cluster',
      task: reported(async (ctx, task) => {
        const config = ctx.config
        requireDeclaredContext(config.deployEnv, config.kubeContext, CLUSTER_CONTEXT)
        ctx.kube = await connectCluster(config, () => localClusterTarget(config.cacheDir))
        if (config.kubeContext && !need(ctx.image, 'the image').pushed) throw new PipelineError('deploy: refused: the image was built but not pushed (build.json pushed=false); the cluster could not pull it')
        ctx.helm = { ...need(ctx.helm, 'helm'), kubeconfig: ctx.kube.kubeconfig, context: ctx.kube.context }
        task.title = `Cluster: ${describeCluster(config, ctx.kube)}`
      }),
    },
    {
      title: 'Admission controller',
      skip: (ctx) => !ctx.admission?.enforce,
      task: reported(async (ctx, task) => {
        const state = await prepareAdmission(ctx.config, need(ctx.kube, 'the cluster'), need(ctx.helm, 'helm'), need(ctx.admission, 'the admission plan'))
        task.title = `Admission controller: ${describeController(state)}`
      }),
    },
    {
      title: 'Release: recover a stuck helm operation',
      task: reported(async (ctx, task) => {
        const { release, config } = ctx
        const helm = need(ctx.helm, 'helm')
        const kube = need(ctx.kube, 'the cluster')
        const image = need(ctx.image, 'the image')
        const records = await releaseRecords(kube, release)
        ctx.order = await checkOrder(runningCommit(records), image.commit, ctx.allowOlder)
        ctx.recovered = await recoverPendingRelease(helm, release, config.deployTimeoutSecs, Date.now(), records)
        const entries = await history(helm, release)
        ctx.previousRevision = [...entries].reverse().find((e) => e.status === 'deployed')?.revision
        task.title = ctx.recovered ? `Release: ${ctx.recovered}` : `Release: ${ctx.previousRevision ? `at revision ${ctx.previousRevision}` : 'first install'}`
      }),
    },
    {
      title: 'helm upgrade --install --rollback-on-failure --wait=watcher',
      task: reported(async (ctx, task) => {
        const { release, config } = ctx
        const helm = need(ctx.helm, 'helm')
        const kube = need(ctx.kube, 'the cluster')
        const image = need(ctx.image, 'the image')
        task.title = `helm upgrade --install ${release.name} (${config.deployEnv}, timeout ${config.deployTimeoutSecs}s)`
        const since = Date.now()
        try {
          const track = { kube, image: image.pinned, selector: podSelector(release.name), graceSecs: config.deployReadinessGraceSecs }
          const labels = recordLabels(image.commit, config.deployTimeoutSecs)
          await upgradeTracked(helm, release, { chart: CHART_DIR, valueFiles: ctx.files, sets: ctx.sets, timeoutSecs: config.deployTimeoutSecs, labels }, track)
        } catch (err) {
          const why = await explainFailure(kube, helm, release, since)
          ctx.revision = why.revision
          const reason = err instanceof RolloutStopped ? err.reason : (why.reason ?? firstLine(err))
          if (why.rolledBackTo !== undefined) {
            ctx.result = 'rolled-back'
            const unhealthy = await confirmRollback(kube, release)
            const state = unhealthy ?? `revision ${why.revision} serves the previous image again`
            throw new PipelineError(`deploy: ${image.digest.slice(0, 19)}… did not become ready; rolled back to revision ${why.rolledBackTo} (${state}): ${reason}`, err instanceof PipelineError ? err.details : undefined)
          }
          ctx.result = 'failed'
          throw new PipelineError(`deploy: ${image.digest.slice(0, 19)}… failed${ctx.previousRevision ? '' : ' on first install (removed by --rollback-on-failure)'}: ${reason}`, err instanceof PipelineError ? err.details : undefined)
        }
        const entries = await history(helm, release)
        ctx.revision = entries[entries.length - 1]?.revision
      }),
    },
    {
      title: 'Verify: rollout complete, pods run the digest',
      task: reported(async (ctx, task) => {
        const { release } = ctx
        const kube = need(ctx.kube, 'the cluster')
        const image = need(ctx.image, 'the image')
        const pods = await verifyRollout(kube, release, image.pinned, image.digest)
        if (ctx.admission?.enforce) await waitPolicyEnforced(kube, ctx.admission.policy)
        ctx.result = 'deployed'
        report(ctx, 'deployed', null)
        setOutput('revision', String(ctx.revision ?? ''))
        task.title = `Verify: ${pods} pod(s) ready on ${image.digest.slice(0, 19)}…, revision ${ctx.revision}${ctx.admission?.enforce ? `; policy ${ctx.admission.policy} enforced` : ''}`
      }),
    },
  ]
}

export const stage = defineStage<DeployCtx>({ name: 'deploy', tasks: deployTasks, initialCtx: (argv) => deployInputs(argv) })

if (isMain(import.meta.url)) await runStage(stage)
