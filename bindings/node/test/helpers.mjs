// Shared pieces of the Node tests: temporary folders, and (from parties.mjs) a cheap
// KDF and Baileys parties.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export * from './parties.mjs'

/** A temporary folder, removed when the test ends. */
export function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'sealkv-node-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

