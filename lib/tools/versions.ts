/**
 * Every pinned external tool and base image, in one place: an upgrade is a
 * one-line change here. Tools missing from the machine are built from these
 * exact versions (Go module proxy, crates.io) and cached outside the clone.
 */
export const VERSIONS = {
  /** Not v0.69.4: that release was compromised. */
  trivy: 'v0.74.0',
  trivyDb: 'v0.0.0-20260813095258-0e0340a01b57',
  /** `npm run lint:workflows`; built with `go install`, it runs shellcheck on `run:` scripts. */
  actionlint: 'v1.7.12',
  /**
   * Helm 4 (`helm.sh/helm/v4`): `--rollback-on-failure` rolls a failed upgrade back, with the
   * watcher-based wait; built with `go install` (its go.mod has no replaces; needs Go 1.26).
   */
  helm: 'v4.3.1',
  /** kwokctl launches the local control plane (no simulated node); v0.8.0 defaults to Kubernetes 1.36. */
  kwok: 'v0.8.0',
  /**
   * kube-apiserver, controller-manager, scheduler, kubectl, kubelet and kube-proxy: the minor kwok v0.8.0 is
   * built and tested against (1.36), latest patch on the Go proxy; builds with Go 1.26.
   */
  kubernetes: 'v1.36.3',
  /** 3.6: the line kwok pairs with Kubernetes 1.34-1.36 (Debian's etcd 3.4 is too old). */
  etcd: 'v3.6.16',
  /** Signs and attests the pushed digest; built with `go install` from the Go module proxy (no replaces in its go.mod). */
  cosign: 'v3.1.3',
  /**
   * The admission controller that enforces the chart's image policy: its ImageValidatingPolicy reads
   * cosign v3's bundles (policy-controller v0.13.1 could not; docs/admission.md). Built from the
   * module zip (its go.mod has replaces), whose chart and CRDs are used as they are.
   */
  kyverno: 'v1.19.1',
  cargoChef: '0.1.78',
  /** The load generator of `npm run bench:server` and `bench:build -- --runtimes`; built with `cargo install --locked` from crates.io. */
  oha: '1.16.0',
  cargoAuditable: '0.7.7',
  rust: '1.95.0',
  /**
   * The Node line the workflow runs (`npm run test:node24` runs the tests under it
   * here); fetched from the npm registry's node-linux-<arch> package.
   */
  node24: '24.21.0',
  debianSuite: 'bookworm',
} as const

export const BASE_IMAGES = {
  chef: `lukemathwalker/cargo-chef:${VERSIONS.cargoChef}-rust-${VERSIONS.rust}-bookworm`,
  /** The Doc Server is linked statically, so it needs no C library at run time. */
  runtime: 'gcr.io/distroless/static-debian12:nonroot',
  /** The previous, dynamically linked runtime; only `npm run bench:build` still builds on it, to compare. */
  runtimeCc: 'gcr.io/distroless/cc-debian12:nonroot',
} as const
