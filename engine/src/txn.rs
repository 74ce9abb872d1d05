//! Per-key exclusive transactions.
//!
//! `Store::transaction(lock_key, f)` holds an exclusive lock on `lock_key` (different
//! keys run concurrently), buffers `f`'s writes (reads through the transaction see
//! them), and commits them in one write transaction when `f` returns `Ok`. An `Err`
//! from `f` discards everything.
//!
//! Nesting: a transaction begun on the same thread inside another of the same store,
//! with the same lock key, joins it: the outer lock covers it, and the outer commit
//! carries its writes; if the inner closure returns `Err`, its own writes are
//! discarded (the outer transaction's earlier writes stay) and the outer closure
//! decides what to do with the error. With a different lock key it is refused with
//! [`Error::NestedLock`]: taking a second lock while holding one deadlocks against a
//! thread that takes the same two in the other order, and there is no order to take
//! them in once the outer one is held.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Condvar, Mutex};

use crate::commit::Batch;
use crate::error::{Error, Result};
use crate::guards::lock;
use crate::scope::Scope;
use crate::store::{Store, Value};

/// Exclusive locks by name.
#[derive(Default)]
pub(crate) struct KeyLocks {
    /// The lock keys held in this process, with when each was taken (for `health`).
    held: Mutex<HashMap<LockName, std::time::Instant>>,
    released: Condvar,
}

/// A lock key within its session (`None`: the default session).
type LockName = (Option<String>, String);

pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: LockName,
}

impl KeyLocks {
    /// Takes `key` in this process, waiting at most `timeout` for a transaction of
    /// this store (on another thread) that holds it.
    pub(crate) fn lock(&self, key: LockName, timeout: std::time::Duration) -> Result<KeyGuard<'_>> {
        let asked = std::time::Instant::now();
        let mut held = lock(&self.held);
        while held.contains_key(&key) {
            let waited = asked.elapsed();
            let Some(left) = timeout.checked_sub(waited).filter(|d| !d.is_zero()) else {
                return Err(Error::LockTimeout { waited });
            };
            held = self
                .released
                .wait_timeout(held, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        held.insert(key.clone(), std::time::Instant::now());
        Ok(KeyGuard { locks: self, key })
    }

    /// How long each lock key held now has been held.
    pub(crate) fn ages(&self) -> Vec<std::time::Duration> {
        lock(&self.held).values().map(|t| t.elapsed()).collect()
    }
}

impl KeyGuard<'_> {
    /// Counts the key as held from now (once the other processes' lock is taken too).
    fn held_from_now(&self) {
        if let Some(t) = lock(&self.locks.held).get_mut(&self.key) {
            *t = std::time::Instant::now();
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        lock(&self.locks.held).remove(&self.key);
        self.locks.released.notify_all();
    }
}

struct TxState {
    lock: LockName,
    writes: Batch,
}

thread_local! {
    static ACTIVE: RefCell<Vec<(u64, Rc<RefCell<TxState>>)>> = const { RefCell::new(Vec::new()) };
}

fn active(store_id: u64) -> Option<Rc<RefCell<TxState>>> {
    ACTIVE.with(|a| {
        a.borrow()
            .iter()
            .rev()
            .find(|(id, _)| *id == store_id)
            .map(|(_, s)| s.clone())
    })
}

struct ActiveGuard(u64);

impl ActiveGuard {
    fn push(store_id: u64, state: Rc<RefCell<TxState>>) -> Self {
        ACTIVE.with(|a| a.borrow_mut().push((store_id, state)));
        Self(store_id)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            if let Some(i) = a.iter().rposition(|(id, _)| *id == self.0) {
                a.remove(i);
            }
        });
    }
}

/// A transaction in progress: reads see its own writes; writes are buffered.
pub struct Tx<'a> {
    store: &'a Store,
    scope: &'a Scope,
    state: Rc<RefCell<TxState>>,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}

