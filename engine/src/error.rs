//! The engine's error type.

use std::fmt;
use std::path::PathBuf;

use sealkv_crypto::CryptoError;

/// Everything a store operation can report. Every variant a user can cause says what
/// happened and, where there is one, what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The master key or passphrase does not open this store's keyring.
    WrongKey,
    /// The store was created with a passphrase and opened with a raw key, or the reverse.
    KeyKindMismatch {
        /// What the file expects: "passphrase" or "raw key".
        expected: &'static str,
    },
    /// Another process (or another handle in this one) has the file open.
    Locked(PathBuf),
    /// The file is not a sealkv database (empty, random bytes, another redb file).
    NotSealkv(PathBuf),
    /// The file was written by a newer sealkv format version.
    NewerFormat {
        /// Version found in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// The file is damaged or truncated beyond what redb can repair.
    Corrupt(String),
    /// A file already exists where a new store was to be created.
    AlreadyExists(PathBuf),
    /// A stored value failed to open. Names the namespace and key (when they are known);
    /// which check failed is not said.
    Integrity {
        /// Namespace of the value ("" when unknown).
        namespace: String,
        /// Key of the value (its tag in hex when the name is unknown).
        key: String,
        /// What kind of failure (opaque for authentication failures).
        reason: CryptoError,
    },
    /// A value is larger than the store's maximum value size.
    ValueTooLarge {
        /// Namespace of the value.
        namespace: String,
        /// Key of the value.
        key: String,
        /// Size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A namespace or key name is empty or too long.
    InvalidName(String),
    /// A time to live that cannot be used (under one second).
    InvalidTtl(String),
    /// The store was opened read-only.
    ReadOnly,
    /// An earlier commit failed with an I/O error and could not be recovered; the store
    /// refuses writes until it is reopened.
    Poisoned,
    /// A commit failed (after the configured retries). When the last attempt failed
    /// before reaching the disk, nothing of it was applied; when it failed in a write or
    /// fsync (`outcome_unknown`), the commit may or may not be durable: reopen the
    /// store and read it back.
    CommitFailed {
        /// Attempts made.
        attempts: u32,
        /// True when the last attempt failed while writing or syncing the file, so
        /// whether the commit reached the disk is not known.
        outcome_unknown: bool,
        /// The last error.
        source: Box<Error>,
    },
    /// A meta record that governs how data is written (settings, format, key
    /// derivation) does not match the digest the keyring authenticates: the file was
    /// changed outside sealkv. Nothing was written.
    MetaTampered,
    /// Another process changed the keyring (a rotation, destroy or rekey) since this
    /// one read it. Write paths reload it and seal again; a caller never sees this.
    KeyringChanged,
    /// A transaction waited longer than `Options::lock_timeout` for its lock key, held by
    /// another process. Nothing was written.
    LockTimeout {
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// A transaction's lock key was lost before it committed (the server ended the
    /// session that held it: a restart, a failover, a stalled connection ended by its
    /// timeout), so another writer may have taken it. Nothing of the transaction was
    /// written; run it again.
    LockLost,
    /// A copy to PostgreSQL of a store of the first file format, opened read-only (so
    /// not upgraded): a server holds only stores of the current format. Nothing was
    /// written.
    NeedsUpgrade,
    /// Compaction (and so the CLI's `rotate`, which ends with it) needs the store to
    /// itself, and another process or a transaction in progress has it. Nothing was
    /// changed; compact later.
    NotAlone,
    /// A transaction with one lock key was begun inside a transaction holding another:
    /// taking the second lock could deadlock against a thread taking them in the
    /// opposite order, so it is refused. Nothing was written.
    NestedLock,
    /// Destroying a data key that values still use.
    KeyInUse {
        /// The key id.
        key_id: u32,
        /// Values still sealed under it.
        values: u64,
    },
    /// A typed value (the `sealkv` crate's `put_as`/`get_as`) could not be encoded, or
    /// a stored value does not decode as the type asked. Nothing was written. The
    /// reason never quotes the value.
    Serde {
        /// Namespace of the value.
        namespace: String,
        /// Key of the value.
        key: String,
        /// True when decoding a stored value failed; false when encoding one did.
        decoding: bool,
        /// What went wrong (the kind of error and where, never the data).
        reason: String,
    },
    /// The OS credential store (the `sealkv` crate's `keychain` feature) could not give
    /// or keep a key: none reachable, locked, or no entry. Never a silent fallback.
    Keychain {
        /// What failed (service and account named; never a secret).
        what: String,
        /// What to do.
        hint: &'static str,
    },
    /// No key slot has this id.
    NoSuchSlot(u32),
    /// Removing the store's last key slot: nothing could open the store then.
    LastSlot,
    /// The store is an older copy than its anchor has seen: a backup, a sync tool or
    /// someone put an earlier state of the file back. Nothing was served or written.
    /// If the restore was meant, `accept_restore` (`sealkv accept-restore`) accepts it.
    RolledBack {
        /// The file's restore epoch and generation.
        file: (u64, u64),
        /// The restore epoch and generation the anchor holds.
        anchor: (u64, u64),
        /// Where the anchor is.
        location: String,
    },
    /// The store's anchor could not be read or written: missing, unreadable, from
    /// another store, or unreachable. Never a silent pass.
    Anchor {
        /// What failed (the location named; never a secret).
        what: String,
        /// What to do.
        hint: &'static str,
    },
    /// The rows do not add up to the content hash the store keeps: rows were put back,
    /// added or removed outside sealkv (found by `verify`).
    ContentChanged,
    /// A key operation the keyring refused (unknown id, primary key, budget spent).
    Key(CryptoError),
    /// An I/O error outside redb (backup, file checks).
    Io(std::io::Error),
    /// An error from redb.
    Storage(redb::Error),
    /// The PostgreSQL server could not be reached, refused the login, or failed a
    /// statement. The message names the server (never its password) and says what to
    /// check.
    Server {
        /// What failed, with the server's own message where it has one.
        what: String,
        /// What to check or do.
        hint: &'static str,
        /// True when trying again may succeed (a dropped connection, a serialization
        /// failure, a deadlock); the commit path retries these.
        transient: bool,
    },
    /// Another process owns the store file and serves it (the default shared mode),
    /// and talking to it failed: the connection was lost (the owner exited or died; a
    /// new owner is found on the next call), or it refused this process.
    Owner {
        /// What failed.
        what: String,
        /// True when the connection was lost: trying again finds the next owner.
        transient: bool,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongKey => f.write_str("wrong master key or passphrase"),
            Self::KeyKindMismatch { expected } => {
                write!(f, "this store is opened with a {expected}, not the kind of key given")
            }
            Self::Locked(p) => write!(
                f,
                "{} is in use by another process or handle that holds it alone (a store in \
                 exclusive mode, or a sealkv older than format 2)",
                p.display()
            ),
            Self::NotSealkv(p) => write!(f, "{} is not a sealkv database", p.display()),
            Self::NewerFormat { found, supported } => write!(
                f,
                "the store has format version {found}, newer than the {supported} this build reads; upgrade sealkv"
            ),
            Self::Corrupt(what) => write!(f, "the store is damaged: {what}"),
            Self::AlreadyExists(p) => write!(f, "{} already exists", p.display()),
            Self::Integrity { namespace, key, reason } => {
                write!(f, "value {namespace}/{key} failed to open: {reason}")
            }
            Self::ValueTooLarge { namespace, key, size, limit } => write!(
                f,
                "value {namespace}/{key} is {size} bytes, over the store's limit of {limit} bytes"
            ),
            Self::InvalidName(why) => write!(f, "invalid name: {why}"),
            Self::InvalidTtl(why) => write!(f, "invalid time to live: {why}"),
            Self::ReadOnly => f.write_str("the store is open read-only"),
            Self::Poisoned => f.write_str(
                "the store refuses writes after an unrecovered I/O error during a commit; reopen it",
            ),
            Self::CommitFailed { attempts, outcome_unknown: false, source } => {
                write!(f, "commit failed after {attempts} attempts, nothing applied: {source}")
            }
            Self::CommitFailed { attempts, outcome_unknown: true, source } => write!(
                f,
                "commit failed after {attempts} attempts while it was being committed: it may or \
                 may not have taken effect; read the values back (reopen a file store first): \
                 {source}"
            ),
            Self::MetaTampered => f.write_str(
                "the store's settings, format or key derivation record was changed outside \
                 sealkv: it does not match what the keyring authenticates",
            ),
            Self::KeyringChanged => {
                f.write_str("another process changed the keyring; read it again and retry")
            }
            Self::LockTimeout { waited } => write!(
                f,
                "gave up after {:.1} s waiting for a transaction lock key that another transaction holds",
                waited.as_secs_f64()
            ),
            Self::NeedsUpgrade => f.write_str(
                "this store is of the first file format, which a server cannot hold; open it \
                 for writing once (that upgrades it), then copy it; nothing was written",
            ),
            Self::LockLost => f.write_str(
                "the transaction's lock key was lost before it committed (the server ended \
                 the session holding it); nothing of the transaction was written, run it again",
            ),
            Self::NotAlone => f.write_str(
                "compaction needs the store to itself, and another process (or a transaction \
                 in progress) has it open; nothing was changed, compact when it is closed",
            ),
            Self::NestedLock => f.write_str(
                "a transaction cannot begin with another lock key inside a transaction; \
                 use the outer lock key, or run them one after the other",
            ),
            Self::KeyInUse { key_id, values } => {
                write!(f, "data key {key_id} still seals {values} values; re-encrypt them first")
            }
            Self::Key(e @ (CryptoError::KdfOverLimit { .. } | CryptoError::KdfParams { .. })) => {
                write!(f, "{e}")
            }
            Self::Serde {
                namespace,
                key,
                decoding: true,
                reason,
            } => write!(
                f,
                "the value of {namespace}/{key} does not decode as the type asked ({reason})"
            ),
            Self::Serde {
                namespace,
                key,
                decoding: false,
                reason,
            } => write!(f, "the value for {namespace}/{key} could not be encoded ({reason})"),
            Self::Keychain { what, hint } => write!(f, "keychain: {what} ({hint})"),
            Self::NoSuchSlot(id) => write!(f, "the store has no key slot {id}"),
            Self::LastSlot => f.write_str(
                "this is the store's last key slot: nothing could open the store without it; \
                 add another slot first",
            ),
            Self::RolledBack {
                file,
                anchor,
                location,
            } => write!(
                f,
                "this store is an older copy than its anchor ({location}) has seen: the file is \
                 at restore epoch {} generation {}, the anchor at epoch {} generation {}. A \
                 backup, a sync tool or someone put an earlier copy back, which would bring back \
                 consumed keys and rewound sessions; nothing was served. Find the newer copy, \
                 or, if restoring it was meant, run `sealkv accept-restore`",
                file.0, file.1, anchor.0, anchor.1
            ),
            Self::Anchor { what, hint } => write!(f, "anchor: {what} ({hint})"),
            Self::ContentChanged => f.write_str(
                "the rows do not add up to the content hash the store keeps: rows were put \
                 back from an older copy, added or removed outside sealkv",
            ),
            Self::Key(e) => write!(f, "key operation refused: {e}"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Storage(e) => write!(f, "storage error: {e}"),
            Self::Server { what, hint, .. } => write!(f, "PostgreSQL: {what} ({hint})"),
            Self::Owner { what, .. } => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Integrity { reason, .. } => Some(reason),
            Self::CommitFailed { source, .. } => Some(source.as_ref()),
            Self::Key(e) => Some(e),
            Self::Io(e) => Some(e),
            Self::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        Self::Key(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::Storage(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::CompactionError
);

impl Error {
    /// A stable name for the kind of error, in snake case (`"wrong_key"`,
    /// `"rolled_back"`): what bindings hand their callers to match on, where the
    /// message is for people. Names are never reused; a new kind gets a new name.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongKey => "wrong_key",
            Self::KeyKindMismatch { .. } => "key_kind",
            Self::Locked(_) => "locked",
            Self::NotSealkv(_) => "not_sealkv",
            Self::NewerFormat { .. } => "newer_format",
            Self::Corrupt(_) => "corrupt",
            Self::AlreadyExists(_) => "exists",
            Self::Integrity { .. } => "integrity",
            Self::ValueTooLarge { .. } => "too_large",
            Self::InvalidName(_) => "invalid_name",
            Self::InvalidTtl(_) => "invalid_ttl",
            Self::ReadOnly => "read_only",
            Self::Poisoned => "poisoned",
            Self::CommitFailed { .. } => "commit_failed",
            Self::MetaTampered => "meta_tampered",
            Self::KeyringChanged => "keyring_changed",
            Self::LockTimeout { .. } => "lock_timeout",
            Self::LockLost => "lock_lost",
            Self::NeedsUpgrade => "needs_upgrade",
            Self::NotAlone => "not_alone",
            Self::NestedLock => "nested_lock",
            Self::KeyInUse { .. } => "key_in_use",
            Self::Serde { .. } => "serde",
            Self::Keychain { .. } => "keychain",
            Self::NoSuchSlot(_) => "no_such_slot",
            Self::LastSlot => "last_slot",
            Self::RolledBack { .. } => "rolled_back",
            Self::Anchor { .. } => "anchor",
            Self::ContentChanged => "content_changed",
            Self::Key(_) => "key",
            Self::Io(_) | Self::Storage(_) => "io",
            Self::Server { .. } => "server",
            Self::Owner { .. } => "owner",
        }
    }

    /// True for I/O-class failures after which redb must be reopened.
    /// A server failure that may pass (a lost connection, a server restarting or
    /// failing over, a standby not yet promoted).
    pub(crate) fn is_transient_server(&self) -> bool {
        matches!(
            self,
            Self::Server {
                transient: true,
                ..
            } | Self::Owner {
                transient: true,
                ..
            }
        )
    }

    pub(crate) fn is_io(&self) -> bool {
        matches!(
            self,
            Self::Storage(redb::Error::Io(_) | redb::Error::PreviousIo)
                | Self::Io(_)
                | Self::Server {
                    transient: true,
                    ..
                }
                | Self::Owner {
                    transient: true,
                    ..
                }
        )
    }
}

impl Error {
    /// A copy for every caller of a shared group commit (I/O and redb errors are
    /// copied by kind and message).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Self::WrongKey => Self::WrongKey,
            Self::KeyKindMismatch { expected } => Self::KeyKindMismatch { expected },
            Self::Locked(p) => Self::Locked(p.clone()),
            Self::NotSealkv(p) => Self::NotSealkv(p.clone()),
            Self::NewerFormat { found, supported } => Self::NewerFormat {
                found: *found,
                supported: *supported,
            },
            Self::Corrupt(s) => Self::Corrupt(s.clone()),
            Self::AlreadyExists(p) => Self::AlreadyExists(p.clone()),
            Self::Integrity {
                namespace,
                key,
                reason,
            } => Self::Integrity {
                namespace: namespace.clone(),
                key: key.clone(),
                reason: reason.clone(),
            },
            Self::ValueTooLarge {
                namespace,
                key,
                size,
                limit,
            } => Self::ValueTooLarge {
                namespace: namespace.clone(),
                key: key.clone(),
                size: *size,
                limit: *limit,
            },
            Self::InvalidName(s) => Self::InvalidName(s.clone()),
            Self::InvalidTtl(s) => Self::InvalidTtl(s.clone()),
            Self::Poisoned => Self::Poisoned,
            Self::ReadOnly => Self::ReadOnly,
            Self::CommitFailed {
                attempts,
                outcome_unknown,
                source,
            } => Self::CommitFailed {
                attempts: *attempts,
                outcome_unknown: *outcome_unknown,
                source: Box::new(source.duplicate()),
            },
            Self::MetaTampered => Self::MetaTampered,
            Self::NestedLock => Self::NestedLock,
            Self::NotAlone => Self::NotAlone,
            Self::KeyringChanged => Self::KeyringChanged,
            Self::LockTimeout { waited } => Self::LockTimeout { waited: *waited },
            Self::LockLost => Self::LockLost,
            Self::NeedsUpgrade => Self::NeedsUpgrade,
            Self::KeyInUse { key_id, values } => Self::KeyInUse {
                key_id: *key_id,
                values: *values,
            },
            Self::Serde {
                namespace,
                key,
                decoding,
                reason,
            } => Self::Serde {
                namespace: namespace.clone(),
                key: key.clone(),
                decoding: *decoding,
                reason: reason.clone(),
            },
            Self::Keychain { what, hint } => Self::Keychain {
                what: what.clone(),
                hint,
            },
            Self::NoSuchSlot(id) => Self::NoSuchSlot(*id),
            Self::LastSlot => Self::LastSlot,
            Self::RolledBack {
                file,
                anchor,
                location,
            } => Self::RolledBack {
                file: *file,
                anchor: *anchor,
                location: location.clone(),
            },
            Self::Anchor { what, hint } => Self::Anchor {
                what: what.clone(),
                hint,
            },
            Self::ContentChanged => Self::ContentChanged,
            Self::Key(e) => Self::Key(e.clone()),
            Self::Io(e) => Self::Io(std::io::Error::new(e.kind(), e.to_string())),
            Self::Storage(e) => Self::Io(std::io::Error::other(e.to_string())),
            Self::Server {
                what,
                hint,
                transient,
            } => Self::Server {
                what: what.clone(),
                hint,
                transient: *transient,
            },
            Self::Owner { what, transient } => Self::Owner {
                what: what.clone(),
                transient: *transient,
            },
        }
    }
}

/// The result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
