//! The store: sealed values under keyed name tags, in a row store (a redb file or
//! PostgreSQL, see [`crate::rowstore`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};

use sealkv_crypto::{Keyring, MasterKey, fill_random, unwrap_store_key, wrap_store_key};
use zeroize::Zeroizing;

use crate::anchor::Anchor;
use crate::commit::{KeyringWrite, Queue};
use crate::error::{Error, Result};
use crate::guards::{lock, read_lock, write_lock};
use crate::meta::{
    FORMAT_VERSION, Kdf, LEGACY_SLOT, META_DB_ID, META_FORMAT, META_KDF, META_MODE, META_SETTINGS,
    META_SLOTS, META_STORE_KEY, Meta, encode_mode, encode_settings, open_keyring, read_meta,
    seal_keyring_into,
};
use crate::options::{Concurrency, Options, Secret};
use crate::rowstore::file::handle::{Handle, PANIC_PREFIX, contain, precheck, probe_view};
use crate::rowstore::file::{FileRows, PRIVATE_MODE, create_private_file};
use crate::rowstore::postgres::{PgRows, PgUrl};
use crate::rowstore::{Location, RowStore, RowWrite, Table};
use crate::scope::Scope;
use crate::slots::{Slot, SlotInfo, SlotKind, Slots};
use crate::state::{META_STATE, State, StateKeys};
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
    /// The file path, or the server's URL without any password.
    pub(crate) path: PathBuf,
    /// The rows: the seam to the storage engine.
    pub(crate) rows: Box<dyn RowStore>,
    pub(crate) db_id: [u8; 16],
    /// The key that seals the keyring: the store key (or, in a format 1 store not yet
    /// upgraded, the master key itself).
    pub(crate) master: RwLock<MasterKey>,
    pub(crate) keyring: RwLock<Keyring>,
    /// The keyring record as this process last read or wrote it: a write transaction
    /// that finds another record in the file knows another process changed the keys.
    pub(crate) keyring_seen: Mutex<Vec<u8>>,
    /// How processes share the file (its recorded mode).
    pub(crate) mode: Concurrency,
    /// The slot this handle was opened with (the one `rekey` replaces).
    pub(crate) slot: Mutex<u32>,
    /// The keys of the state record, once the store is of format 3: every commit then
    /// keeps the content hash and advances the generation.
    pub(crate) state: RwLock<Option<StateKeys>>,
    /// The state this handle last read or committed.
    pub(crate) seen_state: Mutex<Option<State>>,
    /// The store's anchor, if it has one.
    pub(crate) anchor: Mutex<Option<Arc<Anchor>>>,
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
    /// This handle's writer id, the first bytes of its commit tokens (random; `None`
    /// only if the system's random source failed, and then no commit can be made).
    pub(crate) writer: Option<[u8; crate::outcome::WRITER_BYTES]>,
    /// When the last commit ended, and whether it succeeded (for `health`).
    pub(crate) last_commit: Mutex<Option<(std::time::Instant, bool)>>,
    /// The hot paths' metric handles.
    pub(crate) meters: crate::observe::Meters,
}

impl Store {
    /// Creates a new store at `path`, which must not exist (or be an empty file). A
    /// file this creates is readable and writable by its owner only (mode 0600).
    ///
    /// `path` may also be a PostgreSQL URL, `postgres://user@host:port/db?store=NAME`:
    /// the store's tables are created in that database (see `docs/POSTGRES.md`).
    pub fn create(
        path: impl AsRef<Path>,
        secret: impl Into<Secret>,
        opts: Options,
    ) -> Result<Self> {
        let secret = secret.into();
        let kind = match secret {
            Secret::Key(_) => SlotKind::Key,
            Secret::Passphrase(_) => SlotKind::Passphrase,
        };
        Self::create_with_slot(path.as_ref(), secret, kind, None, opts)
    }

    /// Creates a store as [`Store::create`] does, whose first slot is a keychain slot:
    /// `key` is to be kept in the OS keychain under `service`, with the new store's
    /// [`Store::id_hex`] as the account. The `sealkv` crate's `Keychain` does that; a
    /// store whose only slot is in a keychain is lost with that keychain, so add a
    /// recovery slot ([`Store::add_slot`]).
    pub fn create_with_keychain_slot(
        path: impl AsRef<Path>,
        key: MasterKey,
        service: &str,
        opts: Options,
    ) -> Result<Self> {
        crate::slots::check_text("service", Some(service))?;
        Self::create_with_slot(
            path.as_ref(),
            Secret::Key(key),
            SlotKind::Keychain,
            Some(service),
            opts,
        )
    }

