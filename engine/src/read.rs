//! Reads: point gets, listing, counting; opening sealed rows.
//!
//! Every read takes a [`Scope`] (the default session or a named one). An expired value
//! reads as absent from its expiry second on, whether or not a sweep removed it yet.

use std::collections::BTreeMap;

use sealkv_crypto::{Context, CryptoError, Keyring, TAG_BYTES, envelope};

use crate::error::Result;
use crate::observe;
use crate::rows::{MAX_NAME_LEN, Opened, Row, check_name, hex_tag, integrity, row_key, scan_ns};
use crate::rowstore::{RowRead, Table};
use crate::scope::{Scope, sessions_catalog_tag};
use crate::store::{Store, Value};

/// What a scanned row is, which decides the tag its stored name must have.
pub(crate) enum RowKind<'a> {
    /// A value of `namespace` in `scope`.
    Value(&'a Scope, &'a str),
    /// A namespace catalog entry of `scope`.
    Namespace(&'a Scope),
    /// A session catalog entry.
    Session,
}

impl Store {
    /// Reads values: the ones found, by key. Missing keys are absent from the map.
    pub fn get<K: AsRef<str>>(
        &self,
        namespace: &str,
        keys: &[K],
    ) -> Result<BTreeMap<String, Value>> {
        self.contained(|| {
            self.with_fresh_keyring(|| self.get_in(&self.inner.default_scope, namespace, keys))
        })
    }

    /// Reads one value: `None` if the key has none. The single-key form of
    /// [`Store::get`], without its map.
    pub fn get_one(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        self.contained(|| {
            self.with_fresh_keyring(|| self.get_one_in(&self.inner.default_scope, namespace, key))
        })
    }

    /// The keys of a namespace, sorted.
    pub fn list(&self, namespace: &str) -> Result<Vec<String>> {
        self.contained(|| {
            self.with_fresh_keyring(|| self.list_in(&self.inner.default_scope, namespace))
        })
    }

