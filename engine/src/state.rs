//! The state record: a generation every commit advances, the restore epoch, and a
//! keyed hash of the whole content, authenticated under the store key.
//!
//! - The **generation** counts commits. An anchor outside the file
//!   ([`crate::anchor`]) remembers the highest one seen, so an older copy of the file
//!   put back (a backup, a sync tool) is refused at open.
//! - The **restore epoch** counts knowing restores (`Store::accept_restore`): the
//!   generation starts a new run, and a copy from before the restore is refused too.
//! - The **content hash** is a sum, lane by lane modulo 2⁶⁴, of a keyed BLAKE3 of every
//!   data row (its key, and its sealed value's length and AEAD tag). A commit adds the rows it writes and
//!   subtracts the rows it replaces or deletes, so keeping it costs a lookup and two
//!   hashes per row, never a scan. Someone without the key can still put single rows
//!   of an older copy back, or delete rows; the sum over the rows then no longer
//!   matches the record, which `verify` recomputes.
//!
//! The record's MAC is a keyed BLAKE3 under a subkey of the store key, bound to the
//! store's id: the file cannot be given another generation, epoch or hash without the
//! key.

use std::collections::HashMap;
use std::ops::Bound;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::rowstore::{Found, Range, RowRead, RowWrite, Table, Visit};

/// The meta record holding the state.
pub(crate) const META_STATE: &str = "state";

/// For benches only (feature `test-internals`): commits made while set keep no state
/// (no generation, no content hash, no anchor), as before format 3, so one run can
/// measure what keeping it costs. A store written so fails `verify`.
#[cfg(feature = "test-internals")]
pub static BENCH_WITHOUT_STATE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// False while a bench turned the state off ([`BENCH_WITHOUT_STATE`]).
pub(crate) fn kept() -> bool {
    #[cfg(feature = "test-internals")]
    {
        !BENCH_WITHOUT_STATE.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(feature = "test-internals"))]
    {
        true
    }
}

const STATE_VERSION: u8 = 1;
const STATE_BODY: usize = 1 + 8 + 8 + 32;
const STATE_LEN: usize = STATE_BODY + 32;

/// The content hash: four lanes, each a sum modulo 2⁶⁴.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContentHash([u64; 4]);

impl ContentHash {
    pub(crate) fn add(&mut self, h: &[u64; 4]) {
        for (a, b) in self.0.iter_mut().zip(h) {
            *a = a.wrapping_add(*b);
        }
    }
    fn sub(&mut self, h: &[u64; 4]) {
        for (a, b) in self.0.iter_mut().zip(h) {
            *a = a.wrapping_sub(*b);
        }
    }
    fn bytes(&self) -> [u8; 32] {
        let mut out = [0; 32];
        for (chunk, lane) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&lane.to_le_bytes());
        }
        out
    }
    fn from_bytes(b: &[u8]) -> Self {
        let mut lanes = [0u64; 4];
        for (lane, chunk) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            *lane = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        Self(lanes)
    }
}

/// The keys of the state record, derived from the store key.
#[derive(Clone)]
pub(crate) struct StateKeys {
    db_id: [u8; 16],
    mac: Zeroizing<[u8; 32]>,
    rows: Zeroizing<[u8; 32]>,
}

impl StateKeys {
    pub(crate) fn derive(store_key: &[u8; 32], db_id: &[u8; 16]) -> Self {
        let derive = |context: &str| {
            let mut h = blake3::Hasher::new_derive_key(context);
            h.update(store_key).update(db_id);
            Zeroizing::new(*h.finalize().as_bytes())
        };
        Self {
            db_id: *db_id,
            mac: derive("sealkv state record mac v1"),
            rows: derive("sealkv content hash v1"),
        }
    }

    /// The keyed hash of one data row: of its key, its length and its last 16 bytes.
    ///
    /// A sealed value ends with its AEAD tag, which authenticates the whole envelope
    /// (random nonce included): two envelopes with one tag are a 2⁻¹²⁸ accident, and an
    /// envelope whose other bytes were changed fails to open (`verify` reports it as
    /// such). So the tag stands for the row, and the hash is one BLAKE3 block whatever
    /// the value's size.
    pub(crate) fn row(&self, key: &[u8], value: &[u8]) -> [u64; 4] {
        let tail = &value[value.len().saturating_sub(16)..];
        let mut h = blake3::Hasher::new_keyed(&self.rows);
        h.update(&(key.len() as u64).to_le_bytes())
            .update(key)
            .update(&(value.len() as u64).to_le_bytes())
            .update(tail);
        let out = h.finalize();
        let mut lanes = [0u64; 4];
        for (lane, chunk) in lanes.iter_mut().zip(out.as_bytes().chunks_exact(8)) {
            *lane = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        lanes
    }

    fn mac(&self, body: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.mac);
        h.update(b"sealkv state v1\0")
            .update(&self.db_id)
            .update(body);
        *h.finalize().as_bytes()
    }

