// Types of the `sealkv` package (ESM and CommonJS entry points export the same objects).

/** Stable codes of {@link SealkvError}. */
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
  | 'SEALKV_INVALID_TTL'
  | 'SEALKV_READ_ONLY'
  | 'SEALKV_POISONED'
  | 'SEALKV_COMMIT_FAILED'
  | 'SEALKV_META_TAMPERED'
  | 'SEALKV_KEYRING_CHANGED'
  | 'SEALKV_LOCK_TIMEOUT'
  | 'SEALKV_LOCK_LOST'
  | 'SEALKV_NEEDS_UPGRADE'
  | 'SEALKV_NOT_ALONE'
  | 'SEALKV_NESTED_LOCK'
  | 'SEALKV_KEY_IN_USE'
  | 'SEALKV_KEY'
  | 'SEALKV_IO'
  | 'SEALKV_SERVER'
  | 'SEALKV_SERDE'
  | 'SEALKV_KEYCHAIN'
  | 'SEALKV_NO_SUCH_SLOT'
  | 'SEALKV_LAST_SLOT'
  /** The file is an older copy than the last one this store was seen at (a backup or a sync put back); see `acceptRestore`. */
  | 'SEALKV_ROLLED_BACK'
  | 'SEALKV_ANCHOR'
  | 'SEALKV_CONTENT_CHANGED'
  | 'SEALKV_CLOSED'
  | 'SEALKV_INVALID_ARGUMENT'
  /** A write's argument of the wrong type (a `ttlMs` that is not a number, a change that is not an object); that call alone fails. */
  | 'SEALKV_BAD_ARGUMENT'
  /** A bug: the native half panicked. The call did not finish; the message says nothing of the data. */
  | 'SEALKV_INTERNAL'
  | 'SEALKV_SERIALIZE'
  | 'SEALKV_BAD_VALUE'
  | 'SEALKV_NO_BAILEYS'
  /** Thrown by `require`/`import` itself: the platform's native package is missing (the message names it). */
  | 'SEALKV_NO_NATIVE'

/** An error from sealkv. Messages never contain keys, passphrases or values. */
export declare class SealkvError extends Error {
  readonly code: SealkvErrorCode
}

/** Argon2id cost for a store created with a passphrase. */
export interface KdfOptions {
  /** Memory in KiB (the default parameters, used when `kdf` is absent, are 65536). */
  memoryKib: number
  /** Passes (3 when `kdf` is absent). */
  passes: number
  /** Lanes (default 1). */
  lanes?: number
}

/** How to open a store: exactly one of `passphrase` or `key`. */
export interface OpenOptions {
  /** A passphrase (Argon2id derives the master key). */
  passphrase?: string
  /** A raw 32-byte master key. */
  key?: Uint8Array
  /** The session to read and write (one file, many bots); the default session when absent. */
  session?: string
  /** Open without ever writing. */
  readOnly?: boolean
  /** Argon2id cost, for a store being created with a passphrase. */
  kdf?: KdfOptions
  /**
   * `'shared'` (default: other processes may open it too; the first to open it owns the
   * file and serves the others, see docs/SHARING.md), `'exclusive'` (one process), or
   * `'multi-writer'` (every process writes the file itself; where Unix sockets are
   * missing). Fixed at creation.
   */
  concurrency?: 'shared' | 'exclusive' | 'multi-writer'
  /**
   * PostgreSQL: synchronous standbys every commit must wait for (0 to 64). A server
   * configured with fewer (`synchronous_standby_names`) refuses writes with a clear
   * error; the URL's `sync_replicas=N` does the same.
   */
  syncReplicas?: number
  /** PostgreSQL: how long calls keep trying while the server fails over (default 30000 ms). */
  failoverTimeoutMs?: number
}

/** One change: a put (`value` given) or a delete (`value` null or absent). */
export interface Change {
  namespace: string
  key: string
  value?: Uint8Array | string | null
  /** Time to live in milliseconds (at least 1000); another type rejects with `SEALKV_BAD_ARGUMENT`. */
  ttlMs?: number | null
}

/** What `health()` found. */
export interface HealthReport {
  /** No problem found. */
  healthy: boolean
  /** `'file'` or `'postgres'`. */
  engine: string
  /** What is wrong, one line each (no name, key or value in them). */
  problems: string[]
  /** What may want attention (a rotation due) without making the store unhealthy. */
  notes: string[]
  /** Whether this handle's last commit succeeded; absent before its first. */
  lastCommitOk?: boolean
  /** Milliseconds since this handle's last commit ended. */
  lastCommitAgeMs?: number
}

/** A problem `verify` found. */
export interface Problem {
  code: SealkvErrorCode
  message: string
}

