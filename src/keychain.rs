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

use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};
use zeroize::Zeroizing;

use crate::{Error, MasterKey, Result};

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
