/**
 * A registry that wants a login the way GHCR does: the same Debian
 * docker-registry (distribution v2) as the open local one, with htpasswd
 * (bcrypt) authentication behind TLS, its CA trusted by the Docker engine
 * through /etc/docker/certs.d. It is what the login path is tested against;
 * the embedded default for `ci:build` stays the open 127.0.0.1:5000.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { join } from 'node:path'
import { ensureDebianPackages } from '../../lib/tools/apt.ts'
import { PipelineError } from '../../lib/core/errors.ts'
import { stateDir } from '../../lib/core/paths.ts'
import { lastWords, run, succeeds } from '../../lib/core/run.ts'
import { startDetached, stopOwned } from '../../lib/sandbox/service.ts'
import { registryConfig } from '../../lib/sandbox/registry.ts'
import { say } from '../../lib/core/output.ts'

/** Loopback only, and not the open registry's port. */
export const AUTH_REGISTRY = '127.0.0.1:5443'

export interface AuthRegistry {
  addr: string
  /** The CA that signed the registry's certificate (also in /etc/docker/certs.d/<addr>/ca.crt). */
  caCert: string
  pid: number | undefined
  dataDir: string
  log: string
}

function paths(env: NodeJS.ProcessEnv) {
  const dir = join(stateDir(env), 'registry-auth')
  return {
    dir,
    config: join(dir, 'config.yml'),
    data: join(dir, 'data'),
    log: join(dir, 'registry.log'),
    pidfile: join(dir, 'registry.pid'),
    htpasswd: join(dir, 'htpasswd'),
    caKey: join(dir, 'ca.key'),
    caCert: join(dir, 'ca.crt'),
    key: join(dir, 'server.key'),
    csr: join(dir, 'server.csr'),
    cert: join(dir, 'server.crt'),
    ext: join(dir, 'server.ext'),
  }
}

/** The HTTP status `GET https://<addr><path>` (default /v2/) answers with, trusting only `ca`; undefined when nothing answers. */
export function tlsStatus(
  addr: string,
  ca: string,
  auth?: { user: string; token: string },
  path = '/v2/',
  headers: Record<string, string> = {},
): Promise<number | undefined> {
  const [host, port] = addr.split(':')
  return new Promise((resolve) => {
    const req = request(
      { host, port: Number(port), path, ca, headers, timeout: 2000, ...(auth ? { auth: `${auth.user}:${auth.token}` } : {}) },
      (res) => {
        res.resume()
        resolve(res.statusCode)
      },
    )
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(undefined))
    req.end()
  })
}

/** The registry's config: TLS with our certificate, htpasswd auth, loopback only. */
export function authRegistryConfig(addr: string, p: ReturnType<typeof paths>): string {
  return registryConfig(addr, p.data, { realm: 'doc-server-test-registry', htpasswd: p.htpasswd, cert: p.cert, key: p.key })
}

/** A CA and a server certificate for 127.0.0.1 signed by it, made once and kept while valid for another day. */
async function ensureCertificates(p: ReturnType<typeof paths>, host: string): Promise<void> {
  const valid = async (cert: string) =>
    existsSync(cert) && (await succeeds(['openssl', 'x509', '-checkend', '86400', '-noout', '-in', cert]))
  if ((await valid(p.caCert)) && (await valid(p.cert))) return
  await run([
    'openssl',
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-sha256',
    '-days',
    '3650',
    '-keyout',
    p.caKey,
    '-out',
    p.caCert,
    '-subj',
    '/CN=doc-server test registry CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
  await run(['openssl', 'req', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-keyout', p.key, '-out', p.csr, '-subj', `/CN=${host}`])
  writeFileSync(
    p.ext,
    `subjectAltName=IP:${host}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`,
  )
  await run([
    'openssl',
    'x509',
    '-req',
    '-sha256',
    '-days',
    '825',
    '-in',
    p.csr,
    '-CA',
    p.caCert,
    '-CAkey',
    p.caKey,
    '-CAcreateserial',
    '-out',
    p.cert,
    '-extfile',
    p.ext,
  ])
}

/** Stops the auth registry this project started; its data, certificates and trust stay. */
export async function stopAuthRegistry(env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  const p = paths(env)
  return stopOwned(p.pidfile, 'docker-registry')
}

/**
 * Starts (or restarts, so it reads the new password file) the auth registry on
 * `addr` with one account: `user` and a bcrypt hash of `token`, which goes to
 * htpasswd on stdin and is never written anywhere in clear. Root only: the
 * engine's trust lives in /etc/docker/certs.d.
 */
export async function ensureAuthRegistry(
  user: string,
  token: string,
  opts: { addr?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<AuthRegistry> {
  const addr = opts.addr ?? AUTH_REGISTRY
  const env = opts.env ?? process.env
  const [host] = addr.split(':')
  if (process.getuid?.() !== 0)
    throw new PipelineError(`registry: the auth registry needs root, to make the engine trust its CA in /etc/docker/certs.d/${addr}/`)
  await ensureDebianPackages([
    { pkg: 'docker-registry', provides: '/usr/bin/docker-registry' },
    { pkg: 'apache2-utils', provides: 'htpasswd' },
    { pkg: 'openssl', provides: 'openssl' },
  ])
  const p = paths(env)
  mkdirSync(p.data, { recursive: true })
  await ensureCertificates(p, host!)
  const trust = join('/etc/docker/certs.d', addr)
  mkdirSync(trust, { recursive: true })
  writeFileSync(join(trust, 'ca.crt'), readFileSync(p.caCert, 'utf8'))
  await run(['htpasswd', '-B', '-i', '-c', p.htpasswd, user], { input: token, secrets: [token] })
  writeFileSync(p.config, authRegistryConfig(addr, p))
  await stopAuthRegistry(env)
  const ca = readFileSync(p.caCert, 'utf8')
  if ((await tlsStatus(addr, ca)) !== undefined)
    throw new PipelineError(`registry: ${addr} is taken by a registry this project did not start; stop it first`)
  say(`starting docker-registry with htpasswd auth and TLS on ${addr} (data: ${p.data})`)
  const started = await startDetached({
    binary: '/usr/bin/docker-registry',
    args: ['serve', p.config],
    log: p.log,
    ready: async () => (await tlsStatus(addr, ca)) === 401,
    timeoutMs: 30_000,
    pollMs: 300,
  })
  if (!started.ok) {
    const why = started.exited !== null ? `exited ${started.exited}` : 'did not answer /v2/ with 401 within 30 s and was stopped'
    throw new PipelineError(
      `registry: auth registry on ${addr} ${why}: ${lastWords(started.logTail ?? '')} (log: ${p.log})`,
      started.logTail,
    )
  }
  if (started.pid) writeFileSync(p.pidfile, `${started.pid}\n`)
  return { addr, caCert: p.caCert, pid: started.pid, dataDir: p.data, log: p.log }
}
