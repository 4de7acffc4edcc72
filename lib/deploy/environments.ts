/**
 * What each deploy environment allows, from `charts/doc-server/environments.yaml`
 * (committed and reviewed): the kube contexts it may be deployed to, who may
 * sign what it runs, how old its scan and vulnerability DB may be, and whether
 * an older commit may be deployed. A real cluster always goes through this
 * file; only the local cluster (no KUBE_CONTEXT) has fixed settings of its own.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { duration } from '../core/config.ts'
import { PipelineError } from '../core/errors.ts'
import { repoRoot } from '../core/paths.ts'
import { DEFAULT_SIGNERS, Signer } from '../sign/signers.ts'

export const ENVIRONMENTS_FILE = join(repoRoot, 'charts', 'doc-server', 'environments.yaml')

const durationText = (name: string) => z.string().transform((v, c) => {
  try {
    return duration(name, v)
  } catch (err) {
    c.addIssue({ code: 'custom', message: (err as Error).message.replace(/^config: /, '') })
    return z.NEVER
  }
})

const Environment = z.strictObject({
  contexts: z.array(z.string().min(1)),
  /** Who may sign the image, its provenance and its SBOM (and its scans). */
  signers: z.array(Signer).min(1).default(DEFAULT_SIGNERS),
  /** Who may also sign scan results, never an image: the nightly rescan. */
  scanSigners: z.array(Signer).default([]),
  scan: z
    .strictObject({
      /** The scan attestation deploy accepts is at most this old (it may only tighten SCAN_MAX_AGE). */
      maxAge: durationText('scan.maxAge').optional(),
      /** The DB a scan used was built at most this long before the scan. */
      dbMaxAge: durationText('scan.dbMaxAge').default(72 * 3600),
      /** Which DBs a passing scan may have used: `remote` (Trivy's or a mirror) or `local` (advisories/ of this repository). */
      dbSources: z.array(z.enum(['remote', 'local'])).min(1).default(['remote', 'local']),
    })
    .default({ dbMaxAge: 72 * 3600, dbSources: ['remote', 'local'] }),
  /** Whether `--allow-older` may roll the release back: never, only with `--reason`, or freely. */
  allowOlder: z.enum(['never', 'with-reason', 'free']).default('with-reason'),
  /**
   * The chart's admission policy (docs/admission.md): `enforce` ships it and needs Kyverno running
   * there, `install` also has the deploy stage install or upgrade the pinned Kyverno first, `off` ships none.
   */
  admission: z.enum(['enforce', 'install', 'off']).default('enforce'),
})

export type Environment = z.output<typeof Environment>

const Environments = z.record(z.string().regex(/^[a-z][a-z0-9-]*$/, 'an environment name'), Environment)

/** Parses environments.yaml; anything malformed is one line naming the environment and the field. */
export function parseEnvironments(text: string, source: string): Record<string, Environment> {
  let raw: unknown
  try {
    raw = parseYaml(text)
  } catch (err) {
    throw new PipelineError(`deploy: ${source} does not parse: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`)
  }
  const parsed = Environments.safeParse(raw ?? {})
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new PipelineError(`deploy: ${source}: ${issue.path.join('.') || '(the file)'}: ${issue.message}`)
  }
  return parsed.data
}

/**
 * The settings of the local cluster (no KUBE_CONTEXT): the machine's own key signs, a dirty build deploys, any DB
 * will do, and the admission policy ships only with DEPLOY_ADMISSION=enforce.
 */
export const LOCAL_ENVIRONMENT: Environment = {
  contexts: [],
  signers: [],
  scanSigners: [],
  scan: { dbMaxAge: 30 * 86_400, dbSources: ['remote', 'local'] },
  allowOlder: 'free',
  admission: 'enforce',
}

/**
 * The environment a deploy goes to. Without KUBE_CONTEXT that is the local
 * cluster, whatever DEPLOY_ENV says; with it, the file must declare the
 * environment and list the context there (a context named like the local
 * cluster's grants nothing by its name).
 */
export function environmentFor(env: string, context: string | undefined, file = ENVIRONMENTS_FILE): { local: boolean; settings: Environment } {
  if (!context) return { local: true, settings: LOCAL_ENVIRONMENT }
  if (!existsSync(file)) throw new PipelineError(`deploy: refused: ${file} is missing; it declares which contexts each DEPLOY_ENV may use`)
  const all = parseEnvironments(readFileSync(file, 'utf8'), file.replace(`${repoRoot}/`, ''))
  const settings = all[env]
  const declared = settings?.contexts ?? []
  if (!settings || !declared.includes(context)) {
    throw new PipelineError(`deploy: refused: KUBE_CONTEXT "${context}" is not declared for DEPLOY_ENV=${env} in ${file.replace(`${repoRoot}/`, '')} (declared: ${declared.join(', ') || 'none'}); add it there or use the right context`)
  }
  return { local: false, settings }
}
