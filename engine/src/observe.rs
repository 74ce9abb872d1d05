//! Metrics and traces: what an operator can see of a store at work.
//!
//! Metrics go through the [`metrics`] facade (nothing is recorded, at the cost of a
//! load and a branch, until the application installs a recorder, such as
//! `metrics-exporter-prometheus`'s); traces through [`tracing`] spans and events.
//! Neither ever carries a name, key, value, session id, path or URL: the only labels
//! are from fixed sets (the engine, an operation, an outcome), and fields are sizes,
//! counts, timings and outcomes. A store's names are secrets (bot session ids are phone
//! numbers); observability must not become the leak the file format prevents.
//!
//! [`describe`] registers the help text of every metric with the installed recorder.

use std::time::Duration;

/// Commits, by engine and outcome (`ok`, `failed`, `outcome_unknown`).
pub const COMMITS: &str = "sealkv_commits_total";
/// Requests (callers' batches and transactions) per commit: the group size.
pub const COMMIT_GROUP_SIZE: &str = "sealkv_commit_group_size";
/// Time a request waited for its group's commit to begin.
pub const COMMIT_WAIT: &str = "sealkv_commit_wait_seconds";
/// Time a commit spent writing its rows (applying the group, before the commit proper).
pub const COMMIT_WRITE: &str = "sealkv_commit_write_seconds";
/// Time a commit spent beyond writing its rows: redb's commit with its fsync; on
/// PostgreSQL the round trips (the begin, which waits for the store's commit lock
/// behind other hosts, sending the buffered rows, and `COMMIT` with the WAL flush and
/// the synchronous standbys' acknowledgement).
pub const COMMIT_SYNC: &str = "sealkv_commit_sync_seconds";
/// Attempts of a commit after its first failed, by engine.
pub const COMMIT_RETRIES: &str = "sealkv_commit_retries_total";
/// Time spent waiting to take a lock key.
pub const LOCK_WAIT: &str = "sealkv_lock_wait_seconds";
/// Transactions that gave up waiting for a lock key (`LockTimeout`) or lost it before
/// committing (`LockLost`), by outcome.
pub const LOCK_FAILURES: &str = "sealkv_lock_failures_total";
/// Point and multi-key reads, by operation (`get`, `list`, `count`, `namespaces`).
pub const READS: &str = "sealkv_reads_total";
/// Values opened (decrypted and authenticated).
pub const VALUES_OPENED: &str = "sealkv_values_opened_total";
/// Values or records that failed authentication: tampered, or sealed for another
/// store. Any of these is worth an alert.
pub const AUTH_FAILURES: &str = "sealkv_auth_failures_total";
/// Opens refused for a wrong key or passphrase.
pub const WRONG_KEY: &str = "sealkv_wrong_key_total";
/// Data key rotations.
pub const ROTATIONS: &str = "sealkv_rotations_total";
/// Values re-sealed under the primary key by re-encryption.
pub const REENCRYPTED: &str = "sealkv_reencrypted_values_total";
/// Data keys destroyed.
pub const KEYS_DESTROYED: &str = "sealkv_keys_destroyed_total";
/// TTL sweeps run.
pub const SWEEPS: &str = "sealkv_sweeps_total";
/// Expired values deleted by [`crate::Store::sweep`] (not the few each commit sheds on
/// its way).
pub const EXPIRED: &str = "sealkv_expired_values_total";
/// Bytes the store takes (the file, or the server's tables), as last measured.
pub const STORE_BYTES: &str = "sealkv_store_size_bytes";
/// Connections made to PostgreSQL (each new pooled connection: a reconnect after a
/// failure shows here).
pub const PG_CONNECTS: &str = "sealkv_pg_connects_total";
/// Waits while a server failed over (or was unreachable), by outcome (`recovered`,
/// `gave_up`).
pub const FAILOVER_WAITS: &str = "sealkv_failover_waits_total";
/// Time calls spent waiting for a server to come back.
pub const FAILOVER_WAIT: &str = "sealkv_failover_wait_seconds";

/// Anchor writes that failed (the anchor lags the store until one succeeds).
pub const ANCHOR_FAILURES: &str = "sealkv_anchor_failures_total";

