import { PipelineError, debugOn } from '../core/errors.ts'
import { outputDetails } from '../core/run.ts'

/** One step of a BuildKit build, as `--progress=plain` reports it. */
export interface BuildStep {
  id: number
  /** e.g. `[cook 2/2] RUN cargo chef cook --release --recipe-path recipe.json` */
  name: string
  cached: boolean
  seconds?: number
  error?: string
  /** The step's own output, without BuildKit's `#N 12.3` prefix. */
  output: string[]
  /** Seconds into the step at which each output line was printed (BuildKit's prefix). */
  outputAt: number[]
}

/**
 * Reads BuildKit's plain progress output into steps. This is the only source
 * of truth for "was the cook step a cache hit": BuildKit prints `#N CACHED`.
 */
export function parseBuildOutput(text: string): BuildStep[] {
  const steps = new Map<number, BuildStep>()
  for (const raw of text.split(/\r?\n/)) {
    const m = /^#(\d+) (.*)$/.exec(raw)
    if (!m) continue
    const id = Number(m[1])
    const rest = m[2]!
    let step = steps.get(id)
    const first = !step
    if (!step) {
      step = { id, name: '', cached: false, output: [], outputAt: [] }
      steps.set(id, step)
    }
    // Dockerfile steps are named `[stage n/m] …`; BuildKit's own (`exporting to image`) are not bracketed.
    if (step.name === '' && (rest.startsWith('[') || (first && /^[a-z]/.test(rest)))) step.name = rest.trim()
    else if (rest === 'CACHED') step.cached = true
    else if (/^DONE \d+(\.\d+)?s$/.test(rest)) step.seconds = Number(rest.slice(5, -1))
    else if (rest.startsWith('ERROR')) step.error = rest.replace(/^ERROR:?\s*/, '')
    else {
      const out = /^(\d+\.\d+) (.*)$/.exec(rest)
      if (out) {
        step.output.push(out[2]!)
        step.outputAt.push(Number(out[1]))
      }
    }
  }
  return [...steps.values()]
}

/** The `cargo chef cook` step; undefined when the build had none (another Dockerfile). */
export function cookStep(steps: readonly BuildStep[]): BuildStep | undefined {
  return steps.find((s) => /\bcargo chef cook\b/.test(s.name))
}

/**
 * Where a build's seconds went, from BuildKit's step times and the seconds
 * at which output lines were printed: compile and link (cargo, to its
 * `Finished`), strip and the .dep-v0 copy (from there to the `packing:`
 * line), UPX (from that line to the step's end, or a step of its own in a
 * Dockerfile that packs separately), exporting the image, and everything
 * else (context, planner, COPY, cached steps).
 */
export function buildBreakdown(
  steps: readonly BuildStep[],
  totalSeconds: number,
): Record<'compile+link' | 'strip+sections' | 'upx' | 'export' | 'other', number> {
  const compile = steps.find((s) => !s.cached && /cargo (auditable )?build/.test(s.name))
  const at = (re: RegExp) => {
    const i = compile?.output.findIndex((l) => re.test(l)) ?? -1
    return i >= 0 ? compile!.outputAt[i]! : undefined
  }
  const stepSeconds = compile?.seconds ?? 0
  const cargo = at(/^\s*Finished /) ?? stepSeconds
  const packing = at(/^packing: upx\b/)
  const strip = Math.max(0, (packing ?? stepSeconds) - cargo)
  const upx =
    packing !== undefined
      ? Math.max(0, stepSeconds - packing)
      : (steps.find((s) => !s.cached && /\bupx\b/.test(s.name) && !/apt-get/.test(s.name) && s !== compile)?.seconds ?? 0)
  const exp = steps.filter((s) => /^exporting to image/.test(s.name)).reduce((a, s) => a + (s.seconds ?? 0), 0)
  const r = (n: number) => Math.round(n * 10) / 10
  return {
    'compile+link': r(cargo),
    'strip+sections': r(strip),
    upx: r(upx),
    export: r(exp),
    other: r(Math.max(0, totalSeconds - cargo - strip - upx - exp)),
  }
}

/** Crates a step compiled (`Compiling name vX`): the evidence that a warm build rebuilt only our crate. */
export function compiledCrates(step: BuildStep | undefined): string[] {
  return (step?.output ?? []).map((l) => /^\s*Compiling (\S+) v/.exec(l)?.[1]).filter((n): n is string => n !== undefined)
}

/**
 * A step's name as a person reads it: no `--mount=` flags, spaces collapsed,
 * only the first command of an `a && b && c` chain, at most `max` characters.
 */
export function stepLabel(name: string, max = 90): string {
  const flat = name
    .replace(/--mount=\S+\s*/g, '')
    .replace(/\s+/g, ' ')
    .trim()
  const chain = flat.indexOf(' && ')
  const s = chain === -1 ? flat : `${flat.slice(0, chain)} && …`
  return s.length > max ? `${s.slice(0, max - 1)}…` : s
}

/** docker's pointer to its help, printed after a bad command line: never the reason. */
const USAGE_HINT = /^(See '.*--help'\.?|Usage:\s.*|Run '.*--help'.*)$/

/** How the docker client words a refusal of its own, before the daemon is asked. */
const CLIENT_ERROR =
  /unknown (shorthand )?flag|invalid argument|requires (exactly|at least|at most)|unknown command|is not a docker command|no such|not found|cannot|unable to|denied|refused/i

/**
 * The one-line reason a build failed: the failing Dockerfile step and the
 * compiler's first error, with the error block (not the whole log, unless
 * DEBUG is set) as details.
 */
export function buildFailure(steps: readonly BuildStep[], rawOutput: string): PipelineError {
  const failed = steps.find((s) => s.error !== undefined)
  if (!failed) {
    // Before any step, the client's own complaint (`unknown flag: --cache-to`) is the
    // cause; its usage hint (`See 'docker build --help'.`) and usage text are not.
    const lines = rawOutput
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !USAGE_HINT.test(l))
    const why =
      [...lines].reverse().find((l) => /^(error|failed to solve|ERROR)/i.test(l)) ??
      [...lines].reverse().find((l) => CLIENT_ERROR.test(l)) ??
      lines.at(-1) ??
      'no output'
    return new PipelineError(`docker build failed: ${why}`, outputDetails(rawOutput, 20))
  }
  const out = failed.output
  const at = out.findIndex((l) => /^error(\[E\d+\])?: /.test(l) && !/^error: could not compile/.test(l))
  // No compiler error: the failing tool's own last words say more than BuildKit's `executor failed`.
  const first = at >= 0 ? out[at]! : ([...out].reverse().find((l) => /error/i.test(l)) ?? out.at(-1) ?? failed.error ?? 'failed')
  let details: string
  if (at >= 0) {
    const block = out.slice(at)
    const end = block.findIndex((l, i) => i > 0 && /^(error: could not compile|warning: build failed)/.test(l))
    details = block.slice(0, end > 0 ? Math.min(end + 1, 40) : 40).join('\n')
  } else {
    details = outputDetails(out.join('\n'), 20)
  }
  // DEBUG: the whole build log, every step, not only the failing one's.
  if (debugOn()) details = rawOutput.replace(/\s+$/, '')
  return new PipelineError(`docker build failed at ${stepLabel(failed.name)}: ${first.trim()}`, details)
}
