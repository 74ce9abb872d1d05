//! Sessions (many bots in one file) and values that expire.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use sealkv_engine::{Batch, EXPIRY_BUCKET_SECS, Error, Options, Store};

const DATA: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sealkv_data");
const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("sealkv_expiry");

fn moving_clock() -> (Arc<AtomicU64>, Options) {
    let now = Arc::new(AtomicU64::new(1_700_000_000));
    let c = now.clone();
    let opts = Options {
        clock: Arc::new(move || c.load(Ordering::SeqCst)),
        ..fast_opts()
    };
    (now, opts)
}

/// Every data row of a closed store: (row key, envelope).
fn raw_rows(path: &Path) -> Vec<([u8; 32], Vec<u8>)> {
    let db = redb::Database::builder().open_read_only(path).unwrap();
    let t = db.begin_read().unwrap();
    let table = t.open_table(DATA).unwrap();
    table
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (*k.value(), v.value().to_vec())
        })
        .collect()
}

#[test]
fn sessions_are_isolated_and_listed() {
    each_engine(|place| {
        let store = Store::create(place.addr("s.sealkv"), key(), fast_opts()).unwrap();
        let a = store.session("4915550001").unwrap();
        let b = store.session("4915550002").unwrap();
        a.put("session", "peer.0", b"bot a".to_vec()).unwrap();
        b.put("session", "peer.0", b"bot b".to_vec()).unwrap();
        store.put("session", "peer.0", b"default".to_vec()).unwrap();
        assert_eq!(
            &a.get_one("session", "peer.0").unwrap().unwrap()[..],
            b"bot a"
        );
        assert_eq!(
            &b.get_one("session", "peer.0").unwrap().unwrap()[..],
            b"bot b"
        );
        assert_eq!(
            &store.get_one("session", "peer.0").unwrap().unwrap()[..],
            b"default"
        );
        assert_eq!(store.sessions().unwrap(), ["4915550001", "4915550002"]);
        assert_eq!(a.namespaces().unwrap(), ["session"]);
        assert_eq!(a.list("session").unwrap(), ["peer.0"]);
        assert_eq!(a.id(), Some("4915550001"));
        assert_eq!(store.default_session().id(), None);
        // A transaction in one session neither sees nor blocks another's lock key.
        a.transaction("peer", |tx| {
            assert_eq!(&tx.get("session", &["peer.0"])?["peer.0"][..], b"bot a");
            b.transaction("peer", |tx| {
                tx.put("pre-key", "1", b"b's".to_vec());
                Ok::<_, Error>(())
            })
            .unwrap_err(); // nested with another session: refused like another lock key
            tx.put("pre-key", "1", b"a's".to_vec());
            Ok::<_, Error>(())
        })
        .unwrap();
        let other = std::thread::scope(|s| {
            let b = b.clone();
            a.transaction("peer", |_| {
                // Another thread takes the same lock key in another session at once.
                s.spawn(move || {
                    b.transaction("peer", |tx| {
                        tx.put("pre-key", "2", b"b".to_vec());
                        Ok::<_, Error>(())
                    })
                })
                .join()
                .unwrap()
            })
        });
        other.unwrap();
        assert_eq!(b.list("pre-key").unwrap(), ["2"]);
        assert_eq!(a.list("pre-key").unwrap(), ["1"]);
        assert!(store.list("pre-key").unwrap().is_empty());
    });
}

#[test]
fn a_session_id_follows_the_name_rules() {
    each_engine(|place| {
        let store = Store::create(place.addr("s.sealkv"), key(), fast_opts()).unwrap();
        for bad in [String::new(), "x".repeat(sealkv_engine::MAX_NAME_LEN + 1)] {
            let err = store.session(&bad).unwrap_err();
            assert!(matches!(err, Error::InvalidName(_)), "{err:?}");
            assert!(err.to_string().contains("session id"), "{err}");
        }
        store
            .session(&"x".repeat(sealkv_engine::MAX_NAME_LEN))
            .unwrap();
    });
}

#[test]
fn session_names_never_appear_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    {
        let store = Store::create(&path, key(), fast_opts()).unwrap();
        for s in ["4915550001@s.whatsapp.net", "farm-bot-alpha"] {
            let session = store.session(s).unwrap();
            session.put("creds", "creds", b"{}".to_vec()).unwrap();
        }
        store.drop_session("farm-bot-alpha").unwrap();
        store.compact().unwrap();
    }
    let raw = std::fs::read(&path).unwrap();
    for needle in ["4915550001", "farm-bot-alpha", "creds"] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} appears in the file"
        );
    }
}

