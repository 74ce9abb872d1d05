//! The sealed value: `version | algorithm<<4 | codec | key id | nonce | ciphertext | tag`.
//!
//! See docs/FORMAT.md for every byte. The associated data binds the database id, the
//! six header bytes, and the namespace and key the value is stored under, so a value
//! moved inside the file, copied to another database, or with a flipped header bit
//! fails to open.

use zeroize::Zeroizing;

use crate::CryptoError;
use crate::compress::{self, Codec, Compression};
use crate::keyring::{Algorithm, Keyring};

/// Format version of the envelope.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes before the nonce: version, algorithm+codec, key id.
pub const HEADER_LEN: usize = 6;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;
/// Largest envelope overhead (XChaCha20-Poly1305): 6 + 24 + 16 = 46 bytes.
pub const MAX_OVERHEAD: usize = HEADER_LEN + 24 + TAG_LEN;

const AAD_LABEL: &[u8] = b"sealkv value v1\0";

/// Where a value lives: what its associated data binds it to.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The database id (random, from the file's meta table).
    pub db_id: &'a [u8; 16],
    /// The namespace (the engine passes its keyed tag).
    pub namespace: &'a [u8],
    /// The key (the engine passes its keyed tag).
    pub key: &'a [u8],
}

/// The parsed header of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Algorithm of the key that sealed it.
    pub algorithm: Algorithm,
    /// Codec applied before sealing.
    pub codec: Codec,
    /// Id of the data key that sealed it.
    pub key_id: u32,
}

impl Header {
    /// Parses the header of `envelope`, checking that the whole envelope is long enough
    /// for its nonce and tag. Never panics.
    pub fn parse(envelope: &[u8]) -> Result<Self, CryptoError> {
        let Some(head) = envelope.get(..HEADER_LEN) else {
            return Err(CryptoError::Malformed("envelope shorter than its header"));
        };
        if head[0] != ENVELOPE_VERSION {
            return Err(if head[0] > ENVELOPE_VERSION {
                CryptoError::UnsupportedVersion(head[0])
            } else {
                CryptoError::Malformed("envelope version 0")
            });
        }
        let algorithm = Algorithm::from_code(head[1] >> 4)
            .ok_or(CryptoError::Malformed("unknown algorithm"))?;
        let codec =
            Codec::from_code(head[1] & 0x0f).ok_or(CryptoError::Malformed("unknown codec"))?;
        let key_id = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
        if envelope.len() < HEADER_LEN + algorithm.nonce_len() + TAG_LEN {
            return Err(CryptoError::Malformed(
                "envelope shorter than nonce and tag",
            ));
        }
        Ok(Self {
            algorithm,
            codec,
            key_id,
        })
    }

    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let id = self.key_id.to_le_bytes();
        [
            ENVELOPE_VERSION,
            (self.algorithm as u8) << 4 | self.codec as u8,
            id[0],
            id[1],
            id[2],
            id[3],
        ]
    }
}

fn aad(ctx: &Context<'_>, header: &[u8; HEADER_LEN]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(
        AAD_LABEL.len() + 16 + HEADER_LEN + 16 + ctx.namespace.len() + ctx.key.len(),
    );
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(ctx.db_id);
    aad.extend_from_slice(header);
    aad.extend_from_slice(&(ctx.namespace.len() as u64).to_le_bytes());
    aad.extend_from_slice(ctx.namespace);
    aad.extend_from_slice(&(ctx.key.len() as u64).to_le_bytes());
    aad.extend_from_slice(ctx.key);
    aad
}

/// Compresses (if it pays) and seals `plaintext` under the keyring's primary key.
pub fn seal(
    keyring: &Keyring,
    compression: &Compression,
    ctx: &Context<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key = keyring.primary();
    let mut nonce = [0u8; 24];
    let nonce = &mut nonce[..key.algorithm().nonce_len()];
    // From the kernel on every seal, never a user-space generator: see random.rs (fork).
    crate::random::fill_random(nonce)?;
    key.count_seal()?;
    seal_with(keyring, key.id(), nonce, compression, ctx, plaintext)
}

