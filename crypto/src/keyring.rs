//! Data keys, the name key, and the keyring record sealed under the master key.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::Aes256Gcm;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::{CryptoError, KEY_LEN, MasterKey};

/// Format version of the keyring record and of its plaintext. Version 2 adds the
/// digest of the store's governing meta records ([`bind_meta`]); version 1 records
/// (written before it) still open, with no digest.
pub const KEYRING_VERSION: u8 = 2;
/// Seals per AES-256-GCM key after which the key must be rotated: 2^30.
///
/// With random 96-bit nonces, the chance that any two of `n` seals share a nonce is about
/// n²/2^97; at 2^30 seals that is 2^-37, well inside NIST SP 800-38D's 2^-32 bound (which
/// 2^32 seals would just reach). See docs/FORMAT.md.
pub const AES_GCM_SEAL_BUDGET: u64 = 1 << 30;
/// Seals per AES-256-GCM key past which sealing is refused outright, even if the store
/// did not rotate in time: 2^31.
pub const AES_GCM_HARD_LIMIT: u64 = 1 << 31;
/// Seal counts are persisted as a reservation this far ahead of use, so the keyring is
/// rewritten once per this many seals, and a crash can only over-count.
pub const SEAL_RESERVATION: u64 = 1 << 12;

const KEYRING_AAD_V1: &[u8] = b"sealkv keyring v1\0";
const KEYRING_AAD_V2: &[u8] = b"sealkv keyring v2\0";
/// Length of the meta digest a version 2 keyring carries.
pub const META_DIGEST_LEN: usize = 32;
const KEYRING_NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const PLAIN_HEADER_LEN_V1: usize = 1 + KEY_LEN + 4 + 4;
const PLAIN_HEADER_LEN: usize = 1 + KEY_LEN + META_DIGEST_LEN + 4 + 4;
const ENTRY_LEN: usize = 4 + 1 + 1 + 8 + 8 + KEY_LEN;

/// The AEAD of a data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Algorithm {
    /// XChaCha20-Poly1305 with 24-byte random nonces (the default).
    XChaCha20Poly1305 = 1,
    /// AES-256-GCM with 12-byte random nonces, subject to a seal budget.
    Aes256Gcm = 2,
}

impl Algorithm {
    /// The algorithm with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::XChaCha20Poly1305),
            2 => Some(Self::Aes256Gcm),
            _ => None,
        }
    }

    /// Nonce length in bytes.
    pub fn nonce_len(self) -> usize {
        match self {
            Self::XChaCha20Poly1305 => 24,
            Self::Aes256Gcm => 12,
        }
    }

    /// Its name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::XChaCha20Poly1305 => "xchacha20poly1305",
            Self::Aes256Gcm => "aes256gcm",
        }
    }
}

/// The life-cycle state of a data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KeyState {
    /// Seals new values; exactly one key is primary.
    Primary = 1,
    /// Opens old values, seals nothing.
    DecryptOnly = 2,
    /// Key bytes wiped; values under it cannot be opened.
    Destroyed = 3,
}

impl KeyState {
    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Primary),
            2 => Some(Self::DecryptOnly),
            3 => Some(Self::Destroyed),
            _ => None,
        }
    }

    /// Its name for display.
    pub fn name(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::DecryptOnly => "decrypt-only",
            Self::Destroyed => "destroyed",
        }
    }
}

/// A data key's AEAD.
///
/// XChaCha20-Poly1305 is built the standard way (draft-irtf-cfrg-xchacha): HChaCha20 of
/// the key and the nonce's first 16 bytes gives a per-value subkey, used with IETF
/// ChaCha20-Poly1305 (RFC 8439) and the nonce `0000 || nonce[16..24]`. The HChaCha20
/// step is RustCrypto's `chacha20`; ChaCha20-Poly1305 is `ring`'s assembly: a 1 KiB
/// seal + open went from 5.04 us (RustCrypto's `XChaCha20Poly1305`) to 1.84 us
/// (`cargo bench -p sealkv-benches --bench crypto`, before and after the switch). The
/// bytes are identical: the known-answer vectors in crypto/tests prove it.
pub(crate) enum Cipher {
    XChaCha(Zeroizing<[u8; KEY_LEN]>),
    Aes(Box<Aes256Gcm>),
}

