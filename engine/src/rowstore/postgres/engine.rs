//! The PostgreSQL row store proper (feature `postgres`). See the parent module for the
//! schema and `docs/POSTGRES.md` for the statements.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, NoTls, SimpleQueryMessage};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use sealkv_crypto::NameKey;

use super::PgUrl;
use crate::error::{Error, Result};
use crate::guards::lock;
use crate::meta::META_KEYRING;
use crate::options::Options;
use crate::outcome::META_COMMITS;
use crate::rowstore::{Found, LockGuard, Range, RowRead, RowStore, RowWrite, Table, View, Visit};

type Manager = PostgresConnectionManager<NoTls>;

/// rust-postgres' synchronous client drives each connection with a tokio runtime of its
/// own (`block_on`), which tokio refuses on a thread that is already running one: an
/// async application (whatsapp-rust's client, any tokio service) calling the store
/// from a task would panic. Called from such a thread, `f` runs on a scoped thread of
/// its own instead (tens of microseconds, next to a round trip to the server).
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A pooled connection whose return to the pool happens off any async runtime (a
/// broken one is closed then, which blocks).
struct Conn(Option<PooledConnection<Manager>>);

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0
            .as_deref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

/// A connection pool that closes its connections off any async runtime when dropped.
struct OffPool(Option<Pool<Manager>>);

impl std::ops::Deref for OffPool {
    type Target = Pool<Manager>;
    fn deref(&self) -> &Pool<Manager> {
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for OffPool {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            off_runtime(move || drop(pool));
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            off_runtime(move || drop(conn));
        }
    }
}

/// Rows fetched per round trip of a scan.
const PAGE: i64 = 512;
/// Connections for reads and commits (commits are group-committed: one at a time).
const POOL: u32 = 8;
/// Connections that hold lock keys, one per transaction in progress.
const LOCK_POOL: u32 = 64;

/// The store's table names, quoted.
struct Names {
    data: String,
    meta: String,
    expiry: String,
    locks: String,
    /// Unquoted, for catalog lookups.
    plain: [String; 4],
}

impl Names {
    fn new(store: &str) -> Self {
        let plain = [
            format!("sealkv_{store}_data"),
            format!("sealkv_{store}_meta"),
            format!("sealkv_{store}_expiry"),
            format!("sealkv_{store}_locks"),
        ];
        let q = |s: &str| format!("\"{s}\"");
        Self {
            data: q(&plain[0]),
            meta: q(&plain[1]),
            expiry: q(&plain[2]),
            locks: q(&plain[3]),
            plain,
        }
    }

    fn of(&self, table: Table) -> &str {
        match table {
            Table::Data => &self.data,
            Table::Meta => &self.meta,
            Table::Expiry => &self.expiry,
        }
    }
}

/// Turns a client error into a one-line [`Error::Server`] naming the store.
fn server_error(shown: &str, e: &postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let class = &code.code()[..2];
        let (hint, transient) = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            (
                "check the URL's user name and the password in PGPASSWORD",
                false,
            )
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            (
                "create the database first, or fix the URL's database name",
                false,
            )
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            ("a conflict with another transaction; it is retried", true)
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            ("grant the user rights on the store's tables", false)
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            // A standby (a failover under way: it is retried until one is promoted).
            (
                "the server is read-only: a standby, or a failover under way?",
                true,
            )
        } else if matches!(class, "08" | "53" | "57" | "58") {
            (
                "the server dropped or refused the connection; see its log",
                true,
            )
        } else {
            ("see the server's log", false)
        };
        return Error::Server {
            what: format!("{shown}: {} (SQLSTATE {})", db.message(), code.code()),
            hint,
            transient,
        };
    }
    // The client's message ("error connecting to server") hides its cause.
    let cause = std::error::Error::source(e)
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    Error::Server {
        what: format!("{shown}: cannot reach the server or lost it: {e}{cause}"),
        hint: "is PostgreSQL running, and are the URL's host and port right?",
        transient: true,
    }
}

/// Sets every pooled connection up, in one round trip: commits wait for the WAL
/// flush; a read-only store cannot write even by mistake; the server notices a dead
/// client within about the stall timeout (TCP keepalives and user timeout); and on
/// the connections that commit, a transaction whose client went silent mid-commit is
/// ended after the stall timeout, freeing the store's commit lock for other hosts.
/// (Lock-key connections are idle in their transaction by design, for as long as the
/// caller's closure runs: there the TCP settings bound a dead host.)
#[derive(Debug)]
struct Setup {
    read_only: bool,
    stall: Duration,
    /// Set `idle_in_transaction_session_timeout` to the stall timeout.
    end_stalled: bool,
}

impl r2d2::CustomizeConnection<Client, postgres::Error> for Setup {
    fn on_acquire(&self, conn: &mut Client) -> std::result::Result<(), postgres::Error> {
        crate::observe::count(crate::observe::PG_CONNECTS, 1);
        tracing::debug!(target: "sealkv::postgres", "new connection");
        let (idle, interval, user) = tcp_timeouts(self.stall);
        let mut setup = format!(
            "SELECT set_config('synchronous_commit', CASE current_setting('synchronous_commit') \
             WHEN 'remote_apply' THEN 'remote_apply' ELSE 'on' END, false); \
             SET tcp_keepalives_idle = {}; \
             SET tcp_keepalives_interval = {}; SET tcp_keepalives_count = {KEEPALIVE_PROBES}; \
             SET tcp_user_timeout = {};",
            idle.as_secs(),
            interval.as_secs(),
            user.as_millis(),
        );
        if self.end_stalled {
            setup.push_str(&format!(
                " SET idle_in_transaction_session_timeout = {};",
                self.stall.as_millis().clamp(1, i32::MAX as u128)
            ));
        }
        if self.read_only {
            setup.push_str(" SET default_transaction_read_only TO on;");
        }
        conn.batch_execute(&setup)
    }
}

/// The synchronous standbys asked for: the URL's `sync_replicas` or the option's,
/// whichever is more.
fn sync_replicas(url: &PgUrl, opts: &Options) -> u32 {
    url.sync_replicas().max(opts.sync_replicas)
}

