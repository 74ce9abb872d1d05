//! The commit journal: one small append and one `fdatasync` per durable commit.
//!
//! A durable redb commit writes every page the transaction dirtied, then syncs the
//! file. Rows land at random places in the B-tree (their keys are tags), so a batch
//! of 812 pre-keys rewrites hundreds of leaves: about 3 MB written and synced for
//! 150 KB of rows. A process that holds the file alone (an exclusive opener, or the
//! owner of the shared mode) therefore commits differently:
//!
//! 1. the transaction's changes (puts, deletes, range deletes: the rows as stored, so
//!    sealed values and tags only) are appended to `<store>.journal` as one record
//!    with a sequence number and a checksum, and the journal is synced;
//! 2. only then is the redb transaction committed with `Durability::None` (the pages
//!    stay in memory and the page cache, nothing is synced), so no reader sees a
//!    commit before it is durable;
//! 3. every [`CHECKPOINT_BYTES`] of journal, within [`CHECKPOINT_EVERY`] of a commit
//!    (a thread per open file), and when the file is closed, one durable redb commit
//!    persists all of them; the journal is then emptied (and removed on a clean close,
//!    so a closed store is one file again, and a copy of a live file taken a second
//!    after its last commit has every commit).
//!
//! The sequence number of the last journaled commit is written in the same redb
//! transaction (table `sealkv_journal`), so after a crash redb comes back at the last
//! durable commit with the sequence it had reached, and opening the file replays the
//! journal's later records, in order, in one durable commit. The journal names the
//! file it belongs to (a random id kept in both), and its records must follow the
//! file's sequence without a gap: a journal beside a file it does not follow (the file
//! was replaced by an older copy, say) is refused with a clear error and left as it
//! is. A torn last record (a crash during the append) fails its checksum and was
//! never acknowledged: replay stops there.
//!
//! A read-only open of a file with a journal to replay replays it in memory (over the
//! crash-recovery view of `recover.rs`), so it never serves an older state either.

use std::fs::{self, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};

use super::RedbWrite;
use super::backend::BackendFactory;
use crate::error::{Error, Result};
use crate::rowstore::{Found, Range, RowRead, RowWrite, Table, Visit};

/// How long after a commit its pages are synced to the file at the latest.
pub(crate) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The sequence number and id of a file's journal, kept in the file.
pub(crate) const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("sealkv_journal");
const SEQ: &str = "seq";
const ID: &str = "id";

/// First bytes of a journal: magic, then the 16-byte id of the file it belongs to.
const MAGIC: &[u8; 16] = b"sealkv journal 1";
const HEADER: u64 = 32;
/// Bytes of journal after which a commit also checkpoints (one durable redb commit).
pub(crate) const CHECKPOINT_BYTES: u64 = 8 << 20;
/// Largest journal read back: a journal holds at most `CHECKPOINT_BYTES` plus one
/// record smaller than that; anything far larger is not one of ours.
const MAX_JOURNAL: u64 = 1 << 30;