impl Tx<'_> {
    /// Reads values, seeing this transaction's own writes and deletes first.
    pub fn get<K: AsRef<str>>(
        &self,
        namespace: &str,
        keys: &[K],
    ) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        {
            let state = self.state.borrow();
            for key in keys {
                let key = key.as_ref();
                match state
                    .writes
                    .ops
                    .get(&(namespace.to_string(), key.to_string()))
                {
                    Some(Some(put)) => {
                        let live = put.ttl.is_none_or(|ttl| !ttl.is_zero());
                        if live {
                            out.insert(key.to_string(), put.value.clone());
                        }
                    }
                    Some(None) => {}
                    None => missing.push(key),
                }
            }
        }
        if !missing.is_empty() {
            out.extend(
                self.store
                    .with_fresh_keyring(|| self.store.get_in(self.scope, namespace, &missing))?,
            );
        }
        Ok(out)
    }

    /// Buffers a put.
    pub fn put(&mut self, namespace: &str, key: &str, value: impl Into<Vec<u8>>) {
        self.state.borrow_mut().writes.put(namespace, key, value);
    }

    /// Buffers a put of a value that expires `ttl` after the transaction commits
    /// (see [`Batch::put_with_ttl`]).
    pub fn put_with_ttl(
        &mut self,
        namespace: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        ttl: std::time::Duration,
    ) {
        self.state
            .borrow_mut()
            .writes
            .put_with_ttl(namespace, key, value, ttl);
    }

    /// Buffers a delete.
    pub fn delete(&mut self, namespace: &str, key: &str) {
        self.state.borrow_mut().writes.delete(namespace, key);
    }

    /// Buffers every change of a batch.
    pub fn set(&mut self, batch: Batch) {
        self.state.borrow_mut().writes.extend(batch);
    }

    /// The store this transaction writes to.
    pub fn store(&self) -> &Store {
        self.store
    }
}

impl Store {
    /// Runs `f` exclusively for `lock_key` and commits its writes atomically.
    ///
    /// Returns `f`'s error unchanged (nothing written), or the commit's error (after the
    /// configured retries). Called inside another transaction of this store on the
    /// same thread with the same lock key, it joins that transaction (an `Err` from `f`
    /// discards only the inner writes); with another lock key it returns
    /// [`Error::NestedLock`]. See the module docs.
    pub fn transaction<T, E: From<Error>>(
        &self,
        lock_key: &str,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let scope = self.inner.default_scope.clone();
        self.transaction_in(&scope, lock_key, f)
    }

    /// [`Store::transaction`] in a scope. Lock keys are per session; a transaction
    /// begun inside one of another session is refused like another lock key.
    pub(crate) fn transaction_in<T, E: From<Error>>(
        &self,
        scope: &Scope,
        lock_key: &str,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let name = scope.lock_name(lock_key);
        if let Some(state) = active(self.inner.id) {
            if state.borrow().lock != name {
                return Err(Error::NestedLock.into());
            }
            let before = state.borrow().writes.clone();
            let result = f(&mut Tx {
                store: self,
                scope,
                state: state.clone(),
            });
            if result.is_err() {
                state.borrow_mut().writes = before;
            }
            return result;
        }
        self.check_writable()?;
        let _span = tracing::debug_span!(target: "sealkv::transaction", "transaction").entered();
        let asked = std::time::Instant::now();
        let timeout = self.inner.opts.lock_timeout;
        let _lock = self
            .inner
            .locks
            .lock(name.clone(), timeout)
            .inspect_err(|_| count_lock_timeout())?;
        // In shared mode the lock key excludes other processes too, for what is left
        // of the timeout. Nothing has been read yet: taking the lock key is tried again
        // while a server fails over.
        let left = timeout.saturating_sub(asked.elapsed());
        let held = self
            .riding(|| self.rows().lock(scope.session.as_deref(), lock_key, left))
            .inspect_err(|e| {
                if matches!(e, Error::LockTimeout { .. }) {
                    count_lock_timeout();
                }
            })?;
        self.inner.meters.lock_wait.record(asked.elapsed());
        _lock.held_from_now();
        let state = Rc::new(RefCell::new(TxState {
            lock: name,
            writes: Batch::default(),
        }));
        let value = {
            let _active = ActiveGuard::push(self.inner.id, state.clone());
            f(&mut Tx {
                store: self,
                scope,
                state: state.clone(),
            })?
        };
        let writes = std::mem::take(&mut state.borrow_mut().writes);
        if !writes.is_empty() {
            // The commit itself checks that the lock is still held (a server may have
            // ended the session holding it), in the transaction that writes.
            let proof = held.as_ref().and_then(|lock| lock.proof());
            self.set_holding(scope, &writes, proof)?;
        }
        drop(held);
        Ok(value)
    }

    /// True when the calling thread is inside a transaction of this store.
    pub fn in_transaction(&self) -> bool {
        active(self.inner.id).is_some()
    }
}

fn count_lock_timeout() {
    crate::observe::count_by(crate::observe::LOCK_FAILURES, "outcome", "timeout", 1);
}
