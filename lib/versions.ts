/**
 * Every pinned external tool and base image, in one place: an upgrade is a
 * one-line change here. Tools missing from the machine are built from these
 * exact versions (Go module proxy, crates.io) and cached outside the clone.
 */
export const VERSIONS = {
  /** Not v0.69.4: that release was compromised. */
  trivy: 'v0.74.0',
  trivyDb: 'v0.0.0-20260813095258-0e0340a01b57',
  actionlint: 'v1.7.12',
  helm: 'v3.22.0',
  kwok: 'v0.8.0',
  kubernetes: 'v1.34.4',
  etcd: 'v3.6.16',
  cargoChef: '0.1.73',
  cargoAuditable: '0.7.2',
  rust: '1.95.0',
  debianSuite: 'bookworm',
} as const

export const BASE_IMAGES = {
  chef: `lukemathwalker/cargo-chef:${VERSIONS.cargoChef}-rust-${VERSIONS.rust}-bookworm`,
  runtime: 'gcr.io/distroless/cc-debian12:nonroot',
} as const
