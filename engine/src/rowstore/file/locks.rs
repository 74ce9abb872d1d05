//! Transaction locks across processes.
//!
//! In shared mode several processes write one file, so a transaction's lock key must
//! exclude other processes too. Each lock key maps to one byte far past anything redb
//! uses (redb's own lock bytes sit at 2^62 and a little above), and a transaction holds
//! an exclusive byte-range lock on it through a second, independent open of the store
//! file (`redb::backends::FileBackend`: open file description locks on Linux,
//! `LockFileEx` on Windows, so closing one handle never drops another's locks). The
//! byte is chosen by a keyed hash, so the lock table of the operating system does not
//! show which lock keys (phone numbers, often) are in use.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redb::StorageBackend;
use redb::backends::FileBackend;
use sealkv_crypto::NameKey;

use crate::error::{Error, Result};
use crate::guards::lock;

/// Where lock bytes start: 2^62 + 2^40, well past redb's.
const AREA: u64 = (1 << 62) + (1 << 40);

/// Cross-process transaction locks of one store.
pub(crate) struct FileLocks {
    /// Replaced when compaction puts a new file in place.
    backend: std::sync::RwLock<FileBackend>,
    /// Turns lock names into bytes (derived from the name key).
    salt: [u8; 16],
    /// Lock byte → holders in this process. Two lock keys may share a byte: the file
    /// lock is taken by the first holder and released by the last.
    held: Mutex<HashMap<u64, usize>>,
}

pub(crate) struct FileLockGuard<'a> {
    locks: &'a FileLocks,
    offset: u64,
}

impl FileLocks {
    pub(crate) fn open(path: &Path, nk: &NameKey) -> Result<Self> {
        Ok(Self {
            backend: std::sync::RwLock::new(Self::open_backend(path)?),
            salt: nk.record_tag(b"transaction lock bytes"),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Locks on a file of their own beside the store at `path` (`<store>.locks`,
    /// created mode 0600 when missing): the owner mode, whose owner has the store file
    /// alone, takes lock keys there, each process for itself.
    pub(crate) fn open_beside(path: &Path, nk: &NameKey) -> Result<Self> {
        let mut beside = path.as_os_str().to_owned();
        beside.push(".locks");
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, super::PRIVATE_MODE);
        let file = options.open(std::path::PathBuf::from(beside))?;
        Ok(Self {
            backend: std::sync::RwLock::new(
                FileBackend::new(file).map_err(|e| Error::Io(std::io::Error::other(e)))?,
            ),
            salt: nk.record_tag(b"transaction lock bytes"),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn open_backend(path: &Path) -> Result<FileBackend> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        FileBackend::new(file).map_err(|e| Error::Io(std::io::Error::other(e)))
    }

    /// Locks the new file at `path` from now on (compaction replaced the file). Refused
    /// while a transaction of this process holds a lock.
    pub(crate) fn reopen(&self, path: &Path) -> Result<()> {
        let held = lock(&self.held);
        if !held.is_empty() {
            return Err(Error::Io(std::io::Error::other(
                "a transaction holds a lock key; compact when it has ended",
            )));
        }
        *crate::guards::write_lock(&self.backend) = Self::open_backend(path)?;
        Ok(())
    }

    /// True while a transaction of this process holds a lock key.
    pub(crate) fn any_held(&self) -> bool {
        !lock(&self.held).is_empty()
    }

    fn offset(&self, session: Option<&str>, lock_key: &str) -> u64 {
        let hash = crate::rowstore::lock_hash(&self.salt, session, lock_key);
        let mut word = [0u8; 4];
        word.copy_from_slice(&hash[..4]);
        AREA + u64::from(u32::from_le_bytes(word))
    }

    fn range(offset: u64) -> (Bound<u64>, Bound<u64>) {
        (Bound::Included(offset), Bound::Excluded(offset + 1))
    }

    /// [`FileLocks::lock`] as a row store's lock guard, for an engine that has lock
    /// bytes (`None`: only this process writes, and the in-process lock is enough).
    pub(crate) fn guard<'a>(
        locks: Option<&'a FileLocks>,
        session: Option<&str>,
        lock_key: &str,
        timeout: Duration,
    ) -> Result<Option<crate::rowstore::LockGuard<'a>>> {
        match locks {
            Some(locks) => Ok(Some(Box::new(locks.lock(session, lock_key, timeout)?))),
            None => Ok(None),
        }
    }

    /// Takes the lock of `lock_key` (in `session`), waiting up to `timeout` for another
    /// process to release it.
    pub(crate) fn lock(
        &self,
        session: Option<&str>,
        lock_key: &str,
        timeout: Duration,
    ) -> Result<FileLockGuard<'_>> {
        let offset = self.offset(session, lock_key);
        let started = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            {
                let mut held = lock(&self.held);
                if let Some(n) = held.get_mut(&offset) {
                    *n += 1;
                    return Ok(FileLockGuard {
                        locks: self,
                        offset,
                    });
                }
                let (start, end) = Self::range(offset);
                let taken = crate::guards::read_lock(&self.backend)
                    .try_lock_range(start, end)
                    .map_err(|e| Error::Io(std::io::Error::other(e)))?;
                if taken {
                    held.insert(offset, 1);
                    return Ok(FileLockGuard {
                        locks: self,
                        offset,
                    });
                }
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(Error::LockTimeout { waited });
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

/// A file lock is the process's own: it cannot be lost while held.
impl crate::rowstore::HeldLock for FileLockGuard<'_> {}

impl Drop for FileLockGuard<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.locks.held);
        let last = match held.get_mut(&self.offset) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => true,
        };
        if last {
            held.remove(&self.offset);
            let (start, end) = FileLocks::range(self.offset);
            // Unlocking a range this handle holds fails only if the handle is gone;
            // closing it releases the lock as well.
            let _ = crate::guards::read_lock(&self.locks.backend).unlock_range(start, end);
        }
    }
}
