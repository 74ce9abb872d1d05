//! The master key (KEK): raw, hex, or derived from a passphrase with Argon2id.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::CryptoError;

/// Length of every key in sealkv, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of the Argon2 salt we generate, in bytes.
pub const SALT_LEN: usize = 16;

/// The master key that seals the keyring. Zeroized on drop; `Debug` shows no bytes.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    /// A master key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::InvalidKey(
                "a raw key must be exactly 32 bytes",
            ));
        }
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    /// A master key from 64 hexadecimal characters (surrounding white space is ignored).
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        if text.len() != 2 * KEY_LEN {
            return Err(CryptoError::InvalidKey(
                "a hex key must be exactly 64 hex characters",
            ));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text, &mut key[..]).map_err(|_| {
            CryptoError::InvalidKey("a hex key may hold only the digits 0-9 and a-f")
        })?;
        Ok(Self(key))
    }

    /// A master key from the contents of a key file: 32 raw bytes, or 64 hex characters
    /// optionally followed by a newline.
    pub fn from_key_file(contents: &[u8]) -> Result<Self, CryptoError> {
        if contents.len() == KEY_LEN {
            return Self::from_bytes(contents);
        }
        match std::str::from_utf8(contents) {
            Ok(text) if text.trim().len() == 2 * KEY_LEN => Self::from_hex(text),
            _ => Err(CryptoError::InvalidKey(
                "a key file must hold 32 raw bytes or 64 hex characters",
            )),
        }
    }

    /// Derives a master key from a passphrase with Argon2id.
    ///
    /// `params` are checked against [`KdfParams::validate`] first, so parameters read
    /// from a file cannot make this allocate without bound.
    pub fn derive(passphrase: &[u8], salt: &[u8], params: &KdfParams) -> Result<Self, CryptoError> {
        params.validate()?;
        if salt.len() < SALT_LEN {
            return Err(CryptoError::Malformed("argon2 salt shorter than 16 bytes"));
        }
        let argon_params = Params::new(
            params.m_cost_kib,
            params.t_cost,
            params.p_cost,
            Some(KEY_LEN),
        )
        .map_err(|_| params.refuse("argon2 rejects these parameters"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase, salt, &mut key[..])
            .map_err(|_| params.refuse("argon2 rejects these parameters"))?;
        Ok(Self(key))
    }

    /// A fresh random master key from the operating system's generator.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        crate::random::fill_random(&mut key[..])?;
        Ok(Self(key))
    }

    /// The key bytes. Callers must not copy them into anything that is not zeroized.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// A passphrase held in a zeroizing buffer, with no `Debug` that shows it.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Wraps passphrase bytes. A trailing newline (as a passphrase file usually has) is
    /// removed, once.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        let mut bytes = Zeroizing::new(bytes.into());
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Self(bytes)
    }

    /// The passphrase bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Lanes (parallelism).
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about 0.2-0.3 s on a 2-core machine in release.
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Largest memory cost we accept: 4 GiB.
    pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
    /// Largest number of passes we accept.
    pub const MAX_T_COST: u32 = 64;
    /// Largest parallelism we accept.
    pub const MAX_P_COST: u32 = 64;

    /// Cheap parameters for tests only: 64 KiB, 1 pass. Never use for real data.
    pub const INSECURE_FOR_TESTS: Self = Self {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    /// Checks the parameters against the ceilings (and Argon2's own floors).
    pub fn validate(&self) -> Result<(), CryptoError> {
        if self.m_cost_kib > Self::MAX_M_COST_KIB {
            return Err(self.refuse("memory cost over the ceiling of 4194304 KiB (4 GiB)"));
        }
        if self.t_cost > Self::MAX_T_COST {
            return Err(self.refuse("more than the ceiling of 64 passes"));
        }
        if self.p_cost > Self::MAX_P_COST {
            return Err(self.refuse("parallelism over the ceiling of 64 lanes"));
        }
        if self.t_cost == 0 || self.p_cost == 0 || self.m_cost_kib < 8 * self.p_cost {
            return Err(self.refuse("below argon2's minimum (t >= 1, p >= 1, m >= 8*p KiB)"));
        }
        Ok(())
    }

    fn refuse(&self, reason: &'static str) -> CryptoError {
        CryptoError::KdfParams {
            m_cost_kib: self.m_cost_kib,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
            reason,
        }
    }
}

