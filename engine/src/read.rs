//! Reads: point gets, listing, counting; opening sealed rows.

use std::collections::BTreeMap;

use redb::ReadableTable;
use sealkv_crypto::{Context, CryptoError, Keyring, TAG_BYTES, envelope};

use crate::error::Result;
use crate::handle::Snapshot;
use crate::rows::{
    MAX_NAME_LEN, Row, RowKey, check_name, hex_tag, integrity, ns_rows, row_key, split_row,
};
use crate::store::{Store, Value};

impl Store {
    /// Reads values: the ones found, by key. Missing keys are absent from the map.
    pub fn get<K: AsRef<str>>(
        &self,
        namespace: &str,
        keys: &[K],
    ) -> Result<BTreeMap<String, Value>> {
        self.contained(|| self.get_unguarded(namespace, keys))
    }

    /// Reads one value: `None` if the key has none. The single-key form of
    /// [`Store::get`], without its map.
    pub fn get_one(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        self.contained(|| self.get_one_unguarded(namespace, key))
    }

    /// The keys of a namespace, sorted.
    pub fn list(&self, namespace: &str) -> Result<Vec<String>> {
        self.contained(|| self.list_unguarded(namespace))
    }

    /// The namespaces that hold at least one value, sorted.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        self.contained(|| self.namespaces_unguarded())
    }

    /// Number of values in a namespace.
    pub fn count(&self, namespace: &str) -> Result<u64> {
        self.contained(|| self.count_unguarded(namespace))
    }

    /// Reads values: the ones found, by key. Missing keys are absent from the map.
    fn get_unguarded<K: AsRef<str>>(
        &self,
        namespace: &str,
        keys: &[K],
    ) -> Result<BTreeMap<String, Value>> {
        check_name(namespace)?;
        let ring = self.ring();
        let ns_tag = ring.name_key().namespace_tag(namespace.as_bytes());
        let snap = self.db()?.snapshot()?;
        let mut out = BTreeMap::new();
        for key in keys {
            let key = key.as_ref();
            if let Some(value) = self.read_row(&ring, &snap, namespace, &ns_tag, key)? {
                out.insert(key.to_string(), value);
            }
        }
        Ok(out)
    }

    /// Reads one value, if present.
    fn get_one_unguarded(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        check_name(namespace)?;
        let ring = self.ring();
        let ns_tag = ring.name_key().namespace_tag(namespace.as_bytes());
        let snap = self.db()?.snapshot()?;
        self.read_row(&ring, &snap, namespace, &ns_tag, key)
    }

    /// Looks up and opens the value of `key` in a namespace whose tag is `ns_tag`.
    fn read_row(
        &self,
        ring: &Keyring,
        snap: &Snapshot,
        namespace: &str,
        ns_tag: &[u8; TAG_BYTES],
        key: &str,
    ) -> Result<Option<Value>> {
        check_name(key)?;
        let key_tag = ring
            .name_key()
            .key_tag(namespace.as_bytes(), key.as_bytes());
        let Some(sealed) = snap.data.get(&row_key(ns_tag, &key_tag))? else {
            return Ok(None);
        };
        let row = Row {
            ns_tag,
            key_tag: &key_tag,
            sealed: sealed.value(),
        };
        self.open_row(ring, &row, key, namespace).map(Some)
    }

    /// Opens the sealed row of the key named `key` (its key tag computed from `key`)
    /// and returns its value, checking that the name sealed inside is `key`.
    fn open_row(&self, ring: &Keyring, row: &Row<'_>, key: &str, namespace: &str) -> Result<Value> {
        let (plain, name_len) = self.open_sealed(ring, row, namespace, || key.to_string())?;
        // The tag was computed from `key`, so a matching name matches the tag too.
        if &plain[4..4 + name_len] != key.as_bytes() {
            return Err(integrity(namespace, key, CryptoError::Unseal));
        }
        self.strip_name(plain, name_len, namespace, key)
    }

    /// Opens a sealed row found by scanning, returning (stored key name, value). The
    /// name is checked against the row's tag.
    pub(crate) fn open_named(
        &self,
        ring: &Keyring,
        row: &Row<'_>,
        namespace: &str,
    ) -> Result<(String, Value)> {
        let hint = || hex_tag(row.key_tag);
        let (plain, name_len) = self.open_sealed(ring, row, namespace, hint)?;
        let name = std::str::from_utf8(&plain[4..4 + name_len])
            .map_err(|_| {
                integrity(
                    namespace,
                    &hint(),
                    CryptoError::Malformed("stored key name is not UTF-8"),
                )
            })?
            .to_string();
        let expected_tag = if row.ns_tag == &self.inner.catalog_tag {
            ring.name_key().namespace_tag(name.as_bytes())
        } else {
            ring.name_key()
                .key_tag(namespace.as_bytes(), name.as_bytes())
        };
        if expected_tag != *row.key_tag {
            return Err(integrity(namespace, &hint(), CryptoError::Unseal));
        }
        let value = self.strip_name(plain, name_len, namespace, &name)?;
        Ok((name, value))
    }

    /// Authenticates and decrypts a row: its plaintext (`name length | name | value`)
    /// and the name's length, checked to fit.
    fn open_sealed(
        &self,
        ring: &Keyring,
        row: &Row<'_>,
        namespace: &str,
        hint: impl Fn() -> String,
    ) -> Result<(Value, usize)> {
        let ctx = Context {
            db_id: &self.inner.db_id,
            namespace: row.ns_tag,
            key: row.key_tag,
        };
        let limit = self.inner.opts.max_value_size + 4 + MAX_NAME_LEN;
        let plain = envelope::open(ring, &ctx, row.sealed, limit)
            .map_err(|e| integrity(namespace, &hint(), e))?;
        let name_len = plain
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .filter(|&len| len <= MAX_NAME_LEN && plain.len() >= 4 + len)
            .ok_or_else(|| {
                integrity(
                    namespace,
                    &hint(),
                    CryptoError::Malformed("stored value has no key name"),
                )
            })?;
        Ok((plain, name_len))
    }

    /// The value part of an opened row, checked against the size limit.
    fn strip_name(
        &self,
        mut plain: Value,
        name_len: usize,
        namespace: &str,
        name: &str,
    ) -> Result<Value> {
        plain.drain(..4 + name_len);
        if plain.len() > self.inner.opts.max_value_size {
            return Err(integrity(
                namespace,
                name,
                CryptoError::TooLarge {
                    size: plain.len() as u64,
                    limit: self.inner.opts.max_value_size as u64,
                },
            ));
        }
        Ok(plain)
    }

    /// The keys of a namespace, sorted.
    fn list_unguarded(&self, namespace: &str) -> Result<Vec<String>> {
        check_name(namespace)?;
        let ring = self.ring();
        let ns_tag = ring.name_key().namespace_tag(namespace.as_bytes());
        let snap = self.db()?.snapshot()?;
        let table = &snap.data;
        let mut names = Vec::new();
        for row in ns_rows(table, &ns_tag)? {
            let (k, v) = row?;
            let key_tag = split_row(k.value()).1;
            names.push(
                self.open_named(&ring, &Row::new(&ns_tag, &key_tag, &v), namespace)?
                    .0,
            );
        }
        names.sort();
        Ok(names)
    }

    /// The namespaces that hold at least one value, sorted.
    fn namespaces_unguarded(&self) -> Result<Vec<String>> {
        let ring = self.ring();
        let snap = self.db()?.snapshot()?;
        let table = &snap.data;
        let cat = self.inner.catalog_tag;
        let mut names = Vec::new();
        for row in ns_rows(table, &cat)? {
            let (k, v) = row?;
            let ns_tag = split_row(k.value()).1;
            names.push(
                self.open_named(&ring, &Row::new(&cat, &ns_tag, &v), "(catalog)")?
                    .0,
            );
        }
        names.sort();
        Ok(names)
    }

    /// Number of values in a namespace.
    fn count_unguarded(&self, namespace: &str) -> Result<u64> {
        check_name(namespace)?;
        let ns_tag = self.ring().name_key().namespace_tag(namespace.as_bytes());
        let snap = self.db()?.snapshot()?;
        let table = &snap.data;
        let mut n = 0;
        for row in ns_rows(table, &ns_tag)? {
            row?;
            n += 1;
        }
        Ok(n)
    }

    /// Namespace tag → name, from the catalog (entries that fail to open are skipped).
    pub(crate) fn namespace_names(
        &self,
        ring: &Keyring,
        table: &impl ReadableTable<RowKey, &'static [u8]>,
    ) -> BTreeMap<[u8; TAG_BYTES], String> {
        let cat = self.inner.catalog_tag;
        let mut names = BTreeMap::new();
        if let Ok(range) = ns_rows(table, &cat) {
            for (k, v) in range.flatten() {
                let ns_tag = split_row(k.value()).1;
                if let Ok((name, _)) =
                    self.open_named(ring, &Row::new(&cat, &ns_tag, &v), "(catalog)")
                {
                    names.insert(ns_tag, name);
                }
            }
        }
        names
    }
}
