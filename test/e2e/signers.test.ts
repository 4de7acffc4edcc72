/**
 * Who may sign, checked by the real cosign on real certificates: Fulcio-shaped
 * leaf certificates for GitHub Actions runs (the identity as a URI SAN, the
 * issuer, workflow-trigger and workflow-ref extensions as Fulcio writes them),
 * issued by a throwaway CA made with openssl, each signing a blob. The
 * verifiers the environments file yields for prod accept only ci.yml on main
 * from a push; a pull request's merge ref, another branch and a tag are
 * refused. The identity pattern deploy used before (any ref of ci.yml) let the
 * pull request through: that is the hole these verifiers close.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { loadConfig } from '../../lib/core/config.ts'
import { ANY_EXIT, run } from '../../lib/core/run.ts'
import { verifierArgs, type Verifier } from '../../lib/sign/cosign.ts'
import { DEFAULT_SIGNERS, GITHUB_OIDC_ISSUER, verifiersFor } from '../../lib/sign/signers.ts'
import { ensureCosign } from '../../lib/tools/cosign.ts'
import { setUp } from '../helpers/hooks.ts'

const t = suite('e2e: who may sign (cosign on real certificates)')
const s = { dir: '', cosign: '' }
const REPO = 'https://github.com/acme/doc-server'
const CI = `${REPO}/.github/workflows/ci.yml`

const openssl = (...args: string[]) => run(['openssl', ...args], { cwd: s.dir })
const hex = (text: string) => Buffer.from(text).toString('hex')

setUp(t, 'e2e: who may sign', async () => {
  s.cosign = await ensureCosign(loadConfig().cacheDir)
  s.dir = mkdtempSync(join(tmpdir(), 'signers-'))
  await openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key')
  await openssl('req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=throwaway-fulcio', '-days', '2', '-out', 'ca.pem', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
  writeFileSync(join(s.dir, 'blob'), 'the signed artifact\n')
})

t.after(() => {
  if (s.dir) rmSync(s.dir, { recursive: true, force: true })
})

/** A leaf certificate for a run of `identity` triggered by `trigger` from `ref`, and its signature of the blob. */
async function signedBy(name: string, identity: string, trigger: string, ref: string): Promise<string> {
  // Fulcio's GitHub extensions 1.1 (issuer), 1.2 (trigger) and 1.6 (ref) hold the raw string.
  writeFileSync(join(s.dir, `${name}.cnf`), [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=codeSigning',
    `subjectAltName=critical,URI:${identity}`,
    `1.3.6.1.4.1.57264.1.1=DER:${hex(GITHUB_OIDC_ISSUER)}`,
    `1.3.6.1.4.1.57264.1.2=DER:${hex(trigger)}`,
    `1.3.6.1.4.1.57264.1.6=DER:${hex(ref)}`,
  ].join('\n'))
  await openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`)
  await openssl('req', '-new', '-key', `${name}.key`, '-subj', '/', '-out', `${name}.csr`)
  await openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', `${name}.cnf`, '-out', `${name}.pem`)
  await openssl('dgst', '-sha256', '-sign', `${name}.key`, '-out', `${name}.sig.der`, 'blob')
  writeFileSync(join(s.dir, `${name}.sig`), readFileSync(join(s.dir, `${name}.sig.der`)).toString('base64'))
  return name
}

/** Whether cosign verifies the blob's signature by `name`'s certificate against the verifier (tlog and SCT are not part of this check). */
async function accepts(name: string, v: Verifier): Promise<{ ok: boolean; why: string }> {
  const r = await run([s.cosign, 'verify-blob', '--certificate', `${name}.pem`, '--certificate-chain', 'ca.pem', '--signature', `${name}.sig`, '--insecure-ignore-tlog', '--insecure-ignore-sct', ...verifierArgs(v), 'blob'], { cwd: s.dir, okCodes: ANY_EXIT })
  return { ok: r.exitCode === 0, why: (r.stderr.split('\n').find((l) => /^Error:/.test(l)) ?? '').trim() }
}

t('prod\'s signer (ci.yml on main, from a push) accepts a main push and refuses a pull request, another branch and a tag', async () => {
  const [prod] = verifiersFor(DEFAULT_SIGNERS, { source: REPO })
  assert.equal(prod, { kind: 'keyless', identity: `${CI}@refs/heads/main`, issuer: GITHUB_OIDC_ISSUER, trigger: 'push', ref: 'refs/heads/main' })
  const main = await signedBy('main', `${CI}@refs/heads/main`, 'push', 'refs/heads/main')
  const pr = await signedBy('pr', `${CI}@refs/pull/7/merge`, 'pull_request', 'refs/pull/7/merge')
  const branch = await signedBy('branch', `${CI}@refs/heads/evil`, 'push', 'refs/heads/evil')
  const tag = await signedBy('tag', `${CI}@refs/tags/v1`, 'push', 'refs/tags/v1')
  const dispatch = await signedBy('dispatch', `${CI}@refs/heads/main`, 'workflow_dispatch', 'refs/heads/main')
  assert.equal(await accepts(main, prod!), { ok: true, why: '' })
  for (const name of [pr, branch, tag, dispatch]) {
    const r = await accepts(name, prod!)
    assert.is(r.ok, false, `${name} must not sign for prod`)
    assert.match(r.why, /^Error: /)
  }
  // The pattern deploy accepted before (ci.yml at any ref) let the pull request sign as main.
  const before: Verifier = { kind: 'keyless', identityRegexp: `^${CI.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}@refs/`, issuer: GITHUB_OIDC_ISSUER }
  assert.is((await accepts(pr, before)).ok, true, 'the old identity pattern accepts a pull request')
})

t('a ref pattern (dev: feature branches) stays inside refs/heads/feature/ and still checks the trigger', async () => {
  const dev = verifiersFor([{ workflow: '.github/workflows/ci.yml', refs: ['refs/heads/feature/*'], events: ['push'] }], { source: REPO })
  assert.is(dev.length, 1)
  const feature = await signedBy('feature', `${CI}@refs/heads/feature/login`, 'push', 'refs/heads/feature/login')
  const featurePr = await signedBy('feature-pr', `${CI}@refs/pull/8/merge`, 'pull_request', 'refs/pull/8/merge')
  const sneaky = await signedBy('sneaky', `${CI}@refs/heads/feature/x@refs/heads/main`, 'push', 'refs/heads/feature/x')
  assert.is((await accepts(feature, dev[0]!)).ok, true)
  assert.is((await accepts(featurePr, dev[0]!)).ok, false)
  assert.is((await accepts(sneaky, dev[0]!)).ok, false, 'the pattern cannot reach past the ref')
})

t.run()