    fn create_with_slot(
        path: &Path,
        secret: Secret,
        kind: SlotKind,
        service: Option<&str>,
        opts: Options,
    ) -> Result<Self> {
        let location = Location::parse(path)?;
        let shown = location.display_path();
        if let Location::File(path) = &location
            && fs::metadata(path)
                .map(|m| m.len() > 0 || m.is_dir())
                .unwrap_or(false)
        {
            return Err(Error::AlreadyExists(path.to_path_buf()));
        }
        let kdf = Kdf::for_secret(&secret, opts.kdf)?;
        let kek = kdf.master_key(&secret, &opts.kdf_limits)?;
        let mut db_id = [0u8; 16];
        fill_random(&mut db_id).map_err(Error::Key)?;
        let store_key = MasterKey::generate().map_err(Error::Key)?;
        let wrapped = wrap_store_key(&kek, &db_id, &store_key).map_err(Error::Key)?;
        let keyring = Keyring::new(opts.cipher, (opts.clock)()).map_err(Error::Key)?;
        let slots = Slots {
            next_id: LEGACY_SLOT + 1,
            slots: vec![Slot {
                info: SlotInfo {
                    id: LEGACY_SLOT,
                    kind,
                    created: (opts.clock)(),
                    label: None,
                    service: service.map(str::to_owned),
                },
                kdf: kdf.clone(),
                wrapped: Some(wrapped),
            }],
        };
        let state_keys = StateKeys::derive(store_key.expose(), &db_id);
        let state = State {
            generation: 0,
            epoch: 0,
            content: Default::default(),
        };
        // A store on a server is shared by nature: any process on any host may open it.
        let mode = match location {
            Location::File(_) => opts.concurrency,
            Location::Postgres(_) => Concurrency::MultiWriter,
        };
        let mut sealed = None;
        let mut initial = |w: &mut dyn RowWrite| -> Result<()> {
            let records: [(&str, &[u8]); 6] = [
                (META_FORMAT, &FORMAT_VERSION.to_le_bytes()),
                (META_DB_ID, &db_id),
                (META_SETTINGS, &encode_settings(&opts)),
                (META_MODE, &encode_mode(mode)),
                (META_SLOTS, &slots.encode()),
                (META_STATE, &state.encode(&state_keys)),
            ];
            for (name, value) in records {
                w.put(Table::Meta, name.as_bytes(), value)?;
            }
            sealed = Some(seal_keyring_into(w, &keyring, &store_key, &db_id)?);
            Ok(())
        };
        let rows: Box<dyn RowStore> = match &location {
            Location::File(path) => {
                let made_file = opts.backend.is_none() && create_private_file(path, PRIVATE_MODE)?;
                let created = (|| {
                    let db = FileRows::open_redb(path, &opts, true, mode)?;
                    let rows = FileRows::new(
                        path,
                        Handle::read_write(db),
                        &opts,
                        mode,
                        keyring.name_key(),
                    )?;
                    rows.write(&mut initial, &mut false)?;
                    // A new store is a whole file at once, not only with its journal.
                    rows.checkpoint();
                    if mode == Concurrency::Shared {
                        owned_rows(path, rows, &opts, &keyring, &store_key, &db_id)
                    } else {
                        Ok(Box::new(rows) as Box<dyn RowStore>)
                    }
                })();
                match created {
                    Ok(rows) => rows,
                    Err(e) => {
                        if made_file {
                            let _ = fs::remove_file(path);
                        }
                        return Err(e);
                    }
                }
            }
            Location::Postgres(url) => {
                let rows = PgRows::create(url, &opts, &mut initial)?;
                rows.set_name_key(keyring.name_key());
                Box::new(rows)
            }
        };
        let sealed = sealed.ok_or_else(|| Error::Corrupt("the keyring was not written".into()))?;
        keyring.mark_persisted(&sealed);
        let record = sealed.record().to_vec();
        let store = Self::assemble(
            &shown,
            rows,
            Unlocked {
                db_id,
                key: store_key,
                ring: keyring,
                record,
                mode,
                slot: LEGACY_SLOT,
            },
            opts,
        );
        *lock(&store.inner.seen_state) = Some(state);
        *write_lock(&store.inner.state) = Some(state_keys);
        Ok(store)
    }

    /// Opens an existing store (a file path, or a PostgreSQL URL as for
    /// [`Store::create`]).
    ///
    /// The master key is checked before any byte of the file is written: a wrong key, a
    /// file in use, a file that is not a sealkv store, a newer format, a changed meta
    /// record and a damaged file each give their own error and leave the file as it
    /// was. A file that was not closed cleanly (a crash, a copy of a live store) is
    /// recovered after the key check. A store written by an earlier format is upgraded.
    pub fn open(path: impl AsRef<Path>, secret: impl Into<Secret>, opts: Options) -> Result<Self> {
        let (path, secret) = (path.as_ref(), secret.into());
        observed_open(false, || {
            contain(|| Self::open_inner(path, secret, opts, false, true)).map_err(truncation)
        })
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
        observed_open(true, || {
            contain(|| Self::open_inner(path, secret, opts, true, true)).map_err(truncation)
        })
    }

    /// Opens a store whose anchor says it is an older copy (or whose anchor is missing
    /// or unreadable), and accepts it as the current state: the restore epoch advances
    /// (in the file, in one commit), and the anchor is written again from the file, so
    /// a copy from before this restore (at the old epoch) is refused from now on. Use it
    /// when the restore was meant (the application should then start over what a
    /// restore breaks: re-pair a messaging session, say). Returns the open store.
    pub fn accept_restore(
        path: impl AsRef<Path>,
        secret: impl Into<Secret>,
        opts: Options,
    ) -> Result<Self> {
        let (path, secret) = (path.as_ref(), secret.into());
        let store = observed_open(false, || {
            contain(|| Self::open_inner(path, secret, opts, false, false)).map_err(truncation)
        })?;
        store.advance_epoch()?;
        Ok(store)
    }

    fn open_inner(
        path: &Path,
        secret: Secret,
        opts: Options,
        read_only: bool,
        check_anchor: bool,
    ) -> Result<Self> {
        match Location::parse(path)? {
            Location::File(path) => {
                Self::open_file(&path, secret, opts, read_only, check_anchor, 0)
            }
            Location::Postgres(url) => {
                Self::open_postgres(&url, secret, opts, read_only, check_anchor)
            }
        }
    }

