import { existsSync, readFileSync } from 'node:fs'
import { isAbsolute, join } from 'node:path'
import { parse as parseDotenv } from 'dotenv'
import { PipelineError } from './errors.ts'
import { cacheDir, repoRoot } from './paths.ts'

/** The registry of the embedded local defaults: a registry this machine starts (see lib/sandbox). */
export const LOCAL_REGISTRY = '127.0.0.1:5000'

/**
 * Every variable the pipeline reads, with its default and meaning. The README's
 * configuration table is checked against this list by the tests, so the two
 * cannot drift apart.
 */
export const VARIABLES = [
  { name: 'REGISTRY', default: '127.0.0.1:5000 (GitHub Actions: ghcr.io)', meaning: 'Registry the image is pushed to. The local default is started by the pipeline.' },
  { name: 'IMAGE_OWNER', default: 'local (GitHub Actions: the repository owner)', meaning: 'Registry namespace; lower-cased.' },
  { name: 'IMAGE_NAME', default: 'agent-docs', meaning: 'Image repository name.' },
  { name: 'IMAGE_TAG', default: 'full git commit sha (GitHub Actions: GITHUB_SHA)', meaning: 'Tag; sanitised to the OCI tag rules.' },
  { name: 'PUSH', default: 'auto', meaning: '`auto` pushes on main, feature/* and local runs, never for pull requests; `true` or `false` force it.' },
  { name: 'REGISTRY_USER', default: '(none; GitHub Actions: GITHUB_ACTOR)', meaning: 'Registry login user; no login when empty.' },
  { name: 'REGISTRY_TOKEN', default: '(none; GitHub Actions: GITHUB_TOKEN)', meaning: 'Registry password or token. Never printed or written to a report.' },
  { name: 'DOCKER', default: '/usr/bin/docker when present, else docker on PATH', meaning: 'Docker client used for builds (it must support BuildKit).' },
  { name: 'BUILD_CACHE_FROM', default: '(none; the workflow: type=gha,scope=doc-server-image)', meaning: 'BuildKit `--cache-from` for the image build, e.g. the GitHub cache backend; setting it or BUILD_CACHE_TO also passes `--load`, so the docker build must be buildx (refused up front otherwise).' },
  { name: 'BUILD_CACHE_TO', default: '(none; the workflow: type=gha,mode=max,scope=doc-server-image)', meaning: 'BuildKit `--cache-to` for the image build; `mode=max` keeps the cook layer.' },
  { name: 'SCAN_SEVERITIES', default: '(.scan-policy.yaml)', meaning: 'Severities that block the scan gate, overriding the committed policy for an experiment; a scan under any other policy than the committed one is never deployable.' },
  { name: 'SCAN_IGNORE_UNFIXED', default: '(.scan-policy.yaml)', meaning: 'When true, findings without a fixed version do not block (an override of the committed policy: not deployable).' },
  { name: 'SCAN_IGNORE_FILE', default: '(.scan-policy.yaml: .trivyignore.yaml)', meaning: 'Ignore file; each entry needs a statement and an expiry date. Another file than the committed one is an override: not deployable.' },
  { name: 'SCAN_IGNORE_MAX_DAYS', default: '(.scan-policy.yaml: 90)', meaning: 'How far ahead an ignore entry may expire (at most 365); an entry with a later expired_at is refused, so every accepted risk is reviewed. An override: not deployable.' },
  { name: 'SCAN_ADVISORIES_DIR', default: 'advisories', meaning: 'Advisories the local vulnerability DB is built from (TRIVY_DB_SOURCE=local); see advisories/README.md.' },
  { name: 'SCAN_MAX_AGE', default: '24h', meaning: 'Deploy refuses an image whose scan attestation is older than this (a number with s, m, h or d; at most 30d); an environment may set a stricter bound in charts/doc-server/environments.yaml.' },
  { name: 'SCAN_DB_MAX_AGE', default: '72h', meaning: 'The scan fails when the vulnerability DB it downloaded was built longer ago than this (at most 30d); the local DB built from advisories/ is exempt, its content is committed.' },
  { name: 'TRIVY_DB_SOURCE', default: 'local (GitHub Actions: remote)', meaning: '`local` scans with the DB built from advisories in this repo; `remote` downloads the public DB.' },
  { name: 'TRIVY_DB_REPOSITORY', default: '(local: 127.0.0.1:5000/<IMAGE_OWNER>/trivy-db:2; remote: Trivy\'s default mirrors)', meaning: 'OCI repository Trivy downloads its vulnerability DB from (`--db-repository`), e.g. a company mirror; with `local` the pipeline publishes the DB built from advisories/ there (a registry on this machine only).' },
  { name: 'DEPLOY_ENV', default: 'dev', meaning: 'Environment to deploy: dev, staging or prod (selects charts/doc-server/values-<env>.yaml).' },
  { name: 'KUBE_CONTEXT', default: '(none: the local cluster)', meaning: 'kubectl context to deploy to; empty targets the local cluster started by the pipeline. Any other context must be declared for DEPLOY_ENV in charts/doc-server/environments.yaml.' },
  { name: 'DEPLOY_NAMESPACE', default: 'doc-server-<DEPLOY_ENV>', meaning: 'Namespace of the release.' },
  { name: 'RELEASE_NAME', default: 'doc-server', meaning: 'Helm release name.' },
  { name: 'DEPLOY_TIMEOUT_SECS', default: '300', meaning: 'How long a rollout may take before it is rolled back; keep it below the CI job timeout.' },
  { name: 'DEPLOY_READINESS_GRACE_SECS', default: '60 (half of DEPLOY_TIMEOUT_SECS if that is less)', meaning: 'How long a new pod\'s running container may stay unready before the rollout is stopped and rolled back (crash loops, image-pull and config errors stop it at once); below DEPLOY_TIMEOUT_SECS.' },
  { name: 'DEPLOY_ADMISSION', default: 'auto', meaning: '`auto` ships the chart\'s admission policy to every cluster but the local one (unless its environment says `admission: off` in charts/doc-server/environments.yaml); `enforce` ships it to the local cluster too, which then needs Kyverno running (`npm run cluster:up`).' },
  { name: 'DEPLOY_VALUES_FILE', default: '(none)', meaning: 'An extra Helm values file layered over values-<DEPLOY_ENV>.yaml (per-cluster overrides); checked against the chart schema like the others.' },
  { name: 'MEASURE_BASELINE', default: '.ci/measure-baseline.json', meaning: 'Baseline the measure stage compares against to flag regressions.' },
  { name: 'REPORTS_DIR', default: 'reports', meaning: 'Where stages write their JSON reports.' },
  { name: 'DOC_SERVER_CACHE_DIR', default: '~/.cache/doc-server-ci', meaning: 'Pinned tools, base-image inputs and local service state, outside the clone.' },
  { name: 'PRECOMMIT_CHECKS', default: '(all)', meaning: 'Comma list of the lint-test checks to run (rustfmt, clippy, cargo-test, tsc, unit-tests, shellcheck); the others are shown as skipped. For a quick local hook; CI runs them all.' },
  { name: 'DEBUG', default: '(unset)', meaning: "When set, a failure prints its stack trace and the failing tool's whole output (for a build, the whole BuildKit log) instead of its last lines; also read from .env." },
] as const

