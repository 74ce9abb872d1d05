//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::StorageBackend;
use redb::backends::FileBackend;
use sealkv_engine::{KdfParams, MasterKey, Options, Passphrase, Secret, Store};

pub fn key() -> MasterKey {
    MasterKey::from_bytes(&[0x5a; 32]).unwrap()
}

pub fn fast_opts() -> Options {
    Options {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        ..Options::default()
    }
}

pub fn passphrase(p: &str) -> Secret {
    Secret::Passphrase(Passphrase::new(p))
}

pub fn new_store(dir: &Path) -> Store {
    Store::create(dir.join("s.sealkv"), key(), fast_opts()).unwrap()
}

/// A file backend that fails the Nth write, sync or set_len (counting all three from 1)
/// while armed. Shared counters let a test sweep N.
#[derive(Debug)]
pub struct Faulty {
    pub inner: FileBackend,
    pub state: Arc<FaultState>,
}

#[derive(Debug, Default)]
pub struct FaultState {
    /// Operations seen since arming.
    pub ops: AtomicU64,
    /// Fail the operation with this number (0: never).
    pub fail_at: AtomicU64,
    /// Keep failing every operation after the first failure.
    pub sticky: std::sync::atomic::AtomicBool,
    pub failures: AtomicU64,
    /// Kind of the first injected failure: 1 write, 2 sync, 3 set_len.
    pub first_kind: AtomicU64,
    /// Report injected failures as "no space left on device".
    pub full: std::sync::atomic::AtomicBool,
}

impl FaultState {
    pub fn arm(&self, n: u64, sticky: bool) {
        self.ops.store(0, Ordering::SeqCst);
        self.failures.store(0, Ordering::SeqCst);
        self.sticky.store(sticky, Ordering::SeqCst);
        self.first_kind.store(0, Ordering::SeqCst);
        self.fail_at.store(n, Ordering::SeqCst);
    }
    pub fn disarm(&self) {
        self.fail_at.store(0, Ordering::SeqCst);
    }
    fn check(&self, kind: u64) -> io::Result<()> {
        let at = self.fail_at.load(Ordering::SeqCst);
        if at == 0 {
            return Ok(());
        }
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        if n == at || (self.sticky.load(Ordering::SeqCst) && n > at) {
            if self.failures.fetch_add(1, Ordering::SeqCst) == 0 {
                self.first_kind.store(kind, Ordering::SeqCst);
            }
            if self.full.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device (injected)",
                ));
            }
            return Err(io::Error::other("injected fault"));
        }
        Ok(())
    }
}

impl StorageBackend for Faulty {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state.check(3)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.state.check(2)?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.state.check(1)?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(
        &self,
        s: std::ops::Bound<u64>,
        e: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(s, e)
    }
    fn try_lock_shared_range(
        &self,
        s: std::ops::Bound<u64>,
        e: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(s, e)
    }
    fn lock_range(
        &self,
        s: std::ops::Bound<u64>,
        e: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_range(s, e)
    }
    fn lock_shared_range(
        &self,
        s: std::ops::Bound<u64>,
        e: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(s, e)
    }
    fn unlock_range(
        &self,
        s: std::ops::Bound<u64>,
        e: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(s, e)
    }
    fn query_lock_range(
        &self,
        s: std::ops::Bound<u64>,
        e: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(s, e)
    }
}

/// Options whose backend is a [`Faulty`] file backend sharing `state`.
pub fn faulty_opts(state: Arc<FaultState>) -> Options {
    let factory: sealkv_engine::internal::BackendFactory =
        Arc::new(move |path: &Path, _create: bool| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let inner = FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))?;
            Ok(Box::new(Faulty {
                inner,
                state: state.clone(),
            }) as Box<dyn StorageBackend>)
        });
    Options {
        backend: Some(factory),
        commit_retry_delay: std::time::Duration::from_millis(1),
        ..fast_opts()
    }
}
