import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { findTool, requireTool } from '../lib/core/tools.ts'

const t = suite('tools')

t('finds a tool on PATH', () => {
  assert.match(findTool('sh') ?? '', /\/sh$/)
})

t('a missing tool names itself and how to get it', () => {
  assert.throws(() => requireTool('shellcheck', { PATH: '/nonexistent' }), /^shellcheck not found: `apt-get install shellcheck`/)
  assert.throws(() => requireTool('cargo', { PATH: '/nonexistent' }), /^cargo not found: install Rust with rustup/)
  assert.throws(() => requireTool('frobnicate', { PATH: '' }), /^frobnicate not found: install frobnicate/)
})

t.run()
