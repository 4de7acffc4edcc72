import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { baselineFrom, checkTargets, compareBaseline, formatBytes, improvementPct, measureRows, ratio, readBaseline, requireBaseline, withTomlSettings, type Measurements } from '../lib/build/measure.ts'
import { readReport, writeReport } from '../lib/core/reports.ts'

const t = suite('measure')

const sample = (over: { bytes?: number; warm?: number; cold?: number; hit?: boolean | null } = {}): Measurements => {
  const cold = over.cold ?? 200
  const warm = over.warm ?? 20
  return {
    image: { ref: '127.0.0.1:5000/local/agent-docs:abc', digest: `sha256:${'a'.repeat(64)}`, bytes: over.bytes ?? 3_000_000, compressedBytes: 1_200_000 },
    binary: { bytesBeforeUpx: 2_500_000, bytesAfterUpx: 900_000 },
    build: { coldSeconds: cold, cold: { measured: true, commit: 'abcdef0123456789', date: '2026-11-27T03:00:00Z', why: 'no cold build recorded on this machine yet' }, warmSeconds: warm, cookCacheHit: over.hit === undefined ? true : over.hit, improvementPct: improvementPct(cold, warm), warmCompiledCrates: ['doc-server'] },
  }
}

t('improvement is the share of cold time a warm build saves', () => {
  assert.is(improvementPct(200, 20), 90)
  assert.is(improvementPct(100, 33.33), 66.7)
  assert.is(improvementPct(0, 5), 0)
})

t('bytes read as people read them', () => {
  assert.is(formatBytes(512), '512 B')
  assert.is(formatBytes(12_345), '12.3 kB')
  assert.is(formatBytes(30_000_000), '30.00 MB')
  assert.is(formatBytes(null), 'n/a')
})

t('a run within the targets has nothing to say', () => {
  assert.equal(checkTargets(sample()), [])
})

t('missed targets each get one line', () => {
  const misses = checkTargets(sample({ bytes: 6_000_000, warm: 60, hit: false }))
  assert.is(misses.length, 3)
  assert.match(misses[0]!, /image is 6\.00 MB, over the 5\.00 MB limit/)
  assert.match(misses[1]!, /cook step was rebuilt/)
  assert.match(misses[2]!, /only 70% faster than cold \(60\.0 s vs 200\.0 s\); the target is 90%/)
  assert.match(checkTargets(sample({ hit: null }))[0]!, /no cargo chef cook step/)
  for (const m of misses) assert.not.match(m, /\n/)
})

t('the baseline flags an image that grew and a warm build that slowed', () => {
  const base = baselineFrom(sample())
  assert.equal(compareBaseline(sample(), base), [])
  const regressions = compareBaseline(sample({ bytes: 3_300_000, warm: 45 }), base)
  assert.is(regressions.length, 2)
  assert.is(regressions[0], 'image grew 10.0% over the baseline: 3.00 MB -> 3.30 MB (tolerance 5%)')
  assert.is(regressions[1], 'warm build slowed 125% over the baseline: 20.0 s -> 45.0 s (tolerance 50% and 10 s)')
})

t('timing noise is not a regression', () => {
  const base = baselineFrom(sample({ warm: 4 }))
  // +100% but only 4 s: a shared machine does that.
  assert.equal(compareBaseline(sample({ warm: 8 }), base), [])
  // +3.3% image size is inside the 5% tolerance.
  assert.equal(compareBaseline(sample({ bytes: 3_100_000 }), baselineFrom(sample())), [])
})

