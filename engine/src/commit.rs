//! The write path: sealing in the caller's thread, then group commit.
//!
//! Callers seal their changes themselves (in parallel, under a read lock on the
//! keyring), then queue them. The first caller to find no commit running becomes the
//! leader: it takes everything queued, writes it in one redb write transaction with one
//! fsync, hands each caller the result, and repeats until the queue is empty. A change
//! that cannot be sealed (too large, bad name) fails in its caller before it is queued,
//! so it never fails anyone else.
//!
//! A commit that fails is retried: the database is reopened, so redb recovers to the
//! last durable commit, and the whole batch, whose puts and deletes are idempotent, is
//! written again. When retries run out the store is poisoned: it refuses writes until
//! reopened, rather than guess what reached the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealkv_crypto::{Context, Keyring, MasterKey, SealedKeyring, TAG_BYTES, envelope};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::expiry::{AUTO_SWEEP_PER_COMMIT, expires_at, index_key};
use crate::guards::{lock, read_lock};
use crate::meta::{META_KEYRING, seal_keyring_into};
use crate::observe;
use crate::outcome::{Commits, Outcome, TOKEN_BYTES, Token, WRITER_BYTES};
use crate::rows::{check_name, encode_plain, ns_has_rows, row_key, split_row};
use crate::rowstore::backoff::Backoff;
use crate::rowstore::{RowWrite, Table};
use crate::scope::{Scope, sessions_catalog_tag};
use crate::state::Tracked;
use crate::store::Store;

/// Whether a write transaction also writes the keyring record. Every write path goes
/// through [`Store::write_with_keyring`], the one place that persists the keyring.
#[derive(Clone, Copy)]
pub(crate) enum KeyringWrite<'a> {
    /// Only when a key's seal count has outrun its persisted reservation.
    IfNeeded,
    /// Always, under the store's master key (after a rotation, a destroy, an upgrade).
    Always,
    /// Always, under a new master key (a rekey).
    Under(&'a MasterKey),
}

/// A set of changes applied atomically: puts and deletes across any namespaces.
/// Later changes to the same key replace earlier ones.
#[derive(Default, Clone)]
pub struct Batch {
    pub(crate) ops: BTreeMap<(String, String), Option<Put>>,
}

/// One put of a batch: the value and, for a value that expires, its time to live
/// (turned into an expiry time by the store's clock when the batch is sealed).
#[derive(Clone)]
pub(crate) struct Put {
    pub(crate) value: Zeroizing<Vec<u8>>,
    pub(crate) ttl: Option<Duration>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("changes", &self.ops.len())
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under `namespace`/`key`.
    pub fn put(&mut self, namespace: &str, key: &str, value: impl Into<Vec<u8>>) -> &mut Self {
        self.insert(namespace, key, value.into(), None)
    }