/// Where the journal of the store file at `store` lives.
pub(crate) fn path_for(store: &Path) -> PathBuf {
    let mut p = store.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

/// The changes of one transaction, encoded as a journal record's body.
#[derive(Default)]
pub(crate) struct Ops(Vec<u8>);

const PUT: u8 = 1;
const DELETE: u8 = 2;
const DELETE_RANGE: u8 = 3;

impl Ops {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn table(t: Table) -> u8 {
        match t {
            Table::Data => 0,
            Table::Meta => 1,
            Table::Expiry => 2,
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }

    fn bound(&mut self, b: Bound<&[u8]>) {
        match b {
            Bound::Unbounded => self.0.push(0),
            Bound::Included(k) => {
                self.0.push(1);
                self.bytes(k);
            }
            Bound::Excluded(k) => {
                self.0.push(2);
                self.bytes(k);
            }
        }
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.0.extend_from_slice(&[PUT, Self::table(table)]);
        self.bytes(key);
        self.bytes(value);
    }

    fn delete(&mut self, table: Table, key: &[u8]) {
        self.0.extend_from_slice(&[DELETE, Self::table(table)]);
        self.bytes(key);
    }

    fn delete_range(&mut self, table: Table, range: Range<'_>) {
        self.0
            .extend_from_slice(&[DELETE_RANGE, Self::table(table)]);
        self.bound(range.0);
        self.bound(range.1);
    }
}

/// Reads a record body back, applying each change to `w`.
fn apply(body: &[u8], w: &mut dyn RowWrite) -> Result<()> {
    fn bad() -> Error {
        Error::Corrupt("a journal record cannot be read".into())
    }
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8]> {
            if self.0.len() < n {
                return Err(bad());
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn byte(&mut self) -> Result<u8> {
            Ok(self.take(1)?[0])
        }
        fn bytes(&mut self) -> Result<&'a [u8]> {
            let len = u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| bad())?);
            self.take(len as usize)
        }
        fn bound(&mut self) -> Result<Bound<&'a [u8]>> {
            Ok(match self.byte()? {
                0 => Bound::Unbounded,
                1 => Bound::Included(self.bytes()?),
                2 => Bound::Excluded(self.bytes()?),
                _ => return Err(bad()),
            })
        }
    }
    let mut c = Cursor(body);
    while !c.0.is_empty() {
        let op = c.byte()?;
        let table = match c.byte()? {
            0 => Table::Data,
            1 => Table::Meta,
            2 => Table::Expiry,
            _ => return Err(bad()),
        };
        match op {
            PUT => {
                let key = c.bytes()?;
                let value = c.bytes()?;
                w.put(table, key, value)?;
            }
            DELETE => w.delete(table, c.bytes()?)?,
            DELETE_RANGE => {
                let from = c.bound()?;
                let to = c.bound()?;
                w.delete_range(table, (from, to))?;
            }
            _ => return Err(bad()),
        }
    }
    Ok(())
}

/// A write transaction that records each change it makes into `ops`.
pub(crate) struct Logged<'w, 't> {
    pub(crate) inner: &'w mut RedbWrite<'t>,
    pub(crate) ops: &'w mut Ops,
}

impl RowRead for Logged<'_, '_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        self.inner.get(table, key)
    }
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        self.inner.scan(table, range, visit)
    }
    fn len(&self, table: Table) -> Result<u64> {
        self.inner.len(table)
    }
    fn is_empty(&self, table: Table) -> Result<bool> {
        self.inner.is_empty(table)
    }
}

impl RowWrite for Logged<'_, '_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.put(table, key, value)?;
        self.ops.put(table, key, value);
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.inner.delete(table, key)?;
        self.ops.delete(table, key);
        Ok(())
    }
    fn replace(
        &mut self,
        table: Table,
        key: &[u8],
        value: &[u8],
        old: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        self.inner.replace(table, key, value, old)?;
        self.ops.put(table, key, value);
        Ok(())
    }
    fn remove(
        &mut self,
        table: Table,
        key: &[u8],
        old: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        self.inner.remove(table, key, old)?;
        self.ops.delete(table, key);
        Ok(())
    }
    fn delete_range(&mut self, table: Table, range: Range<'_>) -> Result<()> {
        self.inner.delete_range(table, range)?;
        self.ops.delete_range(table, range);
        Ok(())
    }
}

/// One record read back: its sequence number and body.
pub(crate) struct Record {
    seq: u64,
    body: Vec<u8>,
}

/// The checksum of a record: its sequence number and body, 16 bytes of BLAKE3.
fn checksum(seq: u64, body: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&seq.to_le_bytes()).update(body);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// The storage a journal lives in: a file beside the store (redb's file backend, which
/// takes no lock), or, for a store a test opened through a storage backend, a backend
/// the same factory makes for the journal's path.
pub(crate) struct Io {
    backend: Box<dyn StorageBackend>,
    /// The journal's path, when it is a real file (removed when empty); `None` for a
    /// test's backend (emptied instead: an empty journal is no journal).
    file: Option<PathBuf>,
}

impl Io {
    /// The journal beside `store`, if there is one (`create`: made new and empty).
    pub(crate) fn open(
        store: &Path,
        backend: Option<&BackendFactory>,
        create: bool,
    ) -> Result<Option<Self>> {
        let path = path_for(store);
        if let Some(factory) = backend {
            let backend = factory(&path, create)?;
            if create {
                backend.set_len(0)?;
            } else if backend.len()? == 0 {
                return Ok(None);
            }
            return Ok(Some(Self {
                backend,
                file: None,
            }));
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if create {
            options.create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, super::PRIVATE_MODE);
        }
        let file = match options.open(&path) {
            Ok(file) => file,
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // A journal this process may not write: read it at least (a read-only open).
            Err(e) if !create && e.kind() == io::ErrorKind::PermissionDenied => {
                OpenOptions::new().read(true).open(&path)?
            }
            Err(e) => return Err(e.into()),
        };
        let backend = redb::backends::FileBackend::new(file)
            .map_err(|e| Error::from(io::Error::other(e.to_string())))?;
        Ok(Some(Self {
            backend: Box::new(backend),
            file: Some(path),
        }))
    }

