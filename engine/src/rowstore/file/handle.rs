//! The open redb file and its cached read snapshot; opening and containing redb.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::{Database, ReadableDatabase};

use super::journal::{self, Journal, Ops};
use super::{DataTable, ExpiryTable, MetaTable};
use crate::error::{Error, Result};
use crate::guards::{lock, read_lock, write_lock};

pub(crate) const REDB_MAGIC: &[u8] = b"redb";

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
    /// True when other processes may write the file: the snapshot is then not cached,
    /// since their commits do not go through this handle (see [`Handle::snapshot`]).
    shared: AtomicBool,
    /// The commit journal, when this process holds the file read-write alone.
    journal: Option<Mutex<Journal>>,
}

pub(crate) enum HandleKind {
    ReadWrite(Database),
    ReadOnly(redb::ReadOnlyDatabase),
    /// A file that needed crash recovery, recovered in memory (see `recover.rs`):
    /// read-only, and the file itself is not written.
    Recovered(Database),
}

/// A read snapshot: one redb read transaction with its tables open.
pub(crate) struct Snapshot {
    pub(crate) epoch: u64,
    /// The data table (opened with the snapshot: every get needs it).
    pub(crate) data: Option<DataTable>,
    /// The meta and expiry tables, opened on first use.
    pub(crate) meta: std::sync::OnceLock<Option<MetaTable>>,
    pub(crate) expiry: std::sync::OnceLock<Option<ExpiryTable>>,
    /// Whether the expiry index is empty, once looked up.
    pub(crate) expiry_empty: std::sync::OnceLock<bool>,
    /// The read transaction the tables belong to.
    pub(crate) txn: redb::ReadTransaction,
}

impl Handle {
    pub(crate) fn new(kind: HandleKind) -> Self {
        Self {
            kind: Some(kind),
            snapshot: RwLock::new(None),
            epoch: AtomicU64::new(0),
            shared: AtomicBool::new(false),
            journal: None,
        }
    }

    /// Commits from now on go through the journal beside the store file at `store`
    /// (see `journal.rs`); the handle must be read-write and hold the file alone.
    pub(crate) fn start_journal(
        &mut self,
        store: &Path,
        backend: Option<&super::backend::BackendFactory>,
    ) -> Result<()> {
        if let Some(HandleKind::ReadWrite(db)) = &self.kind {
            self.journal = Some(Mutex::new(Journal::start(store, db, backend)?));
        }
        Ok(())
    }

    /// True when a checkpoint of this handle's journal failed (the reopen then applies
    /// the whole journal again).
    pub(crate) fn checkpoint_failed(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| lock(j).checkpoint_failed())
    }

    /// True when commits go through the journal.
    pub(crate) fn journaled(&self) -> bool {
        self.journal.is_some()
    }

    pub(crate) fn read_write(db: Database) -> Self {
        Self::new(HandleKind::ReadWrite(db))
    }

    pub(crate) fn read_only(db: redb::ReadOnlyDatabase) -> Self {
        Self::new(HandleKind::ReadOnly(db))
    }

    /// A read-only view of a file that needs crash recovery, recovered in memory
    /// without writing the file.
    pub(crate) fn recovered(path: &Path, cache_size: usize) -> Result<Self> {
        let backend = super::recover::CowBackend::open(path)?;
        let db = redb::Builder::new()
            .set_cache_size(cache_size)
            .create_with_backend(backend)
            .map_err(|e| map_open_error(e, path))?;
        Ok(Self::new(HandleKind::Recovered(db)))
    }

    /// Says whether other processes may write the file.
    pub(crate) fn set_shared(&self, shared: bool) {
        self.shared.store(shared, Ordering::Release);
    }

    pub(crate) fn is_read_only(&self) -> bool {
        matches!(
            self.kind,
            Some(HandleKind::ReadOnly(_) | HandleKind::Recovered(_))
        )
    }

    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction> {
        Ok(match &self.kind {
            Some(HandleKind::ReadWrite(db) | HandleKind::Recovered(db)) => db.begin_read()?,
            Some(HandleKind::ReadOnly(db)) => db.begin_read()?,
            // Only empty while being dropped.
            None => return Err(Error::Poisoned),
        })
    }

    pub(crate) fn begin_write(&self) -> Result<redb::WriteTransaction> {
        match &self.kind {
            Some(HandleKind::ReadWrite(db)) => Ok(db.begin_write()?),
            Some(HandleKind::ReadOnly(_) | HandleKind::Recovered(_)) => Err(Error::ReadOnly),
            None => Err(Error::Poisoned),
        }
    }

    /// Commits `txn` (begun on this handle; its changes recorded in `ops` when the
    /// handle is [`Handle::journaled`]) and retires the cached read snapshot, so that
    /// reads from now on see the commit. Writers must commit through here.
    pub(crate) fn commit(&self, txn: redb::WriteTransaction, ops: &Ops) -> Result<()> {
        let result = match &self.journal {
            Some(journal) => lock(journal).commit(txn, ops),
            None => txn.commit().map(|()| false).map_err(Error::from),
        };
        // Even a failed commit retires the snapshot: the handle is about to be reopened.
        let mut slot = write_lock(&self.snapshot);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let retired = slot.take();
        drop(slot);
        drop(retired);
        if result? {
            self.checkpoint();
        }
        Ok(())
    }

    /// Syncs the journaled commits into the file and empties the journal, if it holds
    /// any. A failure leaves the journal as it is, for the next try or the next open.
    pub(crate) fn checkpoint(&self) {
        let (Some(journal), Some(HandleKind::ReadWrite(db))) = (&self.journal, &self.kind) else {
            return;
        };
        if !lock(journal).dirty() {
            return;
        }
        // redb's write lock first, then the journal: the order of every commit.
        if let Ok(txn) = db.begin_write() {
            let _ = lock(journal).checkpoint(txn);
        }
    }

    /// Wraps this handle for sharing; a journaled one gets a thread that checkpoints
    /// it every [`journal::CHECKPOINT_EVERY`] while it holds commits not in the file,
    /// and ends with the handle.
    pub(crate) fn shared(self) -> Arc<Self> {
        let journaled = self.journaled();
        let handle = Arc::new(self);
        if journaled {
            let weak = Arc::downgrade(&handle);
            let _ = std::thread::Builder::new()
                .name("sealkv-checkpoint".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(journal::CHECKPOINT_EVERY);
                        match weak.upgrade() {
                            Some(handle) => handle.checkpoint(),
                            None => return,
                        }
                    }
                });
        }
        handle
    }

    /// A snapshot of the data table that sees every commit finished before this call.
    ///
    /// When only this process writes the file (exclusive mode), the snapshot is cached
    /// until the next commit through this handle. In shared mode another process may
    /// commit at any moment, and nothing tells this one short of asking redb, which a
    /// new read transaction does: each call takes a fresh one.
    pub(crate) fn snapshot(&self) -> Result<Arc<Snapshot>> {
        if self.shared.load(Ordering::Acquire) {
            return self.fresh_snapshot(0).map(Arc::new);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(snap) = read_lock(&self.snapshot).as_ref()
            && snap.epoch == epoch
        {
            return Ok(snap.clone());
        }
        let snap = Arc::new(self.fresh_snapshot(epoch)?);
        let mut slot = write_lock(&self.snapshot);
        // Cached only if no commit finished meanwhile; it is still right for this call,
        // which began before that commit finished.
        if self.epoch.load(Ordering::Acquire) == epoch {
            *slot = Some(snap.clone());
        }
        Ok(snap)
    }
}

