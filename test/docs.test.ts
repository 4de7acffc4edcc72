import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { repoRoot } from '../lib/core/paths.ts'
import { anchorsOf, checkLinks, checkRepoPaths, describeProblems, githubSlug, repoPathsOf } from './helpers/markdown-links.ts'

const t = suite('docs')
const pages = () => readdirSync(join(repoRoot, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)

t('every relative link and anchor in the README and docs/ resolves', () => {
  const files = ['README.md', ...pages()]
  assert.ok(files.length > 1, 'docs/ has pages')
  const problems = checkLinks(repoRoot, files)
  assert.ok(problems.length === 0, `broken links:\n${describeProblems(problems)}`)
})

t('every repository path the README and docs/ name in code exists', () => {
  const files = ['README.md', ...pages()]
  const named = files.flatMap((f) => repoPathsOf(readFileSync(join(repoRoot, f), 'utf8')))
  assert.ok(named.some((p) => p.path === 'lib/core/config.ts'), 'paths in code spans are found')
  const problems = checkRepoPaths(repoRoot, files)
  assert.ok(problems.length === 0, `paths that do not exist (moved? update the page):\n${describeProblems(problems)}`)
})

t('every page in docs/ is linked from the README', () => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
  const orphans = pages().filter((p) => !readme.includes(`](${p})`) && !readme.includes(`](${p}#`))
  assert.ok(orphans.length === 0, `not linked from the README: ${orphans.join(', ')}`)
})

t('the README stays short: details belong in docs/', () => {
  const lines = readFileSync(join(repoRoot, 'README.md'), 'utf8').trimEnd().split('\n').length
  assert.ok(lines <= 250, `README.md has ${lines} lines; move detail to a page in docs/`)
})

t('anchors follow GitHub\'s slugs', () => {
  assert.is(githubSlug('What the real node proves, and what it cannot'), 'what-the-real-node-proves-and-what-it-cannot')
  assert.is(githubSlug('lto = "off"'), 'lto--off')
  assert.is(githubSlug('reports/build.json'), 'reportsbuildjson')
  assert.is(githubSlug('DEPLOY_ENV and Ünïcode'), 'deploy_env-and-ünïcode')
  const anchors = anchorsOf('# Title\n\n## `lto = "off"`\n\n## Repeat\n\n## Repeat\n\n```md\n## Not a heading\n```\n\n#hashtag\n')
  assert.equal([...anchors].sort(), ['lto--off', 'repeat', 'repeat-1', 'title'])
})

t('a missing file or anchor, a link out of the repository and a missing path in code are reported; links in code are not', () => {
  const root = mkdtempSync(join(tmpdir(), 'docs-links-'))
  try {
    mkdirSync(join(root, 'docs'))
    writeFileSync(join(root, 'docs', 'b.md'), '# B\n\n## Real heading\n')
    writeFileSync(join(root, 'code.ts'), 'export {}\n')
    writeFileSync(join(root, 'README.md'), [
      '# Top',
      '[fine](docs/b.md#real-heading), [fine too](#top), [external](https://example.com/missing.md), [a file](code.ts)',
      '[missing file](docs/nope.md)',
      '[missing anchor](docs/b.md#no-such-heading)',
      '[anchor here](#nowhere)',
      '[outside](../elsewhere.md)',
      '[anchor into code](code.ts#L1)',
      'Not links: `[x](missing-in-span.md)`',
      '```md',
      '[y](missing-in-fence.md)',
      '```',
      '[ref]: docs/also-missing.md',
      'Named in code: `docs/b.md`, `lib/gone.ts`, `lib/<placeholder>.ts`, `npx tsx lib/gone.ts`',
      '',
    ].join('\n'))
    const found = checkLinks(root, ['README.md']).map((p) => `${p.line} ${p.target}: ${p.problem}`)
    assert.equal(found, [
      '3 docs/nope.md: docs/nope.md does not exist',
      '4 docs/b.md#no-such-heading: docs/b.md has no heading whose anchor is #no-such-heading',
      '5 #nowhere: README.md has no heading whose anchor is #nowhere',
      '6 ../elsewhere.md: points outside the repository',
      '7 code.ts#L1: #L1 points into code.ts, which is not a Markdown file',
      '12 docs/also-missing.md: docs/also-missing.md does not exist',
    ])
    assert.equal(checkRepoPaths(root, ['README.md']).map((p) => `${p.line} ${p.problem}`), ['13 lib/gone.ts does not exist'])
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
})

t.run()
