//! What only the PostgreSQL engine has: copies between engines, a connection killed in
//! the middle of a commit, what `pg_dump` shows, and the server's bad inputs. They run
//! against the server `SEALKV_TEST_PG` names (`scripts/test` starts one); without it
//! they pass vacuously unless `SEALKV_REQUIRE_PG` is set, as it is in CI.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use sealkv_engine::{Batch, Error, MasterKey, Options, Store};

/// A direct client to the test server, for disturbing and inspecting it.
fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// Every row of a store's data and meta tables, to check that nothing changed.
fn table_rows(client: &mut postgres::Client, store: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rows = Vec::new();
    for table in [
        format!("sealkv_{store}_data"),
        format!("sealkv_{store}_meta"),
    ] {
        for row in client
            .query(&format!("SELECT k, v FROM \"{table}\" ORDER BY k"), &[])
            .unwrap()
        {
            rows.push((row.get(0), row.get(1)));
        }
    }
    rows
}

fn store_name(addr: &std::path::Path) -> String {
    addr.to_str()
        .unwrap()
        .rsplit_once("store=")
        .unwrap()
        .1
        .to_string()
}

/// All values of a store, by session, namespace and key.
fn contents(store: &Store) -> BTreeMap<(String, String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut sessions = vec![store.default_session()];
    for id in store.sessions().unwrap() {
        sessions.push(store.session(&id).unwrap());
    }
    for s in sessions {
        let id = s.id().unwrap_or("").to_string();
        for ns in s.namespaces().unwrap() {
            let keys = s.list(&ns).unwrap();
            for (k, v) in s.get(&ns, &keys).unwrap() {
                out.insert((id.clone(), ns.clone(), k), v.to_vec());
            }
        }
    }
    out
}

#[test]
fn backup_moves_a_store_between_engines_both_ways() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url));
    let file = pg.dir.path().join("origin.sealkv");
    let origin = Store::create(&file, key(), fast_opts()).unwrap();
    let mut b = Batch::new();
    for i in 0..300 {
        b.put("pre-key", &i.to_string(), vec![i as u8; 40 + i]);
    }
    b.put_with_ttl("cache", "c", b"lives".to_vec(), Duration::from_secs(3600));
    origin.set(&b).unwrap();
    origin
        .session("4915550001")
        .unwrap()
        .put("creds", "me", b"{}".to_vec())
        .unwrap();
    origin.rotate().unwrap();
    origin
        .put("pre-key", "after-rotation", b"x".to_vec())
        .unwrap();
    let want = contents(&origin);

    // File → PostgreSQL: the rows as they are; the copy opens with the same key.
    let remote = pg.addr("moved");
    origin.backup(&remote).unwrap();
    assert!(matches!(
        origin.backup(&remote),
        Err(Error::AlreadyExists(_))
    ));
    let on_server = Store::open(&remote, key(), fast_opts()).unwrap();
    assert_eq!(contents(&on_server), want);
    assert!(on_server.verify().unwrap().is_empty());
    assert_eq!(on_server.stats().unwrap().keys.len(), 2);
    let wrong = MasterKey::from_bytes(&[7; 32]).unwrap();
    assert!(matches!(
        Store::open(&remote, wrong, fast_opts()),
        Err(Error::WrongKey)
    ));
    // It is a working store: written, then copied back to a file.
    on_server
        .put("pre-key", "on-server", b"y".to_vec())
        .unwrap();
    let back = pg.dir.path().join("back.sealkv");
    on_server.backup(&back).unwrap();
    let returned = Store::open(&back, key(), fast_opts()).unwrap();
    let mut want = want;
    want.insert(
        (String::new(), "pre-key".into(), "on-server".into()),
        b"y".to_vec(),
    );
    assert_eq!(contents(&returned), want);
    assert!(returned.verify().unwrap().is_empty());
    // PostgreSQL → PostgreSQL too.
    on_server.backup(pg.addr("again")).unwrap();
    let again = Store::open(pg.addr("again"), key(), fast_opts()).unwrap();
    assert_eq!(contents(&again), want);
}

