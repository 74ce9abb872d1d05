//! The one error type of the crypto crate.

use std::fmt;

/// Everything that can go wrong while deriving keys, sealing or opening.
///
/// Authentication failures are deliberately opaque: a wrong key, a flipped bit, a
/// truncated envelope and a value moved to another key all give [`CryptoError::Unseal`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The master key does not open the keyring: a wrong key or passphrase.
    WrongKey,
    /// A sealed value failed to open; which check failed is not said.
    Unseal,
    /// The bytes are not a sealkv envelope or keyring of a version we know.
    Malformed(&'static str),
    /// The envelope or keyring was written by a newer format version.
    UnsupportedVersion(u8),
    /// The value is sealed under a data key that was destroyed.
    KeyDestroyed(u32),
    /// The value names a data key id the keyring does not hold.
    UnknownKey(u32),
    /// A value (after decompression) is larger than the configured limit.
    TooLarge {
        /// Size of the value in bytes.
        size: u64,
        /// The configured maximum.
        limit: u64,
    },
    /// Argon2 parameters outside what we accept (read from a file, they are untrusted).
    KdfParams {
        /// Memory cost in KiB.
        m_cost_kib: u32,
        /// Number of passes.
        t_cost: u32,
        /// Parallelism.
        p_cost: u32,
        /// What is wrong with them, including the ceiling.
        reason: &'static str,
    },
    /// Argon2 parameters within the absolute ceilings but over the caller's limits
    /// ([`crate::KdfLimits`]): refused before allocating anything.
    KdfOverLimit {
        /// The parameters asked for.
        params: crate::KdfParams,
        /// The limits in force.
        limits: crate::KdfLimits,
    },
    /// A master key given in a bad form (length, hex digits).
    InvalidKey(&'static str),
    /// The primary AES-256-GCM key has used its whole seal budget; rotate first.
    SealBudgetExhausted(u32),
    /// The operating system's random number generator failed (nothing was sealed).
    Random,
    /// The compressor failed (it never sees untrusted input, so this is a bug or out of memory).
    Compression(String),
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongKey => {
                f.write_str("wrong master key or passphrase: the keyring does not open")
            }
            Self::Unseal => f.write_str("sealed value failed authentication"),
            Self::Malformed(what) => write!(f, "malformed data: {what}"),
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "format version {v} is newer than this build of sealkv understands"
                )
            }
            Self::KeyDestroyed(id) => write!(f, "data key {id} was destroyed"),
            Self::UnknownKey(id) => write!(f, "data key {id} is not in the keyring"),
            Self::TooLarge { size, limit } => {
                write!(
                    f,
                    "value of {size} bytes is over the limit of {limit} bytes"
                )
            }
            Self::KdfParams {
                m_cost_kib,
                t_cost,
                p_cost,
                reason,
            } => write!(
                f,
                "refusing argon2id parameters m={m_cost_kib} KiB, t={t_cost}, p={p_cost}: {reason}"
            ),
            Self::KdfOverLimit { params, limits } => write!(
                f,
                "refusing argon2id parameters m={} KiB, t={}, p={}: over the limit of {} KiB of \
                 memory and {} KiB x passes (if you trust this file, raise Options::kdf_limits, or \
                 pass --max-kdf-memory MIB and --max-kdf-work MIB to the sealkv command)",
                params.m_cost_kib,
                params.t_cost,
                params.p_cost,
                limits.max_memory_kib,
                limits.max_memory_passes_kib
            ),
            Self::InvalidKey(why) => write!(f, "invalid master key: {why}"),
            Self::SealBudgetExhausted(id) => write!(
                f,
                "data key {id} (aes-256-gcm) has used its seal budget; rotate the data key"
            ),
            Self::Compression(e) => write!(f, "compression failed: {e}"),
            Self::Random => f.write_str("the operating system's random number generator failed"),
        }
    }
}

impl std::error::Error for CryptoError {}
