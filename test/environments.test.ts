import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import {
  ENVIRONMENTS_FILE,
  LOCAL_ENVIRONMENT,
  durationMs,
  environmentFor,
  parseEnvironments,
  shownUrl,
} from '../lib/deploy/environments.ts'

const t = suite('environments')

t('durations read as milliseconds', () => {
  assert.equal(['500ms', '15s', '2m', '1.5s', '1h'].map(durationMs), [500, 15_000, 120_000, 1500, 3_600_000])
  assert.equal(['15', 's', '-1s', '2 m', '1d'].map(durationMs), [undefined, undefined, undefined, undefined, undefined])
})

t('a canary block takes the defaults for what it leaves out', () => {
  const envs = parseEnvironments(
    'prod:\n  contexts: [p]\n  prometheus: https://prom.example.com:9090\n  canary:\n    weight: 25\n    analysis:\n      duration: 5m\n      p99: 250ms\n',
    'e.yaml',
  )
  const prod = envs.prod!
  assert.is(prod.prometheus, 'https://prom.example.com:9090')
  assert.is(prod.canary!.weight, 25)
  assert.equal(prod.canary!.analysis, {
    required: false,
    duration: 300_000,
    interval: 15_000,
    minRequests: 50,
    failedChecks: 2,
    inconclusive: 'wait',
    successRate: 99,
    errorRateIncrease: 1,
    p99: 250,
    p99Ratio: 2,
    p99Slack: 10,
  })
  assert.equal(parseEnvironments('dev:\n  contexts: []\n  canary:\n    weight: 10\n', 'e.yaml').dev!.canary!.analysis.duration, 120_000)
})

t('a wrong setting is one line naming the environment and the field', () => {
  const cases: [string, RegExp][] = [
    ['prod:\n  contexts: []\n  canary:\n    weight: 100\n', /^deploy: e\.yaml: prod\.canary\.weight: /],
    [
      'prod:\n  contexts: []\n  canary:\n    weight: 25\n    analysis:\n      duration: soon\n',
      /^deploy: e\.yaml: prod\.canary\.analysis\.duration: duration must be a duration like 500ms, 15s or 2m, not "soon"$/,
    ],
    [
      'prod:\n  contexts: []\n  canary:\n    weight: 25\n    analysis:\n      inconclusive: maybe\n',
      /^deploy: e\.yaml: prod\.canary\.analysis\.inconclusive: /,
    ],
    [
      'prod:\n  contexts: []\n  canary:\n    weight: 25\n    analysis:\n      duration: 10s\n      interval: 1m\n',
      /prod\.canary\.analysis: interval must not be longer than duration$/,
    ],
    ['prod:\n  contexts: []\n  canary:\n    weight: 25\n    analysys: {}\n', /prod\.canary: .*analysys/],
    ['prod:\n  contexts: []\n  prometheus: prometheus:9090\n', /prod\.prometheus: /],
    ['prod:\n  contexts: []\n  promethus: http://p\n', /^deploy: e\.yaml: prod: .*promethus/],
  ]
  for (const [text, re] of cases) {
    try {
      parseEnvironments(text, 'e.yaml')
      assert.unreachable(`accepted: ${text}`)
    } catch (err) {
      assert.match((err as Error).message, re)
      assert.not.match((err as Error).message, /\n/)
    }
  }
})

t('the committed file: no canary for dev and staging, prod has one that requires its Prometheus', () => {
  const envs = parseEnvironments(readFileSync(ENVIRONMENTS_FILE, 'utf8'), ENVIRONMENTS_FILE)
  assert.is(envs.dev!.canary, undefined)
  assert.is(envs.staging!.canary, undefined)
  assert.is(envs.prod!.canary?.weight, 25)
  assert.is(envs.prod!.canary?.analysis.required, true)
})

t("the local cluster takes the environment's canary from the file and nothing else", () => {
  const dir = mkdtempSync(join(tmpdir(), 'envs-'))
  const file = join(dir, 'e.yaml')
  writeFileSync(
    file,
    'staging:\n  contexts: [s]\n  allowOlder: never\n  prometheus: http://prom.example.com:9090\n  canary:\n    weight: 34\n',
  )
  const local = environmentFor('staging', undefined, file)
  assert.is(local.local, true)
  assert.equal(local.settings, { ...LOCAL_ENVIRONMENT, canary: parseEnvironments(readFileSync(file, 'utf8'), file).staging!.canary })
  assert.is(local.settings.prometheus, undefined, "the local cluster's own Prometheus, never the environment's")
  assert.equal(environmentFor('qa', undefined, file), { local: true, settings: LOCAL_ENVIRONMENT })
  assert.equal(environmentFor('staging', undefined, join(dir, 'none.yaml')), { local: true, settings: LOCAL_ENVIRONMENT })
  assert.is(environmentFor('staging', 's', file).settings.allowOlder, 'never')
})

t('a URL is shown without its credentials', () => {
  assert.is(shownUrl('https://user:s3cret@prom.example.com:9090/'), 'https://prom.example.com:9090')
  assert.is(shownUrl('http://127.0.0.1:19090'), 'http://127.0.0.1:19090')
})

t.run()
