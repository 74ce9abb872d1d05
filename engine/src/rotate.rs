//! Key life cycle: data-key rotation with resumable re-encryption, destruction of
//! unused keys, master-key change, and automatic rotation.
//!
//! Re-encryption runs on an explicit call ([`Store::reencrypt`]), not in a background
//! thread: it rewrites every value, and a library that starts rewriting the whole file
//! on its own, in a process that did not ask for it, surprises the process (I/O
//! bursts, a thread outliving the caller's expectations). Automatic rotation only
//! makes a new primary key, which is cheap and immediate; the CLI's `rotate` and the
//! operator decide when the rewrite runs.

use std::ops::Bound;

use sealkv_crypto::{Context, Header, KeyState, Keyring, envelope};

use crate::commit::KeyringWrite;
use crate::error::{Error, Result};
use crate::guards::write_lock;
use crate::options::Secret;
use crate::rows::{MAX_NAME_LEN, split_row};
use crate::rowstore::{RowWrite, Table};
use crate::store::Store;

pub(crate) const META_CURSOR: &str = "reencrypt_cursor";

/// Progress of a re-encryption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReencryptProgress {
    /// Rows examined so far (in this run).
    pub scanned: u64,
    /// Rows in the store when the run began.
    pub total: u64,
    /// Values re-sealed under the primary key so far (in this run).
    pub resealed: u64,
}

impl Store {
    /// Makes a new primary data key (with the store's cipher); the old primary becomes
    /// decrypt-only. Returns the new key id. Values keep their old key until
    /// [`Store::reencrypt`] runs.
    pub fn rotate(&self) -> Result<u32> {
        self.check_writable()?;
        let _span = tracing::info_span!(target: "sealkv::keys", "rotate").entered();
        let made = self.change_keyring(|ring| self.new_primary(ring).map(Some), true)?;
        crate::observe::count(crate::observe::ROTATIONS, 1);
        tracing::info!(target: "sealkv::keys", "rotated the primary data key");
        // The change above always makes a key, so `made` is never None; were it to be,
        // the keyring's primary would still be the right answer.
        Ok(match made {
            Some(id) => id,
            None => self.ring().primary().id(),
        })
    }

    /// Makes a new primary key in `ring` (not yet persisted).
    fn new_primary(&self, ring: &mut Keyring) -> Result<u32> {
        ring.rotate(self.inner.opts.cipher, (self.inner.opts.clock)())
            .map_err(Error::Key)
    }

    /// Applies `change` to the keyring and persists it, with the commit path held.
    /// `change` returns None when the keyring needs no change: then nothing is written.
    /// If another process changed the keyring meanwhile, `change` runs again on the
    /// fresh one, and decides again whether to change anything; if the commit fails,
    /// the keyring goes back to what the file holds.
    fn change_keyring<T>(
        &self,
        mut change: impl FnMut(&mut Keyring) -> Result<Option<T>>,
        reset_cursor: bool,
    ) -> Result<Option<T>> {
        let mut ring = write_lock(&self.inner.keyring);
        let _commit = self.commit_lock();
        for _ in 0..16 {
            let Some(value) = change(&mut ring)? else {
                return Ok(None);
            };
            match self.write_with_keyring(&ring, KeyringWrite::Always, |txn| {
                if reset_cursor {
                    txn.delete(Table::Meta, META_CURSOR.as_bytes())?;
                }
                Ok(())
            }) {
                Ok(()) => return Ok(Some(value)),
                Err(Error::KeyringChanged) => self.reload_into(&mut ring)?,
                Err(e) => {
                    // Nothing was committed: go back to the keyring on disk.
                    self.reload_into(&mut ring)?;
                    return Err(e);
                }
            }
        }
        Err(Error::KeyringChanged)
    }

