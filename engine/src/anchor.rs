//! Anchors: a record outside the store of the newest state it was seen in, so that an
//! older copy of the store put back is refused at open.
//!
//! Every commit advances the store's generation (its state record). The anchor holds
//! the highest `(restore epoch, generation)` written, in a record authenticated under
//! a subkey of the store key and bound to the store's id. At open, a file whose state
//! is below the anchor's is [`Error::RolledBack`]; a missing or unreadable anchor is
//! [`Error::Anchor`], never a silent pass.
//!
//! **Crash rule: commit, then advance.** The anchor is written only after the commit
//! it records is durable, so it is never ahead of the file: a crash at any point
//! leaves it at or behind the file, and opening accepts a file at or past the anchor.
//! What a crash can hide is a rollback to a state the anchor had not yet recorded: the
//! last commit, or with an interval (below) the commits of the last interval.
//!
//! Where anchors live:
//! - a **file** (`AnchorLocation::File`): two record slots written in turn under a file
//!   lock, each commit, with no fsync of their own (a process crash keeps them, the
//!   page cache being the kernel's; a power loss can leave the anchor behind by the
//!   kernel's write-back delay, 30 s by default on Linux; never ahead, as the commit's
//!   own fsync came first);
//! - the **OS keychain** (`AnchorLocation::Keychain`, the `sealkv` crate's `keychain`
//!   feature): beside the store's key, advanced at most once per
//!   [`KEYCHAIN_INTERVAL`] and when the store closes;
//! - a **PostgreSQL** table (`AnchorLocation::Postgres`): one row per store id,
//!   advanced by a compare-and-swap `INSERT … ON CONFLICT … WHERE older`, at most once
//!   per [`POSTGRES_INTERVAL`] and at close.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use std::sync::Arc;

use crate::commit::KeyringWrite;
use crate::error::{Error, Result};
use crate::guards::{lock, read_lock};
use crate::meta::{META_ANCHOR, Meta};
use crate::rowstore::Table;
use crate::state::{META_STATE, State};
use crate::store::Store;

/// How often a keychain anchor is written at most (and at close).
pub const KEYCHAIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often a PostgreSQL anchor is written at most (and at close).
pub const POSTGRES_INTERVAL: Duration = Duration::from_secs(1);

const RECORD_MAGIC: &[u8; 16] = b"sealkv anchor v1";
/// Length of an anchor record: magic, store id, epoch, generation, MAC.
pub const RECORD_LEN: usize = 16 + 16 + 8 + 8 + 32;

/// Where a store's anchor is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnchorLocation {
    /// A file at this (absolute) path, holding this store's record only.
    File(PathBuf),
    /// The OS keychain, under this service (the account is the store's id in hex,
    /// followed by `.anchor`).
    Keychain(String),
    /// A PostgreSQL database (a `postgres://` URL without a password; the
    /// `sealkv_anchors` table, made when first needed).
    Postgres(String),
}