/// The per-value ChaCha20-Poly1305 key and nonce of XChaCha20-Poly1305.
fn xchacha_subkey(
    key: &[u8; KEY_LEN],
    nonce: &[u8],
) -> Option<(ring::aead::LessSafeKey, ring::aead::Nonce)> {
    let nonce: &[u8; 24] = nonce.try_into().ok()?;
    let (head, tail) = nonce.split_first_chunk::<16>()?;
    let subkey = Zeroizing::new(<[u8; KEY_LEN]>::from(chacha20::hchacha::<chacha20::R20>(
        key.into(),
        head.into(),
    )));
    // ring copies the subkey into its own key schedule, which it does not wipe: that
    // copy opens this one value only (HChaCha20 does not reveal the data key).
    let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &subkey[..]).ok()?;
    let mut short = [0u8; 12];
    short[4..].copy_from_slice(tail);
    Some((
        ring::aead::LessSafeKey::new(unbound),
        ring::aead::Nonce::assume_unique_for_key(short),
    ))
}

impl Cipher {
    pub(crate) fn new(algorithm: Algorithm, key: &[u8; KEY_LEN]) -> Self {
        match algorithm {
            Algorithm::XChaCha20Poly1305 => Self::XChaCha(Zeroizing::new(*key)),
            Algorithm::Aes256Gcm => Self::Aes(Box::new(Aes256Gcm::new(key.into()))),
        }
    }

    /// Encrypts `buf` in place and returns the tag. `nonce` has the algorithm's length.
    pub(crate) fn encrypt(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let too_long = || CryptoError::Malformed("value too long for the cipher");
        let mut out = [0u8; TAG_LEN];
        match self {
            Self::XChaCha(key) => {
                let (k, n) =
                    xchacha_subkey(key, nonce).ok_or(CryptoError::Malformed("nonce length"))?;
                let tag = k
                    .seal_in_place_separate_tag(n, ring::aead::Aad::from(aad), buf)
                    .map_err(|_| too_long())?;
                out.copy_from_slice(tag.as_ref());
            }
            Self::Aes(c) => {
                let nonce = nonce
                    .try_into()
                    .map_err(|_| CryptoError::Malformed("nonce length"))?;
                let tag = c
                    .encrypt_inout_detached(nonce, aad, buf.into())
                    .map_err(|_| too_long())?;
                out.copy_from_slice(&tag);
            }
        }
        Ok(out)
    }

    /// Decrypts `buf` in place after checking `tag`; any failure is [`CryptoError::Unseal`].
    pub(crate) fn decrypt(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        match self {
            Self::XChaCha(key) => {
                let (k, n) = xchacha_subkey(key, nonce).ok_or(CryptoError::Unseal)?;
                let tag = ring::aead::Tag::try_from(tag).map_err(|_| CryptoError::Unseal)?;
                k.open_in_place_separate_tag(n, ring::aead::Aad::from(aad), tag, buf, 0..)
                    .map(|_| ())
                    .map_err(|_| CryptoError::Unseal)
            }
            Self::Aes(c) => {
                let nonce = nonce.try_into().map_err(|_| CryptoError::Unseal)?;
                let tag = tag.try_into().map_err(|_| CryptoError::Unseal)?;
                c.decrypt_inout_detached(nonce, aad, buf.into(), tag)
                    .map_err(|_| CryptoError::Unseal)
            }
        }
    }
}

/// One data key. Its bytes are reachable only through sealing and opening.
pub struct DataKey {
    id: u32,
    algorithm: Algorithm,
    created: u64,
    state: KeyState,
    /// Seals made with this key (in memory, exact).
    seals: AtomicU64,
    /// The end of the block of seal counts this process reserved in the file: its own
    /// seals stay below it until it persists a new reservation.
    reserved: AtomicU64,
    /// The reservation the file held when this process last read the keyring (at open,
    /// or after another process wrote it): other processes may seal up to it, so a new
    /// block starts there. Seal counts report at least this.
    floor: AtomicU64,
    key: Option<Zeroizing<[u8; KEY_LEN]>>,
    cipher: Option<Cipher>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .field("state", &self.state)
            .field("seals", &self.seals())
            .finish_non_exhaustive()
    }
}