/// How many synchronous standbys a commit waits for under `synchronous_standby_names`
/// (`FIRST n (…)`, `ANY n (…)`, `n (…)`, or a plain list, which is `FIRST 1`).
fn sync_standbys(setting: &str) -> u32 {
    let s = setting.trim();
    if s.is_empty() {
        return 0;
    }
    let mut words = s.splitn(2, char::is_whitespace);
    let first = words.next().unwrap_or("");
    let rest = if first.eq_ignore_ascii_case("FIRST") || first.eq_ignore_ascii_case("ANY") {
        words.next().unwrap_or("").trim_start()
    } else {
        s
    };
    match rest.split_once('(') {
        Some((n, _)) if !n.trim().is_empty() => n.trim().parse().unwrap_or(1),
        _ => 1,
    }
}

/// At open and create: refuses a server (on `client`, a connection of its own) that
/// would not wait for `wanted` synchronous standbys. The pool's connections set
/// `synchronous_commit` to `on` themselves (unless the server asks for `remote_apply`),
/// so only the standbys count here.
fn replication_checked(client: &mut Client, shown: &str, wanted: u32) -> Result<()> {
    if wanted == 0 {
        return Ok(());
    }
    let row = client
        .query_one(
            "SELECT current_setting('synchronous_standby_names'), \
             current_setting('synchronous_commit')",
            &[],
        )
        .map_err(|e| server_error(shown, &e))?;
    let (standbys, commit): (String, String) = (row.get(0), row.get(1));
    let commit = if commit == "remote_apply" {
        commit
    } else {
        "on".into()
    };
    replication_enough(shown, wanted, &standbys, &commit)
}

/// Refuses a commit on a server that would not wait for `wanted` synchronous
/// standbys, naming the setting that is short (never the URL's password).
fn replication_enough(shown: &str, wanted: u32, names: &str, commit: &str) -> Result<()> {
    if wanted == 0 {
        return Ok(());
    }
    let have = sync_standbys(names);
    let what = if have < wanted {
        format!(
            "sync_replicas={wanted}, but the server waits for {have} synchronous standbys \
             (synchronous_standby_names = '{}')",
            names.trim()
        )
    } else if !matches!(commit, "on" | "remote_apply") {
        format!(
            "sync_replicas={wanted}, but the server's synchronous_commit is '{commit}' \
             (it must be on or remote_apply)"
        )
    } else {
        return Ok(());
    };
    Err(Error::Server {
        what: format!("{shown}: {what}; nothing was written"),
        hint: "configure synchronous replication on the primary (synchronous_standby_names), \
               or lower sync_replicas",
        transient: false,
    })
}

/// SQL naming the life of the server a statement runs on: its postmaster's start
/// time. A promoted standby, or a server stopped and started again, has another (a
/// crash restart inside a running postmaster keeps it: see docs/POSTGRES.md).
const SERVER_LIFE: &str = "extract(epoch FROM pg_postmaster_start_time())::text";

/// Keepalive probes before a silent peer counts as dead.
const KEEPALIVE_PROBES: u32 = 3;

/// TCP keepalive idle time, probe interval and user timeout for a stall timeout: a
/// dead peer is noticed within about two thirds of it (idle + probes), and data left
/// unacknowledged for the whole of it ends the connection.
fn tcp_timeouts(stall: Duration) -> (Duration, Duration, Duration) {
    let secs = stall.as_secs().max(3);
    (
        Duration::from_secs(secs / 3),
        Duration::from_secs((secs / 9).max(1)),
        Duration::from_secs(secs),
    )
}

/// A store's rows in PostgreSQL.
pub(crate) struct PgRows {
    shown: String,
    names: Arc<Names>,
    pool: OffPool,
    lock_pool: OffPool,
    read_only: bool,
    /// Longest wait for the store's commit lock (the keyring row) and for a lock key.
    lock_timeout: Duration,
    /// Synchronous standbys every commit must wait for (0: no check).
    sync_replicas: u32,
    /// Turns lock keys into lock rows (derived from the name key once it is known).
    lock_salt: OnceLock<[u8; 16]>,
}

