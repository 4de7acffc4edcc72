/** The one way the toolkit writes a JSON file: whole, then renamed into place. */
import { mkdirSync,renameSync,writeFileSync } from 'node:fs'
import { dirname } from 'node:path'

/** Written whole and renamed into place: an interrupted run leaves the previous record. */
export function writeJson(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(`${path}.tmp-${process.pid}`, `${JSON.stringify(value, null, 2)}\n`)
  renameSync(`${path}.tmp-${process.pid}`, path)
}