impl AnchorLocation {
    /// Reads a location as the CLI takes it: `keychain:SERVICE`, a `postgres://` URL,
    /// or a file path (made absolute, so every process finds the same file).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |what: String| Error::Anchor {
            what,
            hint: "name a file path, keychain:SERVICE or postgres://user@host/db",
        };
        if let Some(service) = text.strip_prefix("keychain:") {
            crate::slots::check_text("service", Some(service))?;
            return Ok(Self::Keychain(service.to_owned()));
        }
        if crate::rowstore::postgres::is_url(text) {
            let url = pg_anchor_url(text)?;
            if url.has_password() {
                return Err(bad(
                    "an anchor URL is recorded in the store and shown in messages: it must \
                     not hold a password (give it with PGPASSWORD)"
                        .into(),
                ));
            }
            return Ok(Self::Postgres(text.to_owned()));
        }
        if text.is_empty() {
            return Err(bad("an empty anchor location".into()));
        }
        let path = std::path::absolute(text)
            .map_err(|e| bad(format!("{text}: cannot make the path absolute: {e}")))?;
        if path.to_str().is_none() {
            return Err(bad("an anchor path must be valid UTF-8".into()));
        }
        Ok(Self::File(path))
    }

    /// Checks a location built by hand as [`AnchorLocation::parse`] checks text: a file
    /// path absolute and UTF-8, a service name of 1 to 128 bytes, a URL without a
    /// password.
    pub fn checked(&self) -> Result<()> {
        let text = match self {
            Self::File(p) if !p.is_absolute() || p.to_str().is_none() => {
                return Err(Error::Anchor {
                    what: format!("{}: an anchor path must be absolute UTF-8", p.display()),
                    hint: "name the file with an absolute path",
                });
            }
            Self::File(p) => p.to_str().unwrap_or_default().to_owned(),
            Self::Keychain(s) => format!("keychain:{s}"),
            Self::Postgres(u) => u.clone(),
        };
        Self::parse(&text).map(drop)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let (kind, text) = match self {
            Self::File(p) => (1u8, p.to_str().unwrap_or_default()),
            Self::Keychain(s) => (2, s.as_str()),
            Self::Postgres(u) => (3, u.as_str()),
        };
        let mut out = vec![kind];
        out.extend_from_slice(text.as_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Corrupt("the anchor location record is malformed".into());
        let (&kind, text) = bytes.split_first().ok_or_else(bad)?;
        let text = std::str::from_utf8(text).map_err(|_| bad())?.to_owned();
        if text.is_empty() {
            return Err(bad());
        }
        match kind {
            1 => Ok(Self::File(PathBuf::from(text))),
            2 => Ok(Self::Keychain(text)),
            3 => Ok(Self::Postgres(text)),
            _ => Err(bad()),
        }
    }

    /// How long at most an anchor of this kind waits between two writes.
    pub fn interval(&self) -> Duration {
        match self {
            Self::File(_) => Duration::ZERO,
            Self::Keychain(_) => KEYCHAIN_INTERVAL,
            Self::Postgres(_) => POSTGRES_INTERVAL,
        }
    }
}

impl fmt::Display for AnchorLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Keychain(s) => write!(f, "keychain:{s}"),
            Self::Postgres(u) => f.write_str(u),
        }
    }
}

/// Reads an anchor record's `(restore epoch, generation)`; `None` when it is not a
/// valid record of the store.
pub type Rank<'a> = dyn Fn(&[u8]) -> Option<(u64, u64)> + 'a;

/// Where anchor records are kept for one store: a file, a keychain entry, a row.
pub trait AnchorStore: Send + Sync {
    /// The records held: none when there is no anchor yet, one or more otherwise (a
    /// file keeps two, written in turn, so a torn write leaves the other).
    fn read(&self) -> Result<Vec<Vec<u8>>>;
    /// Stores `record`, which records position `at`, unless a record at or past it is
    /// there already. `rank` reads a record's position (`None`: not a valid record of
    /// this store).
    fn advance(&self, record: &[u8], at: (u64, u64), rank: &Rank<'_>) -> Result<()>;
    /// Stores `record` whatever is there (an accepted restore; a damaged record).
    fn rebase(&self, record: &[u8]) -> Result<()>;
}

/// Makes the keychain anchor of a store: `(service, account)`.
pub type KeychainAnchors = fn(&str, &str) -> Result<Box<dyn AnchorStore>>;

static KEYCHAIN: OnceLock<KeychainAnchors> = OnceLock::new();

/// Installs the keychain anchors (the `sealkv` crate does, with its `keychain`
/// feature). Without them, a store anchored in a keychain gives [`Error::Anchor`].
pub fn install_keychain_anchors(make: KeychainAnchors) {
    let _ = KEYCHAIN.set(make);
}

/// The anchor record keys of one store.
#[derive(Clone)]
pub(crate) struct RecordKey {
    db_id: [u8; 16],
    key: Zeroizing<[u8; 32]>,
}

impl RecordKey {
    pub(crate) fn derive(store_key: &[u8; 32], db_id: &[u8; 16]) -> Self {
        let mut h = blake3::Hasher::new_derive_key("sealkv anchor record v1");
        h.update(store_key).update(db_id);
        Self {
            db_id: *db_id,
            key: Zeroizing::new(*h.finalize().as_bytes()),
        }
    }

    fn mac(&self, body: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.key, body).as_bytes()
    }

