import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { ensureDebianPackages } from '../tools/apt.ts'
import { PipelineError } from '../core/errors.ts'
import { retry, run, succeeds } from '../core/run.ts'
import { requireTool } from '../tools/which.ts'
import { BASE_IMAGES, VERSIONS } from '../tools/versions.ts'
import { dockerEnv } from '../build/docker.ts'
import { ensureCargoTool } from '../tools/cargo.ts'
import { imageExists } from '../build/docker.ts'
import { say } from '../core/output.ts'

export type BaseImageSource = 'present' | 'pulled' | 'stand-in'

/** Label on every stand-in, so nobody mistakes one for the published image. */
export const STAND_IN_LABEL = 'org.doc-server.ci.stand-in'

/** The Debian packages distroless static (Debian 12) is made of: no C library, nothing executable. */
export const DISTROLESS_STATIC_PACKAGES = ['base-files', 'netbase', 'tzdata', 'media-types', 'ca-certificates'] as const
/** distroless cc (Debian 12): static's packages plus the C and C++ runtime. */
export const DISTROLESS_CC_PACKAGES = [
  ...DISTROLESS_STATIC_PACKAGES,
  'libc6',
  'libssl3',
  'libgcc-s1',
  'libstdc++6',
  'libgomp1',
  'gcc-12-base',
] as const

/** The Debian packages of each distroless base the pipeline can build a stand-in for. */
const DISTROLESS_PACKAGES: Record<string, readonly string[]> = {
  [BASE_IMAGES.runtime]: DISTROLESS_STATIC_PACKAGES,
  [BASE_IMAGES.runtimeCc]: DISTROLESS_CC_PACKAGES,
}

/** What the chef stand-in adds to a minimal bookworm: the build tools of the rust:bookworm image it stands in for. */
const CHEF_DEBIAN_PACKAGES = ['ca-certificates', 'curl', 'git', 'gcc', 'libc6-dev', 'make', 'pkg-config', 'libssl-dev', 'xz-utils']
const DEBIAN_MIRROR = 'http://deb.debian.org/debian'
const RUSTUP_PROXIES = [
  'cargo',
  'cargo-clippy',
  'cargo-fmt',
  'clippy-driver',
  'rust-gdb',
  'rust-gdbgui',
  'rust-lldb',
  'rustc',
  'rustdoc',
  'rustfmt',
]

/**
 * Each base image under its exact public name: present already, pulled, or
 * (no registry reachable, as here and on air-gapped machines) a faithful
 * stand-in built once and then reused like the real one. By default the two
 * the Doc Server image needs; `names` may add the cc runtime (the bench).
 */
export async function ensureBaseImages(
  docker: string,
  cache: string,
  names: readonly string[] = [BASE_IMAGES.chef, BASE_IMAGES.runtime],
): Promise<{ name: string; source: BaseImageSource }[]> {
  const out: { name: string; source: BaseImageSource }[] = []
  for (const name of names) {
    const build = name === BASE_IMAGES.chef ? buildChefStandIn : DISTROLESS_PACKAGES[name] ? buildRuntimeStandIn : undefined
    if (!build)
      throw new PipelineError(`base images: no stand-in is known for ${name}; use one of ${Object.values(BASE_IMAGES).join(', ')}`)
    if (await imageExists(docker, name)) {
      out.push({ name, source: 'present' })
      continue
    }
    say(`pulling ${name}`)
    const pulled = await retry(2, 2000, async () => {
      if (!(await succeeds([docker, 'pull', name], { env: dockerEnv(), timeoutMs: 180_000 }))) throw new Error('pull failed')
      return true
    }).catch(() => false)
    if (pulled) {
      out.push({ name, source: 'pulled' })
      continue
    }
    say(`${name} cannot be pulled: building a stand-in under the same name (once per machine)`)
    await build(docker, name, cache)
    out.push({ name, source: 'stand-in' })
  }
  return out
}

/** Imports a root filesystem as an image, with the given Dockerfile-style config changes. */
async function importRootfs(docker: string, rootfs: string, name: string, changes: string[]): Promise<void> {
  rmSync(join(rootfs, 'dev'), { recursive: true, force: true })
  mkdirSync(join(rootfs, 'dev'))
  const tar = `${rootfs}.tar`
  say(`packing ${name}`)
  await run(['tar', '--numeric-owner', '--xattrs', '-C', rootfs, '-cf', tar, '.'])
  try {
    await run([docker, 'import', ...changes.flatMap((c) => ['--change', c]), tar, name], { env: dockerEnv() })
  } finally {
    rmSync(tar, { force: true })
  }
}

/** The machine's pinned Rust toolchain: its sysroot and host triple. */
async function rustToolchain(): Promise<{ sysroot: string; host: string; rustup: string }> {
  const rustup = requireTool('rustup')
  const rustc = (...a: string[]) =>
    run([rustup, 'run', VERSIONS.rust, 'rustc', ...a]).catch(() => {
      throw new PipelineError(`rust: toolchain ${VERSIONS.rust} is not installed: rustup toolchain install ${VERSIONS.rust}`)
    })
  const sysroot = realpathSync((await rustc('--print', 'sysroot')).stdout.trim())
  const host = /^host: (\S+)$/m.exec((await rustc('-vV')).stdout)?.[1]
  if (!host) throw new PipelineError('rust: `rustc -vV` did not name the host triple')
  return { sysroot, host, rustup: realpathSync(rustup) }
}

