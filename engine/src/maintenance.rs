//! Verify, stats, backup and compaction.

use std::collections::BTreeMap;
use std::fs;
use std::ops::Bound;
use std::path::Path;

use sealkv_crypto::Header;

use crate::error::{Error, Result};
use crate::guards::read_lock;
use crate::meta::{META_MODE, encode_mode, open_keyring, read_meta, seal_keyring_into};
use crate::options::Concurrency;
use crate::read::RowKind;
use crate::rows::{Row, hex_tag, split_row};
use crate::rowstore::file::FileRows;
use crate::rowstore::file::PRIVATE_MODE;
use crate::rowstore::postgres::PgRows;
use crate::rowstore::{Location, Table, copy_rows};
use crate::store::Store;

impl Store {
    /// Opens every value and reports each one that fails, without stopping at the first.
    pub fn verify(&self) -> Result<Vec<Error>> {
        self.catch_up_keyring()?;
        self.contained(|| self.verify_unguarded())
    }

    /// In shared mode, reads the keyring again before a whole-store scan, so values
    /// another process sealed under a key it made since are not reported as damaged.
    fn catch_up_keyring(&self) -> Result<()> {
        if !self.inner.mode.others_write() || self.is_poisoned() {
            return Ok(());
        }
        let current = crate::meta::meta_record(&*self.rows().view()?, crate::meta::META_KEYRING)?;
        if current.as_deref() != Some(crate::guards::lock(&self.inner.keyring_seen).as_slice()) {
            self.reload_keyring()?;
        }
        Ok(())
    }

    /// Entries and bytes per namespace, data keys with their use, and the file size.
    pub fn stats(&self) -> Result<Stats> {
        self.catch_up_keyring()?;
        let stats = self.contained(|| self.stats_unguarded())?;
        crate::observe::gauge(crate::observe::STORE_BYTES, stats.file_size as f64);
        Ok(stats)
    }

    /// Opens every value and reports each one that fails, without stopping at the first.
    fn verify_unguarded(&self) -> Result<Vec<Error>> {
        let ring = self.ring();
        let table = self.rows().snapshot()?;
        let owners = self.owners(&ring, &*table);
        let mut failures = Vec::new();
        let state_keys = crate::guards::read_lock(&self.inner.state).clone();
        let mut content = crate::state::ContentHash::default();
        table.scan(Table::Data, ALL, &mut |k, v| {
            if let Some(keys) = &state_keys {
                content.add(&keys.row(k, v));
            }
            let Ok(k) = <&[u8; 32]>::try_from(k) else {
                // Not a row sealkv wrote (its keys are two 16-byte tags): put there
                // behind the store's back.
                failures.push(Error::Corrupt(format!(
                    "a data row whose key is {} bytes, not 32: not written by sealkv",
                    k.len()
                )));
                return Ok(true);
            };
            let (ns_tag, key_tag) = split_row(k);
            let label = owners.label(&ns_tag);
            let row = Row::new(&ns_tag, &key_tag, v);
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
            Ok(true)
        })?;
        // Rows put back from an older copy, added or removed behind sealkv's back each
        // open as they are, but the rows no longer add up to the state record's hash.
        if let Some(keys) = &state_keys {
            match crate::state::State::read(&*table, keys) {
                Ok(Some(state)) if state.content == content => {}
                Ok(Some(_)) => failures.push(Error::ContentChanged),
                Ok(None) => failures.push(Error::MetaTampered),
                Err(e) => failures.push(e),
            }
        }
        table.scan(Table::Expiry, ALL, &mut |k, _| {
            if k.len() != 40 {
                failures.push(Error::Corrupt(format!(
                    "an expiry index row whose key is {} bytes, not 40: not written by sealkv",
                    k.len()
                )));
            }
            Ok(true)
        })?;
        Ok(failures)
    }