    pub(crate) fn record(&self, at: (u64, u64)) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_LEN);
        out.extend_from_slice(RECORD_MAGIC);
        out.extend_from_slice(&self.db_id);
        out.extend_from_slice(&at.0.to_le_bytes());
        out.extend_from_slice(&at.1.to_le_bytes());
        let mac = self.mac(&out);
        out.extend_from_slice(&mac);
        out
    }

    /// The position a record holds, if it is a valid record of this store.
    pub(crate) fn open(&self, record: &[u8]) -> Option<(u64, u64)> {
        if record.len() != RECORD_LEN || &record[..16] != RECORD_MAGIC {
            return None;
        }
        let (body, mac) = record.split_at(RECORD_LEN - 32);
        if body[16..32] != self.db_id {
            return None;
        }
        let expected = self.mac(body);
        if expected.iter().zip(mac).fold(0u8, |a, (x, y)| a | (x ^ y)) != 0 {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        Some((u(32), u(40)))
    }
}

/// A store's anchor, open.
pub(crate) struct Anchor {
    pub(crate) location: AnchorLocation,
    store: Box<dyn AnchorStore>,
    key: RecordKey,
    /// When the anchor was last written, what it holds as far as this handle knows,
    /// and the newest position not yet written (an interval anchor).
    written: Mutex<Written>,
}

struct Written {
    when: Option<Instant>,
    at: (u64, u64),
    pending: Option<(u64, u64)>,
    /// True while writes fail (for health).
    failing: bool,
}

impl Anchor {
    /// Opens the anchor at `location` for the store of `db_id`.
    pub(crate) fn open(location: AnchorLocation, key: RecordKey) -> Result<Self> {
        let account = format!("{}.anchor", crate::store::hex_id(&key.db_id));
        let store: Box<dyn AnchorStore> = match &location {
            AnchorLocation::File(path) => file_store(path.clone()),
            AnchorLocation::Keychain(service) => match KEYCHAIN.get() {
                Some(make) => make(service, &account)?,
                None => {
                    return Err(Error::Anchor {
                        what: format!(
                            "the store is anchored in the keychain ({location}), and this \
                             program was built without keychain support"
                        ),
                        hint: "open it with the sealkv CLI or a program built with the \
                               `keychain` feature",
                    });
                }
            },
            AnchorLocation::Postgres(url) => pg::open(url, &key.db_id)?,
        };
        Ok(Self {
            location,
            store,
            key,
            written: Mutex::new(Written {
                when: None,
                at: (0, 0),
                pending: None,
                failing: false,
            }),
        })
    }

    /// The position the anchor holds: `None` when it holds no record yet.
    pub(crate) fn read(&self) -> Result<Option<(u64, u64)>> {
        let records = self.store.read()?;
        if records.is_empty() {
            return Ok(None);
        }
        match records.iter().filter_map(|r| self.key.open(r)).max() {
            Some(at) => {
                let mut w = lock(&self.written);
                w.at = w.at.max(at);
                Ok(Some(at))
            }
            None => Err(Error::Anchor {
                what: format!(
                    "{}: the anchor holds no valid record of this store (damaged, or \
                     another store's)",
                    self.location
                ),
                hint: "if this file is the copy to keep, run `sealkv accept-restore`, \
                       which writes the anchor again from it",
            }),
        }
    }

    /// Checks the file against the anchor: the anchor is read first, then the file's
    /// position (`file`, a fresh read), so a commit another process makes in between
    /// (which may advance the anchor) can only make the file newer, never raise a false
    /// alarm. Below the anchor is [`Error::RolledBack`]; no anchor record is
    /// [`Error::Anchor`]. Returns the file's position.
    pub(crate) fn check(&self, file: &mut dyn FnMut() -> Result<(u64, u64)>) -> Result<(u64, u64)> {
        let held = self.read()?;
        let at = file()?;
        match held {
            None => Err(Error::Anchor {
                what: format!("{}: no anchor record for this store", self.location),
                hint: "the anchor was deleted or moved: if this file is the copy to keep, \
                       run `sealkv accept-restore`, which writes it again",
            }),
            Some(anchor) if at < anchor => Err(Error::RolledBack {
                file: at,
                anchor,
                location: self.location.to_string(),
            }),
            Some(_) => Ok(at),
        }
    }

    /// Writes `at` whatever the anchor holds (a restore accepted knowingly; a damaged
    /// anchor written again).
    pub(crate) fn rebase(&self, at: (u64, u64)) -> Result<()> {
        let mut w = lock(&self.written);
        let result = self.store.rebase(&self.key.record(at));
        if result.is_ok() {
            w.when = Some(Instant::now());
            w.at = at;
            w.pending = None;
            w.failing = false;
        }
        result
    }