    fn open_postgres(
        url: &PgUrl,
        secret: Secret,
        mut opts: Options,
        read_only: bool,
        check_anchor: bool,
    ) -> Result<Self> {
        let shown = PathBuf::from(url.to_string());
        let rows = PgRows::open(url, &opts, read_only)?;
        let meta = read_meta(&*rows.view()?, &shown)?;
        let (derived, unlocked) = unlock(&meta, &secret, &opts, None)?;
        if meta.check_bound(&unlocked.ring)? || meta.mode != Concurrency::MultiWriter {
            // Stores on a server are created at format 2 or later, shared.
            return Err(Error::MetaTampered);
        }
        meta.apply_settings(&mut opts)?;
        rows.set_name_key(unlocked.ring.name_key());
        let store = Self::assemble(&shown, Box::new(rows), unlocked, opts);
        store.check_state(&meta)?;
        store.attach_anchor(&meta, read_only, check_anchor)?;
        if !read_only {
            if meta.format < FORMAT_VERSION {
                store.upgrade_or_adopt(&derived.kek, false)?;
            }
            store.maybe_auto_rotate()?;
        }
        Ok(store)
    }

    /// `rounds`: how many times an open went back and forth between finding the file
    /// held and finding no owner (an owner exiting as this process opens).
    fn open_file(
        path: &Path,
        secret: Secret,
        mut opts: Options,
        read_only: bool,
        check_anchor: bool,
        rounds: u32,
    ) -> Result<Self> {
        let mut derived = None;
        // The mode to open the file in for writing: the one it records, or, for a file
        // of format 1 (which records none), the one asked for (its upgrade records it).
        let mut mode = opts.concurrency;
        if opts.backend.is_none() {
            precheck(path)?;
            // Check the key on a view that writes nothing: a read-only open (in the
            // shared mode, which follows any writer's commits), or, for a file that
            // needs crash recovery (which a read-only open refuses), a recovery in
            // memory over the file.
            let cache = if read_only { opts.cache_size } else { 1 << 20 };
            let mut view = match probe_view(path, cache) {
                // Another process has the file alone: the store's owner, which serves
                // it (or an exclusive opener, which does not: then still Locked).
                #[cfg(unix)]
                Err(Error::Locked(_)) => {
                    return Self::open_client(
                        path,
                        secret,
                        opts,
                        read_only,
                        check_anchor,
                        None,
                        rounds,
                    );
                }
                other => other?,
            };
            // Each read a new read transaction: the anchor check below reads the file's
            // state again, after the anchor.
            view.set_shared(true);
            let meta = read_meta(&*view.snapshot()?, path)?;
            let (kek, unlocked) = unlock(&meta, &secret, &opts, None)?;
            // Every check that can refuse the file runs here, before a writer opens it.
            meta.check_bound(&unlocked.ring)?;
            checked_state(&meta, &unlocked.key, &unlocked.db_id)?;
            if check_anchor {
                // An older copy is refused before a writer opens the file (which
                // writes its header). The file's state is read again after the anchor:
                // another process may have committed since.
                let (key, db_id) = (&unlocked.key, &unlocked.db_id);
                let position = |rows: &dyn crate::rowstore::RowRead| -> Result<(u64, u64)> {
                    let now = read_meta(rows, path)?;
                    Ok(checked_state(&now, key, db_id)?
                        .map_or((0, 0), |(_, s)| (s.epoch, s.generation)))
                };
                let checked = crate::anchor::precheck(&meta, &opts, key, db_id, &mut || {
                    position(&*view.snapshot()?)
                });
                if let Err(Error::RolledBack { .. }) = checked {
                    // A view recovered in memory (a file that needs crash recovery) is
                    // frozen when made: ask again through a view made after the anchor
                    // is read, and read through that one.
                    let mut fresh = None;
                    crate::anchor::precheck(&meta, &opts, key, db_id, &mut || {
                        let v = probe_view(path, cache)?;
                        v.set_shared(true);
                        let at = position(&*v.snapshot()?);
                        fresh = Some(v);
                        at
                    })?;
                    if let Some(v) = fresh {
                        view = v;
                    }
                } else {
                    checked?;
                }
            }
            if read_only {
                meta.apply_settings(&mut opts)?;
                let rows = FileRows::new(path, view, &opts, meta.mode, unlocked.ring.name_key())?;
                let store = Self::assemble(path, Box::new(rows), unlocked, opts);
                store.check_state(&meta)?;
                // Checked above.
                store.attach_anchor(&meta, true, false)?;
                return Ok(store);
            }
            meta.apply_settings(&mut opts.clone())?;
            derived = Some(kek);
            if meta.format >= 2 {
                mode = meta.mode;
            }
            drop(view);
        }
        // The key is right (or a test backend is in use): open for writing, in the
        // file's mode, which recovers the file if it needs it. The records are read
        // again, as another program may have changed them (a rekey) in between.
        // A file in the owner mode is opened alone by the process that wins the
        // election; the others become its clients.
        let open_writer = |mode: Concurrency| -> Result<Writer> {
            if mode == Concurrency::Shared && opts.backend.is_none() {
                #[cfg(unix)]
                {
                    let address = crate::rowstore::owner::Address::for_store(path)?;
                    return match crate::rowstore::owner::elect(
                        path, &opts, &address, false, OPEN_WAIT,
                    )? {
                        crate::rowstore::owner::Elected::Owner(db) => {
                            Ok(Writer::Local(Handle::read_write(db), mode))
                        }
                        // Connected already: the open goes on with this connection.
                        crate::rowstore::owner::Elected::Client(conn, hello) => {
                            Ok(Writer::Client(Some((conn, hello))))
                        }
                        crate::rowstore::owner::Elected::Free => Ok(Writer::Client(None)),
                    };
                }
                #[cfg(not(unix))]
                return Err(owner_mode_unsupported());
            }
            // A store of the multi-writer mode that the caller wants shared through an
            // owner moves to that mode when no other process has it open (proved by
            // opening it alone); otherwise it opens as it is.
            if mode == Concurrency::MultiWriter
                && opts.concurrency == Concurrency::Shared
                && opts.backend.is_none()
                && cfg!(unix)
            {
                match FileRows::open_redb(path, &opts, false, Concurrency::Exclusive) {
                    Ok(db) => {
                        return Ok(Writer::Local(Handle::read_write(db), Concurrency::Shared));
                    }
                    Err(Error::Locked(_)) => {}
                    Err(e) => return Err(e),
                }
                // Held: by processes in the multi-writer mode (join them), or by one
                // that just moved it to the owner mode (become its client).
                match FileRows::open_redb(path, &opts, false, mode) {
                    Ok(db) => return Ok(Writer::Local(Handle::read_write(db), mode)),
                    #[cfg(unix)]
                    Err(Error::Locked(_)) => return Ok(Writer::Client(None)),
                    Err(e) => return Err(e),
                }
            }
            Ok(Writer::Local(
                Handle::read_write(FileRows::open_redb(path, &opts, false, mode)?),
                mode,
            ))
        };
        let (mut db, mut opened) = match open_writer(mode)? {
            Writer::Local(db, opened) => (db, opened),
            #[cfg(unix)]
            Writer::Client(found) => {
                return Self::open_client(path, secret, opts, false, check_anchor, found, rounds);
            }
            #[cfg(not(unix))]
            Writer::Client(_) => return Err(owner_mode_unsupported()),
        };
        let mut meta = read_meta(&*db.snapshot()?, path)?;
        // Another process may have upgraded a format 1 file, or moved a multi-writer
        // file to the owner mode, between the two reads: open in the mode the file now
        // records (authenticated below).
        if meta.format >= 2 && meta.mode != mode {
            drop(db);
            mode = meta.mode;
            (db, opened) = match open_writer(mode)? {
                Writer::Local(db, opened) => (db, opened),
                #[cfg(unix)]
                Writer::Client(found) => {
                    return Self::open_client(
                        path,
                        secret,
                        opts,
                        false,
                        check_anchor,
                        found,
                        rounds,
                    );
                }
                #[cfg(not(unix))]
                Writer::Client(_) => return Err(owner_mode_unsupported()),
            };
            meta = read_meta(&*db.snapshot()?, path)?;
            if meta.mode != mode {
                return Err(Error::MetaTampered);
            }
        }
        let (derived, mut unlocked) = unlock(&meta, &secret, &opts, derived)?;
        meta.check_bound(&unlocked.ring)?;
        meta.apply_settings(&mut opts)?;
        let missing_settings = meta.settings.is_none();
        unlocked.mode = opened;
        let name_key = unlocked.ring.name_key();
        let rows: Box<dyn RowStore> = if opened == Concurrency::Shared {
            let file = FileRows::new(path, db, &opts, opened, name_key)?;
            owned_rows(
                path,
                file,
                &opts,
                &unlocked.ring,
                &unlocked.key,
                &unlocked.db_id,
            )?
        } else {
            Box::new(FileRows::new(path, db, &opts, opened, name_key)?)
        };
        let store = Self::assemble(path, rows, unlocked, opts);
        store.check_state(&meta)?;
        store.attach_anchor(&meta, false, check_anchor)?;
        if meta.format < FORMAT_VERSION {
            // Records the mode it was opened in, too.
            store.upgrade_or_adopt(&derived.kek, missing_settings)?;
        } else if opened != meta.mode {
            store.record_mode(opened)?;
        }
        store.maybe_auto_rotate()?;
        Ok(store)
    }