    fn bytes(&self) -> Result<Vec<u8>> {
        let len = self.backend.len()?;
        if len > MAX_JOURNAL {
            return Err(Error::Corrupt(format!(
                "the journal beside the store holds {len} bytes, more than a sealkv journal \
                 ever does ({MAX_JOURNAL}); nothing was changed: move it away to open the store"
            )));
        }
        let mut bytes = vec![0u8; len as usize];
        self.backend.read(0, &mut bytes)?;
        Ok(bytes)
    }

    /// Removes the journal (a real file), or empties it (a test's backend).
    fn remove(&self) -> io::Result<()> {
        match &self.file {
            // Gone already: another opener replayed it first (the multi-writer mode).
            Some(path) => match fs::remove_file(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
            None => {
                self.backend.set_len(0)?;
                self.backend.sync_data()
            }
        }
    }
}

/// The journal beside `store` (through `backend` if given): its id and the records
/// up to the first one that is torn or fails its checksum. `None` when there is no
/// journal. A file that is not a journal is an error (left as it is).
fn read(store: &Path, backend: Option<&BackendFactory>) -> Result<Option<Journaled>> {
    let Some(io) = Io::open(store, backend, false)? else {
        return Ok(None);
    };
    let bytes = io.bytes()?;
    if bytes.len() < HEADER as usize || bytes[..HEADER as usize].iter().all(|&b| b == 0) {
        // A journal whose header did not reach the disk (a crash while it was made):
        // records are written only once the header is synced, so it holds none.
        return Ok(Some(Journaled {
            io,
            id: [0; 16],
            records: Vec::new(),
        }));
    }
    if &bytes[..16] != MAGIC {
        return Err(Error::Corrupt(format!(
            "{} is not a journal this build reads; nothing was changed: move it away to \
             open the store",
            path_for(store).display()
        )));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[16..32]);
    let mut records = Vec::new();
    let mut at = HEADER as usize;
    while let Some((seq, body, end)) = record_at(&bytes, at) {
        records.push(Record {
            seq,
            body: body.to_vec(),
        });
        at = end;
    }
    // What follows the last whole record is a torn append (a crash during it), unless a
    // whole record with a later sequence number lies beyond it: then a record in the
    // middle is damaged, and the records after it were acknowledged.
    let last = records.last().map(|r| r.seq);
    if (at + 1..bytes.len())
        .any(|from| record_at(&bytes, from).is_some_and(|(seq, _, _)| last.is_none_or(|l| seq > l)))
    {
        return Err(Error::Corrupt(format!(
            "the journal {} is damaged before its last records; nothing was changed",
            path_for(store).display()
        )));
    }
    Ok(Some(Journaled { io, id, records }))
}

/// The whole record at `at`, if one is there: its sequence number, body and end.
fn record_at(bytes: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    // len (4) + seq (8) + body + checksum (16)
    let head = bytes.get(at..at.checked_add(12)?)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let seq = u64::from_le_bytes(head[4..12].try_into().ok()?);
    let body_end = (at + 12).checked_add(len)?;
    let end = body_end.checked_add(16)?;
    let body = bytes.get(at + 12..body_end)?;
    let sum = bytes.get(body_end..end)?;
    (checksum(seq, body) == sum).then_some((seq, body, end))
}

/// A journal as read: where it is, its id and its whole records.
struct Journaled {
    io: Io,
    id: [u8; 16],
    records: Vec<Record>,
}

/// The id and last sequence number the file records (`None`: no journal yet).
fn stored(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<([u8; 16], u64)>> {
    let id = table.get(ID)?.map(|v| v.value().to_vec());
    let seq = table.get(SEQ)?.map(|v| v.value().to_vec());
    match (id, seq) {
        (None, _) => Ok(None),
        (Some(id), seq) => {
            let id: [u8; 16] = id
                .try_into()
                .map_err(|_| Error::Corrupt("the journal id is not 16 bytes".into()))?;
            let seq =
                match seq {
                    None => 0,
                    Some(s) => u64::from_le_bytes(s.try_into().map_err(|_| {
                        Error::Corrupt("the journal sequence is not 8 bytes".into())
                    })?),
                };
            Ok(Some((id, seq)))
        }
    }
}

fn foreign(path: &Path) -> Error {
    Error::Corrupt(format!(
        "the journal {} holds commits that do not follow this file (was the file replaced \
         by another copy?); nothing was changed: move the journal away to open the file as \
         it is",
        path.display()
    ))
}

/// The records of `journal` to apply to a file at `file` (its journal id and
/// sequence): those after the file's sequence, checked to follow it without a gap, or
/// with `full`, every record (see [`replay`]).
fn pending(
    path: &Path,
    id: [u8; 16],
    mut records: Vec<Record>,
    file: Option<([u8; 16], u64)>,
    full: bool,
) -> Result<Vec<Record>> {
    // A file without a journal id, or with another one, has no commits in this journal.
    let Some((_, seq)) = file.filter(|&(file_id, _)| file_id == id) else {
        return if records.is_empty() {
            Ok(records)
        } else {
            Err(foreign(path))
        };
    };
    let first_later = records
        .iter()
        .position(|r| r.seq > seq)
        .unwrap_or(records.len());
    for (i, r) in records[first_later..].iter().enumerate() {
        if r.seq != seq + 1 + i as u64 {
            return Err(foreign(path));
        }
    }
    if !full {
        records.drain(..first_later);
    }
    Ok(records)
}

/// Applies `records` to `txn` and records the last one's sequence number.
fn apply_all(txn: &redb::WriteTransaction, records: &[Record]) -> Result<()> {
    {
        let mut w = RedbWrite::open(txn)?;
        for r in records {
            apply(&r.body, &mut w)?;
        }
    }
    if let Some(last) = records.last() {
        txn.open_table(JOURNAL)?
            .insert(SEQ, last.seq.to_le_bytes().as_slice())?;
    }
    Ok(())
}

/// Applies the journal beside `store` to `db` in one commit; the journal, if there
/// was one, for the caller to remove.
fn apply_journal(
    store: &Path,
    db: &Database,
    backend: Option<&BackendFactory>,
    full: bool,
) -> Result<Option<Io>> {
    let Some(journal) = read(store, backend)? else {
        return Ok(None);
    };
    let txn = db.begin_write()?;
    let file = stored(&txn.open_table(JOURNAL)?)?;
    let Journaled { io, id, records } = journal;
    let records = pending(&path_for(store), id, records, file, full)?;
    if records.is_empty() {
        txn.abort()?;
    } else {
        apply_all(&txn, &records)?;
        txn.commit()?;
    }
    Ok(Some(io))
}

/// Replays the journal beside the store file at `store` into `db` (opened read-write,
/// before anything reads it), in one durable commit, then removes the journal.
/// Nothing to do without a journal.
///
/// `full` (this process's checkpoint of the file failed) applies every record of the
/// journal, not only those after the file's sequence: the file's pages for the earlier
/// ones may never have reached the disk. Applied in order over a state that already
/// holds them, the records leave it as it is, and write every row they touch again.
pub(crate) fn replay(
    store: &Path,
    db: &Database,
    backend: Option<&BackendFactory>,
    full: bool,
) -> Result<()> {
    if let Some(io) = apply_journal(store, db, backend, full)? {
        // Every record is in the file now: the journal can go.
        io.remove()?;
    }
    Ok(())
}

/// The records of the journal beside `store` that a file at `file` (journal id and
/// sequence) lacks; an error when the journal does not follow the file.
pub(crate) fn pending_for(store: &Path, file: Option<([u8; 16], u64)>) -> Result<Vec<Record>> {
    match read(store, None)? {
        None => Ok(Vec::new()),
        Some(j) => pending(&path_for(store), j.id, j.records, file, false),
    }
}

/// The journal id and sequence a read transaction sees.
pub(crate) fn stored_in(txn: &redb::ReadTransaction) -> Result<Option<([u8; 16], u64)>> {
    match txn.open_table(JOURNAL) {
        Ok(t) => stored(&t),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Applies `records` (from [`pending_for`]) to `db`, a view whose writes stay in
/// memory (a read-only open of a file with journaled commits).
pub(crate) fn apply_in_memory(db: &Database, records: &[Record]) -> Result<()> {
    let txn = db.begin_write()?;
    apply_all(&txn, records)?;
    txn.commit()?;
    Ok(())
}

/// The open journal of a file held read-write by this process alone.
pub(crate) struct Journal {
    #[cfg(feature = "test-internals")]
    path: PathBuf,
    io: Io,
    /// Where the next record goes.
    end: u64,
    /// Sequence number of the next record.
    next: u64,
    /// Bytes of records since the last checkpoint.
    since_checkpoint: u64,
    /// Set when an append failed: what the journal holds past its last good record is
    /// unknown until the file is reopened (which replays what is there).
    broken: bool,
    /// Set when a checkpoint's durable commit failed.
    checkpoint_failed: bool,
}

/// The error of a commit on a journal that an earlier failure broke: an I/O error, so
/// the engine reopens the file (replaying the journal) and retries.
fn broken() -> Error {
    io::Error::other("an earlier write of the store's journal failed; the file is reopened").into()
}

impl Journal {
    /// Starts the journal of the store file at `store`, open in `db` (already
    /// replayed): gives the file a journal id on first use (one durable commit), and
    /// creates an empty journal, synced with its folder.
    pub(crate) fn start(
        store: &Path,
        db: &Database,
        backend: Option<&BackendFactory>,
    ) -> Result<Self> {
        let read = db.begin_read()?;
        let (id, seq) = match stored_in(&read)? {
            Some(found) => found,
            None => {
                drop(read);
                let mut id = [0u8; 16];
                sealkv_crypto::fill_random(&mut id)
                    .map_err(|_| Error::Corrupt("the OS random generator failed".into()))?;
                let txn = db.begin_write()?;
                {
                    let mut t = txn.open_table(JOURNAL)?;
                    t.insert(ID, id.as_slice())?;
                    t.insert(SEQ, 0u64.to_le_bytes().as_slice())?;
                }
                txn.commit()?;
                (id, 0)
            }
        };
        let io = Io::open(store, backend, true)?
            .ok_or_else(|| Error::from(io::Error::other("the journal could not be created")))?;
        let mut header = Vec::with_capacity(HEADER as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&id);
        io.backend.write(0, &header)?;
        io.backend.sync_data()?;
        if let Some(path) = &io.file {
            // The journal's name must be durable before a record relies on it.
            super::sync_dir(path)?;
        }
        Ok(Self {
            #[cfg(feature = "test-internals")]
            path: path_for(store),
            io,
            end: HEADER,
            next: seq + 1,
            since_checkpoint: 0,
            broken: false,
            checkpoint_failed: false,
        })
    }

    /// Commits `txn` (its changes recorded in `ops`): the record appended and synced,
    /// then the transaction committed without a sync of its own. Returns true when
    /// [`CHECKPOINT_BYTES`] of journal have gathered: the caller then checkpoints,
    /// once it has let this journal go (redb's write lock is taken before the journal
    /// everywhere).
    pub(crate) fn commit(&mut self, mut txn: redb::WriteTransaction, ops: &Ops) -> Result<bool> {
        if self.broken {
            return Err(broken());
        }
        if ops.0.len() as u64 >= CHECKPOINT_BYTES {
            // A commit this large gains nothing from the journal: a durable redb commit
            // (which persists the journaled ones before it too), then an empty journal.
            txn.commit()?;
            self.emptied()?;
            return Ok(false);
        }
        txn.set_durability(redb::Durability::None)
            .map_err(|e| Error::Corrupt(format!("redb refused a journaled commit: {e}")))?;
        if ops.is_empty() {
            txn.commit()?;
            return Ok(false);
        }
        let seq = self.next;
        txn.open_table(JOURNAL)?
            .insert(SEQ, seq.to_le_bytes().as_slice())?;
        let mut record = Vec::with_capacity(ops.0.len() + 28);
        record.extend_from_slice(&(ops.0.len() as u32).to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&ops.0);
        record.extend_from_slice(&checksum(seq, &ops.0));
        if let Err(e) = self.append(&record) {
            // The record may be on disk in part or whole: the outcome is unknown until
            // the file is reopened and the journal replayed. The transaction is dropped.
            self.broken = true;
            return Err(e.into());
        }
        self.next += 1;
        self.since_checkpoint += record.len() as u64;
        // Durable now; the redb commit makes it visible.
        txn.commit()?;
        Ok(self.since_checkpoint >= CHECKPOINT_BYTES)
    }

    /// Writes `record` at the end of the journal and syncs it.
    fn append(&mut self, record: &[u8]) -> io::Result<()> {
        #[cfg(feature = "test-internals")]
        if let Some(fault) = faults::take(&self.path) {
            let keep = match fault {
                // (`take` never hands out a checkpoint's fault.)
                Fault::FailSync | Fault::FailCheckpoint => record.len(),
                Fault::TornWrite => record.len() / 2,
            };
            self.io.backend.write(self.end, &record[..keep])?;
            return Err(io::Error::other("injected journal fault"));
        }
        self.io.backend.write(self.end, record)?;
        self.io.backend.sync_data()?;
        self.end += record.len() as u64;
        Ok(())
    }

    /// True when the journal holds commits the file has not synced yet.
    pub(crate) fn dirty(&self) -> bool {
        self.since_checkpoint > 0
    }

    /// Checkpoints with `txn`, an empty write transaction begun for it: one durable
    /// redb commit persists every journaled commit, then the journal is emptied. A
    /// failure leaves the journal as it is (every record still in it).
    pub(crate) fn checkpoint(&mut self, txn: redb::WriteTransaction) -> Result<()> {
        if self.broken {
            return Err(broken());
        }
        #[cfg(feature = "test-internals")]
        let txn = match faults::take_if(&self.path, |f| matches!(f, Fault::FailCheckpoint)) {
            Some(_) => {
                drop(txn);
                self.broken = true;
                self.checkpoint_failed = true;
                return Err(io::Error::other("injected checkpoint fault").into());
            }
            None => txn,
        };
        if let Err(e) = txn.commit() {
            // The file's sync failed: pages the journal's commits wrote may not be on
            // the disk even where the page cache says so. Commits stop here (each
            // fails as an I/O error, which reopens the file), and the reopen applies
            // the whole journal again (`replay`'s `full`).
            self.broken = true;
            self.checkpoint_failed = true;
            return Err(e.into());
        }
        self.emptied()
    }

    /// True when a checkpoint failed: the next open of the file in this process
    /// applies every record of the journal again.
    pub(crate) fn checkpoint_failed(&self) -> bool {
        self.checkpoint_failed
    }

    /// Empties the journal once a durable redb commit holds everything in it.
    fn emptied(&mut self) -> Result<()> {
        self.io.backend.set_len(HEADER)?;
        // Cut: the next record goes right after the header, whether or not the sync
        // below succeeds (everything before it is in the file already).
        self.end = HEADER;
        self.since_checkpoint = 0;
        self.io.backend.sync_data()?;
        Ok(())
    }

    /// Checkpoints and removes the journal (a clean close). On failure the journal
    /// stays, and the next open replays it.
    pub(crate) fn close(mut self, db: &Database) {
        let done = db
            .begin_write()
            .map_err(Error::from)
            .and_then(|txn| self.checkpoint(txn));
        if done.is_ok() {
            let _ = self.io.remove();
        }
    }
}

/// A fault a test injects into the next append to a journal.
#[cfg(feature = "test-internals")]
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The record is written whole, then its sync fails.
    FailSync,
    /// Half the record is written, then the write fails (torn).
    TornWrite,
    /// The next checkpoint's durable commit fails (it is not made).
    FailCheckpoint,
}

#[cfg(feature = "test-internals")]
pub(crate) mod faults {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::Fault;

    static ARMED: Mutex<Option<HashMap<PathBuf, Fault>>> = Mutex::new(None);

    /// Makes the next append to the journal of the store file at `store` fail so.
    pub fn inject(store: &Path, fault: Fault) {
        let mut armed = crate::guards::lock(&ARMED);
        armed
            .get_or_insert_with(HashMap::new)
            .insert(super::path_for(store), fault);
    }

    /// True while a fault injected for `store` has not fired yet.
    pub fn armed(store: &Path) -> bool {
        crate::guards::lock(&ARMED)
            .as_ref()
            .is_some_and(|m| m.contains_key(&super::path_for(store)))
    }

    /// The fault armed for `journal` for an append (a checkpoint's stays armed).
    pub(super) fn take(journal: &Path) -> Option<Fault> {
        take_if(journal, |f| !matches!(f, Fault::FailCheckpoint))
    }

    /// The fault armed for `journal`, if `wanted` says it is the one.
    pub(super) fn take_if(journal: &Path, wanted: impl Fn(Fault) -> bool) -> Option<Fault> {
        let mut armed = crate::guards::lock(&ARMED);
        let map = armed.as_mut()?;
        match map.get(journal) {
            Some(&f) if wanted(f) => map.remove(journal),
            _ => None,
        }
    }
}
