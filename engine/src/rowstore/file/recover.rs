//! Crash recovery in memory, so the key is checked before any byte of a file is written.
//!
//! A store that was not closed cleanly (after a crash, or a copy of a store an app holds
//! open) needs redb's recovery, which a read-only open refuses and a read-write open
//! performs by writing the file. Recovering before the master key is checked would let
//! a wrong key rewrite the file. So such a file is first opened through
//! [`CowBackend`]: reads come from the file, every write redb makes (the recovery
//! itself) stays in memory. The key is checked on that view; a read-only open keeps
//! reading it, and a read-write open drops it and lets redb recover the file for real.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Size of the blocks the overlay keeps.
const BLOCK: u64 = 4096;

/// A view of a file whose writes stay in memory. Locks are the file's own, so the
/// view excludes and is excluded by other openers exactly as a plain open would be.
pub(crate) struct CowBackend {
    file: FileBackend,
    /// False when the file could only be opened read-only: locks are then not taken
    /// (a file lock of the exclusive kind needs write access).
    locks: bool,
    overlay: Mutex<Overlay>,
}

struct Overlay {
    /// Length of the view.
    len: u64,
    /// Bytes of the file still visible below the overlay: the file's length, lowered by
    /// any truncation of the view (bytes past it read as zeros unless written again).
    file_len: u64,
    /// Written blocks, by block index, each `BLOCK` bytes.
    blocks: BTreeMap<u64, Box<[u8]>>,
}

impl fmt::Debug for CowBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CowBackend").finish_non_exhaustive()
    }
}

impl CowBackend {
    /// A view of the file at `path`, which is never written.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let (file, locks) = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                (OpenOptions::new().read(true).open(path)?, false)
            }
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Self {
            file,
            locks,
            overlay: Mutex::new(Overlay {
                len,
                file_len: len,
                blocks: BTreeMap::new(),
            }),
        })
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        // Every update below completes before the guard drops; a poisoned lock holds
        // consistent data.
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the visible bytes of block `index` (the overlay's, else the file's, zeros
    /// past the file) into `out`.
    fn load_block(&self, o: &Overlay, index: u64, out: &mut [u8]) -> io::Result<()> {
        if let Some(block) = o.blocks.get(&index) {
            out.copy_from_slice(block);
            return Ok(());
        }
        out.fill(0);
        let start = index * BLOCK;
        if start < o.file_len {
            let n = (o.file_len - start).min(BLOCK) as usize;
            self.file.read(start, &mut out[..n])?;
        }
        Ok(())
    }

    fn lock_or_unsupported<T>(
        &self,
        f: impl FnOnce(&FileBackend) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        if self.locks {
            f(&self.file)
        } else {
            Err(BackendError::Unsupported)
        }
    }
}

impl StorageBackend for CowBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.overlay().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let o = self.overlay();
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|&end| end <= o.len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let mut block = vec![0u8; BLOCK as usize];
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = ((BLOCK as usize) - within).min((end - at) as usize);
            let dest = &mut out[(at - offset) as usize..(at - offset) as usize + n];
            match o.blocks.get(&index) {
                Some(b) => dest.copy_from_slice(&b[within..within + n]),
                None if at + n as u64 <= o.file_len => self.file.read(at, dest)?,
                None => {
                    self.load_block(&o, index, &mut block)?;
                    dest.copy_from_slice(&block[within..within + n]);
                }
            }
            at += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut o = self.overlay();
        if len < o.len {
            // Bytes past `len` must read as zeros if the view grows again.
            o.file_len = o.file_len.min(len);
            let first_gone = len.div_ceil(BLOCK);
            o.blocks.split_off(&first_gone);
            if !len.is_multiple_of(BLOCK)
                && let Some(b) = o.blocks.get_mut(&(len / BLOCK))
            {
                b[(len % BLOCK) as usize..].fill(0);
            }
        }
        o.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut o = self.overlay();
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = ((BLOCK as usize) - within).min((end - at) as usize);
            if !o.blocks.contains_key(&index) {
                let mut block = vec![0u8; BLOCK as usize].into_boxed_slice();
                self.load_block(&o, index, &mut block)?;
                o.blocks.insert(index, block);
            }
            if let Some(b) = o.blocks.get_mut(&index) {
                b[within..within + n]
                    .copy_from_slice(&data[(at - offset) as usize..(at - offset) as usize + n]);
            }
            at += n as u64;
        }
        o.len = o.len.max(end);
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.lock_or_unsupported(|f| f.try_lock_range(start, end))
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.lock_or_unsupported(|f| f.try_lock_shared_range(start, end))
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.lock_or_unsupported(|f| f.lock_range(start, end))
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.lock_or_unsupported(|f| f.lock_shared_range(start, end))
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.lock_or_unsupported(|f| f.unlock_range(start, end))
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.lock_or_unsupported(|f| f.query_lock_range(start, end))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn writes_stay_in_memory_and_reads_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let original: Vec<u8> = (0..3 * BLOCK as usize + 100).map(|i| i as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let cow = CowBackend::open(&path).unwrap();
        cow.write(BLOCK - 2, &[0xAA; 5]).unwrap();
        let mut got = vec![0u8; 10];
        cow.read(BLOCK - 5, &mut got).unwrap();
        let mut want = original[BLOCK as usize - 5..BLOCK as usize + 5].to_vec();
        want[3..8].fill(0xAA);
        assert_eq!(got, want);
        // Truncate into block 1, grow again: the cut bytes read as zeros.
        cow.set_len(BLOCK + 10).unwrap();
        cow.set_len(3 * BLOCK).unwrap();
        let mut tail = vec![1u8; 20];
        cow.read(BLOCK + 5, &mut tail).unwrap();
        assert_eq!(
            &tail[..5],
            &original[BLOCK as usize + 5..BLOCK as usize + 10]
        );
        assert!(tail[5..].iter().all(|&b| b == 0));
        let mut past = [0u8; 1];
        assert!(cow.read(3 * BLOCK, &mut past).is_err());
        // Writing past the end grows the view.
        cow.write(4 * BLOCK, b"xyz").unwrap();
        assert_eq!(cow.len().unwrap(), 4 * BLOCK + 3);
        drop(cow);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            original,
            "the file is untouched"
        );
    }
}
