//! The meta table: format version, database id, key derivation, settings, keyring.
//!
//! The records that govern how data is written (format, key derivation, settings) are
//! authenticated: their digest ([`sealkv_crypto::bind_meta`]) is sealed inside the
//! keyring record under the master key, and checked at every open.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use sealkv_crypto::{
    CryptoError, KdfLimits, KdfParams, Keyring, META_DIGEST_LEN, MasterKey, SealedKeyring,
    bind_meta, generate_salt,
};

use crate::error::{Error, Result};
use crate::options::{Concurrency, Options, Secret};
use crate::slots::{Slot, SlotInfo, SlotKind, Slots};

/// The id the one slot of a format 1 or 2 file takes (at its upgrade, too).
pub(crate) const LEGACY_SLOT: u32 = 1;
use crate::rowstore::{RowRead, RowWrite, Table};

/// Newest file format this build reads and writes. Version 2 authenticates the
/// governing meta records (a version 2 keyring record); version 3 keeps the key slots
/// and the anchor's location among them, and a state record (generation, restore
/// epoch, content hash). Files of versions 1 and 2 are upgraded on their first
/// read-write open.
pub const FORMAT_VERSION: u32 = 3;

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_DB_ID: &str = "db_id";
pub(crate) const META_KDF: &str = "kdf";
pub(crate) const META_KEYRING: &str = "keyring";
/// Cipher and compression chosen at creation: `cipher u8 ‖ codec u8 ‖ zstd level i32 ‖ min size u32`.
pub(crate) const META_SETTINGS: &str = "settings";
/// The store key (which seals the keyring), sealed under the master key.
pub(crate) const META_STORE_KEY: &str = "store_key";
/// How processes share the file: `1` exclusive, `2` multi-writer (the shared mode of
/// earlier builds, and every store on a server), `3` shared through an owner process
/// (see [`Concurrency`]).
pub(crate) const META_MODE: &str = "mode";
/// The key slots (format 3; [`crate::slots`]).
pub(crate) const META_SLOTS: &str = "slots";
/// Where the store's anchor is (format 3; [`crate::anchor`]); absent when it has none.
pub(crate) const META_ANCHOR: &str = "anchor";
/// The records bound into the keyring of a format 1 or 2 store, in this order. A
/// record that is absent is bound as empty.
pub(crate) const GOVERNING_V2: [&str; 4] = [META_FORMAT, META_KDF, META_SETTINGS, META_MODE];
/// The records bound into the keyring of a format 3 store: the slots replace the `kdf`
/// and `store_key` records.
pub(crate) const GOVERNING: [&str; 5] = [
    META_FORMAT,
    META_SETTINGS,
    META_MODE,
    META_SLOTS,
    META_ANCHOR,
];

/// The recorded sharing mode of a store file.
pub(crate) fn encode_mode(mode: Concurrency) -> [u8; 1] {
    match mode {
        Concurrency::Exclusive => [1],
        Concurrency::MultiWriter => [2],
        Concurrency::Shared => [3],
    }
}

/// Reads a recorded sharing mode; a file without one (written before format 2) was
/// used by one process at a time.
pub(crate) fn decode_mode(bytes: Option<&[u8]>) -> Result<Concurrency> {
    match bytes {
        None | Some([1]) => Ok(Concurrency::Exclusive),
        Some([2]) => Ok(Concurrency::MultiWriter),
        Some([3]) => Ok(Concurrency::Shared),
        Some(_) => Err(Error::Corrupt(
            "the sharing mode record is malformed".into(),
        )),
    }
}

/// The digest of the governing records as `get` reads them.
pub(crate) fn governing_digest(
    get: impl Fn(&str) -> Result<Option<Vec<u8>>>,
) -> Result<[u8; META_DIGEST_LEN]> {
    let format = get(META_FORMAT)?
        .and_then(|f| <[u8; 4]>::try_from(f.as_slice()).ok())
        .map_or(0, u32::from_le_bytes);
    let names: &[&str] = if format >= 3 {
        &GOVERNING
    } else {
        &GOVERNING_V2
    };
    let mut values = Vec::with_capacity(names.len());
    for &name in names {
        values.push((name, get(name)?.unwrap_or_default()));
    }
    let records: Vec<(&str, &[u8])> = values.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    Ok(bind_meta(&records))
}

/// Seals `ring` under `master`, binding the governing records as `txn` holds them,
/// and stores it in `txn`. The caller marks the result persisted once `txn` commits.
pub(crate) fn seal_keyring_into(
    txn: &mut dyn RowWrite,
    ring: &Keyring,
    master: &MasterKey,
    db_id: &[u8; 16],
) -> Result<SealedKeyring> {
    let records = meta_records(&*txn)?;
    let digest = governing_digest(|k| Ok(records.get(k.as_bytes()).cloned()))?;
    let sealed = ring.seal(master, db_id, &digest).map_err(Error::Key)?;
    txn.put(Table::Meta, META_KEYRING.as_bytes(), sealed.record())?;
    Ok(sealed)
}

