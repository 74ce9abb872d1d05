//! Key life cycle: rotate, re-encrypt (online, resumable), destroy, purge, rekey,
//! automatic rotation.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use sealkv_engine::{Algorithm, Batch, Compression, Error, KeyState, Options, Store};

fn fill(store: &Store, n: usize) {
    let mut b = Batch::new();
    for i in 0..n {
        b.put(
            &format!("ns{}", i % 3),
            &format!("k{i}"),
            format!("value-{i}").repeat(20).into_bytes(),
        );
    }
    store.set(&b).unwrap();
}

#[test]
fn rotate_reencrypt_destroy_and_compact_leave_no_old_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sealkv");
    let store = Store::create(
        &path,
        key(),
        Options {
            compression: Compression::NONE,
            ..fast_opts()
        },
    )
    .unwrap();
    fill(&store, 200);
    // Record raw sealed bytes under key 1.
    let old_sealed: Vec<Vec<u8>> = {
        drop(store);
        let db = redb::ReadOnlyDatabase::open(&path).unwrap();
        let t = redb::ReadableDatabase::begin_read(&db).unwrap();
        let table = t
            .open_table(redb::TableDefinition::<[u8; 32], &[u8]>::new("sealkv_data"))
            .unwrap();
        redb::ReadableTable::iter(&table)
            .unwrap()
            .map(|r| r.unwrap().1.value().to_vec())
            .collect()
    };
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    assert_eq!(store.rotate().unwrap(), 2);
    let err = store.destroy_key(1).unwrap_err();
    assert!(
        matches!(err, Error::KeyInUse { key_id: 1, values } if values > 200),
        "{err:?}"
    );
    let mut calls = 0;
    let report = store
        .reencrypt(16, |p| {
            calls += 1;
            assert!(p.scanned <= p.total);
        })
        .unwrap();
    assert!(calls >= 10, "progress after every batch ({calls})");
    assert_eq!(report.resealed, report.total);
    assert_eq!(
        store
            .stats()
            .unwrap()
            .values_per_key
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(store.destroy_unused_keys().unwrap(), vec![1]);
    assert_eq!(store.stats().unwrap().keys[0].state, KeyState::Destroyed);
    store.compact().unwrap();
    assert!(store.verify().unwrap().is_empty());
    assert_eq!(store.count("ns1").unwrap(), 67);
    drop(store);
    let raw = std::fs::read(&path).unwrap();
    for sealed in &old_sealed {
        // Any 24-byte run of an old envelope's ciphertext would betray it.
        let probe = &sealed[sealed.len() - 24..];
        assert!(
            raw.windows(probe.len()).all(|w| w != probe),
            "old ciphertext survives in the file"
        );
    }
}

#[test]
fn reencrypt_runs_while_writers_and_readers_work() {
    each_engine(|place| {
        let store = place.new_store();
        fill(&store, 300);
        store.rotate().unwrap();
        let stop = AtomicBool::new(false);
        let writes = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    store
                        .put(
                            "ns0",
                            &format!("k{}", (i * 3) % 300),
                            format!("new-{i}").into_bytes(),
                        )
                        .unwrap();
                    writes.store(i, Ordering::SeqCst);
                    i += 1;
                }
            });
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let got = store.get("ns1", &["k1", "k4"]).unwrap();
                    assert_eq!(got.len(), 2);
                }
            });
            store.reencrypt(8, |_| {}).unwrap();
            stop.store(true, Ordering::SeqCst);
        });
        // The last write of every key won; every value is under key 2.
        let last = writes.load(Ordering::SeqCst);
        let k = format!("k{}", (last * 3) % 300);
        assert_eq!(
            &store.get("ns0", &[k.as_str()]).unwrap()[&k][..],
            format!("new-{last}").as_bytes()
        );
        assert_eq!(
            store
                .stats()
                .unwrap()
                .values_per_key
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            vec![2]
        );
        assert!(store.verify().unwrap().is_empty());
    });
}

