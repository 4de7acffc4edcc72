import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PROVENANCE_PREDICATE_TYPE, provenancePredicate, type VerifiedStatement } from '../lib/sign/attest.ts'
import { REBUILD_PREDICATE_TYPE, checkRebuild, rebuildInputs, rebuildPredicate, type RebuildFacts } from '../lib/sign/rebuild.ts'
import { ENVIRONMENTS_FILE, environmentFor, parseEnvironments } from '../lib/deploy/environments.ts'
import { readFileSync } from 'node:fs'
import { refusal } from './helpers/refusal.ts'

const t = suite('rebuild attestation')

const D1 = `sha256:${'a1'.repeat(32)}`
const D2 = `sha256:${'b2'.repeat(32)}`
const COMMIT = 'c'.repeat(40)
const PINNED = (name: string) => `${name}@sha256:${'d'.repeat(64)}`
const ARGS = {
  SOURCE: 'https://github.com/acme/doc-server',
  REVISION: COMMIT,
  CREATED: '2026-12-01T00:00:00Z',
  SOURCE_DATE_EPOCH: '1764547200',
  CHEF_IMAGE: PINNED('lukemathwalker/cargo-chef:0.1.78-rust-1.95.0-bookworm'),
  RUNTIME_IMAGE: PINNED('gcr.io/distroless/static-debian12:nonroot'),
}

const stmt = (predicateType: string, predicate: object, subject = D1): VerifiedStatement => ({
  statement: {
    _type: 'https://in-toto.io/Statement/v1',
    predicateType,
    subject: [{ name: 'img', digest: { sha256: subject.slice(7) } }],
    predicate: predicate as Record<string, unknown>,
  },
  digest: `sha256:${'f'.repeat(64)}`,
})
const facts = (over: Partial<RebuildFacts> = {}): RebuildFacts => ({
  repository: '127.0.0.1:5000/local/agent-docs',
  digest: D1,
  commit: COMMIT,
  rebuiltDigest: D1,
  builder: 'BuildKit v0.34.2',
  dockerfile: { path: 'Dockerfile.optimized', sha256: 'e'.repeat(64) },
  buildArgs: ARGS,
  seconds: 61.23,
  rebuiltAt: '2026-12-02T03:00:00Z',
  ...over,
})
const rebuilt = (over: Partial<RebuildFacts> = {}, subject = D1) => stmt(REBUILD_PREDICATE_TYPE, rebuildPredicate(facts(over)), subject)
const provenance = (buildArgs: Record<string, string> = ARGS, dirty = false) =>
  stmt(
    PROVENANCE_PREDICATE_TYPE,
    provenancePredicate({
      builderId: 'b',
      repository: ARGS.SOURCE,
      commit: COMMIT,
      branch: 'main',
      dirty,
      dockerfile: { path: 'Dockerfile.optimized', sha256: 'e'.repeat(64) },
      buildArgs,
      startedOn: '2026-12-02T02:00:00Z',
      finishedOn: '2026-12-02T02:05:00Z',
      invocationId: 'i',
    }),
  )

t("a matching rebuild of the provenance's commit passes; the newest one counts", () => {
  const v = checkRebuild([rebuilt({ rebuiltAt: '2026-12-01T00:00:00Z', builder: 'old' }), rebuilt()], { digest: D1, commit: COMMIT })
  assert.is(v.builder, 'BuildKit v0.34.2')
  assert.is(v.rebuiltAt, '2026-12-02T03:00:00Z')
  assert.equal(rebuildPredicate(facts()).rebuilt, { digest: D1, builder: 'BuildKit v0.34.2', cache: 'none', seconds: 61.2 })
})

t('no rebuild, another commit, another image or a copied attestation is refused in one line', () => {
  refusal(
    () => checkRebuild([], { digest: D1, commit: COMMIT }),
    /^deploy: refused: sha256:a1a1a1a1a1a1… has no rebuild attestation \(https:\/\/doc-server\.dev\/attestations\/rebuild\/v1\)$/,
  )
  refusal(
    () => checkRebuild([rebuilt({ commit: 'f'.repeat(40) })], { digest: D1, commit: COMMIT }),
    /was of commit ffffffffffff, not cccccccccccc as its provenance says$/,
  )
  refusal(
    () => checkRebuild([rebuilt({ rebuiltDigest: D2 })], { digest: D1, commit: COMMIT }),
    /the rebuild of sha256:a1a1a1a1a1a1… gave sha256:b2b2b2b2b2b2…: it does not reproduce$/,
  )
  refusal(
    () => checkRebuild([rebuilt({ digest: D2, rebuiltDigest: D2 })], { digest: D1, commit: COMMIT }),
    /the rebuild attestation names image sha256:b2b2b2b2b2b2…, not sha256:a1a1a1a1a1a1…$/,
  )
  refusal(() => checkRebuild([rebuilt({}, D2)], { digest: D1, commit: COMMIT }), /about sha256:b2b2b2b2b2b2…: copied from another image$/)
})

t('the provenance gives the rebuild its commit, Dockerfile and build arguments; unpinned bases or no epoch cannot be rebuilt', () => {
  const inputs = rebuildInputs([provenance()], D1)
  assert.is(inputs.commit, COMMIT)
  assert.equal(inputs.dockerfile, { path: 'Dockerfile.optimized', sha256: 'e'.repeat(64) })
  assert.equal(inputs.buildArgs, ARGS)
  assert.is(rebuildInputs([provenance(ARGS, true)], D1).dirty, true)
  assert.throws(
    () => rebuildInputs([provenance({ ...ARGS, CHEF_IMAGE: 'lukemathwalker/cargo-chef:0.1.78-rust-1.95.0-bookworm' })], D1),
    /^rebuild: the provenance of sha256:a1a1a1a1a1a1… does not pin CHEF_IMAGE by digest \(lukemathwalker\/cargo-chef:0\.1\.78-rust-1\.95\.0-bookworm\); it cannot be rebuilt from it$/,
  )
  const { SOURCE_DATE_EPOCH: _, ...noEpoch } = ARGS
  assert.throws(() => rebuildInputs([provenance(noEpoch)], D1), /has no SOURCE_DATE_EPOCH build argument/)
})

t('environments.yaml declares per environment whether a deploy needs the rebuild; prod does, the local cluster never', () => {
  const file = join(mkdtempSync(join(tmpdir(), 'envs-')), 'environments.yaml')
  writeFileSync(file, 'dev:\n  contexts: [dev-eu]\nprod:\n  contexts: [prod-eu]\n  rebuild: required\n')
  assert.is(environmentFor('prod', 'prod-eu', file).settings.rebuild, 'required')
  assert.is(environmentFor('dev', 'dev-eu', file).settings.rebuild, 'optional', 'optional by default')
  assert.is(environmentFor('prod', undefined, file).settings.rebuild, 'optional', 'the local cluster')
  assert.is(parseEnvironments(readFileSync(ENVIRONMENTS_FILE, 'utf8'), 'environments.yaml').prod!.rebuild, 'required', 'the committed prod')
  assert.throws(() => parseEnvironments('prod:\n  contexts: []\n  rebuild: always\n', 'e.yaml'), /^deploy: e\.yaml: prod\.rebuild: /)
})

t.run()
