//! The store: one redb file holding sealed values under keyed name tags.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};

use rand::RngCore;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use sealkv_crypto::{
    Context, CryptoError, Header, KdfParams, Keyring, MasterKey, TAG_BYTES, envelope, generate_salt,
};
use zeroize::Zeroizing;

use crate::backend::Boxed;
use crate::commit::Queue;
use crate::error::{Error, Result};
use crate::options::{Options, Secret};
use crate::txn::KeyLocks;

/// Newest file format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Longest namespace or key name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("sealkv_meta");
/// The key of a row: namespace tag then key tag. `&[u8; 32]` compares with one
/// `memcmp` and reads without copying; redb gives it the same type name as
/// `[u8; 32]`, the key type of earlier builds, so their files open unchanged
/// (`engine/tests/format.rs` opens one).
pub(crate) type RowKey = &'static [u8; 32];
pub(crate) const DATA: TableDefinition<RowKey, &[u8]> = TableDefinition::new("sealkv_data");

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_DB_ID: &str = "db_id";
pub(crate) const META_KDF: &str = "kdf";
pub(crate) const META_KEYRING: &str = "keyring";
/// Cipher and compression chosen at creation: `cipher u8 ‖ codec u8 ‖ zstd level i32 ‖ min size u32`.
pub(crate) const META_SETTINGS: &str = "settings";

fn encode_settings(opts: &Options) -> Vec<u8> {
    let mut out = vec![opts.cipher as u8, opts.compression.codec as u8];
    out.extend_from_slice(&opts.compression.zstd_level.to_le_bytes());
    out.extend_from_slice(&(opts.compression.min_size.min(u32::MAX as usize) as u32).to_le_bytes());
    out
}

/// Applies the stored settings: the store's cipher and compression win over the
/// options given at open, so every program writing a store writes it the same way.
fn apply_settings(bytes: &[u8], opts: &mut Options) -> Result<()> {
    let bad = || Error::Corrupt("settings record is malformed".into());
    if bytes.len() != 10 {
        return Err(bad());
    }
    opts.cipher = sealkv_crypto::Algorithm::from_code(bytes[0]).ok_or_else(bad)?;
    opts.compression = sealkv_crypto::Compression {
        codec: sealkv_crypto::Codec::from_code(bytes[1]).ok_or_else(bad)?,
        zstd_level: i32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]),
        min_size: u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize,
    };
    Ok(())
}

const REDB_MAGIC: &[u8] = b"redb";
const KDF_RAW: u8 = 0;
const KDF_ARGON2ID: u8 = 1;

/// A value read from the store, wiped from memory when dropped.
pub type Value = Zeroizing<Vec<u8>>;

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// An open sealkv store. Cheap to clone; clones share one open file.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    pub(crate) db: RwLock<Option<Arc<Handle>>>,
    pub(crate) db_id: [u8; 16],
    pub(crate) master: RwLock<MasterKey>,
    pub(crate) keyring: RwLock<Keyring>,
    pub(crate) opts: Options,
    pub(crate) poisoned: AtomicBool,
    pub(crate) locks: KeyLocks,
    pub(crate) queue: Mutex<Queue>,
    pub(crate) queue_cv: Condvar,
    /// Wakes a leader gathering a batch when a caller queues (only the leader waits on
    /// it, so arrivals do not wake every queued caller).
    pub(crate) gather_cv: Condvar,
    pub(crate) catalog_tag: [u8; TAG_BYTES],
}

/// The open redb file: read-write, or read-only (for commands that only read, so the
/// file is never written, not even its header).
///
/// It also keeps the newest read snapshot with the data table open, so that reads
/// between two commits share one redb read transaction instead of each beginning its
/// own (beginning one and opening the table cost about as much as the lookup itself).
/// Every commit goes through [`Handle::commit`], which retires the snapshot; a reader
/// never uses a snapshot older than the last commit that finished before it began.
pub(crate) struct Handle {
    kind: Option<HandleKind>,
    /// The cached snapshot, tagged with the commit epoch it was taken in.
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Commits finished through this handle. Changed only under `snapshot`'s write lock.
    epoch: AtomicU64,
}

