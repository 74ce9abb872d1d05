//! Values that expire.
//!
//! A value written with a time to live carries its expiry time inside its sealed
//! plaintext (so it is authenticated), and reads treat it as absent from that second
//! on. To remove expired values from the file without opening every value, each one
//! also gets a row in the expiry index, keyed by `bucket end ‖ row key`, where the
//! bucket end is the expiry time rounded up to a whole [`BUCKET_SECS`]: the file shows
//! to the hour when a value expires, and nothing finer (docs/FORMAT.md,
//! docs/SECURITY.md).
//!
//! Sweeping walks the index in time order and opens only the rows it names: a row
//! whose sealed expiry has passed is deleted with its index entry; an index entry whose
//! row is gone, or was overwritten with another expiry or none, is dropped alone. Every
//! commit sweeps a few closed buckets' entries ([`AUTO_SWEEP_PER_COMMIT`]), so the
//! file sheds expired values as the store is used; [`Store::sweep`] sweeps all of it in
//! bounded batches, the current bucket included.

use std::time::Duration;

use std::ops::Bound;

use sealkv_crypto::Keyring;

use crate::commit::KeyringWrite;
use crate::error::Result;
use crate::rows::{Row, split_row};
use crate::rowstore::{RowWrite, Table};
use crate::store::Store;

// The expiry index ([`Table::Expiry`]): `bucket end u64 BE ‖ row key (32)` → nothing.

/// Width of an expiry bucket: one hour. The index reveals expiry times to this
/// precision.
pub const EXPIRY_BUCKET_SECS: u64 = 3600;

/// Index entries a commit sweeps along with its own writes, from buckets that have
/// closed. Bounded so a backlog never makes one commit long.
pub(crate) const AUTO_SWEEP_PER_COMMIT: usize = 32;

/// Index entries [`Store::sweep`] handles per write transaction.
const SWEEP_BATCH: usize = 1000;

/// The end of the bucket holding `expires`.
pub(crate) fn bucket_end(expires: u64) -> u64 {
    expires
        .div_ceil(EXPIRY_BUCKET_SECS)
        .saturating_mul(EXPIRY_BUCKET_SECS)
}

/// The index key of a row expiring at `expires`.
pub(crate) fn index_key(expires: u64, row: &[u8; 32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&bucket_end(expires).to_be_bytes());
    k[8..].copy_from_slice(row);
    k
}

/// The expiry time of a value written at `now` with `ttl`.
pub(crate) fn expires_at(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(ttl.as_secs())
}

/// What one sweep pass did.
#[derive(Default)]
pub(crate) struct Swept {
    /// Values deleted.
    pub(crate) removed: u64,
    /// The last index key handled, to resume after.
    pub(crate) last: Option<Vec<u8>>,
    /// True when the pass reached the end of what it was to sweep.
    pub(crate) done: bool,
}

impl Store {
    /// Deletes every value that has expired, in batches of bounded size, each its own
    /// write transaction (writers wait at most one batch). Returns the number of values
    /// deleted. After it, [`Store::compact`] leaves no ciphertext of them in the file.
    pub fn sweep(&self) -> Result<u64> {
        self.check_writable()?;
        let _span = tracing::info_span!(target: "sealkv::sweep", "sweep").entered();
        let mut removed = 0;
        let mut after: Option<Vec<u8>> = None;
        let mut reloads = 0;
        loop {
            let now = (self.inner.opts.clock)();
            let ring = self.ring();
            let _commit = self.commit_lock();
            let mut pass = Swept::default();
            let swept = self.write_with_keyring(&ring, KeyringWrite::IfNeeded, |txn| {
                pass = self.sweep_in(txn, &ring, now, SWEEP_BATCH, true, after.as_deref())?;
                Ok(())
            });
            if matches!(swept, Err(crate::error::Error::KeyringChanged)) && reloads < 16 {
                reloads += 1;
                drop(_commit);
                drop(ring);
                self.reload_keyring()?;
                continue;
            }
            swept?;
            removed += pass.removed;
            crate::observe::count(crate::observe::EXPIRED, pass.removed);
            if pass.done {
                crate::observe::count(crate::observe::SWEEPS, 1);
                tracing::info!(target: "sealkv::sweep", removed, "swept expired values");
                return Ok(removed);
            }
            after = pass.last;
        }
    }

    /// Sweeps up to `limit` index entries in `txn`, starting after `after`: those of
    /// closed buckets, and with `current` also the bucket holding `now` (whose values
    /// must be opened to tell which have expired).
    pub(crate) fn sweep_in(
        &self,
        txn: &mut dyn RowWrite,
        ring: &Keyring,
        now: u64,
        limit: usize,
        current: bool,
        after: Option<&[u8]>,
    ) -> Result<Swept> {
        if txn.is_empty(Table::Expiry)? {
            return Ok(Swept {
                done: true,
                ..Swept::default()
            });
        }
        // Closed buckets end at or before `now`; the current one ends within an hour.
        let upto = if current {
            bucket_end(now)
        } else {
            now - now % EXPIRY_BUCKET_SECS
        };
        let mut end = [0xffu8; 40];
        end[..8].copy_from_slice(&upto.to_be_bytes());
        let mut candidates: Vec<Vec<u8>> = Vec::new();
        let from = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        txn.scan(
            Table::Expiry,
            (from, Bound::Included(&end[..])),
            &mut |k, _| {
                candidates.push(k.to_vec());
                Ok(candidates.len() < limit)
            },
        )?;
        let done = candidates.len() < limit;
        let mut removed = 0;
        for key in &candidates {
            let Some(row_key) = key.get(8..40).and_then(|r| <[u8; 32]>::try_from(r).ok()) else {
                txn.delete(Table::Expiry, key)?;
                continue;
            };
            let expired = match txn.get(Table::Data, &row_key)? {
                None => None,
                Some(sealed) => {
                    let (ns_tag, key_tag) = split_row(&row_key);
                    let row = Row::new(&ns_tag, &key_tag, &sealed);
                    match self.open_sealed(ring, &row, "(expiry sweep)", String::new) {
                        Ok(o) => Some(
                            o.expires
                                .map(|at| (at <= now, bucket_end(at) == bucket_of(key))),
                        ),
                        // A row that does not open stays, with its entry, for verify()
                        // to report (or another process, with other limits, to sweep).
                        Err(_) => Some(Some((false, true))),
                    }
                }
            };
            match expired {
                // The row is gone: the entry is stale.
                None => txn.delete(Table::Expiry, key)?,
                Some(Some((true, _))) => {
                    txn.delete(Table::Data, &row_key)?;
                    txn.delete(Table::Expiry, key)?;
                    removed += 1;
                }
                // Not yet expired, and this is its entry: keep it.
                Some(Some((false, true))) => {}
                // Overwritten with another expiry (it has its own entry) or none.
                Some(_) => txn.delete(Table::Expiry, key)?,
            }
        }
        Ok(Swept {
            removed,
            last: candidates.pop(),
            done,
        })
    }
}

fn bucket_of(index_key: &[u8]) -> u64 {
    index_key
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}