#[test]
fn rekey_switches_the_valid_secret_in_one_step() {
    each_engine(|place| {
        let path = place.addr("k.sealkv");
        let store = Store::create(&path, passphrase("old pass"), fast_opts()).unwrap();
        fill(&store, 30);
        store.rekey(passphrase("new pass")).unwrap();
        store.put("ns0", "after", b"x".to_vec()).unwrap();
        drop(store);
        assert!(matches!(
            Store::open(&path, passphrase("old pass"), fast_opts()),
            Err(Error::WrongKey)
        ));
        let store = Store::open(&path, passphrase("new pass"), fast_opts()).unwrap();
        assert_eq!(store.count("ns0").unwrap(), 11);
        store.rekey(key()).unwrap();
        drop(store);
        let store = Store::open(&path, key(), fast_opts()).unwrap();
        assert!(store.verify().unwrap().is_empty());
    });
}

#[test]
fn rekey_under_faults_leaves_exactly_one_valid_secret() {
    let mut n = 1;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sealkv");
        let state = Arc::new(FaultState::default());
        let store = Store::create(&path, passphrase("old"), faulty_opts(state.clone())).unwrap();
        fill(&store, 20);
        state.arm(n, true);
        let result = store.rekey(passphrase("new"));
        let fired = state.failures.load(Ordering::SeqCst) > 0;
        state.disarm();
        drop(store);
        let old = Store::open(&path, passphrase("old"), fast_opts());
        let new = old
            .is_err()
            .then(|| Store::open(&path, passphrase("new"), fast_opts()));
        let valid = match (&old, &new) {
            (Ok(s), None) => s.clone(),
            (Err(Error::WrongKey), Some(Ok(s))) => s.clone(),
            other => panic!(
                "N={n}: neither or both secrets valid: {:?}",
                other.0.as_ref().err()
            ),
        };
        if result.is_ok() {
            assert!(
                new.is_some(),
                "N={n}: rekey reported Ok but the old secret still opens"
            );
        }
        assert_eq!(valid.count("ns2").unwrap(), 6, "N={n}");
        assert!(valid.verify().unwrap().is_empty());
        if !fired {
            break;
        }
        n += 1;
        assert!(n < 200);
    }
    assert!(n > 2, "faults were injected at {} points", n - 1);
}

#[test]
fn automatic_rotation_by_age_and_by_aes_budget() {
    each_engine(|place| {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock_now = now.clone();
        let opts = Options {
            rotate_after: Some(Duration::from_secs(30 * 86400)),
            clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
            ..fast_opts()
        };
        let path = place.addr("a.sealkv");
        let store = Store::create(&path, key(), opts.clone()).unwrap();
        store.put("n", "k", b"v".to_vec()).unwrap();
        assert_eq!(store.stats().unwrap().keys.len(), 1);
        now.fetch_add(31 * 86400, Ordering::SeqCst);
        store.put("n", "k2", b"v".to_vec()).unwrap();
        let keys = store.stats().unwrap().keys;
        assert_eq!(
            keys.len(),
            2,
            "rotated on commit once the key was 31 days old"
        );
        assert_eq!(keys[1].state, KeyState::Primary);
        drop(store);
        now.fetch_add(31 * 86400, Ordering::SeqCst);
        let store = Store::open(&path, key(), opts).unwrap();
        assert_eq!(store.stats().unwrap().keys.len(), 3, "rotated at open");
        drop(store);

        let budget = Options {
            cipher: Algorithm::Aes256Gcm,
            aes_gcm_seal_budget: 50,
            ..fast_opts()
        };
        let store = Store::create(place.addr("b.sealkv"), key(), budget).unwrap();
        for i in 0..40 {
            store.put("n", &i.to_string(), b"v".to_vec()).unwrap();
        }
        let keys = store.stats().unwrap().keys;
        assert!(
            keys.len() >= 2,
            "AES-GCM key rotated before its budget of 50 seals"
        );
        assert!(
            keys.iter()
                .all(|k| k.seals <= 50 + 2 || k.state != KeyState::Primary)
        );
        assert!(store.verify().unwrap().is_empty());
    });
}

