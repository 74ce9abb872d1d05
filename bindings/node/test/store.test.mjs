// The Store API and useSealedAuthState's contract, without a conversation.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as baileys from 'baileys'
import { Store, SealkvError, useSealedAuthState } from '../lib/index.mjs'
import { FAST_KDF, PASSPHRASE, tempDir } from './helpers.mjs'

const opts = { passphrase: PASSPHRASE, kdf: FAST_KDF }

async function rejects(promise, code) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof SealkvError, `expected a SealkvError, got ${err}`)
    assert.equal(err.code, code, err.message)
    return true
  })
}

test('CommonJS and ESM entry points give the same objects', () => {
  const require = createRequire(import.meta.url)
  const cjs = require('../lib/index.cjs')
  assert.equal(cjs.Store, Store)
  assert.equal(cjs.useSealedAuthState, useSealedAuthState)
})

test('values round-trip; set is atomic; sessions are separate', async (t) => {
  const path = join(tempDir(t), 's.sealkv')
  const store = await Store.create(path, opts)
  await store.set([
    { namespace: 'ns', key: 'a', value: Buffer.from('one') },
    { namespace: 'ns', key: 'b', value: new Uint8Array([1, 2, 3]) },
    { namespace: 'other', key: 'c', value: 'text' },
  ])
  assert.equal(String(await store.get('ns', 'a')), 'one')
  assert.deepEqual([...(await store.get('ns', 'b'))], [1, 2, 3])
  assert.equal(await store.get('ns', 'missing'), null)
  assert.deepEqual(await store.list('ns'), ['a', 'b'])
  assert.deepEqual(await store.namespaces(), ['ns', 'other'])
  assert.deepEqual(Object.keys(await store.getMany('ns', ['a', 'x', 'b'])), ['a', 'b'])

  await store.set({ ns: { a: null, d: Buffer.from('four') } })
  assert.deepEqual(await store.list('ns'), ['b', 'd'])
  assert.equal(await store.delete('ns', 'b'), true)
  assert.equal(await store.delete('ns', 'b'), false)

  // A batch with one bad change writes none of it.
  await rejects(
    store.set([
      { namespace: 'ns', key: 'e', value: Buffer.from('five') },
      { namespace: '', key: 'f', value: Buffer.from('six') },
    ]),
    'SEALKV_INVALID_NAME',
  )
  assert.equal(await store.get('ns', 'e'), null)

  const bot1 = store.session('bot1')
  const bot2 = store.session('bot2')
  await bot1.put('creds', 'creds', 'one')
  await bot2.put('creds', 'creds', 'two')
  assert.equal(String(await bot1.get('creds', 'creds')), 'one')
  assert.equal(String(await bot2.get('creds', 'creds')), 'two')
  assert.equal(await store.get('creds', 'creds'), null)
  assert.deepEqual(await store.sessions(), ['bot1', 'bot2'])
  assert.equal(await store.dropSession('bot1'), true)
  assert.equal(await bot1.get('creds', 'creds'), null)
  assert.equal(String(await bot2.get('creds', 'creds')), 'two')

  assert.deepEqual(await store.verify(), [])
  const keyId = await store.rotate()
  assert.equal(typeof keyId, 'number')
  assert.equal(String(await bot2.get('creds', 'creds')), 'two')
  const copy = join(tempDir(t), 'copy.sealkv')
  await store.backup(copy)
  await store.close()
  assert.ok(store.closed)
  await rejects(store.get('ns', 'd'), 'SEALKV_CLOSED')
  await rejects(bot2.get('creds', 'creds'), 'SEALKV_CLOSED')
  await rejects(store.set([{ namespace: 'ns', key: 'z', value: 'z' }]), 'SEALKV_CLOSED')

  const reopened = await Store.open(copy, { ...opts, session: 'bot2' })
  assert.equal(reopened.sessionId, 'bot2')
  assert.equal(String(await reopened.get('creds', 'creds')), 'two')
  await reopened.close()
})

test('time to live: the value expires', async (t) => {
  const store = await Store.create(join(tempDir(t), 'ttl.sealkv'), opts)
  await store.put('cache', 'k', 'v', { ttlMs: 1000 })
  assert.equal(String(await store.get('cache', 'k')), 'v')
  await rejects(store.put('cache', 'k', 'v', { ttlMs: 10 }), 'SEALKV_INVALID_TTL')
  await new Promise((r) => setTimeout(r, 2100))
  assert.equal(await store.get('cache', 'k'), null)
  await store.close()
})

