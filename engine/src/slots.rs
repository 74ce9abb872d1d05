//! Key slots: the ways a store's key is unlocked.
//!
//! A store has one store key, made at creation, which seals its keyring. Each slot
//! wraps that same store key under a master key of its own: a raw 32-byte key, an
//! Argon2id passphrase, or a raw key kept in the OS keychain (the `sealkv` crate's
//! `keychain` feature). Any one slot opens the store; losing one (a keychain reset, a
//! forgotten passphrase) loses nothing while another remains.
//!
//! Format 3 keeps every slot in the `slots` meta record, which the keyring
//! authenticates like the other governing records. A format 2 file has one implicit
//! slot (its `kdf` and `store_key` records), which its upgrade turns into slot 1.

use sealkv_crypto::{MasterKey, wrap_store_key};

use crate::commit::KeyringWrite;
use crate::error::{Error, Result};
use crate::guards::{lock, read_lock, write_lock};
use crate::meta::{Kdf, META_SLOTS, read_meta};
use crate::options::Secret;
use crate::rowstore::Table;
use crate::store::Store;

/// The most slots a store holds. Every open may try each slot of the secret's kind,
/// so the bound also bounds the work a hostile record can ask for.
pub const MAX_SLOTS: usize = 16;

/// The longest slot label and keychain service name, in bytes.
pub const MAX_SLOT_LABEL: usize = 128;

const SLOTS_VERSION: u8 = 1;

/// How a slot's master key is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotKind {
    /// A raw 32-byte key (a key file).
    Key,
    /// A passphrase, through Argon2id.
    Passphrase,
    /// A raw key kept in the OS keychain under the slot's service, with the store's id
    /// (hex) as the account.
    Keychain,
}

impl SlotKind {
    fn code(self) -> u8 {
        match self {
            Self::Key => 1,
            Self::Passphrase => 2,
            Self::Keychain => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Key),
            2 => Some(Self::Passphrase),
            3 => Some(Self::Keychain),
            _ => None,
        }
    }

    /// The kind's name, as the CLI shows it: `key`, `passphrase` or `keychain`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Passphrase => "passphrase",
            Self::Keychain => "keychain",
        }
    }

    /// True when a secret of this kind opens the slot (a keychain slot takes the raw
    /// key the keychain holds).
    fn takes(self, secret: &Secret) -> bool {
        matches!(
            (self, secret),
            (Self::Key | Self::Keychain, Secret::Key(_))
                | (Self::Passphrase, Secret::Passphrase(_))
        )
    }
}

/// A slot as [`Store::slots`] lists it. Holds nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotInfo {
    /// The slot's id, never reused within a store.
    pub id: u32,
    /// How its key is given.
    pub kind: SlotKind,
    /// When it was added (Unix seconds; 0 for the slot a format 2 file held, whose
    /// creation time the file did not record).
    pub created: u64,
    /// The label given when it was added.
    pub label: Option<String>,
    /// For a keychain slot: the keychain service its key is kept under.
    pub service: Option<String>,
}

/// A slot record: what it shows and what it wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) info: SlotInfo,
    pub(crate) kdf: Kdf,
    /// The store key sealed under this slot's master key (`wrap_store_key`); absent
    /// only in a format 1 file, whose keyring the master key seals directly.
    pub(crate) wrapped: Option<Vec<u8>>,
}

impl Slot {
    pub(crate) fn takes(&self, secret: &Secret) -> bool {
        self.info.kind.takes(secret)
    }
}

/// The `slots` record: `version u8 ‖ next id u32 ‖ count u8 ‖ slot × count`, each slot
/// `id u32 ‖ kind u8 ‖ created u64 ‖ u8 len ‖ label ‖ u8 len ‖ service ‖ u16 len ‖ kdf
/// ‖ u16 len ‖ wrapped store key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slots {
    pub(crate) next_id: u32,
    pub(crate) slots: Vec<Slot>,
}

