//! Bot auth state: Baileys' creds and Signal key families on a sealkv store, and
//! import/export of a folder written by Baileys' `useMultiFileAuthState`.
//!
//! Values are the JSON Baileys stores (with `BufferJSON.replacer`: a Buffer is
//! `{"type":"Buffer","data":"<base64>"}`), kept as text with key order preserved, so an
//! export gives back what Baileys wrote.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value as Json;

use crate::{Batch, Error, Session, Store};

/// The namespace and key under which the creds are stored.
pub const CREDS: &str = "creds";

/// A key family of Baileys' `SignalDataTypeMap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Family {
    /// One-time pre-keys.
    PreKey,
    /// Signal sessions.
    Session,
    /// Group sender keys.
    SenderKey,
    /// Which devices received a group's sender key.
    SenderKeyMemory,
    /// App-state sync keys.
    AppStateSyncKey,
    /// App-state sync versions.
    AppStateSyncVersion,
    /// LID ↔ phone-number mappings.
    LidMapping,
    /// Device lists.
    DeviceList,
    /// Trusted-contact tokens.
    Tctoken,
    /// Identity keys of peers.
    IdentityKey,
}

impl Family {
    /// Every family, in Baileys' declaration order.
    pub const ALL: [Family; 10] = [
        Family::PreKey,
        Family::Session,
        Family::SenderKey,
        Family::SenderKeyMemory,
        Family::AppStateSyncKey,
        Family::AppStateSyncVersion,
        Family::LidMapping,
        Family::DeviceList,
        Family::Tctoken,
        Family::IdentityKey,
    ];

    /// Baileys' name of the family, which is also its sealkv namespace.
    pub fn name(self) -> &'static str {
        match self {
            Family::PreKey => "pre-key",
            Family::Session => "session",
            Family::SenderKey => "sender-key",
            Family::SenderKeyMemory => "sender-key-memory",
            Family::AppStateSyncKey => "app-state-sync-key",
            Family::AppStateSyncVersion => "app-state-sync-version",
            Family::LidMapping => "lid-mapping",
            Family::DeviceList => "device-list",
            Family::Tctoken => "tctoken",
            Family::IdentityKey => "identity-key",
        }
    }

    /// The family with this Baileys name.
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Undoes Baileys' file-name sanitizing of an id, where that is unambiguous.
    fn decode_id(self, id: &str) -> String {
        match self {
            Family::SenderKey => id.replace("--", "::"),
            Family::AppStateSyncKey => id.replace("__", "/"),
            _ => id.to_string(),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Baileys' `fixFileName`: `/` → `__`, `:` → `-`.
fn file_name_for(prefix: &str, id: &str) -> String {
    format!("{prefix}-{}.json", id.replace('/', "__").replace(':', "-"))
}

/// Auth-state changes: per family, id → new JSON value, or `None` to delete.
pub type AuthChanges = BTreeMap<Family, BTreeMap<String, Option<Json>>>;

/// Bot auth state on a sealkv store: one bot per session.
#[derive(Debug, Clone)]
pub struct AuthState {
    session: Session,
}

impl AuthState {
    /// Auth state in the store's default session (families are namespaces of it).
    pub fn new(store: Store) -> Self {
        Self {
            session: store.default_session(),
        }
    }

    /// Auth state in one session of a store, so one file holds many bots.
    pub fn for_session(session: Session) -> Self {
        Self { session }
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        self.session.store()
    }

    /// The session this auth state lives in.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The values found for `ids` in `family`.
    pub fn get<K: AsRef<str>>(
        &self,
        family: Family,
        ids: &[K],
    ) -> Result<BTreeMap<String, Json>, AuthError> {
        self.session
            .get(family.name(), ids)?
            .into_iter()
            .map(|(k, v)| {
                let json = serde_json::from_slice(&v)
                    .map_err(|e| AuthError::Stored(format!("{family}/{k}: {e}")))?;
                Ok((k, json))
            })
            .collect()
    }

    /// Applies every change in one atomic transaction.
    pub fn set(&self, changes: &AuthChanges) -> Result<(), AuthError> {
        let mut batch = Batch::new();
        add_changes(&mut batch, changes)?;
        Ok(self.session.set(&batch)?)
    }

    /// The creds, if saved.
    pub fn creds(&self) -> Result<Option<Json>, AuthError> {
        match self.session.get_one(CREDS, CREDS)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| AuthError::Stored(format!("creds: {e}")))?,
            )),
            None => Ok(None),
        }
    }

    /// Saves the creds (durably, atomically).
    pub fn save_creds(&self, creds: &Json) -> Result<(), AuthError> {
        Ok(self.session.put(CREDS, CREDS, to_text(creds)?)?)
    }

    /// Runs `f` exclusively for `lock_key`; its changes commit together (see
    /// [`Store::transaction`]).
    pub fn transaction<T>(
        &self,
        lock_key: &str,
        f: impl FnOnce(&mut AuthTx<'_, '_>) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        self.session
            .transaction(lock_key, |tx| f(&mut AuthTx { tx }))
    }

    /// True when the store holds any auth state (creds or any family).
    pub fn is_empty(&self) -> Result<bool, AuthError> {
        let namespaces = self.session.namespaces()?;
        Ok(!namespaces
            .iter()
            .any(|n| n == CREDS || Family::from_name(n).is_some()))
    }
}

