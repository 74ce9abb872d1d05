// A bot-shaped script, run by scripts/npm-pack-check in a fresh project where `sealkv`
// and its native package were installed from their packed tarballs, with no Rust on
// PATH: two parties on sealed auth states talk through Baileys' own Signal repository,
// reopen, and talk again.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Store, SealkvError } from 'sealkv'
import { party, addPreKeys, bundle, talk } from './parties.mjs'

const dir = mkdtempSync(join(tmpdir(), 'sealkv-packaged-'))
try {
  const alicePath = join(dir, 'alice.sealkv')
  const bobPath = join(dir, 'bob.sealkv')
  let alice = await party(alicePath, '15550001111@s.whatsapp.net')
  let bob = await party(bobPath, '15550002222@s.whatsapp.net')
  const [preKeyId] = await addPreKeys(bob, 3)
  await alice.repository.injectE2ESession({ jid: bob.jid, session: await bundle(bob, preKeyId) })
  assert.equal(await talk(alice, bob, 'hello bob'), 'pkmsg')
  assert.equal(await talk(bob, alice, 'hello alice'), 'msg')
  await alice.close()
  await bob.close()

  alice = await party(alicePath, alice.jid)
  bob = await party(bobPath, bob.jid)
  assert.equal(await talk(alice, bob, 'after reopen'), 'msg')
  assert.equal(await talk(bob, alice, 'reply after reopen'), 'msg')
  await alice.close()
  await bob.close()

  for (const path of [alicePath, bobPath]) {
    const raw = readFileSync(path)
    for (const needle of ['15550001111', '15550002222', 'hello']) {
      assert.equal(raw.indexOf(needle), -1, `${needle} in ${path}`)
    }
  }
  await assert.rejects(Store.open(alicePath, { passphrase: 'wrong' }), (e) => e instanceof SealkvError && e.code === 'SEALKV_WRONG_KEY')
  console.log('bot: two parties talked, reopened and talked again')
} finally {
  rmSync(dir, { recursive: true, force: true })
}
