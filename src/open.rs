//! Opening a store that may not exist yet.

use std::path::Path;

use sealkv_engine::{Error, Location, Options, Result, Secret, Store};

/// Opens the store at `path`, or creates it when it is absent (what the Node and
/// Elixir bindings' `openOrCreate`/`open_or_create` do).
///
/// A file is created when it does not exist or is empty (a create that crashed before
/// writing anything leaves an empty file, and [`Store::create`] takes one). A
/// PostgreSQL store is opened first and
/// created only when the server says it is absent: opening needs no right to create
/// tables (a role with rights on the store's tables alone can run it), and an existing
/// store costs one key derivation, not two. Either way, a create that loses a race
/// with another process's create opens the store that process made.
pub fn open_or_create(path: &Path, secret: Secret, opts: Options) -> Result<Store> {
    if let Location::File(_) = Location::parse(path)? {
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return Store::open(path, secret, opts);
        }
        return match Store::create(path, secret.clone(), opts.clone()) {
            // Another process created it meanwhile (or holds the empty file it is
            // creating the store in): open what it made.
            Err(Error::AlreadyExists(_) | Error::Locked(_)) => Store::open(path, secret, opts),
            other => other,
        };
    }
    match Store::open(path, secret.clone(), opts.clone()) {
        Err(e) if is_absent_store(&e) => {}
        other => return other,
    }
    match Store::create(path, secret.clone(), opts.clone()) {
        Err(e) if lost_create_race(&e) => match Store::open(path, secret, opts) {
            // The other create did not commit after all: the create's error says more.
            Err(again) if is_absent_store(&again) => Err(e),
            other => other,
        },
        other => other,
    }
}

/// Whether `err` is the engine's "no such store" for a PostgreSQL URL.
///
/// The engine has no variant of its own for it: `PgRows::check_store` reports a
/// database without the store's tables as a non-transient [`Error::Server`] whose
/// message says "the database has no sealkv store named NAME". That wording is the only
/// mark, so it is matched here (`postgres.test.mjs`'s openOrCreate tests fail if it
/// changes). A store whose tables are there but unreadable, or half there, is not
/// absent: it gives another error, and openOrCreate reports it rather than creating.
fn is_absent_store(err: &Error) -> bool {
    matches!(err, Error::Server { what, transient: false, .. }
        if what.contains(": the database has no sealkv store named "))
}

/// Whether a create failed because another process created the same store meanwhile.
///
/// The engine maps a duplicate table (SQLSTATE 42P07) to [`Error::AlreadyExists`]; a
/// create racing another one's uncommitted `CREATE TABLE` fails instead on the unique
/// index of `pg_type` (23505, unique violation), which reaches us as an
/// [`Error::Server`] whose message ends with the SQLSTATE. Nothing else in a create can
/// violate a unique constraint: its inserts go into the tables it has just made.
fn lost_create_race(err: &Error) -> bool {
    match err {
        Error::AlreadyExists(_) => true,
        Error::Server { what, .. } => {
            what.ends_with("(SQLSTATE 23505)") || what.ends_with("(SQLSTATE 42P07)")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// openOrCreate's reading of the engine's errors, on the messages PostgreSQL 15 and
    /// the engine give today (postgres.test.mjs checks them against a server).
    #[test]
    fn absent_stores_and_lost_create_races_are_told_apart() {
        let server = |what: &str, transient| Error::Server {
            what: what.into(),
            hint: "",
            transient,
        };
        let shown = "postgres://bot@db:5432/farm?store=auth";
        let absent = format!("{shown}: the database has no sealkv store named auth");
        assert!(is_absent_store(&server(&absent, false)));
        assert!(!is_absent_store(&server(&absent, true)));
        let denied =
            format!("{shown}: permission denied for table sealkv_auth_meta (SQLSTATE 42501)");
        assert!(!is_absent_store(&server(&denied, false)));
        assert!(!is_absent_store(&Error::NotSealkv(shown.into())));

        let pg_type = format!(
            "{shown}: duplicate key value violates unique constraint \"pg_type_typname_nsp_index\" \
             (SQLSTATE 23505)"
        );
        assert!(lost_create_race(&server(&pg_type, false)));
        assert!(lost_create_race(&Error::AlreadyExists(shown.into())));
        let no_create = format!("{shown}: permission denied for schema public (SQLSTATE 42501)");
        assert!(!lost_create_race(&server(&no_create, false)));
    }
}
