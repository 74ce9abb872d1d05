// The guest package against Tauri's own IPC mock (@tauri-apps/api/mocks): what each
// call sends to the plugin, what it makes of the answers, and how failures arrive.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { afterEach, beforeEach, test } from 'node:test'
import vm from 'node:vm'

// @tauri-apps/api looks for its internals on `window`.
globalThis.window = globalThis
const { mockIPC, clearMocks } = await import('@tauri-apps/api/mocks')
const api = await import('../dist-js/index.js')
const { Store, SealkvError, open } = api

let calls
/** Answers like the plugin would, from a map of values; records every call. */
function plugin(values = new Map()) {
  calls = []
  mockIPC((cmd, args) => {
    calls.push([cmd, args])
    switch (cmd) {
      case 'plugin:sealkv|open':
        return { name: args.name, id: 'ab'.repeat(16), created: true, recovered: false, repaired: false, restoreAccepted: false, alreadyOpen: false }
      case 'plugin:sealkv|set':
        for (const { namespace, key, value } of args.changes) {
          if (value === null) values.delete(`${namespace}/${key}`)
          else values.set(`${namespace}/${key}`, value)
        }
        return null
      case 'plugin:sealkv|get': {
        const stored = values.get(`${args.namespace}/${args.key}`)
        if (stored === undefined) return null
        // The wire form the plugin answers with, per encoding.
        const bytes = 'bytes' in stored ? stored.bytes : 'text' in stored ? [...Buffer.from(stored.text)] : [...Buffer.from(JSON.stringify(stored.json))]
        if (args.encoding === 'bytes') return { bytes }
        if (args.encoding === 'text') return { text: Buffer.from(bytes).toString('utf8') }
        return { json: JSON.parse(Buffer.from(bytes).toString('utf8')) }
      }
      case 'plugin:sealkv|delete':
        return values.delete(`${args.namespace}/${args.key}`)
      case 'plugin:sealkv|list':
        return [...values.keys()].filter((k) => k.startsWith(`${args.namespace}/`)).map((k) => k.slice(args.namespace.length + 1)).sort()
      case 'plugin:sealkv|verify':
        return [{ code: 'SEALKV_INTEGRITY', message: 'a value failed its check' }]
      case 'plugin:sealkv|rotate':
        return 2
      default:
        throw { code: 'SEALKV_NOT_OPEN', message: `unexpected ${cmd}` }
    }
  })
}

beforeEach(() => plugin())
afterEach(() => clearMocks())

test('open sends the name and the recovery passphrase, and keeps what the plugin did', async () => {
  const store = await open('notes', { recoveryPassphrase: 'correct horse' })
  assert.ok(store instanceof Store)
  assert.equal(store.name, 'notes')
  assert.deepEqual(calls, [['plugin:sealkv|open', { name: 'notes', recoveryPassphrase: 'correct horse' }]])
  assert.equal(store.opened.created, true)
  await Store.open('other')
  assert.deepEqual(calls[1][1], { name: 'other', recoveryPassphrase: null })
})

test('set sends one batch: bytes, text, JSON and deletions, in either form', async () => {
  const store = await open('notes')
  await store.set({
    notes: { a: new Uint8Array([1, 2, 255]), b: 'héllo', c: { n: 1, list: [true, null] }, gone: null },
    other: { d: 42 },
  })
  await store.set([['notes', 'e', new Uint8Array([7]).buffer], ['notes', 'a', null]])
  const batches = calls.filter(([cmd]) => cmd === 'plugin:sealkv|set').map(([, args]) => args)
  assert.deepEqual(batches[0], {
    name: 'notes',
    changes: [
      { namespace: 'notes', key: 'a', value: { bytes: [1, 2, 255] } },
      { namespace: 'notes', key: 'b', value: { text: 'héllo' } },
      { namespace: 'notes', key: 'c', value: { json: { n: 1, list: [true, null] } } },
      { namespace: 'notes', key: 'gone', value: null },
      { namespace: 'other', key: 'd', value: { json: 42 } },
    ],
  })
  assert.deepEqual(batches[1].changes, [
    { namespace: 'notes', key: 'e', value: { bytes: [7] } },
    { namespace: 'notes', key: 'a', value: null },
  ])
})

