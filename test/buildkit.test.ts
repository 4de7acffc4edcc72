import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildkitLdflags, buildkitWrapperGoMod } from '../lib/tools/buildkit.ts'
import { buildkitdConfig } from '../lib/sandbox/buildkitd.ts'

const t = suite('buildkit')

/** The shape of BuildKit's own go.mod: a go line, requires, an exclude block with comments, a tool block. */
const GO_MOD = `module github.com/moby/buildkit

go 1.26.8

require (
\tgithub.com/containerd/containerd/v2 v2.4.2
)

exclude (
\t// TODO: remove once the snapshotters are updated.
\t//
\tgithub.com/davecgh/go-spew v1.1.2-0.20180830191138-d8f796af33cc
\tgithub.com/pmezard/go-difflib v1.0.1-0.20181226105442-5d4384ee4fb2
)

tool (
\tgoogle.golang.org/protobuf/cmd/protoc-gen-go
)
`

t('the wrapper module requires BuildKit and carries its excludes, so it resolves the versions BuildKit builds with', () => {
  const mod = buildkitWrapperGoMod('v0.34.2', GO_MOD)
  assert.is(
    mod,
    'module local/buildkit-build\n\ngo 1.26.8\n\nrequire github.com/moby/buildkit v0.34.2\n\nexclude (\n\tgithub.com/davecgh/go-spew v1.1.2-0.20180830191138-d8f796af33cc\n\tgithub.com/pmezard/go-difflib v1.0.1-0.20181226105442-5d4384ee4fb2\n)\n',
  )
  assert.not.match(buildkitWrapperGoMod('v0.34.2', 'module x\n\ngo 1.26\n'), /exclude/)
  assert.throws(() => buildkitWrapperGoMod('v0.34.2', 'module x\n'), /^tools: github\.com\/moby\/buildkit v0\.34\.2 go\.mod has no go line/)
  assert.match(buildkitLdflags('v0.34.2'), /-X github\.com\/moby\/buildkit\/version\.Version=v0\.34\.2/)
})

t(
  "buildkitd: its own root and socket, the OCI worker on the host network, docker.io and gcr.io from the local registry, the engine's CAs",
  () => {
    const certs = mkdtempSync(join(tmpdir(), 'certs-'))
    mkdirSync(join(certs, '127.0.0.1:5443'))
    writeFileSync(join(certs, '127.0.0.1:5443', 'ca.crt'), 'x')
    mkdirSync(join(certs, 'no-ca.example'))
    const text = buildkitdConfig({ root: '/s/root', socket: '/s/bk.sock', mirror: '127.0.0.1:5000', certsDir: certs })
    // TOML tables and string arrays as written here read the same as YAML flow values; check the facts, not the layout.
    assert.match(text, /^root = "\/s\/root"$/m)
    assert.match(text, /^\[grpc\]\n {2}address = \["unix:\/\/\/s\/bk\.sock"\]$/m)
    assert.match(text, /^\[worker\.oci\]\n {2}enabled = true\n {2}snapshotter = "overlayfs"\n {2}networkMode = "host"$/m)
    assert.match(text, /^\[worker\.containerd\]\n {2}enabled = false$/m)
    assert.match(text, /^\[registry\."docker\.io"\]\n {2}mirrors = \["127\.0\.0\.1:5000"\]$/m)
    assert.match(text, /^\[registry\."gcr\.io"\]\n {2}mirrors = \["127\.0\.0\.1:5000"\]$/m)
    assert.match(text, /^\[registry\."127\.0\.0\.1:5000"\]\n {2}http = true$/m)
    assert.match(
      text,
      new RegExp(
        `^\\[registry\\."127\\.0\\.0\\.1:5443"\\]\\n {2}http = false\\n {2}tlsconfigdir = \\["${certs}/127\\.0\\.0\\.1:5443"\\]$`,
        'm',
      ),
    )
    assert.not.match(text, /no-ca\.example/, 'a host without a CA file is not configured')
    assert.match(text, /maxUsedSpace = "20GB"/)
  },
)

t.run()
