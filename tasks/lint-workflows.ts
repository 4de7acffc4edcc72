/**
 * `npm run lint:workflows`: actionlint (pinned, built once from the Go module
 * proxy) on the GitHub Actions workflows, with shellcheck checking their `run:`
 * scripts, plus the one rule actionlint lacks: every action is pinned to a full
 * commit SHA (tags move; the trivy-action tags were hijacked). GitHub cannot be
 * reached from every machine, so this is the check a workflow gets before it runs.
 * `tsx tasks/lint-workflows.ts [dir]` lints another directory.
 */
import { existsSync,readFileSync,readdirSync } from 'node:fs'
import { isAbsolute,join,relative,resolve,sep } from 'node:path'
import type { ListrTask } from 'listr2'
import { LineCounter,isScalar,parseDocument,visit } from 'yaml'
import { isMain, parseOptions, runMain, taskList } from '../lib/core/cli.ts'
import { PipelineError } from '../lib/core/errors.ts'
import { repoRoot } from '../lib/core/paths.ts'
import { run } from '../lib/core/run.ts'
import { requireTool } from '../lib/tools/which.ts'
import { VERSIONS } from '../lib/tools/versions.ts'
import { ensureActionlint } from '../lib/tools/actionlint.ts'

export const WORKFLOWS_DIR = join(repoRoot, '.github', 'workflows')

/** The workflow files of a directory, sorted; a directory without any is an error, not a pass. */
export function workflowFiles(dir: string): string[] {
  if (!existsSync(dir)) throw new PipelineError(`lint:workflows: ${dir} does not exist`)
  const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()
  if (files.length === 0) throw new PipelineError(`lint:workflows: no workflow files (*.yml, *.yaml) in ${dir}`)
  return files.map((f) => join(dir, f))
}

const SHA_PIN = /^[^@\s]+@[0-9a-f]{40}$/
const DIGEST_PIN = /^docker:\/\/[^@\s]+@sha256:[0-9a-f]{64}$/

/**
 * Every `uses:` not pinned to a full commit SHA (or a docker:// image not pinned
 * by digest), as `file:line:col: message [pinned-actions]` like actionlint's own
 * lines. A SHA must carry its release as a comment (`# v5.0.0`), so a reviewer
 * and Dependabot can tell what it is. Local actions (`./…`) are this repository's
 * own code and need no pin.
 */
export function unpinnedActions(file: string, text: string): string[] {
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines })
  const problems: string[] = []
  visit(doc, {
    Pair(_key, pair) {
      if (!isScalar(pair.key) || pair.key.value !== 'uses' || !isScalar(pair.value)) return
      const uses = String(pair.value.value)
      if (uses.startsWith('./')) return
      const { line, col } = lines.linePos(pair.value.range?.[0] ?? 0)
      const at = `${file}:${line}:${col}`
      if (uses.startsWith('docker://')) {
        if (!DIGEST_PIN.test(uses)) problems.push(`${at}: image "${uses}" must be pinned by digest (docker://name@sha256:…) [pinned-actions]`)
      } else if (!SHA_PIN.test(uses)) {
        problems.push(`${at}: action "${uses}" must be pinned to a full 40-character commit SHA, not a tag or branch [pinned-actions]`)
      } else if (!/^\s*v?\d/.test(pair.value.comment ?? '')) {
        problems.push(`${at}: action "${uses}" is pinned without its release as a comment (# vX.Y.Z) [pinned-actions]`)
      }
    },
  })
  return problems
}

interface Ctx {
  files: string[]
  actionlint: string
  problems: string[]
  output: string
}

/** actionlint's problem lines start with `file:line:col:`; the lines under them show the source. */
const PROBLEM_LINE = /^\S[^:\n]*:\d+:\d+: /

export function lintWorkflowsTasks(dir = WORKFLOWS_DIR): ListrTask<Ctx>[] {
  // Paths as actionlint prints them: relative to where it runs.
  const cwd = dir.startsWith(repoRoot + sep) ? repoRoot : dir
  const shown = (p: string) => relative(cwd, p) || p
  const counted = (n: number) => (n === 0 ? 'clean' : `${n} problem(s)`)
  return [
    {
      title: `actionlint ${VERSIONS.actionlint}`,
      task: async (ctx) => {
        ctx.actionlint = await ensureActionlint()
      },
    },
    {
      title: `actionlint and shellcheck on ${shown(dir) || dir}`,
      task: async (ctx, task) => {
        ctx.files = workflowFiles(dir)
        // Exit 1 means "problems found": data, listed below; 2 and 3 are actionlint failing.
        const r = await run([ctx.actionlint, '-no-color', `-shellcheck=${requireTool('shellcheck')}`, '-pyflakes=', ...ctx.files.map(shown)], { cwd, okCodes: [1] })
        ctx.output = [r.stdout, r.stderr].filter((s) => s.trim()).join('\n').trimEnd()
        const found = ctx.output.split('\n').filter((l) => PROBLEM_LINE.test(l))
        ctx.problems.push(...found)
        task.title = `actionlint and shellcheck on ${ctx.files.length} file(s): ${counted(found.length)}`
      },
    },
    {
      title: 'Every action pinned to a commit SHA',
      task: (ctx, task) => {
        const unpinned = ctx.files.flatMap((f) => unpinnedActions(shown(f), readFileSync(f, 'utf8')))
        ctx.problems.push(...unpinned)
        ctx.output = [ctx.output, ...unpinned].filter((s) => s).join('\n')
        task.title = `Every action pinned to a commit SHA: ${counted(unpinned.length)}`
      },
    },
    {
      title: 'Result',
      task: (ctx) => {
        if (ctx.problems.length > 0) {
          throw new PipelineError(`lint:workflows: ${ctx.problems.length} problem(s) in ${dir}; first: ${ctx.problems[0]}`, ctx.output)
        }
      },
    },
  ]
}

if (isMain(import.meta.url)) {
  await runMain(() => {
    const [arg] = parseOptions('lint:workflows', process.argv.slice(2), {}, '[dir]').positionals
    const dir = arg === undefined ? WORKFLOWS_DIR : isAbsolute(arg) ? arg : resolve(process.cwd(), arg)
    return taskList(lintWorkflowsTasks(dir)).run({ files: [], actionlint: '', problems: [], output: '' })
  })
}
