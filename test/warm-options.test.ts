import { cpSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { WARM_OPTIONS, applyOption, summarizeRounds, warmOptionRows } from '../bench/lib/warm-options.ts'
import type { ColdWarm } from '../lib/build/cold-warm.ts'
import { repoRoot } from '../lib/core/paths.ts'

const t = suite('warm-options')

const round = (warmSeconds: number, packedBytes: number): ColdWarm => ({
  coldSeconds: 30,
  warmSeconds,
  cookCacheHit: true,
  warmCompiled: ['doc-server'],
  imageBytes: packedBytes + 2_000_000,
  binaryBytes: 2_000_000,
  packedBytes,
  warmBreakdown: { 'compile+link': warmSeconds - 0.5, 'strip+sections': 0, upx: 0.4, export: 0, other: 0.1 },
})

t('the first option is the workspace as committed; every other changes one thing', () => {
  assert.match(WARM_OPTIONS[0]!.name, /^as committed/)
  assert.is(WARM_OPTIONS[0]!.cargo, undefined)
  assert.is(WARM_OPTIONS[0]!.buildArgs, undefined)
  for (const o of WARM_OPTIONS.slice(1)) {
    const changes = Object.values(o.cargo ?? {}).flatMap((table) => Object.keys(table)).length + Object.keys(o.buildArgs ?? {}).length
    assert.is(changes, 1, o.name)
  }
})

t('an option\'s settings land in the right table of the real Cargo.toml', () => {
  const copy = mkdtempSync(join(tmpdir(), 'warm-option-'))
  cpSync(join(repoRoot, 'Cargo.toml'), join(copy, 'Cargo.toml'))
  applyOption(copy, WARM_OPTIONS.find((o) => o.name === 'doc-server in 4 codegen units')!)
  const toml = readFileSync(join(copy, 'Cargo.toml'), 'utf8')
  const table = toml.split(/^\[/m).find((section) => section.startsWith('profile.release.package.doc-server]'))
  assert.ok(table, 'the crate\'s profile table is there')
  assert.match(table!, /^codegen-units = 4$/m)
  assert.is((toml.match(/codegen-units/g) ?? []).length, (readFileSync(join(repoRoot, 'Cargo.toml'), 'utf8').match(/codegen-units/g) ?? []).length, 'set in place, not added twice')
})

t('an option\'s figure is the median of its rounds, with the sizes of the round closest to it', () => {
  const r = summarizeRounds('x', [round(3.0, 900), round(9.0, 901), round(3.2, 902)])
  assert.is(r.warmSeconds, 3.2)
  assert.equal(r.rounds, [3.0, 9.0, 3.2])
  assert.is(r.packedBytes, 902, 'the sizes come from the median round, not the slow outlier')
})

t('the table shows each option against the first', () => {
  const base = summarizeRounds('as committed', [round(3.0, 1000)])
  const slower = summarizeRounds('UPX -9', [round(3.5, 900)])
  const rows = warmOptionRows([base, slower], (b) => (b === null ? 'n/a' : `${b} B`))
  assert.is(rows[0]![1], '3.00 s')
  assert.is(rows[1]![1], '3.50 s (+0.50)')
  assert.is(rows[1]![5], '900 B (-100 B)')
})

t.run()
