//! The plugin's core: named stores in one directory, their keys in the OS keychain.
//!
//! Nothing here knows Tauri (a Tauri 3 port, or another desktop framework, needs only
//! the thin layer in `lib.rs` and `commands.rs` rewritten). [`Sealkv`] holds the stores
//! an app has open; each is a [`sealkv::Store`] at `<directory>/<name>.sealkv`, created
//! through a keychain slot under the app's identifier and, when the app gives one, a
//! recovery passphrase slot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sealkv::keychain::{self, Keychain};
use sealkv::{Batch, Options, Passphrase, Store};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The label of the passphrase slot [`Sealkv::open`] adds for a recovery passphrase.
pub const RECOVERY_LABEL: &str = "recovery";
/// The label of the keychain slots [`Sealkv::open`] adds.
pub const KEYCHAIN_LABEL: &str = "keychain";
/// The longest store name [`Sealkv::open`] takes.
pub const MAX_STORE_NAME: usize = 64;

/// The stores an app has open, by name, in one directory (the app's data directory),
/// their keys under one keychain service (the app's identifier).
pub struct Sealkv {
    directory: PathBuf,
    service: String,
    open: Mutex<HashMap<String, Arc<Store>>>,
    /// Held while a store is being opened (a keychain lookup, Argon2id for a recovery
    /// passphrase): opens wait for each other, reads and writes on open stores do not.
    opening: Mutex<()>,
}

impl std::fmt::Debug for Sealkv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealkv")
            .field("directory", &self.directory)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// What [`Sealkv::open`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Opened {
    /// The store's name, as given.
    pub name: String,
    /// The store's id (the keychain account its key is kept under; `sealkv stats` shows it).
    pub id: String,
    /// True when this call created the store.
    pub created: bool,
    /// True when the keychain could not open the store and the recovery passphrase
    /// did (see [`Sealkv::open`]).
    pub recovered: bool,
    /// True when, after such a recovery, a new keychain slot now opens the store: later
    /// opens need no passphrase. False after a recovery when the keychain could not
    /// take the new key (it is locked, or there is none).
    pub repaired: bool,
    /// True when the recovery found the store's rollback anchor gone with the keychain
    /// (a keychain reset, a new machine) and accepted the file as the current state
    /// (`Store::accept_restore`): it could not be checked against rollback this once,
    /// and a new anchor now guards it. Tell the user.
    pub restore_accepted: bool,
    /// True when the store was already open in this app (nothing was done).
    pub already_open: bool,
}

/// A value to write: bytes as they are, text as its UTF-8 bytes, or a JSON value as
/// its UTF-8 text.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Data {
    /// Bytes, stored unchanged.
    Bytes(Vec<u8>),
    /// Text, stored as its UTF-8 bytes.
    Text(String),
    /// A JSON value, stored as its compact UTF-8 text.
    Json(serde_json::Value),
}

// Values are secrets: Debug shows their kind and size only.
fn redacted(f: &mut std::fmt::Formatter<'_>, kind: &str, len: Option<usize>) -> std::fmt::Result {
    match len {
        Some(len) => write!(f, "{kind}(<{len} bytes>)"),
        None => write!(f, "{kind}(<value>)"),
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => redacted(f, "Bytes", Some(b.len())),
            Self::Text(t) => redacted(f, "Text", Some(t.len())),
            Self::Json(_) => redacted(f, "Json", None),
        }
    }
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => redacted(f, "Bytes", Some(b.len())),
            Self::Text(t) => redacted(f, "Text", Some(t.len())),
            Self::Json(_) => redacted(f, "Json", None),
        }
    }
}

/// One change of a [`Sealkv::set`] batch: a value, or `None` to delete.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The new value; `None` (JSON `null`) deletes the key. The field must be there:
    /// a change without one is refused, not taken for a deletion.
    #[serde(deserialize_with = "Option::deserialize")]
    pub value: Option<Data>,
}

// The store keeps names only as keyed tags: Debug shows their sizes, not them.
impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field(
                "namespace",
                &format_args!("<{} bytes>", self.namespace.len()),
            )
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("value", &self.value)
            .finish()
    }
}

/// How [`Sealkv::get`] hands a value back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Encoding {
    /// The stored bytes.
    #[default]
    Bytes,
    /// The stored bytes as UTF-8 text (`SEALKV_NOT_TEXT` when they are not).
    Text,
    /// The stored bytes parsed as JSON (`SEALKV_NOT_JSON` when they are not).
    Json,
}

/// A value [`Sealkv::get`] read.
#[derive(Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Read {
    /// The stored bytes.
    Bytes(Vec<u8>),
    /// The stored bytes, as UTF-8 text.
    Text(String),
    /// The stored bytes, parsed as JSON.
    Json(serde_json::Value),
}

