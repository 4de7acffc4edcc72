import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../lib/core/config.ts'
import { VERSIONS } from '../lib/tools/versions.ts'
import type { Decision } from '../lib/scan/scan-policy.ts'
import {
  PROVENANCE_PREDICATE_TYPE,
  SBOM_PREDICATE_TYPE,
  SCAN_PREDICATE_TYPE,
  alreadyAttested,
  canonicalJson,
  checkProvenance,
  checkScan,
  parseEnvelopes,
  provenancePredicate,
  scanPredicate,
  type ProvenanceFacts,
  type ScanFacts,
  type VerifiedStatement,
} from '../lib/sign/attest.ts'
import { SIGNATURE_PREDICATE_TYPE, bundleLines, registryFlags, signsDigest, writeReferrerLayout } from '../lib/sign/cosign.ts'
import { policyDigest, type AppliedPolicy } from '../lib/scan/committed-policy.ts'
import { refusal } from './helpers/refusal.ts'

const t = suite('attest')

const D1 = `sha256:${'a1'.repeat(32)}`
const D2 = `sha256:${'b2'.repeat(32)}`
const NOW = new Date('2026-11-27T12:00:00Z')
const TRIVY = VERSIONS.trivy.replace(/^v/, '')
const REPO = 'https://github.com/acme/doc-server'
const COMMIT = 'c'.repeat(40)

const decision = (over: Partial<Decision> = {}): Decision => ({
  decision: 'pass',
  reason: 'no blocking finding',
  counts: { UNKNOWN: 0, LOW: 0, MEDIUM: 0, HIGH: 0, CRITICAL: 0 },
  blocking: [],
  blockingIds: [],
  ignored: [],
  expired: [],
  unfixedAllowed: 0,
  secrets: [],
  blockingSecrets: [],
  ...over,
})

const COMMITTED: AppliedPolicy = { severities: ['HIGH', 'CRITICAL'], ignoreUnfixed: false, ignoreMaxDays: 90, ignoreFile: '.trivyignore.yaml', ignoreFileSha256: 'e'.repeat(64) }
const policy = (over: Partial<AppliedPolicy> = {}) => {
  const p = { ...COMMITTED, ...over }
  return { ...p, digest: policyDigest(p) }
}

const facts = (over: Partial<ScanFacts> = {}): ScanFacts => ({
  digest: D1,
  repository: '127.0.0.1:5000/local/agent-docs',
  decision: decision(),
  policy: policy(),
  trivyVersion: TRIVY,
  db: { source: 'local', updatedAt: '2026-11-27T00:00:00Z' },
  scannedAt: '2026-11-27T11:00:00Z',
  kind: 'build',
  ...over,
})

const stmt = (predicateType: string, predicate: object, subject = D1, signer?: string): VerifiedStatement => ({
  statement: { _type: 'https://in-toto.io/Statement/v1', predicateType, subject: [{ name: 'img', digest: { sha256: subject.slice(7) } }], predicate: predicate as Record<string, unknown> },
  digest: `sha256:${createHash('sha256').update(JSON.stringify([predicateType, predicate, subject])).digest('hex')}`,
  ...(signer ? { signer } : {}),
})
const scan = (f: Partial<ScanFacts> = {}, subject = D1, signer?: string) => stmt(SCAN_PREDICATE_TYPE, scanPredicate(facts(f)), subject, signer)
const expect = { digest: D1, now: NOW, maxAgeSecs: 24 * 3600, policy: { digest: policyDigest(COMMITTED), committed: COMMITTED }, db: { maxAgeSecs: 72 * 3600, sources: ['local', 'remote'] } }

t('a passing, fresh scan of exactly this digest by the pinned Trivy is accepted', () => {
  const v = checkScan([scan()], expect)
  assert.is(v.trivy, TRIVY)
  assert.is(v.scannedAt, '2026-11-27T11:00:00Z')
  assert.equal(v.blockingSeverities, ['HIGH', 'CRITICAL'])
})

