#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! An encrypted storage backend for [whatsapp-rust](https://crates.io/crates/whatsapp-rust):
//! wacore's five store traits on a sealkv store, so a bot's Signal sessions, identity
//! keys, pre-keys, app-state keys and device identity sit in one sealed file instead of
//! a plaintext SQLite database.
//!
//! ```no_run
//! use std::sync::Arc;
//! use sealkv::{Options, Passphrase};
//! use sealkv_whatsapp::SealkvBackend;
//!
//! # fn main() -> Result<(), sealkv::Error> {
//! let backend = SealkvBackend::create("bot.sealkv", Passphrase::new("correct horse"), Options::default())?;
//! let backend: Arc<dyn wacore::store::traits::Backend> = Arc::new(backend);
//! // Bot::builder().with_backend_arc(backend) …
//! # Ok(())
//! # }
//! ```
//!
//! Every batch method is one atomic, durable sealkv transaction, so its `Ok` means what
//! the client needs it to mean before it sends. Reads run on the calling task (a point
//! read takes microseconds); writes, which end in an fsync, run on the `blocking` thread
//! pool so they never stall the executor (see `benches/` in the repository for the
//! comparison that chose this).
//!
//! Layout: each account (device id) is one sealkv session, `whatsapp-rust/<id>`; every
//! table of the SQLite store is a namespace of it. Keys made of several strings are
//! length-prefixed (`<len>:<part>…`), so no JID can be confused with another.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use sealkv::{Batch, Options, Secret, Session, Store, Tx};
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::Device;
use wacore::store::device::DEVICE_PROPS;
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceListRecord, DeviceStore, LidPnMappingEntry,
    MsgSecretEntry, MsgSecretStore, ProtocolStore, SignalStore, TcTokenEntry,
    merge_msg_secret_expiry, merge_msg_secret_message_ts,
};

mod ns {
    pub const IDENTITY: &str = "identity";
    pub const SESSION: &str = "session";
    pub const PREKEY: &str = "prekey";
    pub const SIGNED_PREKEY: &str = "signed-prekey";
    pub const SENDER_KEY: &str = "sender-key";
    pub const SYNC_KEY: &str = "app-state-sync-key";
    pub const VERSION: &str = "app-state-version";
    /// Mutation MACs: one namespace per collection, `app-state-mac/<name>`.
    pub const MAC_PREFIX: &str = "app-state-mac/";
    /// Sender-key devices: one namespace per group, `sender-key-devices/<group>`.
    pub const SKD_PREFIX: &str = "sender-key-devices/";
    pub const LID: &str = "lid-mapping";
    /// Phone number → the LIDs that have it, the reverse index of `LID`: one namespace
    /// per number, `pn-mapping/<phone>`, whose keys are the LIDs.
    pub const PN_PREFIX: &str = "pn-mapping/";
    pub const BASE_KEY: &str = "base-key";
    pub const DEVICE_LIST: &str = "device-list";
    pub const GROUP_META: &str = "group-metadata";
    pub const TC_TOKEN: &str = "tc-token";
    pub const SENT: &str = "sent-message";
    pub const PENDING: &str = "pending-inbound";
    pub const MSG_SECRET: &str = "msg-secret";
    pub const DEVICE: &str = "device";
    /// Time indexes: `<time>|<key>` → nothing, sorted by time, so the `delete_expired_*`
    /// methods read names, and open only the values whose time has passed.
    pub const TC_INDEX: &str = "index/tc-token";
    pub const SENT_INDEX: &str = "index/sent-message";
    pub const PENDING_INDEX: &str = "index/pending-inbound";
    pub const SECRET_INDEX: &str = "index/msg-secret";
}

/// The sealkv session id of an account.
fn session_id(device_id: i32) -> String {
    format!("whatsapp-rust/{device_id}")
}

/// A key of several parts: every part but the last is length-prefixed.
fn compose(parts: &[&str]) -> String {
    let mut key = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            key.push_str(&part.len().to_string());
            key.push(':');
        }
        key.push_str(part);
    }
    key
}

/// An order-preserving text form of a timestamp (20 digits, signed values offset).
fn time_key(t: i64) -> String {
    format!("{:020}", (t as u64) ^ (1 << 63))
}

fn index_key(t: i64, key: &str) -> String {
    format!("{}|{key}", time_key(t))
}