/// Waits until a backend of the store's pool waits for a lock in a statement on
/// `table`, and terminates it (tests of other stores run at the same time).
fn terminate_waiting_backend(admin: &mut postgres::Client, table: &str) {
    let started = Instant::now();
    loop {
        let rows = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'sealkv' \
                 AND wait_event_type = 'Lock' AND strpos(query, $1) > 0",
                &[&table],
            )
            .unwrap();
        if let Some(row) = rows.first() {
            let pid: i32 = row.get(0);
            admin
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .unwrap();
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no sealkv backend ever waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_connection_killed_mid_commit_applies_all_or_nothing() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let addr = pg.addr("killed");
    let table = format!("sealkv_{}_data", store_name(&addr));
    let once = Options {
        commit_retries: 0,
        // Not even the retries that ride a failover.
        failover_timeout: Duration::ZERO,
        ..fast_opts()
    };
    let store = Store::create(&addr, key(), once).unwrap();
    store.put("n", "x", b"old".to_vec()).unwrap();
    let batch = || {
        let mut b = Batch::new();
        for i in 0..500 {
            b.put("n", &format!("k{i}"), vec![1; 100]);
        }
        b.put("n", "x", b"new".to_vec());
        b
    };

    // Another session holds every existing row: the commit's upsert writes its new
    // rows, then waits on "x", and its connection is killed there.
    let mut holder = admin(&url);
    let mut held = holder.transaction().unwrap();
    held.query(&format!("SELECT k FROM \"{table}\" FOR UPDATE"), &[])
        .unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.set(&batch()))
    };
    terminate_waiting_backend(&mut admin(&url), &table);
    let failed = writer.join().unwrap();
    assert!(
        matches!(failed, Err(Error::CommitFailed { .. })),
        "{failed:?}"
    );
    held.rollback().unwrap();
    assert_eq!(store.count("n").unwrap(), 1, "nothing of the killed commit");
    assert_eq!(&store.get_one("n", "x").unwrap().unwrap()[..], b"old");
    assert!(!store.is_poisoned(), "a server failure does not poison");

    // With retries, the same kill is survived: the retry commits the whole batch.
    let patient = Store::open(
        &addr,
        key(),
        Options {
            commit_retries: 3,
            commit_retry_delay: Duration::from_millis(50),
            ..fast_opts()
        },
    )
    .unwrap();
    let mut held = holder.transaction().unwrap();
    held.query(&format!("SELECT k FROM \"{table}\" FOR UPDATE"), &[])
        .unwrap();
    let writer = {
        let store = patient.clone();
        std::thread::spawn(move || store.set(&batch()))
    };
    terminate_waiting_backend(&mut admin(&url), &table);
    // Let the retry queue up behind the lock again, then release it.
    std::thread::sleep(Duration::from_millis(300));
    held.rollback().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(patient.count("n").unwrap(), 501);
    assert_eq!(&patient.get_one("n", "x").unwrap().unwrap()[..], b"new");
    assert!(patient.verify().unwrap().is_empty());
}

#[test]
fn pg_dump_shows_no_name_and_no_value() {
    let Some(url) = test_pg() else { return };
    let bin = std::env::var("SEALKV_TEST_PG_BIN").map(PathBuf::from);
    let Ok(bin) = bin else {
        assert!(
            std::env::var_os("SEALKV_REQUIRE_PG").is_none(),
            "SEALKV_TEST_PG_BIN unset"
        );
        return;
    };
    let pg = Place::new(Some(url.clone()));
    let store = Store::create(
        pg.addr("dumped"),
        key(),
        Options {
            // Uncompressed values: a leak would show the marker verbatim.
            compression: sealkv_engine::Compression::NONE,
            ..fast_opts()
        },
    )
    .unwrap();
    let secrets = [
        "4915550001",
        "namespace-marker",
        "key-name-marker",
        "value-plaintext-marker",
        "lock-key-marker",
    ];
    let session = store.session(secrets[0]).unwrap();
    session
        .put(secrets[1], secrets[2], secrets[3].as_bytes().to_vec())
        .unwrap();
    session
        .transaction(secrets[4], |tx| {
            tx.put_with_ttl(
                secrets[1],
                "expiring",
                secrets[3].as_bytes().to_vec(),
                Duration::from_secs(60),
            );
            Ok::<_, Error>(())
        })
        .unwrap();
    // The dump of the whole database, password from the environment.
    let parsed: postgres::Config = url.parse().unwrap();
    let password = String::from_utf8(parsed.get_password().unwrap().to_vec()).unwrap();
    let without_password = url.replace(&format!(":{password}@"), "@");
    let out = std::process::Command::new(bin.join("pg_dump"))
        .arg(&without_password)
        .env("PGPASSWORD", &password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(dump.contains(&format!("sealkv_{}_data", store_name(&pg.addr("dumped")))));
    for secret in secrets {
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!dump.contains(secret), "{secret} in the dump");
        assert!(!dump.contains(&hex), "{secret} (hex) in the dump");
    }
}

