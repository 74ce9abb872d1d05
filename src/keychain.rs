//! A store's master key in the OS credential store (feature `keychain`).
//!
//! [`Keychain`] keeps 32-byte master keys under a service name, one entry per account
//! (a store's id): on Linux in the Secret Service over D-Bus (gnome-keyring, KWallet),
//! through `keyring-core` and its pure-Rust Secret Service store. A key read from it
//! opens a store as any raw key does ([`crate::Secret::Key`]).
//!
//! There is no silent fallback: no reachable credential store, a locked one, or a
//! missing entry is [`Error::Keychain`], naming the service and account and saying what
//! to do. The key crosses D-Bus inside the Secret Service's encrypted session; this
//! side holds it only in zeroizing buffers.
//!
//! A key kept only here is lost with the keychain (a reset, a new machine): keep
//! another way into the store (a recovery passphrase) beside it.

use std::path::Path;
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};
use sealkv_engine::anchor::{AnchorStore, Rank};
use zeroize::Zeroizing;

use crate::{AnchorLocation, Error, MasterKey, Options, Result, SlotKind, Store, StoreInfo};

/// Master keys under one service name in the OS credential store.
pub struct Keychain {
    service: String,
    store: Arc<CredentialStore>,
}

impl std::fmt::Debug for Keychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keychain")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

const UNLOCK: &str = "unlock your keyring (or start its daemon), or open the store another way";

impl Keychain {
    /// Connects to the platform's credential store for `service` (an application's
    /// name or identifier).
    pub fn new(service: &str) -> Result<Self> {
        if service.is_empty() {
            return Err(Error::Keychain {
                what: "a keychain service name must not be empty".into(),
                hint: "name the application, e.g. com.example.notes",
            });
        }
        Ok(Self {
            service: service.to_string(),
            store: platform_store(service)?,
        })
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    fn entry(&self, account: &str) -> Result<Entry> {
        Entry::new_in_store(&self.store, &self.service, account)
            .map_err(|e| self.failure("cannot name", account, &e))
    }

    /// Stores `key` under `account`, replacing what was there.
    pub fn store_key(&self, account: &str, key: &MasterKey) -> Result<()> {
        self.entry(account)?
            .set_secret(key.expose())
            .map_err(|e| self.failure("cannot store the key of", account, &e))
    }

    /// The key stored under `account`.
    pub fn load_key(&self, account: &str) -> Result<MasterKey> {
        let bytes = Zeroizing::new(
            self.entry(account)?
                .get_secret()
                .map_err(|e| self.failure("cannot read the key of", account, &e))?,
        );
        MasterKey::from_bytes(&bytes).map_err(|_| Error::Keychain {
            what: format!(
                "the entry for {} (service {}) does not hold a 32-byte key",
                account, self.service
            ),
            hint: "the entry was changed outside sealkv: open the store another way",
        })
    }

    /// Deletes the entry of `account`; false when there was none.
    pub fn delete_key(&self, account: &str) -> Result<bool> {
        match self.entry(account)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(e) => Err(self.failure("cannot delete the key of", account, &e)),
        }
    }

    /// Creates a store at `path` whose key lives in this keychain: a fresh random
    /// 32-byte key, kept under the store's id (which `sealkv stats` shows), opens it
    /// through a keychain slot, and the store is anchored in the keychain too (beside
    /// the key; see `docs/SECURITY.md`, "Rollback"). A store whose only slot is in a
    /// keychain is lost with that keychain: add a recovery slot
    /// ([`Store::add_slot`] with a passphrase). Nothing is left behind on failure.
    pub fn create_store(&self, path: impl AsRef<Path>, opts: Options) -> Result<Store> {
        install_anchors();
        let path = path.as_ref();
        let key = MasterKey::generate()?;
        let store = Store::create_with_keychain_slot(path, key.clone(), &self.service, opts)?;
        let account = store.id_hex();
        let kept = self
            .store_key(&account, &key)
            .and_then(|()| store.set_anchor(Some(AnchorLocation::Keychain(self.service.clone()))));
        if let Err(e) = kept {
            drop(store);
            let _ = self.delete_key(&account);
            let _ = self.delete_key(&format!("{account}.anchor"));
            if let crate::Location::File(file) = crate::Location::parse(path)? {
                let _ = std::fs::remove_file(file);
            }
            return Err(e);
        }
        Ok(store)
    }

    /// The key of the store at `path` in this keychain (the store must have a keychain
    /// slot under this service).
    pub fn key_for(&self, path: impl AsRef<Path>) -> Result<MasterKey> {
        let path = path.as_ref();
        self.key_of(&sealkv_engine::inspect(path)?, path)
    }

    /// The key of the store `info` describes (read from `path`).
    fn key_of(&self, info: &StoreInfo, path: &Path) -> Result<MasterKey> {
        if !info
            .slots
            .iter()
            .any(|s| s.kind == SlotKind::Keychain && s.service.as_deref() == Some(&self.service))
        {
            return Err(Error::Keychain {
                what: format!(
                    "{} has no keychain slot for service {}",
                    path.display(),
                    self.service
                ),
                hint: "open it another way (`sealkv slots` lists its slots)",
            });
        }
        self.load_key(&info.id_hex())
    }