enum HandleKind {
    ReadWrite(Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

/// A sealed row and the tags it is stored under (which its associated data binds).
pub(crate) struct Row<'a> {
    pub(crate) ns_tag: &'a [u8; TAG_BYTES],
    pub(crate) key_tag: &'a [u8; TAG_BYTES],
    pub(crate) sealed: &'a [u8],
}

impl<'a> Row<'a> {
    fn new(
        ns_tag: &'a [u8; TAG_BYTES],
        key_tag: &'a [u8; TAG_BYTES],
        sealed: &'a redb::AccessGuard<'_, &'static [u8]>,
    ) -> Self {
        Self {
            ns_tag,
            key_tag,
            sealed: sealed.value(),
        }
    }
}

/// A read snapshot of the data table (it keeps its redb read transaction alive).
pub(crate) struct Snapshot {
    epoch: u64,
    pub(crate) data: redb::ReadOnlyTable<RowKey, &'static [u8]>,
}

impl Handle {
    fn new(kind: HandleKind) -> Self {
        Self {
            kind: Some(kind),
            snapshot: RwLock::new(None),
            epoch: AtomicU64::new(0),
        }
    }

    pub(crate) fn read_write(db: Database) -> Self {
        Self::new(HandleKind::ReadWrite(db))
    }

    pub(crate) fn read_only(db: redb::ReadOnlyDatabase) -> Self {
        Self::new(HandleKind::ReadOnly(db))
    }

    pub(crate) fn is_read_only(&self) -> bool {
        matches!(self.kind, Some(HandleKind::ReadOnly(_)))
    }

    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction> {
        Ok(match &self.kind {
            Some(HandleKind::ReadWrite(db)) => db.begin_read()?,
            Some(HandleKind::ReadOnly(db)) => db.begin_read()?,
            // Only empty while being dropped.
            None => return Err(Error::Poisoned),
        })
    }

    pub(crate) fn begin_write(&self) -> Result<redb::WriteTransaction> {
        match &self.kind {
            Some(HandleKind::ReadWrite(db)) => Ok(db.begin_write()?),
            Some(HandleKind::ReadOnly(_)) => Err(Error::ReadOnly),
            None => Err(Error::Poisoned),
        }
    }

    /// Commits `txn` (begun on this handle) and retires the cached read snapshot, so
    /// that reads from now on see the commit. Writers must commit through here.
    pub(crate) fn commit(&self, txn: redb::WriteTransaction) -> Result<()> {
        let result = txn.commit();
        // Even a failed commit retires the snapshot: the handle is about to be reopened.
        let mut slot = write_lock(&self.snapshot);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let retired = slot.take();
        drop(slot);
        drop(retired);
        Ok(result?)
    }

    /// A snapshot of the data table that sees every commit finished before this call.
    pub(crate) fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(snap) = read_lock(&self.snapshot).as_ref()
            && snap.epoch == epoch
        {
            return Ok(snap.clone());
        }
        let data = self.begin_read()?.open_table(DATA)?;
        let snap = Arc::new(Snapshot { epoch, data });
        let mut slot = write_lock(&self.snapshot);
        // Cached only if no commit finished meanwhile; it is still right for this call,
        // which began before that commit finished.
        if self.epoch.load(Ordering::Acquire) == epoch {
            *slot = Some(snap.clone());
        }
        Ok(snap)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // After redb panicked on a damaged page (contained, see `contain`), its internal
        // locks are poisoned and its own drop panics too. The unwinding still drops the
        // file, releasing its lock; the panic must not reach the caller.
        let snapshot = write_lock(&self.snapshot).take();
        let kind = self.kind.take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            drop(snapshot);
            drop(kind);
        }));
    }
}

/// The key derivation record of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kdf {
    Raw,
    Argon2id { params: KdfParams, salt: Vec<u8> },
}

impl Kdf {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Self::Raw => vec![KDF_RAW],
            Self::Argon2id { params, salt } => {
                let mut out = vec![KDF_ARGON2ID];
                out.extend_from_slice(&params.m_cost_kib.to_le_bytes());
                out.extend_from_slice(&params.t_cost.to_le_bytes());
                out.extend_from_slice(&params.p_cost.to_le_bytes());
                out.push(salt.len() as u8);
                out.extend_from_slice(salt);
                out
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Corrupt("key derivation record is malformed".into());
        match bytes.split_first() {
            Some((&KDF_RAW, [])) => Ok(Self::Raw),
            Some((&KDF_ARGON2ID, rest)) if rest.len() >= 13 => {
                let u =
                    |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
                let params = KdfParams {
                    m_cost_kib: u(0),
                    t_cost: u(4),
                    p_cost: u(8),
                };
                let salt_len = rest[12] as usize;
                let salt = rest
                    .get(13..)
                    .filter(|s| s.len() == salt_len && salt_len >= 16)
                    .ok_or_else(bad)?;
                Ok(Self::Argon2id {
                    params,
                    salt: salt.to_vec(),
                })
            }
            _ => Err(bad()),
        }
    }

