import { pushFixtureImage } from './fixture-images.ts'

/**
 * An image whose binary lists tokio 1.13.0 (CVE-2021-45710), pushed to the local
 * registry; on `base` (the real Doc Server image) it also runs on the node.
 */
export async function pushVulnerableImage(
  docker: string,
  work: string,
  base?: string,
): Promise<{ repository: string; digest: string; ref: string }> {
  const { repository, digest, ref } = await pushFixtureImage(docker, work, 'vulnerable', base)
  return { repository, digest, ref }
}