/// The most a caller lets a store's key derivation cost: parameters read from a file
/// are untrusted (a file someone sent can ask for 4 GiB × 64 passes), so they are
/// checked against these before any memory is allocated.
///
/// The default fits a small VPS: at most 1 GiB of memory, and memory × passes at most
/// 4 GiB (libsodium's "sensitive" preset is 1 GiB × 4 passes). Raise them to open a
/// store created with costlier parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfLimits {
    /// Largest memory cost accepted, in KiB.
    pub max_memory_kib: u32,
    /// Largest memory cost × passes accepted, in KiB.
    pub max_memory_passes_kib: u64,
}

impl Default for KdfLimits {
    fn default() -> Self {
        Self {
            max_memory_kib: 1024 * 1024,
            max_memory_passes_kib: 4 * 1024 * 1024,
        }
    }
}

impl KdfLimits {
    /// Checks `params` against these limits (and the absolute ceilings of
    /// [`KdfParams::validate`]), allocating nothing.
    pub fn check(&self, params: &KdfParams) -> Result<(), CryptoError> {
        params.validate()?;
        let work = u64::from(params.m_cost_kib) * u64::from(params.t_cost);
        if params.m_cost_kib > self.max_memory_kib || work > self.max_memory_passes_kib {
            return Err(CryptoError::KdfOverLimit {
                params: *params,
                limits: *self,
            });
        }
        Ok(())
    }
}

/// A fresh random salt for Argon2.
pub fn generate_salt() -> Result<[u8; SALT_LEN], CryptoError> {
    let mut salt = [0u8; SALT_LEN];
    crate::random::fill_random(&mut salt)?;
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_raw_agree() {
        let raw: Vec<u8> = (0u8..32).collect();
        let hex_text = hex::encode(&raw);
        let a = MasterKey::from_bytes(&raw).unwrap();
        let b = MasterKey::from_hex(&hex_text).unwrap();
        let c = MasterKey::from_key_file(format!("{hex_text}\n").as_bytes()).unwrap();
        let d = MasterKey::from_key_file(&raw).unwrap();
        for k in [&b, &c, &d] {
            assert_eq!(a.expose(), k.expose());
        }
    }

    #[test]
    fn bad_key_forms_are_refused() {
        assert!(MasterKey::from_bytes(&[0u8; 31]).is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(MasterKey::from_hex(&"ab".repeat(31)).is_err());
        assert!(MasterKey::from_key_file(b"short").is_err());
    }

    #[test]
    fn debug_shows_no_bytes() {
        let key = MasterKey::from_bytes(&[0xAB; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        let pass = Passphrase::new("hunter2");
        assert!(!format!("{pass:?}").contains("hunter2"));
    }

    #[test]
    fn derive_is_deterministic_and_salted() {
        let p = KdfParams::INSECURE_FOR_TESTS;
        let a = MasterKey::derive(b"pw", &[1; 16], &p).unwrap();
        let b = MasterKey::derive(b"pw", &[1; 16], &p).unwrap();
        let c = MasterKey::derive(b"pw", &[2; 16], &p).unwrap();
        let d = MasterKey::derive(b"pw2", &[1; 16], &p).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
        assert_ne!(a.expose(), d.expose());
    }

    #[test]
    fn excessive_params_are_refused_before_allocating() {
        let huge = KdfParams {
            m_cost_kib: u32::MAX,
            t_cost: 3,
            p_cost: 1,
        };
        let err = MasterKey::derive(b"pw", &[0; 16], &huge).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("4294967295") && msg.contains("ceiling"),
            "{msg}"
        );
        for bad in [
            KdfParams {
                m_cost_kib: 1024,
                t_cost: 1000,
                p_cost: 1,
            },
            KdfParams {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: 1000,
            },
            KdfParams {
                m_cost_kib: 1024,
                t_cost: 0,
                p_cost: 1,
            },
        ] {
            assert!(matches!(bad.validate(), Err(CryptoError::KdfParams { .. })));
        }
        assert!(KdfParams::default().validate().is_ok());
        assert!(MasterKey::derive(b"pw", &[0; 8], &KdfParams::INSECURE_FOR_TESTS).is_err());
    }

    #[test]
    fn passphrase_trims_one_newline() {
        assert_eq!(Passphrase::new("abc\n").expose(), b"abc");
        assert_eq!(Passphrase::new("abc\r\n").expose(), b"abc");
        assert_eq!(Passphrase::new("abc\n\n").expose(), b"abc\n");
    }
}