pub(crate) fn config_of(url: &PgUrl, opts: &Options) -> Result<postgres::Config> {
    let mut config: postgres::Config = url
        .connect
        .parse()
        .map_err(|e| super::bad_url(format!("{url}: {e}")))?;
    if config.get_password().is_none()
        && let Ok(password) = std::env::var("PGPASSWORD")
    {
        config.password(password);
    }
    if config.get_user().is_none() {
        let user = std::env::var("PGUSER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "postgres".into());
        config.user(&user);
    }
    // A half-open connection (a server gone silent) is noticed within the stall
    // timeout rather than the system's two hours.
    let (idle, interval, user) = tcp_timeouts(opts.stall_timeout);
    config
        .keepalives_idle(idle)
        .keepalives_interval(interval)
        .keepalives_retries(KEEPALIVE_PROBES)
        .tcp_user_timeout(user);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("sealkv");
    Ok(config)
}

impl PgRows {
    /// Connects to the store at `url`, which must exist.
    pub(crate) fn open(url: &PgUrl, opts: &Options, read_only: bool) -> Result<Self> {
        let config = config_of(url, opts)?;
        let shown = url.to_string();
        // One connection first, outside the pool: its error says exactly what is wrong
        // (the pool's would only say it timed out), and says it at once.
        let names = Names::new(&url.store);
        let wanted = sync_replicas(url, opts);
        // A URL of several hosts is a replicated server: opening rides a failover like
        // every other call. With one host, an unreachable server is an error at once
        // (more likely a wrong address than a failover).
        let mut backoff = crate::rowstore::backoff::Backoff::within(
            (config.get_hosts().len() > 1).then_some(opts.failover_timeout),
        );
        loop {
            match off_runtime(|| Self::check_store(&config, &shown, url, &names, wanted)) {
                Err(e) if backoff.again(&e) => {}
                checked => break checked?,
            }
        }
        Self::assemble(url, config, names, opts, read_only)
    }

    /// Connects once and checks that the store's tables exist and are a store's.
    fn check_store(
        config: &postgres::Config,
        shown: &str,
        url: &PgUrl,
        names: &Names,
        sync_replicas: u32,
    ) -> Result<()> {
        let mut first = config.connect(NoTls).map_err(|e| server_error(shown, &e))?;
        replication_checked(&mut first, shown, sync_replicas)?;
        let found: i64 = first
            .query_typed_one(
                "SELECT count(to_regclass(n)) FROM unnest($1::text[]) AS n",
                &[(&names.plain.to_vec(), Type::TEXT_ARRAY)],
            )
            .map_err(|e| server_error(shown, &e))?
            .get(0);
        if found == 0 {
            return Err(Error::Server {
                what: format!(
                    "{shown}: the database has no sealkv store named {}",
                    url.store
                ),
                hint: "create it with `sealkv init URL` (or Store::create), or fix ?store=",
                transient: false,
            });
        }
        // Tables of that name that are not a store's (other columns, or columns that
        // allow NULL) are not ours: every table has a non-null bytea key `k`, and the
        // data and meta tables a non-null bytea value `v`.
        let ours: i64 = first
            .query_typed_one(
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ANY($1) \
                 AND data_type = 'bytea' AND is_nullable = 'NO' \
                 AND (column_name = 'k' OR (column_name = 'v' AND table_name = ANY($2)))",
                &[
                    (&names.plain.to_vec(), Type::TEXT_ARRAY),
                    (&names.plain[..2].to_vec(), Type::TEXT_ARRAY),
                ],
            )
            .map_err(|e| server_error(shown, &e))?
            .try_get(0)
            .map_err(|e| Error::Corrupt(format!("{shown}: {e}")))?;
        // All four tables, of a store's shape.
        if ours != 6 || found != 4 {
            return Err(Error::NotSealkv(shown.into()));
        }
        Ok(())
    }

    /// Creates the store's tables at `url` and runs `initial` (the meta records, or a
    /// whole copied store) in the same transaction: a failure leaves no tables.
    pub(crate) fn create(
        url: &PgUrl,
        opts: &Options,
        initial: &mut dyn FnMut(&mut dyn RowWrite) -> Result<()>,
    ) -> Result<Self> {
        let config = config_of(url, opts)?;
        let shown = url.to_string();
        let client = off_runtime(|| config.connect(NoTls)).map_err(|e| server_error(&shown, &e))?;
        // Closed off any async runtime too, whatever happens below.
        let mut client = Closing(Some(client));
        let client = client
            .0
            .as_mut()
            .unwrap_or_else(|| unreachable!("just set"));
        let names = Names::new(&url.store);
        // A store created (or backed up) with sync_replicas is refused on a server
        // that would not replicate its first commit either.
        let wanted = sync_replicas(url, opts);
        off_runtime(|| replication_checked(client, &shown, wanted))?;
        let ddl = format!(
            "SET synchronous_commit TO on;
             BEGIN;
             CREATE TABLE {} (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE {} (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE {} (k bytea PRIMARY KEY);
             CREATE TABLE {} (k bytea PRIMARY KEY);",
            names.data, names.meta, names.expiry, names.locks
        );
        if let Err(e) = off_runtime(|| client.batch_execute(&ddl)) {
            let _ = off_runtime(|| client.batch_execute("ROLLBACK"));
            if e.code() == Some(&SqlState::DUPLICATE_TABLE) {
                return Err(Error::AlreadyExists(shown.into()));
            }
            return Err(server_error(&shown, &e));
        }
        let mut w = PgWrite::new(client, &names, &shown, None);
        initial(&mut w)?;
        w.commit()?;
        Self::assemble(url, config, names, opts, false)
    }

    fn assemble(
        url: &PgUrl,
        config: postgres::Config,
        names: Names,
        opts: &Options,
        read_only: bool,
    ) -> Result<Self> {
        let build = |max: u32, end_stalled: bool| {
            Pool::builder()
                .max_size(max)
                .min_idle(Some(0))
                .test_on_check_out(false)
                .connection_timeout(Duration::from_secs(10))
                .connection_customizer(Box::new(Setup {
                    read_only,
                    stall: opts.stall_timeout,
                    end_stalled,
                }))
                .build_unchecked(Manager::new(config.clone(), NoTls))
        };
        Ok(Self {
            shown: url.to_string(),
            names: Arc::new(names),
            pool: OffPool(Some(build(POOL, true))),
            lock_pool: OffPool(Some(build(LOCK_POOL, false))),
            read_only,
            lock_timeout: opts.lock_timeout,
            sync_replicas: sync_replicas(url, opts),
            lock_salt: OnceLock::new(),
        })
    }

    /// Keys the lock rows with the store's name key (so the server does not see which
    /// lock keys, often phone numbers, are in use).
    pub(crate) fn set_name_key(&self, nk: &NameKey) {
        let _ = self
            .lock_salt
            .set(nk.record_tag(b"postgres transaction lock rows"));
    }

    fn conn(&self, pool: &Pool<Manager>) -> Result<Conn> {
        pool.get()
            .map(|c| Conn(Some(c)))
            .map_err(|e| Error::Server {
                what: format!("{}: no connection to the server: {e}", self.shown),
                hint: "is PostgreSQL running and reachable?",
                transient: true,
            })
    }

    fn lock_row(&self, session: Option<&str>, lock_key: &str) -> Vec<u8> {
        let salt = self.lock_salt.get().copied().unwrap_or_default();
        crate::rowstore::lock_hash(&salt, session, lock_key)[..16].to_vec()
    }
}

impl RowStore for PgRows {
    fn view(&self) -> Result<View> {
        Ok(Arc::new(PgView {
            conn: Mutex::new(self.conn(&self.pool)?),
            names: self.names.clone(),
            shown: self.shown.clone(),
            in_txn: false,
        }))
    }

    fn snapshot(&self) -> Result<View> {
        let mut conn = self.conn(&self.pool)?;
        off_runtime(|| conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            .map_err(|e| server_error(&self.shown, &e))?;
        Ok(Arc::new(PgView {
            conn: Mutex::new(conn),
            names: self.names.clone(),
            shown: self.shown.clone(),
            in_txn: true,
        }))
    }

    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn RowWrite) -> Result<()>,
        committing: &mut bool,
    ) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let mut conn = self.conn(&self.pool)?;
        let shown = &self.shown;
        // One round trip opens the transaction and takes the keyring record's row lock:
        // commits to this store, from any process on any host, run one at a time from
        // here to their commit. It also says whether any value expires (exact while the
        // lock is held: every writer takes it first), in a statement of its own, which
        // under read committed sees every commit made before the lock was granted (one
        // statement's snapshot would be as old as the moment it began waiting).
        // Simple-query text, so the record comes as hex.
        let begin = format!(
            "BEGIN; SET LOCAL lock_timeout = {}; \
             SELECT encode(v, 'hex') AS keyring FROM {meta} WHERE k = '\\x{}' FOR UPDATE; \
             SELECT EXISTS (SELECT 1 FROM {}) AS expiring; \
             SELECT encode(v, 'hex') AS commits FROM {meta} WHERE k = '\\x{}';{}",
            self.lock_timeout.as_millis().clamp(1, i32::MAX as u128),
            hex(META_KEYRING.as_bytes()),
            self.names.expiry,
            hex(META_COMMITS.as_bytes()),
            // Checked in every commit, on the server that commits it: after a failover
            // that may be a server with no standby.
            if self.sync_replicas > 0 {
                " SELECT current_setting('synchronous_standby_names') AS sync_names, \
                 current_setting('synchronous_commit') AS sync_commit"
            } else {
                ""
            },
            meta = self.names.meta,
        );
        let opened = off_runtime(|| conn.simple_query(&begin));
        // A keyring record that is absent (only while a store is created) or did not
        // decode is read as the engine would, through `get`.
        // The commit record is read here too (the engine reads it first in every commit):
        // absent, it is known to be absent.
        let (mut keyring, mut expiring, mut commits) = (None, None, None);
        let mut sync_checked = self.sync_replicas == 0;
        match opened {
            Ok(messages) => {
                for m in messages {
                    if let SimpleQueryMessage::Row(row) = m {
                        match row.columns().first().map(|c| c.name()) {
                            Some("keyring") => keyring = row.get(0).and_then(unhex),
                            Some("expiring") => expiring = Some(row.get(0) == Some("t")),
                            Some("commits") => commits = row.get(0).and_then(unhex),
                            Some("sync_names") => {
                                let (names, commit) =
                                    (row.get(0).unwrap_or(""), row.get(1).unwrap_or(""));
                                if let Err(e) =
                                    replication_enough(shown, self.sync_replicas, names, commit)
                                {
                                    let _ = off_runtime(|| conn.batch_execute("ROLLBACK"));
                                    return Err(e);
                                }
                                sync_checked = true;
                            }
                            _ => {}
                        }
                    }
                }
                if !sync_checked {
                    let _ = off_runtime(|| conn.batch_execute("ROLLBACK"));
                    return Err(Error::Server {
                        what: format!("{shown}: the server did not say its replication settings"),
                        hint: "see the server's log",
                        transient: true,
                    });
                }
            }
            Err(e) => {
                let _ = off_runtime(|| conn.batch_execute("ROLLBACK"));
                return Err(if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                    Error::Server {
                        what: format!(
                            "{shown}: another writer held the store's commit lock for over {} ms",
                            self.lock_timeout.as_millis()
                        ),
                        hint: "a stalled writer on another host? the commit is retried",
                        transient: true,
                    }
                } else {
                    server_error(shown, &e)
                });
            }
        }
        let mut w = PgWrite::new(&mut conn, &self.names, shown, keyring);
        w.expiry_empty = expiring.map(|e| !e);
        w.known.insert(META_COMMITS.as_bytes().to_vec(), commits);
        f(&mut w)?;
        w.flush()?;
        *committing = true;
        w.commit()
    }

    fn recover(&self) -> Result<()> {
        // A broken connection is dropped by the pool when it comes back; the next
        // attempt takes a fresh one. Nothing else is kept that a failure could spoil.
        Ok(())
    }

    fn poison_on_failure(&self) -> bool {
        false
    }

    fn rides_failover(&self) -> bool {
        true
    }

    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn lock(
        &self,
        session: Option<&str>,
        lock_key: &str,
        timeout: Duration,
    ) -> Result<Option<LockGuard<'_>>> {
        if self.read_only {
            // Nothing can be written through this store: nothing to exclude (the
            // server would refuse `FOR UPDATE` on a read-only connection anyway).
            return Ok(None);
        }
        let row = hex(&self.lock_row(session, lock_key));
        let started = Instant::now();
        let mut conn = self.conn(&self.lock_pool)?;
        // One round trip: a transaction that waits up to `timeout` for the row lock and
        // says its transaction id (the proof its holder's commit checks: the lock lasts
        // exactly as long as that transaction is in progress). Then, in a savepoint
        // rolled back at once, it waits for the keyring row: a commit in flight that
        // checked the previous holder's proof finishes before this holder reads
        // anything (see `PgWrite::locks_held`).
        let take = format!(
            "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = 0; \
             SELECT 1 AS held FROM {} WHERE k = '\\x{row}' FOR UPDATE; \
             SELECT pg_current_xact_id()::text || '@' || {SERVER_LIFE} AS xid; \
             SAVEPOINT barrier; SELECT 1 FROM {} WHERE k = '\\x{}' FOR SHARE; \
             ROLLBACK TO SAVEPOINT barrier",
            // Whole milliseconds, rounded up: never a shorter wait than asked.
            timeout
                .as_micros()
                .div_ceil(1000)
                .clamp(1, i32::MAX as u128),
            self.names.locks,
            self.names.meta,
            hex(META_KEYRING.as_bytes()),
        );
        let taken = off_runtime(|| self.take_lock(&mut conn, &take, &row, started));
        taken.map(|xid| Some(Box::new(PgLock { conn, xid }) as LockGuard<'_>))
    }

    fn size(&self) -> u64 {
        off_runtime(|| self.size_now())
    }

    fn compact(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        off_runtime(|| {
            let mut conn = self.conn(&self.pool)?;
            let n = &self.names;
            conn.batch_execute(&format!(
                "VACUUM {}, {}, {}, {}",
                n.data, n.meta, n.expiry, n.locks
            ))
            .map_err(|e| server_error(&self.shown, &e))
        })
    }
}

impl PgRows {
    /// Takes the lock row `row` with the statements `take` on `conn`; returns the
    /// holding transaction's id.
    fn take_lock(
        &self,
        conn: &mut Client,
        take: &str,
        row: &str,
        started: Instant,
    ) -> Result<String> {
        let shown = &self.shown;
        for _ in 0..2 {
            let taken = conn.simple_query(take);
            match taken {
                Ok(messages) => {
                    let column = |name: &str| {
                        messages.iter().find_map(|m| match m {
                            SimpleQueryMessage::Row(r)
                                if r.columns().first().map(|c| c.name()) == Some(name) =>
                            {
                                Some(r.get(0).map(str::to_string))
                            }
                            _ => None,
                        })
                    };
                    if column("held").is_some() {
                        return column("xid").flatten().ok_or_else(|| Error::Server {
                            what: format!(
                                "{shown}: the server did not say the lock's transaction id"
                            ),
                            hint: "see the server's log",
                            transient: true,
                        });
                    }
                    // The lock key's first use: make its row (committed, so it stays
                    // for the next time) and take it again.
                    conn.batch_execute("ROLLBACK")
                        .map_err(|e| server_error(shown, &e))?;
                    conn.batch_execute(&format!(
                        "INSERT INTO {} (k) VALUES ('\\x{row}') ON CONFLICT (k) DO NOTHING",
                        self.names.locks
                    ))
                    .map_err(|e| server_error(shown, &e))?;
                }
                Err(e) => {
                    let _ = conn.batch_execute("ROLLBACK");
                    return Err(if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                        Error::LockTimeout {
                            waited: started.elapsed(),
                        }
                    } else {
                        server_error(shown, &e)
                    });
                }
            }
        }
        Err(Error::Server {
            what: format!("{shown}: a lock row disappeared as it was taken"),
            hint: "is something deleting rows of the store's locks table?",
            transient: true,
        })
    }
}