#[test]
fn a_value_moved_to_another_sessions_row_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    {
        let store = Store::create(&path, key(), fast_opts()).unwrap();
        store
            .session("a")
            .unwrap()
            .put("n", "k", b"secret of a".to_vec())
            .unwrap();
        store
            .session("b")
            .unwrap()
            .put("n", "k", b"secret of b".to_vec())
            .unwrap();
    }
    // The two sessions' value rows: the only rows with 14-byte values in them... find
    // them by opening: the longest envelopes are the two values.
    let mut rows = raw_rows(&path);
    rows.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let (row_x, env_x) = rows[0].clone();
    let (row_y, env_y) = rows[1].clone();
    assert_eq!(env_x.len(), env_y.len());
    {
        // Swap them.
        let db = redb::Database::open(&path).unwrap();
        let t = db.begin_write().unwrap();
        {
            let mut table = t.open_table(DATA).unwrap();
            table.insert(&row_x, env_y.as_slice()).unwrap();
            table.insert(&row_y, env_x.as_slice()).unwrap();
        }
        t.commit().unwrap();
    }
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    for s in ["a", "b"] {
        let err = store.session(s).unwrap().get_one("n", "k").unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }), "{err:?}");
        assert!(err.to_string().contains(&format!("{s}/n/k")), "{err}");
    }
    // Both values, and the content hash the swapped rows no longer add up to.
    let failures = store.verify().unwrap();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(matches!(failures[2], Error::ContentChanged), "{failures:?}");
}

#[test]
fn drop_session_removes_exactly_one_session() {
    each_engine(|place| {
        let store = Store::create(place.addr("s.sealkv"), key(), fast_opts()).unwrap();
        store.put("creds", "creds", b"default".to_vec()).unwrap();
        for s in ["a", "b"] {
            let session = store.session(s).unwrap();
            let mut batch = Batch::new();
            for i in 0..100 {
                batch.put("pre-key", &i.to_string(), vec![1; 100]);
                batch.put("session", &i.to_string(), vec![2; 100]);
            }
            session.set(&batch).unwrap();
        }
        assert!(store.drop_session("a").unwrap());
        assert!(!store.drop_session("a").unwrap(), "dropped twice");
        assert!(!store.drop_session("never").unwrap());
        assert_eq!(store.sessions().unwrap(), ["b"]);
        let a = store.session("a").unwrap();
        assert!(a.namespaces().unwrap().is_empty());
        assert_eq!(a.count("pre-key").unwrap(), 0);
        let b = store.session("b").unwrap();
        assert_eq!(b.count("pre-key").unwrap(), 100);
        assert_eq!(b.count("session").unwrap(), 100);
        assert_eq!(store.count("creds").unwrap(), 1);
        // Only b's rows, its catalog, the default session's and the session catalog remain.
        let stats = store.stats().unwrap();
        assert_eq!(
            stats.namespaces.keys().collect::<Vec<_>>(),
            ["b/pre-key", "b/session", "creds"]
        );
        assert!(store.verify().unwrap().is_empty());
        // Clearing the default session leaves the named ones.
        store.default_session().clear().unwrap();
        assert!(store.namespaces().unwrap().is_empty());
        assert_eq!(b.count("pre-key").unwrap(), 100);
        b.clear().unwrap();
        assert!(store.sessions().unwrap().is_empty());
        // The session can be used again.
        a.put("creds", "creds", b"again".to_vec()).unwrap();
        assert_eq!(store.sessions().unwrap(), ["a"]);
    });
}

#[test]
fn expired_values_are_invisible_at_once() {
    each_engine(|place| {
        let (now, opts) = moving_clock();
        let store = Store::create(place.addr("s.sealkv"), key(), opts).unwrap();
        let bot = store.session("bot").unwrap();
        for s in [None, Some(&bot)] {
            let mut batch = Batch::new();
            batch
                .put_with_ttl(
                    "msg-secret",
                    "m1",
                    b"short".to_vec(),
                    Duration::from_secs(30),
                )
                .put_with_ttl(
                    "msg-secret",
                    "m2",
                    b"long".to_vec(),
                    Duration::from_secs(7200),
                )
                .put("creds", "creds", b"forever".to_vec());
            match s {
                None => store.set(&batch).unwrap(),
                Some(s) => s.set(&batch).unwrap(),
            }
        }
        let t0 = now.load(Ordering::SeqCst);
        now.store(t0 + 29, Ordering::SeqCst);
        assert_eq!(store.list("msg-secret").unwrap(), ["m1", "m2"]);
        now.store(t0 + 30, Ordering::SeqCst);
        assert_eq!(store.list("msg-secret").unwrap(), ["m2"]);
        assert_eq!(bot.list("msg-secret").unwrap(), ["m2"]);
        assert!(store.get_one("msg-secret", "m1").unwrap().is_none());
        assert!(store.get("msg-secret", &["m1"]).unwrap().is_empty());
        assert_eq!(store.count("msg-secret").unwrap(), 1);
        store
            .transaction("t", |tx| {
                assert!(tx.get("msg-secret", &["m1"])?.is_empty());
                Ok::<_, Error>(())
            })
            .unwrap();
        now.store(t0 + 7200, Ordering::SeqCst);
        assert_eq!(store.namespaces().unwrap(), ["creds"]);
        assert_eq!(bot.namespaces().unwrap(), ["creds"]);
        assert_eq!(
            &store.get_one("creds", "creds").unwrap().unwrap()[..],
            b"forever"
        );
        // Writing it again without a TTL makes it permanent.
        store.put("msg-secret", "m1", b"again".to_vec()).unwrap();
        now.store(t0 + 1_000_000, Ordering::SeqCst);
        assert_eq!(store.list("msg-secret").unwrap(), ["m1"]);
        assert!(store.verify().unwrap().is_empty());
    });
}