    /// Records that the file reached `at`: written now if the anchor's interval has
    /// passed since the last write (or `force`), else at the next due commit or close.
    pub(crate) fn advance(&self, at: (u64, u64), force: bool) -> Result<()> {
        let mut w = lock(&self.written);
        if at <= w.at {
            return Ok(());
        }
        let due = force
            || w.when
                .is_none_or(|t| t.elapsed() >= self.location.interval());
        if !due {
            w.pending = Some(w.pending.map_or(at, |p| p.max(at)));
            return Ok(());
        }
        let result = self
            .store
            .advance(&self.key.record(at), at, &|r| self.key.open(r));
        match &result {
            Ok(()) => {
                w.when = Some(Instant::now());
                w.at = at;
                w.pending = None;
                w.failing = false;
            }
            Err(_) => {
                w.pending = Some(at);
                w.failing = true;
            }
        }
        result
    }

    /// Writes a position an interval held back (at close).
    pub(crate) fn flush(&self) -> Result<()> {
        let pending = lock(&self.written).pending;
        match pending {
            Some(at) => self.advance(at, true),
            None => Ok(()),
        }
    }

    /// True when the last write failed.
    pub(crate) fn failing(&self) -> bool {
        lock(&self.written).failing
    }
}

/// Where the anchor of a store is: the one it records, else the one `opts` names.
fn location_of(meta: &Meta, opts: &crate::Options) -> Result<Option<AnchorLocation>> {
    match (&meta.anchor, &opts.anchor) {
        (Some(record), _) => AnchorLocation::decode(record).map(Some),
        (None, Some(named)) => named.checked().map(|()| Some(named.clone())),
        (None, None) => Ok(None),
    }
}

/// Checks the anchor of `meta` (or `opts`) before the store is open; `position` reads
/// the file's `(epoch, generation)` afresh (`(0, 0)` for a file of an earlier format,
/// which no anchor can have seen).
pub(crate) fn precheck(
    meta: &Meta,
    opts: &crate::Options,
    store_key: &sealkv_crypto::MasterKey,
    db_id: &[u8; 16],
    position: &mut dyn FnMut() -> Result<(u64, u64)>,
) -> Result<()> {
    let Some(location) = location_of(meta, opts)? else {
        return Ok(());
    };
    Anchor::open(location, RecordKey::derive(store_key.expose(), db_id))?
        .check(position)
        .map(drop)
}

impl Store {
    fn record_key(&self) -> RecordKey {
        RecordKey::derive(read_lock(&self.inner.master).expose(), &self.inner.db_id)
    }

    /// The store's `(epoch, generation)` as a fresh read sees it (`(0, 0)` before
    /// format 3).
    pub(crate) fn fresh_position(&self) -> Result<(u64, u64)> {
        let Some(keys) = read_lock(&self.inner.state).clone() else {
            return Ok((0, 0));
        };
        let state = State::read(&*self.rows().view()?, &keys)?.ok_or(Error::MetaTampered)?;
        let mut seen = lock(&self.inner.seen_state);
        if seen.is_none_or(|s| (s.epoch, s.generation) < (state.epoch, state.generation)) {
            *seen = Some(state);
        }
        Ok((state.epoch, state.generation))
    }

    /// Opens the anchor the store records (or the one `Options::anchor` names) and, if
    /// `check`, refuses a file older than it (a file of an earlier format counts as
    /// the oldest). A read-write handle brings the anchor up to the file. A store of an
    /// earlier format keeps no anchor until its upgrade.
    pub(crate) fn attach_anchor(&self, meta: &Meta, read_only: bool, check: bool) -> Result<()> {
        let Some(location) = location_of(meta, &self.inner.opts)? else {
            return Ok(());
        };
        let anchor = Anchor::open(location, self.record_key())?;
        let kept = read_lock(&self.inner.state).is_some();
        if check {
            let at = anchor.check(&mut || self.fresh_position())?;
            if !read_only
                && kept
                && let Err(e) = anchor.advance(at, true)
            {
                tracing::warn!(target: "sealkv::anchor", error = %e, "anchor not advanced at open");
            }
        }
        if kept {
            *lock(&self.inner.anchor) = Some(Arc::new(anchor));
        }
        Ok(())
    }

