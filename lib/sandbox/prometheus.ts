/**
 * The local cluster's Prometheus: the pinned build (lib/tools/prometheus.ts)
 * run as one of the cluster's background services, with its config, data,
 * log and pidfile under the cluster's state dir. It finds the pods through
 * Kubernetes service discovery and keeps those annotated
 * `prometheus.io/scrape: "true"` (port and path from `prometheus.io/port`
 * and `prometheus.io/path`), the convention of Prometheus' own Kubernetes
 * example configuration that the chart declares, as a user's cluster would
 * scrape them. Series carry `namespace` and `pod`, which the canary
 * analysis selects by.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ensurePrometheus } from '../tools/prometheus.ts'
import { ensureService, type Service } from './node.ts'
import { stopOwned } from './service.ts'
import { say } from '../core/output.ts'

/** Beside the API server's port; never 9090, which a Doc Server's admin port may hold on the host. */
export const PROMETHEUS_ADDR = '127.0.0.1:19090'
export const LOCAL_PROMETHEUS_URL = `http://${PROMETHEUS_ADDR}`
/** Short, so a canary's window holds several samples of every series. */
export const SCRAPE_INTERVAL = '5s'

export function prometheusDirs(clusterRoot: string) {
  const dir = join(clusterRoot, 'prometheus')
  return {
    dir,
    config: join(dir, 'prometheus.yml'),
    data: join(dir, 'data'),
    log: join(dir, 'prometheus.log'),
    pid: join(dir, 'prometheus.pid'),
  }
}

/** The scrape configuration: every annotated pod of the cluster, with its namespace and pod name as labels. */
export function prometheusConfig(kubeconfig: string): string {
  const config = {
    global: { scrape_interval: SCRAPE_INTERVAL, scrape_timeout: '4s', evaluation_interval: SCRAPE_INTERVAL },
    scrape_configs: [
      {
        job_name: 'kubernetes-pods',
        kubernetes_sd_configs: [{ role: 'pod', kubeconfig_file: kubeconfig }],
        relabel_configs: [
          { source_labels: ['__meta_kubernetes_pod_annotation_prometheus_io_scrape'], action: 'keep', regex: 'true' },
          // A pod that is not running yet or any more has nothing to say.
          { source_labels: ['__meta_kubernetes_pod_phase'], action: 'drop', regex: 'Pending|Succeeded|Failed' },
          {
            source_labels: ['__meta_kubernetes_pod_annotation_prometheus_io_path'],
            action: 'replace',
            target_label: '__metrics_path__',
            regex: '(.+)',
          },
          {
            source_labels: ['__address__', '__meta_kubernetes_pod_annotation_prometheus_io_port'],
            action: 'replace',
            regex: '([^:]+)(?::\\d+)?;(\\d+)',
            replacement: '$1:$2',
            target_label: '__address__',
          },
          { action: 'labelmap', regex: '__meta_kubernetes_pod_label_(.+)' },
          { source_labels: ['__meta_kubernetes_namespace'], action: 'replace', target_label: 'namespace' },
          { source_labels: ['__meta_kubernetes_pod_name'], action: 'replace', target_label: 'pod' },
        ],
      },
    ],
  }
  // YAML is a superset of JSON.
  return `${JSON.stringify(config, null, 2)}\n`
}

async function ready(): Promise<boolean> {
  try {
    return (await fetch(`${LOCAL_PROMETHEUS_URL}/-/ready`, { signal: AbortSignal.timeout(2000) })).ok
  } catch {
    return false
  }
}

function service(bin: string, d: ReturnType<typeof prometheusDirs>): Service {
  return {
    name: 'prometheus',
    binary: bin,
    args: [
      `--config.file=${d.config}`,
      `--storage.tsdb.path=${d.data}`,
      // A day is more than any canary window; the local cluster's metrics are not kept for history.
      '--storage.tsdb.retention.time=1d',
      `--web.listen-address=${PROMETHEUS_ADDR}`,
    ],
    log: d.log,
    pid: d.pid,
    ready,
    timeoutMs: 60_000,
  }
}

/** Starts the local cluster's Prometheus unless it runs with this configuration already; a changed configuration restarts it. */
export async function ensureLocalPrometheus(cache: string, clusterRoot: string, kubeconfig: string): Promise<'running' | 'started'> {
  const bin = await ensurePrometheus(cache)
  const d = prometheusDirs(clusterRoot)
  mkdirSync(d.data, { recursive: true })
  const config = prometheusConfig(kubeconfig)
  const changed = !existsSync(d.config) || readFileSync(d.config, 'utf8') !== config
  if (changed) {
    writeFileSync(d.config, config)
    if (await stopOwned(d.pid, 'prometheus')) say('the local Prometheus configuration changed: restarting it')
  }
  return ensureService(service(bin, d))
}

/** Stops the local Prometheus (its data stays with the cluster's state). */
export async function stopLocalPrometheus(clusterRoot: string): Promise<boolean> {
  return stopOwned(prometheusDirs(clusterRoot).pid, 'prometheus', 10_000)
}
