import { mkdirSync,mkdtempSync,writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname,join } from 'node:path'
import { buildImage,ociBuildArgs } from '../../lib/build/docker.ts'
import { pushImage,removeImage } from '../../lib/build/registry.ts'
import type { Config } from '../../lib/core/config.ts'
import type { GitFacts } from '../../lib/core/git.ts'
import { repoRoot } from '../../lib/core/paths.ts'
import { VERSIONS } from '../../lib/tools/versions.ts'
import type { Decision } from '../../lib/scan/scan-policy.ts'
import type { ScanFacts } from '../../lib/sign/attest.ts'
import { attestScan,signBuild } from '../../lib/sign/sign.ts'
import { policyDigest, workingTreePolicy, type AppliedPolicy } from '../../lib/scan/committed-policy.ts'

let counter = 0

/** A small image (FROM scratch, one unique file) pushed to `repository`; its registry digest. */
export async function pushTinyImage(docker: string, repository: string, label: string, work = mkdtempSync(join(tmpdir(), 'tiny-image-')), files: Record<string, string> = {}): Promise<string> {
  const ctx = join(work, `img-${label}-${++counter}`)
  mkdirSync(join(ctx, 'root'), { recursive: true })
  writeFileSync(join(ctx, 'root', 'marker'), `${label} ${process.pid} ${Date.now()} ${counter}\n`)
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(ctx, 'root', path)), { recursive: true })
    writeFileSync(join(ctx, 'root', path), text)
  }
  writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY root/ /\n')
  const ref = `${repository}:${label}-${process.pid}-${counter}`
  await buildImage({ docker, context: ctx, dockerfile: join(ctx, 'Dockerfile'), tags: [ref] })
  pushed.push(ref)
  return (await pushImage(docker, ref)).digest
}

const pushed: string[] = []

/** Drops the local tags of the images pushTinyImage built (the registry keeps them). */
export async function removeTinyImages(docker: string): Promise<void> {
  for (const ref of pushed.splice(0)) await removeImage(docker, ref)
}

/** Just enough of a Debian root for Trivy to detect the OS and list one package. */
export const DEBIAN_FILES: Record<string, string> = {
  'etc/os-release': 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n',
  'etc/debian_version': '12.12\n',
  'var/lib/dpkg/status': 'Package: base-files\nStatus: install ok installed\nPriority: required\nSection: admin\nMaintainer: Santiago Vila <sanvila@debian.org>\nArchitecture: amd64\nVersion: 12.4+deb12u12\n\n',
}

export const passingDecision = (): Decision => ({
  decision: 'pass', reason: 'no HIGH or CRITICAL finding', counts: { UNKNOWN: 0, LOW: 1, MEDIUM: 0, HIGH: 0, CRITICAL: 0 }, blocking: [], blockingIds: [], ignored: [], expired: [], unfixedAllowed: 0, secrets: [], blockingSecrets: [],
})

/** What the build stage attaches: the signature and SLSA provenance for `git`'s commit. */
export async function signAsBuild(config: Config, repository: string, digest: string, git: GitFacts, work: string): Promise<void> {
  const dir = join(work, `build-${digest.slice(7, 19)}-${++counter}`)
  mkdirSync(dir, { recursive: true })
  await signBuild({ config, image: `${repository}@${digest}`, git, dockerfile: join(repoRoot, 'Dockerfile.optimized'), buildArgs: await ociBuildArgs(repoRoot, git.sha), startedOn: new Date(), outDir: dir })
}

/** The committed scan policy of this checkout, as the scan stage attests it. */
export function committedPolicyNow(): AppliedPolicy & { digest: string } {
  const { file: _file, ...applied } = workingTreePolicy()
  return { ...applied, digest: policyDigest(applied) }
}

/** What the scan stage attaches: a CycloneDX SBOM and the scan result (passing, now, by the pinned Trivy, unless overridden). */
export async function attestAsScan(config: Config, repository: string, digest: string, work: string, over: Partial<ScanFacts> = {}): Promise<void> {
  const dir = join(work, `scan-${digest.slice(7, 19)}-${++counter}`)
  mkdirSync(dir, { recursive: true })
  // A CycloneDX document of the shape Trivy writes (the scan e2e test covers Trivy's own).
  const sbom = join(dir, 'sbom.cdx.json')
  writeFileSync(sbom, JSON.stringify({ bomFormat: 'CycloneDX', specVersion: '1.6', version: 1, metadata: { component: { type: 'container', name: repository } }, components: [] }))
  const facts: ScanFacts = {
    digest, repository, decision: passingDecision(), policy: committedPolicyNow(),
    trivyVersion: VERSIONS.trivy.replace(/^v/, ''), db: { source: 'local', updatedAt: new Date().toISOString() }, scannedAt: new Date().toISOString(), kind: 'build', ...over,
  }
  await attestScan({ config, image: `${repository}@${digest}`, facts, sbom, outDir: dir })
}

/** A pushed image with everything deploy verifies: signature, provenance for `git`, SBOM and a passing scan. */
export async function pushSignedImage(o: { config: Config; docker: string; repository: string; label: string; git: GitFacts; work: string }): Promise<string> {
  const digest = await pushTinyImage(o.docker, o.repository, o.label, o.work)
  await signAsBuild(o.config, o.repository, digest, o.git, o.work)
  await attestAsScan(o.config, o.repository, digest, o.work)
  return digest
}