impl PgRows {
    /// Bytes the store's tables take.
    fn size_now(&self) -> u64 {
        let Ok(mut conn) = self.conn(&self.pool) else {
            return 0;
        };
        let names: Vec<&str> = self.names.plain.iter().map(String::as_str).collect();
        conn.query_typed_one(
            "SELECT COALESCE(sum(pg_total_relation_size(to_regclass(n))), 0)::bigint \
             FROM unnest($1::text[]) AS n",
            &[(&names, Type::TEXT_ARRAY)],
        )
        .ok()
        .map(|row| row.get::<_, i64>(0).max(0) as u64)
        .unwrap_or(0)
    }
}

/// A client connected outside the pool, closed off any async runtime when dropped.
struct Closing(Option<Client>);

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            off_runtime(move || drop(client));
        }
    }
}

/// A held lock key: a transaction holding the lock row, rolled back on drop.
struct PgLock {
    conn: Conn,
    /// The holding transaction's id (`pg_current_xact_id()` as text).
    xid: String,
}

impl crate::rowstore::HeldLock for PgLock {
    /// The lock lives as long as the transaction that holds it: a session the server
    /// ended (a restart, a failover, an administrator, the stall timeout) let it go.
    fn proof(&self) -> Option<&str> {
        Some(&self.xid)
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        // A connection that cannot roll back is broken: the server ends its
        // transaction (and the lock) when it notices, and the pool discards it.
        let conn = &mut self.conn;
        let _ = off_runtime(|| conn.batch_execute("ROLLBACK"));
    }
}