/// Auth state inside a transaction.
pub struct AuthTx<'t, 's> {
    tx: &'t mut crate::Tx<'s>,
}

impl fmt::Debug for AuthTx<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthTx").finish_non_exhaustive()
    }
}

impl AuthTx<'_, '_> {
    /// Reads values, seeing the transaction's own writes.
    pub fn get<K: AsRef<str>>(
        &self,
        family: Family,
        ids: &[K],
    ) -> Result<BTreeMap<String, Json>, AuthError> {
        self.tx
            .get(family.name(), ids)?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    serde_json::from_slice(&v)
                        .map_err(|e| AuthError::Stored(format!("{family}/{k}: {e}")))?,
                ))
            })
            .collect()
    }

    /// Buffers changes.
    pub fn set(&mut self, changes: &AuthChanges) -> Result<(), AuthError> {
        let mut batch = Batch::new();
        add_changes(&mut batch, changes)?;
        self.tx.set(batch);
        Ok(())
    }
}

fn to_text(value: &Json) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(value).map_err(|e| AuthError::Stored(e.to_string()))
}

fn add_changes(batch: &mut Batch, changes: &AuthChanges) -> Result<(), AuthError> {
    for (family, ids) in changes {
        for (id, value) in ids {
            match value {
                Some(v) => batch.put(family.name(), id, to_text(v)?),
                None => batch.delete(family.name(), id),
            };
        }
    }
    Ok(())
}

/// Errors of the auth layer.
#[derive(Debug)]
#[non_exhaustive]
pub enum AuthError {
    /// The store failed.
    Store(Error),
    /// A file of the folder could not be read or parsed.
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong ("empty file", "unparsable JSON: …").
        reason: String,
    },
    /// The store already holds auth state and `replace` was not given.
    NotEmpty,
    /// The export folder exists and is not empty.
    FolderNotEmpty(PathBuf),
    /// A stored value is not JSON (not written by this layer).
    Stored(String),
    /// Reading or writing the folder failed.
    Io(PathBuf, std::io::Error),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(e) => e.fmt(f),
            Self::BadFile { path, reason } => {
                write!(f, "{}: {reason}; nothing imported", path.display())
            }
            Self::NotEmpty => f.write_str("the store already holds auth state; nothing imported"),
            Self::FolderNotEmpty(p) => write!(f, "{} exists and is not empty", p.display()),
            Self::Stored(e) => write!(f, "stored auth value is not JSON: {e}"),
            Self::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            Self::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for AuthError {
    fn from(e: Error) -> Self {
        Self::Store(e)
    }
}

