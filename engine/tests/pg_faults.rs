//! Faults between the engine and PostgreSQL, through a proxy that can lose a
//! `COMMIT`'s reply, or freeze a connection mid-commit: a commit is applied exactly
//! once or reported `outcome_unknown`, never replayed over another writer's
//! acknowledged commit; a transaction whose lock key lapsed before its commit writes
//! nothing; a host that froze holding the commit lock blocks the others only for the
//! stall timeout. Against the server `SEALKV_TEST_PG` names (`scripts/test` starts one).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::time::{Duration, Instant};

use common::*;
use proxy::Proxy;
use sealkv_engine::{Error, Options, Store};

fn pg_port(url: &str) -> u16 {
    let rest = url.split_once('@').unwrap().1;
    let hostport = rest.split_once('/').unwrap().0;
    hostport.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The store at `addr` as reached through `proxy`.
fn through(proxy: &Proxy, addr: &std::path::Path) -> std::path::PathBuf {
    proxy.url(addr.to_str().unwrap()).into()
}

fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// A store opened with room to retry: the retry comes well after the other writer.
fn patient() -> Options {
    Options {
        commit_retries: 3,
        commit_retry_delay: Duration::from_millis(1500),
        ..fast_opts()
    }
}

#[test]
fn a_lost_commit_reply_is_looked_up_not_replayed_over_a_newer_commit() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let proxy = Proxy::start(pg_port(&url));
    for other_deletes in [false, true] {
        let addr = pg.addr(if other_deletes {
            "lost_del"
        } else {
            "lost_put"
        });
        let b = Store::create(&addr, key(), fast_opts()).unwrap();
        let a = Store::open(through(&proxy, &addr), key(), patient()).unwrap();
        let cuts = proxy.cuts();
        proxy.cut_after_commit();
        // A's COMMIT takes effect on the server; its reply is lost with the connection.
        let writer = std::thread::spawn(move || {
            let r = a.put("pre-key", "1", b"from A".to_vec());
            (a, r)
        });
        assert!(proxy.wait_for(Duration::from_secs(10), |p| p.cuts() > cuts));
        // While A waits to retry, B commits a newer value (or consumes the key) and is
        // acknowledged.
        if other_deletes {
            assert!(b.delete("pre-key", "1").unwrap());
        } else {
            b.put("pre-key", "1", b"from B".to_vec()).unwrap();
        }
        let (a, result) = writer.join().unwrap();
        // A finds its own commit and reports it; it writes nothing again.
        result.unwrap();
        let expect = (!other_deletes).then(|| b"from B".to_vec());
        for store in [&a, &b] {
            assert_eq!(
                store.get_one("pre-key", "1").unwrap().map(|v| v.to_vec()),
                expect,
                "B's acknowledged write survives A's retry"
            );
        }
        // A goes on as usual.
        a.put("pre-key", "2", b"next".to_vec()).unwrap();
        assert!(b.verify().unwrap().is_empty());
    }
}

#[test]
fn a_lost_reply_whose_commit_was_pushed_out_of_the_record_is_unknown_never_replayed() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let proxy = Proxy::start(pg_port(&url));
    let addr = pg.addr("unknown");
    let b = Store::create(&addr, key(), fast_opts()).unwrap();
    let a = Store::open(through(&proxy, &addr), key(), patient()).unwrap();
    // One other writer committing more often than the record holds tokens does not
    // push A's out: the record keeps each writer's latest.
    proxy.cut_after_commit();
    let writer = std::thread::spawn(move || {
        let r = a.put("n", "k", b"from A".to_vec());
        (a, r)
    });
    assert!(proxy.wait_for(Duration::from_secs(10), |p| p.cuts() > 0));
    for i in 0..40 {
        b.put("n", "j", format!("B{i}").into_bytes()).unwrap();
    }
    let (_, found) = writer.join().unwrap();
    found.unwrap();
    assert_eq!(b.get_one("n", "k").unwrap().unwrap().to_vec(), b"from A");

    // More writers than the record keeps, the last of them overwriting A's value, all
    // before A retries.
    let a = Store::open(
        through(&proxy, &addr),
        key(),
        Options {
            commit_retries: 1,
            commit_retry_delay: Duration::from_secs(10),
            ..fast_opts()
        },
    )
    .unwrap();
    proxy.cut_after_commit();
    let cuts = proxy.cuts();
    let writer = std::thread::spawn(move || a.put("n", "k", b"from A again".to_vec()));
    assert!(proxy.wait_for(Duration::from_secs(10), |p| p.cuts() > cuts));
    for i in 0..40 {
        let other = Store::open(&addr, key(), fast_opts()).unwrap();
        other.put("n", "k", format!("B{i}").into_bytes()).unwrap();
    }
    match writer.join().unwrap() {
        Err(Error::CommitFailed {
            outcome_unknown: true,
            ..
        }) => {}
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    assert_eq!(
        b.get_one("n", "k").unwrap().unwrap().to_vec(),
        b"B39".to_vec()
    );
}