    /// The content hash of every data row `rows` holds (a full scan).
    pub(crate) fn content_of(&self, rows: &dyn RowRead) -> Result<ContentHash> {
        let mut sum = ContentHash::default();
        rows.scan(
            Table::Data,
            (Bound::Unbounded, Bound::Unbounded),
            &mut |k, v| {
                sum.add(&self.row(k, v));
                Ok(true)
            },
        )?;
        Ok(sum)
    }
}

/// A store's state as its record holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    /// Commits since the store was created (or upgraded to format 3).
    pub(crate) generation: u64,
    /// Restores accepted (`Store::accept_restore`).
    pub(crate) epoch: u64,
    pub(crate) content: ContentHash,
}

impl State {
    pub(crate) fn encode(&self, keys: &StateKeys) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATE_LEN);
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.content.bytes());
        let mac = keys.mac(&out);
        out.extend_from_slice(&mac);
        out
    }

    /// Reads and authenticates a state record. A record that does not check (edited,
    /// or from another store) is [`Error::MetaTampered`].
    pub(crate) fn decode(bytes: &[u8], keys: &StateKeys) -> Result<Self> {
        if bytes.len() != STATE_LEN || bytes[0] != STATE_VERSION {
            return Err(Error::MetaTampered);
        }
        let (body, mac) = bytes.split_at(STATE_BODY);
        if !constant_time_eq(&keys.mac(body), mac) {
            return Err(Error::MetaTampered);
        }
        let u = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        Ok(Self {
            generation: u(1),
            epoch: u(9),
            content: ContentHash::from_bytes(&body[17..49]),
        })
    }

    /// The state record of `rows`, authenticated (`None` when there is none: a store of
    /// an earlier format).
    pub(crate) fn read(rows: &dyn RowRead, keys: &StateKeys) -> Result<Option<Self>> {
        match rows.get(Table::Meta, META_STATE.as_bytes())? {
            Some(bytes) => Self::decode(&bytes, keys).map(Some),
            None => Ok(None),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A write transaction that keeps the content hash: every data row it writes or
/// removes moves the sum, and [`Tracked::finish`] writes the state record with the
/// generation advanced, in the same transaction.
pub(crate) struct Tracked<'a> {
    inner: &'a mut dyn RowWrite,
    keys: &'a StateKeys,
    added: ContentHash,
    /// The keyed hash of each data row's current value in this transaction, for rows
    /// already looked up (`None`: absent).
    current: HashMap<[u8; 32], Option<[u64; 4]>>,
}

impl<'a> Tracked<'a> {
    pub(crate) fn new(inner: &'a mut dyn RowWrite, keys: &'a StateKeys) -> Self {
        Self {
            inner,
            keys,
            added: ContentHash::default(),
            current: HashMap::new(),
        }
    }

    /// The hash of the row under `key` as a prefetch found it (or this transaction
    /// left it), if known.
    fn known(&self, key: &[u8]) -> Option<Option<[u64; 4]>> {
        <[u8; 32]>::try_from(key)
            .ok()
            .and_then(|k| self.current.get(&k).copied())
    }

    fn set_current(&mut self, key: &[u8], h: Option<[u64; 4]>) {
        if !self.current.is_empty()
            && let Ok(k) = <[u8; 32]>::try_from(key)
            && let Some(slot) = self.current.get_mut(&k)
        {
            *slot = h;
        }
    }

    /// Writes the state record: the generation advanced by one, the content hash moved
    /// by this transaction's rows. Returns the new state.
    pub(crate) fn finish(self) -> Result<State> {
        let before = State::read(&*self.inner, self.keys)?
            // A store of format 3 always holds one: its loss is tampering.
            .ok_or(Error::MetaTampered)?;
        let mut content = before.content;
        content.add(&self.added.0);
        let after = State {
            generation: before.generation.wrapping_add(1),
            epoch: before.epoch,
            content,
        };
        self.inner
            .put(Table::Meta, META_STATE.as_bytes(), &after.encode(self.keys))?;
        Ok(after)
    }
}

impl RowRead for Tracked<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        self.inner.get(table, key)
    }
    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Found<'_>>>> {
        self.inner.get_many(table, keys)
    }
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        self.inner.scan(table, range, visit)
    }
    fn len(&self, table: Table) -> Result<u64> {
        self.inner.len(table)
    }
    fn is_empty(&self, table: Table) -> Result<bool> {
        self.inner.is_empty(table)
    }
}

