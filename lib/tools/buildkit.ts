import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { PipelineError } from '../core/errors.ts'
import { run } from '../core/run.ts'
import { buildWrapper, moduleGoMod } from './kube.ts'
import { VERSIONS } from './versions.ts'

export interface BuildkitBinaries {
  buildkitd: string
  buildctl: string
}

const MODULE = 'github.com/moby/buildkit'
const MAINS = [
  { pkg: `${MODULE}/cmd/buildkitd`, binary: 'buildkitd' },
  { pkg: `${MODULE}/cmd/buildctl`, binary: 'buildctl' },
]

/**
 * The wrapper module for BuildKit: `go install` refuses a module whose go.mod
 * has `exclude` directives (BuildKit's has), and a dependency's excludes are
 * ignored, so they are copied into the wrapper, where they resolve the same
 * versions BuildKit's own build does.
 */
export function buildkitWrapperGoMod(version: string, buildkitGoMod: string): string {
  const go = /^go (\S+)$/m.exec(buildkitGoMod)?.[1]
  if (!go) throw new PipelineError(`tools: ${MODULE} ${version} go.mod has no go line; the wrapper recipe needs updating`)
  const excludes = [...buildkitGoMod.matchAll(/^exclude \(\n([\s\S]*?)^\)/gm)]
    .map((m) => m[1]!)
    .join('')
    .split('\n')
    .map((l) => l.replace(/\/\/.*$/, '').trim())
    .filter(Boolean)
  const block = excludes.length ? `\nexclude (\n${excludes.map((e) => `\t${e}`).join('\n')}\n)\n` : ''
  return `module local/buildkit-build\n\ngo ${go}\n\nrequire ${MODULE} ${version}\n${block}`
}

/** The flags BuildKit's release build stamps and the tags it builds buildkitd with (its Dockerfile). */
export function buildkitLdflags(version: string): string {
  return ['-s', '-w', `-X ${MODULE}/version.Version=${version}`, `-X ${MODULE}/version.Package=${MODULE}`].join(' ')
}
const BUILDKITD_TAGS = ['osusergo', 'netgo', 'static_build', 'seccomp']

/**
 * buildkitd and buildctl at the pinned BuildKit version, built once per machine
 * from the Go module proxy into `<cache>/tools/buildkit/<version>/` (one
 * `go build`, shared packages), then checked to be exactly that version.
 * `only`: just these (a remote daemon needs only buildctl).
 */
export async function ensureBuildkit(cache: string, only?: (keyof BuildkitBinaries)[]): Promise<BuildkitBinaries> {
  const version = VERSIONS.buildkit
  const dir = join(cache, 'tools', 'buildkit', version)
  const present = MAINS.filter((m) => !only || (only as string[]).includes(m.binary)).every((m) => existsSync(join(dir, m.binary)))
  const goMod = present ? '' : buildkitWrapperGoMod(version, await moduleGoMod(MODULE, version))
  const p = await buildWrapper(cache, {
    name: 'buildkit',
    version,
    goMod,
    mains: MAINS,
    ldflags: buildkitLdflags(version),
    tags: BUILDKITD_TAGS,
    ...(only ? { only } : {}),
  })
  const bins = { buildkitd: p.buildkitd!, buildctl: p.buildctl! }
  for (const [name, path] of Object.entries(bins)) {
    if (only && !(only as string[]).includes(name)) continue
    const out = (await run([path, '--version'])).stdout
    if (!out.includes(` ${version}`))
      throw new PipelineError(
        `buildkit: ${path} says "${out.trim()}", not the pinned ${version}; delete ${dir} so the pinned ${name} is built`,
      )
  }
  return bins
}