    /// Stores `value` under `namespace`/`key` until `ttl` from when the batch is
    /// written (by the store's clock, [`crate::Options::clock`]); from then on it reads
    /// as absent and a sweep removes it. A TTL under one second is refused when the
    /// batch is written ([`crate::Error::InvalidTtl`]).
    pub fn put_with_ttl(
        &mut self,
        namespace: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> &mut Self {
        self.insert(namespace, key, value.into(), Some(ttl))
    }

    fn insert(
        &mut self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> &mut Self {
        self.ops.insert(
            (namespace.to_string(), key.to_string()),
            Some(Put {
                value: Zeroizing::new(value),
                ttl,
            }),
        );
        self
    }

    /// Deletes `namespace`/`key` (nothing happens if it is absent).
    pub fn delete(&mut self, namespace: &str, key: &str) -> &mut Self {
        self.ops
            .insert((namespace.to_string(), key.to_string()), None);
        self
    }

    /// Puts `Some` values and deletes `None` ones, as Baileys' `set` does.
    pub fn set(
        &mut self,
        namespace: &str,
        key: &str,
        value: Option<impl Into<Vec<u8>>>,
    ) -> &mut Self {
        match value {
            Some(v) => self.put(namespace, key, v),
            None => self.delete(namespace, key),
        }
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Moves every change of `other` into this batch (its changes win).
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }
}

/// A namespace losing values: (its catalog row, its tag, its session's catalog row).
type Shrinking = ([u8; 32], [u8; TAG_BYTES], Option<[u8; 32]>);

/// One caller's sealed changes.
#[derive(Default)]
pub(crate) struct Sealed {
    /// Row key → sealed value, or None to delete.
    rows: Vec<([u8; 32], Option<Vec<u8>>)>,
    /// Expiry index keys of the rows put with a time to live.
    expiring: Vec<[u8; 40]>,
    /// Catalog row key → sealed entry, written if absent: namespaces that gain values,
    /// and the session entry of a session that gains them.
    catalog: BTreeMap<[u8; 32], Vec<u8>>,
    /// (catalog row key of a namespace, namespace tag, session entry row key) for
    /// namespaces that lose values: the catalog entry goes when the namespace is empty,
    /// and the session entry when the session's catalog is.
    shrinking: BTreeSet<Shrinking>,
    /// Delete every row of the store.
    clear: bool,
    /// The held lock key's proof ([`crate::rowstore::HeldLock::proof`]) of a
    /// transaction's changes, checked by the commit that writes them.
    proof: Option<String>,
}

struct Request {
    sealed: Sealed,
    result: Mutex<Option<Result<()>>>,
    /// Set by the commit that found this request's lock key lost: its changes were
    /// left out, and it fails alone.
    lock_lost: std::sync::atomic::AtomicBool,
    /// Order of arrival in the queue.
    ticket: u64,
    /// When it was queued (for the group-commit wait metric).
    queued: std::time::Instant,
}

/// The group-commit queue.
#[derive(Default)]
pub(crate) struct Queue {
    pending: Vec<Arc<Request>>,
    leader: bool,
    /// Size of the last batch committed: its callers are likely to come back.
    last_batch: usize,
    /// Ticket of the next request to arrive.
    next_ticket: u64,
    /// `next_ticket` when the last commit finished: requests with a smaller ticket
    /// waited through that commit.
    released_at: u64,
    /// While a leader gathers: the queue length it waits for (arrivals wake it only
    /// then, not each one).
    gather_until: usize,
}

/// Longest a leader waits for the callers of the previous batch to queue again, well
/// under one fsync. A writer working alone waits only on its first commit after a
/// busier moment (its last batch was larger than 1). The leader waits for the last
/// batch's callers plus those that waited through its commit, and leads one batch
/// only: before both, 16 writers settled into two alternating half batches. Engine
/// bench, durable-transactions, before and after those two: 8 threads 12.1 -> 7.9 ms a
/// round, 16 threads 14.6 -> 11.7 ms, 1 thread unchanged.
const GATHER_WINDOW: std::time::Duration = std::time::Duration::from_micros(250);

impl Store {
    /// Applies every change of `batch` in one atomic, durable write transaction.
    pub fn set(&self, batch: &Batch) -> Result<()> {
        self.set_in(&self.inner.default_scope, batch)
    }

    /// Stores one value that expires after `ttl` (a batch of one; see
    /// [`Batch::put_with_ttl`]).
    pub fn put_with_ttl(
        &self,
        namespace: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> Result<()> {
        self.default_session()
            .put_with_ttl(namespace, key, value, ttl)
    }

    pub(crate) fn set_in(&self, scope: &Scope, batch: &Batch) -> Result<()> {
        self.set_holding(scope, batch, None)
    }

    /// [`Store::set_in`] for a transaction holding a lock key: the batch is written only
    /// if the commit finds the lock behind `proof` still held.
    pub(crate) fn set_holding(
        &self,
        scope: &Scope,
        batch: &Batch,
        proof: Option<&str>,
    ) -> Result<()> {
        self.check_writable()?;
        // Sealed again under the fresh keyring if another process changed the keys
        // between sealing and committing (its commit saw another keyring record).
        self.with_fresh_keyring(|| {
            let ring = self.ring();
            let mut sealed = self.seal_batch(&ring, scope, batch)?;
            sealed.proof = proof.map(str::to_string);
            self.commit_sealed(&ring, sealed)
        })?;
        // The batch is committed; a failed automatic rotation must not report it as
        // failed. Rotation is tried again on the next commit (and an I/O failure has
        // poisoned the store, which the next write reports).
        let _ = self.maybe_auto_rotate();
        Ok(())
    }

    /// Stores one value (a batch of one).
    pub fn put(&self, namespace: &str, key: &str, value: impl Into<Vec<u8>>) -> Result<()> {
        self.default_session().put(namespace, key, value)
    }

    /// Deletes one value. Returns whether it existed.
    pub fn delete(&self, namespace: &str, key: &str) -> Result<bool> {
        self.default_session().delete(namespace, key)
    }

    /// Deletes every value in every namespace of every session, in one transaction.
    pub fn clear(&self) -> Result<()> {
        self.check_writable()?;
        self.with_fresh_keyring(|| {
            let ring = self.ring();
            let sealed = Sealed {
                clear: true,
                ..Sealed::default()
            };
            self.commit_sealed(&ring, sealed)
        })
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    pub(crate) fn seal_batch(
        &self,
        ring: &Keyring,
        scope: &Scope,
        batch: &Batch,
    ) -> Result<Sealed> {
        let opts = &self.inner.opts;
        let db_id = &self.inner.db_id;
        let nk = ring.name_key();
        let now = (opts.clock)();
        let mut sealed = Sealed {
            rows: Vec::with_capacity(batch.ops.len()),
            ..Sealed::default()
        };
        let session_row = scope
            .session_tag
            .map(|tag| row_key(&sessions_catalog_tag(nk), &tag));
        let mut plain = Zeroizing::new(Vec::new());
        for ((ns, key), put) in &batch.ops {
            check_name(ns)?;
            check_name(key)?;
            let ns_tag = scope.ns_tag(nk, ns);
            let key_tag = scope.key_tag(nk, ns, key);
            let row = row_key(&ns_tag, &key_tag);
            let catalog_row = row_key(&scope.catalog_tag, &ns_tag);
            let Some(put) = put else {
                sealed.shrinking.insert((catalog_row, ns_tag, session_row));
                sealed.rows.push((row, None));
                continue;
            };
            if put.value.len() > opts.max_value_size {
                return Err(Error::ValueTooLarge {
                    namespace: scope.label(ns),
                    key: key.clone(),
                    size: put.value.len(),
                    limit: opts.max_value_size,
                });
            }
            let expires = match put.ttl {
                None => None,
                Some(ttl) if ttl.as_secs() == 0 => {
                    return Err(Error::InvalidTtl(
                        "a time to live must be at least one second".into(),
                    ));
                }
                Some(ttl) => Some(expires_at(now, ttl)),
            };
            encode_plain(&mut plain, key.as_bytes(), expires, &put.value);
            let ctx = Context {
                db_id,
                namespace: &ns_tag,
                key: &key_tag,
            };
            let env = envelope::seal(ring, &opts.compression, &ctx, &plain).map_err(Error::Key)?;
            sealed.rows.push((row, Some(env)));
            if let Some(at) = expires {
                sealed.expiring.push(index_key(at, &row));
            }
            if let std::collections::btree_map::Entry::Vacant(slot) =
                sealed.catalog.entry(catalog_row)
            {
                slot.insert(self.seal_name_entry(ring, &scope.catalog_tag, &ns_tag, ns)?);
            }
            if let (Some(session_row), Some(session), Some(tag)) =
                (session_row, &scope.session, &scope.session_tag)
                && let std::collections::btree_map::Entry::Vacant(slot) =
                    sealed.catalog.entry(session_row)
            {
                slot.insert(self.seal_name_entry(ring, &sessions_catalog_tag(nk), tag, session)?);
            }
        }
        Ok(sealed)
    }

    /// Seals a catalog entry: the row `(catalog, tag)` whose plaintext is `name`.
    pub(crate) fn seal_name_entry(
        &self,
        ring: &Keyring,
        catalog: &[u8; TAG_BYTES],
        tag: &[u8; TAG_BYTES],
        name: &str,
    ) -> Result<Vec<u8>> {
        let mut plain = Zeroizing::new(Vec::new());
        encode_plain(&mut plain, name.as_bytes(), None, &[]);
        let ctx = Context {
            db_id: &self.inner.db_id,
            namespace: catalog,
            key: tag,
        };
        envelope::seal(ring, &sealkv_crypto::Compression::NONE, &ctx, &plain).map_err(Error::Key)
    }

    /// Queues sealed changes and waits for the group commit that carries them.
    pub(crate) fn commit_sealed(&self, ring: &Keyring, sealed: Sealed) -> Result<()> {
        let mut q = lock(&self.inner.queue);
        let request = Arc::new(Request {
            sealed,
            result: Mutex::new(None),
            lock_lost: std::sync::atomic::AtomicBool::new(false),
            ticket: q.next_ticket,
            queued: std::time::Instant::now(),
        });
        q.next_ticket += 1;
        q.pending.push(request.clone());
        // A leader may be gathering a batch.
        if q.pending.len() >= q.gather_until {
            self.inner.gather_cv.notify_one();
        }
        loop {
            if let Some(result) = lock(&request.result).take() {
                return result;
            }
            if q.leader {
                q = self
                    .inner
                    .queue_cv
                    .wait(q)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q.leader = true;
            drop(q);
            self.lead(ring);
            q = lock(&self.inner.queue);
        }
    }

    /// Commits one batch, then gives up the lead: its own caller goes on, and a caller
    /// still waiting leads the next batch.
    fn lead(&self, ring: &Keyring) {
        let batch: Vec<Arc<Request>> = {
            let mut q = lock(&self.inner.queue);
            // The callers of the last batch are sealing their next change, and those
            // that waited through its commit are queued already. Give the former a
            // moment to join, so the batch carries both: otherwise two half batches,
            // once formed, alternate for good, each paying a whole commit.
            let waited = q
                .pending
                .iter()
                .filter(|r| r.ticket < q.released_at)
                .count();
            let expected = q.last_batch + waited;
            let deadline = std::time::Instant::now() + GATHER_WINDOW;
            q.gather_until = expected;
            while q.pending.len() < expected {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                q = self
                    .inner
                    .gather_cv
                    .wait_timeout(q, deadline - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            q.gather_until = 0;
            q.last_batch = q.pending.len();
            std::mem::take(&mut q.pending)
        };
        let began = std::time::Instant::now();
        let meters = &self.inner.meters;
        for r in &batch {
            meters.wait.record(began - r.queued);
        }
        meters.group.record(batch.len() as f64);
        // Never empty: the leader's own request was queued when it took the lead.
        // A panic that escaped the containment inside must still release the callers
        // and the lead, or every writer would wait for good.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.write_with_keyring(ring, KeyringWrite::IfNeeded, |txn| {
                apply(self, ring, txn, &batch)
            })
        }))
        .unwrap_or_else(|_| {
            self.inner.poisoned.store(true, Ordering::Release);
            Err(Error::Corrupt(
                "a commit panicked; the store refuses writes until reopened".into(),
            ))
        });
        // Under the queue lock, before any result is out: a released caller that
        // queues again must not count among those that waited through this commit.
        let mut q = lock(&self.inner.queue);
        q.released_at = q.next_ticket;
        for r in &batch {
            *lock(&r.result) = Some(match &outcome {
                Ok(()) if r.lock_lost.load(Ordering::Acquire) => {
                    observe::count_by(observe::LOCK_FAILURES, "outcome", "lost", 1);
                    Err(Error::LockLost)
                }
                Ok(()) => Ok(()),
                Err(e) => Err(e.duplicate()),
            });
        }
        q.leader = false;
        self.inner.queue_cv.notify_all();
    }

    /// Holds the commit path exclusively (for compaction, key changes, sweeps and
    /// dropped sessions). Take the keyring write lock, if needed, before this.
    ///
    /// Callers that queued before this call commit first: a job that takes the lock
    /// batch after batch (a sweep, a re-encryption) lets the writers that arrived
    /// meanwhile through between two batches, instead of winning every race for the
    /// queue and keeping them waiting for the whole job.
    pub(crate) fn commit_lock(&self) -> CommitGuard<'_> {
        let mut q = lock(&self.inner.queue);
        let arrived = q.next_ticket;
        while q.leader || q.pending.iter().any(|r| r.ticket < arrived) {
            q = self
                .inner
                .queue_cv
                .wait(q)
                .unwrap_or_else(|p| p.into_inner());
        }
        q.leader = true;
        CommitGuard { store: self }
    }

    /// Runs `f` in one write transaction with the retry policy, and writes the
    /// keyring record in the same transaction when `keyring` asks for it. The record's
    /// seal-count reservations are marked persisted only once the commit succeeded: a
    /// failed attempt leaves the keyring asking to be written again, so the retry
    /// carries it too and a crash can only over-count seals.
    pub(crate) fn write_with_keyring(
        &self,
        ring: &Keyring,
        keyring: KeyringWrite<'_>,
        mut f: impl FnMut(&mut dyn RowWrite) -> Result<()>,
    ) -> Result<()> {
        let mut sealed: Option<SealedKeyring> = None;
        self.write_with_retry(&mut |txn| {
            sealed = None;
            // Another process may have rotated, destroyed or rekeyed since this one read
            // the keyring: then nothing may be sealed or written with the keyring held
            // here. The check runs under the engine's write lock (redb's, which
            // excludes every process; a row lock on the keyring record on a server), so
            // no commit can slip in between it and this commit.
            if self.inner.mode.others_write() {
                let current = txn.get(Table::Meta, META_KEYRING.as_bytes())?;
                if current.as_deref() != Some(lock(&self.inner.keyring_seen).as_slice()) {
                    return Err(Error::KeyringChanged);
                }
            }
            f(txn)?;
            let write = match keyring {
                KeyringWrite::IfNeeded => ring.needs_persist(),
                KeyringWrite::Always | KeyringWrite::Under(_) => true,
            };
            if write {
                let db_id = &self.inner.db_id;
                sealed = Some(match keyring {
                    KeyringWrite::Under(master) => seal_keyring_into(txn, ring, master, db_id)?,
                    _ => seal_keyring_into(txn, ring, &read_lock(&self.inner.master), db_id)?,
                });
            }
            Ok(())
        })?;
        if let Some(sealed) = &sealed {
            ring.mark_persisted(sealed);
            *lock(&self.inner.keyring_seen) = sealed.record().to_vec();
        }
        Ok(())
    }

    /// Runs one write transaction with the retry policy: on failure the database is
    /// reopened (redb recovers) and `f` runs again; after the last attempt the store is
    /// poisoned. Write paths call it through [`Store::write_with_keyring`].
    ///
    /// Exactly once: every commit carries a token in the commit record
    /// ([`crate::outcome`]). An attempt that failed after its commit began may have
    /// taken effect: the next attempt looks for the token under the commit lock before
    /// writing anything, and writes the batch again only when the record proves the
    /// earlier attempt did not commit. When it cannot tell, the commit fails with
    /// `outcome_unknown` and nothing is replayed.
    fn write_with_retry(&self, f: &mut dyn FnMut(&mut dyn RowWrite) -> Result<()>) -> Result<()> {
        self.check_writable()?;
        let _span = tracing::debug_span!(target: "sealkv::commit", "commit").entered();
        let attempts = self.inner.opts.commit_retries + 1;
        // This handle's writer id, then random bytes: the record keeps each writer's
        // latest token (see `outcome`).
        let mut token: Token = [0; TOKEN_BYTES];
        sealkv_crypto::fill_random(&mut token).map_err(Error::Key)?;
        if let Some(writer) = self.inner.writer {
            token[..WRITER_BYTES].copy_from_slice(&writer);
        }
        let mut last = None;
        // The commit count read by the last attempt that failed after its commit began
        // (it may have reached the disk, or the server, or not).
        let mut uncertain: Option<u64> = None;
        // A file's state in memory is suspect after a failed write (see below).
        let rewrite_own = self.rows().poison_on_failure();
        // On a server, transient failures (a failover under way) are retried with
        // backoff until this deadline, after the first `attempts`.
        let mut backoff = self.backoff();
        let mut attempt = 0;
        let started = std::time::Instant::now();
        // Time the last attempt spent writing its rows, before the commit proper.
        let mut writing = std::time::Duration::ZERO;
        let result = loop {
            if attempt > 0 {
                if attempt >= attempts && !last.as_ref().is_some_and(|e| backoff.again(e)) {
                    break Err(self.commit_failed(attempt, uncertain.is_some(), last));
                }
                observe::count_by(observe::COMMIT_RETRIES, "engine", self.rows().engine(), 1);
                if attempt < attempts {
                    std::thread::sleep(self.inner.opts.commit_retry_delay);
                }
                // Contained like the commit itself: a panic while reopening must not
                // unwind through the group-commit leader.
                if let Err(e) = self.contained(|| self.rows().recover()) {
                    if self.is_poisoned() {
                        break Err(e);
                    }
                    last = Some(e);
                    attempt += 1;
                    continue;
                }
            }
            attempt += 1;
            let attempt_began = std::time::Instant::now();
            let mut committing = false;
            let mut read_count = None;
            let state_keys = read_lock(&self.inner.state)
                .clone()
                .filter(|_| crate::state::kept());
            let mut new_state = None;
            let mut resolved = None;
            // redb can panic on a damaged page (its allocator state, say): contained
            // here it becomes Error::Corrupt and poisons the store, instead of
            // unwinding through the group-commit leader and stranding its callers.
            let result = self.contained(|| {
                self.rows().write(
                    &mut |txn| {
                        // A first attempt reads the commits record after the rows are
                        // written (a client of an owner then asks for the old rows with
                        // its BEGIN, in one round trip); a retry must look its earlier
                        // attempt up first.
                        let mut early = match uncertain {
                            Some(_) => Some(Commits::read(&*txn)?),
                            None => None,
                        };
                        if let (Some(before), Some(commits)) = (uncertain, &early) {
                            match commits.outcome(&token, before) {
                                // Settled: from here on this attempt is like a first.
                                Outcome::NotCommitted => uncertain = None,
                                // On a file whose fsync failed, the commit can be visible
                                // (in the page cache) and yet not on the disk: Linux may
                                // mark pages whose write-back failed clean. While it is
                                // still the last commit, writing it again is safe (there
                                // is nothing newer to undo) and puts its pages behind a
                                // sync that succeeded.
                                Outcome::Committed
                                    if rewrite_own && commits.count == before.wrapping_add(1) =>
                                {
                                    uncertain = None;
                                }
                                decided => {
                                    // Nothing of this attempt is written: it rolls back.
                                    resolved = Some(decided);
                                    return Err(Error::Poisoned);
                                }
                            }
                        }
                        let t = std::time::Instant::now();
                        match &state_keys {
                            // Format 3: the content hash follows every row written,
                            // and the state record advances in this transaction.
                            Some(keys) => {
                                let mut tracked = Tracked::new(txn, keys);
                                f(&mut tracked)?;
                                let commits = match early.take() {
                                    Some(c) => c,
                                    None => Commits::read(&tracked)?,
                                };
                                read_count = Some(commits.count);
                                commits.push(token, &mut tracked)?;
                                new_state = Some(tracked.finish()?);
                            }
                            None => {
                                f(txn)?;
                                let commits = match early.take() {
                                    Some(c) => c,
                                    None => Commits::read(&*txn)?,
                                };
                                read_count = Some(commits.count);
                                commits.push(token, txn)?;
                            }
                        }
                        writing = t.elapsed();
                        Ok(())
                    },
                    &mut committing,
                )
            });
            let attempt_took = attempt_began.elapsed();
            match (resolved, result) {
                (Some(Outcome::Committed), _) => break Ok(()),
                (Some(_), _) => {
                    break Err(self.commit_failed(attempt, true, last));
                }
                (None, Ok(())) => {
                    if let Some(state) = new_state {
                        *lock(&self.inner.seen_state) = Some(state);
                        self.note_committed(state);
                    }
                    self.inner.meters.write.record(writing);
                    self.inner
                        .meters
                        .sync
                        .record(attempt_took.saturating_sub(writing));
                    break Ok(());
                }
                // Only storage failures are worth another attempt; anything else is final.
                (None, Err(e)) if e.is_io() || matches!(e, Error::Storage(_)) => {
                    if committing {
                        uncertain = read_count;
                    }
                    last = Some(e);
                }
                (None, Err(e)) if uncertain.is_some() => {
                    // The earlier attempt's outcome was never looked up.
                    break Err(self.commit_failed(attempt, true, Some(e)));
                }
                (None, Err(e)) => break Err(e),
            }
        };
        self.note_commit(&result, attempt, started.elapsed());
        result
    }

    /// Records a commit's outcome: metrics, a trace event, and what `health` reports.
    fn note_commit(&self, result: &Result<()>, attempts: u32, took: std::time::Duration) {
        let meters = &self.inner.meters;
        let (outcome, counter) = match result {
            Ok(()) => ("ok", &meters.commits_ok),
            Err(Error::CommitFailed {
                outcome_unknown: true,
                ..
            }) => ("outcome_unknown", &meters.commits_unknown),
            // Not a failure of the commit: the caller's transaction or a changed keyring.
            Err(Error::KeyringChanged | Error::LockLost) => return,
            Err(_) => ("failed", &meters.commits_failed),
        };
        counter.increment(1);
        let engine = self.rows().engine();
        tracing::debug!(
            target: "sealkv::commit",
            engine,
            outcome,
            attempts,
            micros = took.as_micros() as u64,
            "commit"
        );
        *lock(&self.inner.last_commit) = Some((std::time::Instant::now(), result.is_ok()));
    }

    /// Runs a read (or a lock key's take) again while it fails transiently on a server
    /// that may be failing over, with backoff, for at most `Options::failover_timeout`.
    pub(crate) fn riding<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut backoff = self.backoff();
        loop {
            match f() {
                Err(e) if backoff.again(&e) => {}
                other => return other,
            }
        }
    }

