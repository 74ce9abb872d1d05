//! A store's health, for an operator's probe: `sealkv health` (a container
//! `HEALTHCHECK`), or an application's own `/health`.

use std::time::Duration;

use crate::guards::lock;
use crate::meta::META_KEYRING;
use crate::rotate::META_CURSOR;
use crate::rowstore::Table;
use crate::store::Store;

/// How long a lock key may be held before [`Store::health`] reports it.
pub const LOCK_HELD_TOO_LONG: Duration = Duration::from_secs(60);

/// What [`Store::health`] found. Holds no name, key, value or session id.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Health {
    /// The engine: `file` or `postgres`.
    pub engine: &'static str,
    /// Why the engine could not be read just now (`None`: it could).
    pub unreachable: Option<String>,
    /// The last commit this handle made, if any.
    pub last_commit: Option<LastCommit>,
    /// A commit failed for good: the store refuses writes until it is reopened.
    pub poisoned: bool,
    /// The primary data key is older than `Options::rotate_after`.
    pub rotation_due: bool,
    /// A re-encryption pass stopped before its end (resume it with `reencrypt`).
    pub reencrypt_pending: bool,
    /// Lock keys this handle has held for longer than the threshold asked for.
    pub locks_held_too_long: usize,
    /// That threshold.
    pub lock_threshold: Duration,
    /// The anchor's last write failed: it lags the store, which widens the window of
    /// rollbacks it would miss, until a write succeeds.
    pub anchor_lagging: bool,
}

/// The outcome and age of a handle's last commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastCommit {
    /// It succeeded.
    pub ok: bool,
    /// Time since it ended.
    pub age: Duration,
}

impl Health {
    /// What is wrong, one line each; empty when healthy. A rotation that is due or a
    /// pending re-encryption is reported by [`Health::notes`], not here: the store
    /// works.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = &self.unreachable {
            out.push(format!("the {} engine cannot be read: {why}", self.engine));
        }
        if self.poisoned {
            out.push(
                "a commit failed for good: writes are refused until the store is reopened".into(),
            );
        }
        if let Some(LastCommit { ok: false, age }) = self.last_commit {
            out.push(format!("the last commit failed, {} s ago", age.as_secs()));
        }
        if self.anchor_lagging {
            out.push(
                "the anchor could not be written: it lags the store until a write succeeds".into(),
            );
        }
        if self.locks_held_too_long > 0 {
            out.push(format!(
                "{} lock key(s) held for over {} s",
                self.locks_held_too_long,
                self.lock_threshold.as_secs()
            ));
        }
        out
    }

    /// Things an operator may want to act on that do not make the store unhealthy.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.rotation_due {
            out.push("the primary data key is due for rotation (`sealkv rotate`)".into());
        }
        if self.reencrypt_pending {
            out.push("a re-encryption pass is unfinished (`sealkv rotate` resumes it)".into());
        }
        out
    }

    /// True when [`Health::problems`] is empty.
    pub fn is_healthy(&self) -> bool {
        self.problems().is_empty()
    }
}

impl Store {
    /// Checks the store as an operator's probe would: reads the engine (on PostgreSQL,
    /// a round trip to the server), and reports the last commit's outcome and age,
    /// poisoning, a rotation due, a pending re-encryption, and lock keys held for
    /// longer than [`LOCK_HELD_TOO_LONG`]. Never fails: an unreachable engine is one of
    /// the things it reports.
    pub fn health(&self) -> Health {
        self.health_with(LOCK_HELD_TOO_LONG)
    }

    /// [`Store::health`] with another threshold for lock keys held too long.
    pub fn health_with(&self, lock_threshold: Duration) -> Health {
        let engine = self.rows().engine();
        let read = self.rows().view().and_then(|view| {
            view.get(Table::Meta, META_KEYRING.as_bytes())?;
            Ok(view.get(Table::Meta, META_CURSOR.as_bytes())?.is_some())
        });
        let (unreachable, reencrypt_pending) = match read {
            Ok(pending) => (None, pending),
            Err(e) => (Some(e.to_string()), false),
        };
        Health {
            engine,
            unreachable,
            last_commit: lock(&self.inner.last_commit).map(|(at, ok)| LastCommit {
                ok,
                age: at.elapsed(),
            }),
            poisoned: self.is_poisoned(),
            rotation_due: self.rotation_due(),
            reencrypt_pending,
            locks_held_too_long: self
                .inner
                .locks
                .ages()
                .into_iter()
                .filter(|age| *age > lock_threshold)
                .count(),
            lock_threshold,
            anchor_lagging: self.anchor_lagging(),
        }
    }
}