impl DataKey {
    fn generate(
        id: u32,
        algorithm: Algorithm,
        created: u64,
        state: KeyState,
    ) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        crate::random::fill_random(&mut key[..])?;
        Ok(Self::from_parts(
            id,
            algorithm,
            created,
            state,
            0,
            Some(key),
        ))
    }

    fn from_parts(
        id: u32,
        algorithm: Algorithm,
        created: u64,
        state: KeyState,
        seals: u64,
        key: Option<Zeroizing<[u8; KEY_LEN]>>,
    ) -> Self {
        let cipher = key.as_ref().map(|k| Cipher::new(algorithm, k));
        Self {
            id,
            algorithm,
            created,
            state,
            seals: AtomicU64::new(seals),
            reserved: AtomicU64::new(seals),
            floor: AtomicU64::new(seals),
            key,
            cipher,
        }
    }

    /// The key id recorded in every envelope sealed with it.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// Creation time, seconds since the Unix epoch.
    pub fn created(&self) -> u64 {
        self.created
    }
    /// Its state.
    pub fn state(&self) -> KeyState {
        self.state
    }
    /// Seals made with it (an upper bound across restarts).
    pub fn seals(&self) -> u64 {
        self.seals
            .load(Ordering::Relaxed)
            .max(self.floor.load(Ordering::Relaxed))
    }

    /// Counts one seal, refusing an AES-GCM key past its hard limit.
    pub(crate) fn count_seal(&self) -> Result<(), CryptoError> {
        let before = self.seals.fetch_add(1, Ordering::Relaxed);
        if self.algorithm == Algorithm::Aes256Gcm
            && before.max(self.floor.load(Ordering::Relaxed)) >= AES_GCM_HARD_LIMIT
        {
            self.seals.fetch_sub(1, Ordering::Relaxed);
            return Err(CryptoError::SealBudgetExhausted(self.id));
        }
        Ok(())
    }

    pub(crate) fn cipher(&self) -> Result<&Cipher, CryptoError> {
        self.cipher
            .as_ref()
            .ok_or(CryptoError::KeyDestroyed(self.id))
    }
}

/// The key that turns namespace and key names into fixed-size tags (keyed BLAKE3).
#[derive(Clone)]
pub struct NameKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NameKey(…)")
    }
}

/// Length of a name tag in bytes.
pub const TAG_BYTES: usize = 16;

impl NameKey {
    /// The tag of a namespace name.
    pub fn namespace_tag(&self, namespace: &[u8]) -> [u8; TAG_BYTES] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"sealkv namespace\0");
        h.update(&(namespace.len() as u64).to_le_bytes());
        h.update(namespace);
        truncate(h.finalize())
    }

    /// The tag of a key name within a namespace.
    pub fn key_tag(&self, namespace: &[u8], key: &[u8]) -> [u8; TAG_BYTES] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"sealkv key\0");
        h.update(&(namespace.len() as u64).to_le_bytes());
        h.update(namespace);
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key);
        truncate(h.finalize())
    }

    /// The name key of a named session: tags computed with it (its
    /// [`NameKey::namespace_tag`] and [`NameKey::key_tag`]) are unrelated to the default
    /// session's and to every other session's. Derived once per session, so a
    /// session's tags cost what the default session's do.
    pub fn session_key(&self, session: &[u8]) -> NameKey {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"sealkv session name key\0");
        h.update(&(session.len() as u64).to_le_bytes());
        h.update(session);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        h.finalize_xof().fill(&mut key[..]);
        NameKey(key)
    }

    /// The tag of a session name (its entry in the session catalog) and the tag of
    /// its namespace catalog.
    pub fn session_tags(&self, session: &[u8]) -> ([u8; TAG_BYTES], [u8; TAG_BYTES]) {
        let tag = |label: &[u8]| {
            let mut h = blake3::Hasher::new_keyed(&self.0);
            h.update(label);
            h.update(&(session.len() as u64).to_le_bytes());
            h.update(session);
            truncate(h.finalize())
        };
        (tag(b"sealkv session\0"), tag(b"sealkv session catalog\0"))
    }

    /// A tag for any other record the store keeps under a secret name.
    pub fn record_tag(&self, label: &[u8]) -> [u8; TAG_BYTES] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"sealkv record\0");
        h.update(label);
        truncate(h.finalize())
    }
}

fn truncate(hash: blake3::Hash) -> [u8; TAG_BYTES] {
    let mut out = [0u8; TAG_BYTES];
    out.copy_from_slice(&hash.as_bytes()[..TAG_BYTES]);
    out
}

/// A summary of one data key, with no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id.
    pub id: u32,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// State.
    pub state: KeyState,
    /// Seals made (an upper bound).
    pub seals: u64,
}

/// All data keys of a store, plus its name key. Sealed as one record under the master key.
pub struct Keyring {
    name_key: NameKey,
    next_id: u32,
    keys: Vec<DataKey>,
    primary: usize,
    /// The meta digest the record was sealed with (`None` for a version 1 record).
    bound: Option<[u8; META_DIGEST_LEN]>,
}

