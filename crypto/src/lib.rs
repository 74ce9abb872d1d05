#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! sealkv-crypto: every byte sealkv writes passes through here. It does no I/O.
//!
//! - [`MasterKey`]: raw, hex, or Argon2id from a [`Passphrase`] with capped [`KdfParams`];
//! - [`Keyring`]: data keys (XChaCha20-Poly1305 or AES-256-GCM) with states and seal
//!   counts, plus the [`NameKey`] that turns names into tags; sealed as one record;
//! - [`Compression`]: none, zstd or snappy, skipped when it does not pay, capped on the
//!   way out;
//! - [`envelope`]: the sealed value format, whose associated data binds the database,
//!   the header, the namespace and the key.
//!
//! ```
//! use sealkv_crypto::{envelope, Algorithm, Compression, Context, Keyring, MasterKey};
//!
//! # fn main() -> Result<(), sealkv_crypto::CryptoError> {
//! let master = MasterKey::generate()?;
//! let db_id = [7u8; 16];
//! let ring = Keyring::new(Algorithm::XChaCha20Poly1305, 0)?;
//! let ctx = Context { db_id: &db_id, namespace: b"session", key: b"4915550001.0" };
//! let sealed = envelope::seal(&ring, &Compression::default(), &ctx, b"secret")?;
//! assert_eq!(&envelope::open(&ring, &ctx, &sealed, 1 << 20)?[..], b"secret");
//!
//! // The keyring itself is sealed under the master key; another key cannot open it.
//! // It also carries a digest of the store's governing records (see `bind_meta`).
//! let meta = sealkv_crypto::bind_meta(&[("settings", b"...")]);
//! let sealed = ring.seal(&master, &db_id, &meta)?;
//! assert!(Keyring::open(&MasterKey::generate()?, &db_id, sealed.record()).is_err());
//! # Ok(())
//! # }
//! ```

mod compress;
pub mod envelope;
mod error;
mod keyring;
mod master;
mod random;

pub use compress::{Codec, Compression};
pub use envelope::{Context, Header};
pub use error::CryptoError;
pub use keyring::{
    AES_GCM_HARD_LIMIT, AES_GCM_SEAL_BUDGET, Algorithm, DataKey, KEYRING_VERSION, KeyInfo,
    KeyState, Keyring, META_DIGEST_LEN, NameKey, SEAL_RESERVATION, SealedKeyring, TAG_BYTES,
    bind_meta, unwrap_store_key, wrap_store_key,
};
pub use master::{KEY_LEN, KdfLimits, KdfParams, MasterKey, Passphrase, SALT_LEN, generate_salt};
pub use random::fill_random;

/// Internals for known-answer tests and fuzz targets: a chosen-nonce sealer among
/// them, so it exists only with the `test-internals` feature, which only tests and
/// the fuzz targets enable. Not a stable API.
#[cfg(feature = "test-internals")]
#[doc(hidden)]
pub mod internal {
    use crate::{Compression, Context, CryptoError, Keyring};

    /// Seals with a chosen key id and nonce (never reuse a nonce outside tests).
    pub fn seal_with_nonce(
        keyring: &Keyring,
        key_id: u32,
        nonce: &[u8],
        compression: &Compression,
        ctx: &Context<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        crate::envelope::seal_with(keyring, key_id, nonce, compression, ctx, plaintext)
    }

    /// The data-key AEAD itself, with a chosen key and nonce: `ciphertext ‖ tag`
    /// (for published test vectors such as draft-irtf-cfrg-xchacha §A.3).
    pub fn aead_seal(
        algorithm: crate::Algorithm,
        key: &[u8; crate::KEY_LEN],
        nonce: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let cipher = crate::keyring::Cipher::new(algorithm, key);
        let mut out = plaintext.to_vec();
        let tag = cipher.encrypt(nonce, aad, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Fuzz body: arbitrary bytes as an envelope. Opening must fail cleanly unless the
    /// input is the one valid envelope, and any change to a valid envelope must fail.
    pub fn fuzz_envelope(data: &[u8]) {
        use std::sync::OnceLock;
        static RING: OnceLock<(Keyring, Vec<u8>)> = OnceLock::new();
        let (ring, sealed) = RING.get_or_init(|| {
            let Ok(mut ring) = Keyring::new(crate::Algorithm::XChaCha20Poly1305, 0) else {
                panic!("the OS random generator failed");
            };
            let _ = ring.rotate(crate::Algorithm::Aes256Gcm, 0);
            let ctx = Context {
                db_id: &[0; 16],
                namespace: b"n",
                key: b"k",
            };
            let sealed = crate::envelope::seal(&ring, &Compression::default(), &ctx, &[b'a'; 300])
                .unwrap_or_default();
            (ring, sealed)
        });
        let ctx = Context {
            db_id: &[0; 16],
            namespace: b"n",
            key: b"k",
        };
        let _ = crate::Header::parse(data);
        if let Ok(v) = crate::envelope::open(ring, &ctx, data, 4096) {
            assert_eq!(data, &sealed[..], "only the valid envelope opens");
            assert!(v.len() <= 4096);
        }
        if let Some((&at, patch)) = data.split_first() {
            let mut spliced = sealed.clone();
            let at = at as usize % spliced.len().max(1);
            let n = patch.len().min(spliced.len() - at);
            spliced[at..at + n].copy_from_slice(&patch[..n]);
            if spliced != *sealed {
                assert!(
                    crate::envelope::open(ring, &ctx, &spliced, 4096).is_err(),
                    "a changed envelope opened"
                );
            }
        }
    }

    /// Fuzz body: arbitrary bytes as a sealed keyring record and as keyring plaintext.
    pub fn fuzz_keyring(data: &[u8]) {
        let Ok(master) = crate::MasterKey::from_bytes(&[9; 32]) else {
            return;
        };
        let _ = Keyring::open(&master, &[1; 16], data);
        for version in [1, crate::KEYRING_VERSION] {
            let Ok(record) = seal_keyring_plaintext(&master, &[1; 16], &[2; 24], data, version)
            else {
                return;
            };
            if let Ok(ring) = Keyring::open(&master, &[1; 16], &record) {
                let _ = ring.primary().id();
                let resealed = ring.seal(&master, &[1; 16], &[3; crate::META_DIGEST_LEN]);
                assert!(
                    resealed.is_ok_and(|r| Keyring::open(&master, &[1; 16], r.record()).is_ok()),
                    "a parsed keyring reseals"
                );
            }
        }
    }

    /// Seals raw keyring plaintext as a record of `version` with a chosen nonce (for
    /// known-answer tests).
    pub fn seal_keyring_plaintext(
        master: &crate::MasterKey,
        db_id: &[u8; 16],
        nonce: &[u8; 24],
        plain: &[u8],
        version: u8,
    ) -> Result<Vec<u8>, CryptoError> {
        crate::keyring::seal_keyring_with_nonce(master, db_id, nonce, plain, version)
    }
}
