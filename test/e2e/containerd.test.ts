/**
 * The node's containerd, for real: Debian's containerd with the node's own
 * config, in a temporary directory beside the cluster's, started the way the
 * node starts it. Its CRI must answer when the node would start the kubelet
 * (a kubelet started while the CRI still restores its state exits at once).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { ensureDebianPackages } from '../../lib/tools/apt.ts'
import { criAnswers } from '../../lib/sandbox/cri.ts'
import { NODE_PACKAGES, containerdService, ensureService } from '../../lib/sandbox/node.ts'
import { containerdConfig, nodeDirs } from '../../lib/sandbox/node-config.ts'
import { stopOwned } from '../../lib/sandbox/service.ts'
import { setUp } from '../helpers/hooks.ts'

const t = suite('e2e: node containerd')
const dir = mkdtempSync(join(tmpdir(), 'node-containerd-'))

setUp(t, 'e2e: node containerd', async () => {
  await ensureDebianPackages(NODE_PACKAGES)
})
t.after(() => rmSync(dir, { recursive: true, force: true }))

t('containerd started as the node starts it: its CRI answers at once, and no longer once stopped', async () => {
  const d = nodeDirs(join(dir, 'node'))
  mkdirSync(d.containerd.dir, { recursive: true })
  writeFileSync(d.containerd.config, containerdConfig(d))
  assert.is(await criAnswers(d.containerd.socket), false, 'nothing listens yet')
  try {
    assert.is(await ensureService(containerdService(d)), 'started')
    assert.is(await criAnswers(d.containerd.socket), true, "the kubelet's first call finds the CRI initialized")
  } finally {
    await stopOwned(d.containerd.pid, 'containerd')
  }
  assert.is(await criAnswers(d.containerd.socket), false, 'stopped')
})

t.run()