impl Slots {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![SLOTS_VERSION];
        out.extend_from_slice(&self.next_id.to_le_bytes());
        out.push(self.slots.len() as u8);
        for s in &self.slots {
            out.extend_from_slice(&s.info.id.to_le_bytes());
            out.push(s.info.kind.code());
            out.extend_from_slice(&s.info.created.to_le_bytes());
            for text in [&s.info.label, &s.info.service] {
                let text = text.as_deref().unwrap_or("");
                out.push(text.len() as u8);
                out.extend_from_slice(text.as_bytes());
            }
            let kdf = s.kdf.encode();
            let wrapped = s.wrapped.as_deref().unwrap_or(&[]);
            for field in [&kdf[..], wrapped] {
                out.extend_from_slice(&(field.len() as u16).to_le_bytes());
                out.extend_from_slice(field);
            }
        }
        out
    }

    /// Reads a `slots` record. Untrusted until the keyring it unlocks authenticates it:
    /// every length is checked before it is used, and a malformed record is
    /// [`Error::Corrupt`] before any key is derived.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::Corrupt(format!("the key slot record is malformed: {what}"));
        let mut r = Reader(bytes);
        if r.take(1).ok_or_else(|| bad("empty"))? != [SLOTS_VERSION] {
            return Err(bad("unknown version"));
        }
        let next_id = r.u32().ok_or_else(|| bad("truncated"))?;
        let count = r.take(1).ok_or_else(|| bad("truncated"))?[0] as usize;
        if count == 0 || count > MAX_SLOTS {
            return Err(bad("slot count out of range"));
        }
        let mut slots: Vec<Slot> = Vec::with_capacity(count);
        for _ in 0..count {
            let id = r.u32().ok_or_else(|| bad("truncated"))?;
            let kind = SlotKind::from_code(r.take(1).ok_or_else(|| bad("truncated"))?[0])
                .ok_or_else(|| bad("unknown slot kind"))?;
            let created = r.u64().ok_or_else(|| bad("truncated"))?;
            let mut texts = [None, None];
            for text in &mut texts {
                let len = r.take(1).ok_or_else(|| bad("truncated"))?[0] as usize;
                let raw = r.take(len).ok_or_else(|| bad("truncated"))?;
                let s = std::str::from_utf8(raw).map_err(|_| bad("a label is not UTF-8"))?;
                *text = (!s.is_empty()).then(|| s.to_owned());
            }
            let [label, service] = texts;
            let kdf_len = r.u16().ok_or_else(|| bad("truncated"))? as usize;
            let kdf = Kdf::decode(r.take(kdf_len).ok_or_else(|| bad("truncated"))?)?;
            let wrapped_len = r.u16().ok_or_else(|| bad("truncated"))? as usize;
            let wrapped = r
                .take(wrapped_len)
                .ok_or_else(|| bad("truncated"))?
                .to_vec();
            let consistent = match kind {
                SlotKind::Passphrase => matches!(kdf, Kdf::Argon2id { .. }),
                SlotKind::Key => kdf == Kdf::Raw && service.is_none(),
                SlotKind::Keychain => kdf == Kdf::Raw && service.is_some(),
            };
            if !consistent || wrapped.is_empty() || id >= next_id {
                return Err(bad("a slot's fields disagree"));
            }
            if slots.iter().any(|s| s.info.id == id) {
                return Err(bad("two slots share an id"));
            }
            slots.push(Slot {
                info: SlotInfo {
                    id,
                    kind,
                    created,
                    label,
                    service,
                },
                kdf,
                wrapped: Some(wrapped),
            });
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Self { next_id, slots })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

/// Checks a label or service name given by a caller.
pub(crate) fn check_text(what: &str, text: Option<&str>) -> Result<()> {
    match text {
        Some(t) if t.is_empty() || t.len() > MAX_SLOT_LABEL => Err(Error::InvalidName(format!(
            "a slot {what} must be 1 to {MAX_SLOT_LABEL} bytes"
        ))),
        Some(t) if t.chars().any(char::is_control) => Err(Error::InvalidName(format!(
            "a slot {what} must not hold control characters"
        ))),
        _ => Ok(()),
    }
}

