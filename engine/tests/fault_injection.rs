//! Commit failures injected through a `redb::StorageBackend` wrapper: retried, then
//! reported with nothing applied; the store refuses writes until reopened.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use sealkv_engine::{Batch, Concurrency, Error, Options, Secret, Store};
use tempfile::TempDir;

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

/// A new store in a temporary folder, on a [`Faulty`] backend whose `FaultState` the
/// test arms. The folder lives as long as the returned `TempDir`.
fn faulty_store(secret: impl Into<Secret>) -> (TempDir, PathBuf, Arc<FaultState>, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.sealkv");
    let state = Arc::new(FaultState::default());
    let store = Store::create(&path, secret, faulty_opts(state.clone())).unwrap();
    (dir, path, state, store)
}

#[test]
fn a_transient_fault_is_retried_and_the_commit_lands() {
    let (_dir, _path, state, store) = faulty_store(key());
    store.put("n", "a", b"1".to_vec()).unwrap();
    state.arm(1, false); // the next write or sync fails once
    store.put("n", "b", b"2".to_vec()).unwrap();
    assert_eq!(state.failures.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!store.is_poisoned());
    assert_eq!(store.list("n").unwrap(), vec!["a", "b"]);
}

#[test]
fn persistent_faults_fail_the_commit_atomically_at_every_point_shared() {
    sweep_persistent_faults(true);
}

#[test]
fn persistent_faults_fail_the_commit_atomically_at_every_point_exclusive() {
    sweep_persistent_faults(false);
}

fn sweep_persistent_faults(shared: bool) {
    // Sweep: fail the Nth write/sync/set_len of a multi-namespace commit, sticky (so
    // the retries fail too), for every N until the commit no longer reaches N.
    let mut n = 1;
    let mut swept = 0;
    let mut landed_despite_sync_error = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sealkv");
        let state = Arc::new(FaultState::default());
        let opts = Options {
            concurrency: if shared {
                Concurrency::Shared
            } else {
                Concurrency::Exclusive
            },
            ..faulty_opts(state.clone())
        };
        let store = Store::create(&path, key(), opts).unwrap();
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
        if kind == 2 || shared {
            // A failed fsync: the bytes may have reached the file anyway, so the batch is
            // either wholly there or wholly absent, never in part. In shared mode redb
            // writes its commit mark after the commit's pages and syncs, so a failed
            // write can also follow a commit that is durable.
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
    let (_dir, path, state, store) = faulty_store(key());
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

/// A workload of a transaction, a rotation, a re-encryption and a rekey, with the Nth
/// write/sync/set_len failing (and every one after it), for every N until the workload
/// runs clean. After each failure the store reopens (with whichever secret is valid)
/// and holds exactly the acknowledged writes, every value opening.
#[test]
fn fault_sweep_over_transactions_rotation_reencryption_and_rekey() {
    let mut n = 1;
    let mut points = 0;
    loop {
        let (_dir, path, state, store) = faulty_store(passphrase("one"));
        let mut b = Batch::new();
        for i in 0..40 {
            b.put(
                &format!("ns{}", i % 2),
                &format!("k{i}"),
                vec![i as u8; 300],
            );
        }
        store.set(&b).unwrap();
        let mut model = contents(&store);
        let mut with_tx = model.clone();
        with_tx.insert(("ns0".into(), "new".into()), vec![9; 100]);
        with_tx.remove(&("ns1".into(), "k1".into()));

        // The workload, stopping at its first error; what was acknowledged is noted.
        state.arm(n, true);
        let mut tx_acked = false;
        let mut rekeyed = false;
        let outcome = (|| -> Result<(), Error> {
            store.transaction("acct", |tx| {
                tx.put("ns0", "new", vec![9; 100]);
                tx.delete("ns1", "k1");
                Ok::<_, Error>(())
            })?;
            tx_acked = true;
            store.rotate()?;
            store.reencrypt(7, |_| {})?;
            store.rekey(passphrase("two"))?;
            rekeyed = true;
            Ok(())
        })();
        let fired = state.failures.load(std::sync::atomic::Ordering::SeqCst) > 0;
        state.disarm();
        drop(store);
        if tx_acked {
            model = with_tx.clone();
        }

        let reopened = if rekeyed {
            // An acknowledged rekey: only the new secret opens the store.
            assert!(
                matches!(
                    Store::open(&path, passphrase("one"), fast_opts()),
                    Err(Error::WrongKey)
                ),
                "N={n}"
            );
            Store::open(&path, passphrase("two"), fast_opts()).unwrap()
        } else {
            Store::open(&path, passphrase("one"), fast_opts())
                .or_else(|_| Store::open(&path, passphrase("two"), fast_opts()))
                .unwrap_or_else(|e| panic!("N={n}: opens with neither secret: {e}"))
        };
        let now = contents(&reopened);
        if outcome.is_err() {
            // The failed step is a transaction (all or nothing), a rotation or
            // re-encryption batch (values unchanged in content) or a rekey: contents
            // equal the model, or the model plus the failed transaction.
            assert!(
                now == model || now == with_tx,
                "N={n}: contents differ from every acknowledged state"
            );
        } else {
            assert!(now == model, "N={n}: a clean run lost data");
        }
        assert!(
            reopened.verify().unwrap().is_empty(),
            "N={n}: verify failed"
        );
        continue_after(&reopened);
        points += 1;
        if !fired {
            break;
        }
        n += 1;
        assert!(
            n < 3000,
            "the workload should finish within 3000 I/O operations"
        );
    }
    println!("fault points swept over transaction + rotation + re-encryption + rekey: {points}");
    assert!(points > 10);
}

#[test]
fn disk_full_is_reported_and_nothing_is_applied() {
    let (_dir, path, state, store) = faulty_store(key());
    store.put("n", "before", vec![1]).unwrap();
    state.full.store(true, std::sync::atomic::Ordering::SeqCst);
    state.arm(1, true);
    let err = store.put("n", "big", vec![2; 100_000]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::CommitFailed { .. }), "{err:?}");
    assert!(
        text.contains("commit failed") && text.to_lowercase().contains("space"),
        "{text}"
    );
    assert!(matches!(store.put("n", "x", vec![1]), Err(Error::Poisoned)));
    // While the disk stays full, redb cannot recover the file, so reads report the
    // I/O error (never a panic, never stale data).
    let while_full = store.get("n", &["before"]).unwrap_err();
    assert!(while_full.to_string().contains("space"), "{while_full}");
    // Space comes back: reads work again at once; writes stay refused until reopened.
    state.disarm();
    assert_eq!(store.get("n", &["before"]).unwrap().len(), 1);
    assert!(store.get("n", &["big"]).unwrap().is_empty());
    assert!(matches!(store.put("n", "x", vec![1]), Err(Error::Poisoned)));
    drop(store);
    let reopened = Store::open(&path, key(), fast_opts()).unwrap();
    assert_eq!(reopened.list("n").unwrap(), vec!["before"]);
}

/// The store is usable after a fault: any re-encryption left over completes, writes work.
fn continue_after(store: &Store) {
    store.reencrypt(50, |_| {}).unwrap();
    store.put("after", "k", vec![1]).unwrap();
}
