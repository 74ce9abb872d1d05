//! The file engine: a store's rows in one redb file (the embedded default).
//!
//! The three tables are redb tables (`sealkv_data`, `sealkv_meta`, `sealkv_expiry`);
//! their names and key types are the file format (`docs/FORMAT.md`) and do not change
//! with the seam. Group commit, crash recovery without writing on a wrong key, the
//! cached read snapshot and cross-process lock bytes live here.

pub(crate) mod backend;
pub(crate) mod handle;
pub(crate) mod journal;
pub(crate) mod locks;
pub(crate) mod recover;

use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use self::backend::Boxed;
use self::handle::{Handle, Snapshot, map_open_error};
use self::locks::FileLocks;
use super::{Found, LockGuard, Range, RowRead, RowStore, RowWrite, Table, View, Visit};
use crate::error::{Error, Result};
use crate::guards::{read_lock, write_lock};
use crate::options::{Concurrency, Options};

/// The key of a data row: namespace tag then key tag. `&[u8; 32]` compares with one
/// `memcmp` and reads without copying; redb gives it the same type name as
/// `[u8; 32]`, the key type of earlier builds, so their files open unchanged
/// (`engine/tests/format.rs` opens one).
pub(crate) type RowKey = &'static [u8; 32];
pub(crate) const DATA: TableDefinition<RowKey, &[u8]> = TableDefinition::new("sealkv_data");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("sealkv_meta");
pub(crate) const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("sealkv_expiry");

/// A store's redb file, open read-write or read-only.
pub(crate) struct FileRows {
    path: PathBuf,
    opts: Options,
    mode: Concurrency,
    /// The current redb handle. After a failed commit whose recovery could not reopen
    /// the file (the disk still full, say), there is none: each call then tries to
    /// reopen it, so reads come back once the file can be opened again.
    slot: RwLock<Option<Arc<Handle>>>,
    /// Cross-process transaction locks (shared mode, read-write, real files only).
    locks: Option<FileLocks>,
}

