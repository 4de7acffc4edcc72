import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { formatRef, imageRef, isValidTag, parseRef, pinnedRef, sanitizeTag } from '../lib/build/image-ref.ts'

const t = suite('image-ref')

t('a branch with slashes, spaces and capitals becomes a valid tag', () => {
  const tag = sanitizeTag('feature/Foo Bar')
  assert.is(tag, 'feature-Foo-Bar')
  assert.ok(isValidTag(tag))
})

t('odd branches never yield an invalid tag', () => {
  for (const raw of [
    '-leading-dash',
    '.dot',
    'a'.repeat(300),
    'dependabot/npm_and_yarn/zx-8.0',
    'ü-umlaut/ß',
    'x//y',
    'release/1.2.3+build',
    'trailing-',
  ]) {
    const tag = sanitizeTag(raw)
    assert.ok(isValidTag(tag), `${raw} -> ${tag}`)
    assert.ok(tag.length <= 128)
  }
})

t('a tag with nothing usable is refused with one line', () => {
  assert.throws(() => sanitizeTag('///'), /has no usable characters/)
  assert.throws(() => sanitizeTag(''), /has no usable characters/)
})

t('the owner is lower-cased and the reference formatted', () => {
  const ref = imageRef({ registry: 'ghcr.io', owner: 'My-Org', name: 'agent-docs', tag: 'a'.repeat(40) })
  assert.is(formatRef(ref), `ghcr.io/my-org/agent-docs:${'a'.repeat(40)}`)
})

t('invalid parts are refused', () => {
  assert.throws(() => imageRef({ registry: 'ghcr.io', owner: 'bad owner', name: 'x' }), /owner "bad owner"/)
  assert.throws(() => imageRef({ registry: 'ghcr.io', owner: 'o', name: 'Bad' }), /name "Bad"/)
  assert.throws(() => imageRef({ registry: 'not a host', owner: 'o', name: 'x' }), /registry/)
  assert.throws(() => imageRef({ registry: 'r', owner: 'o', name: 'x', digest: 'sha256:xyz' }), /digest/)
})

t('parse and pin round-trip', () => {
  const digest = `sha256:${'ab'.repeat(32)}`
  const ref = parseRef(`127.0.0.1:5000/local/agent-docs:abc@${digest}`)
  assert.is(ref.registry, '127.0.0.1:5000')
  assert.is(ref.tag, 'abc')
  assert.is(pinnedRef(ref), `127.0.0.1:5000/local/agent-docs@${digest}`)
  assert.throws(() => parseRef('agent-docs'), /is not registry\/owner\/name/)
  assert.throws(() => pinnedRef(parseRef('r/o/n:t')), /no digest/)
})

t.run()
