//! The store: one redb file holding sealed values under keyed name tags.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};

use redb::Database;
use sealkv_crypto::{Keyring, MasterKey, fill_random};
use zeroize::Zeroizing;

use crate::backend::Boxed;
use crate::commit::{KeyringWrite, Queue};
use crate::error::{Error, Result};
use crate::handle::{Handle, PANIC_PREFIX, contain, map_open_error, precheck};
use crate::meta::{
    FORMAT_VERSION, Kdf, META, META_DB_ID, META_FORMAT, META_KDF, META_SETTINGS, Meta,
    encode_settings, open_keyring, read_meta, seal_keyring_into,
};
use crate::options::{Options, Secret};
use crate::rows::DATA;
use crate::scope::Scope;
use crate::txn::KeyLocks;

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
    /// The default session: what `Store`'s own reads and writes use.
    pub(crate) default_scope: Arc<Scope>,
}

impl Store {
    /// Creates a new store at `path`, which must not exist (or be an empty file). A
    /// file this creates is readable and writable by its owner only (mode 0600).
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
        let kdf = Kdf::for_secret(&secret, opts.kdf)?;
        let master = kdf.master_key(&secret, &opts.kdf_limits)?;
        let mut db_id = [0u8; 16];
        fill_random(&mut db_id).map_err(Error::Key)?;
        let keyring = Keyring::new(opts.cipher, (opts.clock)()).map_err(Error::Key)?;
        let made_file = opts.backend.is_none() && create_private_file(path, PRIVATE_MODE)?;
        let created = (|| {
            let db = Self::open_redb(path, &opts, true)?;
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert(META_FORMAT, &FORMAT_VERSION.to_le_bytes()[..])?;
                meta.insert(META_DB_ID, &db_id[..])?;
                meta.insert(META_KDF, kdf.encode().as_slice())?;
                meta.insert(META_SETTINGS, encode_settings(&opts).as_slice())?;
                drop(meta);
                txn.open_table(DATA)?;
            }
            let sealed = seal_keyring_into(&txn, &keyring, &master, &db_id)?;
            txn.commit()?;
            keyring.mark_persisted(&sealed);
            Ok(db)
        })();
        let db = match created {
            Ok(db) => db,
            Err(e) => {
                if made_file {
                    let _ = fs::remove_file(path);
                }
                return Err(e);
            }
        };
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
    /// The master key is checked before any byte of the file is written: a wrong key, a
    /// file in use, a file that is not a sealkv store, a newer format, a changed meta
    /// record and a damaged file each give their own error and leave the file as it
    /// was. A file that was not closed cleanly (a crash, a copy of a live store) is
    /// recovered after the key check. A store written by an earlier format is upgraded.
    pub fn open(path: impl AsRef<Path>, secret: impl Into<Secret>, opts: Options) -> Result<Self> {
        let (path, secret) = (path.as_ref(), secret.into());
        contain(|| Self::open_inner(path, secret, opts, false))
    }

    /// Opens an existing store for reading only: the file is not written at all (not
    /// even redb's header), and every write gives [`Error::ReadOnly`]. A file that
    /// needs crash recovery is recovered in memory and read from there.
    pub fn open_read_only(
        path: impl AsRef<Path>,
        secret: impl Into<Secret>,
        opts: Options,
    ) -> Result<Self> {
        let (path, secret) = (path.as_ref(), secret.into());
        contain(|| Self::open_inner(path, secret, opts, true))
    }

    fn open_inner(path: &Path, secret: Secret, mut opts: Options, read_only: bool) -> Result<Self> {
        let mut unlocked = None;
        if opts.backend.is_none() {
            precheck(path)?;
            // Check the key on a view that writes nothing: a read-only open, or, for a
            // file that needs crash recovery (which a read-only open refuses), a
            // recovery in memory over the file.
            let view = match redb::Builder::new()
                .set_cache_size(1 << 20)
                .open_read_only(path)
            {
                // Wrapped at once: redb's drop can panic on a damaged file.
                Ok(ro) => Handle::read_only(ro),
                Err(redb::DatabaseError::RepairAborted) => {
                    Handle::recovered(path, if read_only { opts.cache_size } else { 1 << 20 })?
                }
                Err(e) => return Err(map_open_error(e, path)),
            };
            let meta = read_meta(&view, path)?;
            let (master, ring) = unlock(&meta, &secret, &opts, None)?;
            // Every check that can refuse the file runs here, before a writer opens it.
            meta.check_bound(&ring)?;
            if read_only {
                meta.apply_settings(&mut opts)?;
                return Ok(Self::assemble(path, view, meta.db_id, master, ring, opts));
            }
            meta.apply_settings(&mut opts.clone())?;
            unlocked = Some((meta, master));
            drop(view);
        }
        // The key is right (or a test backend is in use): open for writing, which
        // recovers the file if it needs it. The records are read again, as another
        // program may have changed them (a rekey) between the two opens.
        let db = Handle::read_write(Self::open_redb(path, &opts, false)?);
        let meta = read_meta(&db, path)?;
        let (master, ring) = unlock(&meta, &secret, &opts, unlocked)?;
        let upgrade = meta.check_bound(&ring)?;
        meta.apply_settings(&mut opts)?;
        let missing_settings = meta.settings.is_none();
        let store = Self::assemble(path, db, meta.db_id, master, ring, opts);
        if upgrade {
            store.upgrade(missing_settings)?;
        }
        store.maybe_auto_rotate()?;
        Ok(store)
    }

    /// Upgrades a version 1 store: the format record says [`FORMAT_VERSION`], the
    /// settings record is written if absent, and the keyring is sealed again as a
    /// version 2 record that authenticates them.
    fn upgrade(&self, missing_settings: bool) -> Result<()> {
        let ring = write_lock(&self.inner.keyring);
        let _commit = self.commit_lock();
        let settings = encode_settings(&self.inner.opts);
        self.write_with_keyring(&ring, KeyringWrite::Always, |txn| {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_FORMAT, &FORMAT_VERSION.to_le_bytes()[..])?;
            if missing_settings {
                meta.insert(META_SETTINGS, settings.as_slice())?;
            }
            Ok(())
        })
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
        let default_scope = Arc::new(Scope::default_session(keyring.name_key()));
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
                default_scope,
            }),
        }
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

    /// True once a commit failed for good: writes are refused until the store is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }
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

/// Mode of the files sealkv creates: the owner's only.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// Creates `path` as a new empty file with `mode` (on Unix; elsewhere the platform's
/// default). Returns false, creating nothing, when the file exists already.
pub(crate) fn create_private_file(path: &Path, mode: u32) -> Result<bool> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    match options.open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Derives the master key for `meta` (or reuses `known`, derived for the same key
/// derivation record) and opens the keyring with it.
fn unlock(
    meta: &Meta,
    secret: &Secret,
    opts: &Options,
    known: Option<(Meta, MasterKey)>,
) -> Result<(MasterKey, Keyring)> {
    let master = match known {
        Some((before, master)) if before.kdf == meta.kdf => master,
        _ => meta.kdf.master_key(secret, &opts.kdf_limits)?,
    };
    let ring = open_keyring(&master, &meta.db_id, &meta.keyring)?;
    Ok((master, ring))
}