    /// The namespaces that hold at least one value, sorted.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        self.contained(|| self.with_fresh_keyring(|| self.namespaces_in(&self.inner.default_scope)))
    }

    /// Number of values in a namespace.
    pub fn count(&self, namespace: &str) -> Result<u64> {
        self.contained(|| {
            self.with_fresh_keyring(|| self.count_in(&self.inner.default_scope, namespace))
        })
    }

    /// The seconds-since-epoch the store's clock says it is.
    pub(crate) fn now(&self) -> u64 {
        (self.inner.opts.clock)()
    }

    pub(crate) fn get_in<K: AsRef<str>>(
        &self,
        scope: &Scope,
        namespace: &str,
        keys: &[K],
    ) -> Result<BTreeMap<String, Value>> {
        check_name(namespace)?;
        self.inner.meters.get.increment(1);
        let ring = self.ring();
        let ns_tag = scope.ns_tag(ring.name_key(), namespace);
        let snap = self.rows().view()?;
        let now = self.now();
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            check_name(key.as_ref())?;
            let key_tag = scope.key_tag(ring.name_key(), namespace, key.as_ref());
            rows.push((key_tag, row_key(&ns_tag, &key_tag)));
        }
        // One read for all of them: one point in time, whatever the engine (on a server,
        // one statement), so a batch another writer committed is seen whole or not at all.
        let row_keys: Vec<&[u8]> = rows.iter().map(|(_, row)| row.as_slice()).collect();
        let found = snap.get_many(Table::Data, &row_keys)?;
        let mut out = BTreeMap::new();
        for ((key, (key_tag, _)), sealed) in keys.iter().zip(&rows).zip(found) {
            let key = key.as_ref();
            if let Some(sealed) = sealed
                && let Some(value) =
                    self.open_row(&ring, scope, namespace, &ns_tag, key, key_tag, &sealed, now)?
            {
                out.insert(key.to_string(), value);
            }
        }
        Ok(out)
    }

    pub(crate) fn get_one_in(
        &self,
        scope: &Scope,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Value>> {
        check_name(namespace)?;
        self.inner.meters.get.increment(1);
        let ring = self.ring();
        let ns_tag = scope.ns_tag(ring.name_key(), namespace);
        let snap = self.rows().view()?;
        self.read_row(&ring, &*snap, scope, namespace, &ns_tag, key, self.now())
    }

    /// Looks up and opens the value of `key` in a namespace whose tag is `ns_tag`.
    #[allow(clippy::too_many_arguments)]
    fn read_row(
        &self,
        ring: &Keyring,
        snap: &dyn RowRead,
        scope: &Scope,
        namespace: &str,
        ns_tag: &[u8; TAG_BYTES],
        key: &str,
        now: u64,
    ) -> Result<Option<Value>> {
        check_name(key)?;
        let key_tag = scope.key_tag(ring.name_key(), namespace, key);
        let Some(sealed) = snap.get(Table::Data, &row_key(ns_tag, &key_tag))? else {
            return Ok(None);
        };
        self.open_row(ring, scope, namespace, ns_tag, key, &key_tag, &sealed, now)
    }

    /// Opens the sealed value found under `key` (whose tag is `key_tag`).
    #[allow(clippy::too_many_arguments)]
    fn open_row(
        &self,
        ring: &Keyring,
        scope: &Scope,
        namespace: &str,
        ns_tag: &[u8; TAG_BYTES],
        key: &str,
        key_tag: &[u8; TAG_BYTES],
        sealed: &[u8],
        now: u64,
    ) -> Result<Option<Value>> {
        let row = Row {
            ns_tag,
            key_tag,
            sealed,
        };
        let label = || scope.label(namespace);
        let opened = self.open_sealed(ring, &row, &label(), || key.to_string())?;
        // The tag was computed from `key`, so a matching name matches the tag too.
        if opened.name() != key.as_bytes() {
            return Err(integrity(&label(), key, CryptoError::Unseal));
        }
        if opened.expired(now) {
            return Ok(None);
        }
        self.value_of(opened, &label(), key).map(Some)
    }

    /// Opens a sealed row found by scanning: its stored name, checked against the row's
    /// tag as `kind` says, and the opened plaintext.
    pub(crate) fn open_named(
        &self,
        ring: &Keyring,
        row: &Row<'_>,
        kind: &RowKind<'_>,
        label: &str,
    ) -> Result<(String, Opened)> {
        let hint = || hex_tag(row.key_tag);
        let opened = self.open_sealed(ring, row, label, hint)?;
        let name = std::str::from_utf8(opened.name())
            .map_err(|_| {
                integrity(
                    label,
                    &hint(),
                    CryptoError::Malformed("stored key name is not UTF-8"),
                )
            })?
            .to_string();
        let nk = ring.name_key();
        let expected_tag = match kind {
            RowKind::Value(scope, ns) => scope.key_tag(nk, ns, &name),
            RowKind::Namespace(scope) => scope.ns_tag(nk, &name),
            RowKind::Session => nk.session_tags(name.as_bytes()).0,
        };
        if expected_tag != *row.key_tag {
            return Err(integrity(label, &hint(), CryptoError::Unseal));
        }
        Ok((name, opened))
    }

    /// Authenticates, decrypts and parses a row's plaintext.
    pub(crate) fn open_sealed(
        &self,
        ring: &Keyring,
        row: &Row<'_>,
        label: &str,
        hint: impl Fn() -> String,
    ) -> Result<Opened> {
        let ctx = Context {
            db_id: &self.inner.db_id,
            namespace: row.ns_tag,
            key: row.key_tag,
        };
        let limit = self.inner.opts.max_value_size + 4 + MAX_NAME_LEN + 8;
        let plain = envelope::open(ring, &ctx, row.sealed, limit).map_err(|e| {
            // A key this process has not loaded yet (another rotated) is not tampering.
            if !matches!(e, CryptoError::UnknownKey(_) | CryptoError::KeyDestroyed(_)) {
                observe::count(observe::AUTH_FAILURES, 1);
                tracing::warn!(target: "sealkv::integrity", "a stored record failed authentication");
            }
            integrity(label, &hint(), e)
        })?;
        self.inner.meters.opened.increment(1);
        Opened::parse(plain).ok_or_else(|| {
            integrity(
                label,
                &hint(),
                CryptoError::Malformed("stored value has no key name"),
            )
        })
    }

    /// The value part of an opened row, checked against the size limit.
    pub(crate) fn value_of(&self, opened: Opened, label: &str, name: &str) -> Result<Value> {
        let limit = self.inner.opts.max_value_size;
        if opened.value_len() > limit {
            return Err(integrity(
                label,
                name,
                CryptoError::TooLarge {
                    size: opened.value_len() as u64,
                    limit: limit as u64,
                },
            ));
        }
        Ok(opened.into_value())
    }

    /// The live keys of a namespace, sorted.
    pub(crate) fn list_in(&self, scope: &Scope, namespace: &str) -> Result<Vec<String>> {
        check_name(namespace)?;
        self.inner.meters.list.increment(1);
        let ring = self.ring();
        let ns_tag = scope.ns_tag(ring.name_key(), namespace);
        let snap = self.rows().snapshot()?;
        let (now, label) = (self.now(), scope.label(namespace));
        let kind = RowKind::Value(scope, namespace);
        let mut names = Vec::new();
        scan_ns(&*snap, &ns_tag, |key_tag, v| {
            let (name, opened) =
                self.open_named(&ring, &Row::new(&ns_tag, &key_tag, v), &kind, &label)?;
            if !opened.expired(now) {
                names.push(name);
            }
            Ok(true)
        })?;
        names.sort();
        Ok(names)
    }

    /// The namespaces of a scope that hold at least one live value, sorted.
    pub(crate) fn namespaces_in(&self, scope: &Scope) -> Result<Vec<String>> {
        self.inner.meters.namespaces.increment(1);
        let ring = self.ring();
        let snap = self.rows().snapshot()?;
        let now = self.now();
        let mut names = Vec::new();
        for (name, ns_tag) in self.catalog(&ring, &*snap, scope)? {
            if self.has_live_row(&ring, &*snap, scope, &name, &ns_tag, now)? {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The namespaces a scope's catalog lists, with their tags (a namespace whose
    /// values a sweep removed stays listed until a write or drop cleans it up).
    pub(crate) fn catalog(
        &self,
        ring: &Keyring,
        table: &dyn RowRead,
        scope: &Scope,
    ) -> Result<Vec<(String, [u8; TAG_BYTES])>> {
        self.catalog_rows(
            ring,
            table,
            &scope.catalog_tag,
            &RowKind::Namespace(scope),
            &scope.label("(catalog)"),
        )
    }

    /// True when the namespace holds a value that has not expired. Opens rows only in
    /// a store that has expiring values.
    fn has_live_row(
        &self,
        ring: &Keyring,
        snap: &dyn RowRead,
        scope: &Scope,
        namespace: &str,
        ns_tag: &[u8; TAG_BYTES],
        now: u64,
    ) -> Result<bool> {
        if snap.is_empty(Table::Expiry)? {
            return crate::rows::ns_has_rows(snap, ns_tag);
        }
        let (kind, label) = (RowKind::Value(scope, namespace), scope.label(namespace));
        let mut live = false;
        scan_ns(snap, ns_tag, |key_tag, v| {
            let (_, opened) =
                self.open_named(ring, &Row::new(ns_tag, &key_tag, v), &kind, &label)?;
            live = !opened.expired(now);
            Ok(!live)
        })?;
        Ok(live)
    }

    /// Number of live values in a namespace. Counts rows without opening them, unless
    /// the store has expiring values.
    pub(crate) fn count_in(&self, scope: &Scope, namespace: &str) -> Result<u64> {
        check_name(namespace)?;
        self.inner.meters.count.increment(1);
        let ring = self.ring();
        let ns_tag = scope.ns_tag(ring.name_key(), namespace);
        let snap = self.rows().snapshot()?;
        let (now, label) = (self.now(), scope.label(namespace));
        let kind = RowKind::Value(scope, namespace);
        let mut n = 0;
        let expiring = !snap.is_empty(Table::Expiry)?;
        scan_ns(&*snap, &ns_tag, |key_tag, v| {
            if expiring {
                let (_, opened) =
                    self.open_named(&ring, &Row::new(&ns_tag, &key_tag, v), &kind, &label)?;
                if opened.expired(now) {
                    return Ok(true);
                }
            }
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }

    /// The named sessions, with their scopes (entries that fail to open are errors).
    pub(crate) fn session_scopes(&self, ring: &Keyring, table: &dyn RowRead) -> Result<Vec<Scope>> {
        let cat = sessions_catalog_tag(ring.name_key());
        Ok(self
            .catalog_rows(ring, table, &cat, &RowKind::Session, "(sessions)")?
            .into_iter()
            .map(|(name, _)| Scope::named(ring.name_key(), &name))
            .collect())
    }

    /// The rows of a catalog (`cat`): each entry's name, checked against its tag as
    /// `kind` says, and the tag it names.
    fn catalog_rows(
        &self,
        ring: &Keyring,
        table: &dyn RowRead,
        cat: &[u8; TAG_BYTES],
        kind: &RowKind<'_>,
        label: &str,
    ) -> Result<Vec<(String, [u8; TAG_BYTES])>> {
        let mut out = Vec::new();
        scan_ns(table, cat, |tag, v| {
            let (name, _) = self.open_named(ring, &Row::new(cat, &tag, v), kind, label)?;
            out.push((name, tag));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Who owns each row tag prefix: every scope's catalog and namespaces. Catalog
    /// entries that fail to open are skipped (verify reports them).
    pub(crate) fn owners(&self, ring: &Keyring, table: &dyn RowRead) -> Owners {
        let mut owners = Owners {
            sessions_tag: sessions_catalog_tag(ring.name_key()),
            catalogs: BTreeMap::new(),
            namespaces: BTreeMap::new(),
        };
        let mut scopes = vec![self.inner.default_scope.as_ref().clone()];
        scopes.extend(self.session_scopes(ring, table).unwrap_or_default());
        for scope in scopes {
            // A catalog that cannot be read names nothing: its rows show as tags.
            let _ = scan_ns(table, &scope.catalog_tag, |ns_tag, v| {
                if let Ok((name, _)) = self.open_named(
                    ring,
                    &Row::new(&scope.catalog_tag, &ns_tag, v),
                    &RowKind::Namespace(&scope),
                    "(catalog)",
                ) {
                    owners.namespaces.insert(ns_tag, (scope.clone(), name));
                }
                Ok(true)
            });
            owners.catalogs.insert(scope.catalog_tag, scope);
        }
        owners
    }
}

/// The owners of row tag prefixes, for scans over the whole table.
pub(crate) struct Owners {
    /// The session catalog's tag.
    pub(crate) sessions_tag: [u8; TAG_BYTES],
    /// Namespace catalog tag → its scope.
    pub(crate) catalogs: BTreeMap<[u8; TAG_BYTES], Scope>,
    /// Namespace tag → its scope and name.
    pub(crate) namespaces: BTreeMap<[u8; TAG_BYTES], (Scope, String)>,
}

impl Owners {
    /// How errors name rows under `ns_tag`.
    pub(crate) fn label(&self, ns_tag: &[u8; TAG_BYTES]) -> String {
        if *ns_tag == self.sessions_tag {
            return "(sessions)".into();
        }
        if let Some(scope) = self.catalogs.get(ns_tag) {
            return scope.label("(catalog)");
        }
        match self.namespaces.get(ns_tag) {
            Some((scope, name)) => scope.label(name),
            None => hex_tag(ns_tag),
        }
    }

    /// What kind of row lives under `ns_tag`, if known.
    pub(crate) fn kind(&self, ns_tag: &[u8; TAG_BYTES]) -> Option<RowKind<'_>> {
        if *ns_tag == self.sessions_tag {
            return Some(RowKind::Session);
        }
        if let Some(scope) = self.catalogs.get(ns_tag) {
            return Some(RowKind::Namespace(scope));
        }
        self.namespaces
            .get(ns_tag)
            .map(|(scope, name)| RowKind::Value(scope, name))
    }
}
