// A bot farm on PostgreSQL: two bots as two sessions of one store on the test server,
// talking through Baileys' own Signal repository, then reopened. Needs SEALKV_TEST_PG
// (scripts/test starts a server); skipped without it unless SEALKV_REQUIRE_PG is set.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { party, addPreKeys, bundle, talk } from './helpers.mjs'
import { Store } from '../lib/index.mjs'

const ALICE = '15550001111@s.whatsapp.net'
const BOB = '15550002222@s.whatsapp.net'

/** A store URL on the test server (password from the environment), or null. */
function serverUrl(name) {
  const base = process.env.SEALKV_TEST_PG
  if (!base) {
    assert.ok(!process.env.SEALKV_REQUIRE_PG, 'SEALKV_REQUIRE_PG is set but SEALKV_TEST_PG names no server')
    return null
  }
  return `${base}?store=node_${process.pid}_${name}`
}

test('two bots in one PostgreSQL store talk, reopen and go on', async (t) => {
  const url = serverUrl('farm')
  if (!url) return t.skip('no PostgreSQL server')
  let alice = await party(url, ALICE, { session: 'alice' })
  let bob = await party(url, BOB, { session: 'bob' })
  const [preKeyId] = await addPreKeys(bob, 1)
  await alice.repository.injectE2ESession({ jid: BOB, session: await bundle(bob, preKeyId) })
  assert.equal(await talk(alice, bob, 'hello bob'), 'pkmsg')
  assert.equal(await talk(bob, alice, 'hello alice'), 'msg')
  assert.deepEqual(await bob.store.list('pre-key'), [], 'the one-time pre-key was consumed')
  assert.deepEqual(await alice.store.sessions(), ['alice', 'bob'])
  await alice.close()
  await bob.close()

  alice = await party(url, ALICE, { session: 'alice' })
  bob = await party(url, BOB, { session: 'bob' })
  for (let i = 0; i < 3; i++) {
    assert.equal(await talk(alice, bob, `after reopen ${i}`), 'msg')
    assert.equal(await talk(bob, alice, `reply ${i}`), 'msg')
  }
  await alice.close()
  await bob.close()
})

test('server errors carry SEALKV_SERVER and a wrong passphrase SEALKV_WRONG_KEY', async (t) => {
  const url = serverUrl('errors')
  if (!url) return t.skip('no PostgreSQL server')
  const opts = { passphrase: 'right', kdf: { memoryKib: 64, passes: 1, lanes: 1 } }
  const store = await Store.create(url, opts)
  await store.put('n', 'k', Buffer.from('v'))
  await store.close()
  await assert.rejects(Store.open(url, { ...opts, passphrase: 'wrong' }), { code: 'SEALKV_WRONG_KEY' })
  await assert.rejects(Store.create(url, opts), { code: 'SEALKV_EXISTS' })
  await assert.rejects(Store.open('postgres://nobody@127.0.0.1:1/x?store=a', opts), (e) => {
    assert.equal(e.code, 'SEALKV_SERVER')
    assert.match(e.message, /cannot reach/)
    return true
  })
})
