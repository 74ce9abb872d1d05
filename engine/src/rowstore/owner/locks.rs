//! The owner's table of held lock keys: its own transactions' and its clients'.
//!
//! A lock key is held under its keyed hash ([`crate::rowstore::lock_hash`]), so the
//! table, like the file's lock bytes before it, does not show which keys are in use.
//! The owner's own transactions share one entry per hash (the engine's in-process
//! locks already order them); each client lock is its own holder with an id, which
//! its commit checks ([`crate::rowstore::RowWrite::locks_held`]): a lock taken from an
//! owner that has since died is not held on the owner that took over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::guards::lock;

/// Who holds a lock key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Holder {
    /// Transactions of the owner process itself (a count of them).
    Local(usize),
    /// One client lock, by id.
    Client(u64),
}

/// Lock keys held through one owner.
pub(crate) struct LockTable {
    held: Mutex<HashMap<[u8; 32], Holder>>,
    freed: Condvar,
    next_id: AtomicU64,
    /// Set when the owner stops: waiting clients give up.
    stopping: AtomicBool,
    /// This owner's random id: client lock proofs name it, so a proof from an owner
    /// that died is not taken for one of this owner's (whose ids start over).
    instance: u64,
}

impl LockTable {
    pub(crate) fn new() -> Result<Self> {
        let mut instance = [0u8; 8];
        sealkv_crypto::fill_random(&mut instance).map_err(Error::Key)?;
        Ok(Self {
            instance: u64::from_le_bytes(instance),
            held: Mutex::new(HashMap::new()),
            freed: Condvar::new(),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
        })
    }

    /// This owner's id, which its client locks' proofs carry.
    pub(crate) fn instance(&self) -> u64 {
        self.instance
    }

    /// True when `proof` names a client lock this owner holds.
    pub(crate) fn proves(&self, proof: &super::Proof) -> bool {
        proof.instance == self.instance && self.holds(&proof.hash, proof.id)
    }

    /// Takes `hash` for the owner's own transactions.
    pub(crate) fn lock_local(&self, hash: [u8; 32], timeout: Duration) -> Result<()> {
        self.acquire(hash, timeout, |now| match now {
            None => Some(Holder::Local(1)),
            Some(Holder::Local(n)) => Some(Holder::Local(n + 1)),
            Some(Holder::Client(_)) => None,
        })
        .map(|_| ())
    }

    /// Releases one local hold of `hash`.
    pub(crate) fn unlock_local(&self, hash: &[u8; 32]) {
        let mut held = lock(&self.held);
        match held.get_mut(hash) {
            Some(Holder::Local(n)) if *n > 1 => *n -= 1,
            Some(Holder::Local(_)) => {
                held.remove(hash);
                self.freed.notify_all();
            }
            _ => {}
        }
    }

    /// Takes `hash` for a client; returns the lock's id.
    pub(crate) fn lock_client(&self, hash: [u8; 32], timeout: Duration) -> Result<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.acquire(hash, timeout, |now| match now {
            None => Some(Holder::Client(id)),
            Some(_) => None,
        })?;
        Ok(id)
    }

    /// Releases the client lock `id` on `hash`, if it is still held.
    pub(crate) fn unlock_client(&self, hash: &[u8; 32], id: u64) {
        let mut held = lock(&self.held);
        if held.get(hash) == Some(&Holder::Client(id)) {
            held.remove(hash);
            self.freed.notify_all();
        }
    }

    /// True while the client lock `id` holds `hash`.
    pub(crate) fn holds(&self, hash: &[u8; 32], id: u64) -> bool {
        lock(&self.held).get(hash) == Some(&Holder::Client(id))
    }

    /// True while any client lock is held.
    pub(crate) fn any_client(&self) -> bool {
        lock(&self.held)
            .values()
            .any(|h| matches!(h, Holder::Client(_)))
    }

    /// Wakes every waiter and makes them give up (the owner is stopping).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _held = lock(&self.held);
        self.freed.notify_all();
    }

    fn acquire(
        &self,
        hash: [u8; 32],
        timeout: Duration,
        take: impl Fn(Option<Holder>) -> Option<Holder>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut held = lock(&self.held);
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return Err(crate::rowstore::owner::wire::lost(std::io::Error::other(
                    "the owner process is closing the store",
                )));
            }
            if let Some(next) = take(held.get(&hash).copied()) {
                held.insert(hash, next);
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(Error::LockTimeout { waited });
            }
            held = self
                .freed
                .wait_timeout(held, timeout - waited)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_lock_excludes_others_until_released() {
        let t = LockTable::new().unwrap();
        let h = [7u8; 32];
        let id = t.lock_client(h, Duration::from_millis(10)).unwrap();
        assert!(t.holds(&h, id));
        assert!(matches!(
            t.lock_local(h, Duration::from_millis(20)),
            Err(Error::LockTimeout { .. })
        ));
        assert!(matches!(
            t.lock_client(h, Duration::from_millis(20)),
            Err(Error::LockTimeout { .. })
        ));
        t.unlock_client(&h, id);
        assert!(!t.holds(&h, id));
        t.lock_local(h, Duration::from_millis(10)).unwrap();
        t.lock_local(h, Duration::from_millis(10)).unwrap();
        t.unlock_local(&h);
        assert!(t.lock_client(h, Duration::from_millis(10)).is_err());
        t.unlock_local(&h);
        let again = t.lock_client(h, Duration::from_millis(10)).unwrap();
        assert_ne!(again, id);
        // A stale release (an id no longer holding) changes nothing.
        t.unlock_client(&h, id);
        assert!(t.holds(&h, again));
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_freed() {
        let t = std::sync::Arc::new(LockTable::new().unwrap());
        let h = [1u8; 32];
        let id = t.lock_client(h, Duration::from_millis(10)).unwrap();
        let t2 = t.clone();
        let waiter = std::thread::spawn(move || t2.lock_client(h, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(30));
        t.unlock_client(&h, id);
        let got = waiter.join().unwrap().unwrap();
        assert!(t.holds(&h, got));
    }
}