test('bad input: clear errors, nothing written', async (t) => {
  const dir = tempDir(t)
  const path = join(dir, 'bad.sealkv')
  const store = await Store.create(path, opts)
  await store.put('ns', 'k', 'secret value')
  await store.close()
  const before = readFileSync(path)

  await rejects(Store.open(path, { ...opts, passphrase: 'wrong' }), 'SEALKV_WRONG_KEY')
  await rejects(useSealedAuthState(path, { ...opts, passphrase: 'wrong', baileys }), 'SEALKV_WRONG_KEY')
  await rejects(Store.open(path, { key: Buffer.alloc(32, 7) }), 'SEALKV_KEY_KIND')
  assert.deepEqual(readFileSync(path), before, 'a failed open leaves the file byte-identical')

  await rejects(Store.create(path, opts), 'SEALKV_EXISTS')
  await rejects(Store.open(join(dir, 'absent.sealkv'), opts), 'SEALKV_IO')
  await rejects(Store.open(path, {}), 'SEALKV_INVALID_ARGUMENT')
  await rejects(Store.open(path, { passphrase: 'x', key: Buffer.alloc(32) }), 'SEALKV_INVALID_ARGUMENT')
  await rejects(Store.create(join(dir, 'k.sealkv'), { key: Buffer.alloc(31) }), 'SEALKV_KEY')
  await rejects(Store.create(join(dir, 'c.sealkv'), { ...opts, concurrency: 'sometimes' }), 'SEALKV_INVALID_ARGUMENT')

  const junk = join(dir, 'junk.bin')
  writeFileSync(junk, Buffer.alloc(8192, 0x5a))
  await rejects(Store.open(junk, opts), 'SEALKV_NOT_SEALKV')
  assert.deepEqual(readFileSync(junk), Buffer.alloc(8192, 0x5a))

  // A raw-key store.
  const key = Buffer.alloc(32, 9)
  const keyed = await Store.create(join(dir, 'raw.sealkv'), { key })
  await keyed.put('ns', 'k', 'v')
  await keyed.close()
  const again = await Store.open(join(dir, 'raw.sealkv'), { key })
  assert.equal(String(await again.get('ns', 'k')), 'v')
  await again.close()
  await rejects(Store.open(join(dir, 'raw.sealkv'), { key: Buffer.alloc(32, 8) }), 'SEALKV_WRONG_KEY')
})