    /// After a commit: the anchor follows the file (commit, then advance). A failed
    /// write fails nothing (the commit is durable); the anchor lags until a later write
    /// succeeds, and `health` reports it.
    pub(crate) fn note_committed(&self, state: State) {
        let anchor = lock(&self.inner.anchor).clone();
        if let Some(anchor) = anchor
            && let Err(e) = anchor.advance((state.epoch, state.generation), false)
        {
            crate::observe::count(crate::observe::ANCHOR_FAILURES, 1);
            tracing::warn!(target: "sealkv::anchor", error = %e, "anchor not advanced");
        }
    }

    /// Where the store's anchor is, if it has one.
    pub fn anchor(&self) -> Option<AnchorLocation> {
        lock(&self.inner.anchor)
            .as_ref()
            .map(|a| a.location.clone())
    }

    /// True when the anchor's last write failed (it lags the file until one succeeds).
    pub fn anchor_lagging(&self) -> bool {
        lock(&self.inner.anchor)
            .as_ref()
            .is_some_and(|a| a.failing())
    }

    /// The store's restore epoch: how many restores were accepted
    /// ([`Store::accept_restore`]). An application that keeps state elsewhere (a
    /// messaging session) compares it with the epoch it last saw, and starts over when
    /// it grew. 0 for a store of an earlier format, opened read-only.
    pub fn restore_epoch(&self) -> u64 {
        lock(&self.inner.seen_state).map_or(0, |s| s.epoch)
    }

    /// The store's generation as this handle last saw it: commits since it was created
    /// (or upgraded to format 3).
    pub fn generation(&self) -> u64 {
        lock(&self.inner.seen_state).map_or(0, |s| s.generation)
    }

    /// Records `location` as the store's anchor (or, with `None`, removes it), in the
    /// authenticated meta, so every later open checks it without being told. The anchor
    /// is written first, at the store's current state: a location that cannot be
    /// written, or that holds a newer state of this store (this file is an older copy),
    /// changes nothing.
    pub fn set_anchor(&self, location: Option<AnchorLocation>) -> Result<()> {
        self.check_writable()?;
        let anchor = match location {
            Some(location) => {
                location.checked()?;
                if read_lock(&self.inner.state).is_none() {
                    return Err(Error::NeedsUpgrade);
                }
                let anchor = Anchor::open(location, self.record_key())?;
                let at = match anchor.check(&mut || self.fresh_position()) {
                    Ok(at) => at,
                    // A new anchor: nothing to check yet.
                    Err(Error::Anchor { .. }) if anchor.read()?.is_none() => {
                        self.fresh_position()?
                    }
                    Err(other) => return Err(other),
                };
                anchor.advance(at, true)?;
                Some(Arc::new(anchor))
            }
            None => None,
        };
        let record = anchor.as_ref().map(|a| a.location.encode());
        self.change_governing(|txn| match &record {
            Some(r) => txn.put(Table::Meta, META_ANCHOR.as_bytes(), r),
            None => txn.delete(Table::Meta, META_ANCHOR.as_bytes()),
        })?;
        if let Some(anchor) = &anchor {
            let state = lock(&self.inner.seen_state).ok_or(Error::NeedsUpgrade)?;
            anchor.advance((state.epoch, state.generation), true)?;
        }
        *lock(&self.inner.anchor) = anchor;
        Ok(())
    }

    /// Advances the restore epoch in one commit, past both the file's and the anchor's,
    /// and writes the anchor from the file whatever it held ([`Store::accept_restore`]),
    /// then reads it back.
    pub(crate) fn advance_epoch(&self) -> Result<()> {
        self.check_writable()?;
        let keys = read_lock(&self.inner.state)
            .clone()
            .ok_or(Error::NeedsUpgrade)?;
        let anchor = lock(&self.inner.anchor).clone();
        // An anchor that cannot be read (damaged, missing) has no epoch to pass.
        let held = anchor
            .as_ref()
            .and_then(|a| a.read().ok().flatten())
            .map_or(0, |(epoch, _)| epoch);
        self.with_fresh_keyring(|| {
            let ring = self.ring();
            let _commit = self.commit_lock();
            self.write_with_keyring(&ring, KeyringWrite::IfNeeded, |txn| {
                let state = State::read(&*txn, &keys)?.ok_or(Error::MetaTampered)?;
                let next = State {
                    epoch: state.epoch.max(held) + 1,
                    ..state
                };
                txn.put(Table::Meta, META_STATE.as_bytes(), &next.encode(&keys))
            })
        })?;
        if let Some(anchor) = anchor {
            let state = lock(&self.inner.seen_state).ok_or(Error::NeedsUpgrade)?;
            let at = (state.epoch, state.generation);
            anchor.rebase(at)?;
            if anchor.read()? != Some(at) {
                return Err(Error::Anchor {
                    what: format!(
                        "{}: the anchor did not take the accepted state",
                        anchor.location
                    ),
                    hint: "another process may be writing the store: close it, then run \
                           accept-restore again",
                });
            }
        }
        Ok(())
    }
}

