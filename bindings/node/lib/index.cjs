'use strict'
// The JavaScript half of sealkv for Node: option checking, Baileys' JSON, and error
// codes. Every store call goes to the native half (`native/`), which runs it on the
// libuv thread pool.

/** The package holding the native half for this platform (napi-rs's layout). */
function nativePackage() {
  const abi =
    process.platform === 'linux'
      ? process.report?.getReport?.().header?.glibcVersionRuntime
        ? '-gnu'
        : '-musl'
      : process.platform === 'win32'
        ? '-msvc'
        : ''
  return `@sealkv/binding-${process.platform}-${process.arch}${abi}`
}

let native
try {
  // In the repository: native/sealkv.<platform>.node from `npm run build`; installed:
  // the platform package npm picked from optionalDependencies.
  native = require('../native/index.cjs')
} catch (cause) {
  const err = new Error(
    `sealkv has no native half for ${process.platform}-${process.arch}: the package ` +
      `${nativePackage()} is missing or does not load. npm installs it as an optional ` +
      `dependency of sealkv; it is absent when optional dependencies were left out ` +
      `(--omit=optional, --no-optional) or when sealkv is not built for this platform ` +
      `(built: linux-x64-gnu; see sealkv's README for the others). Reinstall with ` +
      `optional dependencies, or build it from source (cargo, then npm run build in ` +
      `bindings/node).`,
    { cause },
  )
  err.code = 'SEALKV_NO_NATIVE'
  throw err
}

/** Key families of Baileys' `SignalDataTypeMap`; each is a namespace of the store. */
const FAMILIES = Object.freeze([
  'pre-key',
  'session',
  'sender-key',
  'sender-key-memory',
  'app-state-sync-key',
  'app-state-sync-version',
  'lid-mapping',
  'device-list',
  'tctoken',
  'identity-key',
])

/** An error from sealkv, with a stable `code` such as `SEALKV_WRONG_KEY`. */
class SealkvError extends Error {
  constructor(code, message, options) {
    super(message, options)
    this.name = 'SealkvError'
    this.code = code
  }
}

const CODED = /^(SEALKV_[A-Z_]+): ([\s\S]*)$/

function translate(err) {
  const m = err && typeof err.message === 'string' ? CODED.exec(err.message) : null
  return m ? new SealkvError(m[1], m[2]) : err
}

/** Runs a native call, turning its coded errors (thrown or rejected) into SealkvErrors. */
async function call(fn) {
  try {
    return await fn()
  } catch (err) {
    throw translate(err)
  }
}

/**
 * The bytes of a value, copied: a queued write reads them when its commit starts, and
 * the caller may reuse its buffer as soon as the call returns.
 */
function toBuffer(value, what) {
  if (value instanceof Uint8Array) return Buffer.from(value)
  if (typeof value === 'string') return Buffer.from(value, 'utf8')
  throw new SealkvError('SEALKV_INVALID_ARGUMENT', `${what}: a value must be a Buffer, Uint8Array or string`)
}

function secretOf(opts) {
  const { passphrase, key } = opts
  if ((passphrase == null) === (key == null)) {
    throw new SealkvError('SEALKV_INVALID_ARGUMENT', 'give exactly one of `passphrase` or `key`')
  }
  if (passphrase != null) {
    if (typeof passphrase !== 'string') {
      throw new SealkvError('SEALKV_INVALID_ARGUMENT', '`passphrase` must be a string')
    }
    return { passphrase }
  }
  return { key: toBuffer(key, 'key') }
}

function nativeOptions(opts, mode) {
  return {
    create: mode !== 'open',
    createNew: mode === 'create',
    readOnly: Boolean(opts.readOnly),
    kdf: opts.kdf
      ? { memoryKib: opts.kdf.memoryKib, passes: opts.kdf.passes, lanes: opts.kdf.lanes ?? 1 }
      : undefined,
    concurrency: opts.concurrency,
    syncReplicas: wholeNumber(opts.syncReplicas, 'syncReplicas', 64),
    failoverTimeoutMs: wholeNumber(opts.failoverTimeoutMs, 'failoverTimeoutMs', 2 ** 32 - 1),
    acceptRestore: mode === 'acceptRestore',
  }
}

/** An optional whole-number option from 0 to `max`, checked before it reaches napi. */
function wholeNumber(value, name, max) {
  if (value == null) return undefined
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new SealkvError('SEALKV_INVALID_ARGUMENT', `\`${name}\` must be a whole number from 0 to ${max}`)
  }
  return value
}

