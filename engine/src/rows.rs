//! Rows of the data table: keys made of name tags, sealed rows, name checks.

use std::ops::Bound;

use sealkv_crypto::{CryptoError, TAG_BYTES};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::rowstore::{RowRead, Table};
use crate::store::Value;

/// Set in the name-length word of a row's plaintext when an expiry time follows the
/// name (names are at most [`MAX_NAME_LEN`] bytes, so the bit is free).
pub(crate) const EXPIRES_FLAG: u32 = 1 << 31;

/// Writes a row's plaintext into `out`:
/// `u32 (len(name) | EXPIRES_FLAG if expiring) ‖ name ‖ [u64 expires at] ‖ value`.
/// The expiry time is sealed with the value, so changing it fails the tag.
pub(crate) fn encode_plain(
    out: &mut Zeroizing<Vec<u8>>,
    name: &[u8],
    expires: Option<u64>,
    value: &[u8],
) {
    let needed = 4 + name.len() + 8 + value.len();
    // Sized up front so no reallocation leaves a plaintext copy behind.
    if out.capacity() < needed {
        *out = Zeroizing::new(Vec::with_capacity(needed));
    }
    out.clear();
    let flag = if expires.is_some() { EXPIRES_FLAG } else { 0 };
    out.extend_from_slice(&(name.len() as u32 | flag).to_le_bytes());
    out.extend_from_slice(name);
    if let Some(at) = expires {
        out.extend_from_slice(&at.to_le_bytes());
    }
    out.extend_from_slice(value);
}

/// An opened row's plaintext, parsed.
pub(crate) struct Opened {
    plain: Value,
    name_len: usize,
    /// When the value expires (seconds since the Unix epoch), if it does.
    pub(crate) expires: Option<u64>,
    value_at: usize,
}

impl Opened {
    /// Parses a plaintext; `None` when it is malformed.
    pub(crate) fn parse(plain: Value) -> Option<Self> {
        let word = u32::from_le_bytes(plain.get(..4)?.try_into().ok()?);
        let name_len = (word & !EXPIRES_FLAG) as usize;
        if name_len > MAX_NAME_LEN || plain.len() < 4 + name_len {
            return None;
        }
        let (expires, value_at) = if word & EXPIRES_FLAG != 0 {
            let at = plain.get(4 + name_len..4 + name_len + 8)?;
            (
                Some(u64::from_le_bytes(at.try_into().ok()?)),
                4 + name_len + 8,
            )
        } else {
            (None, 4 + name_len)
        };
        Some(Self {
            plain,
            name_len,
            expires,
            value_at,
        })
    }

    /// The stored name.
    pub(crate) fn name(&self) -> &[u8] {
        &self.plain[4..4 + self.name_len]
    }

    /// True when the value has expired at `now`.
    pub(crate) fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// Length of the value part.
    pub(crate) fn value_len(&self) -> usize {
        self.plain.len() - self.value_at
    }

    /// The value part.
    pub(crate) fn into_value(mut self) -> Value {
        self.plain.drain(..self.value_at);
        self.plain
    }
}

/// Longest namespace or key name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// A sealed row and the tags it is stored under (which its associated data binds).
pub(crate) struct Row<'a> {
    pub(crate) ns_tag: &'a [u8; TAG_BYTES],
    pub(crate) key_tag: &'a [u8; TAG_BYTES],
    pub(crate) sealed: &'a [u8],
}

impl<'a> Row<'a> {
    pub(crate) fn new(
        ns_tag: &'a [u8; TAG_BYTES],
        key_tag: &'a [u8; TAG_BYTES],
        sealed: &'a [u8],
    ) -> Self {
        Self {
            ns_tag,
            key_tag,
            sealed,
        }
    }
}

pub(crate) fn integrity(namespace: &str, key: &str, reason: CryptoError) -> Error {
    Error::Integrity {
        namespace: namespace.to_string(),
        key: key.to_string(),
        reason,
    }
}

pub(crate) fn hex_tag(tag: &[u8]) -> String {
    format!("#{}", hex_lower(tag))
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a namespace or key name: not empty, at most [`MAX_NAME_LEN`] bytes.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName("names must not be empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidName(format!(
            "a name of {} bytes is over the limit of {MAX_NAME_LEN}",
            name.len()
        )));
    }
    Ok(())
}

pub(crate) fn row_key(ns: &[u8; TAG_BYTES], key: &[u8; TAG_BYTES]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..TAG_BYTES].copy_from_slice(ns);
    k[TAG_BYTES..].copy_from_slice(key);
    k
}

pub(crate) fn split_row(k: &[u8; 32]) -> ([u8; TAG_BYTES], [u8; TAG_BYTES]) {
    let mut a = [0u8; TAG_BYTES];
    let mut b = [0u8; TAG_BYTES];
    a.copy_from_slice(&k[..TAG_BYTES]);
    b.copy_from_slice(&k[TAG_BYTES..]);
    (a, b)
}

/// The first and last row keys of one namespace (or catalog): its tag followed by
/// any key tag.
pub(crate) fn ns_bounds(ns: &[u8; TAG_BYTES]) -> ([u8; 32], [u8; 32]) {
    (
        row_key(ns, &[0; TAG_BYTES]),
        row_key(ns, &[0xff; TAG_BYTES]),
    )
}

/// Visits the rows of one namespace (or of the catalog) in key order, with each row's
/// key tag and sealed value; `visit` returns false to stop.
pub(crate) fn scan_ns(
    rows: &dyn RowRead,
    ns: &[u8; TAG_BYTES],
    mut visit: impl FnMut([u8; TAG_BYTES], &[u8]) -> Result<bool>,
) -> Result<()> {
    let (first, last) = ns_bounds(ns);
    rows.scan(
        Table::Data,
        (Bound::Included(&first), Bound::Included(&last)),
        &mut |k, v| {
            let k = <&[u8; 32]>::try_from(k)
                .map_err(|_| Error::Corrupt("a data row key is not 32 bytes".into()))?;
            visit(split_row(k).1, v)
        },
    )
}

/// True when the namespace (or catalog) `ns` has any row.
pub(crate) fn ns_has_rows(rows: &dyn RowRead, ns: &[u8; TAG_BYTES]) -> Result<bool> {
    let (first, last) = ns_bounds(ns);
    crate::rowstore::any_in(
        rows,
        Table::Data,
        (Bound::Included(&first), Bound::Included(&last)),
    )
}