    /// Re-seals every value not under the primary key, `batch` values per write
    /// transaction. Each batch commits together with the job's cursor, so a crash loses
    /// at most the batch in flight and calling this again resumes after the last
    /// committed batch. Readers are never blocked; writers wait at most one batch.
    /// `progress` is called after every batch.
    ///
    /// One call makes one pass over the values, from the cursor to the end: each batch
    /// is sealed under the primary key when it commits. A rotation during the pass (by
    /// `progress`, another thread or another process) does not start it over, so the
    /// values it already passed stay under the key that was primary then, which the
    /// job does not destroy. The rotation deletes the cursor, and the pass no longer
    /// writes it: the next call makes a whole pass under the new primary.
    pub fn reencrypt(
        &self,
        batch: usize,
        mut progress: impl FnMut(ReencryptProgress),
    ) -> Result<ReencryptProgress> {
        self.check_writable()?;
        let _span = tracing::info_span!(target: "sealkv::keys", "reencrypt", batch).entered();
        let batch = batch.max(1);
        let (total, resume) = {
            let snapshot = self.rows().snapshot()?;
            let total = snapshot.len(Table::Data)?;
            let cursor = snapshot
                .get(Table::Meta, META_CURSOR.as_bytes())?
                .and_then(|v| <[u8; 32]>::try_from(&*v).ok());
            (total, cursor)
        };
        let mut report = ReencryptProgress {
            scanned: 0,
            total,
            resealed: 0,
        };
        // Where the pass is: it only moves forward, whatever the cursor says meanwhile.
        let mut position = resume;
        // The cursor as this pass last saw or wrote it. Every rotation deletes the
        // cursor, as values before it are no longer under the primary: once the cursor
        // is not this one, the pass goes on without writing it.
        let mut expected = resume;
        let mut owns_cursor = true;
        loop {
            let ring = self.ring();
            let primary = ring.primary().id();
            let snapshot = self.rows().snapshot()?;
            let from = match &position {
                Some(c) => Bound::Excluded(&c[..]),
                None => Bound::Unbounded,
            };
            let mut rewrites: Vec<([u8; 32], Vec<u8>, Vec<u8>)> = Vec::new();
            let mut last = None;
            let mut scanned: u64 = 0;
            snapshot.scan(Table::Data, (from, Bound::Unbounded), &mut |k, sealed| {
                let Ok(key) = <[u8; 32]>::try_from(k) else {
                    return Ok(true);
                };
                scanned += 1;
                last = Some(key);
                let header = Header::parse(sealed).ok();
                if header.is_some_and(|h| h.key_id != primary) {
                    let (ns_tag, key_tag) = split_row(&key);
                    let ctx = Context {
                        db_id: &self.inner.db_id,
                        namespace: &ns_tag,
                        key: &key_tag,
                    };
                    let limit = self.inner.opts.max_value_size + 4 + MAX_NAME_LEN;
                    // A value that does not open is left as it is; verify() reports it.
                    if let Ok(plain) = envelope::open(&ring, &ctx, sealed, limit) {
                        let resealed =
                            envelope::seal(&ring, &self.inner.opts.compression, &ctx, &plain)
                                .map_err(Error::Key)?;
                        rewrites.push((key, sealed.to_vec(), resealed));
                    }
                }
                Ok(rewrites.len() < batch && scanned < batch as u64 * 8)
            })?;
            // The commit below may have to reopen the database after an I/O error, which
            // waits for every handle to be released: ours included.
            drop(snapshot);
            let Some(last) = last else {
                // Finished: drop the cursor, if it is still this pass's.
                let _commit = self.commit_lock();
                let done = self.write_with_keyring(&ring, KeyringWrite::IfNeeded, |txn| {
                    if owns_cursor && cursor_is(&*txn, expected.as_ref())? {
                        txn.delete(Table::Meta, META_CURSOR.as_bytes())?;
                    }
                    Ok(())
                });
                match done {
                    Err(Error::KeyringChanged) => {
                        drop(_commit);
                        drop(ring);
                        self.reload_keyring()?;
                        continue;
                    }
                    other => return other.map(|()| report),
                }
            };
            let mut applied = 0;
            let mut wrote_cursor = false;
            {
                let _span =
                    tracing::debug_span!(target: "sealkv::keys", "reencrypt_batch").entered();
                let _commit = self.commit_lock();
                let committed = self.write_with_keyring(&ring, KeyringWrite::IfNeeded, |txn| {
                    applied = 0;
                    for (key, old, new) in &rewrites {
                        // Only if no writer replaced it since the snapshot.
                        let current = txn.get(Table::Data, key)?.map(|v| *v == **old);
                        if current == Some(true) {
                            txn.put(Table::Data, key, new)?;
                            applied += 1;
                        }
                    }
                    wrote_cursor = owns_cursor && cursor_is(&*txn, expected.as_ref())?;
                    if wrote_cursor {
                        txn.put(Table::Meta, META_CURSOR.as_bytes(), &last)?;
                    }
                    Ok(())
                });
                // Another process changed the keys: this batch was sealed under a stale
                // keyring. Read it again and redo the batch.
                if matches!(committed, Err(Error::KeyringChanged)) {
                    drop(_commit);
                    drop(ring);
                    self.reload_keyring()?;
                    continue;
                }
                committed?;
            }
            position = Some(last);
            if wrote_cursor {
                expected = Some(last);
            } else {
                owns_cursor = false;
            }
            report.scanned += scanned;
            report.resealed += applied;
            crate::observe::count(crate::observe::REENCRYPTED, applied);
            tracing::debug!(
                target: "sealkv::keys",
                scanned = report.scanned,
                total = report.total,
                resealed = report.resealed,
                "re-encryption batch committed"
            );
            // Rows that writers added during the pass are counted too.
            report.total = report.total.max(report.scanned);
            // With no lock held: the callback may rotate, write, or anything else.
            drop(ring);
            progress(report);
        }
    }

