/**
 * `.github/dependabot.yml`, read as data: every ecosystem it names has its
 * manifest where it says, each is grouped (a few pull requests a week), and the
 * base-image list Dependabot reads matches the images the build uses.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parse } from 'yaml'
import { repoRoot } from '../lib/core/paths.ts'
import { BASE_IMAGES } from '../lib/tools/versions.ts'

interface Update {
  'package-ecosystem': string
  directory: string
  schedule: { interval: string }
  groups?: Record<string, { patterns?: string[]; 'update-types'?: string[] }>
  ignore?: { 'dependency-name': string; 'update-types'?: string[] }[]
}
const config = parse(readFileSync(join(repoRoot, '.github', 'dependabot.yml'), 'utf8')) as { version: number; updates: Update[] }
const dirOf = (u: Update) => join(repoRoot, u.directory.replace(/^\//, ''))

/** The files an ecosystem reads in its directory: without them Dependabot finds nothing and says so only in its logs. */
const MANIFESTS: Record<string, (dir: string) => string[]> = {
  'github-actions': (dir) =>
    existsSync(join(dir, '.github', 'workflows')) ? readdirSync(join(dir, '.github', 'workflows')).filter((f) => /\.ya?ml$/.test(f)) : [],
  npm: (dir) => ['package.json', 'package-lock.json'].filter((f) => existsSync(join(dir, f))),
  cargo: (dir) => ['Cargo.toml', 'Cargo.lock'].filter((f) => existsSync(join(dir, f))),
  docker: (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => /dockerfile/i.test(f)) : []),
}

const t = suite('dependabot')

t('watches GitHub Actions, npm, Cargo and the base images', () => {
  assert.is(config.version, 2)
  assert.equal(config.updates.map((u) => u['package-ecosystem']).sort(), ['cargo', 'docker', 'github-actions', 'npm'])
})

t('every directory exists and holds what its ecosystem reads', () => {
  for (const u of config.updates) {
    assert.ok(existsSync(dirOf(u)), `${u['package-ecosystem']}: ${u.directory} does not exist`)
    const found = MANIFESTS[u['package-ecosystem']]!(dirOf(u))
    const need = { npm: 2, cargo: 2 }[u['package-ecosystem']] ?? 1
    assert.ok(found.length >= need, `${u['package-ecosystem']}: ${u.directory} holds ${found.join(', ') || 'nothing'} it can read`)
  }
})

t('grouped and weekly: a few pull requests a week, not one per package', () => {
  for (const u of config.updates) {
    assert.is(u.schedule.interval, 'weekly', u['package-ecosystem'])
    assert.ok(u.groups && Object.keys(u.groups).length > 0, `${u['package-ecosystem']} is grouped`)
  }
})

t('npm: no major that drops the Node versions package.json supports', () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { engines: { node: string } }
  const npm = config.updates.find((u) => u['package-ecosystem'] === 'npm')!
  if (/^>=\s*20\b/.test(pkg.engines.node)) {
    for (const name of ['listr2', 'chalk']) {
      const rule = npm.ignore?.find((i) => i['dependency-name'] === name)
      assert.equal(rule?.['update-types'], ['version-update:semver-major'], `${name}'s next major needs Node 22`)
    }
  }
})

t('the base images listed for Dependabot are the ones the build uses', () => {
  const docker = config.updates.find((u) => u['package-ecosystem'] === 'docker')!
  const text = readFileSync(join(dirOf(docker), 'Dockerfile'), 'utf8')
  const froms = [...text.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]!)
  assert.equal(
    froms.sort(),
    Object.values(BASE_IMAGES).sort(),
    `${docker.directory}/Dockerfile and BASE_IMAGES in lib/tools/versions.ts differ: update versions.ts and the ARG defaults of Dockerfile.optimized and bench/ together`,
  )
})

t.run()