    /// Gives up on a commit: leaves a usable handle behind if it can (a file refuses
    /// writes from now on; a server keeps nothing in memory that the failure could have
    /// left wrong).
    fn commit_failed(&self, attempts: u32, outcome_unknown: bool, last: Option<Error>) -> Error {
        let _ = self.contained(|| self.rows().recover());
        if self.rows().poison_on_failure() {
            self.inner.poisoned.store(true, Ordering::Release);
        }
        Error::CommitFailed {
            attempts,
            outcome_unknown,
            source: Box::new(last.unwrap_or(Error::Poisoned)),
        }
    }
}

impl Store {
    /// How this store's calls wait between tries while its server fails over.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::within(
            self.rows()
                .rides_failover()
                .then_some(self.inner.opts.failover_timeout),
        )
    }
}

pub(crate) struct CommitGuard<'a> {
    store: &'a Store,
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        // Callers that queued meanwhile are waiting; the first to wake takes the lead.
        let mut q = lock(&self.store.inner.queue);
        q.leader = false;
        drop(q);
        self.store.inner.queue_cv.notify_all();
    }
}

fn apply(
    store: &Store,
    ring: &Keyring,
    txn: &mut dyn RowWrite,
    batch: &[Arc<Request>],
) -> Result<()> {
    let all = (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
    let mut shrinking = BTreeSet::new();
    let mut expiring = Vec::new();
    // Transactions whose lock key was lost (its server session ended) write nothing;
    // the answer holds until this commit (see `RowWrite::locks_held`).
    let proofs: Vec<&str> = batch
        .iter()
        .filter_map(|r| r.sealed.proof.as_deref())
        .collect();
    let mut held = if proofs.is_empty() {
        Vec::new()
    } else {
        txn.locks_held(&proofs)?
    }
    .into_iter();
    for r in batch {
        let s = &r.sealed;
        let lost = s.proof.is_some() && !held.next().unwrap_or(false);
        r.lock_lost.store(lost, Ordering::Release);
        if lost {
            continue;
        }
        if s.clear {
            txn.delete_range(Table::Data, all)?;
            txn.delete_range(Table::Expiry, all)?;
        }
        let keys: Vec<&[u8]> = s.rows.iter().map(|(row, _)| &row[..]).collect();
        txn.prefetch(Table::Data, &keys)?;
        for (row, value) in &s.rows {
            match value {
                Some(v) => txn.put(Table::Data, row, v)?,
                None => txn.delete(Table::Data, row)?,
            }
        }
        for (key, entry) in &s.catalog {
            txn.put_if_absent(Table::Data, key, entry)?;
        }
        shrinking.extend(s.shrinking.iter().copied());
        expiring.extend_from_slice(&s.expiring);
    }
    for (catalog_row, ns_tag, session_row) in shrinking {
        if !ns_has_rows(&*txn, &ns_tag)? {
            txn.delete(Table::Data, &catalog_row)?;
            if let Some(session_row) = session_row {
                let catalog = split_row(&catalog_row).0;
                if !ns_has_rows(&*txn, &catalog)? {
                    txn.delete(Table::Data, &session_row)?;
                }
            }
        }
    }
    for key in &expiring {
        txn.put(Table::Expiry, key, &[])?;
    }
    // Every commit sheds a few values whose bucket has closed.
    store.sweep_in(txn, ring, store.now(), AUTO_SWEEP_PER_COMMIT, false, None)?;
    Ok(())
}
