//! The PostgreSQL row store proper (feature `postgres`). See the parent module for the
//! schema and `docs/POSTGRES.md` for the statements.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, NoTls, Transaction};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use sealkv_crypto::NameKey;

use super::PgUrl;
use crate::error::{Error, Result};
use crate::meta::META_KEYRING;
use crate::options::Options;
use crate::rowstore::{Found, LockGuard, Range, RowRead, RowStore, RowWrite, Table, View, Visit};
use crate::store::lock;

type Manager = PostgresConnectionManager<NoTls>;
type Conn = PooledConnection<Manager>;

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
            format!("sealkv_{store}"),
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
            (
                "the server or this connection is read-only (a standby?)",
                false,
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

/// Sets every pooled connection up: commits wait for the WAL flush, and a read-only
/// store cannot write even by mistake.
#[derive(Debug)]
struct Setup {
    read_only: bool,
}

impl r2d2::CustomizeConnection<Client, postgres::Error> for Setup {
    fn on_acquire(&self, conn: &mut Client) -> std::result::Result<(), postgres::Error> {
        conn.batch_execute("SET synchronous_commit TO on")?;
        if self.read_only {
            conn.batch_execute("SET default_transaction_read_only TO on")?;
        }
        Ok(())
    }
}

/// A store's rows in PostgreSQL.
pub(crate) struct PgRows {
    shown: String,
    names: Arc<Names>,
    pool: Pool<Manager>,
    lock_pool: Pool<Manager>,
    read_only: bool,
    /// Turns lock keys into lock rows (derived from the name key once it is known).
    lock_salt: OnceLock<[u8; 16]>,
}

fn config_of(url: &PgUrl) -> Result<postgres::Config> {
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
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("sealkv");
    Ok(config)
}

impl PgRows {
    /// Connects to the store at `url`, which must exist.
    pub(crate) fn open(url: &PgUrl, _opts: &Options, read_only: bool) -> Result<Self> {
        let config = config_of(url)?;
        let shown = url.to_string();
        // One connection first, outside the pool: its error says exactly what is wrong
        // (the pool's would only say it timed out), and says it at once.
        let mut first = config
            .connect(NoTls)
            .map_err(|e| server_error(&shown, &e))?;
        let names = Names::new(&url.store);
        let found: Option<String> = first
            .query_typed_one(
                "SELECT to_regclass($1)::text",
                &[(&names.plain[1], Type::TEXT)],
            )
            .map_err(|e| server_error(&shown, &e))?
            .get(0);
        if found.is_none() {
            return Err(Error::Server {
                what: format!(
                    "{shown}: the database has no sealkv store named {}",
                    url.store
                ),
                hint: "create it with `sealkv init URL` (or Store::create), or fix ?store=",
                transient: false,
            });
        }
        // Tables of that name that are not a store's (other columns) are not ours.
        let ours: i64 = first
            .query_typed_one(
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ANY($1) \
                 AND column_name IN ('k', 'v') AND data_type = 'bytea'",
                &[(&names.plain[..2].to_vec(), Type::TEXT_ARRAY)],
            )
            .map_err(|e| server_error(&shown, &e))?
            .get(0);
        if ours != 4 {
            return Err(Error::NotSealkv(shown.into()));
        }
        drop(first);
        Self::assemble(url, config, names, read_only)
    }

    /// Creates the store's tables at `url` and runs `initial` (the meta records, or a
    /// whole copied store) in the same transaction: a failure leaves no tables.
    pub(crate) fn create(
        url: &PgUrl,
        _opts: &Options,
        initial: &mut dyn FnMut(&mut dyn RowWrite) -> Result<()>,
    ) -> Result<Self> {
        let config = config_of(url)?;
        let shown = url.to_string();
        let mut client = config
            .connect(NoTls)
            .map_err(|e| server_error(&shown, &e))?;
        let names = Names::new(&url.store);
        let mut tx = client.transaction().map_err(|e| server_error(&shown, &e))?;
        let ddl = format!(
            "CREATE TABLE {} (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE {} (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE {} (k bytea PRIMARY KEY);
             CREATE TABLE {} (k bytea PRIMARY KEY);",
            names.data, names.meta, names.expiry, names.locks
        );
        if let Err(e) = tx.batch_execute(&ddl) {
            if e.code() == Some(&SqlState::DUPLICATE_TABLE) {
                return Err(Error::AlreadyExists(shown.into()));
            }
            return Err(server_error(&shown, &e));
        }
        let mut w = PgWrite::new(tx, &names, &shown, None);
        initial(&mut w)?;
        w.commit()?;
        drop(client);
        Self::assemble(url, config, names, false)
    }

    fn assemble(
        url: &PgUrl,
        config: postgres::Config,
        names: Names,
        read_only: bool,
    ) -> Result<Self> {
        let build = |max: u32| {
            Pool::builder()
                .max_size(max)
                .min_idle(Some(0))
                .test_on_check_out(false)
                .connection_timeout(Duration::from_secs(10))
                .connection_customizer(Box::new(Setup { read_only }))
                .build_unchecked(Manager::new(config.clone(), NoTls))
        };
        Ok(Self {
            shown: url.to_string(),
            names: Arc::new(names),
            pool: build(POOL),
            lock_pool: build(LOCK_POOL),
            read_only,
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
        pool.get().map_err(|e| Error::Server {
            what: format!("{}: no connection to the server: {e}", self.shown),
            hint: "is PostgreSQL running and reachable?",
            transient: true,
        })
    }

    fn lock_row(&self, session: Option<&str>, lock_key: &str) -> Vec<u8> {
        let salt = self.lock_salt.get().copied().unwrap_or_default();
        let mut h = blake3::Hasher::new();
        h.update(&salt);
        match session {
            None => h.update(&[0]),
            Some(s) => h
                .update(&[1])
                .update(&(s.len() as u64).to_le_bytes())
                .update(s.as_bytes()),
        };
        h.update(lock_key.as_bytes());
        h.finalize().as_bytes()[..16].to_vec()
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
        conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
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
        let mut tx = conn.transaction().map_err(|e| server_error(shown, &e))?;
        // The keyring record's row lock: commits to this store, from any process on any
        // host, run one at a time from here to their commit.
        let keyring = tx
            .query_typed_opt(
                &format!("SELECT v FROM {} WHERE k = $1 FOR UPDATE", self.names.meta),
                &[(&META_KEYRING.as_bytes(), Type::BYTEA)],
            )
            .map_err(|e| server_error(shown, &e))?
            .map(|row| row.get::<_, Vec<u8>>(0));
        let mut w = PgWrite::new(tx, &self.names, shown, Some(keyring));
        f(&mut w)?;
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

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn lock(
        &self,
        session: Option<&str>,
        lock_key: &str,
        timeout: Duration,
    ) -> Result<Option<LockGuard<'_>>> {
        let row = self.lock_row(session, lock_key);
        let started = Instant::now();
        let mut conn = self.conn(&self.lock_pool)?;
        let shown = &self.shown;
        let insert = format!(
            "INSERT INTO {} (k) VALUES ($1) ON CONFLICT (k) DO NOTHING",
            self.names.locks
        );
        conn.query_typed(&insert, &[(&row, Type::BYTEA)])
            .map_err(|e| server_error(shown, &e))?;
        conn.batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = {}",
            timeout.as_millis().clamp(1, i32::MAX as u128)
        ))
        .map_err(|e| server_error(shown, &e))?;
        let select = format!("SELECT k FROM {} WHERE k = $1 FOR UPDATE", self.names.locks);
        match conn.query_typed(&select, &[(&row, Type::BYTEA)]) {
            Ok(_) => Ok(Some(Box::new(PgLock { conn }))),
            Err(e) => {
                let _ = conn.batch_execute("ROLLBACK");
                if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                    Err(Error::LockTimeout {
                        waited: started.elapsed(),
                    })
                } else {
                    Err(server_error(shown, &e))
                }
            }
        }
    }

    fn size(&self) -> u64 {
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

    fn compact(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let mut conn = self.conn(&self.pool)?;
        let n = &self.names;
        conn.batch_execute(&format!(
            "VACUUM {}, {}, {}, {}",
            n.data, n.meta, n.expiry, n.locks
        ))
        .map_err(|e| server_error(&self.shown, &e))
    }
}

/// A held lock key: a transaction holding the lock row, rolled back on drop.
struct PgLock {
    conn: Conn,
}

impl Drop for PgLock {
    fn drop(&mut self) {
        // A connection that cannot roll back is broken: the server ends its
        // transaction (and the lock) when it notices, and the pool discards it.
        let _ = self.conn.batch_execute("ROLLBACK");
    }
}

/// Reads one row.
fn get_row(
    client: &mut impl GenericClient,
    names: &Names,
    shown: &str,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>> {
    let sql = match table {
        Table::Expiry => format!("SELECT ''::bytea FROM {} WHERE k = $1", names.expiry),
        t => format!("SELECT v FROM {} WHERE k = $1", names.of(t)),
    };
    client
        .query_typed_opt(&sql, &[(&key, Type::BYTEA)])
        .map(|row| row.map(|r| r.get::<_, Vec<u8>>(0)))
        .map_err(|e| server_error(shown, &e))
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
    client: &mut impl GenericClient,
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
        let rows = client
            .query_typed(&sql, &typed(&params))
            .map_err(|e| server_error(shown, &e))?;
        let full = rows.len() as i64 == PAGE;
        for row in &rows {
            let (k, v): (&[u8], &[u8]) = (row.get(0), row.get(1));
            if !visit(k, v)? {
                return Ok(());
            }
        }
        match rows.last() {
            Some(last) if full => after = Some(last.get::<_, Vec<u8>>(0)),
            _ => return Ok(()),
        }
    }
}

fn count_rows(
    client: &mut impl GenericClient,
    names: &Names,
    shown: &str,
    table: Table,
) -> Result<u64> {
    client
        .query_typed_one(&format!("SELECT count(*) FROM {}", names.of(table)), &[])
        .map(|r| r.get::<_, i64>(0).max(0) as u64)
        .map_err(|e| server_error(shown, &e))
}

fn has_rows(
    client: &mut impl GenericClient,
    names: &Names,
    shown: &str,
    table: Table,
) -> Result<bool> {
    client
        .query_typed_one(
            &format!("SELECT EXISTS (SELECT 1 FROM {})", names.of(table)),
            &[],
        )
        .map(|r| r.get::<_, bool>(0))
        .map_err(|e| server_error(shown, &e))
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
            let _ = lock(&self.conn).batch_execute("ROLLBACK");
        }
    }
}