/// Options of [`import_baileys`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Skip empty or unparsable files (each is listed in the report) instead of stopping.
    pub skip_bad: bool,
    /// Replace auth state the store already holds (in the same transaction).
    pub replace: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Values imported per family name (`creds` included).
    pub imported: BTreeMap<String, usize>,
    /// Files skipped with `skip_bad`, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Files ignored: `*.tmp` leftovers and names that are not auth files.
    pub ignored: Vec<PathBuf>,
}

/// Where a file of the folder goes: (namespace, id).
fn classify(file_name: &str) -> Option<(&'static str, String)> {
    let stem = file_name.strip_suffix(".json")?;
    if stem == CREDS {
        return Some((CREDS, CREDS.to_string()));
    }
    // Longest family prefix first: `sender-key-memory-x` also starts with `sender-key-`.
    let mut families: Vec<(&str, Family)> = Family::ALL.iter().map(|f| (f.name(), *f)).collect();
    families.push(("contacts-tc-token", Family::Tctoken)); // legacy name of tctoken
    families.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    families.into_iter().find_map(|(prefix, family)| {
        let id = stem.strip_prefix(prefix)?.strip_prefix('-')?;
        (!id.is_empty()).then(|| (family.name(), family.decode_id(id)))
    })
}

/// Rewrites every Buffer form older Baileys wrote (`data` as an array of numbers, or
/// `{"buffer":true,"value":…}`) into the canonical `{"type":"Buffer","data":"<base64>"}`.
pub fn canonical_buffers(value: &mut Json) {
    match value {
        Json::Object(map) => {
            let is_buffer =
                map.get("type").and_then(Json::as_str) == Some("Buffer") && map.len() == 2;
            let legacy = map.get("buffer") == Some(&Json::Bool(true))
                && map.len() == 2
                && map.contains_key("value");
            if is_buffer || legacy {
                let data = if is_buffer {
                    map.get("data")
                } else {
                    map.get("value")
                };
                if let Some(bytes) = data.and_then(buffer_bytes) {
                    let mut canonical = serde_json::Map::new();
                    canonical.insert("type".into(), Json::String("Buffer".into()));
                    canonical.insert("data".into(), Json::String(B64.encode(bytes)));
                    *map = canonical;
                    return;
                }
            }
            map.values_mut().for_each(canonical_buffers);
        }
        Json::Array(items) => items.iter_mut().for_each(canonical_buffers),
        _ => {}
    }
}

fn buffer_bytes(data: &Json) -> Option<Vec<u8>> {
    match data {
        Json::String(s) => B64.decode(s).ok(),
        Json::Array(items) => items
            .iter()
            .map(|n| n.as_u64().filter(|n| *n <= 255).map(|n| n as u8))
            .collect(),
        _ => None,
    }
}