/// The time and row key of an index entry.
fn parse_index(entry: &str) -> Option<(i64, &str)> {
    let (t, key) = entry.split_once('|')?;
    let raw: u64 = t.parse().ok()?;
    Some(((raw ^ (1 << 63)) as i64, key))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A transaction's error: sealkv's transactions need an error type built from theirs.
struct TxError(StoreError);

impl From<sealkv::Error> for TxError {
    fn from(err: sealkv::Error) -> Self {
        Self(db(err))
    }
}

fn db(err: sealkv::Error) -> StoreError {
    StoreError::Database(Box::new(BackendError(err)))
}

/// A sealkv error as the client sees it. The client logs store errors, and sealkv's own
/// messages name the value (namespace and key: here JIDs, phone numbers, message ids),
/// which the file itself never shows; this form says which table, not which row.
struct BackendError(sealkv::Error);

/// The table part of a namespace (`sender-key-devices/<group>` → `sender-key-devices`).
fn table_of(namespace: &str) -> &str {
    namespace.split('/').next().unwrap_or_default()
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            sealkv::Error::Integrity {
                namespace, reason, ..
            } => {
                write!(
                    f,
                    "a value in {} failed to open: {reason}",
                    table_of(namespace)
                )
            }
            sealkv::Error::ValueTooLarge {
                namespace,
                size,
                limit,
                ..
            } => write!(
                f,
                "a value in {} is {size} bytes, over the store's limit of {limit} bytes",
                table_of(namespace)
            ),
            sealkv::Error::InvalidName(_) => {
                f.write_str("invalid name: a JID or id is empty or longer than 1024 bytes")
            }
            other => write!(f, "{other}"),
        }
    }
}

impl std::fmt::Debug for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackendError({self})")
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            // Their own sources carry no names.
            sealkv::Error::Io(e) => Some(e),
            sealkv::Error::CommitFailed { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

fn ser(err: serde_json::Error) -> StoreError {
    StoreError::Serialization(Box::new(err))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(ser)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(ser)
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    if let Some(s) = bytes.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    i64::from_le_bytes(b)
}

/// A row stored with its time in front: `time (8 bytes, LE) ‖ payload`.
fn timed(t: i64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&t.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// A message secret as stored: `secret (32) ‖ expires_at (8) ‖ message_ts (8)`.
struct SecretRow {
    secret: [u8; 32],
    expires_at: i64,
    message_ts: i64,
}

impl SecretRow {
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(48);
        v.extend_from_slice(&self.secret);
        v.extend_from_slice(&self.expires_at.to_le_bytes());
        v.extend_from_slice(&self.message_ts.to_le_bytes());
        v
    }

    fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() != 48 {
            return Err(StoreError::Validation(format!(
                "message secret row has {} bytes (expected 48)",
                b.len()
            )));
        }
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&b[..32]);
        Ok(Self {
            secret,
            expires_at: i64_at(b, 32),
            message_ts: i64_at(b, 40),
        })
    }
}

/// The effective token time of a tc token for pruning: an empty token (a placeholder)
/// counts as infinitely old.
fn tc_token_time(entry: &TcTokenEntry) -> i64 {
    if entry.token.is_empty() {
        i64::MIN
    } else {
        entry.token_timestamp
    }
}

/// A whatsapp-rust storage backend on a sealkv store: one account (device id) of it.
///
/// Cheap to clone; clones share the open store.
#[derive(Clone)]
pub struct SealkvBackend {
    session: Session,
    device_id: i32,
    inline_writes: bool,
}