#[test]
fn bad_addresses_and_servers_get_clear_errors_and_nothing_is_written() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let addr = pg.addr("guarded");
    let name = store_name(&addr);
    drop(Store::create(&addr, key(), fast_opts()).unwrap());
    let mut client = admin(&url);
    let before = table_rows(&mut client, &name);
    let server = |e: Result<Store, Error>| match e {
        Err(Error::Server {
            what,
            hint,
            transient,
        }) => (what, hint, transient),
        other => panic!("not a server error: {other:?}"),
    };

    // Nobody listens there.
    let (what, _, transient) = server(Store::open(
        "postgres://sealkv@127.0.0.1:1/sealkv_test?store=x",
        key(),
        fast_opts(),
    ));
    assert!(what.contains("cannot reach") && transient, "{what}");

    // Wrong password: said so, and the password is in no message.
    let parsed: postgres::Config = url.parse().unwrap();
    let password = String::from_utf8(parsed.get_password().unwrap().to_vec()).unwrap();
    let wrong = addr
        .to_str()
        .unwrap()
        .replace(&format!(":{password}@"), ":not-the-password@");
    let (what, hint, transient) = server(Store::open(&wrong, key(), fast_opts()));
    assert!(what.contains("password authentication failed"), "{what}");
    assert!(hint.contains("PGPASSWORD") && !transient);
    assert!(!what.contains("not-the-password"));
    let shown = format!("{:?}", Store::open(&addr, key(), fast_opts()).unwrap());
    assert!(!shown.contains(&password), "{shown}");

    // No such store; a table of that name that is not a store.
    let (what, _, _) = server(Store::open(pg.addr("absent"), key(), fast_opts()));
    assert!(what.contains("no sealkv store named"), "{what}");
    let other = pg.addr("other");
    client
        .batch_execute(&format!(
            "CREATE TABLE \"sealkv_{0}_data\" (id int); CREATE TABLE \"sealkv_{0}_meta\" (id int)",
            store_name(&other)
        ))
        .unwrap();
    assert!(matches!(
        Store::open(&other, key(), fast_opts()),
        Err(Error::NotSealkv(_))
    ));

    // Wrong key, an existing store, a malformed address.
    let wrong_key = MasterKey::from_bytes(&[9; 32]).unwrap();
    assert!(matches!(
        Store::open(&addr, wrong_key, fast_opts()),
        Err(Error::WrongKey)
    ));
    assert!(matches!(
        Store::create(&addr, key(), fast_opts()),
        Err(Error::AlreadyExists(_))
    ));
    let (what, _, _) = server(Store::open(
        format!("{url}?store=Bad-Name"),
        key(),
        fast_opts(),
    ));
    assert!(what.contains("Bad-Name"), "{what}");
    assert_eq!(
        table_rows(&mut client, &name),
        before,
        "nothing was written"
    );

    // A store written by a newer format.
    client
        .execute(
            &format!("UPDATE \"sealkv_{name}_meta\" SET v = $1 WHERE k = $2"),
            &[&99u32.to_le_bytes().to_vec(), &b"format".to_vec()],
        )
        .unwrap();
    let tampered = table_rows(&mut client, &name);
    assert!(matches!(
        Store::open(&addr, key(), fast_opts()),
        Err(Error::NewerFormat { found: 99, .. })
    ));
    assert_eq!(table_rows(&mut client, &name), tampered);
}

#[test]
fn a_read_only_open_cannot_write() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url));
    let addr = pg.addr("ro");
    Store::create(&addr, key(), fast_opts())
        .unwrap()
        .put("n", "k", b"v".to_vec())
        .unwrap();
    let ro = Store::open_read_only(&addr, key(), fast_opts()).unwrap();
    assert_eq!(&ro.get_one("n", "k").unwrap().unwrap()[..], b"v");
    assert!(matches!(
        ro.put("n", "k2", b"w".to_vec()),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(ro.compact(), Err(Error::ReadOnly)));
    assert!(ro.verify().unwrap().is_empty());
}