    /// Destroys a decrypt-only data key that no value uses: its bytes are wiped from the
    /// keyring. Refused, naming the count, while values still use it.
    pub fn destroy_key(&self, key_id: u32) -> Result<()> {
        self.check_writable()?;
        self.change_keyring(
            |ring| {
                let in_use = self.values_per_key()?.get(&key_id).copied().unwrap_or(0);
                if in_use > 0 {
                    return Err(Error::KeyInUse {
                        key_id,
                        values: in_use,
                    });
                }
                ring.destroy(key_id).map(Some).map_err(Error::Key)
            },
            false,
        )?;
        crate::observe::count(crate::observe::KEYS_DESTROYED, 1);
        tracing::info!(target: "sealkv::keys", key_id, "destroyed a data key");
        Ok(())
    }

    /// Destroys every decrypt-only key that no value uses; returns their ids.
    pub fn destroy_unused_keys(&self) -> Result<Vec<u32>> {
        let candidates: Vec<u32> = self
            .ring()
            .keys()
            .iter()
            .filter(|k| k.state == KeyState::DecryptOnly)
            .map(|k| k.id)
            .collect();
        let mut destroyed = Vec::new();
        for id in candidates {
            match self.destroy_key(id) {
                Ok(()) => destroyed.push(id),
                Err(Error::KeyInUse { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(destroyed)
    }

    pub(crate) fn values_per_key(&self) -> Result<std::collections::BTreeMap<u32, u64>> {
        let mut counts = std::collections::BTreeMap::new();
        self.rows().view()?.scan(
            Table::Data,
            (Bound::Unbounded, Bound::Unbounded),
            &mut |_, v| {
                if let Ok(h) = Header::parse(v) {
                    *counts.entry(h.key_id).or_insert(0u64) += 1;
                }
                Ok(true)
            },
        )?;
        Ok(counts)
    }

    /// Changes the master key or passphrase. Only the keyring is re-sealed, in one
    /// transaction whatever the data size: afterwards the old secret gets
    /// [`Error::WrongKey`] and the new one opens everything.
    pub fn rekey(&self, new_secret: impl Into<Secret>) -> Result<()> {
        self.check_writable()?;
        let slot = *crate::guards::lock(&self.inner.slot);
        self.replace_slot(slot, &new_secret.into())
    }

    /// True when the primary key is due for rotation: older than `rotate_after`, or an
    /// AES-256-GCM key that has spent its seal budget.
    pub fn rotation_due(&self) -> bool {
        self.rotation_due_in(&self.ring())
    }

    /// [`Store::rotation_due`] for the primary of `ring`.
    fn rotation_due_in(&self, ring: &Keyring) -> bool {
        let opts = &self.inner.opts;
        let aged = opts.rotate_after.is_some_and(|max| {
            (opts.clock)().saturating_sub(ring.primary().created()) >= max.as_secs()
        });
        aged || ring.seal_budget_reached(opts.aes_gcm_seal_budget)
    }

    /// Rotates if [`Store::rotation_due`]; called at open and after each commit.
    ///
    /// Asked again with the keyring locked, and again on the fresh keyring after
    /// another process changed it: handles, threads or processes that cross the
    /// threshold together make one key, as the first one's new primary is not due.
    pub(crate) fn maybe_auto_rotate(&self) -> Result<Option<u32>> {
        if self.is_poisoned() || !self.rotation_due() {
            return Ok(None);
        }
        self.change_keyring(
            |ring| {
                if !self.rotation_due_in(ring) {
                    return Ok(None);
                }
                self.new_primary(ring).map(Some)
            },
            true,
        )
    }
}

/// True when the re-encryption cursor in `txn` is `expected` (both absent, or equal).
fn cursor_is(txn: &dyn RowWrite, expected: Option<&[u8; 32]>) -> Result<bool> {
    let current = txn.get(Table::Meta, META_CURSOR.as_bytes())?;
    Ok(current.as_deref() == expected.map(|c| &c[..]))
}
