// The web side of tauri-plugin-sealkv: typed calls to the plugin's commands.

import { invoke } from '@tauri-apps/api/core'

/**
 * Stable codes of {@link SealkvError}: the engine's (the same as the `sealkv` Node
 * package's), the plugin's own, and two for failures before the plugin is reached.
 */
export type SealkvErrorCode =
  | 'SEALKV_WRONG_KEY'
  | 'SEALKV_KEY_KIND'
  | 'SEALKV_LOCKED'
  | 'SEALKV_NOT_SEALKV'
  | 'SEALKV_NEWER_FORMAT'
  | 'SEALKV_CORRUPT'
  | 'SEALKV_EXISTS'
  | 'SEALKV_INTEGRITY'
  | 'SEALKV_TOO_LARGE'
  | 'SEALKV_INVALID_NAME'
  | 'SEALKV_READ_ONLY'
  | 'SEALKV_POISONED'
  | 'SEALKV_COMMIT_FAILED'
  | 'SEALKV_META_TAMPERED'
  | 'SEALKV_IO'
  /** The keychain is unreachable, locked, or has no entry for the store: open it with its recovery passphrase. */
  | 'SEALKV_KEYCHAIN'
  /** The file is an older copy than the one last seen (a backup or a sync put back). */
  | 'SEALKV_ROLLED_BACK'
  | 'SEALKV_ANCHOR'
  | 'SEALKV_CONTENT_CHANGED'
  /** The store was not opened (or was closed) in this app. */
  | 'SEALKV_NOT_OPEN'
  /** A bad store name, or a value that cannot be written. */
  | 'SEALKV_INVALID_ARGUMENT'
  /** `getJson` of a value that is not JSON text. */
  | 'SEALKV_NOT_JSON'
  /** `getText` of a value that is not UTF-8 text. */
  | 'SEALKV_NOT_TEXT'
  /** A bug in the plugin: the call did not finish. */
  | 'SEALKV_INTERNAL'
  /** The app's capability does not allow this command, or denies it (Tauri refused it; the message says which permission). */
  | 'SEALKV_NOT_ALLOWED'
  /** Any other failure of the IPC call itself. */
  | 'SEALKV_IPC'
  // Other engine codes, less likely in an app (`SEALKV_LOCK_TIMEOUT`, …).
  | (string & {})

/** An error from the plugin. Messages never contain keys, passphrases or values. */
export class SealkvError extends Error {
  /** The stable code to match on. */
  readonly code: SealkvErrorCode

  constructor(code: SealkvErrorCode, message: string) {
    super(message)
    this.name = 'SealkvError'
    this.code = code
  }
}

/** A JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/**
 * A value to write: bytes as they are, a string as its UTF-8 text, anything else as
 * its JSON text. (To keep a string as JSON, pass `JSON.stringify(s)`.)
 */
export type Value = Uint8Array | ArrayBuffer | string | JsonValue

/**
 * One atomic batch: `{ namespace: { key: value } }` or `[namespace, key, value]`
 * triples; a `null` value deletes the key.
 */
export type Changes = Record<string, Record<string, Value | null>> | Array<[string, string, Value | null]>

/** Options of {@link open}. */
export interface OpenOptions {
  /**
   * A recovery passphrase. A new store gets it as a second slot (beside its keychain
   * key); an existing store the keychain cannot open (its entry gone after a reset or
   * on another machine) opens with it, and gets a new keychain entry. With no keychain
   * reachable at all it cannot help: the store's rollback anchor is in the keychain.
   */
  recoveryPassphrase?: string
}

/** What {@link open} did. */
export interface Opened {
  /** The store's name. */
  name: string
  /** The store's id (the keychain account its key is kept under). */
  id: string
  /** This call created the store. */
  created: boolean
  /** The keychain could not open it (no entry, or another key) and the recovery passphrase did. */
  recovered: boolean
  /** After such a recovery, a new keychain entry now opens it: later opens need no passphrase. */
  repaired: boolean
  /**
   * The recovery found the store's rollback anchor gone with the keychain (a reset, a
   * new machine) and accepted the file as the current state: it could not be checked
   * against rollback this once. Tell the user.
   */
  restoreAccepted: boolean
  /** It was open already in this app. */
  alreadyOpen: boolean
}

/** A problem {@link Store.verify} found. */
export interface Problem {
  code: SealkvErrorCode
  message: string
}

type Wire = { bytes: number[] } | { text: string } | { json: JsonValue }
type Read = Wire | null