/// Reads one row.
fn get_row(
    client: &mut (impl GenericClient + Send),
    names: &Names,
    shown: &str,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>> {
    let sql = match table {
        Table::Expiry => format!("SELECT ''::bytea FROM {} WHERE k = $1", names.expiry),
        t => format!("SELECT v FROM {} WHERE k = $1", names.of(t)),
    };
    off_runtime(|| client.query_typed_opt(&sql, &[(&key, Type::BYTEA)]))
        .map_err(|e| server_error(shown, &e))?
        .map(|r| column(shown, &r, 0))
        .transpose()
}

/// Reads the rows under `keys` in one statement (one snapshot).
fn get_rows(
    client: &mut (impl GenericClient + Send),
    names: &Names,
    shown: &str,
    table: Table,
    keys: &[&[u8]],
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let value = if table == Table::Expiry {
        "''::bytea"
    } else {
        "v"
    };
    let sql = format!(
        "SELECT k, {value} FROM {} WHERE k = ANY($1)",
        names.of(table)
    );
    let rows = off_runtime(|| client.query_typed(&sql, &[(&keys, Type::BYTEA_ARRAY)]))
        .map_err(|e| server_error(shown, &e))?;
    rows.iter()
        .map(|r| Ok((column(shown, r, 0)?, column(shown, r, 1)?)))
        .collect()
}

/// Column `i` of `row` as bytes: a NULL or a value of another type (a table changed
/// behind the store's back) is an error, never a panic.
fn column(shown: &str, row: &postgres::Row, i: usize) -> Result<Vec<u8>> {
    row.try_get::<_, Vec<u8>>(i).map_err(|e| {
        Error::Corrupt(format!(
            "{shown}: a row of the store's tables is not what sealkv wrote: {e}"
        ))
    })
}

/// `WHERE` conditions for a key range, with its parameters.
fn range_sql<'a>(range: Range<'a>, params: &mut Vec<&'a [u8]>) -> String {
    let mut conds = vec!["TRUE".to_string()];
    for (bound, op_in, op_ex) in [(range.0, ">=", ">"), (range.1, "<=", "<")] {
        let (op, key) = match bound {
            Bound::Included(k) => (op_in, k),
            Bound::Excluded(k) => (op_ex, k),
            Bound::Unbounded => continue,
        };
        params.push(key);
        conds.push(format!("k {op} ${}", params.len()));
    }
    conds.join(" AND ")
}

fn typed<'a>(params: &'a [&'a [u8]]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|p| (p as &(dyn ToSql + Sync), Type::BYTEA))
        .collect()
}

