//! The PostgreSQL engine: a store's rows in four tables of one database.
//!
//! A store named `NAME` (the URL's `?store=NAME`) is four tables, every column `bytea`:
//!
//! | table                | rows                                              |
//! |----------------------|---------------------------------------------------|
//! | `sealkv_NAME_data`   | `(k, v)`: tag of namespace ‖ tag of key, envelope |
//! | `sealkv_NAME_meta`   | `(k, v)`: meta record name, record                |
//! | `sealkv_NAME_expiry` | `(k)`: bucket end ‖ row key                       |
//! | `sealkv_NAME_locks`  | `(k)`: keyed hash of a transaction's lock key     |
//!
//! `bytea` compares like redb's byte keys (bytewise, shorter first on a tie), so key
//! ranges scan in the same order on both engines.
//!
//! A write transaction begins by locking the keyring record (`SELECT … FOR UPDATE`), so
//! commits to one store, from any process on any host, run one at a time as they do on
//! a file; the engine's shared-mode check that nobody changed the keyring runs under
//! that lock. Puts and deletes are buffered in the transaction and sent as one `unnest`
//! statement per table and kind when the transaction next reads a range or commits.
//! Lock keys are rows of the locks table held `FOR UPDATE` by a transaction kept open
//! on a connection of their own for as long as the caller's transaction runs.
//! `docs/POSTGRES.md` lists every statement and why.

use std::fmt;

use crate::error::{Error, Result};

/// The URL schemes that name a store in PostgreSQL.
const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// True when `address` is a PostgreSQL URL rather than a file path.
pub(crate) fn is_url(address: &str) -> bool {
    SCHEMES.iter().any(|s| address.starts_with(s))
}

/// A PostgreSQL store address: `postgres://user@host:port/dbname?store=NAME`.
///
/// A password in the URL is accepted but kept out of every message and `Debug`
/// output; prefer the `PGPASSWORD` environment variable (command lines are visible to
/// other users of the machine).
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The connection URL without the `store` parameter (may hold a password).
    connect: String,
    /// The URL as shown: no password.
    shown: String,
    /// The store's name: `[a-z_][a-z0-9_]*`, at most 40 bytes.
    store: String,
    /// The URL's `sync_replicas=N`: synchronous standbys a commit must wait for.
    sync_replicas: u32,
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

fn bad_url(what: String) -> Error {
    Error::Server {
        what,
        hint: "write it as postgres://user@host:port/dbname?store=NAME",
        transient: false,
    }
}

impl PgUrl {
    /// Parses a store URL. The `store` parameter is required; the other parameters
    /// are rust-postgres' (`host=/run/postgresql` for a Unix socket, `sslmode`, …).
    pub fn parse(url: &str) -> Result<Self> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut store = None;
        let mut sync_replicas = 0;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("store", name)) => store = Some(name.to_string()),
                Some(("sync_replicas", n)) => {
                    sync_replicas = n.parse().ok().filter(|n| *n <= 64).ok_or_else(|| {
                        bad_url(format!(
                            "sync_replicas={n:?} is not a number of standbys from 0 to 64"
                        ))
                    })?;
                }
                _ => rest.push(pair),
            }
        }
        let store = store.ok_or_else(|| {
            bad_url("the URL names no store (its ?store=NAME parameter is missing)".into())
        })?;
        let valid = !store.is_empty()
            && store.len() <= 40
            && store.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && store
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(bad_url(format!(
                "store name {store:?} is not 1 to 40 of a-z, 0-9 and _ (not starting with a digit)"
            )));
        }
        let connect = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        // Shown without the password: `scheme://user:password@host` → `scheme://user@host`.
        // The credentials end at the first `@` after the scheme, as rust-postgres reads
        // them (a password may hold a `/`).
        let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
        let after = &base[scheme_end..];
        let mut shown = base[..scheme_end].to_string();
        match after.find('@') {
            Some(at) => {
                let credentials = &after[..at];
                let user = credentials.split_once(':').map_or(credentials, |(u, _)| u);
                shown.push_str(user);
                shown.push_str(&after[at..]);
            }
            None => shown.push_str(after),
        }
        shown.push_str(&format!("?store={store}"));
        if sync_replicas > 0 {
            shown.push_str(&format!("&sync_replicas={sync_replicas}"));
        }
        for pair in &rest {
            if !pair.starts_with("password=") {
                shown.push('&');
                shown.push_str(pair);
            }
        }
        Ok(Self {
            connect,
            shown,
            store,
            sync_replicas,
        })
    }

    /// True when the URL holds a password (in its credentials or as `password=`).
    pub(crate) fn has_password(&self) -> bool {
        self.connect != self.shown_without_store()
    }

    /// The shown URL without the parameters that `connect` lacks.
    fn shown_without_store(&self) -> String {
        let mut shown = self.shown.clone();
        let cut = format!("?store={}", self.store);
        if let Some(i) = shown.find(&cut) {
            let rest = shown[i + cut.len()..].to_string();
            shown.truncate(i);
            let rest: Vec<&str> = rest
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("sync_replicas="))
                .collect();
            if !rest.is_empty() {
                shown.push('?');
                shown.push_str(&rest.join("&"));
            }
        }
        shown
    }

    /// The store's name.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// Synchronous standbys the URL asks every commit to wait for (`sync_replicas=N`).
    pub fn sync_replicas(&self) -> u32 {
        self.sync_replicas
    }
}