/// The digest of a store's governing meta records (format, key derivation, settings,
/// …), which a version 2 keyring record carries under the master key. A store compares
/// it with the records it reads, so a record changed in the file is caught at open.
///
/// Each record is hashed with its name and length, in the order given.
pub fn bind_meta(records: &[(&str, &[u8])]) -> [u8; META_DIGEST_LEN] {
    let mut h = blake3::Hasher::new_derive_key("sealkv governing meta records v1");
    h.update(&(records.len() as u64).to_le_bytes());
    for (name, value) in records {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
    }
    *h.finalize().as_bytes()
}

/// A sealed keyring record and the seal counts it reserves. Once the record is
/// durably committed, hand it to [`Keyring::mark_persisted`]; until then the
/// keyring keeps asking to be persisted ([`Keyring::needs_persist`]), so a commit
/// that failed and is retried writes the record again.
pub struct SealedKeyring {
    record: Vec<u8>,
    /// Per key, in keyring order: the reservation written in `record`, and, if it
    /// reserves a new block for this process, where this process's count goes on from
    /// and what the count was when the record was sealed.
    reserved: Vec<(u64, Option<(u64, u64)>)>,
}

impl SealedKeyring {
    /// The record to store.
    pub fn record(&self) -> &[u8] {
        &self.record
    }
}

