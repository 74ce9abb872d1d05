#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! sealkv: an encrypted embedded key-value store in one file.
//!
//! Values are compressed (snappy by default, or zstd), sealed with XChaCha20-Poly1305 (or
//! AES-256-GCM) under data keys that rotate, wrapped by a master key (raw, or derived
//! from a passphrase with Argon2id). Names are stored only as keyed tags. Writes are
//! atomic, durable, group-committed redb transactions.
//!
//! ```
//! use sealkv::{Batch, Options, Passphrase, Store};
//!
//! # fn main() -> Result<(), sealkv::Error> {
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("bot.sealkv");
//! let opts = Options { kdf: sealkv::KdfParams::INSECURE_FOR_TESTS, ..Options::default() };
//! let store = Store::create(&path, Passphrase::new("correct horse battery"), opts.clone())?;
//! let mut batch = Batch::new();
//! batch
//!     .put("creds", "creds", br#"{"registered":true}"#.to_vec())
//!     .put("session", "4915550001.0", b"session record".to_vec());
//! store.set(&batch)?; // one atomic, durable transaction
//! drop(store);
//!
//! let store = Store::open(&path, Passphrase::new("correct horse battery"), opts)?;
//! let found = store.get("session", &["4915550001.0"])?;
//! assert_eq!(&found["4915550001.0"][..], b"session record");
//! # Ok(())
//! # }
//! ```

pub mod auth;
#[cfg(feature = "keychain")]
pub mod keychain;
mod open;

pub use open::open_or_create;

pub use sealkv_crypto::{AES_GCM_SEAL_BUDGET, CryptoError};
pub use sealkv_engine::{
    Algorithm, AnchorLocation, Batch, Clock, Codec, Compression, Concurrency, EXPIRY_BUCKET_SECS,
    Error, FORMAT_VERSION, Health, KdfLimits, KdfParams, KeyInfo, KeyState, LastCommit, Location,
    MAX_NAME_LEN, MAX_SLOTS, MasterKey, NamespaceStats, Options, Passphrase, ReencryptProgress,
    Result, Secret, Session, SlotInfo, SlotKind, Stats, Store, StoreInfo, Tx, Value, anchor,
    check_name, inspect, observe, system_clock,
};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