export type VariableName = (typeof VARIABLES)[number]['name']

export interface Config {
  registry: string
  imageOwner: string
  imageName: string
  imageTag: string | undefined
  push: 'auto' | 'true' | 'false'
  registryUser: string | undefined
  registryToken: string | undefined
  docker: string
  buildCacheFrom: string | undefined
  buildCacheTo: string | undefined
  /** Overrides of the committed scan policy (.scan-policy.yaml); undefined when not set. */
  scanSeverities: string[] | undefined
  scanIgnoreUnfixed: boolean | undefined
  scanIgnoreFile: string | undefined
  scanIgnoreMaxDays: number | undefined
  /** SCAN_DB_MAX_AGE in seconds. */
  scanDbMaxAgeSecs: number
  scanAdvisoriesDir: string
  /** SCAN_MAX_AGE in seconds. */
  scanMaxAgeSecs: number
  trivyDbSource: 'local' | 'remote'
  trivyDbRepository: string | undefined
  deployEnv: 'dev' | 'staging' | 'prod'
  kubeContext: string | undefined
  deployNamespace: string
  releaseName: string
  deployTimeoutSecs: number
  deployReadinessGraceSecs: number
  deployValuesFile: string | undefined
  /** Whether the local cluster gets the admission policy too. */
  deployAdmission: 'auto' | 'enforce'
  measureBaseline: string
  reportsDir: string
  cacheDir: string
  /** The lint-test checks to run, by name; all of them unless PRECOMMIT_CHECKS narrows it. */
  precommitChecks: PrecommitCheck[]
  debug: boolean
  /** Facts about where we run, read from the CI platform's own variables. */
  github: boolean
  pullRequest: boolean
}