function toError(error: unknown): SealkvError {
  if (error instanceof SealkvError) return error
  if (typeof error === 'object' && error !== null) {
    const { code, message } = error as { code?: unknown; message?: unknown }
    if (typeof code === 'string' && typeof message === 'string') return new SealkvError(code, message)
  }
  const text = typeof error === 'string' ? error : String(error)
  // Tauri's own refusal, when the capability lacks the permission or denies it.
  if (/not allowed|explicitly denied/i.test(text)) return new SealkvError('SEALKV_NOT_ALLOWED', text)
  return new SealkvError('SEALKV_IPC', text)
}

async function call<T>(command: string, args: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(`plugin:sealkv|${command}`, args)
  } catch (error) {
    throw toError(error)
  }
}

function wire(value: Value): Wire {
  if (value instanceof Uint8Array) return { bytes: Array.from(value) }
  if (value instanceof ArrayBuffer) return { bytes: Array.from(new Uint8Array(value)) }
  if (typeof value === 'string') return { text: value }
  if (value === undefined) throw new SealkvError('SEALKV_INVALID_ARGUMENT', 'a value must not be undefined (null deletes)')
  return { json: value }
}

function changesOf(changes: Changes): Array<{ namespace: string; key: string; value: Wire | null }> {
  const list = Array.isArray(changes)
    ? changes
    : Object.entries(changes).flatMap(([namespace, keys]) =>
        Object.entries(keys).map(([key, value]): [string, string, Value | null] => [namespace, key, value]),
      )
  return list.map(([namespace, key, value]) => ({ namespace, key, value: value === null ? null : wire(value) }))
}

/** An open store of the app. */
export class Store {
  /** The store's name. */
  readonly name: string
  /** What opening it did. */
  readonly opened: Opened

  private constructor(opened: Opened) {
    this.name = opened.name
    this.opened = opened
  }

  /**
   * Opens the store `name` (`<app data dir>/<name>.sealkv`), creating it when it does
   * not exist; its key is in the OS keychain under the app's identifier.
   */
  static async open(name: string, options: OpenOptions = {}): Promise<Store> {
    const opened = await call<Opened>('open', { name, recoveryPassphrase: options.recoveryPassphrase ?? null })
    return new Store(opened)
  }

  /** The bytes of `key` in `namespace`, or `null`. */
  async get(namespace: string, key: string): Promise<Uint8Array | null> {
    const read = await call<Read>('get', { name: this.name, namespace, key, encoding: 'bytes' })
    return read && 'bytes' in read ? Uint8Array.from(read.bytes) : null
  }

  /** The value of `key` as UTF-8 text, or `null` (`SEALKV_NOT_TEXT` if it is not text). */
  async getText(namespace: string, key: string): Promise<string | null> {
    const read = await call<Read>('get', { name: this.name, namespace, key, encoding: 'text' })
    return read && 'text' in read ? read.text : null
  }

  /**
   * The value of `key` parsed as JSON, or `null` when there is none (`SEALKV_NOT_JSON`
   * if it is not JSON). A stored JSON `null` also reads as `null`: use `get` to tell.
   */
  async getJson<T = JsonValue>(namespace: string, key: string): Promise<T | null> {
    const read = await call<Read>('get', { name: this.name, namespace, key, encoding: 'json' })
    return read && 'json' in read ? (read.json as T) : null
  }

  /** Writes `changes` in one atomic, durable transaction (`null` deletes). */
  async set(changes: Changes): Promise<void> {
    await call<null>('set', { name: this.name, changes: changesOf(changes) })
  }

  /** Writes one value. */
  async put(namespace: string, key: string, value: Value): Promise<void> {
    await this.set([[namespace, key, value]])
  }

  /** Deletes `key`; false when it had no value. */
  async delete(namespace: string, key: string): Promise<boolean> {
    return call<boolean>('delete', { name: this.name, namespace, key })
  }

  /** The keys of `namespace`, sorted. */
  async list(namespace: string): Promise<string[]> {
    return call<string[]>('list', { name: this.name, namespace })
  }

  /** The namespaces that hold a value, sorted. */
  async namespaces(): Promise<string[]> {
    return call<string[]>('namespaces', { name: this.name })
  }

  /** Starts a new data key for new writes; its id. */
  async rotate(): Promise<number> {
    return call<number>('rotate', { name: this.name })
  }

  /** Reads and checks every value: the problems found (none for a sound store). */
  async verify(): Promise<Problem[]> {
    return call<Problem[]>('verify', { name: this.name })
  }

  /** Closes the store in the app (its Rust side too); false when it was not open. */
  async close(): Promise<boolean> {
    return call<boolean>('close', { name: this.name })
  }
}

/** {@link Store.open}. */
export function open(name: string, options?: OpenOptions): Promise<Store> {
  return Store.open(name, options)
}