test('useSealedAuthState: fresh creds, saved creds, Baileys JSON, fresh objects, atomic set', async (t) => {
  const path = join(tempDir(t), 'auth.sealkv')
  let auth = await useSealedAuthState(path, opts)
  assert.equal(auth.state.creds.registered, false, 'fresh creds from initAuthCreds')
  const noisePrivate = Buffer.from(auth.state.creds.noiseKey.private)
  assert.ok(Buffer.isBuffer(auth.state.creds.noiseKey.private))
  auth.state.creds.me = { id: '15550003333:1@s.whatsapp.net', name: 'bot' }
  await auth.saveCreds()

  const syncKey = { keyData: Buffer.from('sync key bytes'), fingerprint: { rawId: 7, currentIndex: 1, deviceIndexes: [0, 1] }, timestamp: 1700000000 }
  await auth.state.keys.set({
    session: { '15550004444.0': Buffer.from('session bytes') },
    'app-state-sync-key': { AAAAAQ: syncKey },
    'pre-key': { 1: baileys.Curve.generateKeyPair(), 2: baileys.Curve.generateKeyPair() },
  })
  const got = await auth.state.keys.get('session', ['15550004444.0', 'nobody.0'])
  assert.deepEqual(Object.keys(got), ['15550004444.0'])
  assert.deepEqual(got['15550004444.0'], Buffer.from('session bytes'))
  // Baileys mutates what it gets: each get returns fresh objects.
  got['15550004444.0'].fill(0)
  const again = await auth.state.keys.get('session', ['15550004444.0'])
  assert.deepEqual(again['15550004444.0'], Buffer.from('session bytes'))

  const { AAAAAQ: revived } = await auth.state.keys.get('app-state-sync-key', ['AAAAAQ'])
  assert.ok(revived instanceof baileys.proto.Message.AppStateSyncKeyData)
  assert.deepEqual(Buffer.from(revived.keyData), Buffer.from('sync key bytes'))

  // Stored exactly as useMultiFileAuthState writes it.
  const raw = await auth.store.get('pre-key', '1')
  const { 1: preKey } = await auth.state.keys.get('pre-key', ['1'])
  assert.equal(raw.toString(), JSON.stringify(preKey, baileys.BufferJSON.replacer))

  // A value that cannot be serialized rejects, and nothing of that call is written.
  await assert.rejects(
    auth.state.keys.set({ session: { 'a.0': Buffer.from('ok') }, 'sender-key': { g: { n: 1n } } }),
    (err) => err.code === 'SEALKV_SERIALIZE',
  )
  assert.deepEqual(await auth.state.keys.get('session', ['a.0']), {})

  // null deletes; several families in one call.
  await auth.state.keys.set({ 'pre-key': { 1: null }, session: { '15550004444.0': null } })
  assert.deepEqual(await auth.store.list('pre-key'), ['2'])
  assert.deepEqual(await auth.store.list('session'), [])
  await auth.close()

  auth = await useSealedAuthState(path, opts)
  assert.equal(auth.state.creds.me.id, '15550003333:1@s.whatsapp.net')
  assert.deepEqual(auth.state.creds.noiseKey.private, noisePrivate, 'the saved creds, not fresh ones')
  await auth.state.keys.clear()
  assert.deepEqual(await auth.store.list('pre-key'), [])
  assert.notEqual(await auth.store.get('creds', 'creds'), null, 'clear keeps the creds')
  await auth.close()

  await rejects(useSealedAuthState(join(tempDir(t), 'absent.sealkv'), { ...opts, create: false }), 'SEALKV_IO')
})

test('one file serves a bot farm: sessions do not see each other', async (t) => {
  const path = join(tempDir(t), 'farm.sealkv')
  const bots = []
  for (const id of ['bot-a', 'bot-b', 'bot-c']) {
    const auth = await useSealedAuthState(path, { ...opts, session: id })
    auth.state.creds.me = { id: `${id}@s.whatsapp.net` }
    await auth.saveCreds()
    await auth.state.keys.set({ session: { shared: Buffer.from(id) } })
    bots.push(auth)
  }
  for (const [i, id] of ['bot-a', 'bot-b', 'bot-c'].entries()) {
    const { shared } = await bots[i].state.keys.get('session', ['shared'])
    assert.equal(shared.toString(), id)
  }
  assert.deepEqual(await bots[0].store.sessions(), ['bot-a', 'bot-b', 'bot-c'])
  for (const b of bots) await b.close()
  const reopened = await useSealedAuthState(path, { ...opts, session: 'bot-b' })
  assert.equal(reopened.state.creds.me.id, 'bot-b@s.whatsapp.net')
  await reopened.close()
})

test('store work runs off the event loop', async (t) => {
  // A full-cost Argon2id derivation takes a while; the event loop must keep turning.
  let turns = 0
  let spinning = true
  const spin = () => {
    turns++
    if (spinning) setImmediate(spin)
  }
  setImmediate(spin)
  const store = await Store.create(join(tempDir(t), 'slow.sealkv'), {
    passphrase: PASSPHRASE,
    kdf: { memoryKib: 65536, passes: 3 },
  })
  spinning = false
  assert.ok(turns > 10, `the event loop turned only ${turns} times while the key was derived`)
  await store.close()
})

test('close waits for writes already submitted', async (t) => {
  const path = join(tempDir(t), 'close.sealkv')
  const store = await Store.create(path, opts)
  const writes = []
  for (let i = 0; i < 20; i++) writes.push(store.put('ns', `k${i}`, `v${i}`))
  await store.close()
  await Promise.all(writes)
  const again = await Store.open(path, opts)
  assert.equal((await again.list('ns')).length, 20)
  await again.close()
})