const bad = (name: string, value: string, expected: string) =>
  new PipelineError(`config: ${name}=${JSON.stringify(value)} is not valid: expected ${expected} (set it in the environment or .env)`)

function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(value)) return value as T
  throw bad(name, value, `one of ${allowed.join(', ')}`)
}

function bool(name: string, value: string): boolean {
  if (/^(1|true|yes)$/i.test(value)) return true
  if (/^(0|false|no)$/i.test(value)) return false
  throw bad(name, value, 'true or false')
}

function positiveInt(name: string, value: string): number {
  if (!/^\d{1,9}$/.test(value) || Number(value) < 1) throw bad(name, value, 'a whole number above 0 (at most 9 digits)')
  return Number(value)
}

/** An OCI repository with a tag, as Trivy's --db-repository takes it: host[:port]/path:tag. */
function dbRepository(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  if (!/^[a-z0-9.-]+(:\d{1,5})?\/[a-z0-9._/-]+:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(value)) {
    throw bad('TRIVY_DB_REPOSITORY', value, 'a registry repository with a tag, like 127.0.0.1:5000/local/trivy-db:2 or mirror.example.com/aquasec/trivy-db:2')
  }
  return value
}

/** The lint-test checks, by the names PRECOMMIT_CHECKS uses (tasks/precommit.ts defines what each runs). */
export const PRECOMMIT_CHECKS = ['rustfmt', 'clippy', 'cargo-test', 'tsc', 'unit-tests', 'shellcheck'] as const
export type PrecommitCheck = (typeof PRECOMMIT_CHECKS)[number]

/**
 * PRECOMMIT_CHECKS alone, for the git hook: a commit is not refused for a bad
 * deploy setting the hook never uses. loadConfig validates it the same way.
 */
export function precommitChecks(processEnv: NodeJS.ProcessEnv = process.env, dotenv: Record<string, string> = readDotenv()): PrecommitCheck[] {
  const value = ({ ...dotenv, ...processEnv }.PRECOMMIT_CHECKS ?? '').trim()
  if (value === '') return [...PRECOMMIT_CHECKS]
  return value.split(',').map((c) => oneOf('PRECOMMIT_CHECKS', c.trim(), PRECOMMIT_CHECKS))
}

const UNIT_SECS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 }

/** A duration like 90s, 30m, 24h or 7d, in seconds, at most `maxSecs` (so no typo of digits switches a bound off). */
export function duration(name: string, value: string, maxSecs = 30 * 86_400): number {
  const m = /^(\d{1,9})([smhd])$/.exec(value)
  const secs = m ? Number(m[1]) * UNIT_SECS[m[2]!]! : NaN
  if (!m || !(secs >= 1) || secs > maxSecs) throw bad(name, value, `a duration above 0 and at most ${maxSecs / 86_400}d, like 30m, 24h or 7d`)
  return secs
}