impl std::fmt::Debug for SealkvBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealkvBackend")
            .field("path", &self.session.store().path())
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl SealkvBackend {
    /// Creates a new store at `path` and returns the backend of its account 1.
    ///
    /// A plain function: it opens the file and derives the key on the calling thread,
    /// and may be called from inside an async runtime.
    pub fn create(
        path: impl AsRef<std::path::Path>,
        secret: impl Into<Secret>,
        opts: Options,
    ) -> sealkv::Result<Self> {
        Self::for_device(Store::create(path, secret, opts)?, 1)
    }

    /// Opens the store at `path` and returns the backend of its account 1.
    pub fn open(
        path: impl AsRef<std::path::Path>,
        secret: impl Into<Secret>,
        opts: Options,
    ) -> sealkv::Result<Self> {
        Self::for_device(Store::open(path, secret, opts)?, 1)
    }

    /// The backend of account 1 of an open store.
    pub fn from_store(store: Store) -> sealkv::Result<Self> {
        Self::for_device(store, 1)
    }

    /// The backend of account `device_id` of an open store (like the SQLite store's
    /// `new_for_device`): accounts in one file never see each other's data.
    pub fn for_device(store: Store, device_id: i32) -> sealkv::Result<Self> {
        Ok(Self {
            session: store.session(&session_id(device_id))?,
            device_id,
            inline_writes: false,
        })
    }

    /// The same store, another account.
    pub fn with_device(&self, device_id: i32) -> sealkv::Result<Self> {
        Self::for_device(self.session.store().clone(), device_id)
    }

    /// Runs writes on the calling task instead of the blocking pool (for benchmarks, and
    /// for callers that already run the backend on a blocking thread).
    pub fn inline_writes(mut self, inline: bool) -> Self {
        self.inline_writes = inline;
        self
    }

    /// The account this backend reads and writes.
    pub fn device_id(&self) -> i32 {
        self.device_id
    }

    /// The underlying store (to rotate keys, verify, back up).
    pub fn store(&self) -> &Store {
        self.session.store()
    }

    /// Runs a write off the executor (or inline, see [`Self::inline_writes`]).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Session) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let session = self.session.clone();
        if self.inline_writes {
            f(&session)
        } else {
            blocking::unblock(move || f(&session)).await
        }
    }

    /// Stores one row, in one durable commit.
    async fn put_one(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(namespace, key, value);
        self.commit(batch).await
    }

    /// Deletes one row, in one durable commit.
    async fn delete_one(&self, namespace: &str, key: &str) -> Result<()> {
        let mut batch = Batch::new();
        batch.delete(namespace, key);
        self.commit(batch).await
    }

    /// Commits `batch` as one durable transaction.
    async fn commit(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(move |s| s.set(&batch).map_err(db)).await
    }

    /// Runs `f` in a transaction under `lock` (atomic read-modify-write).
    async fn transact<T: Send + 'static>(
        &self,
        lock: &'static str,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write(move |s| {
            s.transaction(lock, |tx| f(tx).map_err(TxError))
                .map_err(|e| e.0)
        })
        .await
    }

    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .session
            .get_one(namespace, key)
            .map_err(db)?
            .map(|mut v| std::mem::take(&mut *v)))
    }

    fn get_many(&self, namespace: &str, keys: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .session
            .get(namespace, keys)
            .map_err(db)?
            .into_iter()
            .map(|(k, mut v)| (k, std::mem::take(&mut *v)))
            .collect())
    }

    fn list(&self, namespace: &str) -> Result<Vec<String>> {
        self.session.list(namespace).map_err(db)
    }

    /// Every row of a namespace.
    fn all(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let keys = self.list(namespace)?;
        self.get_many(namespace, &keys)
    }

    /// Deletes the rows of `namespace` whose entries in `index` are due: reads the
    /// index's names, and opens only the rows they name. Inside the transaction each
    /// row is checked again: `time_of` gives the time its index entry should carry (a
    /// row rewritten since the listing has another entry and stays), `confirm` whether
    /// it is to go (a row that must stay keeps its entry).
    async fn prune(
        &self,
        lock: &'static str,
        namespace: &'static str,
        index: &'static str,
        due: impl Fn(i64) -> bool,
        time_of: impl Fn(&[u8]) -> Option<i64> + Send + 'static,
        confirm: impl Fn(&[u8]) -> bool + Send + 'static,
    ) -> Result<u32> {
        let candidates: Vec<String> = self
            .list(index)?
            .into_iter()
            .filter(|e| parse_index(e).is_some_and(|(t, _)| due(t)))
            .collect();
        if candidates.is_empty() {
            return Ok(0);
        }
        self.transact(lock, move |tx| {
            let mut removed = 0;
            for entry in candidates {
                let Some((t, key)) = parse_index(&entry) else {
                    continue;
                };
                let row = tx.get(namespace, &[key]).map_err(db)?;
                let Some(value) = row.get(key) else {
                    tx.delete(index, &entry); // a row already gone
                    continue;
                };
                if time_of(value) != Some(t) {
                    tx.delete(index, &entry); // stale: the row has another entry
                } else if confirm(value) {
                    tx.delete(index, &entry);
                    tx.delete(namespace, key);
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }
}

/// The index entry a tc-token row should have.
fn tc_index_entry(jid: &str, entry: &TcTokenEntry) -> String {
    index_key(tc_token_time(entry), jid)
}

/// Writes a tc token and its index entry inside a transaction, replacing the old entry.
fn put_tc_in(
    tx: &mut Tx<'_>,
    jid: &str,
    old: Option<&TcTokenEntry>,
    new: &TcTokenEntry,
) -> Result<()> {
    if let Some(old) = old {
        tx.delete(ns::TC_INDEX, &tc_index_entry(jid, old));
    }
    tx.put(ns::TC_TOKEN, jid, encode(new)?);
    tx.put(ns::TC_INDEX, &tc_index_entry(jid, new), Vec::new());
    Ok(())
}

/// The tc token of `jid` inside a transaction. A row that does not decode reads as
/// absent here, so a write replaces it instead of failing forever (its stale index
/// entry is dropped by the next prune).
fn tc_in(tx: &mut Tx<'_>, jid: &str) -> Result<Option<TcTokenEntry>> {
    let found = tx.get(ns::TC_TOKEN, &[jid]).map_err(db)?;
    Ok(found.get(jid).and_then(|v| serde_json::from_slice(v).ok()))
}

#[async_trait]
impl SignalStore for SealkvBackend {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put_one(ns::IDENTITY, address, key.to_vec()).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        let mut batch = Batch::new();
        for (address, key) in identities {
            batch.put(ns::IDENTITY, address, key.to_vec());
        }
        self.commit(batch).await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        match self.get(ns::IDENTITY, address)? {
            None => Ok(None),
            Some(v) => <[u8; 32]>::try_from(v.as_slice()).map(Some).map_err(|_| {
                StoreError::Validation(format!(
                    "identity key for '{address}' has invalid length {} (expected 32)",
                    v.len()
                ))
            }),
        }
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.delete_one(ns::IDENTITY, address).await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self.get(ns::SESSION, address)?.map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put_one(ns::SESSION, address, session.to_vec()).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        let mut batch = Batch::new();
        for (address, record) in sessions {
            batch.put(ns::SESSION, address, record.to_vec());
        }
        self.commit(batch).await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.delete_one(ns::SESSION, address).await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        Ok(self.get(ns::SESSION, address)?.is_some())
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        let of_user = |addr: &String| {
            addr.strip_prefix(user)
                .is_some_and(|rest| rest.starts_with('@') || rest.starts_with(':'))
        };
        Ok(self.list(ns::SESSION)?.iter().any(of_user)
            || self.list(ns::IDENTITY)?.iter().any(of_user))
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.store_prekeys_batch(&[(id, Bytes::copy_from_slice(record))], uploaded)
            .await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|(id, record)| {
                let mut v = Vec::with_capacity(1 + record.len());
                v.push(u8::from(uploaded));
                v.extend_from_slice(record);
                (id.to_string(), v)
            })
            .collect();
        // Under the pre-key lock, like every pre-key write: `mark_prekeys_uploaded` reads
        // and rewrites rows, and a write slipping between would be undone.
        self.transact(ns::PREKEY, move |tx| {
            for (key, value) in rows {
                tx.put(ns::PREKEY, &key, value);
            }
            Ok(())
        })
        .await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        self.get(ns::PREKEY, &id.to_string())?
            .map(prekey_record)
            .transpose()
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let keys: Vec<String> = ids.iter().map(u32::to_string).collect();
        let mut found: HashMap<String, Vec<u8>> =
            self.get_many(ns::PREKEY, &keys)?.into_iter().collect();
        ids.iter()
            .filter_map(|id| {
                let v = found.remove(&id.to_string())?;
                Some(prekey_record(v).map(|r| (*id, r)))
            })
            .collect()
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = ids.iter().map(u32::to_string).collect();
        self.transact(ns::PREKEY, move |tx| {
            // Only rows that exist are marked: a deleted pre-key never comes back.
            for (key, mut value) in tx.get(ns::PREKEY, &keys).map_err(db)? {
                if value.first() == Some(&0) {
                    value[0] = 1;
                    tx.put(ns::PREKEY, &key, std::mem::take(&mut *value));
                }
            }
            Ok(())
        })
        .await
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        // Under the pre-key lock: a `mark_prekeys_uploaded` that read this row before the
        // delete would otherwise write the consumed pre-key back.
        let key = id.to_string();
        self.transact(ns::PREKEY, move |tx| {
            tx.delete(ns::PREKEY, &key);
            Ok(())
        })
        .await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        Ok(self
            .list(ns::PREKEY)?
            .iter()
            .filter_map(|k| k.parse::<u32>().ok())
            .max()
            .unwrap_or(0))
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.put_one(ns::SIGNED_PREKEY, &id.to_string(), record.to_vec())
            .await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.get(ns::SIGNED_PREKEY, &id.to_string())
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        Ok(self
            .all(ns::SIGNED_PREKEY)?
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect())
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.delete_one(ns::SIGNED_PREKEY, &id.to_string()).await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put_one(ns::SENDER_KEY, address, record.to_vec()).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        let mut batch = Batch::new();
        for (address, record) in sender_keys {
            batch.put(ns::SENDER_KEY, address, record.to_vec());
        }
        self.commit(batch).await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get(ns::SENDER_KEY, address)
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.delete_one(ns::SENDER_KEY, address).await
    }
}

/// A pre-key row: `uploaded (1 byte) ‖ record`.
fn prekey_record(row: Vec<u8>) -> Result<Bytes> {
    if row.is_empty() {
        return Err(StoreError::Validation("empty pre-key row".to_string()));
    }
    Ok(Bytes::from(row).slice(1..))
}

/// A stored sync key that decodes and has a 32-byte key (anything else reads as absent,
/// as in the SQLite store, so the client asks for the key again).
fn usable_sync_key(bytes: &[u8]) -> Option<AppStateSyncKey> {
    serde_json::from_slice::<AppStateSyncKey>(bytes)
        .ok()
        .filter(|k| k.key_data.len() == 32)
}

fn mac_namespace(name: &str) -> String {
    format!("{}{name}", ns::MAC_PREFIX)
}

#[async_trait]
impl AppSyncStore for SealkvBackend {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        Ok(self
            .get(ns::SYNC_KEY, &hex::encode(key_id))?
            .and_then(|v| usable_sync_key(&v)))
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        self.put_one(ns::SYNC_KEY, &hex::encode(key_id), encode(&key)?)
            .await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        Ok(self
            .get(ns::VERSION, name)?
            .and_then(|v| serde_json::from_slice::<HashState>(&v).ok())
            .unwrap_or_default())
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.put_one(ns::VERSION, name, encode(&state)?).await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        let namespace = mac_namespace(name);
        let mut batch = Batch::new();
        for m in mutations {
            batch.put(
                &namespace,
                &hex::encode(&m.index_mac),
                timed(version as i64, &m.value_mac),
            );
        }
        self.commit(batch).await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(&mac_namespace(name), &hex::encode(index_mac))?
            .map(|v| v.get(8..).unwrap_or_default().to_vec()))
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let keys: Vec<String> = index_macs.iter().map(hex::encode).collect();
        let mut out = HashMap::with_capacity(keys.len());
        for (key, value) in self.get_many(&mac_namespace(name), &keys)? {
            if let Ok(Ok(mac)) = hex::decode(&key).map(<[u8; 32]>::try_from) {
                out.insert(mac, value.get(8..).unwrap_or_default().to_vec());
            }
        }
        Ok(out)
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        let namespace = mac_namespace(name);
        let mut batch = Batch::new();
        for mac in index_macs {
            batch.delete(&namespace, &hex::encode(mac));
        }
        self.commit(batch).await
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        let namespace = mac_namespace(name);
        let mut batch = Batch::new();
        for key in self.list(&namespace)? {
            batch.delete(&namespace, &key);
        }
        self.commit(batch).await
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        // Hex keeps the byte order, so the names sorted descending are the key ids
        // largest first; the first that decodes wins (as in the SQLite store).
        for key in self.list(ns::SYNC_KEY)?.iter().rev() {
            if let Some(v) = self.get(ns::SYNC_KEY, key)?
                && usable_sync_key(&v).is_some()
                && let Ok(id) = hex::decode(key)
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }
}