/// Visits a key range in pages of [`PAGE`] rows, each page one statement.
fn scan_rows(
    client: &mut (impl GenericClient + Send),
    names: &Names,
    shown: &str,
    table: Table,
    range: Range<'_>,
    visit: Visit<'_>,
) -> Result<()> {
    let value = if table == Table::Expiry {
        "''::bytea"
    } else {
        "v"
    };
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut params = Vec::new();
        let lower = match &after {
            Some(last) => Bound::Excluded(last.as_slice()),
            None => range.0,
        };
        let cond = range_sql((lower, range.1), &mut params);
        let sql = format!(
            "SELECT k, {value} FROM {} WHERE {cond} ORDER BY k LIMIT {PAGE}",
            names.of(table)
        );
        let rows = off_runtime(|| client.query_typed(&sql, &typed(&params)))
            .map_err(|e| server_error(shown, &e))?;
        let full = rows.len() as i64 == PAGE;
        for row in &rows {
            let (k, v) = (column(shown, row, 0)?, column(shown, row, 1)?);
            if !visit(&k, &v)? {
                return Ok(());
            }
        }
        match rows.last() {
            Some(last) if full => after = Some(column(shown, last, 0)?),
            _ => return Ok(()),
        }
    }
}

/// The one value of a one-row, one-column query about `table` (`{}` names it).
fn scalar<T: for<'r> postgres::types::FromSql<'r>>(
    client: &mut (impl GenericClient + Send),
    names: &Names,
    shown: &str,
    sql: &str,
    table: Table,
) -> Result<T> {
    let sql = sql.replace("{}", names.of(table));
    off_runtime(|| client.query_typed_one(&sql, &[]))
        .map_err(|e| server_error(shown, &e))?
        .try_get::<_, T>(0)
        .map_err(|e| {
            Error::Corrupt(format!(
                "{shown}: an unexpected answer from the server: {e}"
            ))
        })
}

fn count_rows(
    client: &mut (impl GenericClient + Send),
    names: &Names,
    shown: &str,
    table: Table,
) -> Result<u64> {
    let n: i64 = scalar(client, names, shown, "SELECT count(*) FROM {}", table)?;
    Ok(n.max(0) as u64)
}

fn has_rows(
    client: &mut (impl GenericClient + Send),
    names: &Names,
    shown: &str,
    table: Table,
) -> Result<bool> {
    scalar(
        client,
        names,
        shown,
        "SELECT EXISTS (SELECT 1 FROM {})",
        table,
    )
}

/// A read view on one pooled connection: statements in autocommit (each sees every
/// commit before it), or, for a snapshot, inside one repeatable-read transaction.
struct PgView {
    conn: Mutex<Conn>,
    names: Arc<Names>,
    shown: String,
    in_txn: bool,
}

impl Drop for PgView {
    fn drop(&mut self) {
        if self.in_txn {
            let mut conn = lock(&self.conn);
            let conn = &mut **conn;
            let _ = off_runtime(|| conn.batch_execute("ROLLBACK"));
        }
    }
}

impl RowRead for PgView {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        let mut conn = lock(&self.conn);
        Ok(get_row(&mut **conn, &self.names, &self.shown, table, key)?.map(Found::Owned))
    }
    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Found<'_>>>> {
        if let [one] = keys {
            return Ok(vec![self.get(table, one)?]);
        }
        let mut conn = lock(&self.conn);
        let found = get_rows(&mut **conn, &self.names, &self.shown, table, keys)?;
        Ok(keys
            .iter()
            .map(|k| found.get(*k).cloned().map(Found::Owned))
            .collect())
    }
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        let mut conn = lock(&self.conn);
        scan_rows(&mut **conn, &self.names, &self.shown, table, range, visit)
    }
    fn len(&self, table: Table) -> Result<u64> {
        count_rows(&mut **lock(&self.conn), &self.names, &self.shown, table)
    }
    fn is_empty(&self, table: Table) -> Result<bool> {
        has_rows(&mut **lock(&self.conn), &self.names, &self.shown, table).map(|has| !has)
    }
}

/// Lowercase hex of `bytes`, for literals in simple queries (only of keys we made).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes PostgreSQL's `encode(…, 'hex')` text.
fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// A buffered change.
#[derive(Clone)]
enum Change {
    Put(Vec<u8>),
    /// Put unless a row is there already on the server.
    PutIfAbsent(Vec<u8>),
    Delete,
}

/// Buffered changes by (table, key).
type Pending = BTreeMap<(Table, Vec<u8>), Change>;

/// A write transaction on one connection, begun by [`PgRows::write`] (or `create`):
/// puts and deletes wait in `pending` (reads of single rows see them there) and go to
/// the server as a few array statements before any range read and at commit. Dropped
/// without [`PgWrite::commit`], it rolls back.
struct PgWrite<'c> {
    client: RefCell<&'c mut Client>,
    names: &'c Names,
    shown: &'c str,
    pending: RefCell<Pending>,
    /// Meta records as read under the keyring row lock (the keyring, when it was read
    /// and decoded; the commit record, present or not), kept up to date by this
    /// transaction's writes: reads of them need no round trip.
    known: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Whether the expiry index is empty, while known.
    expiry_empty: Option<bool>,
    /// Bytes of values waiting in `pending`.
    pending_bytes: usize,
    /// Set when a statement failed: the server has aborted the transaction, and a
    /// `COMMIT` would only roll it back, so `commit` refuses.
    failed: std::cell::Cell<bool>,
    done: bool,
}

impl<'c> PgWrite<'c> {
    /// Wraps a connection on which `BEGIN` has run.
    fn new(
        client: &'c mut Client,
        names: &'c Names,
        shown: &'c str,
        keyring: Option<Vec<u8>>,
    ) -> Self {
        Self {
            client: RefCell::new(client),
            names,
            shown,
            pending: RefCell::new(BTreeMap::new()),
            known: keyring
                .map(|k| (META_KEYRING.as_bytes().to_vec(), Some(k)))
                .into_iter()
                .collect(),
            expiry_empty: None,
            pending_bytes: 0,
            failed: std::cell::Cell::new(false),
            done: false,
        }
    }

