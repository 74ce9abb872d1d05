// A bot farm on PostgreSQL: two bots as two sessions of one store on the test server,
// talking through Baileys' own Signal repository, then reopened. Needs SEALKV_TEST_PG
// (scripts/test starts a server); skipped without it unless SEALKV_REQUIRE_PG is set.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, fork } from 'node:child_process'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { party, addPreKeys, bundle, talk, FAST_KDF, PASSPHRASE } from './helpers.mjs'
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
  return `${base}?store=${storeName(name)}`
}

/** The store name `serverUrl(name)` uses. */
function storeName(name) {
  return `node_${process.pid}_${name}`
}

/**
 * Runs `sql` on the test server as its owner, with psql (from SEALKV_TEST_PG_BIN when
 * set); returns what it prints. The password goes in the environment and the SQL on
 * stdin, so neither shows on a command line.
 */
function psql(sql) {
  const url = new URL(process.env.SEALKV_TEST_PG)
  const password = decodeURIComponent(url.password)
  url.password = ''
  const bin = process.env.SEALKV_TEST_PG_BIN ? join(process.env.SEALKV_TEST_PG_BIN, 'psql') : 'psql'
  return execFileSync(bin, ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', url.href, '-f', '-'], {
    input: sql,
    env: { ...process.env, PGPASSWORD: password },
    encoding: 'utf8',
  })
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
  // The test server has no standby: a store that asks for one is refused, by name.
  await assert.rejects(Store.open(url, { ...opts, syncReplicas: 1 }), (e) => {
    assert.equal(e.code, 'SEALKV_SERVER')
    assert.match(e.message, /synchronous_standby_names/)
    return true
  })
  for (const bad of [-1, 1.5, 65, '1']) {
    await assert.rejects(Store.open(url, { ...opts, syncReplicas: bad }), { code: 'SEALKV_INVALID_ARGUMENT' })
  }
  await assert.rejects(Store.open(url, { ...opts, failoverTimeoutMs: -5 }), { code: 'SEALKV_INVALID_ARGUMENT' })
})

test('openOrCreate opens a store as a role with rights on its tables only (no CREATE)', async (t) => {
  const url = serverUrl('least')
  if (!url) return t.skip('no PostgreSQL server')
  const opts = { passphrase: PASSPHRASE, kdf: FAST_KDF }
  const owner = await Store.create(url, opts)
  await owner.put('creds', 'creds', 'saved by the owner')
  await owner.close()

  const role = `${storeName('bot')}`
  const password = randomBytes(16).toString('hex')
  const tables = ['data', 'meta', 'expiry', 'locks'].map((t) => `"sealkv_${storeName('least')}_${t}"`)
  // PostgreSQL 15 grants PUBLIC no CREATE on schema public; older servers did.
  psql(`CREATE ROLE ${role} LOGIN PASSWORD '${password}';
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ${tables.join(', ')} TO ${role};`)
  t.after(() => psql(`DROP OWNED BY ${role}; DROP ROLE ${role};`))
  assert.equal(psql(`SELECT has_schema_privilege('${role}', 'public', 'CREATE');`).trim(), 'f')

  const server = new URL(process.env.SEALKV_TEST_PG)
  const bot = new URL(url)
  bot.username = role
  bot.password = password
  assert.equal(bot.host, server.host)
  const store = await Store.openOrCreate(bot.href, opts)
  assert.equal(String(await store.get('creds', 'creds')), 'saved by the owner')
  await store.put('creds', 'creds', 'saved by the bot')
  await store.close()
})

test('four processes openOrCreate one new store at once: all succeed, on one store', async (t) => {
  const url = serverUrl('race')
  if (!url) return t.skip('no PostgreSQL server')
  const fixture = fileURLToPath(new URL('./fixtures/open-or-create.mjs', import.meta.url))
  const keys = ['bot0', 'bot1', 'bot2', 'bot3']
  const children = keys.map(() => fork(fixture, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  t.after(() => children.forEach((c) => c.exitCode === null && c.kill()))
  // Each child's messages in order; an exit before the second one is a failure.
  const messages = children.map((child) => {
    const got = []
    const waiters = []
    child.on('message', (m) => (waiters.length ? waiters.shift().resolve(m) : got.push(m)))
    child.on('exit', (code, signal) => {
      for (const w of waiters.splice(0)) w.resolve({ ok: false, code: `exit ${code ?? signal}` })
    })
    return () => (got.length ? Promise.resolve(got.shift()) : new Promise((resolve) => waiters.push({ resolve })))
  })
  // All four loaded before any starts, so they reach the server together.
  assert.deepEqual(await Promise.all(messages.map((next) => next())), keys.map(() => ({ ready: true })))
  const results = messages.map((next) => next())
  children.forEach((child, i) => child.send({ url, key: keys[i] }))
  const outcomes = (await Promise.all(results)).map((r) => (r.ok ? 'ok' : `${r.code}: ${r.message}`))
  assert.deepEqual(outcomes, keys.map(() => 'ok'))

  const store = await Store.open(url, { passphrase: PASSPHRASE, kdf: FAST_KDF })
  assert.deepEqual(await store.list('bots'), keys)
  assert.deepEqual(await store.verify(), [])
  await store.close()
})

test('health() and isHealthy() turn unhealthy when the server goes away', async (t) => {
  const url = serverUrl('health')
  if (!url) return t.skip('no PostgreSQL server')
  const opts = { passphrase: 'pass-7zq-secret', kdf: { memoryKib: 64, passes: 1, lanes: 1 }, failoverTimeoutMs: 300 }
  await (await Store.create(url, opts)).close()
  // The store reached through a proxy, which then goes away like a dead server.
  const target = new URL(process.env.SEALKV_TEST_PG)
  const sockets = new Set()
  const proxy = net.createServer((client) => {
    const server = net.connect(Number(target.port), target.hostname)
    for (const [a, b] of [[client, server], [server, client]]) {
      sockets.add(a)
      a.pipe(b)
      a.on('error', () => b.destroy())
      a.on('close', () => b.destroy())
    }
  })
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  const via = new URL(url)
  via.port = String(proxy.address().port)
  const store = await Store.open(via.href, opts)
  t.after(() => store.close())
  await store.put('n', 'k', 'v')
  const healthy = await store.health()
  assert.equal(healthy.healthy, true, healthy.problems.join('; '))
  assert.equal(healthy.engine, 'postgres')
  assert.equal(await store.isHealthy(), true)
  proxy.close()
  for (const socket of sockets) socket.destroy()
  const gone = await store.health()
  assert.equal(gone.healthy, false)
  assert.match(gone.problems.join('; '), /cannot be read/)
  assert.doesNotMatch(gone.problems.join('; '), /7zq|password/)
  assert.equal(await store.isHealthy(), false)
})