    /// Derives the master key from the caller's secret.
    pub(crate) fn master_key(&self, secret: &Secret) -> Result<MasterKey> {
        match (self, secret) {
            (Self::Raw, Secret::Key(k)) => Ok(k.clone()),
            (Self::Argon2id { params, salt }, Secret::Passphrase(p)) => {
                MasterKey::derive(p.expose(), salt, params).map_err(Error::Key)
            }
            (Self::Raw, Secret::Passphrase(_)) => Err(Error::KeyKindMismatch {
                expected: "raw key",
            }),
            (Self::Argon2id { .. }, Secret::Key(_)) => Err(Error::KeyKindMismatch {
                expected: "passphrase",
            }),
        }
    }

    /// A fresh record for a secret (new salt for a passphrase).
    pub(crate) fn for_secret(secret: &Secret, params: KdfParams) -> Self {
        match secret {
            Secret::Key(_) => Self::Raw,
            Secret::Passphrase(_) => Self::Argon2id {
                params,
                salt: generate_salt().to_vec(),
            },
        }
    }
}

/// The meta records of a store, checked.
struct Meta {
    db_id: [u8; 16],
    kdf: Kdf,
    keyring: Vec<u8>,
    settings: Option<Vec<u8>>,
}

fn read_meta(db: &Handle, path: &Path) -> Result<Meta> {
    let not_ours = || Error::NotSealkv(path.to_path_buf());
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Err(not_ours()),
        Err(redb::TableError::TableTypeMismatch { .. }) => return Err(not_ours()),
        Err(e) => return Err(e.into()),
    };
    let get = |k: &str| -> Result<Option<Vec<u8>>> { Ok(meta.get(k)?.map(|v| v.value().to_vec())) };
    let format = get(META_FORMAT)?.ok_or_else(not_ours)?;
    let format = <[u8; 4]>::try_from(format.as_slice()).map_err(|_| not_ours())?;
    let found = u32::from_le_bytes(format);
    if found > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            found,
            supported: FORMAT_VERSION,
        });
    }
    let db_id = get(META_DB_ID)?
        .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
        .ok_or_else(|| Error::Corrupt("database id missing".into()))?;
    let kdf = Kdf::decode(
        &get(META_KDF)?.ok_or_else(|| Error::Corrupt("key derivation record missing".into()))?,
    )?;
    let keyring = get(META_KEYRING)?.ok_or_else(|| Error::Corrupt("keyring missing".into()))?;
    let settings = get(META_SETTINGS)?;
    Ok(Meta {
        db_id,
        kdf,
        keyring,
        settings,
    })
}

fn open_keyring(master: &MasterKey, db_id: &[u8; 16], record: &[u8]) -> Result<Keyring> {
    Keyring::open(master, db_id, record).map_err(|e| match e {
        CryptoError::WrongKey => Error::WrongKey,
        CryptoError::UnsupportedVersion(v) => Error::NewerFormat {
            found: v.into(),
            supported: FORMAT_VERSION,
        },
        other => Error::Corrupt(format!("keyring: {other}")),
    })
}

fn map_open_error(e: redb::DatabaseError, path: &Path) -> Error {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            Error::Locked(path.to_path_buf())
        }
        redb::DatabaseError::UpgradeRequired(_) => Error::NotSealkv(path.to_path_buf()),
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
            Error::Corrupt(format!("{what} (is the file truncated?)"))
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Error::Corrupt("the file ends early (truncated)".into())
        }
        other => other.into(),
    }
}

/// Refuses paths that are not regular, non-empty files starting with redb's magic,
/// without writing anything.
fn precheck(path: &Path) -> Result<()> {
    let meta = fs::metadata(path)?;
    if meta.is_dir() {
        return Err(Error::NotSealkv(path.to_path_buf()));
    }
    let mut head = [0u8; 4];
    let mut file = fs::File::open(path)?;
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..])? {
            0 => return Err(Error::NotSealkv(path.to_path_buf())),
            n => got += n,
        }
    }
    if head != REDB_MAGIC {
        return Err(Error::NotSealkv(path.to_path_buf()));
    }
    Ok(())
}