    fn fail(&self, e: &postgres::Error) -> Error {
        self.failed.set(true);
        server_error(self.shown, e)
    }

    /// Notes a failed statement of a read helper (see `failed`).
    fn noted<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.failed.set(true);
        }
        result
    }

    /// Sends the pending changes once they hold this many bytes of values (a backup
    /// into the server copies a whole store in one transaction).
    const FLUSH_BYTES: usize = 32 << 20;

    fn queue(&mut self, table: Table, key: &[u8], change: Change) -> Result<()> {
        if let Change::Put(v) | Change::PutIfAbsent(v) = &change {
            self.pending_bytes += v.len() + key.len();
        }
        self.pending.get_mut().insert((table, key.to_vec()), change);
        if self.pending_bytes >= Self::FLUSH_BYTES {
            self.pending_bytes = 0;
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the pending changes in one statement: per table, a delete of every
    /// deleted key, an upsert of every put and an insert of every put-if-absent, each
    /// a data-modifying `WITH` part over arrays. The parts touch distinct keys (one
    /// change per key), so the order in which the server runs them does not matter.
    fn flush(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return Ok(());
        }
        // One array per (table, kind): keys and, for puts, values.
        let mut arrays: Vec<Vec<&[u8]>> = Vec::new();
        let mut parts = Vec::new();
        for table in [Table::Data, Table::Meta, Table::Expiry] {
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            let (mut new_keys, mut new_values) = (Vec::new(), Vec::new());
            let mut deleted = Vec::new();
            for ((t, k), change) in &pending {
                if *t != table {
                    continue;
                }
                match change {
                    Change::Put(v) => {
                        keys.push(k.as_slice());
                        values.push(v.as_slice());
                    }
                    Change::PutIfAbsent(v) => {
                        new_keys.push(k.as_slice());
                        new_values.push(v.as_slice());
                    }
                    Change::Delete => deleted.push(k.as_slice()),
                }
            }
            let name = self.names.of(table);
            if !deleted.is_empty() {
                arrays.push(deleted);
                parts.push(format!(
                    "DELETE FROM {name} WHERE k = ANY(${})",
                    arrays.len()
                ));
            }
            for (keys, values, conflict) in [
                (keys, values, "DO UPDATE SET v = excluded.v"),
                (new_keys, new_values, "DO NOTHING"),
            ] {
                if keys.is_empty() {
                    continue;
                }
                arrays.push(keys);
                let k = arrays.len();
                if table == Table::Expiry {
                    parts.push(format!(
                        "INSERT INTO {name} (k) SELECT * FROM unnest(${k}::bytea[]) \
                         ON CONFLICT (k) DO NOTHING"
                    ));
                } else {
                    arrays.push(values);
                    parts.push(format!(
                        "INSERT INTO {name} (k, v) SELECT * FROM unnest(${k}::bytea[], ${}::bytea[]) \
                         ON CONFLICT (k) {conflict}",
                        k + 1
                    ));
                }
            }
        }
        let sql = match parts.as_slice() {
            [one] => one.clone(),
            _ => {
                let with: Vec<String> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, part)| format!("w{i} AS ({part})"))
                    .collect();
                format!("WITH {} SELECT 1", with.join(", "))
            }
        };
        let params: Vec<(&(dyn ToSql + Sync), Type)> = arrays
            .iter()
            .map(|a| (a as &(dyn ToSql + Sync), Type::BYTEA_ARRAY))
            .collect();
        let mut client = self.client.borrow_mut();
        let client = &mut **client;
        off_runtime(|| client.query_typed(&sql, &params)).map_err(|e| self.fail(&e))?;
        Ok(())
    }

    fn commit(mut self) -> Result<()> {
        self.flush()?;
        if self.failed.get() {
            return Err(Error::Server {
                what: format!("{}: a statement of the transaction failed", self.shown),
                hint: "nothing of it was written",
                transient: true,
            });
        }
        self.done = true;
        let client = &mut **self.client.get_mut();
        off_runtime(|| client.batch_execute("COMMIT")).map_err(|e| server_error(self.shown, &e))
    }
}

impl Drop for PgWrite<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A connection that cannot roll back is broken; the server rolls back when
            // it notices, and the pool discards the connection.
            let client = &mut **self.client.get_mut();
            let _ = off_runtime(|| client.batch_execute("ROLLBACK"));
        }
    }
}

impl RowRead for PgWrite<'_> {
    /// This transaction's pending changes where it has them, the rest from the server
    /// in one statement.
    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Found<'_>>>> {
        let mut out: Vec<Option<Option<Vec<u8>>>> = Vec::with_capacity(keys.len());
        let mut ask = Vec::new();
        for k in keys {
            let pending = self.pending.borrow().get(&(table, k.to_vec())).cloned();
            match pending {
                Some(Change::Put(v)) => out.push(Some(Some(v))),
                Some(Change::Delete) => out.push(Some(None)),
                Some(Change::PutIfAbsent(_)) => {
                    // Whether the server has a row decides: send it, then read.
                    self.flush()?;
                    out.push(None);
                    ask.push(*k);
                }
                None => {
                    out.push(None);
                    ask.push(*k);
                }
            }
        }
        let found = if ask.is_empty() {
            BTreeMap::new()
        } else {
            let mut client = self.client.borrow_mut();
            self.noted(get_rows(&mut **client, self.names, self.shown, table, &ask))?
        };
        Ok(keys
            .iter()
            .zip(out)
            .map(|(k, known)| match known {
                Some(v) => v.map(Found::Owned),
                None => found.get(*k).cloned().map(Found::Owned),
            })
            .collect())
    }
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        let pending = self.pending.borrow().get(&(table, key.to_vec())).cloned();
        match pending {
            Some(Change::Put(v)) => return Ok(Some(Found::Owned(v))),
            Some(Change::Delete) => return Ok(None),
            // Whether the server has a row decides: send it, then read.
            Some(Change::PutIfAbsent(_)) => self.flush()?,
            None => {}
        }
        if table == Table::Meta
            && let Some(known) = self.known.get(key)
        {
            return Ok(known.clone().map(Found::Owned));
        }
        let mut client = self.client.borrow_mut();
        let row = self.noted(get_row(&mut **client, self.names, self.shown, table, key))?;
        Ok(row.map(Found::Owned))
    }
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        self.flush()?;
        let mut client = self.client.borrow_mut();
        self.noted(scan_rows(
            &mut **client,
            self.names,
            self.shown,
            table,
            range,
            visit,
        ))
    }
    fn len(&self, table: Table) -> Result<u64> {
        self.flush()?;
        let mut client = self.client.borrow_mut();
        self.noted(count_rows(&mut **client, self.names, self.shown, table))
    }
    fn is_empty(&self, table: Table) -> Result<bool> {
        if table == Table::Expiry
            && let Some(known) = self.expiry_empty
        {
            return Ok(known);
        }
        self.flush()?;
        let mut client = self.client.borrow_mut();
        self.noted(has_rows(&mut **client, self.names, self.shown, table))
            .map(|has| !has)
    }
}