    /// Entries and bytes per namespace, data keys with their use, and the file size.
    fn stats_unguarded(&self) -> Result<Stats> {
        let ring = self.ring();
        let table = self.rows().snapshot()?;
        let owners = self.owners(&ring, &*table);
        let mut stats = Stats {
            namespaces: BTreeMap::new(),
            keys: Vec::new(),
            values_per_key: BTreeMap::new(),
            file_size: self.rows().size(),
            entries: 0,
        };
        table.scan(Table::Data, ALL, &mut |k, v| {
            stats.entries += 1;
            let Ok(k) = <&[u8; 32]>::try_from(k) else {
                return Ok(true);
            };
            let (ns_tag, _) = split_row(k);
            if matches!(owners.kind(&ns_tag), Some(RowKind::Value(..)) | None) {
                let e = stats.namespaces.entry(owners.label(&ns_tag)).or_default();
                e.entries += 1;
                e.bytes += v.len() as u64;
            }
            if let Ok(h) = Header::parse(v) {
                *stats.values_per_key.entry(h.key_id).or_default() += 1;
            }
            Ok(true)
        })?;
        stats.keys = ring.keys();
        Ok(stats)
    }

    /// Writes a consistent copy of the store to `dest` (which must not exist) while the
    /// store stays in use. The copy opens with the same master key; a file it creates is
    /// the owner's only (mode 0600).
    ///
    /// `dest` may be a PostgreSQL URL (see [`Store::create`]), and this store may be on
    /// a server: the copy goes between engines in either direction. Rows are copied as
    /// they are, sealed: nothing is decrypted or sealed again, and the copy keeps the
    /// store's id, which every envelope binds.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<()> {
        let _span = tracing::info_span!(target: "sealkv::backup", "backup").entered();
        let source = self.rows();
        match Location::parse(dest.as_ref())? {
            Location::File(dest) => {
                if fs::metadata(&dest).is_ok() {
                    return Err(Error::AlreadyExists(dest));
                }
                self.contained(|| FileRows::write_new(&dest, PRIVATE_MODE, &*source.snapshot()?))
            }
            Location::Postgres(url) => self.contained(|| {
                let snapshot = source.snapshot()?;
                let meta = read_meta(&*snapshot, self.path())?;
                if meta.format < crate::meta::FORMAT_VERSION {
                    return Err(Error::NeedsUpgrade);
                }
                PgRows::create(&url, &self.inner.opts, &mut |w| {
                    copy_rows(&*snapshot, w)?;
                    if meta.mode != Concurrency::MultiWriter {
                        // A store on a server is shared by nature (any process on any
                        // host may open it): the copy records so, and its keyring,
                        // which authenticates the mode, is sealed again to match.
                        w.put(
                            Table::Meta,
                            META_MODE.as_bytes(),
                            &encode_mode(Concurrency::MultiWriter),
                        )?;
                        let key = read_lock(&self.inner.master);
                        let ring = open_keyring(&key, &meta.db_id, &meta.keyring)?;
                        seal_keyring_into(w, &ring, &key, &meta.db_id)?;
                    }
                    Ok(())
                })
                .map(drop)
            }),
        }
    }

    /// Reclaims the space of deleted and overwritten values. On a file, rewrites it
    /// compactly: the file must not be open in another process, and no transaction may
    /// be in progress ([`Error::NotAlone`] otherwise; nothing is changed). On
    /// PostgreSQL, runs `VACUUM` on the store's tables.
    pub fn compact(&self) -> Result<()> {
        self.check_writable()?;
        if self.rows().is_read_only() {
            return Err(Error::ReadOnly);
        }
        let _commit = self.commit_lock();
        let result = self.rows().compact();
        if self.rows().lost() {
            self.inner
                .poisoned
                .store(true, std::sync::atomic::Ordering::Release);
        }
        result
    }
}

/// Every key.
const ALL: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Unbounded, Bound::Unbounded);

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
    /// Size of the store in bytes: the file, or on PostgreSQL its tables with their
    /// indexes (0 where the server cannot say).
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
