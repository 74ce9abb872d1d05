//! Verify, stats, backup and compaction.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{ReadableTable, ReadableTableMetadata};
use sealkv_crypto::Header;

use crate::error::{Error, Result};
use crate::expiry::EXPIRY;
use crate::handle::{Handle, map_open_error};
use crate::meta::META;
use crate::options::Concurrency;
use crate::read::RowKind;
use crate::rows::{DATA, Row, hex_tag, split_row};
use crate::store::{PRIVATE_MODE, Store, create_private_file, write_lock};

impl Store {
    /// Opens every value and reports each one that fails, without stopping at the first.
    pub fn verify(&self) -> Result<Vec<Error>> {
        self.catch_up_keyring()?;
        self.contained(|| self.verify_unguarded())
    }

    /// In shared mode, reads the keyring again before a whole-store scan, so values
    /// another process sealed under a key it made since are not reported as damaged.
    fn catch_up_keyring(&self) -> Result<()> {
        if self.inner.mode != Concurrency::Shared || self.is_poisoned() {
            return Ok(());
        }
        let db = self.db()?;
        let txn = db.begin_read()?;
        let current = txn
            .open_table(META)?
            .get(crate::meta::META_KEYRING)?
            .map(|r| r.value().to_vec());
        drop(txn);
        drop(db);
        if current.as_deref() != Some(crate::store::lock(&self.inner.keyring_seen).as_slice()) {
            self.reload_keyring()?;
        }
        Ok(())
    }

    /// Entries and bytes per namespace, data keys with their use, and the file size.
    pub fn stats(&self) -> Result<Stats> {
        self.catch_up_keyring()?;
        self.contained(|| self.stats_unguarded())
    }

    /// Opens every value and reports each one that fails, without stopping at the first.
    fn verify_unguarded(&self) -> Result<Vec<Error>> {
        let ring = self.ring();
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(DATA)?;
        let owners = self.owners(&ring, &table);
        let mut failures = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let (ns_tag, key_tag) = split_row(k.value());
            let label = owners.label(&ns_tag);
            let row = Row::new(&ns_tag, &key_tag, &v);
            let opened = match owners.kind(&ns_tag) {
                Some(kind) => self.open_named(&ring, &row, &kind, &label).map(|_| ()),
                // A row no catalog names: it must still open (its name cannot be
                // checked against a namespace nobody lists).
                None => self
                    .open_sealed(&ring, &row, &label, || hex_tag(&key_tag))
                    .map(|_| ()),
            };
            if let Err(e) = opened {
                failures.push(e);
            }
        }
        Ok(failures)
    }

    /// Entries and bytes per namespace, data keys with their use, and the file size.
    fn stats_unguarded(&self) -> Result<Stats> {
        let ring = self.ring();
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(DATA)?;
        let owners = self.owners(&ring, &table);
        let mut stats = Stats {
            namespaces: BTreeMap::new(),
            keys: Vec::new(),
            values_per_key: BTreeMap::new(),
            file_size: fs::metadata(&self.inner.path).map(|m| m.len()).unwrap_or(0),
            entries: table.len()?,
        };
        for row in table.iter()? {
            let (k, v) = row?;
            let (ns_tag, _) = split_row(k.value());
            if matches!(owners.kind(&ns_tag), Some(RowKind::Value(..)) | None) {
                let e = stats.namespaces.entry(owners.label(&ns_tag)).or_default();
                e.entries += 1;
                e.bytes += v.value().len() as u64;
            }
            if let Ok(h) = Header::parse(v.value()) {
                *stats.values_per_key.entry(h.key_id).or_default() += 1;
            }
        }
        stats.keys = ring.keys();
        Ok(stats)
    }

    /// Writes a consistent copy of the store to `dest` (which must not exist) while the
    /// store stays in use. The copy opens with the same master key; its file is the
    /// owner's only (mode 0600).
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<()> {
        let dest = dest.as_ref();
        if fs::metadata(dest).is_ok() {
            return Err(Error::AlreadyExists(dest.to_path_buf()));
        }
        let db = self.db()?;
        copy_snapshot(&db, dest, PRIVATE_MODE)
    }

    /// Rewrites the store into a fresh file holding only live data, and puts it in place
    /// of the old one (write to a temporary file, fsync, rename, fsync the directory).
    ///
    /// This is also the purge: redb's own compaction moves pages but leaves old bytes in
    /// freed space, so after destroying a key its ciphertext could linger; a rewrite
    /// leaves nothing but live values. Waits for readers and blocks writers meanwhile.
    /// A crash before the rename leaves the old file; after it, the new one.
    pub fn compact(&self) -> Result<()> {
        self.check_writable()?;
        if self.db()?.is_read_only() {
            return Err(Error::ReadOnly);
        }
        let _commit = self.commit_lock();
        if self.inner.file_locks.as_ref().is_some_and(|l| l.any_held()) {
            return Err(Error::NotAlone);
        }
        let mut slot = write_lock(&self.inner.db);
        let Some(mut db) = slot.take() else {
            return Err(Error::Poisoned);
        };
        // Only our handle may remain before the file is reopened.
        for _ in 0..10_000 {
            match Arc::try_unwrap(db) {
                Ok(only) => {
                    drop(only);
                    break;
                }
                Err(shared) => {
                    db = shared;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        let path = self.inner.path.clone();
        // The file is replaced, so no other process may have it open: in shared mode
        // they would go on writing to the old file. An exclusive open proves it (and
        // keeps them out until the new file is in place).
        let alone = match Store::open_redb(&path, &self.inner.opts, false, Concurrency::Exclusive) {
            Ok(db) => Handle::read_write(db),
            Err(e) => {
                let reopened = self.open_handle();
                match reopened {
                    Ok(h) => *slot = Some(h),
                    Err(_) => self.inner.poisoned.store(true, Ordering::Release),
                }
                return Err(match e {
                    Error::Locked(_) => Error::NotAlone,
                    other => other,
                });
            }
        };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".compact-tmp");
        let tmp = PathBuf::from(tmp);
        let _ = fs::remove_file(&tmp);
        // The new file keeps the mode of the one it replaces.
        let copied = file_mode(&path).and_then(|mode| copy_snapshot(&alone, &tmp, mode));
        let swapped = match copied {
            Ok(()) => fs::rename(&tmp, &path)
                .and_then(|()| sync_dir(&path))
                .map_err(Error::from),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        };
        drop(alone);
        match self.open_handle() {
            Ok(reopened) => *slot = Some(reopened),
            Err(e) => {
                self.inner.poisoned.store(true, Ordering::Release);
                return Err(e);
            }
        }
        if let Some(locks) = &self.inner.file_locks {
            locks.reopen(&path)?;
        }
        swapped
    }
}

/// The permission bits of `path` (on Unix; elsewhere [`PRIVATE_MODE`], unused).
fn file_mode(path: &Path) -> Result<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(PRIVATE_MODE)
    }
}