impl RowWrite for PgWrite<'_> {
    fn batches_reads(&self) -> bool {
        true
    }
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        if table == Table::Meta
            && let Some(known) = self.known.get_mut(key)
        {
            *known = Some(value.to_vec());
        }
        if table == Table::Expiry {
            self.expiry_empty = Some(false);
        }
        self.queue(table, key, Change::Put(value.to_vec()))
    }
    fn put_if_absent(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        let change = match self.pending.get_mut().get(&(table, key.to_vec())) {
            // Present in this transaction already: nothing to do.
            Some(Change::Put(_) | Change::PutIfAbsent(_)) => return Ok(()),
            // Deleted in this transaction: absent, so put.
            Some(Change::Delete) => Change::Put(value.to_vec()),
            None => Change::PutIfAbsent(value.to_vec()),
        };
        if table == Table::Meta {
            // Which value wins is the server's to say: read it back when asked.
            self.known.remove(key);
        }
        if table == Table::Expiry {
            self.expiry_empty = Some(false);
        }
        self.queue(table, key, change)
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        if table == Table::Meta
            && let Some(known) = self.known.get_mut(key)
        {
            *known = None;
        }
        if table == Table::Expiry {
            self.expiry_empty = None;
        }
        self.queue(table, key, Change::Delete)
    }
    /// One statement: whether each lock's holding transaction is still in progress. It
    /// runs under the keyring row lock, which this transaction keeps until it commits,
    /// so no window is left: a holder that dies after the check lets its lock go to a
    /// new holder, whose lock statement then waits for the keyring row (see
    /// `PgRows::lock`), so it reads only after this commit.
    ///
    /// A proof is `XID@LIFE`, LIFE naming the server process that granted the lock (its
    /// postmaster's start time). After a failover the new primary is another server:
    /// the old primary's transaction ids mean nothing there (one that never reached the
    /// standby may even be reused by a new transaction), so a proof from another server
    /// is never held.
    fn locks_held(&mut self, proofs: &[&str]) -> Result<Vec<bool>> {
        let xids: Vec<&str> = proofs.to_vec();
        let client = &mut **self.client.get_mut();
        let rows = off_runtime(|| {
            client.query_typed(
                &format!(
                    "SELECT CASE WHEN split_part(p, '@', 2) = {SERVER_LIFE} \
                       AND split_part(p, '@', 1)::xid8 < pg_snapshot_xmax(pg_current_snapshot()) \
                     THEN COALESCE(pg_xact_status(split_part(p, '@', 1)::xid8) = 'in progress', false) \
                     ELSE false END \
                     FROM unnest($1::text[]) WITH ORDINALITY AS t(p, i) ORDER BY i"
                ),
                &[(&xids, Type::TEXT_ARRAY)],
            )
        })
        .map_err(|e| self.fail(&e))?;
        rows.iter()
            .map(|r| r.try_get::<_, bool>(0).map_err(|e| self.fail(&e)))
            .collect()
    }
    fn delete_range(&mut self, table: Table, range: Range<'_>) -> Result<()> {
        self.flush()?;
        if table == Table::Expiry {
            self.expiry_empty = None;
        }
        if table == Table::Meta {
            self.known.clear();
        }
        let mut params = Vec::new();
        let cond = range_sql(range, &mut params);
        let sql = format!("DELETE FROM {} WHERE {cond}", self.names.of(table));
        let client = &mut **self.client.get_mut();
        off_runtime(|| client.query_typed(&sql, &typed(&params))).map_err(|e| self.fail(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{hex, replication_enough, sync_standbys, unhex};

    #[test]
    fn hex_round_trips_and_refuses_malformed_text() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(unhex("00ff7A").unwrap(), vec![0, 255, 0x7a]);
        for bad in ["0", "zz", "0g", "\\x00"] {
            assert!(unhex(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn synchronous_standby_names_are_counted_as_the_server_does() {
        for (setting, n) in [
            ("", 0),
            ("  ", 0),
            ("*", 1),
            ("b", 1),
            ("b, c", 1),
            ("\"first\" , c", 1),
            ("FIRST 2 (b, c, d)", 2),
            ("first 2(b,c)", 2),
            ("ANY 3 (b, c, d)", 3),
            ("2 (b, c)", 2),
            ("any 1 (*)", 1),
        ] {
            assert_eq!(sync_standbys(setting), n, "{setting:?}");
        }
    }

    #[test]
    fn a_server_short_of_standbys_is_refused_by_name() {
        assert!(replication_enough("s", 0, "", "off").is_ok());
        assert!(replication_enough("s", 1, "*", "on").is_ok());
        assert!(replication_enough("s", 2, "ANY 2 (a, b)", "remote_apply").is_ok());
        let e = replication_enough("pg://h?store=x", 1, "", "on").unwrap_err();
        assert!(
            e.to_string().contains("synchronous_standby_names = ''"),
            "{e}"
        );
        let e = replication_enough("s", 2, "b, c", "on").unwrap_err();
        assert!(e.to_string().contains("waits for 1"), "{e}");
        let e = replication_enough("s", 1, "b", "local").unwrap_err();
        assert!(
            e.to_string().contains("synchronous_commit is 'local'"),
            "{e}"
        );
        assert!(!e.is_transient_server());
    }
}