    /// Opens the store at `path` with the key this keychain holds for it.
    pub fn open_store(&self, path: impl AsRef<Path>, opts: Options) -> Result<Store> {
        install_anchors();
        let path = path.as_ref();
        let info = sealkv_engine::inspect(path)?;
        let key = self.key_of(&info, path)?;
        // A copy that records no anchor (from before `create_store` anchored it, or
        // before format 3) is still checked against the anchor this keychain holds. A
        // store that records one is checked against it by the open itself.
        let opts = if info.anchor.is_none() && opts.anchor.is_none() {
            let account = format!("{}.anchor", info.id_hex());
            match self.entry(&account)?.get_secret() {
                Ok(_) => Options {
                    anchor: Some(AnchorLocation::Keychain(self.service.clone())),
                    ..opts
                },
                Err(keyring_core::Error::NoEntry) => opts,
                // A keychain that cannot say (locked, unreachable) is no pass.
                Err(e) => return Err(self.failure("cannot read the anchor of", &account, &e)),
            }
        } else {
            opts
        };
        Store::open(path, key, opts)
    }

    /// Adds a keychain slot to `store`: a fresh random key, kept in this keychain under
    /// the store's id, opens it from now on. Returns the slot's id.
    pub fn add_slot(&self, store: &Store, label: Option<&str>) -> Result<u32> {
        let key = MasterKey::generate()?;
        let account = store.id_hex();
        self.store_key(&account, &key)?;
        store
            .add_keychain_slot(&key, &self.service, label)
            .inspect_err(|_| {
                let _ = self.delete_key(&account);
            })
    }

    /// An [`Error::Keychain`] for `e`, in words of our own: some of keyring-core's
    /// errors carry the stored bytes.
    fn failure(&self, doing: &str, account: &str, e: &keyring_core::Error) -> Error {
        let (why, hint) = match e {
            keyring_core::Error::NoEntry => (
                "there is no such entry".to_string(),
                "the keychain entry is gone (a reset, another machine): open the store \
                 another way, e.g. with its recovery passphrase",
            ),
            keyring_core::Error::NoStorageAccess(cause) => (
                format!("the keychain is locked or refused access: {cause}"),
                UNLOCK,
            ),
            keyring_core::Error::PlatformFailure(cause) => {
                (format!("the keychain failed: {cause}"), UNLOCK)
            }
            keyring_core::Error::TooLong(attribute, limit) => (
                format!("{attribute} is longer than the keychain's limit of {limit}"),
                "use a shorter service name",
            ),
            _ => (
                "the keychain gave an unexpected answer".to_string(),
                "open the store another way",
            ),
        };
        Error::Keychain {
            what: format!("{doing} {account} (service {}): {why}", self.service),
            hint,
        }
    }
}

#[cfg(target_os = "linux")]
fn platform_store(service: &str) -> Result<Arc<CredentialStore>> {
    let store = zbus_secret_service_keyring_store::Store::new().map_err(|e| Error::Keychain {
        what: format!("no Secret Service answers on the session bus for service {service} ({e})"),
        hint: "start a keyring daemon (gnome-keyring, KWallet) in a desktop session, or \
               open the store another way",
    })?;
    Ok(store)
}

#[cfg(not(target_os = "linux"))]
fn platform_store(service: &str) -> Result<Arc<CredentialStore>> {
    Err(Error::Keychain {
        what: format!(
            "this build has no credential store for this platform (service {service}); \
             only Linux's Secret Service is built and tested so far"
        ),
        hint: "open the store another way",
    })
}

/// Lets every store opened in this process check and advance anchors kept in the OS
/// keychain (`AnchorLocation::Keychain`). [`Keychain`]'s own opens call it; a program
/// that opens a keychain-anchored store another way (with its recovery passphrase,
/// say) calls it once first. Without it such an open is refused with a clear error.
pub fn install_anchors() {
    sealkv_engine::anchor::install_keychain_anchors(keychain_anchor);
}

fn keychain_anchor(service: &str, account: &str) -> Result<Box<dyn AnchorStore>> {
    Ok(Box::new(KeychainAnchor {
        keychain: Keychain::new(service)?,
        account: account.to_string(),
    }))
}

/// An anchor record in a keychain entry beside the store's key.
struct KeychainAnchor {
    keychain: Keychain,
    account: String,
}

impl AnchorStore for KeychainAnchor {
    fn read(&self) -> Result<Vec<Vec<u8>>> {
        match self.keychain.entry(&self.account)?.get_secret() {
            Ok(record) => Ok(vec![record]),
            Err(keyring_core::Error::NoEntry) => Ok(Vec::new()),
            Err(e) => Err(self
                .keychain
                .failure("cannot read the anchor of", &self.account, &e)),
        }
    }

    fn rebase(&self, record: &[u8]) -> Result<()> {
        self.keychain
            .entry(&self.account)?
            .set_secret(record)
            .map_err(|e| {
                self.keychain
                    .failure("cannot write the anchor of", &self.account, &e)
            })
    }

    fn advance(&self, record: &[u8], at: (u64, u64), rank: &Rank<'_>) -> Result<()> {
        // Not backwards from what this read saw (the keychain has no compare-and-swap:
        // two processes writing at once can leave the older of their two records,
        // which only widens the window, never raises a false alarm).
        if self
            .read()?
            .iter()
            .filter_map(|r| rank(r))
            .any(|held| held >= at)
        {
            return Ok(());
        }
        self.rebase(record)
    }
}
