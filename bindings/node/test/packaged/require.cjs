// CommonJS: the packed package loads with require() too.
const assert = require('node:assert/strict')
const { mkdtempSync, rmSync } = require('node:fs')
const { tmpdir } = require('node:os')
const { join } = require('node:path')
const sealkv = require('sealkv')

;(async () => {
  assert.equal(typeof sealkv.useSealedAuthState, 'function')
  const dir = mkdtempSync(join(tmpdir(), 'sealkv-packaged-cjs-'))
  try {
    const store = await sealkv.Store.create(join(dir, 'cjs.sealkv'), { key: Buffer.alloc(32, 7) })
    await store.put('ns', 'k', 'from require')
    assert.equal((await store.get('ns', 'k')).toString(), 'from require')
    await store.close()
    console.log('require: ok')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