fn skd_namespace(group: &str) -> String {
    format!("{}{group}", ns::SKD_PREFIX)
}

fn lid_in(tx: &mut Tx<'_>, lid: &str) -> Result<Option<LidPnMappingEntry>> {
    let found = tx.get(ns::LID, &[lid]).map_err(db)?;
    found.get(lid).map(|v| decode(v)).transpose()
}

fn pn_namespace(phone: &str) -> String {
    format!("{}{phone}", ns::PN_PREFIX)
}

#[async_trait]
impl ProtocolStore for SealkvBackend {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .all(&skd_namespace(group_jid))?
            .into_iter()
            .map(|(device, v)| (device, v.first() == Some(&1)))
            .collect())
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        let namespace = skd_namespace(group_jid);
        let mut batch = Batch::new();
        for (device, has_key) in entries {
            batch.put(&namespace, device, vec![u8::from(*has_key)]);
        }
        self.commit(batch).await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        let namespace = skd_namespace(group_jid);
        let mut batch = Batch::new();
        for device in self.list(&namespace)? {
            batch.delete(&namespace, &device);
        }
        self.commit(batch).await
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new();
        for namespace in self.session.namespaces().map_err(db)? {
            if namespace.starts_with(ns::SKD_PREFIX) {
                for device in device_jids {
                    batch.delete(&namespace, device);
                }
            }
        }
        self.commit(batch).await
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        let mut batch = Batch::new();
        for namespace in self.session.namespaces().map_err(db)? {
            if namespace.starts_with(ns::SKD_PREFIX) {
                for device in self.list(&namespace)? {
                    batch.delete(&namespace, &device);
                }
            }
        }
        self.commit(batch).await
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        self.get(ns::LID, lid)?.map(|v| decode(&v)).transpose()
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        // Among the LIDs that have this number, the most recently updated (as the SQLite
        // store's `ORDER BY updated_at DESC`).
        let lids = self.list(&pn_namespace(phone))?;
        let mut best: Option<LidPnMappingEntry> = None;
        for (_, value) in self.get_many(ns::LID, &lids)? {
            let entry: LidPnMappingEntry = decode(&value)?;
            if entry.phone_number == phone
                && best
                    .as_ref()
                    .is_none_or(|b| entry.updated_at > b.updated_at)
            {
                best = Some(entry);
            }
        }
        Ok(best)
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries = entries.to_vec();
        self.transact(ns::LID, move |tx| {
            for mut entry in entries {
                if let Some(old) = lid_in(tx, &entry.lid)? {
                    // An upsert keeps the first `created_at`, as the SQLite store does.
                    entry.created_at = old.created_at;
                    if old.phone_number != entry.phone_number {
                        tx.delete(&pn_namespace(&old.phone_number), &entry.lid);
                    }
                }
                tx.put(&pn_namespace(&entry.phone_number), &entry.lid, Vec::new());
                tx.put(ns::LID, &entry.lid, encode(&entry)?);
            }
            Ok(())
        })
        .await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.all(ns::LID)?.iter().map(|(_, v)| decode(v)).collect()
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.put_one(
            ns::BASE_KEY,
            &compose(&[address, message_id]),
            base_key.to_vec(),
        )
        .await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .get(ns::BASE_KEY, &compose(&[address, message_id]))?
            .is_some_and(|stored| stored == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.delete_one(ns::BASE_KEY, &compose(&[address, message_id]))
            .await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let mut batch = Batch::new();
        for record in &records {
            batch.put(ns::DEVICE_LIST, &record.user, encode(record)?);
        }
        self.commit(batch).await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.get(ns::DEVICE_LIST, user)?
            .map(|v| decode(&v))
            .transpose()
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.delete_one(ns::DEVICE_LIST, user).await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.get(ns::GROUP_META, group_jid)
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put_one(ns::GROUP_META, group_jid, blob.to_vec()).await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.delete_one(ns::GROUP_META, group_jid).await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.get(ns::TC_TOKEN, jid)?.map(|v| decode(&v)).transpose()
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let (jid, entry) = (jid.to_string(), entry.clone());
        self.transact(ns::TC_TOKEN, move |tx| {
            let old = tc_in(tx, &jid)?;
            put_tc_in(tx, &jid, old.as_ref(), &entry)
        })
        .await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let jid = jid.to_string();
        self.transact(ns::TC_TOKEN, move |tx| {
            if let Some(old) = tc_in(tx, &jid)? {
                tx.delete(ns::TC_INDEX, &tc_index_entry(&jid, &old));
                tx.delete(ns::TC_TOKEN, &jid);
            }
            Ok(())
        })
        .await
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        self.list(ns::TC_TOKEN)
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        // The index orders rows by token time: only those under the token cutoff are
        // opened, to check the sender side.
        self.prune(
            ns::TC_TOKEN,
            ns::TC_TOKEN,
            ns::TC_INDEX,
            move |t| t < token_cutoff,
            |value| {
                Some(tc_token_time(
                    &serde_json::from_slice::<TcTokenEntry>(value).ok()?,
                ))
            },
            move |value| {
                serde_json::from_slice::<TcTokenEntry>(value).is_ok_and(|e| {
                    tc_token_time(&e) < token_cutoff
                        && e.sender_timestamp.is_none_or(|t| t < sender_cutoff)
                })
            },
        )
        .await
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        let jid = jid.to_string();
        self.transact(ns::TC_TOKEN, move |tx| {
            let old = tc_in(tx, &jid)?;
            let new = match &old {
                Some(existing) => TcTokenEntry {
                    sender_timestamp: Some(
                        existing
                            .sender_timestamp
                            .map_or(sender_timestamp, |e| e.max(sender_timestamp)),
                    ),
                    ..existing.clone()
                },
                None => TcTokenEntry {
                    token: Vec::new(),
                    token_timestamp: sender_timestamp,
                    sender_timestamp: Some(sender_timestamp),
                },
            };
            put_tc_in(tx, &jid, old.as_ref(), &new)
        })
        .await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        let (jid, token) = (jid.to_string(), token.to_vec());
        self.transact(ns::TC_TOKEN, move |tx| {
            let old = tc_in(tx, &jid)?;
            if let Some(existing) = &old
                && !existing.token.is_empty()
                && token_timestamp < existing.token_timestamp
            {
                return Ok(()); // newer wins
            }
            let new = TcTokenEntry {
                token,
                token_timestamp,
                sender_timestamp: old.as_ref().and_then(|e| e.sender_timestamp),
            };
            put_tc_in(tx, &jid, old.as_ref(), &new)
        })
        .await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        let key = compose(&[chat_jid, message_id]);
        let payload = payload.to_vec();
        self.transact(ns::SENT, move |tx| {
            replace_timed_in(tx, ns::SENT, ns::SENT_INDEX, &key, now_secs(), &payload)
        })
        .await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let key = compose(&[chat_jid, message_id]);
        self.transact(ns::SENT, move |tx| {
            take_timed_in(tx, ns::SENT, ns::SENT_INDEX, &key)
        })
        .await
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.prune(
            ns::SENT,
            ns::SENT,
            ns::SENT_INDEX,
            move |t| t < cutoff_timestamp,
            |value| Some(i64_at(value, 0)),
            |_| true,
        )
        .await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        let key = compose(&[chat, sender, id]);
        let message = message.to_vec();
        self.transact(ns::PENDING, move |tx| {
            replace_timed_in(
                tx,
                ns::PENDING,
                ns::PENDING_INDEX,
                &key,
                now_secs(),
                &message,
            )
        })
        .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get(ns::PENDING, &compose(&[chat, sender, id]))?
            .map(|v| v.get(8..).unwrap_or_default().to_vec()))
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        let key = compose(&[chat, sender, id]);
        self.transact(ns::PENDING, move |tx| {
            take_timed_in(tx, ns::PENDING, ns::PENDING_INDEX, &key).map(drop)
        })
        .await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.prune(
            ns::PENDING,
            ns::PENDING,
            ns::PENDING_INDEX,
            move |t| t < cutoff_timestamp,
            |value| Some(i64_at(value, 0)),
            |_| true,
        )
        .await
    }

    async fn store_pending_inbound_batch(
        &self,
        rows: &[wacore::store::traits::PendingInboundRow<'_>],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, Vec<u8>)> = rows
            .iter()
            .map(|r| (compose(&[r.chat, r.sender, r.id]), r.message.to_vec()))
            .collect();
        self.transact(ns::PENDING, move |tx| {
            let now = now_secs();
            for (key, message) in &rows {
                replace_timed_in(tx, ns::PENDING, ns::PENDING_INDEX, key, now, message)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_pending_inbound_batch(
        &self,
        keys: &[wacore::store::traits::PendingInboundKey<'_>],
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = keys
            .iter()
            .map(|k| compose(&[k.chat, k.sender, k.id]))
            .collect();
        self.transact(ns::PENDING, move |tx| {
            for key in &keys {
                take_timed_in(tx, ns::PENDING, ns::PENDING_INDEX, key)?;
            }
            Ok(())
        })
        .await
    }
}

/// Stores `payload` at `key` with time `t`, replacing the row and its index entry.
fn replace_timed_in(
    tx: &mut Tx<'_>,
    namespace: &str,
    index: &str,
    key: &str,
    t: i64,
    payload: &[u8],
) -> Result<()> {
    if let Some(old) = tx.get(namespace, &[key]).map_err(db)?.get(key) {
        tx.delete(index, &index_key(i64_at(old, 0), key));
    }
    tx.put(namespace, key, timed(t, payload));
    tx.put(index, &index_key(t, key), Vec::new());
    Ok(())
}

/// Reads and deletes the row at `key` and its index entry.
fn take_timed_in(
    tx: &mut Tx<'_>,
    namespace: &str,
    index: &str,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    let Some(old) = tx.get(namespace, &[key]).map_err(db)?.remove(key) else {
        return Ok(None);
    };
    tx.delete(index, &index_key(i64_at(&old, 0), key));
    tx.delete(namespace, key);
    Ok(Some(old.get(8..).unwrap_or_default().to_vec()))
}

#[async_trait]
impl MsgSecretStore for SealkvBackend {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        self.transact(ns::MSG_SECRET, move |tx| {
            for e in &entries {
                let key = compose(&[&e.chat, &e.sender, &e.msg_id]);
                let old = tx
                    .get(ns::MSG_SECRET, &[&key])
                    .map_err(db)?
                    .get(&key)
                    // A row that does not decode is replaced, not merged.
                    .and_then(|v| SecretRow::from_bytes(v).ok());
                let row = match &old {
                    Some(old) => SecretRow {
                        secret: e.secret,
                        expires_at: merge_msg_secret_expiry(old.expires_at, e.expires_at),
                        message_ts: merge_msg_secret_message_ts(old.message_ts, e.message_ts),
                    },
                    None => SecretRow {
                        secret: e.secret,
                        expires_at: e.expires_at,
                        message_ts: e.message_ts,
                    },
                };
                if let Some(old) = &old
                    && old.expires_at != 0
                {
                    tx.delete(ns::SECRET_INDEX, &index_key(old.expires_at, &key));
                }
                if row.expires_at != 0 {
                    tx.put(
                        ns::SECRET_INDEX,
                        &index_key(row.expires_at, &key),
                        Vec::new(),
                    );
                }
                tx.put(ns::MSG_SECRET, &key, row.to_bytes());
            }
            Ok(entries.len())
        })
        .await
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        self.get(ns::MSG_SECRET, &compose(&[chat, sender, msg_id]))?
            .map(|v| SecretRow::from_bytes(&v).map(|r| (r.secret.to_vec(), r.message_ts)))
            .transpose()
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.prune(
            ns::MSG_SECRET,
            ns::MSG_SECRET,
            ns::SECRET_INDEX,
            move |t| t <= cutoff_timestamp,
            |value| {
                let row = SecretRow::from_bytes(value).ok()?;
                (row.expires_at != 0).then_some(row.expires_at)
            },
            |_| true,
        )
        .await
    }
}

const DEVICE_KEY: &str = "device";

#[async_trait]
impl DeviceStore for SealkvBackend {
    async fn save(&self, device: &Device) -> Result<()> {
        // Under the device lock, so it orders with `create`'s check-then-write.
        let bytes = encode(device)?;
        self.transact(ns::DEVICE, move |tx| {
            tx.put(ns::DEVICE, DEVICE_KEY, bytes);
            Ok(())
        })
        .await
    }

    async fn load(&self) -> Result<Option<Device>> {
        let Some(bytes) = self.get(ns::DEVICE, DEVICE_KEY)? else {
            return Ok(None);
        };
        let mut device: Device = decode(&bytes)?;
        // Not serialized (`#[serde(skip)]`): restored as the SQLite store does.
        device.device_props = Arc::new(DEVICE_PROPS.clone());
        Ok(Some(device))
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.get(ns::DEVICE, DEVICE_KEY)?.is_some())
    }

    async fn create(&self) -> Result<i32> {
        let device_id = self.device_id;
        let fresh = encode(&Device::new())?;
        self.transact(ns::DEVICE, move |tx| {
            if !tx.get(ns::DEVICE, &[DEVICE_KEY]).map_err(db)?.is_empty() {
                return Err(StoreError::Validation(format!(
                    "device {device_id} already exists in this store"
                )));
            }
            tx.put(ns::DEVICE, DEVICE_KEY, fresh);
            Ok(device_id)
        })
        .await
    }
}