test('concurrent sets: a bad call fails alone, the others land', async (t) => {
  const store = await Store.create(join(tempDir(t), 'combine.sealkv'), opts)
  const calls = []
  for (let i = 0; i < 30; i++) {
    const key = i === 17 ? 'x'.repeat(2000) : `k${i}` // 2000 bytes: over the name limit
    calls.push(store.put('ns', key, `v${i}`))
  }
  const results = await Promise.allSettled(calls)
  const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [[i, r.reason.code]] : []))
  assert.deepEqual(failed, [[17, 'SEALKV_INVALID_NAME']])
  assert.equal((await store.list('ns')).length, 29)
  await store.close()
})

test('concurrent sets: a ttlMs of the wrong type fails its own call alone, with SEALKV_BAD_ARGUMENT', async (t) => {
  const auth = await useSealedAuthState(join(tempDir(t), 'badttl.sealkv'), { ...opts, baileys })
  const store = auth.store
  // The first call commits alone; the others queue behind it and are combined, the bad
  // ones (napi cannot make an f64 of a string or a boolean) among the good.
  const calls = [
    store.put('ns', 'k0', 'v0'),
    auth.state.keys.set({ session: { 'a.0': Buffer.from('session') } }),
    store.put('ns', 'k1', 'v1', { ttlMs: 60_000 }),
    store.put('ns', 'bad-string', 'x', { ttlMs: 'abc' }),
    auth.saveCreds(),
    store.set([{ namespace: 'ns', key: 'k2', value: 'v2', ttlMs: null }]),
    store.put('ns', 'bad-boolean', 'x', { ttlMs: true }),
    store.set([{ namespace: 'ns', key: 'bad-delete', value: null, ttlMs: '1000' }]),
    store.put('ns', 'k3', 'v3'),
  ]
  const results = await Promise.allSettled(calls)
  const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [[i, r.reason.code]] : []))
  assert.deepEqual(failed, [
    [3, 'SEALKV_BAD_ARGUMENT'],
    [6, 'SEALKV_BAD_ARGUMENT'],
    [7, 'SEALKV_BAD_ARGUMENT'],
  ])
  for (const i of [3, 6, 7]) assert.ok(results[i].reason instanceof SealkvError)
  assert.deepEqual(await store.list('ns'), ['k0', 'k1', 'k2', 'k3'])
  assert.equal(String(await store.get('ns', 'k1')), 'v1')
  assert.notEqual(await store.get('creds', 'creds'), null)
  assert.deepEqual(Object.keys(await auth.state.keys.get('session', ['a.0'])), ['a.0'])
  // Out of range stays SEALKV_INVALID_TTL, alone or combined.
  const ranged = await Promise.allSettled([
    store.put('ns', 'k4', 'v4'),
    store.put('ns', 'short', 'x', { ttlMs: 999 }),
    store.put('ns', 'nan', 'x', { ttlMs: NaN }),
    store.put('ns', 'k5', 'v5'),
  ])
  assert.deepEqual(
    ranged.map((r) => r.reason?.code),
    [undefined, 'SEALKV_INVALID_TTL', 'SEALKV_INVALID_TTL', undefined],
  )
  assert.deepEqual(await store.list('ns'), ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'])
  await auth.close()
})

test('writes of a session keep call order: set, delete, clear, keys.clear', async (t) => {
  const path = join(tempDir(t), 'order.sealkv')
  const store = await Store.create(path, opts)
  // A put queued behind an in-flight commit, then a delete of the same key.
  const first = store.put('ns', 'other', 'x')
  const put = store.put('ns', 'k', 'v')
  const del = store.delete('ns', 'k')
  await Promise.all([first, put])
  assert.equal(await del, true, 'the delete ran after the put')
  assert.equal(await store.get('ns', 'k'), null)
  // Sets queued before a clear are cleared; a set after it stays.
  const sets = [store.put('ns', 'a', '1'), store.put('ns', 'b', '2')]
  const cleared = store.clear()
  const after = store.put('ns', 'c', '3')
  await Promise.all([...sets, cleared, after])
  assert.deepEqual(await store.list('ns'), ['c'])
  // The caller may reuse its buffer once the call returns.
  const buf = Buffer.from('original')
  const queued = [store.put('ns', 'busy', 'x'), store.put('ns', 'buf', buf)]
  buf.fill(0)
  await Promise.all(queued)
  assert.equal(String(await store.get('ns', 'buf')), 'original')
  await store.close()

  const auth = await useSealedAuthState(path, opts)
  const sets2 = [
    auth.state.keys.set({ session: { 'a.0': Buffer.from('s') } }),
    auth.state.keys.set({ 'custom-family': { x: { n: 1 } } }),
  ]
  const clear = auth.state.keys.clear()
  await Promise.all([...sets2, clear])
  assert.deepEqual(await auth.store.namespaces(), [], 'keys.clear ran after the sets queued before it')
  await auth.saveCreds()
  await auth.state.keys.clear()
  assert.deepEqual(await auth.store.namespaces(), ['creds'])
  await auth.close()
})

