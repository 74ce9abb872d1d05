//! Commit failures injected through a `redb::StorageBackend` wrapper: retried, then
//! reported with nothing applied; the store refuses writes until reopened.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use sealkv_engine::{Batch, Error, Store};

type Contents = BTreeMap<(String, String), Vec<u8>>;

fn contents(store: &Store) -> Contents {
    let mut out = BTreeMap::new();
    for ns in store.namespaces().unwrap() {
        let keys = store.list(&ns).unwrap();
        for (k, v) in store.get(&ns, &keys).unwrap() {
            out.insert((ns.clone(), k), v.to_vec());
        }
    }
    out
}

#[test]
fn a_transient_fault_is_retried_and_the_commit_lands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.sealkv");
    let state = Arc::new(FaultState::default());
    let store = Store::create(&path, key(), faulty_opts(state.clone())).unwrap();
    store.put("n", "a", b"1".to_vec()).unwrap();
    state.arm(1, false); // the next write or sync fails once
    store.put("n", "b", b"2".to_vec()).unwrap();
    assert_eq!(state.failures.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!store.is_poisoned());
    assert_eq!(store.list("n").unwrap(), vec!["a", "b"]);
}

#[test]
fn persistent_faults_fail_the_commit_atomically_at_every_point() {
    // Sweep: fail the Nth write/sync/set_len of a multi-namespace commit, sticky (so
    // the retries fail too), for every N until the commit no longer reaches N.
    let mut n = 1;
    let mut swept = 0;
    let mut landed_despite_sync_error = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sealkv");
        let state = Arc::new(FaultState::default());
        let store = Store::create(&path, key(), faulty_opts(state.clone())).unwrap();
        let mut first = Batch::new();
        first
            .put("session", "s1", vec![1; 2000])
            .put("creds", "creds", vec![2; 300]);
        store.set(&first).unwrap();
        let before = contents(&store);
        let mut after_all = before.clone();
        after_all.insert(("session".into(), "s2".into()), vec![3; 2000]);
        after_all.insert(("pre-key".into(), "1".into()), vec![4; 100]);
        after_all.remove(&("creds".into(), "creds".into()));

        let mut second = Batch::new();
        second
            .put("session", "s2", vec![3; 2000])
            .put("pre-key", "1", vec![4; 100])
            .delete("creds", "creds");
        state.arm(n, true);
        let result = store.set(&second);
        let failed = state.failures.load(std::sync::atomic::Ordering::SeqCst) > 0;
        let kind = state.first_kind.load(std::sync::atomic::Ordering::SeqCst);
        state.disarm();
        match result {
            Ok(()) => {
                assert!(!failed, "N={n}: Ok although a fault fired");
                break; // N is past the last I/O of the commit
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::CommitFailed { attempts: 3, .. }),
                    "N={n}: {e:?}"
                );
                assert!(store.is_poisoned());
                assert!(
                    matches!(store.put("x", "y", vec![1]), Err(Error::Poisoned)),
                    "N={n}"
                );
            }
        }
        drop(store);
        let reopened = Store::open(&path, key(), fast_opts()).unwrap();
        let now = contents(&reopened);
        if kind == 2 {
            // A failed fsync: the bytes may have reached the file anyway, so the batch is
            // either wholly there or wholly absent, never in part.
            assert!(
                now == before || now == after_all,
                "N={n}: a failed sync left a partial batch"
            );
            if now == after_all {
                landed_despite_sync_error += 1;
            }
        } else {
            assert!(
                now == before,
                "N={n} (kind {kind}): a failed write left something behind"
            );
        }
        assert!(reopened.verify().unwrap().is_empty());
        reopened.put("after", "k", vec![1]).unwrap();
        swept += 1;
        n += 1;
        assert!(n < 500, "the commit should end within 500 I/O operations");
    }
    assert!(swept >= 2, "the sweep covered {swept} fault points");
    println!(
        "swept {swept} fault points; {landed_despite_sync_error} failed syncs left the batch visible"
    );
}

#[test]
fn concurrent_callers_sharing_a_failed_group_commit_all_see_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.sealkv");
    let state = Arc::new(FaultState::default());
    let store = Store::create(&path, key(), faulty_opts(state.clone())).unwrap();
    state.arm(1, true);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let store = &store;
                s.spawn(move || store.put("n", &t.to_string(), vec![1]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| r.is_err()));
    state.disarm();
    drop(store);
    let reopened = Store::open(&path, key(), fast_opts()).unwrap();
    assert!(reopened.namespaces().unwrap().is_empty());
}
