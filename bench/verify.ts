/**
 * `npm run bench:verify`: how deploy's verification (signature, scan,
 * provenance, SBOM, from the registry) scales with the bundles piled on a
 * digest. Two small images in the local registry: one as a single build and
 * scan leave it (4 bundles: signature, provenance, SBOM, scan result), one
 * with 26 more scan results (30 bundles), as rescans and repeated builds of
 * one commit leave it. Both are verified in alternating rounds: by deploy's
 * verification with the machine's bundle cache (every bundle already read
 * once, as the build and scan stages leave it), with an empty cache (a fresh
 * runner), and, for comparison, reading through `cosign download attestation`
 * (every bundle from the registry on every read) and by the four registry-side
 * cosign runs (`verify`, one `verify-attestation` per type) of before. Figures
 * go to reports/bench-verify.json; not a gate.
 */
import { median } from '../lib/core/stats.ts'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ListrTask } from 'listr2'
import { ociBuildArgs } from '../lib/build/docker.ts'
import { isMain } from '../lib/core/cli.ts'
import { loadConfig, type Config } from '../lib/core/config.ts'
import { gitFacts } from '../lib/core/git.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { markdownTable } from '../lib/core/summary.ts'
import { quietly } from '../lib/core/output.ts'
import { ANY_EXIT, run } from '../lib/core/run.ts'
import { defineStage, runStage } from '../lib/core/stage.ts'
import { VERSIONS } from '../lib/tools/versions.ts'
import { pushVariant } from './lib/deploy.ts'
import { verifyImage, type VerifyOptions } from '../lib/deploy/verify.ts'
import { ensureDockerEngine } from '../lib/sandbox/engine.ts'
import { LOCAL_REGISTRY, ensureRegistry } from '../lib/sandbox/registry.ts'
import { PROVENANCE_TYPE, SBOM_TYPE, SCAN_PREDICATE_TYPE, scanPredicate, type ScanFacts } from '../lib/sign/attest.ts'
import { attestImage, localVerifier, registryFlags, verifiedReferrers, verifyBundles } from '../lib/sign/cosign.ts'
import { BUNDLE_MEDIA_TYPE } from '../lib/sign/referrers.ts'
import { committedPolicy, policyDigest, workingTreePolicy } from '../lib/scan/committed-policy.ts'
import { attestScan, signBuild, signingFor } from '../lib/sign/sign.ts'

const REPO = `${LOCAL_REGISTRY}/local/bench-verify`
const ROUNDS = 9
const EXTRA_SCANS = 26

interface Case {
  name: string
  digest: string
  bundles: number
  /** Seconds per round: with the machine's cache, with an empty one, reading through `cosign download`, and the four cosign runs of before. */
  warm: number[]
  cold: number[]
  download: number[]
  before: number[]
}

interface BenchCtx {
  config: Config
  work: string
  opts: (digest: string, cache?: string) => VerifyOptions
  cases: Case[]
}

const secs = (from: number) => Math.round(performance.now() - from) / 1000

/** A passing scan of `digest` at `at`, as the scan stage attests it. */
function scanFacts(digest: string, at: Date): ScanFacts {
  const decision = {
    decision: 'pass' as const,
    reason: 'no HIGH or CRITICAL finding',
    counts: { UNKNOWN: 0, LOW: 0, MEDIUM: 0, HIGH: 0, CRITICAL: 0 },
    blocking: [],
    blockingIds: [],
    ignored: [],
    expired: [],
    unfixedAllowed: 0,
    secrets: [],
    blockingSecrets: [],
  }
  const { file: _file, ...applied } = workingTreePolicy()
  return {
    digest,
    repository: REPO,
    decision,
    policy: { ...applied, digest: policyDigest(applied) },
    kind: 'build',
    trivyVersion: VERSIONS.trivy.replace(/^v/, ''),
    db: { source: 'local', updatedAt: at.toISOString() },
    scannedAt: at.toISOString(),
  }
}

/** The four registry-side cosign runs deploy made before (signature, then one verify-attestation per type). */
async function verifyAsBefore(o: VerifyOptions): Promise<void> {
  const image = `${o.repository}@${o.digest}`
  const signer = o.imageSigners[0]!
  const v = signer.kind === 'key' ? ['--key', signer.pub, '--insecure-ignore-tlog=true'] : []
  await quietly(async () => {
    await run([o.cosign, 'verify', ...v, ...registryFlags(image), '--output', 'json', image], { timeoutMs: 180_000 })
    for (const type of [SCAN_PREDICATE_TYPE, PROVENANCE_TYPE, SBOM_TYPE])
      await run([o.cosign, 'verify-attestation', '--type', type, ...v, ...registryFlags(image), image], { timeoutMs: 180_000 })
  })
}

/** One read through `cosign download attestation` (every bundle from the registry, each time), then the same offline verification. */
async function verifyThroughDownload(o: VerifyOptions): Promise<void> {
  const call = { cosign: o.cosign, image: `${o.repository}@${o.digest}` }
  const out = await quietly(() =>
    run([o.cosign, 'download', 'attestation', ...registryFlags(call.image), call.image], { timeoutMs: 180_000, okCodes: ANY_EXIT }),
  )
  const bundles = out.stdout.split('\n').filter((l) => l.includes(BUNDLE_MEDIA_TYPE))
  await verifyBundles(call, bundles, o.imageSigners[0]!)
}

