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
import { isMain,parseOptions } from '../lib/core/cli.ts'
import { loadConfig,type Config } from '../lib/core/config.ts'
import { CHART_DIR,confirmRollback,explainFailure,podSelector,readDeployInputs,recoverPendingRelease,valueFiles,verifyRollout,writeDeployReport,type DeployImage,type DeployResult } from '../lib/deploy/deploy.ts'
import { PipelineError,firstLine } from '../lib/core/errors.ts'
import { history,renderChart,type HelmTarget,type Release } from '../lib/deploy/helm.ts'
import type { KubeTarget } from '../lib/deploy/kube.ts'
import { connectCluster,describeCluster } from '../lib/deploy/target.ts'
import { checkOrder,recordLabels,releaseRecords,requireOlderAllowed,runningCommit } from '../lib/deploy/guard.ts'
import { environmentFor,type Environment } from '../lib/deploy/environments.ts'
import { RolloutStopped,upgradeTracked } from '../lib/deploy/track.ts'
import { localClusterTarget } from '../lib/sandbox/cluster.ts'
import { appendSummary,markdownTable,setOutput } from '../lib/core/summary.ts'
import { defineStage,need,runStage } from '../lib/core/stage.ts'
import { deploySigners,verifyForDeploy,type Verified } from '../lib/deploy/verify.ts'
import { admissionPlan,describeController,prepareAdmission,waitPolicyEnforced,writeAdmissionValues,type AdmissionPlan } from '../lib/deploy/admission.ts'

export interface DeployCtx {
  started: number
  config: Config
  release: Release
  /** `--allow-older`: deploy a commit older than the one the release runs; `--reason`: why (recorded on the release). */
  allowOlder: boolean
  reason: string | undefined
  /** What the environment deployed to allows (lib/deploy/environments.ts). */
  environment?: { local: boolean; settings: Environment }
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
  /** cosign's commands and whole output, for the report (the screen gets one line per check). */
  details: string[]
  /** When the rollout must be serving: Helm's start plus DEPLOY_TIMEOUT_SECS. */
  deadline?: number
}

type Task = ListrTask<DeployCtx>['task']

export function deployInputs(argv: readonly string[], config = loadConfig()): DeployCtx {
  const { values } = parseOptions('deploy', argv, { 'allow-older': { type: 'boolean' }, reason: { type: 'string' } })
  const reason = values.reason?.trim()
  if (values.reason !== undefined && !reason) throw new PipelineError('deploy: --reason needs the words that say why')
  if (reason && !values['allow-older']) throw new PipelineError('deploy: --reason goes with --allow-older (it says why an older commit is deployed)')
  return { started: performance.now(), config, release: { name: config.releaseName, namespace: config.deployNamespace }, allowOlder: values['allow-older'] ?? false, reason, files: [], sets: {}, details: [] }
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
    details: ctx.details.length > 0 ? ctx.details.join('\n') : null,
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
        const environment = (ctx.environment = environmentFor(ctx.config.deployEnv, ctx.config.kubeContext))
        requireOlderAllowed(ctx.config.deployEnv, environment.settings, ctx.allowOlder, ctx.reason)
        ctx.image = readDeployInputs(ctx.config.reportsDir)
        ctx.sets = { 'image.repository': ctx.image.repository, 'image.digest': ctx.image.digest }
        task.title = `Image: ${ctx.image.pinned}`
      }),
    },
    {
      title: 'Signature and attestations, from the registry',
      rendererOptions: { persistentOutput: true, outputBar: Infinity },
      task: reported(async (ctx, task) => {
        ctx.verified = await verifyForDeploy(ctx.config, need(ctx.image, 'the image'), need(ctx.environment, 'the environment'), ctx.details)
        // One line per check went to the output above; the title only sums up.
        task.title = `Verified from the registry: signature, scan, provenance, SBOM${ctx.verified.note ? `; ${ctx.verified.note}` : ''}`
      }),
    },
    {
      title: 'Chart values',
      task: reported(async (ctx, task) => {
        const config = ctx.config
        const image = need(ctx.image, 'the image')
        const environment = need(ctx.environment, 'the environment')
        // The policy admits what deploy verified: the same signers, the same scan bound.
        ctx.admission = admissionPlan(config, environment, await deploySigners(config, image.commit, environment), image.repository)
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
        ctx.order = await checkOrder(runningCommit(records), image.commit, ctx.allowOlder, ctx.reason)
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
        ctx.deadline = since + config.deployTimeoutSecs * 1000
        try {
          const track = { kube, image: image.pinned, selector: podSelector(release.name), graceSecs: config.deployReadinessGraceSecs }
          const labels = recordLabels(image.commit, config.deployTimeoutSecs, ctx.order ? ctx.reason : undefined)
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
      title: 'Verify: every pod runs the digest, ready',
      task: reported(async (ctx, task) => {
        const { release, config } = ctx
        const kube = need(ctx.kube, 'the cluster')
        const image = need(ctx.image, 'the image')
        const pods = await verifyRollout(kube, release, image.pinned, image.digest, { graceSecs: config.deployReadinessGraceSecs, deadline: need(ctx.deadline, 'the deploy deadline'), timeoutSecs: config.deployTimeoutSecs })
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
