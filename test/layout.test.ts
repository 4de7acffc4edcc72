/**
 * The layout's import rules, read from the sources: the stage libraries run
 * against real services named by configuration, so they never import the
 * sandbox that stands in for those services on one machine; tasks import lib,
 * never each other; nothing the stages run imports benches or tests.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { repoRoot } from '../lib/core/paths.ts'

const t = suite('layout')

function sources(dir: string): string[] {
  return readdirSync(join(repoRoot, dir), { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name)
    if (e.isDirectory()) return e.name === 'fixtures' || e.name === 'node_modules' ? [] : sources(path)
    return e.name.endsWith('.ts') ? [path] : []
  })
}

/** Every relative module a file imports statically (`import … from`, `export … from`), as repository paths. */
export function importsOf(file: string, text: string): string[] {
  const specs = [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?\bfrom\s+['"](\.{1,2}\/[^'"]+)['"]/gm)].map((m) => m[1]!)
  return specs.map((s) => relative(repoRoot, resolve(repoRoot, dirname(file), s)))
}

const RULES: { from: RegExp; never: RegExp; why: string }[] = [
  { from: /^lib\/(build|scan|sign|deploy)\//, never: /^lib\/sandbox\//, why: 'a stage library runs against real services; only tasks start the sandbox' },
  { from: /^lib\//, never: /^(tasks|bench|test)\//, why: 'lib is what tasks, benches and tests share' },
  { from: /^lib\/(core|tools)\//, never: /^lib\/(build|scan|sign|deploy|sandbox)\//, why: 'core and tools sit under every stage' },
  { from: /^tasks\//, never: /^(tasks|bench|test)\//, why: 'a task imports lib, never another task (tasks/ci.ts loads the stages it chains at run time)' },
  { from: /^bench\//, never: /^(tasks|test)\//, why: 'benches share lib, not the stages or the tests' },
]

export function violations(files: { path: string; text: string }[]): string[] {
  const out: string[] = []
  for (const { path, text } of files) {
    for (const target of importsOf(path, text)) {
      for (const rule of RULES) if (rule.from.test(path) && rule.never.test(target)) out.push(`${path} imports ${target}: ${rule.why}`)
    }
  }
  return out
}

const all = ['lib', 'tasks', 'bench'].flatMap(sources).map((path) => ({ path, text: readFileSync(join(repoRoot, path), 'utf8') }))

t('the sources follow the import rules', () => {
  assert.ok(all.length > 40, 'the sources were found')
  assert.equal(violations(all), [])
})

t('the rules catch what they forbid', () => {
  const found = violations([
    { path: 'lib/deploy/target.ts', text: "import { ensureCluster } from '../sandbox/cluster.ts'\n" },
    { path: 'tasks/measure.ts', text: "import type { BuildReport } from './build.ts'\n" },
    { path: 'lib/core/config.ts', text: "export { x } from '../deploy/kube.ts'\n" },
    { path: 'lib/scan/trivy.ts', text: "import { runOha } from '../../bench/lib/load.ts'\n" },
  ])
  assert.equal(found.map((v) => v.split(':')[0]), [
    'lib/deploy/target.ts imports lib/sandbox/cluster.ts',
    'tasks/measure.ts imports tasks/build.ts',
    'lib/core/config.ts imports lib/deploy/kube.ts',
    'lib/scan/trivy.ts imports bench/lib/load.ts',
  ])
})

t.run()