/**
 * A change's time to live, checked here so that a bad one fails its own call before it
 * joins a combined commit: a value napi cannot convert would fail the whole commit with
 * napi's own error, and every call in it. Out-of-range numbers get the code the native
 * half gives them.
 */
function ttlOf(ttlMs, what) {
  if (ttlMs == null) return undefined
  if (typeof ttlMs !== 'number') {
    throw new SealkvError('SEALKV_BAD_ARGUMENT', `${what}: ttlMs must be a number of milliseconds, not a ${typeof ttlMs}`)
  }
  if (!Number.isFinite(ttlMs) || ttlMs < 1000) {
    throw new SealkvError('SEALKV_INVALID_TTL', `${what}: time to live of ${ttlMs} ms: give at least 1000 ms`)
  }
  return ttlMs
}

/**
 * Normalizes `set`'s argument: an array of changes, or `{ namespace: { key: value | null } }`.
 * Every field is checked or converted here, so what reaches the native half always
 * converts (see `Writer`).
 */
function changesOf(changes) {
  const out = []
  const push = (namespace, key, value, ttlMs) => {
    const what = `${namespace}/${key}`
    out.push({
      namespace: String(namespace),
      key: String(key),
      // undefined, not null: napi reads an absent optional field, not a null one.
      value: value == null ? undefined : toBuffer(value, what),
      ttlMs: ttlOf(ttlMs, what),
    })
  }
  if (Array.isArray(changes)) {
    for (const c of changes) {
      if (c === null || typeof c !== 'object') {
        throw new SealkvError('SEALKV_BAD_ARGUMENT', 'each change must be an object { namespace, key, value, ttlMs? }')
      }
      push(c.namespace, c.key, c.value, c.ttlMs)
    }
  } else if (changes && typeof changes === 'object') {
    for (const namespace of Object.keys(changes)) {
      const entries = changes[namespace] || {}
      for (const key of Object.keys(entries)) push(namespace, key, entries[key])
    }
  } else {
    throw new SealkvError('SEALKV_INVALID_ARGUMENT', 'changes must be an array or an object of namespaces')
  }
  return out
}

/**
 * Write combining and write order. Every write of a session (set, delete, clear, and
 * dropping it) goes through its writer, one commit at a time, in call order. While a
 * commit is in flight, later `set` calls queue, and the next commit carries all of them
 * (each call's changes whole, in call order, so a later call wins on a shared key);
 * other writes run alone, in their place in the queue. Every caller resolves only when
 * the commit holding its changes is durable. The libuv pool has 4 threads, so without
 * combining, ten concurrent writers would wait for four fsyncs at a time.
 *
 * One commit in flight is what keeps call order, and it also measured fastest
 * (`npm run bench`, 10 workers, 12,000 sets: 7,216 sets/s with one in flight, 5,847
 * with four, since each commit then carries fewer calls).
 *
 * Each call's arguments are checked before it is queued (`changesOf`), so a call of the
 * wrong shape rejects alone, with `SEALKV_BAD_ARGUMENT`, and never joins a commit. If a
 * combined commit still fails because of one call's content (a name too long, a value
 * too large, or anything napi refuses to convert), each call in it is retried alone, so
 * the bad call fails only itself; any other failure (an fsync error, say, where the
 * outcome is unknown) goes to every caller.
 */
class Writer {
  #native
  #session
  #pending = []
  #running = false
  #idle = []

  constructor(handle, session) {
    this.#native = handle
    this.#session = session
  }

  /** Queues changes, to be combined with neighbouring `set` calls. */
  submit(changes) {
    return this.#queue({ changes })
  }

  /** Queues a write that runs alone, after every write queued before it. */
  submitOp(op) {
    return this.#queue({ op })
  }

