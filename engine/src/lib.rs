#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! sealkv-engine: the encrypted store on one redb file.
//!
//! Values are compressed and sealed by `sealkv-crypto`, stored under keyed tags of
//! their namespace and key (the file shows no names), written through atomic, durable,
//! group-committed write transactions, with per-key exclusive transactions for callers
//! and online key rotation.
//!
//! ```
//! use sealkv_engine::{Batch, MasterKey, Options, Store};
//!
//! # fn main() -> Result<(), sealkv_engine::Error> {
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("auth.sealkv");
//! let store = Store::create(&path, MasterKey::generate()?, Options::default())?;
//! let mut batch = Batch::new();
//! batch.put("creds", "creds", br#"{"me":{}}"#.to_vec()).put("pre-key", "1", b"...".to_vec());
//! store.set(&batch)?;
//! assert_eq!(store.list("pre-key")?, vec!["1".to_string()]);
//! let n = store.transaction("4915550001", |tx| {
//!     let found = tx.get("pre-key", &["1"])?;
//!     tx.delete("pre-key", "1");
//!     Ok::<_, sealkv_engine::Error>(found.len())
//! })?;
//! assert_eq!(n, 1);
//! assert!(store.get("pre-key", &["1"])?.is_empty());
//! # Ok(())
//! # }
//! ```

pub mod anchor;
mod commit;
mod error;
mod expiry;
#[cfg(feature = "test-internals")]
mod fuzz;
mod guards;
mod health;
mod maintenance;
mod meta;
pub mod observe;
mod options;
mod outcome;
mod read;
mod rotate;
mod rows;
pub mod rowstore;
mod scope;
mod session;
mod slots;
mod state;
mod store;
mod txn;
#[cfg(feature = "serde")]
mod typed;

pub use anchor::AnchorLocation;
pub use commit::Batch;
pub use error::{Error, Result};
pub use expiry::EXPIRY_BUCKET_SECS;
pub use health::{Health, LOCK_HELD_TOO_LONG, LastCommit};
pub use maintenance::{NamespaceStats, Stats};
pub use meta::FORMAT_VERSION;
pub use options::{Clock, Concurrency, Options, Secret, system_clock};
pub use rotate::ReencryptProgress;
pub use rows::{MAX_NAME_LEN, check_name};
pub use rowstore::Location;
pub use sealkv_crypto::{
    Algorithm, Codec, Compression, CryptoError, KdfLimits, KdfParams, KeyInfo, KeyState, MasterKey,
    Passphrase,
};
pub use session::Session;
pub use slots::{MAX_SLOT_LABEL, MAX_SLOTS, SlotInfo, SlotKind};
pub use store::{Store, StoreInfo, Value, inspect};
pub use txn::Tx;

/// Internals for tests and fuzz targets. Not a stable API.
#[doc(hidden)]
pub mod internal {
    #[cfg(feature = "test-internals")]
    pub use crate::fuzz::{fuzz_concurrent, fuzz_open, fuzz_ops, fuzz_options, write_seed_store};
    pub use crate::rowstore::file::backend::BackendFactory;
    #[cfg(feature = "test-internals")]
    pub use crate::rowstore::file::journal::{
        Fault as JournalFault, faults::armed as journal_fault_armed,
        faults::inject as inject_journal_fault,
    };
    #[cfg(feature = "test-internals")]
    pub use crate::state::BENCH_WITHOUT_STATE;
}
