/**
 * Prometheus, pinned and built from the Go module proxy. The canary analysis
 * reads real metrics from it; locally it is started by `cluster:up` and finds
 * the release's pods through Kubernetes service discovery, as in a user's
 * cluster.
 */
import { ensureGoTool } from './go.ts'
import { VERSIONS } from './versions.ts'

/** v0.316.0 -> 3.16.0: the release the module version stands for. */
export function prometheusRelease(moduleVersion: string = VERSIONS.prometheus): string {
  const m = /^v0\.(\d)(\d\d)\.(\d+)$/.exec(moduleVersion)
  return m ? `${m[1]}.${Number(m[2])}.${m[3]}` : moduleVersion.replace(/^v/, '')
}

/**
 * The build leaves out the web UI's assets (`builtinassets`: the API and
 * the query engine are what analysis uses) and every service discovery but
 * Kubernetes' (`remove_all_sd`, `enable_kubernetes_sd`: the cloud SDKs would
 * double the build). `netgo`, as Prometheus' own release build.
 */
export const PROMETHEUS_TAGS = ['netgo', 'remove_all_sd', 'enable_kubernetes_sd'] as const

export async function ensurePrometheus(cache: string): Promise<string> {
  const release = prometheusRelease()
  const ldflags = [
    '-s -w',
    `-X github.com/prometheus/common/version.Version=${release}`,
    `-X github.com/prometheus/common/version.Branch=${VERSIONS.prometheus}`,
  ].join(' ')
  return ensureGoTool(cache, {
    binary: 'prometheus',
    pkg: 'github.com/prometheus/prometheus/cmd/prometheus',
    version: VERSIONS.prometheus,
    ldflags,
    tags: PROMETHEUS_TAGS,
    env: { GOTOOLCHAIN: 'local' },
  })
}
