//! Reads, writes, atomic batches, transactions and group commit.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use common::*;
use sealkv_engine::{Batch, Error, Options, Store};

#[test]
fn values_roundtrip_across_reopen() {
    each_engine(|place| {
        let path = place.addr("s.sealkv");
        {
            let store = Store::create(&path, key(), fast_opts()).unwrap();
            let mut b = Batch::new();
            b.put("session", "4915550001.0", vec![1u8; 3000])
                .put("creds", "creds", b"{}".to_vec());
            store.set(&b).unwrap();
            assert_eq!(
                &store.get("session", &["4915550001.0"]).unwrap()["4915550001.0"][..],
                &[1u8; 3000][..]
            );
        }
        let store = Store::open(&path, key(), fast_opts()).unwrap();
        let got = store.get("session", &["4915550001.0", "missing"]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(store.namespaces().unwrap(), vec!["creds", "session"]);
        assert_eq!(store.list("session").unwrap(), vec!["4915550001.0"]);
        assert!(store.delete("session", "4915550001.0").unwrap());
        assert!(!store.delete("session", "4915550001.0").unwrap());
        assert_eq!(
            store.namespaces().unwrap(),
            vec!["creds"],
            "an emptied namespace disappears"
        );
        store.clear().unwrap();
        assert!(store.namespaces().unwrap().is_empty());
        assert!(store.verify().unwrap().is_empty());
    });
}

#[test]
fn wrong_key_and_wrong_kind_are_distinct_errors() {
    each_engine(|place| {
        let path = place.addr("p.sealkv");
        drop(Store::create(&path, passphrase("correct horse"), fast_opts()).unwrap());
        assert!(matches!(
            Store::open(&path, passphrase("wrong horse"), fast_opts()),
            Err(Error::WrongKey)
        ));
        assert!(matches!(
            Store::open(&path, key(), fast_opts()),
            Err(Error::KeyKindMismatch { .. })
        ));
        Store::open(&path, passphrase("correct horse"), fast_opts()).unwrap();
        let raw = place.addr("r.sealkv");
        drop(Store::create(&raw, key(), fast_opts()).unwrap());
        let other = sealkv_engine::MasterKey::from_bytes(&[1; 32]).unwrap();
        assert!(matches!(
            Store::open(&raw, other, fast_opts()),
            Err(Error::WrongKey)
        ));
    });
}

#[test]
fn multi_namespace_set_is_atomic_and_bad_changes_fail_whole_batch() {
    each_engine(|place| {
        let store = Store::create(
            place.addr("s"),
            key(),
            Options {
                max_value_size: 1000,
                ..fast_opts()
            },
        )
        .unwrap();
        let mut b = Batch::new();
        b.put("a", "1", vec![0; 10])
            .put("b", "2", vec![0; 10])
            .put("c", "3", vec![0; 1001]);
        assert!(matches!(
            store.set(&b),
            Err(Error::ValueTooLarge {
                size: 1001,
                limit: 1000,
                ..
            })
        ));
        assert!(
            store.namespaces().unwrap().is_empty(),
            "nothing of a failed batch is written"
        );
        let mut name = Batch::new();
        name.put("a", "1", vec![1])
            .put("b", &"x".repeat(2000), vec![1]);
        assert!(matches!(store.set(&name), Err(Error::InvalidName(_))));
        assert!(store.namespaces().unwrap().is_empty());
        b.delete("c", "3");
        store.set(&b).unwrap();
        assert_eq!(store.namespaces().unwrap(), vec!["a", "b"]);
    });
}

#[test]
fn transaction_reads_its_writes_and_discards_on_error() {
    each_engine(|place| {
        let store = place.new_store();
        store.put("pre-key", "1", b"one".to_vec()).unwrap();
        let r: Result<(), Error> = store.transaction("acct", |tx| {
            tx.put("pre-key", "2", b"two".to_vec());
            tx.delete("pre-key", "1");
            let seen = tx.get("pre-key", &["1", "2"])?;
            assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["2"]);
            Err(Error::InvalidName("caller gave up".into()))
        });
        assert!(r.is_err());
        assert_eq!(
            store.list("pre-key").unwrap(),
            vec!["1"],
            "closure error writes nothing"
        );
        store
            .transaction("acct", |tx| {
                tx.put("pre-key", "2", b"two".to_vec());
                tx.delete("pre-key", "1");
                Ok::<_, Error>(())
            })
            .unwrap();
        assert_eq!(store.list("pre-key").unwrap(), vec!["2"]);
    });
}