/// The anchor store [`AnchorLocation::File`] uses: a file at `path` holding two record
/// slots, written in turn under a file lock. For an [`install_keychain_anchors`]
/// provider that keeps its records in files (tests; a platform without a keychain).
pub fn file_store(path: PathBuf) -> Box<dyn AnchorStore> {
    Box::new(FileAnchor {
        path,
        open: Mutex::new(None),
    })
}

/// A file holding two record slots, written in turn.
struct FileAnchor {
    path: PathBuf,
    /// The file, kept open between writes (opening it costs more than the write).
    open: Mutex<Option<File>>,
}

impl FileAnchor {
    fn error(&self, e: std::io::Error) -> Error {
        Error::Anchor {
            what: format!("{}: {e}", self.path.display()),
            hint: "check that the anchor file's folder exists and is writable by this user",
        }
    }

    fn slots(file: &mut File) -> std::io::Result<Vec<Vec<u8>>> {
        use std::io::Read;
        let mut all = Vec::new();
        file.read_to_end(&mut all)?;
        Ok(all.chunks(RECORD_LEN).map(<[u8]>::to_vec).collect())
    }
}

impl AnchorStore for FileAnchor {
    fn read(&self) -> Result<Vec<Vec<u8>>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(e)),
        };
        file.lock_shared().map_err(|e| self.error(e))?;
        Self::slots(&mut file).map_err(|e| self.error(e))
    }

    fn advance(&self, record: &[u8], at: (u64, u64), rank: &Rank<'_>) -> Result<()> {
        self.with_file(|file| self.advance_in(file, record, at, rank))
    }

    fn rebase(&self, record: &[u8]) -> Result<()> {
        self.with_file(|file| self.rebase_in(file, record))
    }
}

