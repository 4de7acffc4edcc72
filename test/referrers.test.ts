import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { bearerChallenge, dockerCredentials, registryEndpoint } from '../lib/sign/referrers.ts'

const t = suite('referrers')

t('a registry is reached as docker reaches it: https, plain http only on loopback without a CA of its own', () => {
  const certs = mkdtempSync(join(tmpdir(), 'certs-d-'))
  mkdirSync(join(certs, '127.0.0.1:5443'))
  writeFileSync(join(certs, '127.0.0.1:5443', 'ca.crt'), 'PEM')
  assert.equal(registryEndpoint('127.0.0.1:5000', certs), { base: 'http://127.0.0.1:5000', ca: undefined })
  assert.equal(registryEndpoint('localhost:5000', certs), { base: 'http://localhost:5000', ca: undefined })
  assert.equal(registryEndpoint('127.0.0.1:5443', certs), { base: 'https://127.0.0.1:5443', ca: 'PEM' })
  assert.equal(registryEndpoint('ghcr.io', certs), { base: 'https://ghcr.io', ca: undefined })
})

t("the login comes from the docker config in DOCKER_CONFIG (the push's throwaway login), under any spelling of the registry", () => {
  const dir = mkdtempSync(join(tmpdir(), 'docker-config-'))
  const auth = (s: string) => Buffer.from(s).toString('base64')
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ auths: { 'ghcr.io': { auth: auth('octo:ghp_token') }, 'https://registry.example': { auth: auth('u:p') } } }),
  )
  assert.is(dockerCredentials('ghcr.io', { DOCKER_CONFIG: dir }), 'octo:ghp_token')
  assert.is(dockerCredentials('registry.example', { DOCKER_CONFIG: dir }), 'u:p')
  assert.is(dockerCredentials('quay.io', { DOCKER_CONFIG: dir }), undefined)
  assert.is(dockerCredentials('ghcr.io', { DOCKER_CONFIG: join(dir, 'none') }), undefined, 'no config: anonymous')
  writeFileSync(join(dir, 'config.json'), '{ not json')
  assert.is(dockerCredentials('ghcr.io', { DOCKER_CONFIG: dir }), undefined, 'an unreadable config: anonymous')
})

t('a bearer challenge names where to ask for a token, for which service and scope', () => {
  assert.equal(bearerChallenge('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/agent-docs:pull"'), {
    realm: 'https://ghcr.io/token',
    service: 'ghcr.io',
    scope: 'repository:acme/agent-docs:pull',
  })
  assert.is(bearerChallenge('Basic realm="Registry Realm"'), undefined)
})

t.run()
