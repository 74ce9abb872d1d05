// A child saving creds and keys in a loop is SIGKILLed again and again: the creds
// always load, are never empty, and are never older than the last acknowledged save.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { Store, useSealedAuthState } from '../lib/index.mjs'
import { FAST_KDF, PASSPHRASE, tempDir } from './helpers.mjs'

const SAVER = fileURLToPath(new URL('./fixtures/saver.mjs', import.meta.url))
const KILLS = Number(process.env.SEALKV_NODE_KILLS ?? 30)

/** Runs the saver until it has acknowledged `acks` saves (then waits `delayMs`), kills it. */
function runAndKill(path, acks, delayMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SAVER, path], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    let lastAck = null
    let start = null
    let killing = false
    child.stdout.on('data', (chunk) => {
      out += chunk
      const lines = out.split('\n')
      out = lines.pop()
      for (const line of lines) {
        const [word, n] = line.split(' ')
        if (word === 'start') start = Number(n)
        if (word === 'ack') lastAck = Number(n)
      }
      if (!killing && lastAck !== null && lastAck - start >= acks) {
        killing = true
        setTimeout(() => child.kill('SIGKILL'), delayMs)
      }
    })
    child.stderr.on('data', (chunk) => (err += chunk))
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`saver exited with ${code}: ${err}`))
      else resolve({ start, lastAck })
    })
  })
}

test(`creds survive ${KILLS} SIGKILLs mid-save`, { timeout: 600_000 }, async (t) => {
  const path = join(tempDir(t), 'bot.sealkv')
  let seed = 12345
  const random = (n) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed % n
  }
  let previous = 0
  for (let round = 0; round < KILLS; round++) {
    const { start, lastAck } = await runAndKill(path, 1 + random(30), random(15))
    assert.equal(start, previous, `round ${round}: the child started from the last saved counter`)
    const auth = await useSealedAuthState(path, { passphrase: PASSPHRASE, kdf: FAST_KDF })
    const saved = auth.state.creds.accountSyncCounter
    assert.ok(saved >= lastAck, `round ${round}: saved counter ${saved} is older than acknowledged ${lastAck}`)
    assert.ok(saved <= lastAck + 1, `round ${round}: saved ${saved}, acknowledged ${lastAck}: at most one save in flight`)
    assert.equal(auth.state.creds.lastSaved.counter, saved, 'the creds are whole')
    assert.ok(Buffer.isBuffer(auth.state.creds.noiseKey.private))
    await auth.close()
    previous = saved
  }
  const store = await Store.open(path, { passphrase: PASSPHRASE })
  assert.deepEqual(await store.verify(), [])
  await store.close()
})