#[cfg(feature = "postgres")]
mod engine;
#[cfg(feature = "postgres")]
pub(crate) use engine::{PgRows, config_of, off_runtime};

/// Without the `postgres` feature, every PostgreSQL address is refused.
#[cfg(not(feature = "postgres"))]
pub(crate) enum PgRows {}

#[cfg(not(feature = "postgres"))]
fn not_built(url: &PgUrl) -> Error {
    Error::Server {
        what: format!("{url}: this build of sealkv has no PostgreSQL support"),
        hint: "build sealkv-engine with its `postgres` feature",
        transient: false,
    }
}

#[cfg(not(feature = "postgres"))]
impl PgRows {
    pub(crate) fn create(
        url: &PgUrl,
        _: &crate::Options,
        _: &mut dyn FnMut(&mut dyn super::RowWrite) -> Result<()>,
    ) -> Result<Self> {
        Err(not_built(url))
    }
    pub(crate) fn open(url: &PgUrl, _: &crate::Options, _: bool) -> Result<Self> {
        Err(not_built(url))
    }
    pub(crate) fn set_name_key(&self, _: &sealkv_crypto::NameKey) {
        match *self {}
    }
}

#[cfg(not(feature = "postgres"))]
impl super::RowStore for PgRows {
    fn view(&self) -> Result<super::View> {
        match *self {}
    }
    fn write(
        &self,
        _: &mut dyn FnMut(&mut dyn super::RowWrite) -> Result<()>,
        _: &mut bool,
    ) -> Result<()> {
        match *self {}
    }
    fn recover(&self) -> Result<()> {
        match *self {}
    }
    fn poison_on_failure(&self) -> bool {
        match *self {}
    }
    fn is_read_only(&self) -> bool {
        match *self {}
    }
    fn lock(
        &self,
        _: Option<&str>,
        _: &str,
        _: std::time::Duration,
    ) -> Result<Option<super::LockGuard<'_>>> {
        match *self {}
    }
    fn size(&self) -> u64 {
        match *self {}
    }
    fn compact(&self) -> Result<()> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_hide_passwords() {
        let u = PgUrl::parse("postgres://bot:ab/cd@db:5432/farm?store=x").unwrap();
        assert_eq!(u.to_string(), "postgres://bot@db:5432/farm?store=x");
        assert!(!format!("{u:?}").contains("ab/cd"));
        let u = PgUrl::parse("postgres://bot:s3cret@db.example:5433/farm?store=auth_1").unwrap();
        assert_eq!(u.store(), "auth_1");
        assert_eq!(
            u.to_string(),
            "postgres://bot@db.example:5433/farm?store=auth_1"
        );
        assert!(!format!("{u:?}").contains("s3cret"));
        assert_eq!(u.connect, "postgres://bot:s3cret@db.example:5433/farm");

        let u =
            PgUrl::parse("postgresql://bot@/farm?host=/run/postgresql&store=x&password=p").unwrap();
        assert_eq!(
            u.connect,
            "postgresql://bot@/farm?host=/run/postgresql&password=p"
        );
        assert_eq!(
            u.to_string(),
            "postgresql://bot@/farm?store=x&host=/run/postgresql"
        );

        let u = PgUrl::parse(
            "postgres://bot@a:1,b:2/db?sync_replicas=1&store=x&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(u.sync_replicas(), 1);
        assert_eq!(
            u.connect,
            "postgres://bot@a:1,b:2/db?target_session_attrs=read-write"
        );
        assert_eq!(
            u.to_string(),
            "postgres://bot@a:1,b:2/db?store=x&sync_replicas=1&target_session_attrs=read-write"
        );
        for bad in ["two", "-1", "65", ""] {
            let e =
                PgUrl::parse(&format!("postgres://h/db?store=x&sync_replicas={bad}")).unwrap_err();
            assert!(e.to_string().contains("sync_replicas"), "{bad}: {e}");
        }

        for bad in [
            "postgres://bot@h/db",
            "postgres://bot@h/db?store=",
            "postgres://bot@h/db?store=Auth",
            "postgres://bot@h/db?store=1x",
            "postgres://bot@h/db?store=a;drop",
        ] {
            let e = PgUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("store"), "{bad}: {e}");
        }
        assert!(is_url("postgres://x") && is_url("postgresql://x") && !is_url("/tmp/a"));
    }
}