#[test]
fn handles_crossing_the_rotation_threshold_together_add_one_key() {
    each_engine(|place| {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock_now = now.clone();
        let opts = Options {
            rotate_after: Some(Duration::from_secs(30 * 86400)),
            clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
            ..fast_opts()
        };
        let path = place.addr("t.sealkv");
        let a = Store::create(&path, key(), opts.clone()).unwrap();
        a.put("n", "k", b"v".to_vec()).unwrap();
        assert_eq!(a.stats().unwrap().keys.len(), 1);
        now.fetch_add(31 * 86400, Ordering::SeqCst);
        // B opens once key 1 is past due. Its first clock reading is the automatic
        // rotation's question "is it due?" at open, with key 1 read as primary: at
        // that moment handle A writes, and its own automatic rotation makes key 2. B
        // then holds a stale keyring whose primary is due.
        let first = Arc::new(std::sync::Mutex::new(Some(a.clone())));
        let b_now = now.clone();
        let b_opts = Options {
            clock: Arc::new(move || {
                if let Some(a) = first.lock().unwrap().take() {
                    a.put("n", "from-a", b"a".to_vec()).unwrap();
                    assert_eq!(a.stats().unwrap().keys.len(), 2, "a rotated");
                }
                b_now.load(Ordering::SeqCst)
            }),
            ..opts
        };
        let b = Store::open(&path, key(), b_opts).unwrap();
        b.put("n", "from-b", b"b".to_vec()).unwrap();
        a.put("n", "again", b"a".to_vec()).unwrap();
        for store in [&a, &b] {
            let keys = store.stats().unwrap().keys;
            assert_eq!(
                keys.len(),
                2,
                "two handles past the threshold together made {} keys",
                keys.len()
            );
            assert_eq!(keys[1].state, KeyState::Primary);
            assert!(store.verify().unwrap().is_empty());
        }
        assert_eq!(&b.get_one("n", "from-a").unwrap().unwrap()[..], b"a");
        assert_eq!(&a.get_one("n", "from-b").unwrap().unwrap()[..], b"b");
    });
}

#[test]
fn reencryption_ends_after_one_pass_while_the_callback_rotates() {
    each_engine(|place| {
        let store = place.new_store();
        let values = 50;
        let mut b = Batch::new();
        for i in 0..values {
            b.put("n", &format!("k{i}"), format!("value-{i}").into_bytes());
        }
        store.set(&b).unwrap();
        store.rotate().unwrap();
        let batch = 10;
        // One pass is values / batch batches and a final scan; a re-encryption that
        // starts over after each rotation would go on for as long as they come.
        let bound = values / batch + 2;
        let mut calls = 0;
        let report = store
            .reencrypt(batch, |p| {
                calls += 1;
                assert!(
                    p.scanned <= p.total,
                    "call {calls}: scanned {} of {}",
                    p.scanned,
                    p.total
                );
                assert!(calls <= bound, "call {calls}: still re-encrypting ({p:?})");
                if calls <= 2000 {
                    store.rotate().unwrap();
                }
            })
            .unwrap();
        assert!(calls <= bound, "{calls} batches");
        assert!(report.scanned <= report.total, "{report:?}");
        assert_eq!(report.resealed, report.total, "{report:?}");
        // Each batch went to the primary of its commit: key 1, which every value used
        // before the run, is no longer used, and the keys made during the run are kept.
        let stats = store.stats().unwrap();
        assert_eq!(stats.keys.len(), 2 + calls, "{:?}", stats.keys);
        assert_eq!(
            stats.values_per_key.get(&1),
            None,
            "{:?}",
            stats.values_per_key
        );
        for i in 0..values {
            let k = format!("k{i}");
            assert_eq!(
                &store.get_one("n", &k).unwrap().unwrap()[..],
                format!("value-{i}").as_bytes()
            );
        }
        assert!(store.verify().unwrap().is_empty());
        // A rotation made during the run deleted the cursor: the next run is a whole
        // pass, which brings every value under the current primary.
        let primary = stats.keys.last().unwrap().id;
        store
            .reencrypt(batch, |p| assert!(p.scanned <= p.total))
            .unwrap();
        let per_key = store.stats().unwrap().values_per_key;
        assert_eq!(per_key.keys().copied().collect::<Vec<_>>(), vec![primary]);
        assert!(store.verify().unwrap().is_empty());
    });
}
