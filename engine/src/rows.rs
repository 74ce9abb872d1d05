//! Rows of the data table: keys made of name tags, sealed rows, name checks.

use redb::{ReadableTable, TableDefinition};
use sealkv_crypto::{CryptoError, TAG_BYTES};

use crate::error::{Error, Result};

/// Longest namespace or key name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// The key of a row: namespace tag then key tag. `&[u8; 32]` compares with one
/// `memcmp` and reads without copying; redb gives it the same type name as
/// `[u8; 32]`, the key type of earlier builds, so their files open unchanged
/// (`engine/tests/format.rs` opens one).
pub(crate) type RowKey = &'static [u8; 32];
pub(crate) const DATA: TableDefinition<RowKey, &[u8]> = TableDefinition::new("sealkv_data");

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
        sealed: &'a redb::AccessGuard<'_, &'static [u8]>,
    ) -> Self {
        Self {
            ns_tag,
            key_tag,
            sealed: sealed.value(),
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

/// The rows of one namespace (or of the catalog): its tag followed by any key tag.
pub(crate) fn ns_rows<'t>(
    table: &'t impl ReadableTable<RowKey, &'static [u8]>,
    ns: &[u8; TAG_BYTES],
) -> std::result::Result<redb::Range<'t, RowKey, &'static [u8]>, redb::StorageError> {
    let (first, last) = (
        row_key(ns, &[0; TAG_BYTES]),
        row_key(ns, &[0xff; TAG_BYTES]),
    );
    table.range::<&[u8; 32]>(&first..=&last)
}