/// Imports a folder written by Baileys' `useMultiFileAuthState`, in one transaction:
/// all or nothing.
pub fn import_baileys(
    state: &AuthState,
    dir: &Path,
    opts: ImportOptions,
) -> Result<ImportReport, AuthError> {
    let mut report = ImportReport::default();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| AuthError::Io(dir.to_path_buf(), e))?
        .map(|e| {
            e.map(|e| e.path())
                .map_err(|e| AuthError::Io(dir.to_path_buf(), e))
        })
        .collect::<Result<_, _>>()?;
    entries.sort();
    let mut batch = Batch::new();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let target = if path.is_file() {
            classify(&name)
        } else {
            None
        };
        let Some((namespace, id)) = target else {
            report.ignored.push(path);
            continue;
        };
        let text = std::fs::read(&path).map_err(|e| AuthError::Io(path.clone(), e))?;
        let parsed = if text.iter().all(u8::is_ascii_whitespace) {
            Err("empty file".to_string())
        } else {
            serde_json::from_slice::<Json>(&text).map_err(|e| format!("unparsable JSON: {e}"))
        };
        let mut value = match parsed {
            Ok(v) => v,
            Err(reason) if opts.skip_bad => {
                report.skipped.push((path, reason));
                continue;
            }
            Err(reason) => return Err(AuthError::BadFile { path, reason }),
        };
        canonical_buffers(&mut value);
        batch.put(namespace, &id, to_text(&value)?);
        *report.imported.entry(namespace.to_string()).or_default() += 1;
    }
    if !state.is_empty()? {
        if !opts.replace {
            return Err(AuthError::NotEmpty);
        }
        let mut replaced = Batch::new();
        for ns in std::iter::once(CREDS).chain(Family::ALL.iter().map(|f| f.name())) {
            for key in state.session.list(ns)? {
                replaced.delete(ns, &key);
            }
        }
        replaced.extend(batch);
        batch = replaced;
    }
    state.session.set(&batch)?;
    Ok(report)
}

/// Writes the auth state as a folder Baileys' `useMultiFileAuthState` loads: each file
/// through a temporary file, fsync and rename. `dir` must be absent or empty.
/// Returns the number of files written.
pub fn export_baileys(state: &AuthState, dir: &Path) -> Result<usize, AuthError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| AuthError::Io(p, e)
    };
    if dir.exists() {
        if std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
            return Err(AuthError::FolderNotEmpty(dir.to_path_buf()));
        }
    } else {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut written = 0;
    if let Some(creds) = state.session.get(CREDS, &[CREDS])?.get(CREDS) {
        write_atomic(&dir.join("creds.json"), creds)?;
        written += 1;
    }
    for family in Family::ALL {
        let ids = state.session.list(family.name())?;
        for (id, value) in state.session.get(family.name(), &ids)? {
            write_atomic(&dir.join(file_name_for(family.name(), &id)), &value)?;
            written += 1;
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(written)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        AuthError::Io(path.to_path_buf(), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_classify_by_longest_prefix_and_decode_per_family() {
        let cases = [
            ("creds.json", Some(("creds", "creds"))),
            (
                "sender-key-memory-123@g.us.json",
                Some(("sender-key-memory", "123@g.us")),
            ),
            (
                "sender-key-123@g.us--4_1--0.json",
                Some(("sender-key", "123@g.us::4_1::0")),
            ),
            (
                "app-state-sync-key-AAAAAK__o.json",
                Some(("app-state-sync-key", "AAAAAK/o")),
            ),
            ("tctoken-__index.json", Some(("tctoken", "__index"))),
            (
                "contacts-tc-token-123@lid.json",
                Some(("tctoken", "123@lid")),
            ),
            ("session-1-2-3.0.json", Some(("session", "1-2-3.0"))),
            ("pre-key-1.json.tmp", None),
            ("notes.txt", None),
            ("pre-key-.json", None),
        ];
        for (name, want) in cases {
            let got = classify(name);
            assert_eq!(got.as_ref().map(|(n, i)| (*n, i.as_str())), want, "{name}");
        }
    }

    #[test]
    fn old_buffer_forms_become_canonical() {
        let mut v: Json = serde_json::json!({
            "a": {"type": "Buffer", "data": [1, 2, 3]},
            "b": {"buffer": true, "value": "AQID"},
            "c": [{"type": "Buffer", "data": "AQID"}],
            "d": {"type": "Buffer", "data": [1, 300]},
        });
        canonical_buffers(&mut v);
        let want = serde_json::json!({"type": "Buffer", "data": "AQID"});
        assert_eq!(v["a"], want);
        assert_eq!(v["b"], want);
        assert_eq!(v["c"][0], want);
        assert_eq!(
            v["d"]["data"],
            serde_json::json!([1, 300]),
            "not bytes: left alone"
        );
    }
}