#[test]
fn nested_transactions_join_the_outer_one() {
    each_engine(|place| {
        let store = place.new_store();
        assert!(!store.in_transaction());
        let r: Result<(), Error> = store.transaction("k", |tx| {
            assert!(tx.store().in_transaction());
            tx.put("n", "outer", vec![1]);
            // Same lock key: would deadlock if it did not join.
            store.transaction("k", |inner| {
                assert!(
                    inner.get("n", &["outer"])?.contains_key("outer"),
                    "inner sees outer writes"
                );
                inner.put("n", "inner", vec![2]);
                Ok::<_, Error>(())
            })?;
            assert!(
                store.get("n", &["inner"])?.is_empty(),
                "nothing committed before the outer ends"
            );
            Err(Error::InvalidName("abort outer".into()))
        });
        assert!(r.is_err());
        assert!(
            store.namespaces().unwrap().is_empty(),
            "outer abort discards the joined inner writes"
        );
        // Another lock key inside a transaction is refused (it could deadlock), and
        // nothing of the outer transaction is written when the outer one passes it on.
        let err = store
            .transaction("k", |tx| {
                tx.put("n", "before", vec![1]);
                store.transaction("other", |tx| {
                    tx.put("n", "x", vec![1]);
                    Ok::<_, Error>(())
                })
            })
            .unwrap_err();
        assert!(matches!(err, Error::NestedLock), "{err:?}");
        assert!(store.namespaces().unwrap().is_empty());

        // An inner error discards the inner writes only; the outer may go on and commit.
        store
            .transaction("k", |tx| {
                tx.put("n", "outer", vec![1]);
                let inner = store.transaction("k", |tx| {
                    tx.put("n", "inner", vec![2]);
                    tx.delete("n", "outer");
                    Err::<(), _>(Error::InvalidName("abort inner".into()))
                });
                assert!(inner.is_err());
                assert!(tx.get("n", &["inner"])?.is_empty(), "inner write discarded");
                assert_eq!(tx.get("n", &["outer"])?.len(), 1, "inner delete discarded");
                Ok::<_, Error>(())
            })
            .unwrap();
        assert_eq!(store.list("n").unwrap(), vec!["outer"]);
    });
}

#[test]
fn one_lock_key_serializes_increments() {
    each_engine(|place| {
        let store = place.new_store();
        let threads = 8;
        let per = 5;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..per {
                        store
                            .transaction("counter", |tx| {
                                let n = tx
                                    .get("c", &["n"])?
                                    .get("n")
                                    .map(|v| u64::from_le_bytes(v[..8].try_into().unwrap()))
                                    .unwrap_or(0);
                                std::thread::yield_now();
                                tx.put("c", "n", (n + 1).to_le_bytes().to_vec());
                                Ok::<_, Error>(())
                            })
                            .unwrap();
                    }
                });
            }
        });
        let v = store.get("c", &["n"]).unwrap();
        assert_eq!(
            u64::from_le_bytes(v["n"][..8].try_into().unwrap()),
            threads * per
        );
    });
}

#[test]
fn different_lock_keys_overlap() {
    each_engine(|place| {
        let store = place.new_store();
        // Two transactions on different keys must both be inside at once: each waits at a
        // barrier the other must reach. With one global lock this would never finish.
        let barrier = Barrier::new(2);
        let inside = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for k in ["a", "b"] {
                let (store, barrier, inside) = (&store, &barrier, &inside);
                s.spawn(move || {
                    store
                        .transaction(k, |tx| {
                            inside.fetch_add(1, Ordering::SeqCst);
                            barrier.wait();
                            assert_eq!(inside.load(Ordering::SeqCst), 2);
                            tx.put("n", k, vec![1]);
                            Ok::<_, Error>(())
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(store.list("n").unwrap(), vec!["a", "b"]);
    });
}

/// A thread waiting for a lock key another thread of the same handle holds gives up at
/// `lock_timeout`, as one waiting for another process does.
#[test]
fn a_lock_key_held_in_this_process_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        lock_timeout: std::time::Duration::from_millis(200),
        ..fast_opts()
    };
    let store = Store::create(dir.path().join("s.sealkv"), key(), opts).unwrap();
    let (holding, release) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            store
                .transaction("k", |_| {
                    holding.wait();
                    release.wait();
                    Ok::<_, Error>(())
                })
                .unwrap();
        });
        holding.wait();
        let started = std::time::Instant::now();
        let err = store
            .transaction("k", |tx| {
                tx.put("n", "k", vec![1]);
                Ok::<_, Error>(())
            })
            .unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        assert!(started.elapsed() >= std::time::Duration::from_millis(200));
        release.wait();
    });
    assert!(store.list("n").unwrap().is_empty());
}

