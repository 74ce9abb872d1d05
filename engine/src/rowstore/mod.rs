//! The row-store seam: where the engine ends and a storage engine begins.
//!
//! Everything above this module (sealing, private names, the keyring, rotation,
//! sessions, expiry, group commit, the facade) sees a store as three tables of byte
//! rows and nothing more:
//!
//! | table          | key                                | value                  |
//! |----------------|------------------------------------|------------------------|
//! | `Table::Data`   | namespace tag ‖ key tag (32 bytes) | sealed envelope        |
//! | `Table::Meta`   | record name (UTF-8)                | record bytes           |
//! | `Table::Expiry` | bucket end ‖ row key (40 bytes)    | empty                  |
//!
//! A `RowStore` gives read views (`RowRead`: a row by key, a key range in order,
//! a count) and durable, atomic write transactions (`RowWrite`: puts, deletes and
//! range deletes across the three tables, committed together), and holds lock keys
//! across processes (`RowStore::lock`). Two implement it:
//!
//! - [`file`]: one redb file (the embedded default; its file format is the one
//!   `docs/FORMAT.md` describes, unchanged by this seam);
//! - [`postgres`]: two tables in a PostgreSQL database, which sees only what the file
//!   shows: tags, envelopes and the meta records.
//!
//! See `docs/ROWSTORE.md` for the contract each implementation keeps.

use std::ops::{Bound, Deref};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;

pub(crate) mod backoff;
pub(crate) mod file;
#[cfg(unix)]
pub(crate) mod owner;
pub mod postgres;

/// The three tables of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Table {
    /// Sealed rows under `namespace tag ‖ key tag`.
    Data,
    /// Meta records by name.
    Meta,
    /// The expiry index: `bucket end ‖ row key`, no value.
    Expiry,
}

/// The bytes of a row as read: borrowed from the engine's page cache, or owned.
pub(crate) enum Found<'a> {
    /// A value in a redb page.
    Page(redb::AccessGuard<'a, &'static [u8]>),
    /// A value copied out (from a server, say).
    Owned(Vec<u8>),
}

impl Deref for Found<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Page(guard) => guard.value(),
            Self::Owned(bytes) => bytes,
        }
    }
}

/// Called for each row of a scan, in key order, with its key and value; returns
/// false to stop the scan.
pub(crate) type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<bool>;

/// A key range of a scan.
pub(crate) type Range<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Reads of one consistent view (a read transaction, a write transaction).
pub(crate) trait RowRead {
    /// The value under `key`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>>;
    /// The values under `keys`, in their order, all from one point in time (a view
    /// that is not one snapshot, as a server's autocommit view, reads them in one
    /// statement).
    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Found<'_>>>> {
        keys.iter().map(|k| self.get(table, k)).collect()
    }
    /// Visits the rows whose keys fall in `range`, in ascending key order.
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()>;
    /// Number of rows in `table`.
    fn len(&self, table: Table) -> Result<u64>;
    /// True when `table` has no rows (cheaper than `len` on a server).
    fn is_empty(&self, table: Table) -> Result<bool>;
}

/// A write transaction: reads see its own writes; nothing is visible to anyone else
/// until the [`RowStore::write`] that runs it commits.
pub(crate) trait RowWrite: RowRead {
    /// Stores `value` under `key`, replacing any value there.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    /// Removes `key` if present.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()>;
    /// [`RowWrite::put`], first handing `old` the value it replaces (`None`: none), as
    /// this transaction sees it. An engine that learns it while writing (redb's insert
    /// returns it) saves the lookup.
    fn replace(
        &mut self,
        table: Table,
        key: &[u8],
        value: &[u8],
        old: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        old(self.get(table, key)?.as_deref());
        self.put(table, key, value)
    }
    /// [`RowWrite::delete`], first handing `old` the value it removes (`None`: none).
    fn remove(
        &mut self,
        table: Table,
        key: &[u8],
        old: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        old(self.get(table, key)?.as_deref());
        self.delete(table, key)
    }
    /// Stores `value` under `key` unless a value is there already (a server does it in
    /// the statement that writes the batch, without a read first).
    fn put_if_absent(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        if self.get(table, key)?.is_none() {
            self.put(table, key, value)?;
        }
        Ok(())
    }
    /// Removes every row whose key falls in `range`.
    fn delete_range(&mut self, table: Table, range: Range<'_>) -> Result<()>;
    /// Whether each lock key behind `proofs` ([`HeldLock::proof`]) is still held, as
    /// this transaction sees it: a commit writes the changes of a transaction whose
    /// lock was lost in the meantime not at all. The answer holds until this
    /// transaction commits (see the PostgreSQL engine for how). Engines whose locks
    /// cannot lapse while their holder lives have no proofs to check.
    fn locks_held(&mut self, proofs: &[&str]) -> Result<Vec<bool>> {
        Ok(vec![true; proofs.len()])
    }
    /// True when [`RowRead::get_many`] reads many rows for the price of one (a server's
    /// one statement), so a layer that must read rows before writing them reads them
    /// together first.
    fn batches_reads(&self) -> bool {
        false
    }
    /// A hint that the rows under `keys` are about to be written: a layer that reads
    /// each row before replacing it (the content hash) reads them in one go (one
    /// statement on a server). Engines themselves need nothing.
    fn prefetch(&mut self, table: Table, keys: &[&[u8]]) -> Result<()> {
        let _ = (table, keys);
        Ok(())
    }
}

/// A read view shared across threads.
pub(crate) type View = Arc<dyn RowRead + Send + Sync>;

/// A held lock key; dropping it releases the lock.
pub(crate) trait HeldLock: Send {
    /// For a lock that can lapse while its holder lives (a server may end the session
    /// that holds it), what the commit of the transaction holding it checks, in the
    /// commit's own write transaction ([`RowWrite::locks_held`]). `None`: the lock
    /// lasts as long as this process, like the transaction itself.
    fn proof(&self) -> Option<&str> {
        None
    }
}

/// A held lock key, boxed.
pub(crate) type LockGuard<'a> = Box<dyn HeldLock + 'a>;

/// A storage engine holding one store's rows.
pub(crate) trait RowStore: Send + Sync {
    /// A read view that sees every commit that finished before this call (in this
    /// process and, where the engine is shared, in any other).
    fn view(&self) -> Result<View>;