impl RowRead for PgView {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        let mut conn = lock(&self.conn);
        Ok(get_row(&mut **conn, &self.names, &self.shown, table, key)?.map(Found::Owned))
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

/// Buffered changes: (table, key) → value, or `None` to delete.
type Pending = BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>;

/// A write transaction: puts and deletes wait in `pending` (reads of single rows see
/// them there) and go to the server as a few array statements before any range read
/// and at commit.
struct PgWrite<'c> {
    tx: RefCell<Transaction<'c>>,
    names: &'c Names,
    shown: &'c str,
    pending: RefCell<Pending>,
    /// The keyring record as read under its row lock (`None` inside `create`).
    keyring: Option<Option<Vec<u8>>>,
}

impl<'c> PgWrite<'c> {
    fn new(
        tx: Transaction<'c>,
        names: &'c Names,
        shown: &'c str,
        keyring: Option<Option<Vec<u8>>>,
    ) -> Self {
        Self {
            tx: RefCell::new(tx),
            names,
            shown,
            pending: RefCell::new(BTreeMap::new()),
            keyring,
        }
    }

    /// Sends the pending puts and deletes: per table, one upsert of every put and one
    /// delete of every deleted key.
    fn flush(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return Ok(());
        }
        let mut tx = self.tx.borrow_mut();
        for table in [Table::Data, Table::Meta, Table::Expiry] {
            let mut put_keys: Vec<&[u8]> = Vec::new();
            let mut put_values: Vec<&[u8]> = Vec::new();
            let mut deleted: Vec<&[u8]> = Vec::new();
            for ((t, k), v) in &pending {
                if *t != table {
                    continue;
                }
                match v {
                    Some(v) => {
                        put_keys.push(k);
                        put_values.push(v);
                    }
                    None => deleted.push(k),
                }
            }
            let name = self.names.of(table);
            if !deleted.is_empty() {
                tx.query_typed(
                    &format!("DELETE FROM {name} WHERE k = ANY($1)"),
                    &[(&deleted, Type::BYTEA_ARRAY)],
                )
                .map_err(|e| server_error(self.shown, &e))?;
            }
            if put_keys.is_empty() {
                continue;
            }
            let result = if table == Table::Expiry {
                tx.query_typed(
                    &format!(
                        "INSERT INTO {name} (k) SELECT * FROM unnest($1::bytea[]) \
                         ON CONFLICT (k) DO NOTHING"
                    ),
                    &[(&put_keys, Type::BYTEA_ARRAY)],
                )
            } else {
                tx.query_typed(
                    &format!(
                        "INSERT INTO {name} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                         ON CONFLICT (k) DO UPDATE SET v = excluded.v"
                    ),
                    &[
                        (&put_keys, Type::BYTEA_ARRAY),
                        (&put_values, Type::BYTEA_ARRAY),
                    ],
                )
            };
            result.map_err(|e| server_error(self.shown, &e))?;
        }
        Ok(())
    }

    fn commit(self) -> Result<()> {
        self.flush()?;
        self.tx
            .into_inner()
            .commit()
            .map_err(|e| server_error(self.shown, &e))
    }
}