#[test]
fn concurrent_group_commits_each_get_their_own_result() {
    each_engine(|place| {
        let store = Arc::new(
            Store::create(
                place.addr("s"),
                key(),
                Options {
                    max_value_size: 100,
                    ..fast_opts()
                },
            )
            .unwrap(),
        );
        let threads = 16;
        let per = 20;
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..per {
                        let mut b = Batch::new();
                        // Every 5th change of odd threads is too large: only that caller fails.
                        let size = if t % 2 == 1 && i % 5 == 0 { 101 } else { 10 };
                        b.put(&format!("t{t}"), &i.to_string(), vec![t as u8; size]);
                        let r = store.set(&b);
                        assert_eq!(r.is_ok(), size == 10, "thread {t} item {i}: {r:?}");
                    }
                });
            }
        });
        for t in 0..threads {
            let expected = if t % 2 == 1 { per - per / 5 } else { per };
            assert_eq!(store.count(&format!("t{t}")).unwrap(), expected as u64);
        }
        assert!(store.verify().unwrap().is_empty());
    });
}

#[test]
fn stats_count_entries_and_keys() {
    each_engine(|place| {
        let store = place.new_store();
        let mut b = Batch::new();
        for i in 0..10 {
            b.put("session", &i.to_string(), vec![7; 100]);
        }
        b.put("creds", "creds", vec![1; 10]);
        store.set(&b).unwrap();
        let s = store.stats().unwrap();
        assert_eq!(s.namespaces["session"].entries, 10);
        assert_eq!(s.namespaces["creds"].entries, 1);
        assert!(s.namespaces["session"].bytes > 0);
        assert_eq!(s.keys.len(), 1);
        assert_eq!(s.values_per_key[&1], 13, "11 values and 2 catalog entries");
        assert!(s.file_size > 0);
    });
}

#[test]
fn backup_is_a_consistent_copy_that_opens() {
    each_engine(|place| {
        let store = place.new_store();
        store.put("n", "k", b"v".to_vec()).unwrap();
        let dest = place.addr("backup.sealkv");
        store.backup(&dest).unwrap();
        store.put("n", "later", b"w".to_vec()).unwrap();
        assert!(matches!(store.backup(&dest), Err(Error::AlreadyExists(_))));
        let copy = Store::open(&dest, key(), fast_opts()).unwrap();
        assert_eq!(copy.list("n").unwrap(), vec!["k"]);
        assert!(copy.verify().unwrap().is_empty());
        store.compact().unwrap();
        assert_eq!(store.list("n").unwrap(), vec!["k", "later"]);
    });
}

#[test]
fn read_only_open_reads_and_never_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.sealkv");
    {
        let store = Store::create(&path, key(), fast_opts()).unwrap();
        store.put("n", "k", b"v".to_vec()).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    {
        let ro = Store::open_read_only(&path, key(), fast_opts()).unwrap();
        assert_eq!(&ro.get("n", &["k"]).unwrap()["k"][..], b"v");
        assert_eq!(ro.list("n").unwrap(), vec!["k"]);
        assert!(ro.verify().unwrap().is_empty());
        assert!(matches!(ro.put("n", "x", vec![1]), Err(Error::ReadOnly)));
        assert!(matches!(ro.rotate(), Err(Error::ReadOnly)));
        assert!(matches!(ro.compact(), Err(Error::ReadOnly)));
        ro.backup(dir.path().join("copy.sealkv")).unwrap();
    }
    assert!(
        std::fs::read(&path).unwrap() == before,
        "a read-only open changed the file"
    );
    let other = sealkv_engine::MasterKey::from_bytes(&[1; 32]).unwrap();
    assert!(matches!(
        Store::open_read_only(&path, other, fast_opts()),
        Err(Error::WrongKey)
    ));
}

#[test]
fn reads_see_every_commit_that_finished_before_them() {
    each_engine(|place| {
        // Reads share a cached read snapshot between commits; each commit must retire it.
        // A reader that saw a stale snapshot would read a counter below the one published.
        let store = place.new_store();
        store.put("c", "n", 0u64.to_le_bytes().to_vec()).unwrap();
        let published = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let read = |store: &Store| {
            let v = store.get_one("c", "n").unwrap().unwrap();
            u64::from_le_bytes(v[..].try_into().unwrap())
        };
        std::thread::scope(|s| {
            for _ in 0..3 {
                let (store, published) = (store.clone(), published.clone());
                s.spawn(move || {
                    let mut last = 0;
                    while last < 200 {
                        let floor = published.load(Ordering::SeqCst);
                        let seen = read(&store);
                        assert!(seen >= floor, "read {seen} after {floor} was committed");
                        assert!(seen >= last, "reads went back from {last} to {seen}");
                        // Interleave the other read paths, which share the snapshot.
                        assert_eq!(store.list("c").unwrap(), ["n"]);
                        last = seen;
                    }
                });
            }
            for i in 1..=200u64 {
                store.put("c", "n", i.to_le_bytes().to_vec()).unwrap();
                published.store(i, Ordering::SeqCst);
                // The writer's own next read sees its write at once.
                assert_eq!(read(&store), i);
            }
        });
        // And a store that only read since its last write can still be compacted: the
        // cached snapshot must not hold the file open.
        assert_eq!(read(&store), 200);
        store.compact().unwrap();
        assert_eq!(read(&store), 200);
    });
}