test('reads come back as bytes, text or JSON, and null when absent', async () => {
  const store = await open('notes')
  await store.put('notes', 'bin', new Uint8Array([0, 1, 2]))
  await store.put('notes', 'text', 'secret ✓')
  await store.put('notes', 'json', { a: [1, 2] })
  const bytes = await store.get('notes', 'bin')
  assert.ok(bytes instanceof Uint8Array)
  assert.deepEqual([...bytes], [0, 1, 2])
  assert.equal(await store.getText('notes', 'text'), 'secret ✓')
  assert.deepEqual(await store.getJson('notes', 'json'), { a: [1, 2] })
  assert.equal(await store.get('notes', 'missing'), null)
  assert.equal(await store.getJson('notes', 'missing'), null)
  const gets = calls.filter(([cmd]) => cmd === 'plugin:sealkv|get').map(([, a]) => a.encoding)
  assert.deepEqual(gets, ['bytes', 'text', 'json', 'bytes', 'json'])
  assert.deepEqual(await store.list('notes'), ['bin', 'json', 'text'])
  assert.equal(await store.delete('notes', 'bin'), true)
  assert.equal(await store.rotate(), 2)
  assert.deepEqual(await store.verify(), [{ code: 'SEALKV_INTEGRITY', message: 'a value failed its check' }])
})

test("the plugin's errors arrive as SealkvErrors with their code", async () => {
  const store = await open('notes')
  await assert.rejects(store.namespaces(), (e) => e instanceof SealkvError && e.code === 'SEALKV_NOT_OPEN')
  mockIPC(() => {
    throw { code: 'SEALKV_KEYCHAIN', message: 'cannot read the key: there is no such entry' }
  })
  await assert.rejects(open('notes'), { name: 'SealkvError', code: 'SEALKV_KEYCHAIN', message: /no such entry/ })
  // Tauri's own refusal when the capability lacks the permission is a string.
  mockIPC(() => {
    throw 'sealkv.set not allowed. Permissions associated with this command: sealkv:allow-set, sealkv:default'
  })
  await assert.rejects(store.put('notes', 'k', 'v'), { code: 'SEALKV_NOT_ALLOWED', message: /allow-set/ })
  mockIPC(() => {
    throw 'sealkv.set explicitly denied on origin local\n\nreferenced by: capability: main, permission: deny-set'
  })
  await assert.rejects(store.put('notes', 'k', 'v'), { code: 'SEALKV_NOT_ALLOWED', message: /deny-set/ })
  mockIPC(() => {
    throw new Error('the webview went away')
  })
  await assert.rejects(store.list('notes'), { code: 'SEALKV_IPC' })
})

test('an undefined value is refused before anything is sent', async () => {
  const store = await open('notes')
  calls.length = 0
  await assert.rejects(store.set({ notes: { a: 'kept', b: undefined } }), { code: 'SEALKV_INVALID_ARGUMENT' })
  assert.deepEqual(calls, [])
})

test('the CommonJS build exports the same API', () => {
  const cjs = createRequire(import.meta.url)('../dist-js/index.cjs')
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(api).sort())
  assert.equal(typeof cjs.Store.open, 'function')
})

test('api-iife.js installs window.__TAURI__.sealkv, which calls the plugin', async () => {
  const script = readFileSync(new URL('../api-iife.js', import.meta.url), 'utf8')
  vm.runInThisContext(script)
  assert.equal(window.__TAURI__, undefined, 'without withGlobalTauri the script does nothing')
  window.__TAURI__ = {}
  try {
    vm.runInThisContext(script)
    const store = await window.__TAURI__.sealkv.open('notes')
    await store.put('notes', 'k', 'v')
    assert.equal(await store.getText('notes', 'k'), 'v')
    assert.deepEqual(
      calls.map(([cmd]) => cmd),
      ['plugin:sealkv|open', 'plugin:sealkv|set', 'plugin:sealkv|get'],
    )
  } finally {
    delete window.__TAURI__
  }
})