test('a stored value that is not JSON: a coded error that does not quote it', async (t) => {
  const path = join(tempDir(t), 'json.sealkv')
  const store = await Store.create(path, opts)
  await store.put('session', 'a.0', '{"secret": "do-not-print-me')
  await store.close()
  const auth = await useSealedAuthState(path, opts)
  await assert.rejects(auth.state.keys.get('session', ['a.0']), (err) => {
    assert.equal(err.code, 'SEALKV_BAD_VALUE')
    assert.ok(!err.message.includes('do-not-print-me'), err.message)
    return true
  })
  await auth.close()
})

test('metricsText() is Prometheus text that counts the commits; health() and isHealthy()', async (t) => {
  const dir = tempDir(t)
  const store = await Store.create(join(dir, 'observed.sealkv'), opts)
  await store.put('ns-secret-9', 'key-secret-9', 'value-secret-9')
  const text = store.metricsText()
  const sample = /^[a-zA-Z_:][\w:]*(\{[^}]*\})? [-+0-9.eE]+|NaN$/
  for (const line of text.split('\n').filter(Boolean)) {
    assert.ok(line.startsWith('# HELP ') || line.startsWith('# TYPE ') || sample.test(line), line)
  }
  assert.match(text, /^sealkv_commits_total\{engine="file",outcome="ok"\} [1-9]/m)
  assert.match(text, /^# HELP sealkv_commit_sync_seconds /m)
  assert.doesNotMatch(text, /secret|observed/)
  const health = await store.health()
  assert.equal(health.healthy, true, health.problems.join('; '))
  assert.equal(health.engine, 'file')
  assert.equal(health.lastCommitOk, true)
  assert.equal(await store.isHealthy(), true)
  await store.close()
  assert.equal(await store.isHealthy(), false)
})

test('an older copy put back rejects with SEALKV_ROLLED_BACK until acceptRestore', async (t) => {
  const dir = tempDir(t)
  const path = join(dir, 's.sealkv')
  const store = await Store.create(path, opts)
  await store.setAnchor(join(dir, 's.anchor'))
  await store.put('creds', 'creds', 'old')
  await store.close()
  const backup = readFileSync(path)
  const again = await Store.open(path, opts)
  await again.put('creds', 'creds', 'new')
  await again.put('pre-key', '1', 'consumed')
  await again.close()
  const newer = readFileSync(path)
  writeFileSync(path, backup)
  await rejects(Store.open(path, opts), 'SEALKV_ROLLED_BACK')
  await rejects(Store.open(path, { ...opts, readOnly: true }), 'SEALKV_ROLLED_BACK')
  await assert.rejects(useSealedAuthState(path, opts), (err) => err.code === 'SEALKV_ROLLED_BACK')
  const accepted = await Store.acceptRestore(path, opts)
  assert.equal(accepted.restoreEpoch, 1)
  assert.equal(String(await accepted.get('creds', 'creds')), 'old')
  await accepted.close()
  // The copy that was current before the restore is refused from now on.
  writeFileSync(path, newer)
  await rejects(Store.open(path, opts), 'SEALKV_ROLLED_BACK')
  await rejects(Store.open(path, { ...opts, readOnly: true }), 'SEALKV_ROLLED_BACK')
  // A lost anchor is its own error.
  writeFileSync(path, backup)
  const { rmSync } = await import('node:fs')
  rmSync(join(dir, 's.anchor'))
  await rejects(Store.open(path, opts), 'SEALKV_ANCHOR')
  await rejects(store.setAnchor(''), 'SEALKV_INVALID_ARGUMENT')
})
