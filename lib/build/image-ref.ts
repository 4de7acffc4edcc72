import { PipelineError } from '../core/errors.ts'

export interface ImageRef {
  registry: string
  owner: string
  name: string
  tag?: string
  digest?: string
}

const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
const DIGEST = /^sha256:[a-f0-9]{64}$/
const REGISTRY = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?$/

/**
 * Turns any string (a branch like `feature/Foo Bar`) into a valid OCI tag:
 * characters outside [A-Za-z0-9_.-] become `-`, the first character is a word
 * character, at most 128 characters. An empty result is refused.
 */
export function sanitizeTag(raw: string): string {
  let tag = raw
    .trim()
    .replace(/[^A-Za-z0-9_.-]+/g, '-')
    .replace(/-{2,}/g, '-')
  tag = tag
    .replace(/^[.-]+/, '')
    .slice(0, 128)
    .replace(/[.-]+$/, '')
  if (!TAG.test(tag)) throw new PipelineError(`image: tag "${raw}" has no usable characters; use letters, digits, _ . -`)
  return tag
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag)
}

/** Lower-cases the owner (GitHub owners may have capitals; registries refuse them). */
export function imageRef(parts: { registry: string; owner: string; name: string; tag?: string; digest?: string }): ImageRef {
  const owner = parts.owner.toLowerCase()
  if (!REGISTRY.test(parts.registry)) throw new PipelineError(`image: registry "${parts.registry}" is not a host[:port]`)
  for (const [what, v] of [
    ['owner', owner],
    ['name', parts.name],
  ] as const) {
    if (!COMPONENT.test(v))
      throw new PipelineError(`image: ${what} "${v}" is not a valid repository path component (lower-case letters, digits, . _ -)`)
  }
  if (parts.digest !== undefined && !DIGEST.test(parts.digest))
    throw new PipelineError(`image: digest "${parts.digest}" is not sha256:<64 hex>`)
  const ref: ImageRef = { registry: parts.registry, owner, name: parts.name }
  if (parts.tag !== undefined) ref.tag = sanitizeTag(parts.tag)
  if (parts.digest !== undefined) ref.digest = parts.digest
  return ref
}

/** `registry/owner/name` without tag or digest. */
export function repository(ref: ImageRef): string {
  return `${ref.registry}/${ref.owner}/${ref.name}`
}

/** `registry/owner/name[:tag][@digest]`. */
export function formatRef(ref: ImageRef): string {
  return repository(ref) + (ref.tag ? `:${ref.tag}` : '') + (ref.digest ? `@${ref.digest}` : '')
}

/** The reference that names exactly one image: by digest. */
export function pinnedRef(ref: ImageRef): string {
  if (!ref.digest) throw new PipelineError(`image: ${formatRef(ref)} has no digest to pin`)
  return `${repository(ref)}@${ref.digest}`
}

/** Parses `registry/owner/name[:tag][@sha256:…]`; refuses anything else with one line. */
export function parseRef(text: string): ImageRef {
  const m = /^([^/]+)\/([^/]+)\/([^:@/]+)(?::([^@]+))?(?:@(.+))?$/.exec(text.trim())
  if (!m) throw new PipelineError(`image: "${text}" is not registry/owner/name[:tag][@digest]`)
  const [, registry, owner, name, tag, digest] = m
  if (tag !== undefined && !TAG.test(tag)) throw new PipelineError(`image: tag "${tag}" in "${text}" is not a valid OCI tag`)
  return imageRef({ registry: registry!, owner: owner!, name: name!, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) })
}
