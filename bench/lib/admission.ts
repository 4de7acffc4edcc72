/**
 * What the admission policy costs (docs/admission.md): the API server's
 * answer to a pod create in a namespace without the policy and in one with
 * it, measured from here, and the deploy stage's total time either way. A
 * create is a server-side dry run (`dryRun=All`): every admission webhook is
 * called (Kyverno declares itself free of side effects on dry runs), nothing
 * is stored, nothing is scheduled.
 */
import { request } from 'node:https'
import { join } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { PipelineError } from '../../lib/core/errors.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { readReport } from '../../lib/core/reports.ts'
import { run } from '../../lib/core/run.ts'
import { median, percentile } from '../../lib/core/stats.ts'
import { kubeFlags, type KubeTarget } from '../../lib/deploy/kube.ts'

/** The API server and the admin's client certificate, from the kubeconfig (what kubectl would use). */
export interface ApiClient {
  server: URL
  ca: Buffer
  cert: Buffer
  key: Buffer
}

export async function apiClient(k: KubeTarget): Promise<ApiClient> {
  const r = await run([k.kubectl, ...kubeFlags(k), 'config', 'view', '--raw', '--minify', '--flatten'])
  const c = parseYaml(r.stdout) as { clusters: { cluster: { server: string; 'certificate-authority-data': string } }[]; users: { user: { 'client-certificate-data'?: string; 'client-key-data'?: string } }[] }
  const cluster = c.clusters[0]?.cluster
  const user = c.users[0]?.user
  if (!cluster || !user?.['client-certificate-data'] || !user['client-key-data']) throw new PipelineError(`bench: the kubeconfig of ${k.context} has no client certificate to call the API server with`)
  const b64 = (s: string) => Buffer.from(s, 'base64')
  return { server: new URL(cluster.server), ca: b64(cluster['certificate-authority-data']), cert: b64(user['client-certificate-data']), key: b64(user['client-key-data']) }
}

/** One dry-run create of `pod` in `namespace`: milliseconds to the answer, and whether it was admitted. */
function dryRunCreate(api: ApiClient, namespace: string, pod: object): Promise<{ ms: number; admitted: boolean; status: number; message: string }> {
  const body = JSON.stringify(pod)
  const started = performance.now()
  return new Promise((resolve, reject) => {
    const req = request(
      { host: api.server.hostname, port: api.server.port, path: `/api/v1/namespaces/${namespace}/pods?dryRun=All`, method: 'POST', ca: api.ca, cert: api.cert, key: api.key, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: 60_000 },
      (res) => {
        let text = ''
        res.on('data', (d: Buffer) => (text += d.toString()))
        res.on('end', () => {
          const ms = performance.now() - started
          const message = res.statusCode === 201 ? '' : ((JSON.parse(text) as { message?: string }).message ?? text)
          resolve({ ms, admitted: res.statusCode === 201, status: res.statusCode ?? 0, message })
        })
      },
    )
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end(body)
  })
}

export interface CreateLatency {
  namespace: string
  creates: number
  medianMs: number
  p95Ms: number
}

/**
 * `rounds` dry-run creates of the same pod in each namespace, alternating so
 * both see the same machine; every one must be admitted (the image is one the
 * policy admits), or the figure would time a refusal.
 */
export async function createLatencies(api: ApiClient, namespaces: readonly string[], image: string, rounds: number): Promise<CreateLatency[]> {
  const times = new Map(namespaces.map((n) => [n, [] as number[]]))
  const pod = (ns: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { generateName: 'bench-admission-', namespace: ns }, spec: { containers: [{ name: 'doc-server', image }] } })
  // One unmeasured round: the first verification pays for connections and caches that later ones reuse.
  for (const ns of namespaces) await dryRunCreate(api, ns, pod(ns))
  for (let i = 0; i < rounds; i++) {
    for (const ns of namespaces) {
      const r = await dryRunCreate(api, ns, pod(ns))
      if (!r.admitted) throw new PipelineError(`bench: a pod of ${image} was refused in ${ns} (${r.status}): ${r.message.split('\n')[0]}`)
      times.get(ns)!.push(r.ms)
    }
  }
  const round = (n: number) => Math.round(n * 10) / 10
  return namespaces.map((ns) => {
    const sorted = [...times.get(ns)!].sort((a, b) => a - b)
    return { namespace: ns, creates: sorted.length, medianMs: round(median(sorted)), p95Ms: round(percentile(sorted, 95)) }
  })
}

/** The deploy stage, run as `npm run ci:deploy` runs it, into `namespace`: its wall time, and what its report says. */
export async function deployStage(reportsDir: string, namespace: string, enforce: boolean): Promise<{ seconds: number; result: string; reason: string | null }> {
  const started = performance.now()
  const r = await run([join(repoRoot, 'node_modules', '.bin', 'tsx'), join(repoRoot, 'tasks', 'deploy.ts')], {
    cwd: repoRoot,
    env: { ...process.env, FORCE_COLOR: '0', REPORTS_DIR: reportsDir, DEPLOY_ENV: 'staging', DEPLOY_NAMESPACE: namespace, RELEASE_NAME: 'doc-server', KUBE_CONTEXT: '', DEPLOY_ADMISSION: enforce ? 'enforce' : 'auto', DEPLOY_VALUES_FILE: '' },
    okCodes: [0, 1],
    timeoutMs: 15 * 60_000,
  })
  const report = readReport(reportsDir, 'deploy')
  if (r.exitCode !== 0) throw new PipelineError(`bench: the deploy into ${namespace} failed: ${report.reason ?? r.stderr.trim().split('\n').pop()}`)
  return { seconds: Math.round((performance.now() - started) / 100) / 10, result: report.result, reason: report.reason }
}