impl FileAnchor {
    /// Runs `f` on the file (opened, or created, the first time), and unlocks it.
    fn with_file(&self, f: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
        let mut open = lock(&self.open);
        // A file deleted or replaced (a sync tool, a restored folder) since it was
        // opened: the path is what the next open reads, so write there.
        #[cfg(unix)]
        if let Some(file) = open.as_ref() {
            use std::os::unix::fs::MetadataExt;
            let same = match (file.metadata(), std::fs::metadata(&self.path)) {
                (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
                _ => false,
            };
            if !same {
                *open = None;
            }
        }
        if open.is_none() {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            *open = Some(options.open(&self.path).map_err(|e| self.error(e))?);
        }
        let file = open.as_mut().unwrap_or_else(|| unreachable!("just opened"));
        let result = f(file);
        let _ = file.unlock();
        if result.is_err() {
            // Opened afresh next time.
            *open = None;
        }
        result
    }
}

impl FileAnchor {
    fn rebase_in(&self, file: &mut File, record: &[u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        file.lock().map_err(|e| self.error(e))?;
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(record))
            .and_then(|()| file.write_all(record))
            .and_then(|()| file.sync_all())
            .map_err(|e| self.error(e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            sync_dir(dir);
        }
        Ok(())
    }

    /// [`AnchorStore::advance`] on the open file, under its lock.
    fn advance_in(
        &self,
        file: &mut File,
        record: &[u8],
        at: (u64, u64),
        rank: &Rank<'_>,
    ) -> Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        file.lock().map_err(|e| self.error(e))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| self.error(e))?;
        let slots = Self::slots(file).map_err(|e| self.error(e))?;
        let ranks: Vec<Option<(u64, u64)>> =
            (0..2).map(|i| slots.get(i).and_then(|s| rank(s))).collect();
        if ranks.iter().flatten().any(|r| *r >= at) {
            return Ok(());
        }
        if !slots.is_empty() && ranks.iter().all(Option::is_none) {
            return Err(Error::Anchor {
                what: format!(
                    "{}: the file holds no valid anchor record of this store; not overwritten",
                    self.path.display()
                ),
                hint: "another store's anchor, or not an anchor: choose another path",
            });
        }
        // Overwrite the older (or invalid, or absent) slot; the other stays whole.
        let slot = match (ranks[0], ranks[1]) {
            (None, _) => 0,
            (Some(_), None) => 1,
            (Some(a), Some(b)) => usize::from(a > b),
        };
        let fresh = slots.len() < 2;
        file.seek(SeekFrom::Start((slot * RECORD_LEN) as u64))
            .and_then(|_| file.write_all(record))
            .map_err(|e| self.error(e))?;
        if fresh {
            // A new anchor file: its first records reach the disk before it counts.
            file.sync_all().map_err(|e| self.error(e))?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                sync_dir(dir);
            }
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Parses an anchor's PostgreSQL URL (its `store` parameter is not needed).
fn pg_anchor_url(text: &str) -> Result<crate::rowstore::postgres::PgUrl> {
    let with_store = if text.contains("store=") {
        text.to_owned()
    } else if text.contains('?') {
        format!("{text}&store=anchors")
    } else {
        format!("{text}?store=anchors")
    };
    crate::rowstore::postgres::PgUrl::parse(&with_store)
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;

    /// One row per store in `sealkv_anchors`.
    struct PgAnchor {
        config: postgres::Config,
        shown: String,
        db_id: [u8; 16],
        client: Mutex<Option<postgres::Client>>,
    }

    pub(super) fn open(url: &str, db_id: &[u8; 16]) -> Result<Box<dyn AnchorStore>> {
        let parsed = pg_anchor_url(url)?;
        // As a store's URL: PGPASSWORD and PGUSER apply, and a dead server is noticed
        // within the default stall timeout.
        let config = crate::rowstore::postgres::config_of(&parsed, &crate::Options::default())?;
        Ok(Box::new(PgAnchor {
            config,
            shown: parsed.to_string(),
            db_id: *db_id,
            client: Mutex::new(None),
        }))
    }

    impl PgAnchor {
        fn run<T: Send>(
            &self,
            f: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error> + Send,
        ) -> Result<T> {
            let mut guard = lock(&self.client);
            let slot: &mut Option<postgres::Client> = &mut guard;
            let config = &self.config;
            let result = crate::rowstore::postgres::off_runtime(|| {
                if slot.as_ref().is_none_or(postgres::Client::is_closed) {
                    let mut client = config.connect(postgres::NoTls)?;
                    client.batch_execute(
                        "CREATE TABLE IF NOT EXISTS sealkv_anchors (\
                           id bytea PRIMARY KEY, epoch bigint NOT NULL, \
                           generation bigint NOT NULL, record bytea NOT NULL)",
                    )?;
                    *slot = Some(client);
                }
                f(slot.as_mut().unwrap_or_else(|| unreachable!("just set")))
            });
            result.map_err(|e| {
                *guard = None;
                Error::Anchor {
                    what: format!("{}: {e}", self.shown),
                    hint: "check that the anchor's server is reachable and the user may \
                           create and write the sealkv_anchors table",
                }
            })
        }
    }

    impl AnchorStore for PgAnchor {
        fn read(&self) -> Result<Vec<Vec<u8>>> {
            let id = self.db_id.to_vec();
            let rows = self
                .run(move |c| c.query("SELECT record FROM sealkv_anchors WHERE id = $1", &[&id]))?;
            Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
        }

        fn advance(&self, record: &[u8], at: (u64, u64), _rank: &Rank<'_>) -> Result<()> {
            let id = self.db_id.to_vec();
            let record = record.to_vec();
            let (epoch, generation) = (at.0 as i64, at.1 as i64);
            self.run(move |c| {
                c.execute(
                    "INSERT INTO sealkv_anchors (id, epoch, generation, record) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE \
                     SET epoch = EXCLUDED.epoch, generation = EXCLUDED.generation, \
                         record = EXCLUDED.record \
                     WHERE (sealkv_anchors.epoch, sealkv_anchors.generation) \
                         < (EXCLUDED.epoch, EXCLUDED.generation)",
                    &[&id, &epoch, &generation, &record],
                )
            })
            .map(drop)
        }

        fn rebase(&self, record: &[u8]) -> Result<()> {
            let id = self.db_id.to_vec();
            let record = record.to_vec();
            let u = |i: usize| i64::from_le_bytes(record[i..i + 8].try_into().unwrap_or_default());
            let (epoch, generation) = (u(32), u(40));
            self.run(move |c| {
                c.execute(
                    "INSERT INTO sealkv_anchors (id, epoch, generation, record) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE \
                     SET epoch = EXCLUDED.epoch, generation = EXCLUDED.generation, \
                         record = EXCLUDED.record",
                    &[&id, &epoch, &generation, &record],
                )
            })
            .map(drop)
        }
    }
}

#[cfg(not(feature = "postgres"))]
mod pg {
    use super::*;

