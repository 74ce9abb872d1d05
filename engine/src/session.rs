//! Sessions: many bots (or accounts, or tenants) in one store.
//!
//! A session is a name (private on disk, like every name) that scopes namespaces: the
//! same namespace and key in two sessions are two unrelated rows, and a value moved to
//! another session's rows fails to open, since its tags, which its sealing binds, come
//! from the session's name. The store's own methods read and write the default session,
//! which holds everything written before sessions existed.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use crate::commit::{Batch, KeyringWrite};
use crate::error::{Error, Result};
use crate::rows::{check_name, ns_bounds, ns_has_rows, row_key, scan_ns};
use crate::rowstore::Table;
use crate::scope::{Scope, sessions_catalog_tag};
use crate::store::{Store, Value};
use crate::txn::Tx;

/// One named session of a store: the store's get/set/list/transaction API, scoped to
/// the session. Cheap to clone; it shares the store.
#[derive(Clone)]
pub struct Session {
    store: Store,
    scope: Arc<Scope>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A session id may be a phone number: not shown.
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Store {
    /// The session named `id` (it need not exist yet: it appears with its first
    /// value). The id follows the rules of a name ([`check_name`]).
    pub fn session(&self, id: &str) -> Result<Session> {
        check_name(id).map_err(|e| match e {
            Error::InvalidName(why) => Error::InvalidName(format!("session id: {why}")),
            other => other,
        })?;
        let scope = Scope::named(self.ring().name_key(), id);
        Ok(Session {
            store: self.clone(),
            scope: Arc::new(scope),
        })
    }

    /// The named sessions that hold at least one value, sorted.
    pub fn sessions(&self) -> Result<Vec<String>> {
        self.contained(|| {
            self.with_fresh_keyring(|| {
                let scopes = {
                    let ring = self.ring();
                    let snap = self.rows().snapshot()?;
                    self.session_scopes(&ring, &*snap)?
                };
                // With no keyring guard held: `namespaces_in` takes its own, and a second
                // read lock on a thread that holds one deadlocks behind a waiting writer.
                let mut names = Vec::new();
                for scope in scopes {
                    if !self.namespaces_in(&scope)?.is_empty()
                        && let Some(name) = scope.session
                    {
                        names.push(name);
                    }
                }
                names.sort();
                Ok(names)
            })
        })
    }

    /// Deletes every value of the session `id`, and the session itself, in one atomic
    /// write transaction whose work is proportional to the session's size. Returns
    /// false when the store holds no value of that session.
    pub fn drop_session(&self, id: &str) -> Result<bool> {
        let session = self.session(id)?;
        self.clear_scope(&session.scope)
    }

    /// The default session as a [`Session`]: the store's own namespaces, for code that
    /// serves the default and named sessions alike.
    pub fn default_session(&self) -> Session {
        Session {
            store: self.clone(),
            scope: self.inner.default_scope.clone(),
        }
    }

    /// Deletes every value of one scope (and a named session's entry) in one write
    /// transaction, walking only that scope's catalog.
    fn clear_scope(&self, scope: &Scope) -> Result<bool> {
        self.check_writable()?;
        self.with_fresh_keyring(|| self.clear_scope_once(scope))
    }

    fn clear_scope_once(&self, scope: &Scope) -> Result<bool> {
        let ring = self.ring();
        let _commit = self.commit_lock();
        let nk = ring.name_key();
        let session_row = scope
            .session_tag
            .map(|tag| row_key(&sessions_catalog_tag(nk), &tag));
        let mut existed = false;
        self.write_with_keyring(&ring, KeyringWrite::IfNeeded, |txn| {
            existed = false;
            if let Some(row) = &session_row
                && txn.get(Table::Data, row)?.is_none()
            {
                return Ok(());
            }
            let mut namespaces = Vec::new();
            scan_ns(&*txn, &scope.catalog_tag, |ns_tag, _| {
                namespaces.push(ns_tag);
                Ok(true)
            })?;
            for ns_tag in &namespaces {
                existed |= ns_has_rows(&*txn, ns_tag)?;
                let (first, last) = ns_bounds(ns_tag);
                txn.delete_range(
                    Table::Data,
                    (Bound::Included(&first), Bound::Included(&last)),
                )?;
                txn.delete(Table::Data, &row_key(&scope.catalog_tag, ns_tag))?;
            }
            // A session whose values a sweep removed leaves its catalog entries behind:
            // they go now, but the session did not exist any more.
            if let Some(row) = &session_row {
                txn.delete(Table::Data, row)?;
            }
            Ok(())
        })?;
        Ok(existed)
    }
}

impl Session {
    /// The session's id; `None` for the default session.
    pub fn id(&self) -> Option<&str> {
        self.scope.session.as_deref()
    }

    /// The store the session lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Reads values: the ones found, by key (see [`Store::get`]).
    pub fn get<K: AsRef<str>>(
        &self,
        namespace: &str,
        keys: &[K],
    ) -> Result<BTreeMap<String, Value>> {
        self.store.contained(|| {
            self.store
                .with_fresh_keyring(|| self.store.get_in(&self.scope, namespace, keys))
        })
    }

    /// Reads one value, if present (see [`Store::get_one`]).
    pub fn get_one(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        self.store.contained(|| {
            self.store
                .with_fresh_keyring(|| self.store.get_one_in(&self.scope, namespace, key))
        })
    }

    /// The keys of a namespace, sorted.
    pub fn list(&self, namespace: &str) -> Result<Vec<String>> {
        self.store.contained(|| {
            self.store
                .with_fresh_keyring(|| self.store.list_in(&self.scope, namespace))
        })
    }

    /// The session's namespaces that hold at least one value, sorted.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        self.store.contained(|| {
            self.store
                .with_fresh_keyring(|| self.store.namespaces_in(&self.scope))
        })
    }

    /// Number of values in a namespace.
    pub fn count(&self, namespace: &str) -> Result<u64> {
        self.store.contained(|| {
            self.store
                .with_fresh_keyring(|| self.store.count_in(&self.scope, namespace))
        })
    }

    /// Applies every change of `batch` to this session in one atomic, durable write
    /// transaction.
    pub fn set(&self, batch: &Batch) -> Result<()> {
        self.store.set_in(&self.scope, batch)
    }

    /// Stores one value.
    pub fn put(&self, namespace: &str, key: &str, value: impl Into<Vec<u8>>) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(namespace, key, value);
        self.set(&batch)
    }

    /// Stores one value that expires after `ttl`.
    pub fn put_with_ttl(
        &self,
        namespace: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> Result<()> {
        let mut batch = Batch::new();
        batch.put_with_ttl(namespace, key, value, ttl);
        self.set(&batch)
    }

    /// Deletes one value. Returns whether it existed.
    pub fn delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let existed = self.get_one(namespace, key)?.is_some();
        let mut batch = Batch::new();
        batch.delete(namespace, key);
        self.set(&batch)?;
        Ok(existed)
    }

    /// Deletes every value of this session (a named session goes with them), in one
    /// transaction. Other sessions keep theirs.
    pub fn clear(&self) -> Result<()> {
        self.store.clear_scope(&self.scope).map(|_| ())
    }

    /// Runs `f` exclusively for `lock_key` in this session and commits its writes
    /// atomically (see [`Store::transaction`]). Sessions do not share lock keys.
    pub fn transaction<T, E: From<Error>>(
        &self,
        lock_key: &str,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.store.transaction_in(&self.scope, lock_key, f)
    }
}