function tasks(): ListrTask<BenchCtx>[] {
  return [
    {
      title: 'Two signed and scanned images in the local registry',
      task: async (ctx, task) => {
        const docker = (await ensureDockerEngine(ctx.config.docker)).docker
        await ensureRegistry(LOCAL_REGISTRY)
        const signing = await signingFor(ctx.config)
        ctx.work = mkdtempSync(join(tmpdir(), 'bench-verify-'))
        const git = { ...(await gitFacts(repoRoot)), dirty: false }
        const buildArgs = await ociBuildArgs(repoRoot, git.sha)
        const sbom = join(ctx.work, 'sbom.cdx.json')
        writeFileSync(sbom, JSON.stringify({ bomFormat: 'CycloneDX', specVersion: '1.6', version: 1, components: [] }))
        ctx.cases = []
        for (const [name, extra] of [
          ['one build and scan', 0],
          [`one build and ${EXTRA_SCANS + 1} scans`, EXTRA_SCANS],
        ] as const) {
          const digest = await pushVariant(docker, REPO, 'scratch', `bench-verify-${Date.now()}`, { marker: `${name} ${Date.now()}\n` })
          const image = `${REPO}@${digest}`
          await signBuild({
            config: ctx.config,
            image,
            git,
            dockerfile: join(repoRoot, 'Dockerfile.optimized'),
            buildArgs,
            startedOn: new Date(),
            outDir: ctx.work,
          })
          // Older scans first: the newest is the one deploy judges.
          for (let i = extra; i >= 1; i--) {
            task.output = `${name}: scan result ${extra - i + 1} of ${extra}`
            const file = join(ctx.work, `scan-${i}.json`)
            writeFileSync(file, JSON.stringify(scanPredicate(scanFacts(digest, new Date(Date.now() - i * 60_000)))))
            await attestImage({ cosign: signing.cosign, image }, signing.signer, SCAN_PREDICATE_TYPE, file)
          }
          await attestScan({ config: ctx.config, image, facts: scanFacts(digest, new Date()), sbom, outDir: ctx.work })
          const bundles = (await verifiedReferrers({ cosign: signing.cosign, image }, signing.verifier, ctx.config.cacheDir)).bundles
          ctx.cases.push({ name, digest, bundles, warm: [], cold: [], download: [], before: [] })
        }
        const source = buildArgs.SOURCE!
        const committed = await committedPolicy(git.sha)
        const policy = { digest: policyDigest(committed), committed }
        ctx.opts = (digest, cache = ctx.config.cacheDir) => ({
          cosign: signing.cosign,
          cache,
          imageSigners: [localVerifier(ctx.config.cacheDir)],
          scanSigners: [],
          repository: REPO,
          digest,
          sourceRepository: source,
          commit: git.sha,
          policy,
          maxAgeSecs: 3600,
          db: { maxAgeSecs: 30 * 86_400, sources: ['local', 'remote'] },
          allowDirty: false,
        })
        task.title = `Two images: ${ctx.cases.map((c) => `${c.bundles} bundles`).join(' and ')}`
      },
    },
    {
      title: `Verify each, ${ROUNDS} alternating rounds`,
      task: async (ctx, task) => {
        for (let round = 1; round <= ROUNDS; round++) {
          for (const c of round % 2 ? ctx.cases : [...ctx.cases].reverse()) {
            task.output = `round ${round}: ${c.bundles} bundles`
            let t = performance.now()
            await verifyImage(ctx.opts(c.digest))
            c.warm.push(secs(t))
            const empty = mkdtempSync(join(ctx.work, 'cache-'))
            t = performance.now()
            await verifyImage(ctx.opts(c.digest, empty))
            c.cold.push(secs(t))
            t = performance.now()
            await verifyThroughDownload(ctx.opts(c.digest))
            c.download.push(secs(t))
            t = performance.now()
            await verifyAsBefore(ctx.opts(c.digest))
            c.before.push(secs(t))
          }
        }
        task.title = `Verified each ${ROUNDS} times`
      },
    },
    {
      title: 'Report',
      task: (ctx, task) => {
        const [one, many] = ctx.cases as [Case, Case]
        const ratio = (f: (c: Case) => number[]) => `${((median(f(many)) / median(f(one)) - 1) * 100).toFixed(1)} %`
        const file = join(ctx.config.reportsDir, 'bench-verify.json')
        mkdirSync(ctx.config.reportsDir, { recursive: true })
        writeFileSync(file, `${JSON.stringify({ writtenAt: new Date().toISOString(), rounds: ROUNDS, cases: ctx.cases }, null, 2)}\n`)
        const cell = (xs: number[]) => `${median(xs)} (${Math.min(...xs)}-${Math.max(...xs)})`
        const row = (c: Case) => [`${c.name} (${c.bundles} bundles)`, cell(c.warm), cell(c.cold), cell(c.download), cell(c.before)]
        console.log(
          markdownTable(
            [
              'digest',
              'verify, bundles cached: median s (range)',
              'verify, empty cache',
              'cosign download, one offline verify',
              'four cosign runs',
            ],
            [
              ...ctx.cases.map(row),
              ['30 against 4 bundles', ratio((c) => c.warm), ratio((c) => c.cold), ratio((c) => c.download), ratio((c) => c.before)],
            ],
          ),
        )
        task.title = `Report: ${file}`
      },
    },
  ]
}

export const stage = defineStage<BenchCtx>({ name: 'bench-verify', tasks, initialCtx: () => ({ config: loadConfig() }) as BenchCtx })

if (isMain(import.meta.url)) await runStage(stage)
