import { readFileSync } from 'node:fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { sbomCounts } from '../bench/lib/runtime-compare.ts'

const t = suite('runtime-compare')

// The CycloneDX SBOM scripts/scan_image.sh (Trivy v0.74.0) wrote for the static image.
const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8')

t('the static image\'s SBOM lists the five distroless static packages and the crates, no C library', () => {
  const c = sbomCounts(fixture('sbom/static-image.cdx.json'), 'static-image.cdx.json')
  assert.equal(c.osPackages, ['base-files', 'ca-certificates', 'media-types', 'netbase', 'tzdata'])
  for (const crate of ['tokio', 'axum', 'doc-server']) assert.ok(c.crates.includes(crate), `lists ${crate}`)
  assert.not.ok(c.osPackages.includes('libc6'))
})

t('an SBOM that is not JSON is one clear line', () => {
  assert.throws(() => sbomCounts('<html>', 'x.cdx.json'), /^bench: x\.cdx\.json is not JSON$/)
})

t.run()