#[test]
fn a_lock_key_lost_while_its_commit_waits_writes_nothing() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let addr = pg.addr("lapse_wait");
    let store_name = addr
        .to_str()
        .unwrap()
        .rsplit_once("store=")
        .unwrap()
        .1
        .to_string();
    let a = Store::create(&addr, key(), fast_opts()).unwrap();
    a.put("n", "counter", b"0".to_vec()).unwrap();
    let b = Store::open(&addr, key(), fast_opts()).unwrap();
    // A's transaction holds its lock key and reads; then someone holds the store's
    // commit lock (a slow commit of another host), so A's commit waits for it.
    let (read_tx, read_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let r = a.transaction("4915550001", |tx| {
            let n: u32 = std::str::from_utf8(&tx.get("n", &["counter"])?["counter"])
                .unwrap()
                .parse()
                .unwrap();
            tx.put("n", "counter", (n + 1).to_string().into_bytes());
            read_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            Ok::<_, Error>(())
        });
        (a, r)
    });
    read_rx.recv().unwrap();
    let mut holder = admin(&url);
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM \"sealkv_{store_name}_meta\" WHERE k = 'keyring'::bytea FOR UPDATE"
        ))
        .unwrap();
    go_tx.send(()).unwrap();
    let mut watch = admin(&url);
    let waiting = |c: &mut postgres::Client, what: &str| -> i64 {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sealkv' \
             AND wait_event_type = 'Lock' AND strpos(query, $1) > 0",
            &[&what],
        )
        .unwrap()
        .get(0)
    };
    let end = Instant::now() + Duration::from_secs(10);
    while waiting(&mut watch, "AS keyring") == 0 {
        assert!(Instant::now() < end, "A's commit never waited");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Now the server ends the session holding A's lock key; B takes the key and
    // increments the counter.
    let ended: i64 = watch
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'sealkv' AND state = 'idle in transaction' \
             AND strpos(query, $1) > 0",
            &[&format!("sealkv_{store_name}_locks")],
        )
        .unwrap()
        .get(0);
    assert_eq!(ended, 1);
    let t2 = std::thread::spawn(move || {
        let r = b.transaction("4915550001", |tx| {
            let n: u32 = std::str::from_utf8(&tx.get("n", &["counter"])?["counter"])
                .unwrap()
                .parse()
                .unwrap();
            tx.put("n", "counter", (n + 1).to_string().into_bytes());
            Ok::<_, Error>(())
        });
        (b, r)
    });
    std::thread::sleep(Duration::from_millis(300));
    holder.batch_execute("ROLLBACK").unwrap();
    let (_a, ra) = t.join().unwrap();
    let (b, rb) = t2.join().unwrap();
    assert!(
        matches!(ra, Err(Error::LockLost)),
        "A committed on a lost lock: {ra:?}"
    );
    rb.unwrap();
    assert_eq!(
        b.get_one("n", "counter").unwrap().unwrap().to_vec(),
        b"1".to_vec(),
        "one increment, B's"
    );
}

#[test]
fn a_host_frozen_holding_the_commit_lock_blocks_others_only_for_the_stall_timeout() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let proxy = Proxy::start(pg_port(&url));
    let addr = pg.addr("frozen");
    let stall = Duration::from_secs(2);
    let b = Store::create(&addr, key(), fast_opts()).unwrap();
    let a = Store::open(
        through(&proxy, &addr),
        key(),
        Options {
            stall_timeout: stall,
            commit_retries: 0,
            ..fast_opts()
        },
    )
    .unwrap();
    // A's commit takes the store's commit lock, then its host goes silent.
    proxy.freeze_after("AS keyring");
    let writer = std::thread::spawn(move || a.put("n", "a", b"from A".to_vec()));
    assert!(proxy.wait_for(Duration::from_secs(10), |p| p.freezes() > 0));
    drop(b);
    let b = Store::open(
        &addr,
        key(),
        Options {
            lock_timeout: Duration::from_secs(1),
            commit_retries: 20,
            commit_retry_delay: Duration::from_millis(100),
            ..fast_opts()
        },
    )
    .unwrap();
    let started = Instant::now();
    b.put("n", "b", b"from B".to_vec()).unwrap();
    let waited = started.elapsed();
    // The server ended A's stalled commit after the stall timeout (a bound, with room
    // for a slow machine, not a performance figure).
    assert!(waited >= stall - Duration::from_millis(500), "{waited:?}");
    assert!(waited < stall + Duration::from_secs(8), "{waited:?}");
    proxy.close_all();
    // A's first attempt never reached its COMMIT (the server rolled it back): the
    // write is tried again on a new connection, as in a failover, and applied once.
    writer.join().unwrap().unwrap();
    assert_eq!(b.get_one("n", "a").unwrap().unwrap().to_vec(), b"from A");
    assert!(b.get_one("n", "b").unwrap().is_some());
}