/// Copies the newest snapshot of `db` into a new file at `dest` with `mode`.
fn copy_snapshot(db: &Handle, dest: &Path, mode: u32) -> Result<()> {
    let snapshot = db.begin_read()?;
    if !create_private_file(dest, mode)? {
        return Err(Error::AlreadyExists(dest.to_path_buf()));
    }
    let result = (|| -> Result<()> {
        let copy = redb::Builder::new()
            .create(dest)
            .map_err(|e| map_open_error(e, dest))?;
        let txn = copy.begin_write()?;
        {
            let src_meta = snapshot.open_table(META)?;
            let mut meta = txn.open_table(META)?;
            for row in src_meta.iter()? {
                let (k, v) = row?;
                meta.insert(k.value(), v.value())?;
            }
            let src = snapshot.open_table(DATA)?;
            let mut data = txn.open_table(DATA)?;
            for row in src.iter()? {
                let (k, v) = row?;
                data.insert(k.value(), v.value())?;
            }
            // Stores written before expiry existed have no index.
            match snapshot.open_table(EXPIRY) {
                Ok(src) => {
                    let mut index = txn.open_table(EXPIRY)?;
                    for row in src.iter()? {
                        index.insert(row?.0.value(), ())?;
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        txn.commit()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
        _ => fs::File::open(".")?.sync_all(),
    }
}

/// What [`Store::stats`] reports.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Per namespace: entries and sealed bytes.
    pub namespaces: BTreeMap<String, NamespaceStats>,
    /// Every data key of the keyring.
    pub keys: Vec<sealkv_crypto::KeyInfo>,
    /// Values sealed under each key id (catalog entries included).
    pub values_per_key: BTreeMap<u32, u64>,
    /// Size of the store file in bytes.
    pub file_size: u64,
    /// Rows in the data table (values and catalog entries).
    pub entries: u64,
}

/// Entries and bytes of one namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceStats {
    /// Values in the namespace.
    pub entries: u64,
    /// Their sealed size in bytes.
    pub bytes: u64,
}