/// One problem [`Sealkv::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The problem's stable code (`SEALKV_INTEGRITY`, `SEALKV_CONTENT_CHANGED`, …).
    pub code: String,
    /// What is wrong, for people.
    pub message: String,
}

impl Sealkv {
    /// Stores in `directory`, their keys under the keychain service `service`.
    pub fn new(directory: impl Into<PathBuf>, service: impl Into<String>) -> Self {
        Self {
            directory: directory.into(),
            service: service.into(),
            open: Mutex::new(HashMap::new()),
            opening: Mutex::new(()),
        }
    }

    /// The directory the stores are in.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The keychain service their keys are kept under.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The file of the store `name`: `<directory>/<name>.sealkv`. A name is 1 to 64
    /// letters, digits, `-` and `_` (no path).
    pub fn path_of(&self, name: &str) -> Result<PathBuf> {
        let fine = !name.is_empty()
            && name.len() <= MAX_STORE_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !fine {
            return Err(Error::invalid(format!(
                "a store name is 1 to {MAX_STORE_NAME} letters, digits, '-' and '_', not {name:?}"
            )));
        }
        Ok(self.directory.join(format!("{name}.sealkv")))
    }

    /// Opens the store `name`, creating it when its file does not exist.
    ///
    /// - A new store gets a fresh random key in the keychain (a keychain slot, and its
    ///   rollback anchor beside the key) and, with `recovery`, a passphrase slot
    ///   labelled `recovery`. If any step fails, nothing is left behind.
    /// - An existing store opens with the key the keychain holds, without a prompt.
    /// - When the keychain cannot give the right key (the entry is gone after a reset or
    ///   on another machine, or it holds another key) and `recovery` is given, the
    ///   passphrase opens the store ([`Opened::recovered`]). If the store's rollback
    ///   anchor went with the keychain, the file is accepted as the current state
    ///   ([`Opened::restore_accepted`]). A new keychain slot then opens it from now on
    ///   ([`Opened::repaired`]); older keychain slots stay (a copy of the store on
    ///   another machine may still use one).
    /// - Without `recovery`, the keychain's failure is the error, with its hint: never a
    ///   silent fallback. With no keychain reachable at all, even the passphrase cannot
    ///   open a store whose anchor is in the keychain: the error says to start one.
    pub fn open(&self, name: &str, recovery: Option<&str>) -> Result<Opened> {
        let path = self.path_of(name)?;
        let _opening = self.opening.lock().unwrap_or_else(PoisonError::into_inner);
        let mut opened = Opened {
            name: name.to_string(),
            id: String::new(),
            created: false,
            recovered: false,
            repaired: false,
            restore_accepted: false,
            already_open: false,
        };
        if let Some(store) = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            opened.id = store.id_hex();
            opened.already_open = true;
            return Ok(opened);
        }
        let store = if path.exists() {
            self.open_existing(&path, recovery, &mut opened)?
        } else {
            opened.created = true;
            self.create(&path, recovery)?
        };
        opened.id = store.id_hex();
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), Arc::new(store));
        Ok(opened)
    }

    fn create(&self, path: &Path, recovery: Option<&str>) -> Result<Store> {
        std::fs::create_dir_all(&self.directory).map_err(|e| {
            Error::io(format!(
                "cannot create the directory {}: {e}",
                self.directory.display()
            ))
        })?;
        let keychain = Keychain::new(&self.service)?;
        let store = keychain.create_store(path, Options::default())?;
        if let Some(passphrase) = recovery {
            let passphrase = Passphrase::new(passphrase.as_bytes().to_vec());
            if let Err(e) = store.add_slot(passphrase, Some(RECOVERY_LABEL)) {
                // Nothing half-made is left: the file and the keychain's entries go.
                let account = store.id_hex();
                drop(store);
                let _ = keychain.delete_key(&account);
                let _ = keychain.delete_key(&format!("{account}.anchor"));
                let _ = std::fs::remove_file(path);
                return Err(e.into());
            }
        }
        Ok(store)
    }

    fn open_existing(
        &self,
        path: &Path,
        recovery: Option<&str>,
        opened: &mut Opened,
    ) -> Result<Store> {
        let through_keychain =
            Keychain::new(&self.service).and_then(|k| k.open_store(path, Options::default()));
        let keychain_failure = match through_keychain {
            Ok(store) => return Ok(store),
            // No key, or not this store's key: the recovery passphrase may open it.
            Err(e @ (sealkv::Error::Keychain { .. } | sealkv::Error::WrongKey)) => e,
            Err(e) => return Err(e.into()),
        };
        let Some(passphrase) = recovery else {
            return Err(keychain_failure.into());
        };
        // Its anchor is in the keychain: let this process read and write it.
        keychain::install_anchors();
        let secret = || Passphrase::new(passphrase.as_bytes().to_vec());
        let store = match Store::open(path, secret(), Options::default()) {
            Ok(store) => store,
            // The anchor went with the keychain (the key's entry and the anchor's both
            // gone): the user's passphrase accepts the file as it is, and the anchor is
            // written again.
            Err(sealkv::Error::Anchor { .. }) => {
                let store = Store::accept_restore(path, secret(), Options::default())?;
                opened.restore_accepted = true;
                store
            }
            Err(e) => return Err(e.into()),
        };
        opened.recovered = true;
        opened.repaired = Keychain::new(&self.service)
            .and_then(|k| k.add_slot(&store, Some(KEYCHAIN_LABEL)))
            .is_ok();
        Ok(store)
    }

    /// The open store `name`, for the app's Rust side to use with sealkv's whole API.
    pub fn store(&self, name: &str) -> Result<Arc<Store>> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_open(name))
    }

    /// Closes the store `name` (once the calls in flight on it are done); false when it
    /// was not open.
    pub fn close(&self, name: &str) -> bool {
        let removed = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        // Dropped with the lock released: a close flushes a keychain anchor.
        removed.is_some()
    }

    /// Closes every store the plugin holds (it calls this when the app exits). A
    /// `Arc<Store>` the app's Rust side took with [`Sealkv::store`] stays open until
    /// the app drops it.
    pub fn close_all(&self) {
        let all = std::mem::take(&mut *self.open.lock().unwrap_or_else(PoisonError::into_inner));
        drop(all);
    }

    /// The value of `key` in `namespace` of the store `name`, or `None`.
    pub fn get(
        &self,
        name: &str,
        namespace: &str,
        key: &str,
        encoding: Encoding,
    ) -> Result<Option<Read>> {
        let Some(value) = self.store(name)?.get_one(namespace, key)? else {
            return Ok(None);
        };
        Ok(Some(match encoding {
            Encoding::Bytes => Read::Bytes(value.to_vec()),
            Encoding::Text => Read::Text(String::from_utf8(value.to_vec()).map_err(|_| {
                Error::new(
                    "SEALKV_NOT_TEXT",
                    format!("the value of {namespace}/{key} is not UTF-8 text"),
                )
            })?),
            Encoding::Json => Read::Json(serde_json::from_slice(&value).map_err(|_| {
                Error::new(
                    "SEALKV_NOT_JSON",
                    format!("the value of {namespace}/{key} is not JSON text"),
                )
            })?),
        }))
    }

    /// Writes `changes` to the store `name` in one atomic, durable transaction.
    pub fn set(&self, name: &str, changes: Vec<Change>) -> Result<()> {
        let store = self.store(name)?;
        let mut batch = Batch::new();
        for change in changes {
            match change.value {
                Some(Data::Bytes(bytes)) => batch.put(&change.namespace, &change.key, bytes),
                Some(Data::Text(text)) => batch.put(&change.namespace, &change.key, text),
                Some(Data::Json(json)) => {
                    let text = serde_json::to_vec(&json).map_err(|e| {
                        Error::invalid(format!("a JSON value that cannot be written: {e}"))
                    })?;
                    batch.put(&change.namespace, &change.key, text)
                }
                None => batch.delete(&change.namespace, &change.key),
            };
        }
        Ok(store.set(&batch)?)
    }

    /// Deletes `key` from `namespace`; false when it had no value.
    pub fn delete(&self, name: &str, namespace: &str, key: &str) -> Result<bool> {
        Ok(self.store(name)?.delete(namespace, key)?)
    }

    /// The keys of `namespace`, sorted.
    pub fn list(&self, name: &str, namespace: &str) -> Result<Vec<String>> {
        Ok(self.store(name)?.list(namespace)?)
    }

    /// The namespaces that hold a value, sorted.
    pub fn namespaces(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.store(name)?.namespaces()?)
    }

    /// Starts a new data key for new writes; returns its id.
    pub fn rotate(&self, name: &str) -> Result<u32> {
        Ok(self.store(name)?.rotate()?)
    }

    /// Reads and checks every value: the problems found (none for a sound store).
    pub fn verify(&self, name: &str) -> Result<Vec<Problem>> {
        Ok(self
            .store(name)?
            .verify()?
            .into_iter()
            .map(|e| {
                let e = Error::from(e);
                Problem {
                    code: e.code,
                    message: e.message,
                }
            })
            .collect())
    }

    /// The names of the open stores, sorted.
    pub fn open_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        names.sort_unstable();
        names
    }
}
