import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { parse as parseYaml } from 'yaml'
import { CHART_DIR } from '../lib/deploy/deploy.ts'

const t = suite('chart')

const yaml = (file: string) => parseYaml(readFileSync(join(CHART_DIR, file), 'utf8')) as Record<string, unknown>
const schema = JSON.parse(readFileSync(join(CHART_DIR, 'values.schema.json'), 'utf8')) as {
  additionalProperties: boolean
  properties: Record<string, unknown>
  required: string[]
}

t('the schema refuses unknown top-level keys and knows every default', () => {
  assert.is(schema.additionalProperties, false)
  for (const key of Object.keys(yaml('values.yaml'))) assert.ok(key in schema.properties, `values.yaml key ${key} is not in the schema`)
  for (const key of schema.required) assert.ok(key in yaml('values.yaml'), `required ${key} has no default`)
})

t('one values file per DEPLOY_ENV, each using only keys the schema knows', () => {
  for (const env of ['dev', 'staging', 'prod']) {
    for (const key of Object.keys(yaml(`values-${env}.yaml`)))
      assert.ok(key in schema.properties, `values-${env}.yaml key ${key} is not in the schema`)
  }
})

t('no environment allows a rollout to drop below the desired ready pods', () => {
  const base = yaml('values.yaml') as { rollingUpdate: { maxUnavailable: number } }
  assert.is(base.rollingUpdate.maxUnavailable, 0)
  for (const env of ['dev', 'staging', 'prod'])
    assert.not.ok('rollingUpdate' in yaml(`values-${env}.yaml`), `values-${env}.yaml overrides the rolling update`)
})

t('prod runs at least three pods, autoscaled and protected by a disruption budget', () => {
  const prod = yaml('values-prod.yaml') as {
    replicaCount: number
    autoscaling: { enabled: boolean; minReplicas: number }
    podDisruptionBudget: { enabled: boolean }
  }
  assert.ok(prod.replicaCount >= 3)
  assert.ok(prod.autoscaling.enabled && prod.autoscaling.minReplicas >= 3)
  assert.ok(prod.podDisruptionBudget.enabled)
})

t.run()
