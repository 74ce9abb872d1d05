// Baileys parties over sealed auth states, shared by the Node tests and by the
// packaging check (scripts/npm-pack-check), which copies this file into a fresh
// project: `sealkv` is imported by name (here it resolves to this package itself),
// so the same code runs against the packed tarballs there.
import assert from 'node:assert/strict'
import * as baileys from 'baileys'
import { makeLibSignalRepository } from 'baileys/lib/Signal/libsignal.js'
import { useSealedAuthState } from 'sealkv'

/** Argon2id at its cheapest: the tests open stores many times. */
export const FAST_KDF = { memoryKib: 64, passes: 1, lanes: 1 }

export const PASSPHRASE = 'correct horse battery staple'

/** A logger that drops everything (Baileys wants pino's shape). */
export const silent = {
  level: 'silent',
  trace() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
  fatal() {},
  child() {
    return silent
  },
}

/**
 * One side of a conversation: Baileys' own Signal repository over a sealed auth state,
 * keys wrapped with Baileys' `addTransactionCapability` as its socket does.
 */
export async function party(path, jid, opts = {}) {
  const auth = await useSealedAuthState(path, { passphrase: PASSPHRASE, kdf: FAST_KDF, ...opts })
  // A socket saves fresh creds on its first `creds.update`; without it a reopened party
  // would have a new identity.
  await auth.saveCreds()
  const keys = baileys.addTransactionCapability(auth.state.keys, silent, {
    maxCommitRetries: 3,
    delayBetweenTriesMs: 10,
  })
  const repository = makeLibSignalRepository({ creds: auth.state.creds, keys }, silent)
  return { ...auth, jid, keys, repository }
}

/** Stores `count` one-time pre-keys for `p` (as Baileys does before uploading them). */
export async function addPreKeys(p, count) {
  const start = p.state.creds.nextPreKeyId
  const preKeys = {}
  for (let id = start; id < start + count; id++) preKeys[id] = baileys.Curve.generateKeyPair()
  await p.keys.set({ 'pre-key': preKeys })
  p.state.creds.nextPreKeyId = start + count
  await p.saveCreds()
  return Object.keys(preKeys).map(Number)
}

/** The bundle the server would hand out for `p`, using one-time pre-key `preKeyId`. */
export async function bundle(p, preKeyId) {
  const { creds } = p.state
  const { [preKeyId]: preKey } = await p.state.keys.get('pre-key', [String(preKeyId)])
  return {
    registrationId: creds.registrationId,
    identityKey: baileys.generateSignalPubKey(creds.signedIdentityKey.public),
    signedPreKey: {
      keyId: creds.signedPreKey.keyId,
      publicKey: baileys.generateSignalPubKey(creds.signedPreKey.keyPair.public),
      signature: creds.signedPreKey.signature,
    },
    preKey: { keyId: preKeyId, publicKey: baileys.generateSignalPubKey(preKey.public) },
  }
}

/** Sends `text` from one party to the other and checks it decrypts; returns the type. */
export async function talk(from, to, text) {
  const m = await from.repository.encryptMessage({ jid: to.jid, data: Buffer.from(text) })
  const plain = await to.repository.decryptMessage({ jid: from.jid, type: m.type, ciphertext: m.ciphertext })
  assert.equal(Buffer.from(plain).toString(), text)
  return m.type
}