/// Every metric this crate records: name, kind and help text.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        ANCHOR_FAILURES,
        Kind::Counter,
        "Anchor writes that failed (the anchor lags the store until one succeeds).",
    ),
    (
        COMMITS,
        Kind::Counter,
        "Commits, by engine and outcome (ok, failed, outcome_unknown).",
    ),
    (
        COMMIT_GROUP_SIZE,
        Kind::Histogram,
        "Requests per commit (group commit).",
    ),
    (
        COMMIT_WAIT,
        Kind::Histogram,
        "Time a request waited for its group's commit to begin.",
    ),
    (
        COMMIT_WRITE,
        Kind::Histogram,
        "Time a commit spent writing its rows.",
    ),
    (
        COMMIT_SYNC,
        Kind::Histogram,
        "Time a commit spent beyond writing its rows (fsync; on PostgreSQL its round trips, commit lock and COMMIT).",
    ),
    (
        COMMIT_RETRIES,
        Kind::Counter,
        "Commit attempts after a failed one.",
    ),
    (LOCK_WAIT, Kind::Histogram, "Time spent taking a lock key."),
    (
        LOCK_FAILURES,
        Kind::Counter,
        "Lock keys not taken in time (timeout) or lost before the commit (lost).",
    ),
    (READS, Kind::Counter, "Reads, by operation."),
    (
        VALUES_OPENED,
        Kind::Counter,
        "Values decrypted and authenticated.",
    ),
    (
        AUTH_FAILURES,
        Kind::Counter,
        "Values or records that failed authentication (tampered, or another store's).",
    ),
    (
        WRONG_KEY,
        Kind::Counter,
        "Opens refused for a wrong key or passphrase.",
    ),
    (ROTATIONS, Kind::Counter, "Data key rotations."),
    (
        REENCRYPTED,
        Kind::Counter,
        "Values re-sealed under the primary key.",
    ),
    (KEYS_DESTROYED, Kind::Counter, "Data keys destroyed."),
    (SWEEPS, Kind::Counter, "TTL sweeps run."),
    (
        EXPIRED,
        Kind::Counter,
        "Expired values deleted by sweeps (not those commits shed).",
    ),
    (
        STORE_BYTES,
        Kind::Gauge,
        "Bytes the store takes, as last measured.",
    ),
    (
        PG_CONNECTS,
        Kind::Counter,
        "Connections made to PostgreSQL.",
    ),
    (
        FAILOVER_WAITS,
        Kind::Counter,
        "Waits for an unreachable or failing-over server, by outcome.",
    ),
    (
        FAILOVER_WAIT,
        Kind::Histogram,
        "Time calls spent waiting for a server to come back.",
    ),
];

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations (seconds, sizes).
    Histogram,
}

/// Registers the help text and unit of every metric with the installed recorder (call
/// it once after installing one; without it, metrics still work, without help text).
pub fn describe() {
    for &(name, kind, help) in METRICS {
        let unit = if name.ends_with("_seconds") {
            Some(metrics::Unit::Seconds)
        } else if name.ends_with("_bytes") {
            Some(metrics::Unit::Bytes)
        } else {
            None
        };
        match (kind, unit) {
            (Kind::Counter, _) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(name, u, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(name, u, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

/// Handles of the metrics on the hot paths (reads, commits), registered once per store
/// handle with the recorder installed then: an increment is then an atomic add, not a
/// registry lookup. Install a recorder before opening stores (a store opened before
/// records these into the no-op recorder; the other metrics are looked up at each use).
pub(crate) struct Meters {
    pub(crate) get: metrics::Counter,
    pub(crate) list: metrics::Counter,
    pub(crate) count: metrics::Counter,
    pub(crate) namespaces: metrics::Counter,
    pub(crate) opened: metrics::Counter,
    pub(crate) commits_ok: metrics::Counter,
    pub(crate) commits_failed: metrics::Counter,
    pub(crate) commits_unknown: metrics::Counter,
    pub(crate) group: metrics::Histogram,
    pub(crate) wait: metrics::Histogram,
    pub(crate) write: metrics::Histogram,
    pub(crate) sync: metrics::Histogram,
    pub(crate) lock_wait: metrics::Histogram,
}

impl Meters {
    pub(crate) fn new(engine: &'static str) -> Self {
        Self {
            get: metrics::counter!(READS, "operation" => "get"),
            list: metrics::counter!(READS, "operation" => "list"),
            count: metrics::counter!(READS, "operation" => "count"),
            namespaces: metrics::counter!(READS, "operation" => "namespaces"),
            opened: metrics::counter!(VALUES_OPENED),
            commits_ok: metrics::counter!(COMMITS, "engine" => engine, "outcome" => "ok"),
            commits_failed: metrics::counter!(COMMITS, "engine" => engine, "outcome" => "failed"),
            commits_unknown: metrics::counter!(
                COMMITS, "engine" => engine, "outcome" => "outcome_unknown"
            ),
            group: metrics::histogram!(COMMIT_GROUP_SIZE),
            wait: metrics::histogram!(COMMIT_WAIT),
            write: metrics::histogram!(COMMIT_WRITE),
            sync: metrics::histogram!(COMMIT_SYNC),
            lock_wait: metrics::histogram!(LOCK_WAIT),
        }
    }
}

pub(crate) fn count(name: &'static str, n: u64) {
    metrics::counter!(name).increment(n);
}

pub(crate) fn count_by(name: &'static str, label: &'static str, value: &'static str, n: u64) {
    metrics::counter!(name, label => value).increment(n);
}

pub(crate) fn seconds(name: &'static str, d: Duration) {
    metrics::histogram!(name).record(d.as_secs_f64());
}

pub(crate) fn gauge(name: &'static str, v: f64) {
    metrics::gauge!(name).set(v);
}