/// Every meta record, copied out: one scan (one round trip on a server) rather than a
/// read per record.
fn meta_records(rows: &dyn RowRead) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut records = BTreeMap::new();
    rows.scan(
        Table::Meta,
        (Bound::Unbounded, Bound::Unbounded),
        &mut |k, v| {
            records.insert(k.to_vec(), v.to_vec());
            Ok(true)
        },
    )?;
    Ok(records)
}

/// One meta record, copied out.
pub(crate) fn meta_record(rows: &dyn RowRead, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(rows.get(Table::Meta, name.as_bytes())?.map(|v| v.to_vec()))
}

pub(crate) fn encode_settings(opts: &Options) -> Vec<u8> {
    let mut out = vec![opts.cipher as u8, opts.compression.codec as u8];
    out.extend_from_slice(&opts.compression.zstd_level.to_le_bytes());
    out.extend_from_slice(&(opts.compression.min_size.min(u32::MAX as usize) as u32).to_le_bytes());
    out
}

/// Applies the stored settings: the store's cipher and compression win over the
/// options given at open, so every program writing a store writes it the same way.
pub(crate) fn apply_settings(bytes: &[u8], opts: &mut Options) -> Result<()> {
    let bad = || Error::Corrupt("settings record is malformed".into());
    if bytes.len() != 10 {
        return Err(bad());
    }
    opts.cipher = sealkv_crypto::Algorithm::from_code(bytes[0]).ok_or_else(bad)?;
    opts.compression = sealkv_crypto::Compression {
        codec: sealkv_crypto::Codec::from_code(bytes[1]).ok_or_else(bad)?,
        zstd_level: i32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]),
        min_size: u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize,
    };
    Ok(())
}

pub(crate) const KDF_RAW: u8 = 0;
pub(crate) const KDF_ARGON2ID: u8 = 1;

/// The key derivation record of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kdf {
    Raw,
    Argon2id { params: KdfParams, salt: Vec<u8> },
}

impl Kdf {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Self::Raw => vec![KDF_RAW],
            Self::Argon2id { params, salt } => {
                let mut out = vec![KDF_ARGON2ID];
                out.extend_from_slice(&params.m_cost_kib.to_le_bytes());
                out.extend_from_slice(&params.t_cost.to_le_bytes());
                out.extend_from_slice(&params.p_cost.to_le_bytes());
                out.push(salt.len() as u8);
                out.extend_from_slice(salt);
                out
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Corrupt("key derivation record is malformed".into());
        match bytes.split_first() {
            Some((&KDF_RAW, [])) => Ok(Self::Raw),
            Some((&KDF_ARGON2ID, rest)) if rest.len() >= 13 => {
                let u =
                    |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
                let params = KdfParams {
                    m_cost_kib: u(0),
                    t_cost: u(4),
                    p_cost: u(8),
                };
                let salt_len = rest[12] as usize;
                let salt = rest
                    .get(13..)
                    .filter(|s| s.len() == salt_len && salt_len >= 16)
                    .ok_or_else(bad)?;
                Ok(Self::Argon2id {
                    params,
                    salt: salt.to_vec(),
                })
            }
            _ => Err(bad()),
        }
    }

    /// Derives the master key from the caller's secret. Argon2 parameters over
    /// `limits` are refused before anything is allocated.
    pub(crate) fn master_key(&self, secret: &Secret, limits: &KdfLimits) -> Result<MasterKey> {
        match (self, secret) {
            (Self::Raw, Secret::Key(k)) => Ok(k.clone()),
            (Self::Argon2id { params, salt }, Secret::Passphrase(p)) => {
                limits.check(params).map_err(Error::Key)?;
                MasterKey::derive(p.expose(), salt, params).map_err(Error::Key)
            }
            (Self::Raw, Secret::Passphrase(_)) => Err(Error::KeyKindMismatch {
                expected: "raw key",
            }),
            (Self::Argon2id { .. }, Secret::Key(_)) => Err(Error::KeyKindMismatch {
                expected: "passphrase",
            }),
        }
    }

    /// A fresh record for a secret (new salt for a passphrase). An empty passphrase
    /// is refused: it would protect nothing.
    pub(crate) fn for_secret(secret: &Secret, params: KdfParams) -> Result<Self> {
        if let Secret::Passphrase(p) = secret
            && p.expose().is_empty()
        {
            return Err(Error::Key(CryptoError::InvalidKey(
                "an empty passphrase protects nothing",
            )));
        }
        Ok(match secret {
            Secret::Key(_) => Self::Raw,
            Secret::Passphrase(_) => Self::Argon2id {
                params,
                salt: generate_salt().map_err(Error::Key)?.to_vec(),
            },
        })
    }
}

