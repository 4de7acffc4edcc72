/**
 * Relative links in Markdown files, checked the way GitHub renders them: the
 * target file exists inside the repository, and a `#anchor` names a heading of
 * the target (GitHub's slugs: lower case, punctuation dropped, spaces to
 * hyphens, `-1`, `-2` … for repeats). Links in code spans and fenced blocks are
 * not links; external URLs (`https:`, `mailto:` …) are not checked.
 */
import { existsSync, readFileSync, statSync } from 'node:fs'
import { dirname, extname, isAbsolute, join, relative, resolve } from 'node:path'

export interface LinkProblem {
  /** The file holding the link, relative to the root. */
  file: string
  line: number
  target: string
  problem: string
}

/** Each line with fenced code blocks blanked and code spans masked, so neither yields links or headings. */
function proseLines(markdown: string): string[] {
  let fence: string | undefined
  return markdown.split('\n').map((line) => {
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1]
    if (fence) {
      if (marker && marker[0] === fence[0] && marker.length >= fence.length && line.trim() === marker) fence = undefined
      return ''
    }
    if (marker) {
      fence = marker
      return ''
    }
    // A code span keeps its backticks and length; its content can no longer look like a link.
    return line.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (span, ticks: string) => `${ticks}${' '.repeat(span.length - 2 * ticks.length)}${ticks}`)
  })
}

/** GitHub's anchor for a heading's text (github-slugger). */
export function githubSlug(text: string): string {
  return text.toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-')
}

/** The heading's text as rendered: inline code, links, images and emphasis reduced to their text. */
function headingText(raw: string): string {
  return raw
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]+>/g, '')
    .replace(/`+/g, '')
    .replace(/(\*{1,3})(\S(?:.*?\S)?)\1/g, '$2')
    .replace(/(^|[^\p{L}\p{N}])_{1,3}(\S(?:.*?\S)?)_{1,3}(?=[^\p{L}\p{N}]|$)/gu, '$1$2')
    .trim()
}

/** Every anchor a Markdown file offers: its ATX headings' slugs (repeats numbered) and explicit `id`/`name` attributes. */
export function anchorsOf(markdown: string): Set<string> {
  const seen = new Map<string, number>()
  const anchors = new Set<string>()
  const raw = markdown.split('\n')
  proseLines(markdown).forEach((masked, i) => {
    const heading = /^ {0,3}#{1,6}(?:\s+(.*?))?(?:\s+#+)?\s*$/.exec(masked)
    if (heading) {
      // The masked line hides code spans; the heading's text comes from the original line.
      const text = /^ {0,3}#{1,6}(?:\s+(.*?))?(?:\s+#+)?\s*$/.exec(raw[i] ?? '')?.[1] ?? ''
      const base = githubSlug(headingText(text))
      const n = seen.get(base) ?? 0
      seen.set(base, n + 1)
      anchors.add(n === 0 ? base : `${base}-${n}`)
    }
    for (const m of masked.matchAll(/<[a-z][^>]*\s(?:id|name)="([^"]+)"/gi)) anchors.add(m[1]!)
  })
  return anchors
}

/** Link targets with their line numbers: inline links and images, and reference definitions. */
export function linksOf(markdown: string): { target: string; line: number }[] {
  const out: { target: string; line: number }[] = []
  proseLines(markdown).forEach((line, i) => {
    for (const m of line.matchAll(/!?\[(?:[^[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g)) {
      out.push({ target: m[1]!.replace(/^<|>$/g, ''), line: i + 1 })
    }
    const def = /^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)/.exec(line)
    if (def) out.push({ target: def[1]!.replace(/^<|>$/g, ''), line: i + 1 })
  })
  return out
}

/** Every broken relative link or anchor in `files` (paths relative to `root`). */
export function checkLinks(root: string, files: readonly string[]): LinkProblem[] {
  const problems: LinkProblem[] = []
  const anchorCache = new Map<string, Set<string>>()
  const anchorsAt = (path: string) => {
    let a = anchorCache.get(path)
    if (!a) anchorCache.set(path, (a = anchorsOf(readFileSync(path, 'utf8'))))
    return a
  }
  for (const file of files) {
    const from = join(root, file)
    for (const { target, line } of linksOf(readFileSync(from, 'utf8'))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue
      const problem = (p: string) => problems.push({ file, line, target, problem: p })
      const hash = target.indexOf('#')
      const pathPart = decodeURIComponent(hash === -1 ? target : target.slice(0, hash))
      const anchor = hash === -1 ? undefined : decodeURIComponent(target.slice(hash + 1))
      const dest = pathPart === '' ? from : pathPart.startsWith('/') ? join(root, pathPart) : resolve(dirname(from), pathPart)
      const inRepo = relative(root, dest)
      if (inRepo.startsWith('..') || isAbsolute(inRepo)) {
        problem('points outside the repository')
        continue
      }
      if (!existsSync(dest)) {
        problem(`${inRepo} does not exist`)
        continue
      }
      if (anchor === undefined) continue
      if (statSync(dest).isDirectory() || extname(dest) !== '.md') {
        problem(`#${anchor} points into ${inRepo}, which is not a Markdown file`)
        continue
      }
      if (!anchorsAt(dest).has(anchor)) problem(`${inRepo} has no heading whose anchor is #${anchor}`)
    }
  }
  return problems
}

/** Top-level folders of the repository whose paths the docs name in code spans. */
const REPO_DIRS = ['.ci', '.github', '.husky', 'advisories', 'bench', 'charts', 'crates', 'lib', 'scripts', 'tasks', 'test']

/**
 * Repository paths named in code spans (`lib/core/config.ts`, `test/e2e/`): a
 * path that moves leaves the prose wrong without breaking a link. Spans with
 * placeholders (`values-<env>.yaml`), globs or arguments are not paths.
 */
export function repoPathsOf(markdown: string): { path: string; line: number }[] {
  const out: { path: string; line: number }[] = []
  const raw = markdown.split('\n')
  proseLines(markdown).forEach((masked, i) => {
    // A fenced line is blanked; any other line keeps its length.
    if (masked === '') return
    for (const m of (raw[i] ?? '').matchAll(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g)) {
      const text = m[2]!.trim()
      if (REPO_DIRS.includes(text.split('/')[0] ?? '') && text.includes('/') && !/[\s<>*{}|@…]/.test(text)) out.push({ path: text, line: i + 1 })
    }
  })
  return out
}

/** Every repository path named in a code span of `files` that does not exist. */
export function checkRepoPaths(root: string, files: readonly string[]): LinkProblem[] {
  return files.flatMap((file) =>
    repoPathsOf(readFileSync(join(root, file), 'utf8'))
      .filter(({ path }) => !existsSync(join(root, path)))
      .map(({ path, line }) => ({ file, line, target: path, problem: `${path} does not exist` })),
  )
}

/** One line per problem, for an assertion message. */
export function describeProblems(problems: readonly LinkProblem[]): string {
  return problems.map((p) => `${p.file}:${p.line}: (${p.target}) ${p.problem}`).join('\n')
}