    pub(super) fn open(url: &str, _: &[u8; 16]) -> Result<Box<dyn AnchorStore>> {
        Err(Error::Anchor {
            what: format!(
                "{}: this build of sealkv has no PostgreSQL support",
                pg_anchor_url(url).map_or_else(|_| "a PostgreSQL anchor".into(), |u| u.to_string())
            ),
            hint: "build sealkv-engine with its `postgres` feature",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_open_only_for_their_store_and_key() {
        let k = RecordKey::derive(&[1; 32], &[2; 16]);
        let r = k.record((3, 4));
        assert_eq!(k.open(&r), Some((3, 4)));
        assert_eq!(RecordKey::derive(&[1; 32], &[3; 16]).open(&r), None);
        assert_eq!(RecordKey::derive(&[9; 32], &[2; 16]).open(&r), None);
        for i in 0..r.len() {
            let mut bad = r.clone();
            bad[i] ^= 0x80;
            assert_eq!(k.open(&bad), None, "byte {i}");
        }
    }

    #[test]
    fn locations_round_trip() {
        for text in [
            "keychain:com.example.notes",
            "postgres://u@h/db",
            "/tmp/a.anchor",
        ] {
            let l = AnchorLocation::parse(text).unwrap();
            assert_eq!(AnchorLocation::decode(&l.encode()).unwrap(), l);
            assert_eq!(l.to_string(), text);
        }
        assert!(AnchorLocation::parse("postgres://u:secret@h/db").is_err());
        assert!(matches!(
            AnchorLocation::parse("rel/a.anchor").unwrap(),
            AnchorLocation::File(p) if p.is_absolute()
        ));
    }

    #[test]
    fn a_file_anchor_keeps_the_newer_slot_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let k = RecordKey::derive(&[1; 32], &[2; 16]);
        let a = Anchor::open(AnchorLocation::File(dir.path().join("a")), k.clone()).unwrap();
        assert_eq!(a.read().unwrap(), None);
        a.advance((0, 5), false).unwrap();
        a.advance((0, 7), false).unwrap();
        assert_eq!(a.read().unwrap(), Some((0, 7)));
        // Another handle that lags writes nothing older.
        let b = Anchor::open(AnchorLocation::File(dir.path().join("a")), k.clone()).unwrap();
        b.advance((0, 6), false).unwrap();
        assert_eq!(b.read().unwrap(), Some((0, 7)));
        // A torn slot leaves the other.
        let mut bytes = std::fs::read(dir.path().join("a")).unwrap();
        assert_eq!(bytes.len(), 2 * RECORD_LEN);
        let newer = if k.open(&bytes[..RECORD_LEN]) == Some((0, 7)) {
            0
        } else {
            1
        };
        bytes[newer * RECORD_LEN + 40] ^= 1;
        std::fs::write(dir.path().join("a"), &bytes).unwrap();
        assert_eq!(a.read().unwrap(), Some((0, 5)));
        assert!(a.check(&mut || Ok((0, 4))).is_err());
        a.check(&mut || Ok((0, 5))).unwrap();
        // Another store's file is refused, not overwritten.
        let other = RecordKey::derive(&[1; 32], &[9; 16]);
        let c = Anchor::open(AnchorLocation::File(dir.path().join("a")), other).unwrap();
        assert!(matches!(c.read(), Err(Error::Anchor { .. })));
        assert!(matches!(
            c.advance((0, 99), true),
            Err(Error::Anchor { .. })
        ));
        assert_eq!(a.read().unwrap(), Some((0, 5)));
    }
}
