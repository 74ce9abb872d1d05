// A bot moves between Baileys' folder and a sealed store with the `sealkv` CLI, in the
// middle of a conversation, and the conversation goes on.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import * as baileys from 'baileys'
import { makeLibSignalRepository } from 'baileys/lib/Signal/libsignal.js'
import { party, addPreKeys, bundle, silent, talk, tempDir, PASSPHRASE } from './helpers.mjs'

const ALICE = '15550001111@s.whatsapp.net'
const BOB = '15550002222@s.whatsapp.net'
const REPO = fileURLToPath(new URL('../../../', import.meta.url))
const CLI = process.env.SEALKV_BIN ?? join(REPO, 'target', 'debug', 'sealkv')

function sealkv(...args) {
  return execFileSync(CLI, args, { env: { ...process.env, SEALKV_PASSPHRASE: PASSPHRASE }, stdio: 'pipe' }).toString()
}

async function folderParty(dir, jid) {
  const auth = await baileys.useMultiFileAuthState(dir)
  await auth.saveCreds()
  const keys = baileys.addTransactionCapability(auth.state.keys, silent, { maxCommitRetries: 3, delayBetweenTriesMs: 10 })
  return { ...auth, jid, keys, repository: makeLibSignalRepository({ creds: auth.state.creds, keys }, silent), close: async () => {} }
}

test('folder → import-baileys → useSealedAuthState → export-baileys → folder, mid-conversation', async (t) => {
  assert.ok(existsSync(CLI), `the sealkv CLI is not built at ${CLI}: run \`cargo build -p sealkv-cli\` (or set SEALKV_BIN)`)
  const dir = tempDir(t)
  const bob = await party(join(dir, 'bob.sealkv'), BOB)
  let alice = await folderParty(join(dir, 'alice-folder'), ALICE)
  const [preKeyId] = await addPreKeys(bob, 3)
  await alice.repository.injectE2ESession({ jid: BOB, session: await bundle(bob, preKeyId) })
  assert.equal(await talk(alice, bob, 'from the folder'), 'pkmsg')
  await talk(bob, alice, 'reply to the folder')
  const folderCreds = JSON.stringify(alice.state.creds, baileys.BufferJSON.replacer)

  // Move Alice's folder into a sealed store (created by the CLI).
  const sealed = join(dir, 'alice.sealkv')
  sealkv('init', sealed)
  const report = sealkv('import-baileys', sealed, join(dir, 'alice-folder'))
  assert.match(report, /session: 1/)
  alice = await party(sealed, ALICE)
  assert.equal(JSON.stringify(alice.state.creds, baileys.BufferJSON.replacer), folderCreds)
  assert.equal(await talk(alice, bob, 'from the sealed store'), 'msg')
  await talk(bob, alice, 'reply to the sealed store')
  await alice.close()

  // And back out to a folder Baileys loads.
  sealkv('export-baileys', sealed, join(dir, 'alice-out'))
  alice = await folderParty(join(dir, 'alice-out'), ALICE)
  assert.equal(await talk(alice, bob, 'from the exported folder'), 'msg')
  await talk(bob, alice, 'reply to the exported folder')
  await bob.close()
})