#[test]
fn a_zero_ttl_is_refused_and_writes_nothing() {
    each_engine(|place| {
        let store = Store::create(place.addr("s.sealkv"), key(), fast_opts()).unwrap();
        let mut batch = Batch::new();
        batch.put("a", "k", b"v".to_vec()).put_with_ttl(
            "a",
            "j",
            b"v".to_vec(),
            Duration::from_millis(500),
        );
        let err = store.set(&batch).unwrap_err();
        assert!(matches!(err, Error::InvalidTtl(_)), "{err:?}");
        assert!(store.namespaces().unwrap().is_empty());
    });
}

#[test]
fn sweep_then_compact_leaves_no_ciphertext_of_expired_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let (now, opts) = moving_clock();
    let store = Store::create(&path, key(), opts).unwrap();
    let mut batch = Batch::new();
    for i in 0..50 {
        batch.put_with_ttl(
            "msg",
            &format!("e{i}"),
            vec![i as u8; 300],
            Duration::from_secs(60),
        );
        batch.put("keep", &format!("k{i}"), vec![i as u8; 300]);
    }
    store.session("bot").unwrap().set(&batch).unwrap();
    drop(store);
    let before = raw_rows(&path);
    let (now_opts_clock, opts2) = (now.clone(), {
        let c = now.clone();
        Options {
            clock: Arc::new(move || c.load(Ordering::SeqCst)),
            ..fast_opts()
        }
    });
    // 30 s after expiry: the bucket has not closed, so only an explicit sweep (which
    // opens the current bucket's values) removes them.
    now_opts_clock.fetch_add(90, Ordering::SeqCst);
    let store = Store::open(&path, key(), opts2).unwrap();
    assert_eq!(store.sweep().unwrap(), 50);
    assert_eq!(store.sweep().unwrap(), 0, "nothing left to sweep");
    store.compact().unwrap();
    assert_eq!(store.session("bot").unwrap().count("keep").unwrap(), 50);
    drop(store);
    let raw = std::fs::read(&path).unwrap();
    let after = raw_rows(&path);
    let mut gone = 0;
    for (row, env) in &before {
        if after.iter().any(|(r, _)| r == row) {
            continue;
        }
        gone += 1;
        assert!(
            !raw.windows(env.len()).any(|w| w == env.as_slice()),
            "ciphertext of a swept value is still in the file"
        );
    }
    assert_eq!(gone, 50);
    // The index is empty.
    let db = redb::Database::builder().open_read_only(&path).unwrap();
    let t = db.begin_read().unwrap();
    assert_eq!(t.open_table(EXPIRY).unwrap().iter().unwrap().count(), 0);
}

#[test]
fn commits_sweep_closed_buckets_a_few_at_a_time() {
    each_engine(|place| {
        let (now, opts) = moving_clock();
        let store = Store::create(place.addr("s.sealkv"), key(), opts).unwrap();
        let mut batch = Batch::new();
        for i in 0..100 {
            batch.put_with_ttl("msg", &i.to_string(), vec![1; 10], Duration::from_secs(10));
        }
        store.set(&batch).unwrap();
        let rows = |store: &Store| {
            store
                .stats()
                .unwrap()
                .namespaces
                .get("msg")
                .map_or(0, |n| n.entries)
        };
        assert_eq!(rows(&store), 100);
        now.fetch_add(2 * EXPIRY_BUCKET_SECS, Ordering::SeqCst);
        store.put("other", "x", b"1".to_vec()).unwrap();
        let left = rows(&store);
        assert!(
            (100 - 32..100).contains(&left),
            "one commit swept {} rows",
            100 - left
        );
        for i in 0..10 {
            store.put("other", "x", vec![i]).unwrap();
        }
        assert_eq!(rows(&store), 0);
    });
}

#[test]
fn a_forged_index_entry_never_deletes_a_live_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let (now, opts) = moving_clock();
    {
        let store = Store::create(&path, key(), opts.clone()).unwrap();
        store.put("keep", "k", b"live".to_vec()).unwrap();
        store
            .put_with_ttl("keep", "t", b"ttl".to_vec(), Duration::from_secs(86_400))
            .unwrap();
    }
    // Someone with the file points the index's oldest bucket at every row.
    {
        let rows = raw_rows(&path);
        let db = redb::Database::open(&path).unwrap();
        let t = db.begin_write().unwrap();
        {
            let mut index = t.open_table(EXPIRY).unwrap();
            for (row, _) in rows {
                let mut key = [0u8; 40];
                key[..8].copy_from_slice(&3600u64.to_be_bytes());
                key[8..].copy_from_slice(&row);
                index.insert(&key[..], ()).unwrap();
            }
        }
        t.commit().unwrap();
    }
    now.fetch_add(3600, Ordering::SeqCst);
    let store = Store::open(&path, key(), opts).unwrap();
    store.sweep().unwrap();
    assert_eq!(store.list("keep").unwrap(), ["k", "t"]);
    assert!(store.verify().unwrap().is_empty());
}