impl Handle {
    fn fresh_snapshot(&self, epoch: u64) -> Result<Snapshot> {
        Snapshot::open(epoch, self.begin_read()?)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // After redb panicked on a damaged page (contained, see `contain`), its internal
        // locks are poisoned and its own drop panics too. The unwinding still drops the
        // file, releasing its lock; the panic must not reach the caller.
        let snapshot = write_lock(&self.snapshot).take();
        let journal = self.journal.take();
        let kind = self.kind.take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            drop(snapshot);
            // A clean close persists the journaled commits in the file and removes the
            // journal, before the file (and its lock) is let go.
            if let (Some(journal), Some(HandleKind::ReadWrite(db))) = (journal, &kind) {
                let journal = journal.into_inner().unwrap_or_else(|e| e.into_inner());
                journal.close(db);
            }
            drop(kind);
        }));
    }
}

/// A view of a file that writes nothing: a read-only open (in the shared mode, which
/// follows any writer's commits), or, for a file that needs crash recovery (which a
/// read-only open refuses), a recovery in memory over the file.
///
/// A file with journaled commits not yet in it (its last writer crashed) is viewed
/// through the recovery in memory too, with the journal replayed into it.
pub(crate) fn probe_view(path: &Path, cache_size: usize) -> Result<Handle> {
    let handle = match redb::Builder::new()
        .set_cache_size(cache_size)
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .open_read_only(path)
    {
        // Wrapped at once: redb's drop can panic on a damaged file.
        Ok(ro) => Handle::read_only(ro),
        Err(redb::DatabaseError::RepairAborted) => Handle::recovered(path, cache_size)?,
        Err(e) => return Err(map_open_error(e, path)),
    };
    let file = journal::stored_in(&handle.begin_read()?)?;
    let records = journal::pending_for(path, file)?;
    if records.is_empty() {
        return Ok(handle);
    }
    let handle = if matches!(handle.kind, Some(HandleKind::Recovered(_))) {
        handle
    } else {
        drop(handle);
        Handle::recovered(path, cache_size)?
    };
    if let Some(HandleKind::Recovered(db)) = &handle.kind {
        journal::apply_in_memory(db, &records)?;
    }
    Ok(handle)
}

pub(crate) fn map_open_error(e: redb::DatabaseError, path: &Path) -> Error {
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
pub(crate) fn precheck(path: &Path) -> Result<()> {
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

pub(crate) const PANIC_PREFIX: &str = "its structure cannot be read";

/// Turns a panic inside `f` (from redb reading a damaged file) into [`Error::Corrupt`].
pub(crate) fn contain<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::Corrupt(format!(
            "{PANIC_PREFIX} (redb failed on a damaged page)"
        )))
    })
}