impl FileRows {
    /// Wraps an open handle of the file at `path`.
    pub(crate) fn new(
        path: &Path,
        mut handle: Handle,
        opts: &Options,
        mode: Concurrency,
        name_key: &sealkv_crypto::NameKey,
    ) -> Result<Self> {
        let locks = match mode {
            Concurrency::MultiWriter if !handle.is_read_only() && opts.backend.is_none() => {
                Some(FileLocks::open(path, name_key)?)
            }
            _ => None,
        };
        handle.set_shared(mode == Concurrency::MultiWriter);
        if Self::journals(mode) && !handle.is_read_only() {
            handle.start_journal(path, opts.backend.as_ref())?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            opts: opts.clone(),
            mode,
            slot: RwLock::new(Some(handle.shared())),
            locks,
        })
    }

    /// The file of an owner process (`db`, opened alone): no lock bytes (the owner
    /// keeps lock keys in its own table), and the read snapshot cached, since every
    /// commit, its clients' too, goes through this handle.
    pub(crate) fn new_owned(path: &Path, db: Database, opts: &Options) -> Result<Self> {
        // An owner holds the file alone: its commits go through the journal.
        let mut handle = Handle::read_write(db);
        handle.start_journal(path, opts.backend.as_ref())?;
        Ok(Self {
            path: path.to_path_buf(),
            opts: opts.clone(),
            mode: Concurrency::Exclusive,
            slot: RwLock::new(Some(handle.shared())),
            locks: None,
        })
    }

    /// A read-only handle of a store no process owns (a read-only opener that found
    /// no owner): while it is open, no process can become the owner.
    pub(crate) fn open_reader(path: &Path, opts: &Options) -> Result<Self> {
        let handle = handle::probe_view(path, opts.cache_size)?;
        Ok(Self {
            path: path.to_path_buf(),
            opts: opts.clone(),
            mode: Concurrency::Exclusive,
            slot: RwLock::new(Some(Arc::new(handle))),
            locks: None,
        })
    }

    /// True when a read-write handle opened in `mode` commits through the journal:
    /// when this process holds the file alone (redb refuses commits without a sync in
    /// its multi-writer mode). A store a test opens through a storage backend keeps
    /// its journal in a backend the same factory makes.
    fn journals(mode: Concurrency) -> bool {
        mode != Concurrency::MultiWriter
    }

    /// Opens (or, with `create`, creates) the redb file at `path` in `mode`. A
    /// read-write open replays the file's journal first (see `journal.rs`).
    pub(crate) fn open_redb(
        path: &Path,
        opts: &Options,
        create: bool,
        mode: Concurrency,
    ) -> Result<Database> {
        Self::open_db(path, opts, create, mode, false)
    }

    /// [`FileRows::open_redb`]; `full` replays every record of the journal (see
    /// `journal::replay`).
    fn open_db(
        path: &Path,
        opts: &Options,
        create: bool,
        mode: Concurrency,
        full: bool,
    ) -> Result<Database> {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(opts.cache_size);
        builder.set_concurrency_mode(match mode {
            Concurrency::MultiWriter => redb::ConcurrencyMode::MultiWriter,
            // An owner has the file alone, like an exclusive opener.
            Concurrency::Shared | Concurrency::Exclusive => redb::ConcurrencyMode::ExclusiveWriter,
        });
        let result = match &opts.backend {
            Some(factory) => builder.create_with_backend(Boxed(factory(path, create)?)),
            None if create => {
                // A journal left beside a file that is gone is not this one's.
                match fs::remove_file(journal::path_for(path)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
                builder.create(path)
            }
            None => builder.open(path),
        };
        let db = result.map_err(|e| map_open_error(e, path))?;
        if !create {
            journal::replay(path, &db, opts.backend.as_ref(), full)?;
        }
        Ok(db)
    }

    /// The current handle, reopening the file if a failed recovery left none.
    pub(crate) fn handle(&self) -> Result<Arc<Handle>> {
        if let Some(db) = read_lock(&self.slot).clone() {
            return Ok(db);
        }
        let mut slot = write_lock(&self.slot);
        if let Some(db) = slot.clone() {
            return Ok(db);
        }
        let db = self.open_handle()?;
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Opens this store's file read-write again (after a failed commit or a compaction).
    fn open_handle(&self) -> Result<Arc<Handle>> {
        self.reopen(false)
    }

    /// [`FileRows::open_handle`]; `full`: after a failed checkpoint (see
    /// `journal::replay`).
    fn reopen(&self, full: bool) -> Result<Arc<Handle>> {
        let db = Self::open_db(&self.path, &self.opts, false, self.mode, full)?;
        let mut handle = Handle::read_write(db);
        handle.set_shared(self.mode == Concurrency::MultiWriter);
        if Self::journals(self.mode) {
            handle.start_journal(&self.path, self.opts.backend.as_ref())?;
        }
        Ok(handle.shared())
    }

    /// Takes the handle out of its slot and waits (up to `tries` ms) until no reader
    /// holds it, then drops it, releasing the file.
    fn release(slot: &mut Option<Arc<Handle>>, tries: u32) {
        if let Some(mut db) = slot.take() {
            for _ in 0..tries {
                match Arc::try_unwrap(db) {
                    Ok(only) => {
                        drop(only); // releases the file lock
                        break;
                    }
                    Err(shared) => {
                        db = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
    }

    /// Writes `rows` (a store's three tables) into a new redb file at `dest`, created
    /// with `mode`; on failure no file is left behind.
    pub(crate) fn write_new(dest: &Path, mode: u32, rows: &dyn RowRead) -> Result<()> {
        if !create_private_file(dest, mode)? {
            return Err(Error::AlreadyExists(dest.to_path_buf()));
        }
        let result = (|| -> Result<()> {
            let copy = redb::Builder::new()
                .create(dest)
                .map_err(|e| map_open_error(e, dest))?;
            let txn = copy.begin_write()?;
            {
                let mut w = RedbWrite::open(&txn)?;
                super::copy_rows(rows, &mut w)?;
            }
            txn.commit()?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(dest);
        }
        result
    }
}

impl RowStore for FileRows {
    fn view(&self) -> Result<View> {
        Ok(self.handle()?.snapshot()?)
    }

    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn RowWrite) -> Result<()>,
        committing: &mut bool,
    ) -> Result<()> {
        let db = self.handle()?;
        let txn = db.begin_write()?;
        let mut ops = journal::Ops::default();
        {
            let mut w = RedbWrite::open(&txn)?;
            if db.journaled() {
                f(&mut journal::Logged {
                    inner: &mut w,
                    ops: &mut ops,
                })?;
            } else {
                f(&mut w)?;
            }
        }
        *committing = true;
        db.commit(txn, &ops)
    }

    fn recover(&self) -> Result<()> {
        let mut slot = write_lock(&self.slot);
        let full = slot.as_ref().is_some_and(|h| h.checkpoint_failed());
        Self::release(&mut slot, 5_000);
        *slot = Some(self.reopen(full)?);
        Ok(())
    }

    fn poison_on_failure(&self) -> bool {
        true
    }

    fn is_read_only(&self) -> bool {
        read_lock(&self.slot)
            .as_ref()
            .is_some_and(|h| h.is_read_only())
    }

    fn lock(
        &self,
        session: Option<&str>,
        lock_key: &str,
        timeout: Duration,
    ) -> Result<Option<LockGuard<'_>>> {
        FileLocks::guard(self.locks.as_ref(), session, lock_key, timeout)
    }

    fn size(&self) -> u64 {
        fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Rewrites the file compactly: a snapshot copied into a new file, which replaces
    /// the old one. Needs the file to itself (no other process, no transaction).
    fn compact(&self) -> Result<()> {
        if self.is_read_only() {
            return Err(Error::ReadOnly);
        }
        if self.locks.as_ref().is_some_and(|l| l.any_held()) {
            return Err(Error::NotAlone);
        }
        let mut slot = write_lock(&self.slot);
        if slot.is_none() {
            return Err(Error::Poisoned);
        }
        // Only our handle may remain before the file is reopened.
        Self::release(&mut slot, 10_000);
        let path = self.path.clone();
        // The file is replaced, so no other process may have it open: in shared mode
        // they would go on writing to the old file. An exclusive open proves it (and
        // keeps them out until the new file is in place).
        let alone = match Self::open_redb(&path, &self.opts, false, Concurrency::Exclusive) {
            Ok(db) => Handle::read_write(db),
            Err(e) => {
                // Reopened for the caller; if that fails too, `handle` tries again on
                // the next call.
                *slot = self.open_handle().ok();
                return Err(match e {
                    Error::Locked(_) => Error::NotAlone,
                    other => other,
                });
            }
        };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".compact-tmp");
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        // The new file keeps the mode of the one it replaces.
        let copied = file_mode(&path).and_then(|mode| copy_snapshot(&alone, &tmp, mode));
        let swapped = match copied {
            Ok(()) => fs::rename(&tmp, &path)
                .and_then(|()| sync_dir(&path))
                .map_err(Error::from),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        };
        drop(alone);
        *slot = Some(self.open_handle()?);
        if let Some(locks) = &self.locks {
            locks.reopen(&path)?;
        }
        swapped
    }

    /// A compaction that could not reopen the file leaves no handle.
    fn lost(&self) -> bool {
        read_lock(&self.slot).is_none()
    }
}

impl FileRows {
    /// Syncs every journaled commit into the file (a store just created is then a
    /// whole file on its own).
    pub(crate) fn checkpoint(&self) {
        if let Some(handle) = read_lock(&self.slot).as_ref() {
            handle.checkpoint();
        }
    }
}

impl Drop for FileRows {
    /// Waits (briefly) for the checkpoint thread to let the handle go, so the file is
    /// closed, and its lock released, when the store is.
    fn drop(&mut self) {
        let slot = self.slot.get_mut().unwrap_or_else(|e| e.into_inner());
        Self::release(slot, 5_000);
    }
}

/// Turns a range of byte keys into one of 32-byte data keys.
/// A range of data row keys as redb takes it.
type DataRange<'a> = (Bound<&'a [u8; 32]>, Bound<&'a [u8; 32]>);

fn data_bounds(range: Range<'_>) -> Result<DataRange<'_>> {
    fn key(k: &[u8]) -> Result<&[u8; 32]> {
        <&[u8; 32]>::try_from(k)
            .map_err(|_| Error::Corrupt("a data row key is not 32 bytes".into()))
    }
    fn one(b: Bound<&[u8]>) -> Result<Bound<&[u8; 32]>> {
        Ok(match b {
            Bound::Included(k) => Bound::Included(key(k)?),
            Bound::Excluded(k) => Bound::Excluded(key(k)?),
            Bound::Unbounded => Bound::Unbounded,
        })
    }
    Ok((one(range.0)?, one(range.1)?))
}

/// Turns a range of byte keys into one of meta record names.
fn meta_bounds(range: Range<'_>) -> Result<(Bound<&str>, Bound<&str>)> {
    fn name(k: &[u8]) -> Result<&str> {
        std::str::from_utf8(k).map_err(|_| Error::Corrupt("a meta name is not UTF-8".into()))
    }
    fn one(b: Bound<&[u8]>) -> Result<Bound<&str>> {
        Ok(match b {
            Bound::Included(k) => Bound::Included(name(k)?),
            Bound::Excluded(k) => Bound::Excluded(name(k)?),
            Bound::Unbounded => Bound::Unbounded,
        })
    }
    Ok((one(range.0)?, one(range.1)?))
}

/// The three tables of a transaction, borrowed; a table a file lacks (an old store
/// without an expiry index) reads as empty. Reads of snapshots and of write
/// transactions alike go through it.
pub(crate) struct Tables<'a, D, M, E> {
    data: Option<&'a D>,
    meta: Option<&'a M>,
    expiry: Option<&'a E>,
}

impl<'a, D, M, E> Tables<'a, D, M, E>
where
    D: ReadableTable<RowKey, &'static [u8]>,
    M: ReadableTable<&'static str, &'static [u8]>,
    E: ReadableTable<&'static [u8], ()>,
{
    fn get(self, table: Table, key: &[u8]) -> Result<Option<Found<'a>>> {
        Ok(match table {
            Table::Data => match (self.data, <&[u8; 32]>::try_from(key)) {
                (Some(t), Ok(k)) => t.get(k)?.map(Found::Page),
                _ => None,
            },
            Table::Meta => match (self.meta, std::str::from_utf8(key)) {
                (Some(t), Ok(k)) => t.get(k)?.map(Found::Page),
                _ => None,
            },
            Table::Expiry => match self.expiry {
                Some(t) => t.get(key)?.map(|_| Found::Owned(Vec::new())),
                None => None,
            },
        })
    }

    fn scan(self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        match table {
            Table::Data => {
                if let Some(t) = self.data {
                    for row in t.range::<&[u8; 32]>(data_bounds(range)?)? {
                        let (k, v) = row?;
                        if !visit(k.value(), v.value())? {
                            break;
                        }
                    }
                }
            }
            Table::Meta => {
                if let Some(t) = self.meta {
                    for row in t.range::<&str>(meta_bounds(range)?)? {
                        let (k, v) = row?;
                        if !visit(k.value().as_bytes(), v.value())? {
                            break;
                        }
                    }
                }
            }
            Table::Expiry => {
                if let Some(t) = self.expiry {
                    for row in t.range::<&[u8]>(range)? {
                        let (k, _) = row?;
                        if !visit(k.value(), &[])? {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn len(self, table: Table) -> Result<u64> {
        Ok(match table {
            Table::Data => self.data.map(|t| t.len()).transpose()?,
            Table::Meta => self.meta.map(|t| t.len()).transpose()?,
            Table::Expiry => self.expiry.map(|t| t.len()).transpose()?,
        }
        .unwrap_or(0))
    }
}

/// Opens a table of a read transaction; `None` when the file has no such table. A
/// table of another type (a redb file that is not ours) is not ours either.
fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(
            redb::TableError::TableDoesNotExist(_) | redb::TableError::TableTypeMismatch { .. },
        ) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) type DataTable = redb::ReadOnlyTable<RowKey, &'static [u8]>;
pub(crate) type MetaTable = redb::ReadOnlyTable<&'static str, &'static [u8]>;
pub(crate) type ExpiryTable = redb::ReadOnlyTable<&'static [u8], ()>;

impl Snapshot {
    /// A snapshot of `txn`: the data table is opened now (every point get needs it),
    /// the meta and expiry tables on first use.
    pub(crate) fn open(epoch: u64, txn: redb::ReadTransaction) -> Result<Self> {
        Ok(Self {
            epoch,
            data: open_read(&txn, DATA)?,
            meta: std::sync::OnceLock::new(),
            expiry: std::sync::OnceLock::new(),
            expiry_empty: std::sync::OnceLock::new(),
            txn,
        })
    }

    /// The tables a read of `table` needs.
    fn tables(&self, table: Table) -> Result<Tables<'_, DataTable, MetaTable, ExpiryTable>> {
        let meta = if table == Table::Meta {
            if self.meta.get().is_none() {
                let opened = open_read(&self.txn, META)?;
                // A file whose meta table is ours must have its data table too.
                if opened.is_some() && self.data.is_none() {
                    return Err(Error::Corrupt("the data table is missing".into()));
                }
                let _ = self.meta.set(opened);
            }
            self.meta.get().and_then(Option::as_ref)
        } else {
            None
        };
        let expiry = if table == Table::Expiry {
            if self.expiry.get().is_none() {
                let _ = self.expiry.set(open_read(&self.txn, EXPIRY)?);
            }
            self.expiry.get().and_then(Option::as_ref)
        } else {
            None
        };
        Ok(Tables {
            data: self.data.as_ref(),
            meta,
            expiry,
        })
    }
}

impl RowRead for Snapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        self.tables(table)?.get(table, key)
    }
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        self.tables(table)?.scan(table, range, visit)
    }
    fn len(&self, table: Table) -> Result<u64> {
        self.tables(table)?.len(table)
    }
    /// Whether the expiry index is empty is looked up once per snapshot (counting
    /// opens rows only when it is not); a point get never asks.
    fn is_empty(&self, table: Table) -> Result<bool> {
        if table != Table::Expiry {
            return Ok(self.len(table)? == 0);
        }
        if let Some(&known) = self.expiry_empty.get() {
            return Ok(known);
        }
        let known = self.len(table)? == 0;
        Ok(*self.expiry_empty.get_or_init(|| known))
    }
}

/// A redb write transaction with the three tables open.
pub(crate) struct RedbWrite<'t> {
    data: redb::Table<'t, RowKey, &'static [u8]>,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    expiry: redb::Table<'t, &'static [u8], ()>,
}

type WriteTables<'a, 't> = Tables<
    'a,
    redb::Table<'t, RowKey, &'static [u8]>,
    redb::Table<'t, &'static str, &'static [u8]>,
    redb::Table<'t, &'static [u8], ()>,
>;

impl<'t> RedbWrite<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Self {
            data: txn.open_table(DATA)?,
            meta: txn.open_table(META)?,
            expiry: txn.open_table(EXPIRY)?,
        })
    }

    fn tables(&self) -> WriteTables<'_, 't> {
        Tables {
            data: Some(&self.data),
            meta: Some(&self.meta),
            expiry: Some(&self.expiry),
        }
    }
}