t('scan: failed, other scanner version, weak severities, stale, future, expired or undated ignore entry', () => {
  refusal(() => checkScan([scan({ decision: decision({ decision: 'fail', reason: '1 CRITICAL', blockingIds: ['CVE-2099-1'] }) })], expect), /did not pass: the scan at .* found 1 CRITICAL \(CVE-2099-1\)/)
  refusal(() => checkScan([scan({ trivyVersion: '0.69.4' })], expect), /0\.69\.4, not the pinned Trivy/)
  const weak = policy({ severities: ['CRITICAL'] })
  refusal(() => checkScan([scan({ policy: weak })], { ...expect, policy: { digest: weak.digest, committed: weak } }), /did not block on HIGH \(/)
  refusal(() => checkScan([scan({ scannedAt: '2026-11-26T11:00:00Z' })], expect), /25 h old, over the bound of 24 h/)
  refusal(() => checkScan([scan({ scannedAt: '2026-11-27T11:00:00Z' })], { ...expect, maxAgeSecs: 1800 }), /60 min old, over the bound of 30 min/)
  refusal(() => checkScan([scan({ scannedAt: '2026-11-28T11:00:00Z' })], expect), /dated in the future/)
  const ignored = [{ id: 'CVE-2021-45710', statement: 's', expiredAt: '2026-11-27', findings: 1 }]
  refusal(() => checkScan([scan({ decision: decision({ ignored }) })], expect), /relied on ignore entry CVE-2021-45710, which expired on 2026-11-27/)
  assert.equal(checkScan([scan({ decision: decision({ ignored: [{ ...ignored[0]!, expiredAt: '2026-11-28' }] }) })], expect).ignored, ['CVE-2021-45710'])
  // Compared as text, "9999" sorts after any real day: a date that is not one is refused.
  refusal(() => checkScan([scan({ decision: decision({ ignored: [{ ...ignored[0]!, expiredAt: '9999' }] }) })], expect), /expiry that is not a date \("9999"\)/)
})

t('scan: a time that cannot be read is refused, never sorted last', () => {
  refusal(() => checkScan([scan(), scan({ scannedAt: 'yesterday' })], expect), /has no readable scan time \("yesterday"\)/)
})

t('scan: only a scan under the committed policy counts; the refusal names the difference', () => {
  const laxer = policy({ severities: ['LOW'] })
  refusal(() => checkScan([scan({ policy: laxer })], expect), /no scan of .* was made under the committed scan policy .*: severities LOW \(committed: CRITICAL, HIGH\)/)
  refusal(() => checkScan([scan({ policy: policy({ ignoreUnfixed: true }) })], expect), /ignoreUnfixed true \(committed: false\)/)
  refusal(() => checkScan([scan({ policy: policy({ ignoreFileSha256: '1'.repeat(64) }) })], expect), /ignore file \.trivyignore\.yaml with other content/)
  // A newer pass under a laxer policy does not outrank a failure under the committed one.
  const fail = scan({ scannedAt: '2026-11-27T10:00:00Z', decision: decision({ decision: 'fail', reason: '1 HIGH' }) })
  refusal(() => checkScan([fail, scan({ scannedAt: '2026-11-27T11:00:00Z', policy: laxer })], expect), /did not pass: the scan at 2026-11-27T10:00:00Z found 1 HIGH/)
})

t('scan: the DB a pass used must be one the environment accepts, fresh enough at scan time', () => {
  const remote = { source: 'remote', updatedAt: '2026-11-23T11:00:00Z' }
  refusal(() => checkScan([scan({ db: remote })], expect), /vulnerability DB 96 h old at scan time, over this environment's scan\.dbMaxAge \(72 h\)/)
  assert.is(checkScan([scan({ db: { ...remote, updatedAt: '2026-11-25T11:00:00Z' } })], expect).trivy, TRIVY)
  refusal(() => checkScan([scan()], { ...expect, db: { ...expect.db, sources: ['remote'] } }), /used a local vulnerability DB; this environment accepts remote/)
})

t('scan: a statement about another digest is refused, not skipped; none at all is refused', () => {
  refusal(() => checkScan([scan(), scan({}, D2)], expect), /attached to sha256:a1a1a1a1a1a1… is about sha256:b2b2b2b2b2b2…: copied from another image/)
  refusal(() => checkScan([scan({ digest: D2 })], expect), /names image sha256:b2b2/)
  refusal(() => checkScan([], expect), /has no scan attestation/)
  refusal(() => checkScan([stmt(PROVENANCE_PREDICATE_TYPE, {})], expect), /has no scan attestation/)
})

t('scan: every verdict counts: a failure after the newest pass blocks, naming who scanned and the findings', () => {
  const pass = scan({ scannedAt: '2026-11-27T09:00:00Z' }, D1, 'ci.yml')
  const rescan = scan({ scannedAt: '2026-11-27T10:00:00Z', decision: decision({ decision: 'fail', reason: '1 blocking finding (1 HIGH)', blockingIds: ['CVE-2021-45710'] }) }, D1, 'rescan.yml')
  refusal(() => checkScan([pass, rescan], expect), /a newer scan of .* failed after the pass of 2026-11-27T09:00:00Z: the scan at 2026-11-27T10:00:00Z signed by rescan\.yml found 1 blocking finding \(1 HIGH\) \(CVE-2021-45710\)/)
  // A pass after it (a fixed advisory, an accepted risk) lets the digest deploy again.
  const again = scan({ scannedAt: '2026-11-27T11:00:00Z' }, D1, 'ci.yml')
  const v = checkScan([pass, rescan, again], expect)
  assert.is(v.scannedAt, '2026-11-27T11:00:00Z')
  assert.is(v.verdicts, 3)
  assert.is(v.signer, 'ci.yml')
})

const prov = (over: { dirty?: boolean; repository?: string; commit?: string; builder?: string } = {}, subject = D1) =>
  stmt(PROVENANCE_PREDICATE_TYPE, provenancePredicate({
    builderId: over.builder ?? BUILDER, invocationId: 'i', repository: over.repository ?? REPO, commit: over.commit ?? COMMIT, branch: 'main', dirty: over.dirty ?? false,
    dockerfile: { path: 'Dockerfile.optimized', sha256: 'd'.repeat(64) }, buildArgs: { SOURCE: REPO }, startedOn: '2026-11-27T10:00:00Z', finishedOn: '2026-11-27T10:05:00Z',
  }), subject)
const BUILDER = 'https://github.com/acme/doc-server/.github/workflows/ci.yml@refs/heads/main'
const pexpect = { digest: D1, repository: REPO, commit: COMMIT, allowDirty: false, builder: (id: string) => id === BUILDER }

t('provenance: this repository and commit, clean tree, built by one of the signers', () => {
  refusal(() => checkProvenance([prov({ builder: 'https://github.com/acme/doc-server/.github/workflows/ci.yml@refs/heads/evil' })], pexpect), /names builder .*@refs\/heads\/evil, which is not one of this environment's signers/)
  const v = checkProvenance([prov()], pexpect)
  assert.equal([v.repository, v.commit, v.dirty], [REPO, COMMIT, false])
  refusal(() => checkProvenance([prov({ repository: 'https://github.com/evil/fork' })], pexpect), /built from https:\/\/github.com\/evil\/fork, not https:\/\/github.com\/acme\/doc-server/)
  refusal(() => checkProvenance([prov({ commit: 'e'.repeat(40) })], pexpect), /commit eeeeeeeeeeee, not cccccccccccc/)
  refusal(() => checkProvenance([prov({ dirty: true })], pexpect), /uncommitted changes/)
  assert.is(checkProvenance([prov({ dirty: true })], { ...pexpect, allowDirty: true }).dirty, true)
  refusal(() => checkProvenance([prov({}, D2)], pexpect), /copied from another image/)
  refusal(() => checkProvenance([stmt(PROVENANCE_PREDICATE_TYPE, { buildDefinition: { buildType: 'https://example.com/other' } })], pexpect), /not of this pipeline's build type/)
})

t('parseEnvelopes: DSSE envelopes as cosign prints them, digest of the signed payload', () => {
  const payload = Buffer.from(JSON.stringify({ predicateType: SCAN_PREDICATE_TYPE, subject: [] }))
  const [s] = parseEnvelopes([JSON.stringify({ payloadType: 'application/vnd.in-toto+json', payload: payload.toString('base64'), signatures: [] })])
  assert.is(s!.statement.predicateType, SCAN_PREDICATE_TYPE)
  assert.match(s!.digest, /^sha256:[0-9a-f]{64}$/)
  assert.throws(() => parseEnvelopes(['{"payload": "bm90IGpzb24="}']), /not an in-toto statement/)
})

t('plain http only for loopback registries', () => {
  assert.equal(registryFlags('127.0.0.1:5000/local/x@sha256:1'), ['--allow-insecure-registry', '--allow-http-registry'])
  assert.equal(registryFlags('ghcr.io/acme/x@sha256:1'), [])
})

t('an image signature is cosign\'s sign/v1 statement about the digest; attestations beside it are not one', () => {
  const st = (predicateType: string, digest: string): VerifiedStatement => ({ statement: { _type: 'https://in-toto.io/Statement/v1', predicateType, subject: [{ name: 'r', digest: { sha256: digest.slice(7) } }], predicate: {} }, digest: D2 })
  assert.ok(signsDigest([st(SIGNATURE_PREDICATE_TYPE, D1)], D1))
  assert.ok(signsDigest([st(SCAN_PREDICATE_TYPE, D1), st(SIGNATURE_PREDICATE_TYPE, D1)], D1))
  assert.not.ok(signsDigest([st(SIGNATURE_PREDICATE_TYPE, D2)], D1), 'a signature of another digest')
  assert.not.ok(signsDigest([st(SCAN_PREDICATE_TYPE, D1), st(PROVENANCE_PREDICATE_TYPE, D1)], D1), 'attestations alone')
  assert.not.ok(signsDigest([], D1))
})

t('the referrers cosign downloads are read as bundles and laid out as cosign save would for --local-image', () => {
  const bundle = (n: number) => JSON.stringify({ mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json', verificationMaterial: {}, dsseEnvelope: { payload: Buffer.from(`{"n":${n}}`).toString('base64'), payloadType: 'application/vnd.in-toto+json', signatures: [] } })
  const legacy = JSON.stringify({ payloadType: 'application/vnd.in-toto+json', payload: 'e30=', signatures: [] })
  assert.equal(bundleLines(['', bundle(1), legacy, 'not json {', bundle(2), ''].join('\n')), [bundle(1), bundle(2)])
  const dir = mkdtempSync(join(tmpdir(), 'layout-'))
  writeReferrerLayout(dir, D1, [bundle(1), bundle(2)])
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] }
  assert.equal(index.manifests.map((m) => [m.digest, m.annotations.kind]), [[D1, 'dev.cosignproject.cosign/image']])
  assert.ok(existsSync(join(dir, 'oci-layout')))
  const blobs = readdirSync(join(dir, 'blobs', 'sha256'))
  for (const name of blobs) assert.is(createHash('sha256').update(readFileSync(join(dir, 'blobs', 'sha256', name), 'utf8')).digest('hex'), name, 'every blob is named by its sha256')
  const manifests = blobs.map((b) => JSON.parse(readFileSync(join(dir, 'blobs', 'sha256', b), 'utf8')) as { subject?: { digest: string }; layers?: { mediaType: string; digest: string }[] }).filter((m) => m.subject)
  assert.is(manifests.length, 2)
  for (const m of manifests) {
    assert.is(m.subject!.digest, D1)
    assert.match(m.layers![0]!.mediaType, /^application\/vnd\.dev\.sigstore\.bundle/)
  }
  const layers = manifests.map((m) => readFileSync(join(dir, 'blobs', 'sha256', m.layers![0]!.digest.slice(7)), 'utf8')).sort()
  assert.equal(layers, [bundle(1), bundle(2)].sort())
})

t('already attested: a scan result or SBOM only when identical, provenance when the build definition and builder are', () => {
  const pfacts = (over: Partial<ProvenanceFacts> = {}): ProvenanceFacts => ({
    builderId: 'b', invocationId: 'i', repository: REPO, commit: COMMIT, branch: 'main', dirty: false,
    dockerfile: { path: 'Dockerfile.optimized', sha256: 'd'.repeat(64) }, buildArgs: { SOURCE: REPO }, startedOn: '2026-11-27T10:00:00Z', finishedOn: '2026-11-27T10:05:00Z', ...over,
  })
  const existing = [scan(), stmt(PROVENANCE_PREDICATE_TYPE, provenancePredicate(pfacts())), stmt(SBOM_PREDICATE_TYPE, { bomFormat: 'CycloneDX', serialNumber: 'urn:uuid:1', components: [] })]
  // The same result with every key in another order (cosign re-serialises the predicate): already there.
  const reversed = (v: unknown): unknown => (Array.isArray(v) ? v.map(reversed) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reversed(x)])) : v)
  assert.ok(alreadyAttested(existing, SCAN_PREDICATE_TYPE, reversed(scanPredicate(facts()))))
  // A newer scan, even with the same verdict, is a new verdict; so is a failing one.
  assert.not.ok(alreadyAttested(existing, SCAN_PREDICATE_TYPE, scanPredicate(facts({ scannedAt: '2026-11-27T11:30:00Z' }))))
  assert.not.ok(alreadyAttested(existing, SCAN_PREDICATE_TYPE, scanPredicate(facts({ decision: decision({ decision: 'fail', reason: '1 CRITICAL' }) }))))
  // A rebuild of the same definition: only the run's id and times differ.
  assert.ok(alreadyAttested(existing, PROVENANCE_PREDICATE_TYPE, provenancePredicate(pfacts({ invocationId: 'another-run', startedOn: '2026-11-28T00:00:00Z', finishedOn: '2026-11-28T00:01:00Z' }))))
  assert.not.ok(alreadyAttested(existing, PROVENANCE_PREDICATE_TYPE, provenancePredicate(pfacts({ dirty: true }))), 'a dirty build is another statement')
  assert.not.ok(alreadyAttested(existing, PROVENANCE_PREDICATE_TYPE, provenancePredicate(pfacts({ commit: 'd'.repeat(40) }))))
  assert.not.ok(alreadyAttested(existing, PROVENANCE_PREDICATE_TYPE, provenancePredicate(pfacts({ builderId: 'https://github.com/acme/doc-server/.github/workflows/ci.yml@refs/heads/main' }))))
  assert.ok(alreadyAttested(existing, SBOM_PREDICATE_TYPE, { components: [], serialNumber: 'urn:uuid:1', bomFormat: 'CycloneDX' }))
  assert.not.ok(alreadyAttested(existing, SBOM_PREDICATE_TYPE, { bomFormat: 'CycloneDX', serialNumber: 'urn:uuid:2', components: [] }))
  // Another type with the same predicate does not count.
  assert.not.ok(alreadyAttested([stmt(SBOM_PREDICATE_TYPE, scanPredicate(facts()))], SCAN_PREDICATE_TYPE, scanPredicate(facts())))
  assert.is(canonicalJson({ b: [1, { d: null, c: 'x' }], a: undefined }), '{"b":[1,{"c":"x","d":null}]}')
})

t('SCAN_MAX_AGE: durations, one-line refusal', () => {
  assert.is(loadConfig({}, {}).scanMaxAgeSecs, 86_400)
  assert.is(loadConfig({ SCAN_MAX_AGE: '90m' }, {}).scanMaxAgeSecs, 5400)
  assert.is(loadConfig({ SCAN_MAX_AGE: '7d' }, {}).scanMaxAgeSecs, 604_800)
  for (const bad of ['24', '0h', '-1h', '1w', '1.5h', '31d', `1${'0'.repeat(320)}d`]) assert.throws(() => loadConfig({ SCAN_MAX_AGE: bad }, {}), /SCAN_MAX_AGE=.* is not valid: expected a duration above 0 and at most 30d/, bad.slice(0, 12))
  assert.is(loadConfig({ SCAN_MAX_AGE: '30d' }, {}).scanMaxAgeSecs, 30 * 86_400)
  for (const bad of ['366', `1${'0'.repeat(320)}`]) assert.throws(() => loadConfig({ SCAN_IGNORE_MAX_DAYS: bad }, {}), /SCAN_IGNORE_MAX_DAYS=.* is not valid/)
})

t.run()