  #queue(item) {
    return new Promise((resolve, reject) => {
      this.#pending.push({ ...item, resolve, reject })
      this.#drain()
    })
  }

  /** Resolves once every write submitted so far has settled. */
  whenIdle() {
    if (this.#pending.length === 0 && !this.#running) return Promise.resolve()
    return new Promise((resolve) => this.#idle.push(resolve))
  }

  #drain() {
    if (this.#running) return
    if (this.#pending.length === 0) {
      for (const resolve of this.#idle.splice(0)) resolve()
      return
    }
    let group
    if (this.#pending[0].op) {
      group = [this.#pending.shift()]
    } else {
      const end = this.#pending.findIndex((item) => item.op)
      group = this.#pending.splice(0, end === -1 ? this.#pending.length : end)
    }
    this.#running = true
    this.#run(group).finally(() => {
      // The callers this commit resolved run on before the next one starts (their
      // continuations are microtasks; setImmediate comes after them), so the writes
      // they make at once join one commit instead of the first of them going alone.
      setImmediate(() => {
        this.#running = false
        this.#drain()
      })
    })
  }

  async #commit(changes) {
    let pending
    try {
      pending = this.#native.set(this.#session, changes)
    } catch (err) {
      // Thrown, not rejected: napi refused an argument before any work started, so
      // nothing was written. Its message may quote the argument: not passed on.
      const coded = translate(err)
      throw Object.assign(
        coded instanceof SealkvError
          ? coded
          : new SealkvError('SEALKV_BAD_ARGUMENT', `the native half cannot take this change (napi: ${err?.code ?? 'error'})`),
        { [NOT_STARTED]: true },
      )
    }
    await call(() => pending)
  }

  async #run(group) {
    if (group[0].op) {
      const [g] = group
      try {
        g.resolve(await call(g.op))
      } catch (err) {
        g.reject(err)
      }
      return
    }
    try {
      await this.#commit(group.length === 1 ? group[0].changes : group.flatMap((g) => g.changes))
      for (const g of group) g.resolve()
    } catch (err) {
      // Only an error about one call's content (nothing written) is worth retrying
      // call by call; any other (a failed or uncertain commit, a closed or poisoned
      // store) is every caller's answer as it is.
      if (group.length === 1 || !(err[NOT_STARTED] || PER_CALL_ERRORS.has(err.code))) {
        for (const g of group) g.reject(err)
        return
      }
      for (const g of group) {
        try {
          await this.#commit(g.changes)
          g.resolve()
        } catch (alone) {
          g.reject(alone)
        }
      }
    }
  }
}

/** Errors a combined commit can get from one call's content alone. */
const PER_CALL_ERRORS = new Set(['SEALKV_INVALID_NAME', 'SEALKV_TOO_LARGE', 'SEALKV_INVALID_TTL'])

/** Marks an error the native half threw before starting a commit: nothing was written. */
const NOT_STARTED = Symbol('sealkv.notStarted')

/** The writers of each open native handle, by session. */
const writers = new WeakMap()

function writerFor(handle, session) {
  let bySession = writers.get(handle)
  if (!bySession) {
    bySession = new Map()
    writers.set(handle, bySession)
  }
  let writer = bySession.get(session)
  if (!writer) {
    writer = new Writer(handle, session)
    bySession.set(session, writer)
  }
  return writer
}

/**
 * An encrypted store: one file, values sealed with rotating data keys. A `Store` is a
 * view of one session (the default session unless made by `session(id)`); views share
 * one open file.
 */
class Store {
  #native
  #session

  constructor(handle, session) {
    if (!(handle instanceof native.NativeStore)) {
      throw new TypeError('use Store.open, Store.create or Store.openOrCreate')
    }
    this.#native = handle
    this.#session = session ?? null
  }

