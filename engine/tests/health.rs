//! `Store::health`: what it reports of a healthy store, a lock key held too long, a
//! failed commit, a rotation due, and a server that went away.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use sealkv_engine::{Error, Options, Store};

#[test]
fn a_healthy_store_and_its_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());
    let h = store.health();
    assert!(h.is_healthy(), "{:?}", h.problems());
    assert_eq!(h.engine, "file");
    assert!(h.last_commit.is_none(), "no commit by this handle yet");
    store.put("n", "k", b"v".to_vec()).unwrap();
    let last = store.health().last_commit.unwrap();
    assert!(last.ok);
    assert!(last.age < Duration::from_secs(60));
}

#[test]
fn a_lock_key_held_too_long_is_a_problem_while_it_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());
    store
        .transaction("4915550001", |_| {
            std::thread::sleep(Duration::from_millis(20));
            let h = store.health_with(Duration::from_millis(10));
            assert_eq!(h.locks_held_too_long, 1);
            assert!(!h.is_healthy());
            assert!(h.problems()[0].contains("lock key"), "{:?}", h.problems());
            assert!(
                !h.problems()[0].contains("4915550001"),
                "the lock key leaked"
            );
            // Under the default threshold it is fine.
            assert!(store.health().is_healthy());
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(store.health_with(Duration::ZERO).locks_held_too_long, 0);
}

#[test]
fn a_failed_commit_and_a_poisoned_store_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(FaultState::default());
    let store = Store::create(
        dir.path().join("s.sealkv"),
        key(),
        faulty_opts(state.clone()),
    )
    .unwrap();
    state.arm(1, true);
    assert!(store.put("n", "k", b"v".to_vec()).is_err());
    let h = store.health();
    assert!(!h.is_healthy());
    assert!(h.poisoned);
    assert!(h.last_commit.is_some_and(|c| !c.ok));
    let problems = h.problems().join("; ");
    assert!(problems.contains("last commit failed"), "{problems}");
    assert!(problems.contains("reopened"), "{problems}");
}

#[test]
fn a_rotation_due_is_a_note_not_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_700_000_000));
    let clock = now.clone();
    let opts = Options {
        rotate_after: Some(Duration::from_secs(3600)),
        clock: Arc::new(move || clock.load(Ordering::SeqCst)),
        ..fast_opts()
    };
    let store = Store::create(dir.path().join("s.sealkv"), key(), opts).unwrap();
    assert!(!store.health().rotation_due);
    now.fetch_add(7200, Ordering::SeqCst);
    let h = store.health();
    assert!(h.rotation_due);
    assert!(h.is_healthy());
    assert!(h.notes()[0].contains("rotation"), "{:?}", h.notes());
}

#[test]
fn a_server_gone_makes_the_engine_unreachable() {
    let Some(url) = test_pg() else { return };
    let pg = Place::new(Some(url.clone()));
    let addr = pg.addr("health");
    Store::create(&addr, key(), fast_opts()).unwrap();
    let port: u16 = url
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = proxy::Proxy::start(port);
    let store = Store::open(
        proxy.url(addr.to_str().unwrap()),
        key(),
        Options {
            failover_timeout: Duration::from_millis(300),
            ..fast_opts()
        },
    )
    .unwrap();
    assert!(store.health().is_healthy());
    assert_eq!(store.health().engine, "postgres");
    // The server goes away: connections are cut and new ones refused.
    proxy.refuse_for(Duration::from_secs(60));
    proxy.close_all();
    let h = store.health();
    assert!(!h.is_healthy());
    let problems = h.problems().join("; ");
    assert!(problems.contains("cannot be read"), "{problems}");
}