/** Unset: 60 s, or half the timeout when that is shorter. */
function readinessGrace(value: string | undefined, timeoutSecs: number): number {
  if (value === undefined) return Math.max(1, Math.min(60, Math.floor(timeoutSecs / 2)))
  const grace = positiveInt('DEPLOY_READINESS_GRACE_SECS', value)
  if (grace >= timeoutSecs) throw bad('DEPLOY_READINESS_GRACE_SECS', value, `fewer seconds than DEPLOY_TIMEOUT_SECS (${timeoutSecs})`)
  return grace
}

const SEVERITIES = ['UNKNOWN', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL'] as const

/** Reads `.env` at the repository root, refusing keys the pipeline does not know (most are typos). */
export function readDotenv(path = join(repoRoot, '.env')): Record<string, string> {
  if (!existsSync(path)) return {}
  const parsed = parseDotenv(readFileSync(path))
  const known = new Set<string>(VARIABLES.map((v) => v.name))
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) throw new PipelineError(`config: .env sets unknown variable ${key}; the known ones are listed in the README`)
  }
  return parsed
}

/**
 * Validates the configuration once. Values from the environment win over `.env`;
 * every bad value throws one line that names the variable and what it should be.
 */
export function loadConfig(processEnv: NodeJS.ProcessEnv = process.env, dotenv: Record<string, string> = readDotenv()): Config {
  const env: NodeJS.ProcessEnv = { ...dotenv, ...processEnv }
  const get = (name: VariableName): string | undefined => {
    const v = env[name]
    return v === undefined || v.trim() === '' ? undefined : v.trim()
  }
  const github = env.GITHUB_ACTIONS === 'true'
  const pullRequest = github && /^pull_request/.test(env.GITHUB_EVENT_NAME ?? '')

  const registry = get('REGISTRY') ?? (github ? 'ghcr.io' : LOCAL_REGISTRY)
  if (!/^[a-z0-9.-]+(:\d{1,5})?$/i.test(registry)) throw bad('REGISTRY', registry, 'a host with an optional port, like ghcr.io or 127.0.0.1:5000')

  const imageOwner = (get('IMAGE_OWNER') ?? (github ? env.GITHUB_REPOSITORY_OWNER : undefined) ?? 'local').toLowerCase()
  if (!/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/.test(imageOwner)) throw bad('IMAGE_OWNER', imageOwner, 'a registry namespace of letters, digits, . _ -')
  const imageName = get('IMAGE_NAME') ?? 'agent-docs'
  if (!/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/.test(imageName)) throw bad('IMAGE_NAME', imageName, 'a lower-case repository name of letters, digits, . _ -')

  const severities = get('SCAN_SEVERITIES')?.split(',').map((s) => s.trim().toUpperCase())
  for (const s of severities ?? []) if (!(SEVERITIES as readonly string[]).includes(s)) throw bad('SCAN_SEVERITIES', s, `a comma list of ${SEVERITIES.join(', ')}`)
  const ignoreMaxDays = get('SCAN_IGNORE_MAX_DAYS')
  const scanIgnoreMaxDays = ignoreMaxDays === undefined ? undefined : positiveInt('SCAN_IGNORE_MAX_DAYS', ignoreMaxDays)
  if (scanIgnoreMaxDays !== undefined && scanIgnoreMaxDays > 365) throw bad('SCAN_IGNORE_MAX_DAYS', ignoreMaxDays!, 'at most 365: an accepted risk is reviewed at least once a year')
  const unfixed = get('SCAN_IGNORE_UNFIXED')

  const deployEnv = oneOf('DEPLOY_ENV', get('DEPLOY_ENV') ?? 'dev', ['dev', 'staging', 'prod'] as const)
  const namespace = get('DEPLOY_NAMESPACE') ?? `doc-server-${deployEnv}`
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) throw bad('DEPLOY_NAMESPACE', namespace, 'a Kubernetes namespace name (lower-case letters, digits, -)')
  const releaseName = get('RELEASE_NAME') ?? 'doc-server'
  const deployTimeoutSecs = positiveInt('DEPLOY_TIMEOUT_SECS', get('DEPLOY_TIMEOUT_SECS') ?? '300')
  if (!/^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$/.test(releaseName)) throw bad('RELEASE_NAME', releaseName, 'a Helm release name (lower-case letters, digits, -; at most 53)')


  const abs = (p: string) => (isAbsolute(p) ? p : join(repoRoot, p))
  const cache = get('DOC_SERVER_CACHE_DIR')
  return {
    registry,
    imageOwner,
    imageName,
    imageTag: get('IMAGE_TAG') ?? (github ? env.GITHUB_SHA : undefined),
    push: oneOf('PUSH', get('PUSH') ?? 'auto', ['auto', 'true', 'false'] as const),
    registryUser: get('REGISTRY_USER') ?? (github ? env.GITHUB_ACTOR : undefined),
    registryToken: get('REGISTRY_TOKEN') ?? (github ? env.GITHUB_TOKEN : undefined),
    docker: get('DOCKER') ?? (existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker'),
    buildCacheFrom: get('BUILD_CACHE_FROM'),
    buildCacheTo: get('BUILD_CACHE_TO'),
    scanSeverities: severities,
    scanIgnoreUnfixed: unfixed === undefined ? undefined : bool('SCAN_IGNORE_UNFIXED', unfixed),
    scanIgnoreFile: get('SCAN_IGNORE_FILE') ? abs(get('SCAN_IGNORE_FILE')!) : undefined,
    scanIgnoreMaxDays,
    scanDbMaxAgeSecs: duration('SCAN_DB_MAX_AGE', get('SCAN_DB_MAX_AGE') ?? '72h'),
    trivyDbRepository: dbRepository(get('TRIVY_DB_REPOSITORY')),
    scanAdvisoriesDir: abs(get('SCAN_ADVISORIES_DIR') ?? 'advisories'),
    scanMaxAgeSecs: duration('SCAN_MAX_AGE', get('SCAN_MAX_AGE') ?? '24h'),
    trivyDbSource: oneOf('TRIVY_DB_SOURCE', get('TRIVY_DB_SOURCE') ?? (github ? 'remote' : 'local'), ['local', 'remote'] as const),
    deployEnv,
    kubeContext: get('KUBE_CONTEXT'),
    deployNamespace: namespace,
    releaseName,
    deployTimeoutSecs,
    deployReadinessGraceSecs: readinessGrace(get('DEPLOY_READINESS_GRACE_SECS'), deployTimeoutSecs),
    deployValuesFile: get('DEPLOY_VALUES_FILE') ? abs(get('DEPLOY_VALUES_FILE')!) : undefined,
    deployAdmission: oneOf('DEPLOY_ADMISSION', get('DEPLOY_ADMISSION') ?? 'auto', ['auto', 'enforce'] as const),
    measureBaseline: abs(get('MEASURE_BASELINE') ?? '.ci/measure-baseline.json'),
    reportsDir: abs(get('REPORTS_DIR') ?? 'reports'),
    cacheDir: cache ? abs(cache) : cacheDir(env),
    precommitChecks: precommitChecks(processEnv, dotenv),
    debug: get('DEBUG') !== undefined,
    github,
    pullRequest,
  }
}

/** Whether this run may push: never for pull requests; `auto` pushes on main, feature/* and local runs. */
export function shouldPush(config: Config, branch: string | undefined): boolean {
  if (config.pullRequest) return false
  if (config.push !== 'auto') return config.push === 'true'
  if (!config.github) return true
  return branch === 'main' || (branch?.startsWith('feature/') ?? false)
}