#[test]
fn a_store_on_the_server_works_from_inside_async_runtimes() {
    // rust-postgres' client cannot block on a thread that runs a tokio runtime; the
    // engine moves such calls off it. Every operation, including the drops that close
    // connections, runs here on a runtime's thread.
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url));
    let addr = pg.addr("async");
    for runtime in [
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap(),
    ] {
        let addr = addr.clone();
        runtime.block_on(async move {
            let store = match Store::create(&addr, key(), fast_opts()) {
                Err(Error::AlreadyExists(_)) => Store::open(&addr, key(), fast_opts()).unwrap(),
                other => other.unwrap(),
            };
            store.put("n", "k", b"v".to_vec()).unwrap();
            store
                .transaction("lock", |tx| {
                    tx.put("n", "in-tx", b"w".to_vec());
                    Ok::<_, Error>(())
                })
                .unwrap();
            assert_eq!(store.list("n").unwrap(), vec!["in-tx", "k"]);
            assert!(store.verify().unwrap().is_empty());
            assert!(store.stats().unwrap().file_size > 0);
            drop(store);
        });
    }
}

#[test]
fn a_lock_key_lost_with_its_session_fails_the_transaction_and_writes_nothing() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let addr = pg.addr("lapse");
    let locks = format!("sealkv_{}_locks", store_name(&addr));
    let store = Store::create(&addr, key(), fast_opts()).unwrap();
    let result = store.transaction("4915550001", |tx| {
        tx.put("n", "k", b"v".to_vec());
        // The server ends the session holding the lock key (a restart, a failover, an
        // administrator): another host could now take it.
        let mut admin = admin(&url);
        let ended: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'sealkv' AND state = 'idle in transaction' \
                 AND strpos(query, $1) > 0",
                &[&locks],
            )
            .unwrap()
            .get(0);
        assert_eq!(ended, 1, "the lock key's session");
        Ok::<_, Error>(())
    });
    match result {
        Err(Error::LockLost) => {}
        other => panic!("the transaction committed without its lock: {other:?}"),
    }
    assert!(
        store.get_one("n", "k").unwrap().is_none(),
        "nothing written"
    );
    // The store goes on: the next transaction takes the lock afresh.
    store
        .transaction("4915550001", |tx| {
            tx.put("n", "k", b"v".to_vec());
            Ok::<_, Error>(())
        })
        .unwrap();
    assert!(store.get_one("n", "k").unwrap().is_some());
}

#[test]
fn backup_between_every_engine_and_mode_opens_and_round_trips() {
    use sealkv_engine::Concurrency;
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url));
    let origins = [
        (
            "exclusive file",
            pg.dir.path().join("exclusive.sealkv"),
            Concurrency::Exclusive,
        ),
        (
            "shared file",
            pg.dir.path().join("shared.sealkv"),
            Concurrency::Shared,
        ),
        (
            "multi-writer file",
            pg.dir.path().join("multi.sealkv"),
            Concurrency::MultiWriter,
        ),
        // Every store on a server is written by its processes directly.
        ("server", pg.addr("origin"), Concurrency::MultiWriter),
    ];
    for (i, (what, addr, mode)) in origins.iter().enumerate() {
        let origin = Store::create(
            addr,
            key(),
            Options {
                concurrency: *mode,
                ..fast_opts()
            },
        )
        .unwrap();
        origin.put("pre-key", "1", b"one".to_vec()).unwrap();
        origin
            .session("4915550001")
            .unwrap()
            .put("session", "s", b"two".to_vec())
            .unwrap();
        let expected = contents(&origin);
        let to_file = pg.dir.path().join(format!("copy{i}.sealkv"));
        let to_server = pg.addr(&format!("copy{i}"));
        for (j, dest) in [&to_file, &to_server].into_iter().enumerate() {
            origin.backup(dest).unwrap();
            let copy = Store::open(dest, key(), fast_opts())
                .unwrap_or_else(|e| panic!("a copy of the {what} at {dest:?} opens: {e}"));
            assert_eq!(contents(&copy), expected, "{what} -> {dest:?}");
            assert!(copy.verify().unwrap().is_empty());
            copy.put("n", "after", b"writable".to_vec()).unwrap();
            // And back again, into each engine.
            let back_file = pg.dir.path().join(format!("back{i}-{j}.sealkv"));
            copy.backup(&back_file).unwrap();
            let back = Store::open(&back_file, key(), fast_opts()).unwrap();
            assert_eq!(
                back.get_one("n", "after").unwrap().unwrap().to_vec(),
                b"writable"
            );
        }
        // The origin is untouched and still opens in its own mode (asked for it: a
        // multi-writer file opened with the default options moves to the owner mode).
        drop(origin);
        let again = Store::open(
            addr,
            key(),
            Options {
                concurrency: *mode,
                ..fast_opts()
            },
        )
        .unwrap();
        assert_eq!(again.concurrency(), *mode, "{what}");
    }
}

