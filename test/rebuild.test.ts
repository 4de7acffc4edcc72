import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { imageDifferences, jsonDifferences, layerSteps, readOciTarball, type ImageParts } from '../lib/build/rebuild.ts'
import { parseImageName } from '../lib/build/registry.ts'
import { run } from '../lib/core/run.ts'

const t = suite('rebuild')
const d = (c: string) => `sha256:${c.repeat(64)}`

/** The pushed image's shape: two base layers, then the runtime stage's three COPY layers; ENV, USER, LABEL are empty layers. */
function image(digest: string, layers: string[], over: Record<string, unknown> = {}): ImageParts {
  return {
    digest,
    manifest: {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { digest: d(String(over.configDigest ?? 'c')), size: 1 },
      layers: layers.map((l) => ({ digest: d(l), size: 1 })),
    },
    config: {
      created: String(over.created ?? '2026-12-01T00:00:00Z'),
      config: { Labels: { 'org.opencontainers.image.revision': String(over.revision ?? 'abc') } },
      history: [
        { created_by: 'base 1' },
        { created_by: 'base 2' },
        { created_by: 'COPY /out/docs /usr/local/share/doc-server/docs # buildkit' },
        { created_by: 'COPY /out/doc-server.dep-v0 /usr/local/share/doc-server/doc-server.dep-v0 # buildkit' },
        { created_by: 'ENV PORT=8080', empty_layer: true },
        { created_by: 'COPY /out/doc-server /usr/local/bin/doc-server # buildkit' },
        { created_by: 'USER 65532:65532', empty_layer: true },
      ],
      rootfs: { diff_ids: layers.map(d) },
    },
  }
}

t('a mismatch names each differing layer by position and the step that made it', () => {
  const pushed = image(d('1'), ['a', 'b', 'c', 'd', 'e'])
  const rebuilt = image(d('2'), ['a', 'b', 'c', 'd', 'f'])
  assert.equal(imageDifferences(pushed, rebuilt), [
    `layer 5 of 5 (COPY /out/doc-server /usr/local/bin/doc-server) differs: pushed ${d('e').slice(0, 19)}…, rebuilt ${d('f').slice(0, 19)}…`,
  ])
  assert.equal(imageDifferences(pushed, { ...pushed }), [], 'the same digest: nothing differs')
  assert.equal(layerSteps(pushed.config).slice(2), [
    'COPY /out/docs /usr/local/share/doc-server/docs',
    'COPY /out/doc-server.dep-v0 /usr/local/share/doc-server/doc-server.dep-v0',
    'COPY /out/doc-server /usr/local/bin/doc-server',
  ])
})

t('a config-only difference names the fields; a missing layer is counted', () => {
  const pushed = image(d('1'), ['a', 'b', 'c'])
  const rebuilt = image(d('2'), ['a', 'b', 'c'], { configDigest: 'e', created: '2026-12-02T00:00:00Z', revision: 'def' })
  assert.equal(imageDifferences(pushed, rebuilt), ['the image config differs in config.Labels.org.opencontainers.image.revision, created'])
  const fewer = imageDifferences(pushed, image(d('3'), ['a', 'b']))
  assert.is(fewer[0], 'the pushed image has 3 layers, the rebuild 2')
  assert.match(
    fewer[1]!,
    /^layer 3 of 3 \(COPY \/out\/docs \/usr\/local\/share\/doc-server\/docs\) differs: pushed sha256:c{12}…, rebuilt none$/,
  )
  assert.equal(jsonDifferences({ a: 1, b: { c: [1] } }, { a: 1, b: { c: [2] } }), ['b.c'])
})

t('an OCI layout tarball is read as buildctl writes it: index.json, then the manifest and config blobs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'oci-'))
  try {
    const blobs = join(dir, 'blobs', 'sha256')
    mkdirSync(blobs, { recursive: true })
    const put = (o: unknown) => {
      const text = JSON.stringify(o)
      const h = createHash('sha256').update(text).digest('hex')
      writeFileSync(join(blobs, h), text)
      return { digest: `sha256:${h}`, size: text.length }
    }
    const config = put({ created: '2026-12-01T00:00:00Z', history: [] })
    const manifest = put({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [] })
    writeFileSync(
      join(dir, 'index.json'),
      JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json' }] }),
    )
    writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}')
    await run(['tar', '-cf', join(dir, 'image.tar'), '-C', dir, 'index.json', 'oci-layout', 'blobs'])
    const parts = await readOciTarball(join(dir, 'image.tar'))
    assert.is(parts.digest, manifest.digest)
    assert.is(parts.manifest.config.digest, config.digest)
    assert.is(parts.config.created, '2026-12-01T00:00:00Z')
    assert.ok(readFileSync(join(dir, 'image.tar')).length > 0)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

t('image names are read as Docker reads them', () => {
  assert.equal(parseImageName('gcr.io/distroless/static-debian12:nonroot'), {
    registry: 'gcr.io',
    repository: 'distroless/static-debian12',
    tag: 'nonroot',
  })
  assert.equal(parseImageName('lukemathwalker/cargo-chef:0.1.78-rust-1.95.0-bookworm'), {
    registry: 'docker.io',
    repository: 'lukemathwalker/cargo-chef',
    tag: '0.1.78-rust-1.95.0-bookworm',
  })
  assert.equal(parseImageName('alpine'), { registry: 'docker.io', repository: 'library/alpine' })
  assert.equal(parseImageName(`127.0.0.1:5000/local/agent-docs@${d('a')}`), {
    registry: '127.0.0.1:5000',
    repository: 'local/agent-docs',
    digest: d('a'),
  })
  assert.equal(parseImageName(`x/y:1@${d('b')}`), { registry: 'docker.io', repository: 'x/y', tag: '1', digest: d('b') })
  assert.throws(() => parseImageName('x/y@sha256:short'), /^image: "x\/y@sha256:short" is not name\[:tag\]\[@sha256:<64 hex>\]$/)
})

t.run()