    /// A view whose reads all come from one point in time, for long reads (a backup,
    /// a verify). On a file every view is; a server opens a repeatable-read
    /// transaction for it.
    fn snapshot(&self) -> Result<View> {
        self.view()
    }

    /// Runs `f` in one write transaction and commits it durably, or not at all. No
    /// retry here: the engine's commit path retries (after [`RowStore::recover`]).
    /// `committing` is set once `f` returned and the commit began, so a failure after
    /// it leaves the outcome unknown.
    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn RowWrite) -> Result<()>,
        committing: &mut bool,
    ) -> Result<()>;

    /// Gets back to a usable state after a failed write (redb: reopen the file, which
    /// recovers to the last durable commit; a server: drop the connection).
    fn recover(&self) -> Result<()>;

    /// True when a write failure that retries did not cure should refuse further writes
    /// until the store is reopened (a file whose state in memory can no longer be
    /// trusted). A server keeps no such state: the next write simply tries again.
    fn poison_on_failure(&self) -> bool;

    /// True when this store was opened for reading only.
    fn is_read_only(&self) -> bool;

    /// True when a transient failure may be a server failing over: reads, writes and
    /// lock keys then keep trying for `Options::failover_timeout`.
    fn rides_failover(&self) -> bool {
        false
    }

    /// The engine's name in metrics and traces: `file` or `postgres`.
    fn engine(&self) -> &'static str {
        "file"
    }

    /// Takes `lock_key` of `session` across processes (and hosts), waiting up to
    /// `timeout`. `None` when only this process can write the store (an exclusive
    /// file): the in-process lock is then enough.
    fn lock(
        &self,
        session: Option<&str>,
        lock_key: &str,
        timeout: Duration,
    ) -> Result<Option<LockGuard<'_>>>;

    /// Bytes the store occupies (the file; the tables on a server).
    fn size(&self) -> u64;

    /// Reclaims space (redb: compaction; a server: `VACUUM`). The engine holds its
    /// commit lock while this runs.
    fn compact(&self) -> Result<()>;

    /// True while this engine owns a file that it serves to other processes (the
    /// owner mode).
    fn is_owner(&self) -> bool {
        false
    }

    /// True when a failure (a compaction that could not reopen a file) left the
    /// engine without a usable handle: the store then refuses writes until reopened.
    fn lost(&self) -> bool {
        false
    }
}

/// Where a store lives: a file path or a PostgreSQL URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A redb file.
    File(PathBuf),
    /// A store in PostgreSQL (`postgres://user@host:port/db?store=NAME`).
    Postgres(postgres::PgUrl),
}

impl Location {
    /// Reads a store address: a `postgres://` or `postgresql://` URL names a store in
    /// PostgreSQL; anything else is a file path.
    pub fn parse(address: &Path) -> Result<Self> {
        match address.to_str() {
            Some(s) if postgres::is_url(s) => Ok(Self::Postgres(postgres::PgUrl::parse(s)?)),
            _ => Ok(Self::File(address.to_path_buf())),
        }
    }

    /// How the store is named in messages: the path, or the URL without any password.
    pub fn display_path(&self) -> PathBuf {
        match self {
            Self::File(p) => p.clone(),
            Self::Postgres(url) => PathBuf::from(url.to_string()),
        }
    }
}

/// Copies every row of `from` (a consistent view) into `to`, in one transaction.
pub(crate) fn copy_rows(from: &dyn RowRead, to: &mut dyn RowWrite) -> Result<()> {
    for table in [Table::Meta, Table::Data, Table::Expiry] {
        from.scan(table, (Bound::Unbounded, Bound::Unbounded), &mut |k, v| {
            to.put(table, k, v)?;
            Ok(true)
        })?;
    }
    Ok(())
}

/// The keyed hash that stands for a transaction's lock key (in `session`) in an
/// engine's cross-process locks, so that the locks (a file's lock table, a server's
/// lock rows) do not show which lock keys, often phone numbers, are in use. `salt` comes
/// from the store's name key.
pub(crate) fn lock_hash(salt: &[u8; 16], session: Option<&str>, lock_key: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(salt);
    match session {
        None => h.update(&[0]),
        Some(s) => h
            .update(&[1])
            .update(&(s.len() as u64).to_le_bytes())
            .update(s.as_bytes()),
    };
    h.update(lock_key.as_bytes());
    *h.finalize().as_bytes()
}

/// True when some row's key falls in `range`.
pub(crate) fn any_in(view: &dyn RowRead, table: Table, range: Range<'_>) -> Result<bool> {
    let mut found = false;
    view.scan(table, range, &mut |_, _| {
        found = true;
        Ok(false)
    })?;
    Ok(found)
}
