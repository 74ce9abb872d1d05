//! The plugin's core: named stores in one directory, their keys in the OS keychain.
//!
//! Nothing here knows Tauri (a Tauri 3 port, or another desktop framework, needs only
//! the thin layer in `lib.rs` and `commands.rs` rewritten). [`Sealkv`] holds the stores
//! an app has open; each is a [`sealkv::Store`] at `<directory>/<name>.sealkv`, created
//! through a keychain slot under the app's identifier and, when the app gives one, a
//! recovery passphrase slot.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sealkv::keychain::{self, Keychain};
use sealkv::{Batch, Options, Passphrase, SlotKind, Store};
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
    /// True when the keychain could not open the store, the recovery passphrase did,
    /// and a new keychain slot replaced the lost one: later opens need no passphrase.
    pub repaired: bool,
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The new value; `None` (JSON `null`) deletes the key.
    pub value: Option<Data>,
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
    ///   labelled `recovery`.
    /// - An existing store opens with the key the keychain holds, without a prompt.
    ///   When the keychain cannot give it (a reset, another machine, no keyring) and
    ///   `recovery` is given, the passphrase opens it; if the keychain answers, a
    ///   new keychain slot then replaces the lost ones ([`Opened::repaired`]).
    /// - Without `recovery`, a keychain failure is the error, with its hint: never a
    ///   silent fallback.
    pub fn open(&self, name: &str, recovery: Option<&str>) -> Result<Opened> {
        let path = self.path_of(name)?;
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = open.get(name) {
            return Ok(Opened {
                name: name.to_string(),
                id: store.id_hex(),
                created: false,
                repaired: false,
                already_open: true,
            });
        }
        let (store, created, repaired) = if path.exists() {
            let (store, repaired) = self.open_existing(&path, recovery)?;
            (store, false, repaired)
        } else {
            (self.create(&path, recovery)?, true, false)
        };
        let opened = Opened {
            name: name.to_string(),
            id: store.id_hex(),
            created,
            repaired,
            already_open: false,
        };
        open.insert(name.to_string(), Arc::new(store));
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

    fn open_existing(&self, path: &Path, recovery: Option<&str>) -> Result<(Store, bool)> {
        let through_keychain =
            Keychain::new(&self.service).and_then(|k| k.open_store(path, Options::default()));
        let keychain_failure = match through_keychain {
            Ok(store) => return Ok((store, false)),
            Err(e @ sealkv::Error::Keychain { .. }) => e,
            Err(e) => return Err(e.into()),
        };
        let Some(passphrase) = recovery else {
            return Err(keychain_failure.into());
        };
        // Its anchor may be in the keychain that failed: the open says so if it is.
        keychain::install_anchors();
        let passphrase = Passphrase::new(passphrase.as_bytes().to_vec());
        let store = Store::open(path, passphrase, Options::default())?;
        let repaired = self.repair(&store);
        Ok((store, repaired))
    }

    /// A new keychain slot for a store the recovery passphrase opened, and the old
    /// keychain slots of this service (whose keys are gone) removed. False, and the
    /// store left as it was, when the keychain cannot take it now.
    fn repair(&self, store: &Store) -> bool {
        let Ok(keychain) = Keychain::new(&self.service) else {
            return false;
        };
        let Ok(new_slot) = keychain.add_slot(store, Some(KEYCHAIN_LABEL)) else {
            return false;
        };
        if let Ok(slots) = store.slots() {
            for slot in slots {
                let stale = slot.id != new_slot
                    && slot.kind == SlotKind::Keychain
                    && slot.service.as_deref() == Some(self.service.as_str());
                if stale {
                    let _ = store.remove_slot(slot.id);
                }
            }
        }
        true
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
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .is_some()
    }

    /// Closes every store (the plugin calls it when the app exits).
    pub fn close_all(&self) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
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
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let sorted: BTreeMap<_, _> = open.iter().collect();
        sorted.into_keys().cloned().collect()
    }
}