impl Store {
    /// The store's key slots, in the order they were added. Nothing secret is shown.
    pub fn slots(&self) -> Result<Vec<SlotInfo>> {
        let meta = read_meta(&*self.rows().view()?, self.path())?;
        Ok(meta.slots.slots.into_iter().map(|s| s.info).collect())
    }

    /// The id of the slot this handle was opened (or created) with.
    pub fn opened_slot(&self) -> u32 {
        *lock(&self.inner.slot)
    }

    /// Adds a slot that opens the store with `secret` (a raw key or a passphrase, which
    /// goes through Argon2id with the store's [`crate::Options::kdf`] parameters),
    /// with an optional `label`. Returns its id. Every handle open on the store keeps
    /// working: the store key does not change.
    pub fn add_slot(&self, secret: impl Into<Secret>, label: Option<&str>) -> Result<u32> {
        let secret = secret.into();
        let kind = match secret {
            Secret::Key(_) => SlotKind::Key,
            Secret::Passphrase(_) => SlotKind::Passphrase,
        };
        self.add_slot_of(kind, &secret, label, None)
    }

    /// Adds a keychain slot: `key` (which the caller keeps in the OS keychain under
    /// `service`, with [`Store::id_hex`] as the account) opens the store. The `sealkv`
    /// crate's `Keychain` does both steps; this records the slot.
    pub fn add_keychain_slot(
        &self,
        key: &MasterKey,
        service: &str,
        label: Option<&str>,
    ) -> Result<u32> {
        check_text("service", Some(service))?;
        self.add_slot_of(
            SlotKind::Keychain,
            &Secret::Key(key.clone()),
            label,
            Some(service),
        )
    }

    fn add_slot_of(
        &self,
        kind: SlotKind,
        secret: &Secret,
        label: Option<&str>,
        service: Option<&str>,
    ) -> Result<u32> {
        self.check_writable()?;
        check_text("label", label)?;
        let kdf = Kdf::for_secret(secret, self.inner.opts.kdf)?;
        let kek = kdf.master_key(secret, &self.inner.opts.kdf_limits)?;
        let wrapped = wrap_store_key(&kek, &self.inner.db_id, &read_lock(&self.inner.master))
            .map_err(Error::Key)?;
        let created = (self.inner.opts.clock)();
        let mut id = 0;
        self.change_slots(|slots| {
            if slots.slots.len() >= MAX_SLOTS {
                return Err(Error::InvalidName(format!(
                    "a store holds at most {MAX_SLOTS} key slots; remove one first"
                )));
            }
            id = slots.next_id;
            slots.next_id = slots
                .next_id
                .checked_add(1)
                .ok_or_else(|| Error::Corrupt("slot ids are exhausted".into()))?;
            slots.slots.push(Slot {
                info: SlotInfo {
                    id,
                    kind,
                    created,
                    label: label.map(str::to_owned),
                    service: service.map(str::to_owned),
                },
                kdf: kdf.clone(),
                wrapped: Some(wrapped.clone()),
            });
            Ok(())
        })?;
        Ok(id)
    }

    /// Removes slot `id`. Removing the last slot is refused (nothing could open the
    /// store then). Handles open on the store keep working; the secret of the removed
    /// slot no longer opens it.
    pub fn remove_slot(&self, id: u32) -> Result<()> {
        self.check_writable()?;
        self.change_slots(|slots| {
            let before = slots.slots.len();
            slots.slots.retain(|s| s.info.id != id);
            if slots.slots.len() == before {
                return Err(Error::NoSuchSlot(id));
            }
            if slots.slots.is_empty() {
                return Err(Error::LastSlot);
            }
            Ok(())
        })
    }