impl fmt::Debug for SealedKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedKeyring")
            .field("len", &self.record.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A new keyring: a random name key and one primary data key (id 1).
    pub fn new(algorithm: Algorithm, now: u64) -> Result<Self, CryptoError> {
        let mut name = Zeroizing::new([0u8; KEY_LEN]);
        crate::random::fill_random(&mut name[..])?;
        Ok(Self {
            name_key: NameKey(name),
            next_id: 2,
            keys: vec![DataKey::generate(1, algorithm, now, KeyState::Primary)?],
            primary: 0,
            bound: None,
        })
    }

    /// The meta digest this keyring's record was sealed with, if it is a version 2
    /// record (see [`bind_meta`]).
    pub fn bound_meta(&self) -> Option<&[u8; META_DIGEST_LEN]> {
        self.bound.as_ref()
    }

    /// The name key.
    pub fn name_key(&self) -> &NameKey {
        &self.name_key
    }

    /// The primary data key.
    pub fn primary(&self) -> &DataKey {
        &self.keys[self.primary]
    }

    /// The data key with this id.
    pub fn key(&self, id: u32) -> Result<&DataKey, CryptoError> {
        self.keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(CryptoError::UnknownKey(id))
    }

    /// A summary of every key, oldest first.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|k| KeyInfo {
                id: k.id,
                algorithm: k.algorithm,
                created: k.created,
                state: k.state,
                seals: k.seals(),
            })
            .collect()
    }

    /// Makes a new primary data key and demotes the old one to decrypt-only. Returns the new id.
    pub fn rotate(&mut self, algorithm: Algorithm, now: u64) -> Result<u32, CryptoError> {
        let id = self.next_id;
        self.next_id = id
            .checked_add(1)
            .ok_or(CryptoError::Malformed("key ids exhausted"))?;
        let key = DataKey::generate(id, algorithm, now, KeyState::Primary)?;
        self.keys[self.primary].state = KeyState::DecryptOnly;
        self.keys.push(key);
        self.primary = self.keys.len() - 1;
        Ok(id)
    }

    /// Wipes a non-primary key's bytes. Its id stays, so values still under it give a
    /// clear [`CryptoError::KeyDestroyed`].
    pub fn destroy(&mut self, id: u32) -> Result<(), CryptoError> {
        let index = self
            .keys
            .iter()
            .position(|k| k.id == id)
            .ok_or(CryptoError::UnknownKey(id))?;
        if index == self.primary {
            return Err(CryptoError::Malformed(
                "the primary data key cannot be destroyed; rotate first",
            ));
        }
        let key = &mut self.keys[index];
        key.state = KeyState::Destroyed;
        key.cipher = None; // ciphers zeroize their key schedules on drop
        key.key = None; // Zeroizing wipes the bytes on drop
        Ok(())
    }

    /// True when the primary is AES-256-GCM and has used `budget` seals.
    pub fn seal_budget_reached(&self, budget: u64) -> bool {
        let p = self.primary();
        p.algorithm == Algorithm::Aes256Gcm && p.seals() >= budget
    }

    /// True when a key's seal count has outrun its persisted reservation, so the store
    /// must write the keyring again (in the same transaction as the seals).
    pub fn needs_persist(&self) -> bool {
        self.keys
            .iter()
            .any(|k| k.seals.load(Ordering::Relaxed) > k.reserved.load(Ordering::Relaxed))
    }

    /// Seals the keyring under the master key, binding it to the database id and
    /// carrying `meta`, the digest of the store's governing meta records
    /// ([`bind_meta`]).
    ///
    /// Every persisted seal count is a reservation [`SEAL_RESERVATION`] ahead of use, so
    /// counts survive a crash as upper bounds. Sealing changes nothing: call
    /// [`Keyring::mark_persisted`] once the record is durably committed.
    pub fn seal(
        &self,
        master: &MasterKey,
        db_id: &[u8; 16],
        meta: &[u8; META_DIGEST_LEN],
    ) -> Result<SealedKeyring, CryptoError> {
        let reserved: Vec<(u64, Option<(u64, u64)>)> = self
            .keys
            .iter()
            .map(|k| {
                let own = k.seals.load(Ordering::Relaxed);
                let reserved = k.reserved.load(Ordering::Relaxed);
                let floor = k.floor.load(Ordering::Relaxed);
                if own >= reserved {
                    // A new block, past what any process may have reserved, that also
                    // counts the seals made since this process's last block ran out.
                    let start = reserved.max(floor).saturating_add(own - reserved);
                    (start.saturating_add(SEAL_RESERVATION), Some((start, own)))
                } else {
                    // This process's block goes on; the file never goes down.
                    (reserved.max(floor), None)
                }
            })
            .collect();
        let mut plain = Zeroizing::new(Vec::with_capacity(
            PLAIN_HEADER_LEN + ENTRY_LEN * self.keys.len(),
        ));
        plain.push(KEYRING_VERSION);
        plain.extend_from_slice(&self.name_key.0[..]);
        plain.extend_from_slice(meta);
        plain.extend_from_slice(&self.next_id.to_le_bytes());
        plain.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        for (k, (reserved, _)) in self.keys.iter().zip(&reserved) {
            plain.extend_from_slice(&k.id.to_le_bytes());
            plain.push(k.algorithm as u8);
            plain.push(k.state as u8);
            plain.extend_from_slice(&k.created.to_le_bytes());
            plain.extend_from_slice(&reserved.to_le_bytes());
            match &k.key {
                Some(bytes) => plain.extend_from_slice(&bytes[..]),
                None => plain.extend_from_slice(&[0u8; KEY_LEN]),
            }
        }
        let mut nonce = [0u8; KEYRING_NONCE_LEN];
        crate::random::fill_random(&mut nonce)?;
        let record = seal_keyring_with_nonce(master, db_id, &nonce, &plain, KEYRING_VERSION)?;
        Ok(SealedKeyring { record, reserved })
    }

    /// Records that `sealed` (sealed from this keyring) is durably committed: its
    /// reservations now bound the seal counts on disk.
    pub fn mark_persisted(&self, sealed: &SealedKeyring) {
        for (k, (written, block)) in self.keys.iter().zip(&sealed.reserved) {
            // `floor` stays: it is what other processes left in the file, and this
            // process's own reservations are in `reserved`.
            if let Some((start, own_then)) = block {
                // This process's count moves to its new block; seals other threads
                // made since the record was sealed stay counted on top.
                k.seals.fetch_add(start - own_then, Ordering::Relaxed);
                k.reserved.fetch_max(*written, Ordering::Relaxed);
            }
        }
    }

    /// Takes `fresh`, the keyring as another process left it in the file, in place of
    /// this one, keeping this process's own block of seal counts for the keys both
    /// hold: that block was reserved in the file before, and every later reservation
    /// starts past it, so this process may go on sealing in it without writing the
    /// keyring again.
    pub fn refresh(&mut self, fresh: Keyring) {
        for k in &fresh.keys {
            if let Some(old) = self.keys.iter().find(|o| o.id == k.id) {
                k.seals
                    .store(old.seals.load(Ordering::Relaxed), Ordering::Relaxed);
                k.reserved
                    .store(old.reserved.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        *self = fresh;
    }

    /// Opens a sealed keyring. A wrong master key (or a damaged record) gives
    /// [`CryptoError::WrongKey`].
    pub fn open(master: &MasterKey, db_id: &[u8; 16], record: &[u8]) -> Result<Self, CryptoError> {
        let (&version, rest) = record
            .split_first()
            .ok_or(CryptoError::Malformed("empty keyring record"))?;
        if version > KEYRING_VERSION {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        if version == 0 || rest.len() < KEYRING_NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed(
                "keyring record too short or of unknown version",
            ));
        }
        let (nonce, body) = rest.split_at(KEYRING_NONCE_LEN);
        let (ct, tag) = body.split_at(body.len() - TAG_LEN);
        let mut plain = Zeroizing::new(ct.to_vec());
        let cipher = XChaCha20Poly1305::new(master.expose().into());
        let aad = keyring_aad(db_id, version);
        let tag = tag.try_into().map_err(|_| CryptoError::WrongKey)?;
        cipher
            .decrypt_inout_detached(
                &XNonce::try_from(nonce).map_err(|_| CryptoError::WrongKey)?,
                &aad,
                plain.as_mut_slice().into(),
                tag,
            )
            .map_err(|_| CryptoError::WrongKey)?;
        Self::parse(&plain, version)
    }

    fn parse(plain: &[u8], version: u8) -> Result<Self, CryptoError> {
        let bad = CryptoError::Malformed("keyring contents are inconsistent");
        if plain.first() != Some(&version) {
            return Err(bad);
        }
        let header_len = if version == 1 {
            PLAIN_HEADER_LEN_V1
        } else {
            PLAIN_HEADER_LEN
        };
        if plain.len() < header_len {
            return Err(bad);
        }
        let mut name = Zeroizing::new([0u8; KEY_LEN]);
        name.copy_from_slice(&plain[1..1 + KEY_LEN]);
        let mut at = 1 + KEY_LEN;
        let bound = if version == 1 {
            None
        } else {
            let mut digest = [0u8; META_DIGEST_LEN];
            digest.copy_from_slice(&plain[at..at + META_DIGEST_LEN]);
            at += META_DIGEST_LEN;
            Some(digest)
        };
        let next_id = u32::from_le_bytes(le4(&plain[at..at + 4]));
        let count = u32::from_le_bytes(le4(&plain[at + 4..at + 8])) as usize;
        let entries = &plain[header_len..];
        if count == 0
            || entries.len()
                != count
                    .checked_mul(ENTRY_LEN)
                    .ok_or(CryptoError::Malformed("count"))?
        {
            return Err(bad);
        }
        let mut keys = Vec::with_capacity(count);
        let mut primary = None;
        for (i, e) in entries.chunks_exact(ENTRY_LEN).enumerate() {
            let id = u32::from_le_bytes(le4(&e[0..4]));
            let algorithm = Algorithm::from_code(e[4])
                .ok_or(CryptoError::Malformed("unknown algorithm in keyring"))?;
            let state = KeyState::from_code(e[5])
                .ok_or(CryptoError::Malformed("unknown key state in keyring"))?;
            let created = u64::from_le_bytes(le8(&e[6..14]));
            let seals = u64::from_le_bytes(le8(&e[14..22]));
            if id >= next_id || keys.iter().any(|k: &DataKey| k.id == id) {
                return Err(CryptoError::Malformed(
                    "duplicate or out-of-range key id in keyring",
                ));
            }
            let key = if state == KeyState::Destroyed {
                None
            } else {
                let mut k = Zeroizing::new([0u8; KEY_LEN]);
                k.copy_from_slice(&e[22..22 + KEY_LEN]);
                Some(k)
            };
            if state == KeyState::Primary {
                if primary.is_some() {
                    return Err(CryptoError::Malformed("keyring has two primary keys"));
                }
                primary = Some(i);
            }
            keys.push(DataKey::from_parts(
                id, algorithm, created, state, seals, key,
            ));
        }
        let primary = primary.ok_or(CryptoError::Malformed("keyring has no primary key"))?;
        Ok(Self {
            name_key: NameKey(name),
            next_id,
            keys,
            primary,
            bound,
        })
    }
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&b[..4]);
    out
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}