    /// Opens a store another process owns, as its client: the owner's greeting gives
    /// what unlocks the store; this process then proves it holds the key (and checks
    /// the owner's proof) before anything else is read.
    #[cfg(unix)]
    fn open_client(
        path: &Path,
        secret: Secret,
        mut opts: Options,
        read_only: bool,
        check_anchor: bool,
        found: Option<(
            crate::rowstore::owner::client::Conn,
            crate::rowstore::owner::Hello,
        )>,
        rounds: u32,
    ) -> Result<Self> {
        use crate::rowstore::owner::{Address, Elected, OwnedRows, auth_key, elect};
        let address = Address::for_store(path)?;
        let (conn, hello) = match found {
            Some(found) => found,
            None => match elect(path, &opts, &address, read_only, OPEN_WAIT)? {
                Elected::Client(conn, hello) => (conn, hello),
                // The owner went away meanwhile: open the file as the first opener.
                Elected::Owner(db) if rounds < 8 => {
                    drop(db);
                    return Self::open_file(
                        path,
                        secret,
                        opts,
                        read_only,
                        check_anchor,
                        rounds + 1,
                    );
                }
                // The file is held, and nobody serves it: an exclusive opener (or a
                // sealkv before the owner mode). A read-only opener finds out at once.
                _ => return Err(Error::Locked(path.to_path_buf())),
            },
        };
        let greeted = read_meta(&hello, path)?;
        let (derived, unlocked) = unlock(&greeted, &secret, &opts, None)?;
        let auth = auth_key(unlocked.key.expose(), &unlocked.db_id);
        let conn = conn.authenticate(&hello, &auth)?;
        let rows = OwnedRows::client(
            path,
            address,
            conn,
            &opts,
            unlocked.ring.name_key(),
            auth,
            read_only,
        )?;
        // Everything checked again on what the owner serves, now authenticated. An
        // owner that has just opened the file may still be upgrading it (its format,
        // or its mode from multi-writer): wait for that commit.
        let until = std::time::Instant::now() + OPEN_WAIT;
        let meta = loop {
            let meta = read_meta(&*rows.view()?, path)?;
            let settled = meta.format >= FORMAT_VERSION && meta.mode == Concurrency::Shared;
            if settled || std::time::Instant::now() >= until {
                break meta;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let (_, mut unlocked) = unlock(&meta, &secret, &opts, Some(derived))?;
        meta.check_bound(&unlocked.ring)?;
        if meta.mode != Concurrency::Shared {
            return Err(Error::MetaTampered);
        }
        meta.apply_settings(&mut opts)?;
        unlocked.mode = Concurrency::Shared;
        let store = Self::assemble(path, Box::new(rows), unlocked, opts);
        store.check_state(&meta)?;
        store.attach_anchor(&meta, read_only, check_anchor)?;
        if !read_only {
            store.maybe_auto_rotate()?;
        }
        Ok(store)
    }

    /// Records a new sharing mode (a multi-writer store this process has alone, moved
    /// to the owner mode), sealing the keyring again over it, in one commit.
    fn record_mode(&self, mode: Concurrency) -> Result<()> {
        let ring = write_lock(&self.inner.keyring);
        let _commit = self.commit_lock();
        self.write_with_keyring(&ring, KeyringWrite::Always, |w| {
            w.put(Table::Meta, META_MODE.as_bytes(), &encode_mode(mode))
        })?;
        tracing::info!(target: "sealkv::open", "the store moved to the owner mode");
        Ok(())
    }

    /// Upgrades a store of an earlier format, or, when another process upgraded it
    /// meanwhile, takes up what that process made: the store key its slot now wraps
    /// (a format 1 store's new one), the keyring sealed under it, the state record and
    /// the anchor. Either way this handle then keeps the state like any other.
    fn upgrade_or_adopt(&self, kek: &MasterKey, missing_settings: bool) -> Result<()> {
        // On a server, a step that fails while it fails over is tried again.
        self.riding(|| self.upgrade_or_adopt_once(kek, missing_settings))
    }

    fn upgrade_or_adopt_once(&self, kek: &MasterKey, missing_settings: bool) -> Result<()> {
        for _ in 0..16 {
            let meta = read_meta(&*self.rows().view()?, self.path())?;
            if meta.format >= FORMAT_VERSION {
                return self.adopt(&meta, kek);
            }
            match self.upgrade(kek, missing_settings) {
                // Another process changed the keyring: upgraded the store (adopted
                // above, on the next turn), or rotated it (read again).
                Err(Error::KeyringChanged) => {
                    let now = read_meta(&*self.rows().view()?, self.path())?;
                    if now.format < FORMAT_VERSION {
                        self.reload_keyring()?;
                    }
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    let meta = read_meta(&*self.rows().view()?, self.path())?;
                    return self.attach_anchor(&meta, false, false);
                }
            }
        }
        Err(Error::KeyringChanged)
    }

    /// Takes up a store another process upgraded (see [`Store::upgrade_or_adopt`]).
    fn adopt(&self, meta: &Meta, kek: &MasterKey) -> Result<()> {
        let key = meta
            .slots
            .slots
            .iter()
            .filter_map(|s| s.wrapped.as_deref())
            .find_map(|w| match unwrap_store_key(kek, &self.inner.db_id, w) {
                Err(sealkv_crypto::CryptoError::WrongKey) => None,
                other => Some(other),
            })
            .ok_or(Error::WrongKey)?
            .map_err(|e| match e {
                sealkv_crypto::CryptoError::UnsupportedVersion(v) => Error::NewerFormat {
                    found: v.into(),
                    supported: FORMAT_VERSION,
                },
                other => Error::Corrupt(format!("store key: {other}")),
            })?;
        *write_lock(&self.inner.master) = key;
        self.reload_keyring()?;
        self.check_state(meta)?;
        self.attach_anchor(meta, false, false)
    }

    /// Upgrades a store of an earlier format to [`FORMAT_VERSION`], in one transaction:
    /// the settings and sharing mode are recorded; a format 1 store gets a store key,
    /// sealed under the master key; the slot its `kdf` and `store_key` records make
    /// becomes slot 1 of a `slots` record; a state record starts at generation 1 with
    /// the content hash of every row; and the keyring is sealed again (as a version 2
    /// record) binding them all.
    fn upgrade(&self, kek: &MasterKey, missing_settings: bool) -> Result<()> {
        let ring = write_lock(&self.inner.keyring);
        let _commit = self.commit_lock();
        let settings = encode_settings(&self.inner.opts);
        let db_id = self.inner.db_id;
        let meta = read_meta(&*self.rows().view()?, self.path())?;
        if meta.format >= FORMAT_VERSION {
            // Another process upgraded it meanwhile: `upgrade_or_adopt` takes it up.
            return Err(Error::KeyringChanged);
        }
        let mut slots = meta.slots;
        let store_key = match (
            meta.format,
            slots.slots.first().and_then(|s| s.wrapped.clone()),
        ) {
            (2.., Some(_)) => read_lock(&self.inner.master).clone(),
            _ => MasterKey::generate().map_err(Error::Key)?,
        };
        let wrapped = wrap_store_key(kek, &db_id, &store_key).map_err(Error::Key)?;
        for slot in &mut slots.slots {
            slot.wrapped = Some(wrapped.clone());
        }
        let keys = StateKeys::derive(store_key.expose(), &db_id);
        let mode = encode_mode(self.inner.mode);
        let mut started = None;
        self.write_with_keyring(&ring, KeyringWrite::Under(&store_key), |w| {
            w.put(
                Table::Meta,
                META_FORMAT.as_bytes(),
                &FORMAT_VERSION.to_le_bytes(),
            )?;
            if missing_settings {
                w.put(Table::Meta, META_SETTINGS.as_bytes(), &settings)?;
            }
            w.put(Table::Meta, META_MODE.as_bytes(), &mode)?;
            w.put(Table::Meta, META_SLOTS.as_bytes(), &slots.encode())?;
            w.delete(Table::Meta, META_KDF.as_bytes())?;
            w.delete(Table::Meta, META_STORE_KEY.as_bytes())?;
            let state = State {
                generation: 1,
                epoch: 0,
                content: keys.content_of(&*w)?,
            };
            w.put(Table::Meta, META_STATE.as_bytes(), &state.encode(&keys))?;
            started = Some(state);
            Ok(())
        })?;
        *lock(&self.inner.seen_state) = started;
        *write_lock(&self.inner.state) = Some(keys);
        *write_lock(&self.inner.master) = store_key;
        Ok(())
    }

    /// Authenticates the state record of `meta` (format 3) with this store's key, and
    /// starts keeping it: from here on every commit advances it.
    fn check_state(&self, meta: &Meta) -> Result<()> {
        let key = read_lock(&self.inner.master).clone();
        if let Some((keys, state)) = checked_state(meta, &key, &self.inner.db_id)? {
            *lock(&self.inner.seen_state) = Some(state);
            *write_lock(&self.inner.state) = Some(keys);
        }
        Ok(())
    }

    fn assemble(path: &Path, rows: Box<dyn RowStore>, unlocked: Unlocked, opts: Options) -> Self {
        let Unlocked {
            db_id,
            key,
            ring,
            record,
            mode,
            slot,
        } = unlocked;
        let default_scope = Arc::new(Scope::default_session(ring.name_key()));
        Self {
            inner: Arc::new(Inner {
                id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
                meters: crate::observe::Meters::new(rows.engine()),
                last_commit: Mutex::new(None),
                writer: {
                    let mut w = [0; crate::outcome::WRITER_BYTES];
                    sealkv_crypto::fill_random(&mut w).ok().map(|()| w)
                },
                path: path.to_path_buf(),
                rows,
                db_id,
                master: RwLock::new(key),
                keyring: RwLock::new(ring),
                keyring_seen: Mutex::new(record),
                mode,
                slot: Mutex::new(slot),
                state: RwLock::new(None),
                seen_state: Mutex::new(None),
                anchor: Mutex::new(None),
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

    /// The store's id in lowercase hex (as `sealkv stats` shows it): the account of
    /// its keychain entries.
    pub fn id_hex(&self) -> String {
        hex_id(&self.inner.db_id)
    }

    /// The format version the store's file (or tables) records now.
    pub fn format(&self) -> Result<u32> {
        Ok(read_meta(&*self.rows().view()?, &self.inner.path)?.format)
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// The engine holding this store's rows (a redb file, a PostgreSQL database).
    pub(crate) fn rows(&self) -> &dyn RowStore {
        &*self.inner.rows
    }

    /// How processes share this store's file.
    pub fn concurrency(&self) -> Concurrency {
        self.inner.mode
    }

    /// True while this handle owns the store's file in the [`Concurrency::Shared`]
    /// mode: it has the file alone and serves the store's other processes. False for
    /// a client of another process, and in the other modes. It changes when an owner
    /// goes away and this handle takes over.
    pub fn is_owner(&self) -> bool {
        self.rows().is_owner()
    }

    /// Reads the keyring record again (another process changed it: a rotation, a
    /// destroy, a rekey, a seal reservation) and makes it this process's keyring.
    pub(crate) fn reload_keyring(&self) -> Result<()> {
        let mut ring = write_lock(&self.inner.keyring);
        self.reload_into(&mut ring)
    }

    /// [`Store::reload_keyring`] with the keyring's write lock held by the caller.
    pub(crate) fn reload_into(&self, ring: &mut Keyring) -> Result<()> {
        let meta = read_meta(&*self.rows().view()?, &self.inner.path)?;
        let fresh = open_keyring(
            &read_lock(&self.inner.master),
            &self.inner.db_id,
            &meta.keyring,
        )?;
        if let Some(bound) = fresh.bound_meta()
            && *bound != meta.digest
        {
            return Err(Error::MetaTampered);
        }
        ring.refresh(fresh);
        *lock(&self.inner.keyring_seen) = meta.keyring;
        Ok(())
    }

    /// Runs `f`; when it meets a keyring another process changed, reloads the keyring
    /// and runs it again (a bounded number of times, waiting a little longer each
    /// time: a process re-encrypting changes the keyring with every batch, and a
    /// writer that retried at once could lose every race to it).
    pub(crate) fn with_fresh_keyring<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        // On a server, a read that fails while it fails over is tried again.
        self.riding(|| {
            for attempt in 0..16u32 {
                match f() {
                    Err(Error::KeyringChanged) => {
                        std::thread::sleep(std::time::Duration::from_micros(50 << attempt.min(8)));
                        self.reload_keyring()?
                    }
                    Err(Error::Integrity {
                        reason: sealkv_crypto::CryptoError::UnknownKey(_),
                        ..
                    }) if self.inner.mode.others_write() => self.reload_keyring()?,
                    other => return other,
                }
            }
            f()
        })
    }

    pub(crate) fn ring(&self) -> RwLockReadGuard<'_, Keyring> {
        read_lock(&self.inner.keyring)
    }

    /// True once a commit failed for good: writes are refused until the store is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }
}

/// What can be read of a store without its key (none of it authenticated until a key
/// opens the store): its id, format, key slots and anchor.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreInfo {
    /// The store's id, bound into every sealed value (hex in [`StoreInfo::id_hex`]).
    pub id: [u8; 16],
    /// The file format version.
    pub format: u32,
    /// The key slots.
    pub slots: Vec<SlotInfo>,
    /// Where its anchor is, if it records one.
    pub anchor: Option<crate::AnchorLocation>,
}

impl StoreInfo {
    /// The store's id in lowercase hex: the account of its keychain entries.
    pub fn id_hex(&self) -> String {
        hex_id(&self.id)
    }
}

/// How a read-write open of a file goes on: with the file opened here (in the mode it
/// was opened in), or as the client of the process that owns it (connected already,
/// or to be found).
enum Writer {
    Local(Handle, Concurrency),
    #[cfg(unix)]
    Client(
        Option<(
            crate::rowstore::owner::client::Conn,
            crate::rowstore::owner::Hello,
        )>,
    ),
    #[cfg(not(unix))]
    Client(Option<std::convert::Infallible>),
}

/// How long an open waits for the store's owner to appear (one starting, or one
/// taking over from an owner that died) before giving up with [`Error::Locked`].
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The rows of a store this process owns: its file, served to the others.
#[cfg(unix)]
fn owned_rows(
    path: &Path,
    file: FileRows,
    opts: &Options,
    ring: &Keyring,
    store_key: &MasterKey,
    db_id: &[u8; 16],
) -> Result<Box<dyn RowStore>> {
    Ok(Box::new(crate::rowstore::owner::OwnedRows::owner(
        path,
        file,
        opts,
        ring.name_key(),
        crate::rowstore::owner::auth_key(store_key.expose(), db_id),
    )?))
}

#[cfg(not(unix))]
fn owned_rows(
    _path: &Path,
    _file: FileRows,
    _opts: &Options,
    _ring: &Keyring,
    _store_key: &MasterKey,
    _db_id: &[u8; 16],
) -> Result<Box<dyn RowStore>> {
    Err(owner_mode_unsupported())
}

#[cfg(not(unix))]
fn owner_mode_unsupported() -> Error {
    Error::Owner {
        what: "the shared mode serves other processes over a Unix socket, which this \
               platform lacks: open the store with Concurrency::MultiWriter"
            .into(),
        transient: false,
    }
}

pub(crate) fn hex_id(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads what a store shows without its key ([`StoreInfo`]): which slots could open it
/// (a keychain slot's service, say). Writes nothing.
pub fn inspect(path: impl AsRef<Path>) -> Result<StoreInfo> {
    let path = path.as_ref();
    contain(|| {
        let meta = match Location::parse(path)? {
            Location::File(path) => {
                precheck(&path)?;
                match probe_view(&path, 1 << 20) {
                    Ok(view) => read_meta(&*view.snapshot()?, &path)?,
                    // Its owner has the file alone: its greeting shows the same.
                    #[cfg(unix)]
                    Err(Error::Locked(_)) => {
                        let address = crate::rowstore::owner::Address::for_store(&path)?;
                        let (_, hello) = crate::rowstore::owner::client::Conn::open(&address)
                            .map_err(|_| Error::Locked(path.clone()))?;
                        read_meta(&hello, &path)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Location::Postgres(url) => {
                let shown = PathBuf::from(url.to_string());
                read_meta(
                    &*PgRows::open(&url, &Options::default(), true)?.view()?,
                    &shown,
                )?
            }
        };
        Ok(StoreInfo {
            id: meta.db_id,
            format: meta.format,
            slots: meta.slots.slots.into_iter().map(|s| s.info).collect(),
            anchor: meta
                .anchor
                .as_deref()
                .map(crate::AnchorLocation::decode)
                .transpose()?,
        })
    })
    .map_err(truncation)
}

impl Drop for Inner {
    /// Writes what an interval anchor held back, so a store closed cleanly leaves its
    /// anchor current.
    fn drop(&mut self) {
        let anchor = self.anchor.get_mut().map(Option::take).unwrap_or_default();
        if let Some(anchor) = anchor
            && let Err(e) = anchor.flush()
        {
            tracing::warn!(target: "sealkv::anchor", error = %e, "anchor not written at close");
        }
    }
}

/// A file that ends before redb's structures do fails with an early end of file,
/// wherever redb first reads past it: say so.
fn truncation(e: Error) -> Error {
    let early_end = |io: &std::io::Error| io.kind() == std::io::ErrorKind::UnexpectedEof;
    match &e {
        Error::Storage(redb::Error::Io(io)) if early_end(io) => {
            Error::Corrupt("the file ends early (truncated)".into())
        }
        Error::Io(io) if early_end(io) => Error::Corrupt("the file ends early (truncated)".into()),
        _ => e,
    }
}

/// What opening a store's keys yields.
pub(crate) struct Unlocked {
    db_id: [u8; 16],
    /// The key that seals the keyring (the store key; the master key in a format 1
    /// store).
    key: MasterKey,
    ring: Keyring,
    /// The keyring record read.
    record: Vec<u8>,
    mode: Concurrency,
    /// The slot that opened it.
    slot: u32,
}

/// Runs an open in a trace span, and counts wrong keys. Neither the path nor the error's
/// text (which may name the path) is recorded.
fn observed_open(read_only: bool, open: impl FnOnce() -> Result<Store>) -> Result<Store> {
    let _span = tracing::info_span!(target: "sealkv::open", "open", read_only).entered();
    let t = std::time::Instant::now();
    let result = open();
    let millis = t.elapsed().as_millis() as u64;
    match &result {
        Ok(store) => tracing::info!(
            target: "sealkv::open",
            engine = store.rows().engine(),
            millis,
            "opened"
        ),
        Err(Error::WrongKey) => {
            crate::observe::count(crate::observe::WRONG_KEY, 1);
            tracing::warn!(target: "sealkv::open", millis, "wrong key or passphrase");
        }
        Err(_) => tracing::info!(target: "sealkv::open", millis, "open failed"),
    }
    result
}

/// The state record of `meta`, authenticated under `store_key` (`None` before format 3).
fn checked_state(
    meta: &Meta,
    store_key: &MasterKey,
    db_id: &[u8; 16],
) -> Result<Option<(StateKeys, State)>> {
    if meta.format < 3 {
        return Ok(None);
    }
    let keys = StateKeys::derive(store_key.expose(), db_id);
    let record = meta.state.as_deref().ok_or(Error::MetaTampered)?;
    let state = State::decode(record, &keys)?;
    Ok(Some((keys, state)))
}

/// A master key derived for one slot, kept for a second read of the same records.
pub(crate) struct Derived {
    slot: u32,
    kdf: Kdf,
    kek: MasterKey,
}

/// Finds the slot `secret` opens: derives each candidate slot's master key (or reuses
/// `known`, derived from the same slot record), unwraps the store key and opens the
/// keyring. Slots of another kind are not tried; a wrong secret for one slot moves on
/// to the next. Returns the master key too (an upgrade wraps the store key under it).
fn unlock(
    meta: &Meta,
    secret: &Secret,
    opts: &Options,
    known: Option<Derived>,
) -> Result<(Derived, Unlocked)> {
    let candidates: Vec<&Slot> = meta
        .slots
        .slots
        .iter()
        .filter(|s| s.takes(secret))
        .collect();
    if candidates.is_empty() {
        return Err(Error::KeyKindMismatch {
            expected: match secret {
                Secret::Key(_) => "passphrase",
                Secret::Passphrase(_) => "raw key",
            },
        });
    }
    let mut known = known;
    // The slots record is not authenticated until a slot opens the keyring: a hostile
    // one could list many costly passphrase slots. Their Argon2 work together is
    // bounded by four times what one slot may cost.
    let mut budget = opts.kdf_limits.max_memory_passes_kib.saturating_mul(4);
    let mut refused = None;
    for slot in candidates {
        let kek = match known.take() {
            Some(d) if d.slot == slot.info.id && d.kdf == slot.kdf => d.kek,
            other => {
                known = other;
                if let Kdf::Argon2id { params, .. } = &slot.kdf {
                    let work = u64::from(params.m_cost_kib) * u64::from(params.t_cost);
                    if opts.kdf_limits.check(params).is_ok() {
                        if work > budget {
                            return Err(Error::Key(sealkv_crypto::CryptoError::InvalidKey(
                                "the store's passphrase slots together ask for more key \
                                 derivation work than allowed (4 x kdf_limits)",
                            )));
                        }
                        budget -= work;
                    }
                }
                let t = std::time::Instant::now();
                let kek = match slot.kdf.master_key(secret, &opts.kdf_limits) {
                    Ok(kek) => kek,
                    // One slot over the caller's limits: another may open the store.
                    Err(e @ Error::Key(sealkv_crypto::CryptoError::KdfOverLimit { .. })) => {
                        refused = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                tracing::debug!(
                    target: "sealkv::open",
                    kdf_millis = t.elapsed().as_millis() as u64,
                    "master key derived"
                );
                kek
            }
        };
        let key = match &slot.wrapped {
            Some(wrapped) => match unwrap_store_key(&kek, &meta.db_id, wrapped) {
                Ok(key) => key,
                Err(sealkv_crypto::CryptoError::WrongKey) => continue,
                Err(sealkv_crypto::CryptoError::UnsupportedVersion(v)) => {
                    return Err(Error::NewerFormat {
                        found: v.into(),
                        supported: FORMAT_VERSION,
                    });
                }
                Err(other) => return Err(Error::Corrupt(format!("store key: {other}"))),
            },
            None => kek.clone(),
        };
        let ring = match open_keyring(&key, &meta.db_id, &meta.keyring) {
            // A format 1 file: the master key seals the keyring itself.
            Err(Error::WrongKey) if slot.wrapped.is_none() => continue,
            other => other?,
        };
        return Ok((
            Derived {
                slot: slot.info.id,
                kdf: slot.kdf.clone(),
                kek,
            },
            Unlocked {
                db_id: meta.db_id,
                key,
                ring,
                record: meta.keyring.clone(),
                mode: meta.mode,
                slot: slot.info.id,
            },
        ));
    }
    Err(refused.unwrap_or(Error::WrongKey))
}