impl Store {
    /// Creates a new store at `path`, which must not exist (or be an empty file).
    pub fn create(
        path: impl AsRef<Path>,
        secret: impl Into<Secret>,
        opts: Options,
    ) -> Result<Self> {
        let path = path.as_ref();
        let secret = secret.into();
        if fs::metadata(path)
            .map(|m| m.len() > 0 || m.is_dir())
            .unwrap_or(false)
        {
            return Err(Error::AlreadyExists(path.to_path_buf()));
        }
        let kdf = Kdf::for_secret(&secret, opts.kdf);
        let master = kdf.master_key(&secret)?;
        let mut db_id = [0u8; 16];
        rand::rng().fill_bytes(&mut db_id);
        let keyring = Keyring::new(opts.cipher, (opts.clock)());
        let db = Self::open_redb(path, &opts, true)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_FORMAT, &FORMAT_VERSION.to_le_bytes()[..])?;
            meta.insert(META_DB_ID, &db_id[..])?;
            meta.insert(META_KDF, kdf.encode().as_slice())?;
            meta.insert(META_SETTINGS, encode_settings(&opts).as_slice())?;
            meta.insert(
                META_KEYRING,
                keyring
                    .seal(&master, &db_id)
                    .map_err(Error::Key)?
                    .as_slice(),
            )?;
            txn.open_table(DATA)?;
        }
        txn.commit()?;
        Ok(Self::assemble(
            path,
            Handle::read_write(db),
            db_id,
            master,
            keyring,
            opts,
        ))
    }

    /// Opens an existing store.
    ///
    /// A wrong key, a file in use, a file that is not a sealkv store, a newer format and
    /// a damaged file each give their own error; in each case the file is left as it was
    /// (the checks run on a read-only open first).
    pub fn open(path: impl AsRef<Path>, secret: impl Into<Secret>, opts: Options) -> Result<Self> {
        let (path, secret) = (path.as_ref(), secret.into());
        contain(|| Self::open_inner(path, secret, opts, false))
    }

    /// Opens an existing store for reading only: the file is not written at all (not
    /// even redb's header), and every write gives [`Error::ReadOnly`]. A file that needs
    /// crash recovery is refused with [`Error::Corrupt`]; open it read-write once.
    pub fn open_read_only(
        path: impl AsRef<Path>,
        secret: impl Into<Secret>,
        opts: Options,
    ) -> Result<Self> {
        let (path, secret) = (path.as_ref(), secret.into());
        contain(|| Self::open_inner(path, secret, opts, true))
    }

    fn open_inner(path: &Path, secret: Secret, mut opts: Options, read_only: bool) -> Result<Self> {
        let mut master = None;
        if opts.backend.is_none() {
            precheck(path)?;
            match redb::Builder::new()
                .set_cache_size(1 << 20)
                .open_read_only(path)
            {
                Ok(ro) => {
                    // Wrapped at once: redb's drop can panic on a damaged file.
                    let ro = Handle::read_only(ro);
                    let meta = read_meta(&ro, path)?;
                    let key = meta.kdf.master_key(&secret)?;
                    let keyring = open_keyring(&key, &meta.db_id, &meta.keyring)?;
                    if read_only {
                        if let Some(settings) = &meta.settings {
                            apply_settings(settings, &mut opts)?;
                        }
                        return Ok(Self::assemble(path, ro, meta.db_id, key, keyring, opts));
                    }
                    master = Some(key);
                    drop(ro);
                }
                // The file needs redb's crash recovery, which a read-only open will not do.
                Err(redb::DatabaseError::RepairAborted) if read_only => {
                    return Err(Error::Corrupt(
                        "the file needs crash recovery; open it once for writing".into(),
                    ));
                }
                Err(redb::DatabaseError::RepairAborted) => {}
                Err(e) => return Err(map_open_error(e, path)),
            }
        }
        let db = Handle::read_write(Self::open_redb(path, &opts, false)?);
        let meta = read_meta(&db, path)?;
        let master = match master {
            Some(m) => m,
            None => meta.kdf.master_key(&secret)?,
        };
        let keyring = open_keyring(&master, &meta.db_id, &meta.keyring)?;
        if let Some(settings) = &meta.settings {
            apply_settings(settings, &mut opts)?;
        }
        let store = Self::assemble(path, db, meta.db_id, master, keyring, opts);
        store.maybe_auto_rotate()?;
        Ok(store)
    }

    pub(crate) fn open_redb(path: &Path, opts: &Options, create: bool) -> Result<Database> {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(opts.cache_size);
        let result = match &opts.backend {
            Some(factory) => builder.create_with_backend(Boxed(factory(path, create)?)),
            None if create => builder.create(path),
            None => builder.open(path),
        };
        result.map_err(|e| map_open_error(e, path))
    }

    fn assemble(
        path: &Path,
        db: Handle,
        db_id: [u8; 16],
        master: MasterKey,
        keyring: Keyring,
        opts: Options,
    ) -> Self {
        let catalog_tag = keyring.name_key().record_tag(b"namespace catalog");
        Self {
            inner: Arc::new(Inner {
                id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
                path: path.to_path_buf(),
                db: RwLock::new(Some(Arc::new(db))),
                db_id,
                master: RwLock::new(master),
                keyring: RwLock::new(keyring),
                opts,
                poisoned: AtomicBool::new(false),
                locks: KeyLocks::default(),
                queue: Mutex::new(Queue::default()),
                queue_cv: Condvar::new(),
                gather_cv: Condvar::new(),
                catalog_tag,
            }),
        }
    }

    /// Reads values: the ones found, by key. Missing keys are absent from the map.
    pub fn get<K: AsRef<str>>(
        &self,
        namespace: &str,
        keys: &[K],
    ) -> Result<BTreeMap<String, Value>> {
        self.contained(|| self.get_unguarded(namespace, keys))
    }

    /// Reads one value: `None` if the key has none. The single-key form of
    /// [`Store::get`], without its map.
    pub fn get_one(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        self.contained(|| self.get_one_unguarded(namespace, key))
    }

    /// The keys of a namespace, sorted.
    pub fn list(&self, namespace: &str) -> Result<Vec<String>> {
        self.contained(|| self.list_unguarded(namespace))
    }

    /// The namespaces that hold at least one value, sorted.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        self.contained(|| self.namespaces_unguarded())
    }

    /// Number of values in a namespace.
    pub fn count(&self, namespace: &str) -> Result<u64> {
        self.contained(|| self.count_unguarded(namespace))
    }

    /// Opens every value and reports each one that fails, without stopping at the first.
    pub fn verify(&self) -> Result<Vec<Error>> {
        self.contained(|| self.verify_unguarded())
    }

    /// Entries and bytes per namespace, data keys with their use, and the file size.
    pub fn stats(&self) -> Result<Stats> {
        self.contained(|| self.stats_unguarded())
    }

    /// Runs a read path or a write transaction with redb's panics contained: redb 4.5
    /// can panic on some damaged files instead of returning an error. A panic becomes
    /// [`Error::Corrupt`], and the store refuses writes from then on.
    pub(crate) fn contained<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        contain(f).inspect_err(|e| {
            if matches!(e, Error::Corrupt(m) if m.starts_with(PANIC_PREFIX)) {
                self.inner.poisoned.store(true, Ordering::Release);
            }
        })
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// The current redb handle. After a failed commit whose recovery could not reopen
    /// the file (the disk still full, say), there is none: each call then tries to
    /// reopen it, so reads come back once the file can be opened again. Writes stay
    /// refused until the store itself is reopened.
    pub(crate) fn db(&self) -> Result<Arc<Handle>> {
        if let Some(db) = read_lock(&self.inner.db).clone() {
            return Ok(db);
        }
        let mut slot = write_lock(&self.inner.db);
        if let Some(db) = slot.clone() {
            return Ok(db);
        }
        let db = self.open_handle()?;
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Opens this store's file read-write again (after a failed commit or a compaction).
    pub(crate) fn open_handle(&self) -> Result<Arc<Handle>> {
        let db = Store::open_redb(&self.inner.path, &self.inner.opts, false)?;
        Ok(Arc::new(Handle::read_write(db)))
    }

    pub(crate) fn ring(&self) -> RwLockReadGuard<'_, Keyring> {
        read_lock(&self.inner.keyring)
    }

    /// Reads values: the ones found, by key. Missing keys are absent from the map.
    fn get_unguarded<K: AsRef<str>>(
        &self,
        namespace: &str,
        keys: &[K],
    ) -> Result<BTreeMap<String, Value>> {
        check_name(namespace)?;
        let ring = self.ring();
        let ns_tag = ring.name_key().namespace_tag(namespace.as_bytes());
        let snap = self.db()?.snapshot()?;
        let mut out = BTreeMap::new();
        for key in keys {
            let key = key.as_ref();
            if let Some(value) = self.read_row(&ring, &snap, namespace, &ns_tag, key)? {
                out.insert(key.to_string(), value);
            }
        }
        Ok(out)
    }

    /// Reads one value, if present.
    fn get_one_unguarded(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        check_name(namespace)?;
        let ring = self.ring();
        let ns_tag = ring.name_key().namespace_tag(namespace.as_bytes());
        let snap = self.db()?.snapshot()?;
        self.read_row(&ring, &snap, namespace, &ns_tag, key)
    }

    /// Looks up and opens the value of `key` in a namespace whose tag is `ns_tag`.
    fn read_row(
        &self,
        ring: &Keyring,
        snap: &Snapshot,
        namespace: &str,
        ns_tag: &[u8; TAG_BYTES],
        key: &str,
    ) -> Result<Option<Value>> {
        check_name(key)?;
        let key_tag = ring
            .name_key()
            .key_tag(namespace.as_bytes(), key.as_bytes());
        let Some(sealed) = snap.data.get(&row_key(ns_tag, &key_tag))? else {
            return Ok(None);
        };
        let row = Row {
            ns_tag,
            key_tag: &key_tag,
            sealed: sealed.value(),
        };
        self.open_row(ring, &row, key, namespace).map(Some)
    }

    /// Opens the sealed row of the key named `key` (its key tag computed from `key`)
    /// and returns its value, checking that the name sealed inside is `key`.
    fn open_row(&self, ring: &Keyring, row: &Row<'_>, key: &str, namespace: &str) -> Result<Value> {
        let (plain, name_len) = self.open_sealed(ring, row, namespace, || key.to_string())?;
        // The tag was computed from `key`, so a matching name matches the tag too.
        if &plain[4..4 + name_len] != key.as_bytes() {
            return Err(integrity(namespace, key, CryptoError::Unseal));
        }
        self.strip_name(plain, name_len, namespace, key)
    }

    /// Opens a sealed row found by scanning, returning (stored key name, value). The
    /// name is checked against the row's tag.
    pub(crate) fn open_named(
        &self,
        ring: &Keyring,
        row: &Row<'_>,
        namespace: &str,
    ) -> Result<(String, Value)> {
        let hint = || hex_tag(row.key_tag);
        let (plain, name_len) = self.open_sealed(ring, row, namespace, hint)?;
        let name = std::str::from_utf8(&plain[4..4 + name_len])
            .map_err(|_| {
                integrity(
                    namespace,
                    &hint(),
                    CryptoError::Malformed("stored key name is not UTF-8"),
                )
            })?
            .to_string();
        let expected_tag = if row.ns_tag == &self.inner.catalog_tag {
            ring.name_key().namespace_tag(name.as_bytes())
        } else {
            ring.name_key()
                .key_tag(namespace.as_bytes(), name.as_bytes())
        };
        if expected_tag != *row.key_tag {
            return Err(integrity(namespace, &hint(), CryptoError::Unseal));
        }
        let value = self.strip_name(plain, name_len, namespace, &name)?;
        Ok((name, value))
    }

    /// Authenticates and decrypts a row: its plaintext (`name length | name | value`)
    /// and the name's length, checked to fit.
    fn open_sealed(
        &self,
        ring: &Keyring,
        row: &Row<'_>,
        namespace: &str,
        hint: impl Fn() -> String,
    ) -> Result<(Value, usize)> {
        let ctx = Context {
            db_id: &self.inner.db_id,
            namespace: row.ns_tag,
            key: row.key_tag,
        };
        let limit = self.inner.opts.max_value_size + 4 + MAX_NAME_LEN;
        let plain = envelope::open(ring, &ctx, row.sealed, limit)
            .map_err(|e| integrity(namespace, &hint(), e))?;
        let name_len = plain
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .filter(|&len| len <= MAX_NAME_LEN && plain.len() >= 4 + len)
            .ok_or_else(|| {
                integrity(
                    namespace,
                    &hint(),
                    CryptoError::Malformed("stored value has no key name"),
                )
            })?;
        Ok((plain, name_len))
    }

    /// The value part of an opened row, checked against the size limit.
    fn strip_name(
        &self,
        mut plain: Value,
        name_len: usize,
        namespace: &str,
        name: &str,
    ) -> Result<Value> {
        plain.drain(..4 + name_len);
        if plain.len() > self.inner.opts.max_value_size {
            return Err(integrity(
                namespace,
                name,
                CryptoError::TooLarge {
                    size: plain.len() as u64,
                    limit: self.inner.opts.max_value_size as u64,
                },
            ));
        }
        Ok(plain)
    }

    /// The keys of a namespace, sorted.
    fn list_unguarded(&self, namespace: &str) -> Result<Vec<String>> {
        check_name(namespace)?;
        let ring = self.ring();
        let ns_tag = ring.name_key().namespace_tag(namespace.as_bytes());
        let snap = self.db()?.snapshot()?;
        let table = &snap.data;
        let mut names = Vec::new();
        for row in ns_rows(table, &ns_tag)? {
            let (k, v) = row?;
            let key_tag = split_row(k.value()).1;
            names.push(
                self.open_named(&ring, &Row::new(&ns_tag, &key_tag, &v), namespace)?
                    .0,
            );
        }
        names.sort();
        Ok(names)
    }

    /// The namespaces that hold at least one value, sorted.
    fn namespaces_unguarded(&self) -> Result<Vec<String>> {
        let ring = self.ring();
        let snap = self.db()?.snapshot()?;
        let table = &snap.data;
        let cat = self.inner.catalog_tag;
        let mut names = Vec::new();
        for row in ns_rows(table, &cat)? {
            let (k, v) = row?;
            let ns_tag = split_row(k.value()).1;
            names.push(
                self.open_named(&ring, &Row::new(&cat, &ns_tag, &v), "(catalog)")?
                    .0,
            );
        }
        names.sort();
        Ok(names)
    }

    /// Number of values in a namespace.
    fn count_unguarded(&self, namespace: &str) -> Result<u64> {
        check_name(namespace)?;
        let ns_tag = self.ring().name_key().namespace_tag(namespace.as_bytes());
        let snap = self.db()?.snapshot()?;
        let table = &snap.data;
        let mut n = 0;
        for row in ns_rows(table, &ns_tag)? {
            row?;
            n += 1;
        }
        Ok(n)
    }

    /// Opens every value and reports each one that fails, without stopping at the first.
    fn verify_unguarded(&self) -> Result<Vec<Error>> {
        let ring = self.ring();
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(DATA)?;
        let names = self.namespace_names(&ring, &table);
        let mut failures = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let (ns_tag, key_tag) = split_row(k.value());
            let ns_name = if ns_tag == self.inner.catalog_tag {
                "(catalog)".to_string()
            } else {
                names
                    .get(&ns_tag)
                    .cloned()
                    .unwrap_or_else(|| hex_tag(&ns_tag))
            };
            if let Err(e) = self.open_named(&ring, &Row::new(&ns_tag, &key_tag, &v), &ns_name) {
                failures.push(e);
            }
        }
        Ok(failures)
    }

    /// Namespace tag → name, from the catalog (entries that fail to open are skipped).
    pub(crate) fn namespace_names(
        &self,
        ring: &Keyring,
        table: &impl ReadableTable<RowKey, &'static [u8]>,
    ) -> BTreeMap<[u8; TAG_BYTES], String> {
        let cat = self.inner.catalog_tag;
        let mut names = BTreeMap::new();
        if let Ok(range) = ns_rows(table, &cat) {
            for (k, v) in range.flatten() {
                let ns_tag = split_row(k.value()).1;
                if let Ok((name, _)) =
                    self.open_named(ring, &Row::new(&cat, &ns_tag, &v), "(catalog)")
                {
                    names.insert(ns_tag, name);
                }
            }
        }
        names
    }

    /// Entries and bytes per namespace, data keys with their use, and the file size.
    fn stats_unguarded(&self) -> Result<Stats> {
        let ring = self.ring();
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(DATA)?;
        let names = self.namespace_names(&ring, &table);
        let mut stats = Stats {
            namespaces: BTreeMap::new(),
            keys: Vec::new(),
            values_per_key: BTreeMap::new(),
            file_size: fs::metadata(&self.inner.path).map(|m| m.len()).unwrap_or(0),
            entries: table.len()?,
        };
        for row in table.iter()? {
            let (k, v) = row?;
            let (ns_tag, _) = split_row(k.value());
            if ns_tag != self.inner.catalog_tag {
                let name = names
                    .get(&ns_tag)
                    .cloned()
                    .unwrap_or_else(|| hex_tag(&ns_tag));
                let e = stats.namespaces.entry(name).or_default();
                e.entries += 1;
                e.bytes += v.value().len() as u64;
            }
            if let Ok(h) = Header::parse(v.value()) {
                *stats.values_per_key.entry(h.key_id).or_default() += 1;
            }
        }
        stats.keys = ring.keys();
        Ok(stats)
    }

    /// Writes a consistent copy of the store to `dest` (which must not exist) while the
    /// store stays in use. The copy opens with the same master key.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<()> {
        let dest = dest.as_ref();
        if fs::metadata(dest).is_ok() {
            return Err(Error::AlreadyExists(dest.to_path_buf()));
        }
        let db = self.db()?;
        copy_snapshot(&db, dest)
    }

    /// Rewrites the store into a fresh file holding only live data, and puts it in place
    /// of the old one (write to a temporary file, fsync, rename, fsync the directory).
    ///
    /// This is also the purge: redb's own compaction moves pages but leaves old bytes in
    /// freed space, so after destroying a key its ciphertext could linger; a rewrite
    /// leaves nothing but live values. Waits for readers and blocks writers meanwhile.
    /// A crash before the rename leaves the old file; after it, the new one.
    pub fn compact(&self) -> Result<()> {
        self.check_writable()?;
        if self.db()?.is_read_only() {
            return Err(Error::ReadOnly);
        }
        let _commit = self.commit_lock();
        let mut slot = write_lock(&self.inner.db);
        let Some(mut db) = slot.take() else {
            return Err(Error::Poisoned);
        };
        let path = self.inner.path.clone();
        let mut tmp = path.clone().into_os_string();
        tmp.push(".compact-tmp");
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        let copied = copy_snapshot(&db, &tmp);
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            *slot = Some(db);
            return Err(e);
        }
        // Only our handle may remain before the file is replaced.
        for _ in 0..10_000 {
            match Arc::try_unwrap(db) {
                Ok(only) => {
                    drop(only);
                    break;
                }
                Err(shared) => {
                    db = shared;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        let swapped = fs::rename(&tmp, &path).and_then(|()| sync_dir(&path));
        match self.open_handle() {
            Ok(reopened) => *slot = Some(reopened),
            Err(e) => {
                self.inner.poisoned.store(true, Ordering::Release);
                return Err(e);
            }
        }
        swapped?;
        Ok(())
    }

    /// True once a commit failed for good: writes are refused until the store is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }
}

fn copy_snapshot(db: &Handle, dest: &Path) -> Result<()> {
    let snapshot = db.begin_read()?;
    let result = (|| -> Result<()> {
        let copy = redb::Builder::new()
            .create(dest)
            .map_err(|e| map_open_error(e, dest))?;
        let txn = copy.begin_write()?;
        {
            let src_meta = snapshot.open_table(META)?;
            let mut meta = txn.open_table(META)?;
            for row in src_meta.iter()? {
                let (k, v) = row?;
                meta.insert(k.value(), v.value())?;
            }
            let src = snapshot.open_table(DATA)?;
            let mut data = txn.open_table(DATA)?;
            for row in src.iter()? {
                let (k, v) = row?;
                data.insert(k.value(), v.value())?;
            }
        }
        txn.commit()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
        _ => fs::File::open(".")?.sync_all(),
    }
}

const PANIC_PREFIX: &str = "its structure cannot be read";

/// Turns a panic inside `f` (from redb reading a damaged file) into [`Error::Corrupt`].
fn contain<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::Corrupt(format!(
            "{PANIC_PREFIX} (redb failed on a damaged page)"
        )))
    })
}