const STORE_KEY_AAD: &[u8] = b"sealkv store key v1\0";
const STORE_KEY_RECORD_LEN: usize = 1 + KEYRING_NONCE_LEN + KEY_LEN + TAG_LEN;

/// Seals the store key under the master key: `1 ‖ nonce (24) ‖ XChaCha20-Poly1305
/// ciphertext of the key (32) ‖ tag (16)`, bound to the database id.
///
/// The store key (random, for the store's lifetime) seals the keyring, and the master
/// key only this record. Changing the master key rewrites this record alone, so a
/// process that opened the store before keeps reading and writing the keyring with the
/// store key it holds.
pub fn wrap_store_key(
    master: &MasterKey,
    db_id: &[u8; 16],
    store_key: &MasterKey,
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; KEYRING_NONCE_LEN];
    crate::random::fill_random(&mut nonce)?;
    let mut out = Vec::with_capacity(STORE_KEY_RECORD_LEN);
    out.push(1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(store_key.expose());
    let mut aad = STORE_KEY_AAD.to_vec();
    aad.extend_from_slice(db_id);
    let cipher = XChaCha20Poly1305::new(master.expose().into());
    let tag = cipher
        .encrypt_inout_detached(
            &XNonce::from(nonce),
            &aad,
            (&mut out[1 + KEYRING_NONCE_LEN..]).into(),
        )
        .map_err(|_| CryptoError::Malformed("store key"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a record of [`wrap_store_key`]. A wrong master key (or a damaged record)
/// gives [`CryptoError::WrongKey`].
pub fn unwrap_store_key(
    master: &MasterKey,
    db_id: &[u8; 16],
    record: &[u8],
) -> Result<MasterKey, CryptoError> {
    match record.first() {
        Some(1) if record.len() == STORE_KEY_RECORD_LEN => {}
        Some(&v) if v > 1 => return Err(CryptoError::UnsupportedVersion(v)),
        _ => return Err(CryptoError::Malformed("store key record")),
    }
    let (nonce, body) = record[1..].split_at(KEYRING_NONCE_LEN);
    let (ct, tag) = body.split_at(KEY_LEN);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(ct);
    let mut aad = STORE_KEY_AAD.to_vec();
    aad.extend_from_slice(db_id);
    let cipher = XChaCha20Poly1305::new(master.expose().into());
    cipher
        .decrypt_inout_detached(
            &XNonce::try_from(nonce).map_err(|_| CryptoError::WrongKey)?,
            &aad,
            key.as_mut_slice().into(),
            tag.try_into().map_err(|_| CryptoError::WrongKey)?,
        )
        .map_err(|_| CryptoError::WrongKey)?;
    MasterKey::from_bytes(&key[..])
}

/// The keyring's associated data: a label naming the record version (so a version
/// byte changed in the file fails to open) and the database id.
fn keyring_aad(db_id: &[u8; 16], version: u8) -> Vec<u8> {
    let label = if version == 1 {
        KEYRING_AAD_V1
    } else {
        KEYRING_AAD_V2
    };
    let mut aad = Vec::with_capacity(label.len() + 16);
    aad.extend_from_slice(label);
    aad.extend_from_slice(db_id);
    aad
}

pub(crate) fn seal_keyring_with_nonce(
    master: &MasterKey,
    db_id: &[u8; 16],
    nonce: &[u8; KEYRING_NONCE_LEN],
    plain: &[u8],
    version: u8,
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(1 + KEYRING_NONCE_LEN + plain.len() + TAG_LEN);
    out.push(version);
    out.extend_from_slice(nonce);
    out.extend_from_slice(plain);
    let cipher = XChaCha20Poly1305::new(master.expose().into());
    let tag = cipher
        .encrypt_inout_detached(
            &XNonce::from(*nonce),
            &keyring_aad(db_id, version),
            (&mut out[1 + KEYRING_NONCE_LEN..]).into(),
        )
        .map_err(|_| CryptoError::Malformed("keyring too long"))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: [u8; 16] = [7; 16];
    const META: [u8; META_DIGEST_LEN] = [5; META_DIGEST_LEN];

    #[test]
    fn keyring_roundtrips_and_wrong_key_is_distinct() {
        let master = MasterKey::generate().unwrap();
        let mut ring = Keyring::new(Algorithm::XChaCha20Poly1305, 100).unwrap();
        ring.rotate(Algorithm::Aes256Gcm, 200).unwrap();
        let record = ring.seal(&master, &DB, &META).unwrap().record().to_vec();
        let back = Keyring::open(&master, &DB, &record).unwrap();
        assert_eq!(back.keys().len(), 2);
        assert_eq!(back.primary().id(), 2);
        assert_eq!(back.primary().algorithm(), Algorithm::Aes256Gcm);
        assert_eq!(back.key(1).unwrap().state(), KeyState::DecryptOnly);
        assert_eq!(
            back.name_key().namespace_tag(b"x"),
            ring.name_key().namespace_tag(b"x")
        );
        let other = MasterKey::generate().unwrap();
        assert_eq!(
            Keyring::open(&other, &DB, &record).unwrap_err(),
            CryptoError::WrongKey
        );
        assert_eq!(
            Keyring::open(&master, &[8; 16], &record).unwrap_err(),
            CryptoError::WrongKey
        );
    }

    #[test]
    fn every_corruption_of_the_record_is_refused() {
        let master = MasterKey::generate().unwrap();
        let ring = Keyring::new(Algorithm::XChaCha20Poly1305, 1).unwrap();
        let record = ring.seal(&master, &DB, &META).unwrap().record().to_vec();
        for i in 0..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 0x01;
            assert!(Keyring::open(&master, &DB, &bad).is_err(), "flip at {i}");
        }
        for len in 0..record.len() {
            assert!(
                Keyring::open(&master, &DB, &record[..len]).is_err(),
                "truncated to {len}"
            );
        }
        let mut newer = record.clone();
        newer[0] = 9;
        assert_eq!(
            Keyring::open(&master, &DB, &newer).unwrap_err(),
            CryptoError::UnsupportedVersion(9)
        );
    }

    #[test]
    fn store_keys_wrap_and_unwrap_only_with_their_master_and_database() {
        let master = MasterKey::generate().unwrap();
        let store_key = MasterKey::generate().unwrap();
        let record = wrap_store_key(&master, &DB, &store_key).unwrap();
        let back = unwrap_store_key(&master, &DB, &record).unwrap();
        assert_eq!(back.expose(), store_key.expose());
        let other = MasterKey::generate().unwrap();
        assert_eq!(
            unwrap_store_key(&other, &DB, &record).unwrap_err(),
            CryptoError::WrongKey
        );
        assert!(unwrap_store_key(&master, &[8; 16], &record).is_err());
        for i in 0..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 1;
            assert!(unwrap_store_key(&master, &DB, &bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn destroy_wipes_but_keeps_the_id() {
        let master = MasterKey::generate().unwrap();
        let mut ring = Keyring::new(Algorithm::XChaCha20Poly1305, 1).unwrap();
        assert!(ring.destroy(1).is_err(), "primary cannot be destroyed");
        ring.rotate(Algorithm::XChaCha20Poly1305, 2).unwrap();
        ring.destroy(1).unwrap();
        assert!(matches!(
            ring.key(1).unwrap().cipher(),
            Err(CryptoError::KeyDestroyed(1))
        ));
        let back = Keyring::open(
            &master,
            &DB,
            ring.seal(&master, &DB, &META).unwrap().record(),
        )
        .unwrap();
        assert_eq!(back.key(1).unwrap().state(), KeyState::Destroyed);
        assert!(matches!(back.key(9), Err(CryptoError::UnknownKey(9))));
    }

    #[test]
    fn seal_counts_persist_as_reservations() {
        let master = MasterKey::generate().unwrap();
        let ring = Keyring::new(Algorithm::Aes256Gcm, 1).unwrap();
        assert!(!ring.needs_persist());
        for _ in 0..5 {
            ring.primary().count_seal().unwrap();
        }
        assert!(ring.needs_persist());
        assert!(ring.seal_budget_reached(5));
        assert!(!ring.seal_budget_reached(6));
        // Sealing alone marks nothing: the commit carrying it may still fail.
        let sealed = ring.seal(&master, &DB, &META).unwrap();
        assert!(ring.needs_persist());
        ring.mark_persisted(&sealed);
        assert!(!ring.needs_persist());
        let back = Keyring::open(&master, &DB, sealed.record()).unwrap();
        assert_eq!(back.primary().seals(), 5 + SEAL_RESERVATION);
        assert_eq!(back.bound_meta(), Some(&META));
    }

    #[test]
    fn name_tags_separate_namespaces_and_keys() {
        let ring = Keyring::new(Algorithm::XChaCha20Poly1305, 1).unwrap();
        let nk = ring.name_key();
        assert_ne!(nk.key_tag(b"a", b"bc"), nk.key_tag(b"ab", b"c"));
        assert_ne!(nk.namespace_tag(b"a"), nk.namespace_tag(b"b"));
        let other = Keyring::new(Algorithm::XChaCha20Poly1305, 1).unwrap();
        assert_ne!(nk.namespace_tag(b"a"), other.name_key().namespace_tag(b"a"));
    }
}