t('a baseline round-trips through its file, and a broken one is one clear line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'baseline-'))
  const path = join(dir, 'measure-baseline.json')
  assert.is(readBaseline(path), undefined)
  writeFileSync(path, JSON.stringify(baselineFrom(sample())))
  const b = readBaseline(path)!
  assert.is(b.image.bytes, 3_000_000)
  assert.is(b.tolerance.warmPct, 50)
  writeFileSync(path, JSON.stringify({ image: { bytes: 1 }, build: { warmSeconds: 2 }, tolerance: { imagePct: 1 } }))
  assert.is(readBaseline(path)!.tolerance.imagePct, 1)
  assert.is(readBaseline(path)!.tolerance.warmSeconds, 10)
  writeFileSync(path, '{"image":')
  assert.throws(() => readBaseline(path), /is not valid JSON/)
  writeFileSync(path, JSON.stringify({ image: { bytes: 'big' }, build: {} }))
  assert.throws(() => readBaseline(path), /needs image\.bytes and build\.warmSeconds/)
})

t('a missing baseline fails the stage unless this run creates it', () => {
  const path = join(mkdtempSync(join(tmpdir(), 'baseline-')), 'measure-baseline.json')
  assert.throws(() => requireBaseline(path, false), /^measure: baseline .*measure-baseline\.json does not exist; create it with npm run ci:measure -- --update-baseline or set MEASURE_BASELINE$/)
  assert.is(requireBaseline(path, true), undefined, '--update-baseline writes it')
  writeFileSync(path, JSON.stringify(baselineFrom(sample())))
  assert.is(requireBaseline(path, false)!.image.bytes, 3_000_000)
})

t('the measure report holds the keys later runs and people read', () => {
  const dir = mkdtempSync(join(tmpdir(), 'measure-'))
  const m = sample()
  writeReport(dir, 'measure', { ...m, warmBreakdown: {}, cookMiss: null, regressions: [], missedTargets: [] })
  const raw = JSON.parse(readFileSync(join(dir, 'measure.json'), 'utf8'))
  for (const key of ['image.bytes', 'image.compressedBytes', 'binary.bytesBeforeUpx', 'binary.bytesAfterUpx', 'build.coldSeconds', 'build.warmSeconds', 'build.cookCacheHit', 'build.improvementPct']) {
    const value = key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], raw)
    assert.ok(value !== undefined, `measure.json lacks ${key}`)
  }
  assert.is(readReport(dir, 'measure').build.improvementPct, 90)
})

t('the printed rows show the baseline only when there is one', () => {
  const rows = measureRows(sample())
  assert.equal(rows[0], ['image (uncompressed)', '3.00 MB', '-'])
  const withBase = measureRows(sample(), baselineFrom(sample({ warm: 10 })))
  assert.equal(withBase.find((r) => r[0]!.startsWith('warm build')), ['warm build (code-only change)', '20.0 s', '10.0 s'])
  assert.equal(rows.find((r) => r[0]!.startsWith('cook')), ['cook step cached on warm build', 'yes', '-'])
})

t('a warm option sets only the keys it names, in the tables it names', () => {
  const toml = '[workspace]\nmembers = ["a"]\n\n[profile.release]\nopt-level = "z"\nlto = "off"\n# why\ncodegen-units = 1\nstrip = true\n\n[profile.release.package.doc-server]\ncodegen-units = 2\n\n[profile.dev]\nlto = false\n'
  const fat = withTomlSettings(toml, { 'profile.release': { lto: '"fat"' } })
  assert.is(fat, toml.replace('lto = "off"', 'lto = "fat"'), 'the comment, the other tables and [profile.dev]\'s lto are untouched')
  const one = withTomlSettings(toml, { 'profile.release.package.doc-server': { 'codegen-units': '1' } })
  assert.is(one, toml.replace('codegen-units = 2', 'codegen-units = 1'), 'the package table, not [profile.release]')
  const added = withTomlSettings('[profile.release]\nstrip = true\n', { 'profile.release': { lto: 'false' }, 'profile.release.package.doc-server': { 'codegen-units': '4' } })
  assert.is(added, '[profile.release]\nlto = false\nstrip = true\n\n[profile.release.package.doc-server]\ncodegen-units = 4\n')
})

t('ratios for the bench table', () => {
  assert.is(ratio(50, 10), '5.0×')
  assert.is(ratio(1, 0), 'n/a')
})

t.run()