/**
 * The cargo-chef image, rebuilt the way it is published: Debian bookworm
 * (debootstrap) with the build tools of rust:bookworm, the pinned Rust
 * toolchain under rustup in /usr/local, and cargo-chef installed with
 * `cargo install --locked` at the pinned version.
 */
async function buildChefStandIn(docker: string, name: string, cache: string): Promise<void> {
  await ensureDebianPackages([{ pkg: 'debootstrap', provides: '/usr/sbin/debootstrap' }])
  const toolchain = await rustToolchain()
  const chef = await ensureCargoTool(cache, 'cargo-chef', VERSIONS.cargoChef)
  const work = join(cache, 'base-images')
  const debs = join(work, 'debootstrap-debs')
  mkdirSync(debs, { recursive: true })
  const rootfs = mkdtempSync(join(work, 'chef-rootfs-'))
  try {
    say(`debootstrap ${VERSIONS.debianSuite} (packages cached in ${debs})`)
    await run(
      [
        '/usr/sbin/debootstrap',
        '--variant=minbase',
        `--include=${CHEF_DEBIAN_PACKAGES.join(',')}`,
        `--cache-dir=${debs}`,
        VERSIONS.debianSuite,
        rootfs,
        DEBIAN_MIRROR,
      ],
      { timeoutMs: 30 * 60_000 },
    )
    rmSync(join(rootfs, 'etc', 'apt', 'sources.list'), { force: true })
    writeFileSync(join(rootfs, 'etc', 'apt', 'sources.list.d', 'debian.sources'), debianSources(VERSIONS.debianSuite))
    for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
      for (const f of readdirSync(join(rootfs, d)))
        if (f !== 'partial' && f !== 'lock') rmSync(join(rootfs, d, f), { recursive: true, force: true })
    }

    const toolchainName = `${VERSIONS.rust}-${toolchain.host}`
    const rustupHome = join(rootfs, 'usr/local/rustup')
    const cargoBin = join(rootfs, 'usr/local/cargo/bin')
    mkdirSync(join(rustupHome, 'toolchains'), { recursive: true })
    mkdirSync(cargoBin, { recursive: true })
    say(`copying Rust ${VERSIONS.rust} (${toolchain.host})`)
    // The docs are most of a toolchain's size and the published image has none.
    await run(['cp', '-a', toolchain.sysroot, join(rustupHome, 'toolchains', toolchainName)])
    rmSync(join(rustupHome, 'toolchains', toolchainName, 'share', 'doc'), { recursive: true, force: true })
    writeFileSync(
      join(rustupHome, 'settings.toml'),
      `version = "12"\ndefault_toolchain = "${toolchainName}"\nprofile = "minimal"\n\n[overrides]\n`,
    )
    copyFileSync(toolchain.rustup, join(cargoBin, 'rustup'))
    chmodSync(join(cargoBin, 'rustup'), 0o755)
    for (const proxy of RUSTUP_PROXIES) linkSync(join(cargoBin, 'rustup'), join(cargoBin, proxy))
    copyFileSync(chef, join(cargoBin, 'cargo-chef'))
    chmodSync(join(cargoBin, 'cargo-chef'), 0o755)

    await importRootfs(docker, rootfs, name, [
      'ENV RUSTUP_HOME=/usr/local/rustup',
      'ENV CARGO_HOME=/usr/local/cargo',
      'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      `ENV RUST_VERSION=${VERSIONS.rust}`,
      `LABEL ${STAND_IN_LABEL}=true`,
      'CMD ["bash"]',
    ])
  } finally {
    rmSync(rootfs, { recursive: true, force: true })
  }
}

function debianSources(suite: string): string {
  return [
    `Types: deb\nURIs: ${DEBIAN_MIRROR}\nSuites: ${suite} ${suite}-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n`,
    `Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: ${suite}-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n`,
  ].join('\n')
}

function hostCodename(): string | undefined {
  if (!existsSync('/etc/os-release')) return undefined
  return /^VERSION_CODENAME=(\S+)$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1]
}

/** The .deb files of a distroless package set, fetched once with apt-get and kept in the cache. */
async function distrolessDebs(dir: string, packages: readonly string[], name: string): Promise<string[]> {
  mkdirSync(dir, { recursive: true })
  const debFor = (pkg: string) => readdirSync(dir).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'))
  const missing = packages.filter((p) => !debFor(p))
  if (missing.length > 0) {
    const codename = hostCodename()
    if (codename !== VERSIONS.debianSuite) {
      throw new PipelineError(
        `base images: the distroless stand-in is assembled from Debian ${VERSIONS.debianSuite} packages with apt-get, but this machine is ${codename ?? 'not Debian'}; pull ${name} or load it with docker load`,
      )
    }
    const apt = requireTool('apt-get')
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    say(`apt-get download ${missing.join(' ')}`)
    const download = () => run([apt, 'download', ...missing], { cwd: dir, env })
    // A machine whose package lists were never fetched cannot download; fetch them once and retry.
    await download().catch(async () => {
      await run([apt, 'update', '-qq'], { env })
      await download()
    })
  }
  return packages.map((p) => {
    const f = debFor(p)
    if (!f) throw new PipelineError(`base images: apt-get download gave no .deb for ${p}`)
    return join(dir, f)
  })
}