/// Seals with a given key id and nonce. Reusing a nonce under one key is catastrophic:
/// this exists for known-answer tests and the fuzzer, through `internal`.
pub(crate) fn seal_with(
    keyring: &Keyring,
    key_id: u32,
    nonce: &[u8],
    compression: &Compression,
    ctx: &Context<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key = keyring.key(key_id)?;
    let cipher = key.cipher()?;
    let algorithm = key.algorithm();
    if nonce.len() != algorithm.nonce_len() {
        return Err(CryptoError::Malformed(
            "nonce length does not match the algorithm",
        ));
    }
    let start = HEADER_LEN + nonce.len();
    let mut out = Vec::with_capacity(start + Compression::max_output(plaintext.len()) + TAG_LEN);
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out.extend_from_slice(nonce);
    let codec = compression.compress_into(plaintext, &mut out)?;
    let header = Header {
        algorithm,
        codec,
        key_id,
    }
    .to_bytes();
    out[..HEADER_LEN].copy_from_slice(&header);
    let tag = cipher.encrypt(nonce, &aad(ctx, &header), &mut out[start..])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens an envelope: checks the tag, then decompresses with output capped at `limit`.
///
/// Every authentication failure is [`CryptoError::Unseal`]; a value under a destroyed
/// key is [`CryptoError::KeyDestroyed`] naming the key id.
pub fn open(
    keyring: &Keyring,
    ctx: &Context<'_>,
    envelope: &[u8],
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let header = Header::parse(envelope)?;
    let key = keyring.key(header.key_id)?;
    if key.algorithm() != header.algorithm {
        return Err(CryptoError::Unseal);
    }
    let cipher = key.cipher()?;
    let nonce_end = HEADER_LEN + header.algorithm.nonce_len();
    let tag_start = envelope.len() - TAG_LEN;
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&envelope[..HEADER_LEN]);
    let mut body = Zeroizing::new(envelope[nonce_end..tag_start].to_vec());
    cipher.decrypt(
        &envelope[HEADER_LEN..nonce_end],
        &aad(ctx, &head),
        &mut body,
        &envelope[tag_start..],
    )?;
    if header.codec == Codec::None {
        if body.len() > limit {
            return Err(CryptoError::TooLarge {
                size: body.len() as u64,
                limit: limit as u64,
            });
        }
        return Ok(body);
    }
    compress::decompress(header.codec, &body, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Keyring;

    const DB: [u8; 16] = [1; 16];

    fn ctx<'a>(ns: &'a [u8], key: &'a [u8]) -> Context<'a> {
        Context {
            db_id: &DB,
            namespace: ns,
            key,
        }
    }

    #[test]
    fn overhead_is_bounded() {
        for alg in [Algorithm::XChaCha20Poly1305, Algorithm::Aes256Gcm] {
            let ring = Keyring::new(alg, 0).unwrap();
            let sealed = seal(&ring, &Compression::NONE, &ctx(b"n", b"k"), b"hello").unwrap();
            assert!(sealed.len() - 5 <= 48);
            assert_eq!(sealed.len() - 5, HEADER_LEN + alg.nonce_len() + TAG_LEN);
        }
    }

    #[test]
    fn flips_truncations_and_transplants_fail() {
        for alg in [Algorithm::XChaCha20Poly1305, Algorithm::Aes256Gcm] {
            let ring = Keyring::new(alg, 0).unwrap();
            let c = Compression::default();
            let value = b"pre-key private bytes ".repeat(8);
            let sealed = seal(&ring, &c, &ctx(b"pre-key", b"17"), &value).unwrap();
            assert_eq!(
                &open(&ring, &ctx(b"pre-key", b"17"), &sealed, 1 << 20).unwrap()[..],
                &value[..]
            );
            for bit in 0..sealed.len() * 8 {
                let mut bad = sealed.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    open(&ring, &ctx(b"pre-key", b"17"), &bad, 1 << 20).is_err(),
                    "bit {bit}"
                );
            }
            for len in 0..sealed.len() {
                assert!(open(&ring, &ctx(b"pre-key", b"17"), &sealed[..len], 1 << 20).is_err());
            }
            let wrong = [
                ctx(b"pre-key", b"18"),
                ctx(b"session", b"17"),
                Context {
                    db_id: &[2; 16],
                    namespace: b"pre-key",
                    key: b"17",
                },
            ];
            for w in wrong {
                assert_eq!(
                    open(&ring, &w, &sealed, 1 << 20).unwrap_err(),
                    CryptoError::Unseal
                );
            }
            let other = Keyring::new(alg, 0).unwrap();
            assert_eq!(
                open(&other, &ctx(b"pre-key", b"17"), &sealed, 1 << 20).unwrap_err(),
                CryptoError::Unseal
            );
        }
    }

    #[test]
    fn destroyed_key_is_named() {
        let mut ring = Keyring::new(Algorithm::XChaCha20Poly1305, 0).unwrap();
        let sealed = seal(&ring, &Compression::default(), &ctx(b"n", b"k"), b"v").unwrap();
        ring.rotate(Algorithm::XChaCha20Poly1305, 1).unwrap();
        assert_eq!(
            &open(&ring, &ctx(b"n", b"k"), &sealed, 10).unwrap()[..],
            b"v"
        );
        ring.destroy(1).unwrap();
        let err = open(&ring, &ctx(b"n", b"k"), &sealed, 10).unwrap_err();
        assert_eq!(err, CryptoError::KeyDestroyed(1));
        assert!(err.to_string().contains("data key 1"));
    }

    #[test]
    fn oversized_plaintext_after_opening_is_refused() {
        let ring = Keyring::new(Algorithm::XChaCha20Poly1305, 0).unwrap();
        for c in [
            Compression::NONE,
            Compression::with_codec(Codec::Zstd),
            Compression::with_codec(Codec::Snappy),
        ] {
            let sealed = seal(&ring, &c, &ctx(b"n", b"k"), &vec![0u8; 10_000]).unwrap();
            assert!(matches!(
                open(&ring, &ctx(b"n", b"k"), &sealed, 9_999),
                Err(CryptoError::TooLarge { .. })
            ));
            assert_eq!(
                open(&ring, &ctx(b"n", b"k"), &sealed, 10_000)
                    .unwrap()
                    .len(),
                10_000
            );
        }
    }

    #[test]
    fn header_parse_never_panics_on_short_input() {
        for len in 0..64 {
            let _ = Header::parse(&vec![0x01; len]);
            let _ = Header::parse(&vec![0xff; len]);
        }
        assert!(matches!(
            Header::parse(&[9, 0x10, 0, 0, 0, 0]),
            Err(CryptoError::UnsupportedVersion(9))
        ));
    }
}