impl RowRead for PgWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        if let Some(v) = self.pending.borrow().get(&(table, key.to_vec())) {
            return Ok(v.clone().map(Found::Owned));
        }
        if table == Table::Meta
            && key == META_KEYRING.as_bytes()
            && let Some(known) = &self.keyring
        {
            return Ok(known.clone().map(Found::Owned));
        }
        let mut tx = self.tx.borrow_mut();
        Ok(get_row(&mut *tx, self.names, self.shown, table, key)?.map(Found::Owned))
    }
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        self.flush()?;
        let mut tx = self.tx.borrow_mut();
        scan_rows(&mut *tx, self.names, self.shown, table, range, visit)
    }
    fn len(&self, table: Table) -> Result<u64> {
        self.flush()?;
        count_rows(&mut *self.tx.borrow_mut(), self.names, self.shown, table)
    }
    fn is_empty(&self, table: Table) -> Result<bool> {
        self.flush()?;
        has_rows(&mut *self.tx.borrow_mut(), self.names, self.shown, table).map(|has| !has)
    }
}

impl RowWrite for PgWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        if table == Table::Meta && key == META_KEYRING.as_bytes() {
            self.keyring = Some(Some(value.to_vec()));
        }
        self.pending
            .get_mut()
            .insert((table, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.pending.get_mut().insert((table, key.to_vec()), None);
        Ok(())
    }
    fn delete_range(&mut self, table: Table, range: Range<'_>) -> Result<()> {
        self.flush()?;
        let mut params = Vec::new();
        let cond = range_sql(range, &mut params);
        self.tx
            .get_mut()
            .query_typed(
                &format!("DELETE FROM {} WHERE {cond}", self.names.of(table)),
                &typed(&params),
            )
            .map_err(|e| server_error(self.shown, &e))?;
        Ok(())
    }
}