/// The meta records of a store, checked.
pub(crate) struct Meta {
    /// The format version the file records.
    pub(crate) format: u32,
    pub(crate) db_id: [u8; 16],
    /// The key slots (for a format 1 or 2 file, the one its `kdf` and `store_key`
    /// records make).
    pub(crate) slots: Slots,
    pub(crate) keyring: Vec<u8>,
    pub(crate) settings: Option<Vec<u8>>,
    /// The state record (format 3), not yet authenticated.
    pub(crate) state: Option<Vec<u8>>,
    /// The anchor's location record (format 3), if the store has one.
    pub(crate) anchor: Option<Vec<u8>>,
    /// The recorded sharing mode.
    pub(crate) mode: Concurrency,
    /// Digest of the governing records as read.
    pub(crate) digest: [u8; META_DIGEST_LEN],
}

impl Meta {
    /// Checks the governing records against the digest `ring` authenticates. Returns
    /// true for a version 1 keyring, which binds none: the store should be upgraded.
    pub(crate) fn check_bound(&self, ring: &Keyring) -> Result<bool> {
        match ring.bound_meta() {
            Some(bound) if *bound == self.digest => Ok(false),
            Some(_) => Err(Error::MetaTampered),
            None => Ok(true),
        }
    }

    /// Applies the stored settings to `opts` (see [`apply_settings`]).
    pub(crate) fn apply_settings(&self, opts: &mut Options) -> Result<()> {
        match &self.settings {
            Some(settings) => apply_settings(settings, opts),
            None => Ok(()),
        }
    }
}

/// The meta records as a view sees them; a store without them (a file or table that
/// is not ours) is [`Error::NotSealkv`] naming `path`.
pub(crate) fn read_meta(rows: &dyn RowRead, path: &Path) -> Result<Meta> {
    let not_ours = || Error::NotSealkv(path.to_path_buf());
    let records = meta_records(rows)?;
    let get = |k: &str| -> Result<Option<Vec<u8>>> { Ok(records.get(k.as_bytes()).cloned()) };
    let format = get(META_FORMAT)?.ok_or_else(not_ours)?;
    let format = <[u8; 4]>::try_from(format.as_slice()).map_err(|_| not_ours())?;
    let found = u32::from_le_bytes(format);
    if found > FORMAT_VERSION {
        return Err(Error::NewerFormat {
            found,
            supported: FORMAT_VERSION,
        });
    }
    let db_id = get(META_DB_ID)?
        .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
        .ok_or_else(|| Error::Corrupt("database id missing".into()))?;
    if found < 3 && get(META_SLOTS)?.is_some() {
        // A format 3 file whose format record was set back: the keyring would catch it
        // too, but the records it binds are not those of an earlier format.
        return Err(Error::MetaTampered);
    }
    let slots = if found >= 3 {
        Slots::decode(
            &get(META_SLOTS)?.ok_or_else(|| Error::Corrupt("the key slots are missing".into()))?,
        )?
    } else {
        let kdf = Kdf::decode(
            &get(META_KDF)?
                .ok_or_else(|| Error::Corrupt("key derivation record missing".into()))?,
        )?;
        Slots {
            next_id: LEGACY_SLOT + 1,
            slots: vec![Slot {
                info: SlotInfo {
                    id: LEGACY_SLOT,
                    kind: match kdf {
                        Kdf::Raw => SlotKind::Key,
                        Kdf::Argon2id { .. } => SlotKind::Passphrase,
                    },
                    created: 0,
                    label: None,
                    service: None,
                },
                kdf,
                wrapped: get(META_STORE_KEY)?,
            }],
        }
    };
    let keyring = get(META_KEYRING)?.ok_or_else(|| Error::Corrupt("keyring missing".into()))?;
    let settings = get(META_SETTINGS)?;
    let mode = decode_mode(get(META_MODE)?.as_deref())?;
    let state = get(crate::state::META_STATE)?;
    let anchor = get(META_ANCHOR)?;
    let digest = governing_digest(get)?;
    Ok(Meta {
        format: found,
        db_id,
        slots,
        keyring,
        settings,
        state,
        anchor,
        mode,
        digest,
    })
}

pub(crate) fn open_keyring(master: &MasterKey, db_id: &[u8; 16], record: &[u8]) -> Result<Keyring> {
    Keyring::open(master, db_id, record).map_err(|e| match e {
        CryptoError::WrongKey => Error::WrongKey,
        CryptoError::UnsupportedVersion(v) => Error::NewerFormat {
            found: v.into(),
            supported: FORMAT_VERSION,
        },
        other => Error::Corrupt(format!("keyring: {other}")),
    })
}