/// What [`Store::stats`] reports.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Per namespace: entries and sealed bytes.
    pub namespaces: BTreeMap<String, NamespaceStats>,
    /// Every data key of the keyring.
    pub keys: Vec<sealkv_crypto::KeyInfo>,
    /// Values sealed under each key id (catalog entries included).
    pub values_per_key: BTreeMap<u32, u64>,
    /// Size of the store file in bytes.
    pub file_size: u64,
    /// Rows in the data table (values and catalog entries).
    pub entries: u64,
}

/// Entries and bytes of one namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceStats {
    /// Values in the namespace.
    pub entries: u64,
    /// Their sealed size in bytes.
    pub bytes: u64,
}

pub(crate) fn integrity(namespace: &str, key: &str, reason: CryptoError) -> Error {
    Error::Integrity {
        namespace: namespace.to_string(),
        key: key.to_string(),
        reason,
    }
}

pub(crate) fn hex_tag(tag: &[u8]) -> String {
    format!("#{}", hex_lower(tag))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a namespace or key name: not empty, at most [`MAX_NAME_LEN`] bytes.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName("names must not be empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidName(format!(
            "a name of {} bytes is over the limit of {MAX_NAME_LEN}",
            name.len()
        )));
    }
    Ok(())
}

pub(crate) fn row_key(ns: &[u8; TAG_BYTES], key: &[u8; TAG_BYTES]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..TAG_BYTES].copy_from_slice(ns);
    k[TAG_BYTES..].copy_from_slice(key);
    k
}

pub(crate) fn split_row(k: &[u8; 32]) -> ([u8; TAG_BYTES], [u8; TAG_BYTES]) {
    let mut a = [0u8; TAG_BYTES];
    let mut b = [0u8; TAG_BYTES];
    a.copy_from_slice(&k[..TAG_BYTES]);
    b.copy_from_slice(&k[TAG_BYTES..]);
    (a, b)
}

/// The rows of one namespace (or of the catalog): its tag followed by any key tag.
pub(crate) fn ns_rows<'t>(
    table: &'t impl ReadableTable<RowKey, &'static [u8]>,
    ns: &[u8; TAG_BYTES],
) -> std::result::Result<redb::Range<'t, RowKey, &'static [u8]>, redb::StorageError> {
    let (first, last) = (
        row_key(ns, &[0; TAG_BYTES]),
        row_key(ns, &[0xff; TAG_BYTES]),
    );
    table.range::<&[u8; 32]>(&first..=&last)
}

pub(crate) fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding one of our locks cannot leave the data half-updated (every
    // update is a single assignment), so a poisoned lock is still safe to use.
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