/**
 * An encrypted store; a view of one session of an open file. Wherever a `path` is
 * taken, a PostgreSQL URL (`postgres://user@host:port/db?store=NAME`, the password in
 * `PGPASSWORD`) names a store on a server instead; its errors have code `SEALKV_SERVER`.
 */
export declare class Store {
  /** Opens an existing store. */
  static open(path: string, options: OpenOptions): Promise<Store>
  /** Creates a new store; rejects with `SEALKV_EXISTS` when the file exists. */
  static create(path: string, options: OpenOptions): Promise<Store>
  /**
   * Opens the store, creating it when it does not exist. On PostgreSQL it opens first
   * and creates only a store the server says is absent, so a role with rights on the
   * store's tables alone (no CREATE) can use it; processes racing to create one store
   * all end up opening the one that won.
   */
  static openOrCreate(path: string, options: OpenOptions): Promise<Store>
  /**
   * Opens a store its anchor says is an older copy (other opens reject with
   * `SEALKV_ROLLED_BACK`), or whose anchor is gone (`SEALKV_ANCHOR`), and accepts it as
   * current: the restore epoch advances, and the copy current before is refused from now on.
   */
  static acceptRestore(path: string, options: OpenOptions): Promise<Store>
  /** The session of this view (null: the default session). */
  readonly sessionId: string | null
  /** Whether the store was closed. */
  readonly closed: boolean
  /** A view of session `id` of the same open file. */
  session(id: string): Store
  /** The value of `namespace`/`key`, or null. */
  get(namespace: string, key: string): Promise<Buffer | null>
  /** Values of several keys of one namespace: an object of the keys found. */
  getMany(namespace: string, keys: string[]): Promise<Record<string, Buffer>>
  /** Puts and deletes in one atomic, durable transaction. */
  set(changes: Change[] | Record<string, Record<string, Uint8Array | string | null>>): Promise<void>
  /** Stores one value. */
  put(namespace: string, key: string, value: Uint8Array | string, options?: { ttlMs?: number }): Promise<void>
  /** Deletes one value; resolves whether it existed. */
  delete(namespace: string, key: string): Promise<boolean>
  /** The keys of `namespace`, sorted. */
  list(namespace: string): Promise<string[]>
  /** The namespaces that hold values in this session. */
  namespaces(): Promise<string[]>
  /** Deletes every value of this session. */
  clear(): Promise<void>
  /** The named sessions that hold values. */
  sessions(): Promise<string[]>
  /** Deletes session `id` and all its values; resolves whether it had any. */
  dropSession(id: string): Promise<boolean>
  /** Removes expired values now; resolves how many. */
  sweep(): Promise<number>
  /** Makes a new primary data key; resolves its id. */
  rotate(): Promise<number>
  /** Opens every value and checks the store; resolves the problems found. */
  verify(): Promise<Problem[]>
  /** Every store's metrics in this process, in Prometheus' text format. */
  metricsText(): string
  /** Checks the store (a round trip on PostgreSQL). */
  health(): Promise<HealthReport>
  /** True when `health()` finds no problem; false when it finds one or fails. */
  isHealthy(): Promise<boolean>
  /** Writes a consistent copy to a new file, while the store is in use. */
  backup(dest: string): Promise<void>
  /**
   * Anchors the store against rollback (a file path, `keychain:SERVICE`, or a
   * `postgres://` URL without a password), or removes the anchor (`null`): every later
   * open refuses an older copy with `SEALKV_ROLLED_BACK`.
   */
  setAnchor(location: string | null): Promise<void>
  /** How many restores were accepted (`Store.acceptRestore`). */
  readonly restoreEpoch: number
  /** Closes the store and all its views. */
  close(): Promise<void>
}

/** Options of {@link useSealedAuthState}. */
export interface SealedAuthOptions extends OpenOptions {
  /** Create the store when the file does not exist (default true). */
  create?: boolean
  /** The Baileys module to use (default: `import('baileys')`, then `@whiskeysockets/baileys`). */
  baileys?: unknown
}

/** Baileys' `SignalKeyStore` shape. */
export interface SealedKeyStore {
  get(type: string, ids: string[]): Promise<Record<string, any>>
  set(data: Record<string, Record<string, any | null>>): Promise<void>
  clear(): Promise<void>
}

/** What {@link useSealedAuthState} returns. */
export interface SealedAuthState {
  /** Pass as `auth` to `makeWASocket`. */
  state: { creds: any; keys: SealedKeyStore }
  /** Durably saves the whole current `state.creds`. */
  saveCreds(): Promise<void>
  /** Closes the store. */
  close(): Promise<void>
  /** The store view holding this auth state. */
  store: Store
}

/** Baileys' auth state in a sealed store: a drop-in for `useMultiFileAuthState`. */
export declare function useSealedAuthState(path: string, options: SealedAuthOptions): Promise<SealedAuthState>

/** The Baileys key families, each a namespace of the store. */
export declare const FAMILIES: readonly string[]
