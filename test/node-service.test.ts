/**
 * How the local node's services (containerd, kubelet, kube-proxy) start, and
 * how a start that fails is reported: real processes, started detached as the
 * node's are, with their own log.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ensureService, type Service } from '../lib/sandbox/node.ts'
import { stopOwned } from '../lib/sandbox/service.ts'
import { lastWords } from '../lib/core/run.ts'

const t = suite('node-service')
const dir = mkdtempSync(join(tmpdir(), 'node-service-'))
const service = (name: string, script: string, ready: () => Promise<boolean>, timeoutMs = 3000): Service => ({
  name,
  binary: '/bin/sh',
  args: ['-c', script],
  log: join(dir, `${name}.log`),
  pid: join(dir, `${name}.pid`),
  ready,
  timeoutMs,
})
const running = (marker: string) =>
  readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .some((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(marker)
      } catch {
        return false
      }
    })

t('a service that exits is named with its exit code and its own last log line, in one line', async () => {
  const s = service(
    'kubelet',
    'echo "I1127 starting kubelet"; echo "E1127 run.go:72] failed to run Kubelet: invalid configuration: cgroupDriver" >&2; exit 3',
    async () => false,
  )
  const err = await ensureService(s).then(
    () => undefined,
    (e: Error & { details?: string }) => e,
  )
  assert.ok(err, 'the start fails')
  assert.is(
    err.message,
    `cluster: the node's kubelet exited 3: E1127 run.go:72] failed to run Kubelet: invalid configuration: cgroupDriver (log: ${s.log})`,
  )
  assert.match(err.details ?? '', /I1127 starting kubelet/, 'the log tail is in the details')
  assert.not.ok(existsSync(s.pid), 'no pidfile for a service that did not start')
})

t('a service that never answers is stopped, not left holding its port', async () => {
  const marker = `never-ready-${process.pid}`
  const s = service('containerd', `echo "${marker} waiting"; while :; do sleep 1; done`, async () => false, 1500)
  const err = await ensureService(s).then(
    () => undefined,
    (e: Error) => e,
  )
  assert.is(
    err?.message,
    `cluster: the node's containerd did not become ready within 1.5 s and was stopped: ${marker} waiting (log: ${s.log})`,
  )
  assert.not.ok(running(`${marker} waiting`), 'the process is gone')
})

t('a service that answers gets a pidfile, and the next call finds it running', async () => {
  // A shell that stays a shell (no exec), as the pidfile check wants the program it started.
  const marker = `ready-${process.pid}`
  const s = service('kube-proxy', `while :; do sleep 1; done # ${marker}`, async () => running(marker))
  try {
    assert.is(await ensureService(s), 'started')
    assert.ok(existsSync(s.pid))
    assert.is(await ensureService(s), 'running', 'a live pidfile is reused, not a second process')
  } finally {
    assert.ok(await stopOwned(s.pid, 'sh'))
  }
  assert.not.ok(running(marker))
})

t('the last words of a log prefer its last error line', () => {
  const log = 'I0001 up\nE0002 bind: address already in use\nI0003 retrying\n\n'
  assert.is(lastWords(log), 'I0003 retrying')
  assert.is(lastWords(log, /\bE\d{4}\b/), 'E0002 bind: address already in use')
  assert.is(lastWords(''), '(empty log)')
  assert.is(lastWords('x'.repeat(400)).length, 300)
})

t.after(() => rmSync(dir, { recursive: true, force: true }))
t.run()
