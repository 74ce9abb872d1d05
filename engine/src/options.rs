//! Store options.

use std::fmt;
use std::time::Duration;

use sealkv_crypto::{
    AES_GCM_SEAL_BUDGET, Algorithm, Compression, KdfLimits, KdfParams, MasterKey, Passphrase,
};

use crate::rowstore::file::backend::BackendFactory;

/// How the master key is given: a raw key, or a passphrase for Argon2id.
#[derive(Clone)]
pub enum Secret {
    /// A raw 32-byte master key.
    Key(MasterKey),
    /// A passphrase; the store keeps the Argon2id salt and parameters.
    Passphrase(Passphrase),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(_) => f.write_str("Secret::Key(…)"),
            Self::Passphrase(_) => f.write_str("Secret::Passphrase(…)"),
        }
    }
}

impl From<MasterKey> for Secret {
    fn from(k: MasterKey) -> Self {
        Self::Key(k)
    }
}

impl From<Passphrase> for Secret {
    fn from(p: Passphrase) -> Self {
        Self::Passphrase(p)
    }
}

/// How processes share a store file. Recorded in the file when it is created; every
/// opener follows the recorded mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Concurrency {
    /// Any number of processes open the file for reading and writing at once. The
    /// first to open it **owns** it: it has the file to itself (one fsync per commit,
    /// its page cache kept warm) and serves the others over a Unix socket beside the
    /// file (`<file>.sock`, mode 0600), after each side proved it holds the store's
    /// key. When the owner closes the store or dies, another process takes over
    /// within about a second. See `docs/SHARING.md`. The default. Unix only: elsewhere
    /// use [`Concurrency::MultiWriter`].
    #[default]
    Shared,
    /// Any number of processes open the file itself for reading and writing (redb's
    /// multi-writer mode: one write transaction at a time across processes, two
    /// fsyncs per commit, and a process's page cache dropped whenever another commits).
    /// For file systems or platforms where the owner's socket cannot work. Stores
    /// created before the owner mode record this mode; a read-write open that finds
    /// such a file unused moves it to [`Concurrency::Shared`] when that is asked for.
    MultiWriter,
    /// One process at a time opens the file; the others get [`crate::Error::Locked`].
    /// Reads are faster: a cached read snapshot serves them until this process commits.
    Exclusive,
}

impl Concurrency {
    /// True when other processes may write the store while this one has it open.
    pub(crate) fn others_write(self) -> bool {
        self != Self::Exclusive
    }
}

/// Options for creating and opening a store.
#[derive(Clone)]
pub struct Options {
    /// AEAD for new data keys. Default XChaCha20-Poly1305. Fixed at creation: the
    /// store records it, and the recorded value wins at open.
    pub cipher: Algorithm,
    /// Compression before sealing. Default snappy for values of 64 bytes or more (see
    /// [`Compression`] for why not zstd).
    /// Fixed at creation like `cipher`.
    pub compression: Compression,
    /// Largest value accepted or returned, in bytes. Default 16 MiB.
    pub max_value_size: usize,
    /// Attempts after the first when a commit fails (the database is reopened between
    /// attempts, so redb recovers to the last commit). Default 2.
    pub commit_retries: u32,
    /// Pause before each retry. Default 20 ms.
    pub commit_retry_delay: Duration,
    /// redb page cache, in bytes. Default 64 MiB.
    pub cache_size: usize,
    /// Argon2id parameters for a store created with a passphrase (and for `rekey`).
    pub kdf: KdfParams,
    /// The most a store's Argon2id parameters may cost. A store's parameters come from
    /// its file, which may not be trusted (a backup someone sent); parameters over these
    /// limits are refused before anything is allocated. Default: 1 GiB of memory, and
    /// memory × passes at most 4 GiB.
    pub kdf_limits: KdfLimits,
    /// Seals after which an AES-256-GCM primary key is rotated. Default 2^30.
    pub aes_gcm_seal_budget: u64,
    /// Rotate the primary data key once it is this old (checked at open and commit).
    pub rotate_after: Option<Duration>,
    /// Source of "now" (seconds since the Unix epoch); tests move it.
    pub clock: Clock,
    /// How processes share the file, for a store being created (an existing store
    /// keeps the mode it was created with). Default [`Concurrency::Shared`].
    pub concurrency: Concurrency,
    /// Longest a transaction waits for its lock key while another transaction (of this
    /// process or another) holds it, before giving up with
    /// [`crate::Error::LockTimeout`]. Default 30 s.
    pub lock_timeout: Duration,
    /// On PostgreSQL: the longest the server keeps a commit of this store open while
    /// its client sends nothing (a host that died or froze mid-commit, holding the
    /// store's commit lock), and about how long a dead host's connections take to be
    /// noticed (TCP keepalives and user timeout, both ways, are set from it). Other
    /// hosts' commits resume within about this plus one commit. Default 30 s.
    pub stall_timeout: Duration,
    /// On PostgreSQL: how long reads, writes and lock keys keep trying while the
    /// server is unreachable or read-only (a primary died and its standby is not yet
    /// promoted; the URL may list several hosts, with `target_session_attrs=read-write`),
    /// with backoff, counted from the first failure, before giving up with the last
    /// error. A commit whose outcome the
    /// failure left uncertain is looked up by its token on the new primary, never
    /// written twice. Default 30 s.
    pub failover_timeout: Duration,
    /// On PostgreSQL: refuse to acknowledge a write unless the server it commits on
    /// waits for at least this many synchronous standbys (`synchronous_standby_names`
    /// asks for this many or more; `synchronous_commit` is `on` or `remote_apply`).
    /// Checked at open and in every commit; a store URL's `sync_replicas=N` raises it.
    /// Default 0 (no check).
    pub sync_replicas: u32,
    /// An anchor to check this open against, for a store that records none
    /// ([`crate::Store::set_anchor`] records one, which every later open checks without
    /// being told). Default none.
    pub anchor: Option<crate::AnchorLocation>,
    #[doc(hidden)]
    pub backend: Option<BackendFactory>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("cipher", &self.cipher)
            .field("compression", &self.compression)
            .field("max_value_size", &self.max_value_size)
            .field("commit_retries", &self.commit_retries)
            .field("cache_size", &self.cache_size)
            .field("kdf", &self.kdf)
            .field("kdf_limits", &self.kdf_limits)
            .field("concurrency", &self.concurrency)
            .field("lock_timeout", &self.lock_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("failover_timeout", &self.failover_timeout)
            .field("sync_replicas", &self.sync_replicas)
            .field("anchor", &self.anchor)
            .finish_non_exhaustive()
    }
}

/// A source of the current time in seconds since the Unix epoch.
pub type Clock = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// Seconds since the Unix epoch from the system clock.
pub fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cipher: Algorithm::XChaCha20Poly1305,
            compression: Compression::default(),
            max_value_size: 16 << 20,
            commit_retries: 2,
            commit_retry_delay: Duration::from_millis(20),
            cache_size: 64 << 20,
            kdf: KdfParams::default(),
            kdf_limits: KdfLimits::default(),
            aes_gcm_seal_budget: AES_GCM_SEAL_BUDGET,
            rotate_after: None,
            clock: std::sync::Arc::new(system_clock),
            concurrency: Concurrency::Shared,
            lock_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            failover_timeout: Duration::from_secs(30),
            sync_replicas: 0,
            anchor: None,
            backend: None,
        }
    }
}
