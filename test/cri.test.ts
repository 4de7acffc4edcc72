/**
 * criAnswers asks the CRI what the kubelet asks first; test/e2e/containerd.test.ts
 * asks a real containerd. The window in which containerd's CRI still answers
 * "server is not initialized yet" lasts tens of milliseconds, too short to hit
 * on purpose, so here an HTTP/2 server on a unix socket answers with that
 * status (grpc-status 2), then with 0, to pin down how the answer is read.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Http2Server } from 'node:http2'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { criAnswers } from '../lib/sandbox/cri.ts'
import { setUp } from './helpers/hooks.ts'

const t = suite('cri')
const dir = mkdtempSync(join(tmpdir(), 'cri-'))
let initialized = false
const paths: string[] = []
let server: Http2Server

setUp(t, 'cri', async () => {
  server = createServer((req, res) => {
    paths.push(req.url)
    req.resume()
    req.on('end', () => {
      if (!initialized) {
        res.writeHead(200, { 'content-type': 'application/grpc', 'grpc-status': '2', 'grpc-message': 'server is not initialized yet' })
        res.end()
        return
      }
      res.writeHead(200, { 'content-type': 'application/grpc' })
      res.addTrailers({ 'grpc-status': '0' })
      res.end(new Uint8Array([0, 0, 0, 0, 0]))
    })
  })
  await new Promise<void>((r) => server.listen(join(dir, 'cri.sock'), r))
})
t.after(async () => {
  await new Promise((r) => server.close(r))
  rmSync(dir, { recursive: true, force: true })
})

t('no socket: not answering', async () => {
  assert.is(await criAnswers(join(dir, 'missing.sock')), false)
})

t('a runtime still restoring its state is not ready; once initialized it is', async () => {
  assert.is(await criAnswers(join(dir, 'cri.sock')), false)
  initialized = true
  assert.is(await criAnswers(join(dir, 'cri.sock')), true)
  assert.equal([...new Set(paths)], ['/runtime.v1.RuntimeService/Version'])
})

t('a socket that never answers is not ready after the timeout', async () => {
  const silent = join(dir, 'silent.sock')
  const { createServer: netServer } = await import('node:net')
  const s = netServer(() => undefined)
  await new Promise<void>((r) => s.listen(silent, r))
  try {
    const started = Date.now()
    assert.is(await criAnswers(silent, 500), false)
    assert.ok(Date.now() - started < 3000)
  } finally {
    s.close()
  }
})

t.run()
