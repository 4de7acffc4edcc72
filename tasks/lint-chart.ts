/**
 * `npm run lint:chart`: `helm lint --strict` of charts/doc-server with each
 * environment's values, so a chart or values change that only one
 * environment trips over is caught before a deploy.
 */
import { ensureHelm } from '../lib/tools/kube.ts'
import { isMain, runMain, taskList } from '../lib/core/cli.ts'
import { loadConfig } from '../lib/core/config.ts'
import { CHART_DIR, valueFiles } from '../lib/deploy/deploy.ts'
import { run } from '../lib/core/run.ts'

export const ENVIRONMENTS = ['dev', 'staging', 'prod'] as const

/**
 * The admission values a deploy sets (docs/admission.md), with a stand-in
 * key, so the policy template is linted and rendered as every environment but
 * the local one ships it.
 */
export const LINT_ADMISSION: Record<string, string> = {
  'admission.environment': 'lint',
  'admission.signers.keys[0]': '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEstand+in+key+for+helm+lint+only\n-----END PUBLIC KEY-----\n',
  'admission.verdictRepository': '127.0.0.1:5000/local/agent-docs-scan-verdict',
}

async function main(): Promise<void> {
  const cache = loadConfig().cacheDir
  let helm = ''
  await taskList<object>([
    { title: 'helm', task: async () => void (helm = await ensureHelm(cache)) },
    ...ENVIRONMENTS.map((env) => ({
      title: `helm lint --strict (${env})`,
      task: async () => {
        // A digest as the deploy sets it, so the by-digest path is the one linted.
        const sets = Object.entries({ 'image.digest': `sha256:${'0'.repeat(64)}`, ...LINT_ADMISSION }).flatMap(([k, v]) => ['--set-string', `${k}=${v}`])
        await run([helm, 'lint', '--strict', CHART_DIR, ...valueFiles(env, undefined).flatMap((f) => ['--values', f]), ...sets])
      },
    })),
  ]).run({})
}

if (isMain(import.meta.url)) await runMain(main)