impl RowRead for RedbWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        self.tables().get(table, key)
    }
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        self.tables().scan(table, range, visit)
    }
    fn len(&self, table: Table) -> Result<u64> {
        self.tables().len(table)
    }
    fn is_empty(&self, table: Table) -> Result<bool> {
        Ok(self.len(table)? == 0)
    }
}

impl RowWrite for RedbWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        match table {
            Table::Data => {
                let k = <&[u8; 32]>::try_from(key)
                    .map_err(|_| Error::Corrupt("a data row key is not 32 bytes".into()))?;
                self.data.insert(k, value)?;
            }
            Table::Meta => {
                let k = std::str::from_utf8(key)
                    .map_err(|_| Error::Corrupt("a meta name is not UTF-8".into()))?;
                self.meta.insert(k, value)?;
            }
            Table::Expiry => {
                self.expiry.insert(key, ())?;
            }
        }
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        match table {
            Table::Data => {
                if let Ok(k) = <&[u8; 32]>::try_from(key) {
                    self.data.remove(k)?;
                }
            }
            Table::Meta => {
                if let Ok(k) = std::str::from_utf8(key) {
                    self.meta.remove(k)?;
                }
            }
            Table::Expiry => {
                self.expiry.remove(key)?;
            }
        }
        Ok(())
    }

    fn replace(
        &mut self,
        table: Table,
        key: &[u8],
        value: &[u8],
        old: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        match <&[u8; 32]>::try_from(key) {
            Ok(k) if table == Table::Data => {
                let before = self.data.insert(k, value)?;
                old(before.as_ref().map(|v| v.value()));
                Ok(())
            }
            _ => {
                old(self.get(table, key)?.as_deref());
                self.put(table, key, value)
            }
        }
    }

    fn remove(
        &mut self,
        table: Table,
        key: &[u8],
        old: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        match <&[u8; 32]>::try_from(key) {
            Ok(k) if table == Table::Data => {
                let before = self.data.remove(k)?;
                old(before.as_ref().map(|v| v.value()));
                Ok(())
            }
            _ => {
                old(self.get(table, key)?.as_deref());
                self.delete(table, key)
            }
        }
    }

    fn delete_range(&mut self, table: Table, range: Range<'_>) -> Result<()> {
        match table {
            Table::Data => self
                .data
                .retain_in::<&[u8; 32], _>(data_bounds(range)?, |_, _| false)?,
            Table::Meta => self
                .meta
                .retain_in::<&str, _>(meta_bounds(range)?, |_, _| false)?,
            Table::Expiry => self.expiry.retain_in::<&[u8], _>(range, |_, _| false)?,
        }
        Ok(())
    }
}

fn file_mode(path: &Path) -> Result<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(PRIVATE_MODE)
    }
}

/// Copies a read snapshot of `db` into a new redb file at `dest`, created with `mode`.
fn copy_snapshot(db: &Handle, dest: &Path, mode: u32) -> Result<()> {
    let snapshot = Snapshot::open(0, db.begin_read()?)?;
    FileRows::write_new(dest, mode, &snapshot)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
        _ => fs::File::open(".")?.sync_all(),
    }
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