#[test]
fn multi_key_reads_and_listings_see_another_hosts_batch_whole_or_not_at_all() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url));
    let addr = pg.addr("flip");
    let writer = Store::create(&addr, key(), fast_opts()).unwrap();
    let mut b = Batch::new();
    b.put("n", "a", b"0".to_vec()).put("n", "b", b"0".to_vec());
    // Values that move between two sets of keys together, more than a page of a scan
    // (512 rows): a listing sees one set whole.
    const MOVING: usize = 600;
    for k in 0..MOVING {
        b.put("m", &format!("x{k}"), b"here".to_vec());
    }
    writer.set(&b).unwrap();
    let reader = Store::open(&addr, key(), fast_opts()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flips = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let v = i.to_string().into_bytes();
                let mut b = Batch::new();
                b.put("n", "a", v.clone()).put("n", "b", v);
                if i.is_multiple_of(8) {
                    let (from, to) = if i.is_multiple_of(16) {
                        ("y", "x")
                    } else {
                        ("x", "y")
                    };
                    for k in 0..MOVING {
                        b.put("m", &format!("{to}{k}"), b"here".to_vec());
                        b.delete("m", &format!("{from}{k}"));
                    }
                }
                writer.set(&b).unwrap();
            }
            i
        })
    };
    for i in 0..400 {
        let got = reader.get("n", &["a", "b"]).unwrap();
        assert_eq!(got["a"], got["b"], "half of a batch seen");
        if i % 10 == 0 {
            assert_eq!(
                reader.list("m").unwrap().len(),
                MOVING,
                "a move seen half done"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(flips.join().unwrap() > 10, "the writer kept writing");
}

#[test]
fn null_values_behind_the_stores_back_are_errors_not_panics_and_such_tables_are_refused() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let addr = pg.addr("nulls");
    let data = format!("sealkv_{}_data", store_name(&addr));
    let store = Store::create(&addr, key(), fast_opts()).unwrap();
    let mut b = Batch::new();
    b.put("n", "a", b"1".to_vec()).put("n", "b", b"2".to_vec());
    store.set(&b).unwrap();
    let mut admin = admin(&url);
    admin
        .batch_execute(&format!(
            "ALTER TABLE \"{data}\" ALTER COLUMN v DROP NOT NULL; UPDATE \"{data}\" SET v = NULL"
        ))
        .unwrap();
    // Every read path meets a NULL: an error naming the store, never a panic, and the
    // store is not poisoned by it.
    assert!(matches!(store.get_one("n", "a"), Err(Error::Corrupt(_))));
    assert!(matches!(
        store.get("n", &["a", "b"]),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(store.list("n"), Err(Error::Corrupt(_))));
    assert!(store.verify().is_err());
    assert!(!store.is_poisoned());
    drop(store);
    // A table that allows NULL is not a store's.
    assert!(matches!(
        Store::open(&addr, key(), fast_opts()),
        Err(Error::NotSealkv(_))
    ));
}

#[test]
fn verify_reports_rows_of_foreign_shape_put_in_behind_the_stores_back() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let addr = pg.addr("foreign");
    let name = store_name(&addr);
    let store = Store::create(&addr, key(), fast_opts()).unwrap();
    store.put("n", "a", b"1".to_vec()).unwrap();
    assert!(store.verify().unwrap().is_empty());
    admin(&url)
        .batch_execute(&format!(
            "INSERT INTO \"sealkv_{name}_data\" VALUES ('\\x0102'::bytea, '\\x00'::bytea); \
             INSERT INTO \"sealkv_{name}_expiry\" VALUES ('\\x03'::bytea)"
        ))
        .unwrap();
    let failures = store.verify().unwrap();
    // The two rows, and the content hash the data row no longer adds up to.
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert_eq!(
        failures
            .iter()
            .filter(|e| matches!(e, Error::Corrupt(_)))
            .count(),
        2
    );
    assert!(failures.iter().any(|e| matches!(e, Error::ContentChanged)));
}