    /// Replaces slot `id`'s secret with `new_secret` (same label; its kind follows the
    /// secret, and a keychain slot becomes a key or passphrase slot).
    pub(crate) fn replace_slot(&self, id: u32, new_secret: &Secret) -> Result<()> {
        let kdf = Kdf::for_secret(new_secret, self.inner.opts.kdf)?;
        let kek = kdf.master_key(new_secret, &self.inner.opts.kdf_limits)?;
        let wrapped = wrap_store_key(&kek, &self.inner.db_id, &read_lock(&self.inner.master))
            .map_err(Error::Key)?;
        let kind = match new_secret {
            Secret::Key(_) => SlotKind::Key,
            Secret::Passphrase(_) => SlotKind::Passphrase,
        };
        let created = (self.inner.opts.clock)();
        self.change_slots(|slots| {
            let slot = slots
                .slots
                .iter_mut()
                .find(|s| s.info.id == id)
                .ok_or(Error::NoSuchSlot(id))?;
            slot.info.kind = kind;
            slot.info.service = None;
            slot.info.created = created;
            slot.kdf = kdf.clone();
            slot.wrapped = Some(wrapped.clone());
            Ok(())
        })
    }

    /// Rewrites the `slots` record with `change` applied, and the keyring (which binds
    /// it) in the same transaction; retried on a keyring another process changed.
    fn change_slots(&self, mut change: impl FnMut(&mut Slots) -> Result<()>) -> Result<()> {
        self.change_governing(|txn| {
            let record = txn
                .get(Table::Meta, META_SLOTS.as_bytes())?
                .map(|v| v.to_vec())
                .ok_or_else(|| Error::Corrupt("the key slot record is missing".into()))?;
            let mut slots = Slots::decode(&record)?;
            change(&mut slots)?;
            txn.put(Table::Meta, META_SLOTS.as_bytes(), &slots.encode())
        })
    }

    /// Runs `change` (which writes governing meta records) and seals the keyring again
    /// in the same transaction, so it binds them; retried on a keyring another process
    /// changed.
    pub(crate) fn change_governing(
        &self,
        mut change: impl FnMut(&mut dyn crate::rowstore::RowWrite) -> Result<()>,
    ) -> Result<()> {
        let mut ring = write_lock(&self.inner.keyring);
        let _commit = self.commit_lock();
        for _ in 0..16 {
            match self.write_with_keyring(&ring, KeyringWrite::Always, &mut change) {
                Err(Error::KeyringChanged) => self.reload_into(&mut ring)?,
                other => return other,
            }
        }
        Err(Error::KeyringChanged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Slots {
        Slots {
            next_id: 4,
            slots: vec![
                Slot {
                    info: SlotInfo {
                        id: 1,
                        kind: SlotKind::Key,
                        created: 7,
                        label: None,
                        service: None,
                    },
                    kdf: Kdf::Raw,
                    wrapped: Some(vec![1; 73]),
                },
                Slot {
                    info: SlotInfo {
                        id: 3,
                        kind: SlotKind::Keychain,
                        created: 9,
                        label: Some("laptop".into()),
                        service: Some("com.example.app".into()),
                    },
                    kdf: Kdf::Raw,
                    wrapped: Some(vec![2; 73]),
                },
            ],
        }
    }

    #[test]
    fn slots_round_trip() {
        let s = sample();
        assert_eq!(Slots::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn every_truncation_and_every_trailing_byte_is_refused() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(Slots::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Slots::decode(&longer).is_err());
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let mut s = sample();
        s.slots[1].info.service = None;
        assert!(
            Slots::decode(&s.encode()).is_err(),
            "keychain slot without service"
        );
        let mut s = sample();
        s.next_id = 3;
        assert!(Slots::decode(&s.encode()).is_err(), "id not below next id");
        let mut s = sample();
        s.slots[1].info.id = 1;
        assert!(Slots::decode(&s.encode()).is_err(), "duplicate id");
        let mut s = sample();
        s.slots.clear();
        assert!(Slots::decode(&s.encode()).is_err(), "no slot");
    }
}