impl RowWrite for Tracked<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        if table != Table::Data {
            return self.inner.put(table, key, value);
        }
        let keys = self.keys;
        let new = keys.row(key, value);
        let mut replaced = None;
        match self.known(key) {
            // Looked up already (a prefetch): a plain put.
            Some(before) => {
                replaced = before;
                self.inner.put(table, key, value)?;
            }
            None => self.inner.replace(table, key, value, &mut |old| {
                replaced = old.map(|v| keys.row(key, v));
            })?,
        }
        if let Some(old) = replaced {
            self.added.sub(&old);
        }
        self.added.add(&new);
        self.set_current(key, Some(new));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        if table != Table::Data {
            return self.inner.delete(table, key);
        }
        let keys = self.keys;
        let mut removed = None;
        match self.known(key) {
            Some(before) => {
                removed = before;
                self.inner.delete(table, key)?;
            }
            None => self.inner.remove(table, key, &mut |old| {
                removed = old.map(|v| keys.row(key, v));
            })?,
        }
        if let Some(old) = removed {
            self.added.sub(&old);
        }
        self.set_current(key, None);
        Ok(())
    }

    fn put_if_absent(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        if table == Table::Data {
            let absent = match self.known(key) {
                Some(h) => h.is_none(),
                None => self.inner.get(table, key)?.is_none(),
            };
            if absent {
                self.put(table, key, value)?;
            }
            return Ok(());
        }
        self.inner.put_if_absent(table, key, value)
    }

    fn delete_range(&mut self, table: Table, range: Range<'_>) -> Result<()> {
        if table == Table::Data {
            let keys = self.keys;
            let mut gone = Vec::new();
            let mut removed = ContentHash::default();
            self.inner.scan(table, range, &mut |k, v| {
                removed.add(&keys.row(k, v));
                gone.push(k.to_vec());
                Ok(true)
            })?;
            self.added.sub(&removed.0);
            for k in gone {
                self.set_current(&k, None);
            }
        }
        self.inner.delete_range(table, range)
    }

    fn locks_held(&mut self, proofs: &[&str]) -> Result<Vec<bool>> {
        self.inner.locks_held(proofs)
    }

    /// Looks the rows up in one go where the engine reads them in one statement (a
    /// server); on a file, `replace` learns each old row while writing it instead.
    fn prefetch(&mut self, table: Table, keys: &[&[u8]]) -> Result<()> {
        if table != Table::Data || !self.inner.batches_reads() {
            return Ok(());
        }
        let wanted: Vec<&[u8]> = keys
            .iter()
            .copied()
            .filter(|k| <[u8; 32]>::try_from(*k).is_ok_and(|k| !self.current.contains_key(&k)))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let found: Vec<Option<[u64; 4]>> = self
            .inner
            .get_many(Table::Data, &wanted)?
            .into_iter()
            .zip(&wanted)
            .map(|(v, k)| v.map(|v| self.keys.row(k, &v)))
            .collect();
        for (k, h) in wanted.iter().zip(found) {
            if let Ok(k) = <[u8; 32]>::try_from(*k) {
                self.current.insert(k, h);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_record_round_trips_and_every_change_is_refused() {
        let keys = StateKeys::derive(&[7; 32], &[1; 16]);
        let s = State {
            generation: 42,
            epoch: 2,
            content: ContentHash([1, 2, 3, u64::MAX]),
        };
        let bytes = s.encode(&keys);
        assert_eq!(State::decode(&bytes, &keys).unwrap(), s);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(State::decode(&b, &keys).is_err(), "byte {i} flipped");
        }
        let other = StateKeys::derive(&[7; 32], &[2; 16]);
        assert!(
            State::decode(&bytes, &other).is_err(),
            "another store's record"
        );
    }

    #[test]
    fn adding_then_subtracting_a_row_leaves_the_sum() {
        let keys = StateKeys::derive(&[7; 32], &[1; 16]);
        let mut h = ContentHash([5, 6, 7, 8]);
        let r = keys.row(b"k", b"v");
        h.add(&r);
        assert_ne!(h, ContentHash([5, 6, 7, 8]));
        h.sub(&r);
        assert_eq!(h, ContentHash([5, 6, 7, 8]));
        assert_ne!(keys.row(b"k", b"v"), keys.row(b"k", b"w"));
        assert_ne!(keys.row(b"k", b"v"), keys.row(b"j", b"v"));
    }
}