/** The dpkg status entry of one package, as distroless keeps it in /var/lib/dpkg/status.d/. */
export function statusEntry(control: string): string {
  const lines = control
    .replace(/\s+$/, '')
    .split('\n')
    .filter((l) => !/^Status:/.test(l))
  const at = lines.findIndex((l) => l.startsWith('Package:'))
  lines.splice(at + 1, 0, 'Status: install ok installed')
  return `${lines.join('\n')}\n`
}

/**
 * distroless static or cc (Debian 12), assembled the way distroless itself is: the
 * listed packages unpacked (never installed: no maintainer scripts, no shell),
 * a CA bundle, passwd and group with nonroot 65532, /tmp 1777, and one dpkg
 * status file per package so scanners see the exact versions.
 */
async function buildRuntimeStandIn(docker: string, name: string, cache: string): Promise<void> {
  const work = join(cache, 'base-images')
  const packages = DISTROLESS_PACKAGES[name]
  if (!packages) throw new PipelineError(`base images: no distroless package set is known for ${name}`)
  const debs = await distrolessDebs(join(work, 'distroless-debs'), packages, name)
  const rootfs = mkdtempSync(join(work, 'distroless-rootfs-'))
  try {
    const statusDir = join(rootfs, 'var/lib/dpkg/status.d')
    mkdirSync(statusDir, { recursive: true })
    for (const deb of debs) {
      say(`unpacking ${deb.split('/').pop()}`)
      await run(['dpkg-deb', '-x', deb, rootfs])
      const control = (await run(['dpkg-deb', '-f', deb])).stdout
      const pkg = /^Package: (\S+)$/m.exec(control)?.[1]
      if (!pkg) throw new PipelineError(`base images: ${deb} has no Package field`)
      writeFileSync(join(statusDir, pkg), statusEntry(control))
      const md5 = await run(['dpkg-deb', '-I', deb, 'md5sums'], { okCodes: [1, 2] })
      if (md5.exitCode === 0 && md5.stdout.trim()) writeFileSync(join(statusDir, `${pkg}.md5sums`), md5.stdout)
    }
    // update-ca-certificates (a maintainer script, never run here) would write this bundle.
    const mozilla = join(rootfs, 'usr/share/ca-certificates/mozilla')
    const bundle = readdirSync(mozilla)
      .filter((f) => f.endsWith('.crt'))
      .sort()
      .map((f) => readFileSync(join(mozilla, f), 'utf8').replace(/\s*$/, '\n'))
      .join('')
    mkdirSync(join(rootfs, 'etc/ssl/certs'), { recursive: true })
    writeFileSync(join(rootfs, 'etc/ssl/certs/ca-certificates.crt'), bundle)
    rmSync(join(rootfs, 'usr/share/ca-certificates'), { recursive: true, force: true })
    for (const d of ['usr/share/man', 'usr/share/info', 'usr/share/lintian', 'usr/share/doc-base'])
      rmSync(join(rootfs, d), { recursive: true, force: true })
    const docs = join(rootfs, 'usr/share/doc')
    // Licences stay, as in distroless; the rest of the docs go.
    for (const pkg of existsSync(docs) ? readdirSync(docs) : []) {
      for (const f of readdirSync(join(docs, pkg))) if (f !== 'copyright') rmSync(join(docs, pkg, f), { recursive: true, force: true })
    }

    writeFileSync(
      join(rootfs, 'etc/passwd'),
      'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n',
    )
    writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n')
    writeFileSync(
      join(rootfs, 'etc/nsswitch.conf'),
      'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n',
    )
    for (const [dir, mode] of [
      ['tmp', 0o1777],
      ['root', 0o700],
      ['home/nonroot', 0o700],
    ] as const) {
      mkdirSync(join(rootfs, dir), { recursive: true })
      chmodSync(join(rootfs, dir), mode)
    }
    chownSync(join(rootfs, 'home/nonroot'), 65532, 65532)
    for (const sh of ['bin/sh', 'bin/bash', 'usr/bin/sh', 'bin/dash']) {
      if (existsSync(join(rootfs, sh))) throw new PipelineError(`base images: the distroless stand-in would contain a shell (${sh})`)
    }

    await importRootfs(docker, rootfs, name, [
      'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt',
      'USER 65532',
      'WORKDIR /home/nonroot',
      `LABEL ${STAND_IN_LABEL}=true`,
    ])
  } finally {
    rmSync(rootfs, { recursive: true, force: true })
  }
}