  static async #open(path, opts, mode) {
    if (typeof path !== 'string' || path === '') {
      throw new SealkvError('SEALKV_INVALID_ARGUMENT', 'path must be a non-empty string')
    }
    const secret = secretOf(opts)
    const handle = await call(() => native.openStore(path, secret, nativeOptions(opts, mode)))
    return new Store(handle, opts.session)
  }

  /** Opens an existing store. */
  static open(path, opts = {}) {
    return Store.#open(path, opts, 'open')
  }

  /** Creates a new store; rejects with `SEALKV_EXISTS` when the file exists. */
  static create(path, opts = {}) {
    return Store.#open(path, opts, 'create')
  }

  /**
   * Opens the store, creating it when it does not exist (on PostgreSQL: open first,
   * create only when absent; a lost race to create opens the winner's store).
   */
  static openOrCreate(path, opts = {}) {
    return Store.#open(path, opts, 'openOrCreate')
  }

  /**
   * Opens a store whose anchor says it is an older copy (it rejects every other open
   * with `SEALKV_ROLLED_BACK`), or whose anchor is gone (`SEALKV_ANCHOR`), and accepts
   * it as current: its restore epoch advances and the anchor is written from it, so
   * the copy that was current before is refused from now on. Use it only when the
   * restore was meant; then start over what a restore breaks (re-pair the bot).
   */
  static acceptRestore(path, opts = {}) {
    return Store.#open(path, opts, 'acceptRestore')
  }

  /**
   * How many restores were accepted (`acceptRestore`). A bot that keeps state elsewhere
   * compares it with the epoch it saw last, and re-pairs when it grew.
   */
  get restoreEpoch() {
    return this.#native.restoreEpoch
  }

  /**
   * Anchors the store against rollback at `location` (a file path, `keychain:SERVICE`
   * or `postgres://user@host/db` without a password), or removes the anchor (`null`).
   * Every later open, from any program, refuses an older copy with `SEALKV_ROLLED_BACK`.
   */
  setAnchor(location) {
    if (location !== null && (typeof location !== 'string' || location === '')) {
      return Promise.reject(new SealkvError('SEALKV_INVALID_ARGUMENT', 'location must be a non-empty string or null'))
    }
    return call(() => this.#native.setAnchor(location))
  }

  /** The session this view reads and writes (null: the default session). */
  get sessionId() {
    return this.#session
  }

  /** A view of session `id` of the same open file. */
  session(id) {
    if (typeof id !== 'string' || id === '') {
      throw new SealkvError('SEALKV_INVALID_ARGUMENT', 'a session id must be a non-empty string')
    }
    return new Store(this.#native, id)
  }

  /** The value of `namespace`/`key`, or null. */
  async get(namespace, key) {
    const [value] = await call(() => this.#native.get(this.#session, String(namespace), [String(key)]))
    return value
  }

  /** Values of several keys of one namespace: an object of the keys found. */
  async getMany(namespace, keys) {
    const ids = keys.map(String)
    const values = await call(() => this.#native.get(this.#session, String(namespace), ids))
    const found = {}
    ids.forEach((id, i) => {
      if (values[i] !== null) found[id] = values[i]
    })
    return found
  }

  /**
   * Applies puts and deletes in one atomic, durable transaction. `changes` is an array
   * of `{ namespace, key, value, ttlMs? }` (a null `value` deletes) or an object
   * `{ namespace: { key: value | null } }`.
   */
  async set(changes) {
    const list = changesOf(changes)
    if (list.length === 0) return
    if (this.#native.closed) throw new SealkvError('SEALKV_CLOSED', 'the store is closed')
    await writerFor(this.#native, this.#session).submit(list)
  }

  /** Stores one value (`ttlMs`: it expires that many milliseconds from now). */
  async put(namespace, key, value, { ttlMs } = {}) {
    await this.set([{ namespace, key, value, ttlMs }])
  }

  /** Deletes one value; resolves whether it existed. */
  delete(namespace, key) {
    return this.#write(() => this.#native.delete(this.#session, String(namespace), String(key)))
  }

  /** The keys of `namespace`, sorted. */
  list(namespace) {
    return call(() => this.#native.list(this.#session, String(namespace)))
  }

  /** The namespaces that hold values in this session. */
  namespaces() {
    return call(() => this.#native.namespaces(this.#session))
  }

  /** Deletes every value of this session, in one transaction. */
  clear() {
    return this.#write(() => this.#native.clear(this.#session))
  }

  /** The named sessions that hold values. */
  sessions() {
    return call(() => this.#native.sessions())
  }

  /** Deletes session `id` and all its values; resolves whether it had any. */
  dropSession(id) {
    const session = String(id)
    if (this.#native.closed) return Promise.reject(new SealkvError('SEALKV_CLOSED', 'the store is closed'))
    return writerFor(this.#native, session).submitOp(() => this.#native.dropSession(session))
  }

  /** Runs a write of this session alone, in its place among the session's writes. */
  #write(op) {
    if (this.#native.closed) return Promise.reject(new SealkvError('SEALKV_CLOSED', 'the store is closed'))
    return writerFor(this.#native, this.#session).submitOp(op)
  }

  /**
   * Deletes every value of this session outside the namespaces in `keep`, in one
   * transaction ordered with the session's other writes (`useSealedAuthState`'s `clear`).
   */
  clearNamespacesExcept(keep) {
    return this.#write(async () => {
      const changes = []
      for (const namespace of await this.#native.namespaces(this.#session)) {
        if (keep.includes(namespace)) continue
        for (const key of await this.#native.list(this.#session, namespace)) {
          changes.push({ namespace, key, value: undefined })
        }
      }
      if (changes.length > 0) await this.#native.set(this.#session, changes)
    })
  }

  /** Removes expired values now; resolves how many. */
  sweep() {
    return call(() => this.#native.sweep())
  }

  /** Makes a new primary data key (old values stay readable); resolves its id. */
  rotate() {
    return call(() => this.#native.rotate())
  }

  /** Opens every value and checks the store; resolves the problems found (`[]`: sound). */
  verify() {
    return call(() => this.#native.verify())
  }

  /**
   * The metrics of every store of this process, in Prometheus' text format: serve it
   * on `/metrics` (or append it to prom-client's `register.metrics()`).
   */
  metricsText() {
    return this.#native.metricsText()
  }

  /**
   * Checks the store (a round trip on PostgreSQL); resolves
   * `{ healthy, engine, problems, notes, lastCommitOk, lastCommitAgeMs }`.
   */
  health() {
    return call(() => this.#native.health())
  }

  /** Resolves true when `health()` finds no problem (false, never a rejection, otherwise). */
  async isHealthy() {
    try {
      return (await this.health()).healthy
    } catch {
      return false
    }
  }

  /** Writes a consistent copy of the store to a new file `dest`, while it is in use. */
  backup(dest) {
    return call(() => this.#native.backup(String(dest)))
  }

  /** Whether the store was closed. */
  get closed() {
    return this.#native.closed
  }

  /**
   * Closes the store (every view of it) once the writes already submitted have
   * settled. Later calls reject with `SEALKV_CLOSED`.
   */
  async close() {
    const bySession = writers.get(this.#native)
    if (bySession) await Promise.all([...bySession.values()].map((w) => w.whenIdle()))
    this.#native.close()
  }
}

async function loadBaileys() {
  const tried = []
  for (const name of ['baileys', '@whiskeysockets/baileys']) {
    try {
      return await import(name)
    } catch (err) {
      if (err && err.code !== 'ERR_MODULE_NOT_FOUND') throw err
      tried.push(name)
    }
  }
  throw new SealkvError(
    'SEALKV_NO_BAILEYS',
    `cannot find Baileys (tried ${tried.join(', ')}); install it next to sealkv, or pass { baileys } to useSealedAuthState`,
  )
}

function encode(value, BufferJSON, what) {
  let text
  try {
    text = JSON.stringify(value, BufferJSON.replacer)
  } catch (err) {
    throw new SealkvError('SEALKV_SERIALIZE', `cannot serialize ${what}: ${err.message}`, { cause: err })
  }
  if (text === undefined) {
    throw new SealkvError('SEALKV_SERIALIZE', `cannot serialize ${what}: not a JSON value`)
  }
  return Buffer.from(text, 'utf8')
}

/**
 * Baileys' auth state in a sealed store: a drop-in for `useMultiFileAuthState`.
 *
 * Values are the JSON `useMultiFileAuthState` writes (`BufferJSON.replacer`), so a
 * folder moved in with `sealkv import-baileys` reads back as it was.
 */
async function useSealedAuthState(path, opts = {}) {
  const baileys = opts.baileys ?? (await loadBaileys())
  const { BufferJSON, initAuthCreds, proto } = baileys
  const store = opts.create === false ? await Store.open(path, opts) : await Store.openOrCreate(path, opts)
  const view = opts.session == null ? store : store.session(opts.session)
  let creds
  try {
    const saved = await view.get('creds', 'creds')
    creds = saved ? JSON.parse(saved.toString('utf8'), BufferJSON.reviver) : initAuthCreds()
  } catch (err) {
    await store.close()
    // Not err.message: JSON.parse quotes the text it failed on.
    throw err instanceof SyntaxError ? new SealkvError('SEALKV_BAD_VALUE', 'the stored creds are not valid JSON') : err
  }

  const keys = {
    async get(type, ids) {
      const found = await view.getMany(type, ids)
      const data = {}
      for (const id of Object.keys(found)) {
        let value
        try {
          value = JSON.parse(found[id].toString('utf8'), BufferJSON.reviver)
        } catch {
          // Not the parser's message: it quotes the stored text, which may be a key.
          throw new SealkvError('SEALKV_BAD_VALUE', `a stored ${type} value is not valid JSON`)
        }
        if (type === 'app-state-sync-key' && value) {
          value = proto.Message.AppStateSyncKeyData.fromObject(value)
        }
        data[id] = value
      }
      return data
    },
    async set(data) {
      const changes = []
      for (const type of Object.keys(data)) {
        const entries = data[type] || {}
        for (const id of Object.keys(entries)) {
          const value = entries[id]
          changes.push({
            namespace: type,
            key: id,
            value: value == null ? null : encode(value, BufferJSON, `${type} ${id}`),
          })
        }
      }
      await view.set(changes)
    },
    async clear() {
      // Every key family (whatever its name), not the creds.
      await view.clearNamespacesExcept(['creds'])
    },
  }

  return {
    state: { creds, keys },
    saveCreds: async () => {
      await view.set([{ namespace: 'creds', key: 'creds', value: encode(creds, BufferJSON, 'creds') }])
    },
    close: () => store.close(),
    store: view,
  }
}

module.exports = { Store, SealkvError, useSealedAuthState, FAMILIES }
