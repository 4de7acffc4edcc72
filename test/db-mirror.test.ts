import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../lib/core/config.ts'
import { ADVISORIES_ANNOTATION, TRIVY_DB_MEDIA_TYPES, countAdvisories, dbManifest, dbTarball, defaultDbRepository, isLoopbackRegistry, parseOciRef } from '../lib/scan/db-mirror.ts'
import { describeDb } from '../lib/scan/db-source.ts'
import { dbLine } from '../lib/scan/scan-summary.ts'
import { ADVISORIES_DIR } from '../lib/scan/trivy.ts'

const t = suite('db-mirror')

t('the artifact is what Trivy downloads: one db.tar.gz layer with its media types', () => {
  const layer = new TextEncoder().encode('layer')
  const m = dbManifest(layer, new TextEncoder().encode('{}'), { advisories: 1, updatedAt: '2026-11-27T03:00:00Z' })
  assert.is(m.mediaType, 'application/vnd.oci.image.manifest.v1+json')
  assert.is(m.config.mediaType, 'application/vnd.aquasec.trivy.config.v1+json')
  assert.is(m.layers.length, 1)
  assert.is(m.layers[0]!.mediaType, 'application/vnd.aquasec.trivy.db.layer.v1.tar+gzip')
  assert.equal(m.layers[0]!.annotations, { 'org.opencontainers.image.title': 'db.tar.gz' })
  assert.match(m.layers[0]!.digest, /^sha256:[a-f0-9]{64}$/)
  assert.is(m.layers[0]!.size, 5)
  assert.equal(m.annotations, { [ADVISORIES_ANNOTATION]: '1', 'org.opencontainers.image.created': '2026-11-27T03:00:00Z' })
  assert.is(TRIVY_DB_MEDIA_TYPES.layer, m.layers[0]!.mediaType)
})

t('db.tar.gz holds trivy.db and metadata.json at its root, the same bytes for the same DB', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'db-'))
  writeFileSync(join(dir, 'trivy.db'), 'bolt')
  writeFileSync(join(dir, 'metadata.json'), '{"Version":2}')
  writeFileSync(join(dir, 'published.json'), '{}')
  const a = await dbTarball(dir)
  const tar = gunzipSync(a).toString('latin1')
  assert.ok(tar.startsWith('trivy.db\0'), 'at the root, no ./ prefix')
  assert.match(tar.slice(512), /metadata\.json\0/)
  assert.not.match(tar, /published\.json/)
  assert.equal(await dbTarball(dir), a)
  await dbTarball(mkdtempSync(join(tmpdir(), 'db-'))).then(() => assert.unreachable('an empty DB dir was packed'), (err: Error) => assert.match(err.message, /trivy\.db is missing; nothing to publish/))
})

t('repositories: the local default, parsing, and only this machine is published to', () => {
  assert.is(defaultDbRepository('127.0.0.1:5000', 'local'), '127.0.0.1:5000/local/trivy-db:2')
  assert.equal(parseOciRef('mirror.example.com:8443/aquasec/trivy-db:2'), { registry: 'mirror.example.com:8443', name: 'aquasec/trivy-db', tag: '2' })
  assert.throws(() => parseOciRef('trivy-db'), /is not registry\/name:tag/)
  assert.ok(isLoopbackRegistry('127.0.0.1:5000'))
  assert.ok(isLoopbackRegistry('localhost:5000'))
  assert.not.ok(isLoopbackRegistry('ghcr.io'))
  assert.not.ok(isLoopbackRegistry('127.0.0.1.example.com'))
})

t('the report says how many advisories the DB holds and when it was built', () => {
  assert.is(countAdvisories(ADVISORIES_DIR), 1, 'advisories/ holds one advisory')
  const local = { source: 'local' as const, repository: '127.0.0.1:5000/local/trivy-db:2', digest: null, advisories: 1, updatedAt: '2026-11-27T03:00:00Z' }
  assert.is(describeDb(local), '1 advisory, built 2026-11-27T03:00:00Z')
  assert.is(dbLine(local), 'vulnerability DB: local via 127.0.0.1:5000/local/trivy-db:2, 1 advisory, built 2026-11-27T03:00:00Z')
  assert.is(describeDb({ ...local, source: 'remote', repository: null, advisories: null }), 'advisories not counted (the mirror does not say), built 2026-11-27T03:00:00Z')
})

t('TRIVY_DB_REPOSITORY and SCAN_IGNORE_MAX_DAYS are validated with one line', () => {
  assert.is(loadConfig({}, {}).trivyDbRepository, undefined)
  assert.is(loadConfig({ TRIVY_DB_REPOSITORY: 'mirror.example.com/aquasec/trivy-db:2' }, {}).trivyDbRepository, 'mirror.example.com/aquasec/trivy-db:2')
  assert.throws(() => loadConfig({ TRIVY_DB_REPOSITORY: 'trivy-db' }, {}), /^config: TRIVY_DB_REPOSITORY="trivy-db" is not valid: expected a registry repository with a tag/)
  assert.throws(() => loadConfig({ TRIVY_DB_REPOSITORY: 'https://mirror/trivy-db:2' }, {}), /TRIVY_DB_REPOSITORY/)
  assert.is(loadConfig({}, {}).scanIgnoreMaxDays, undefined, 'the committed policy decides')
  assert.is(loadConfig({ SCAN_IGNORE_MAX_DAYS: '30' }, {}).scanIgnoreMaxDays, 30)
  assert.throws(() => loadConfig({ SCAN_IGNORE_MAX_DAYS: '0' }, {}), /SCAN_IGNORE_MAX_DAYS="0" is not valid: expected a whole number above 0/)
})

t.run()
