import { loadConfig } from '../core/config.ts'
import { ensureGoTool } from './go.ts'
import { VERSIONS } from './versions.ts'

/** Builds actionlint once per machine (bootstrap calls this too) and returns its path. */
export function ensureActionlint(): Promise<string> {
  return ensureGoTool(loadConfig().cacheDir, {
    binary: 'actionlint',
    pkg: 'github.com/rhysd/actionlint/cmd/actionlint',
    version: VERSIONS.actionlint,
  })
}
