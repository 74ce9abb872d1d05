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

/// Where a test's stores live: files in a temporary directory, or stores in the
/// PostgreSQL server named by `SEALKV_TEST_PG` (which `scripts/test` starts).
pub struct Place {
    /// A temporary directory (for files either way: backups, copies).
    pub dir: tempfile::TempDir,
    /// The server's base URL (no `?store=`), for a PostgreSQL place.
    pub pg: Option<String>,
    /// Prefix of this place's store names on the server, unique per place.
    prefix: String,
}

static PLACES: AtomicU64 = AtomicU64::new(0);

impl Place {
    /// A place on the given engine.
    pub fn new(pg: Option<String>) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            pg,
            prefix: format!(
                "t{}_{}",
                std::process::id(),
                PLACES.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    /// The address of the store called `name` here: a file path, or a URL.
    pub fn addr(&self, name: &str) -> std::path::PathBuf {
        match &self.pg {
            None => self.dir.path().join(name),
            Some(url) => {
                let clean: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .take(16)
                    .collect();
                std::path::PathBuf::from(format!("{url}?store={}_{clean}", self.prefix))
            }
        }
    }

    /// True for a PostgreSQL place.
    pub fn is_pg(&self) -> bool {
        self.pg.is_some()
    }

    /// A new store with the key and options of [`new_store`].
    pub fn new_store(&self) -> Store {
        Store::create(self.addr("s.sealkv"), key(), fast_opts()).unwrap()
    }
}

/// The PostgreSQL server the tests use, if any. With `SEALKV_REQUIRE_PG` set (as
/// `scripts/test` does), a missing server fails the test rather than skipping it.
pub fn test_pg() -> Option<String> {
    match std::env::var("SEALKV_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("SEALKV_REQUIRE_PG").is_none(),
                "SEALKV_REQUIRE_PG is set but SEALKV_TEST_PG names no server"
            );
            None
        }
    }
}

/// Runs `test` on every engine: a file, then PostgreSQL when a test server is set.
pub fn each_engine(test: impl Fn(&Place)) {
    for place in engines() {
        test(&place);
    }
}

/// A place on every engine (see [`each_engine`]).
pub fn engines() -> Vec<Place> {
    let mut places = vec![Place::new(None)];
    places.extend(test_pg().map(|url| Place::new(Some(url))));
    places
}
