// Two parties on sealed stores talk through Baileys' own Signal repository.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { party, addPreKeys, bundle, tempDir } from './helpers.mjs'

const ALICE = '15550001111@s.whatsapp.net'
const BOB = '15550002222@s.whatsapp.net'
const GROUP = '120363025555555555@g.us'

async function send(from, to, text) {
  return from.repository.encryptMessage({ jid: to.jid, data: Buffer.from(text) })
}

async function receive(at, from, message) {
  const plain = await at.repository.decryptMessage({ jid: from.jid, type: message.type, ciphertext: message.ciphertext })
  return Buffer.from(plain).toString()
}

/** Where Alice's and Bob's stores live for one test. */
function paths(t) {
  const dir = tempDir(t)
  return { alicePath: join(dir, 'alice.sealkv'), bobPath: join(dir, 'bob.sealkv') }
}

test('two parties establish a session, talk, reopen and go on; the pre-key is consumed', async (t) => {
  const { alicePath, bobPath } = paths(t)
  let alice = await party(alicePath, ALICE)
  let bob = await party(bobPath, BOB)

  const [preKeyId, otherId] = await addPreKeys(bob, 2)
  await alice.repository.injectE2ESession({ jid: BOB, session: await bundle(bob, preKeyId) })

  const first = await send(alice, bob, 'hello bob')
  assert.equal(first.type, 'pkmsg')
  assert.equal(await receive(bob, alice, first), 'hello bob')
  const reply = await send(bob, alice, 'hello alice')
  assert.equal(reply.type, 'msg')
  assert.equal(await receive(alice, bob, reply), 'hello alice')

  // The one-time pre-key Alice used is gone from Bob's store; the other stays.
  const left = await bob.state.keys.get('pre-key', [String(preKeyId), String(otherId)])
  assert.deepEqual(Object.keys(left), [String(otherId)])
  assert.deepEqual(await bob.store.list('pre-key'), [String(otherId)])
  assert.ok((await alice.store.list('session')).length === 1)
  assert.ok((await bob.store.list('identity-key')).length === 1)

  // Close both, reopen from the files, and continue the conversation.
  await alice.close()
  await bob.close()
  alice = await party(alicePath, ALICE)
  bob = await party(bobPath, BOB)
  for (let i = 0; i < 5; i++) {
    const m = await send(alice, bob, `after reopen ${i}`)
    assert.equal(m.type, 'msg', 'the session survived the reopen')
    assert.equal(await receive(bob, alice, m), `after reopen ${i}`)
    const r = await send(bob, alice, `reply ${i}`)
    assert.equal(await receive(alice, bob, r), `reply ${i}`)
  }
  await alice.close()
  await bob.close()
})

test('a group sender-key flow survives a reopen', async (t) => {
  const { alicePath, bobPath } = paths(t)
  let alice = await party(alicePath, ALICE)
  let bob = await party(bobPath, BOB)

  const sent = await alice.repository.encryptGroupMessage({ group: GROUP, meId: ALICE, data: Buffer.from('hi group') })
  await bob.repository.processSenderKeyDistributionMessage({
    item: { groupId: GROUP, axolotlSenderKeyDistributionMessage: sent.senderKeyDistributionMessage },
    authorJid: ALICE,
  })
  const plain = await bob.repository.decryptGroupMessage({ group: GROUP, authorJid: ALICE, msg: sent.ciphertext })
  assert.equal(Buffer.from(plain).toString(), 'hi group')

  await alice.close()
  await bob.close()
  alice = await party(alicePath, ALICE)
  bob = await party(bobPath, BOB)
  for (let i = 0; i < 3; i++) {
    const next = await alice.repository.encryptGroupMessage({ group: GROUP, meId: ALICE, data: Buffer.from(`group ${i}`) })
    const got = await bob.repository.decryptGroupMessage({ group: GROUP, authorJid: ALICE, msg: next.ciphertext })
    assert.equal(Buffer.from(got).toString(), `group ${i}`)
  }
  assert.ok(await alice.repository.hasSenderKey({ group: GROUP, meId: ALICE }))
  await alice.close()
  await bob.close()

  // Neither file holds a JID, the group id or a message in plaintext.
  for (const path of [alicePath, bobPath]) {
    const bytes = readFileSync(path)
    for (const needle of ['15550001111', '15550002222', '120363025555555555', 'g.us', 'whatsapp.net', 'hi group', 'group 1', 'sender-key', 'pre-key']) {
      assert.equal(bytes.indexOf(Buffer.from(needle)), -1, `${needle} appears in ${path}`)
    }
  }
})
