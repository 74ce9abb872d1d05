//! The hardening issue, one test (or more) per defect: a wrong key never writes a file
//! that needs recovery, hostile KDF parameters are refused before deriving, changed
//! meta records are caught at open, files are private, seal counts survive a retried
//! commit, panics while reopening poison instead of hanging, and the re-encryption
//! callback holds no lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::{FaultState, Faulty, fast_opts, faulty_opts, key, passphrase};
use redb::backends::FileBackend;
use redb::{ReadableDatabase, StorageBackend, TableDefinition};
use sealkv_engine::{
    Codec, Compression, CryptoError, Error, FORMAT_VERSION, KdfLimits, KdfParams, MasterKey,
    Options, Store,
};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("sealkv_meta");

/// The bytes of the file at `p`, then of its journal if it has one.
fn bytes(p: &Path) -> Vec<u8> {
    let mut all = std::fs::read(p).unwrap();
    let mut journal = p.as_os_str().to_owned();
    journal.push(".journal");
    if let Ok(more) = std::fs::read(journal) {
        all.extend_from_slice(&more);
    }
    all
}

/// Rewrites one meta record of a closed store, as someone with the file could.
fn set_meta(path: &Path, name: &str, value: &[u8]) {
    let db = redb::Database::open(path).unwrap();
    let t = db.begin_write().unwrap();
    t.open_table(META).unwrap().insert(name, value).unwrap();
    t.commit().unwrap();
}

fn get_meta(path: &Path, name: &str) -> Vec<u8> {
    let db = redb::Database::builder().open_read_only(path).unwrap();
    let t = db.begin_read().unwrap();
    let table = t.open_table(META).unwrap();
    table.get(name).unwrap().unwrap().value().to_vec()
}

/// Runs `f` on a thread and fails the test if it has not returned within a minute
/// (a deadlock detector, not a performance bound).
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not return: deadlock"))
}

/// A copy of a store taken while the store is open: redb must recover it.
fn copy_of_live_store(dir: &Path) -> PathBuf {
    let live = dir.join("live.sealkv");
    let store = Store::create(&live, key(), fast_opts()).unwrap();
    for i in 0..50 {
        store
            .put(
                "session",
                &format!("{i}"),
                format!("value {i}").into_bytes(),
            )
            .unwrap();
    }
    let copy = dir.join("copy.sealkv");
    std::fs::copy(&live, &copy).unwrap();
    // Commits not yet synced into the file are in its journal: a copy of a live store
    // is both (a read-only open replays the journal in memory, writing nothing).
    let journal = dir.join("live.sealkv.journal");
    std::fs::copy(&journal, dir.join("copy.sealkv.journal")).unwrap();
    drop(store);
    // The copy must really need recovery, or this test would test nothing.
    assert!(
        matches!(
            redb::Database::builder().open_read_only(&copy),
            Err(redb::DatabaseError::RepairAborted)
        ),
        "the copy of a live store should need crash recovery"
    );
    copy
}

#[test]
fn a_wrong_key_never_writes_a_file_that_needs_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let copy = copy_of_live_store(dir.path());
    let before = bytes(&copy);
    let wrong = MasterKey::from_bytes(&[1; 32]).unwrap();
    let err = Store::open(&copy, wrong.clone(), fast_opts()).unwrap_err();
    assert!(matches!(err, Error::WrongKey), "{err:?}");
    assert!(bytes(&copy) == before, "a wrong key changed the file");
    let err = Store::open_read_only(&copy, wrong, fast_opts()).unwrap_err();
    assert!(matches!(err, Error::WrongKey), "{err:?}");
    assert!(bytes(&copy) == before, "a wrong key changed the file");
}

#[test]
fn reads_work_on_a_file_that_needs_recovery_without_writing_it() {
    let dir = tempfile::tempdir().unwrap();
    let copy = copy_of_live_store(dir.path());
    let before = bytes(&copy);
    {
        let ro = Store::open_read_only(&copy, key(), fast_opts()).unwrap();
        assert_eq!(ro.count("session").unwrap(), 50);
        assert_eq!(
            &ro.get_one("session", "7").unwrap().unwrap()[..],
            b"value 7"
        );
        assert!(ro.verify().unwrap().is_empty());
        assert!(matches!(
            ro.put("session", "x", b"y".to_vec()),
            Err(Error::ReadOnly)
        ));
        // A backup of the recovered view is a healthy store.
        ro.backup(dir.path().join("b.sealkv")).unwrap();
    }
    assert!(bytes(&copy) == before, "a read-only open changed the file");
    let backup = Store::open_read_only(dir.path().join("b.sealkv"), key(), fast_opts()).unwrap();
    assert_eq!(backup.count("session").unwrap(), 50);
    // With the right key, a read-write open recovers the file and writes on.
    let rw = Store::open(&copy, key(), fast_opts()).unwrap();
    rw.put("session", "new", b"after recovery".to_vec())
        .unwrap();
    assert_eq!(rw.count("session").unwrap(), 51);
}

fn passphrase_store(dir: &Path) -> PathBuf {
    let path = dir.join("p.sealkv");
    let store = Store::create(&path, passphrase("pw"), fast_opts()).unwrap();
    store.put("n", "k", b"v".to_vec()).unwrap();
    path
}

/// The key slot record with other Argon2id parameters for its one slot, same salt.
/// Layout (docs/FORMAT.md): version, next id, count, then the slot's id, kind,
/// created, two empty texts and the key derivation record's length: its kind byte is
/// at 23, and m, t, p follow.
fn kdf_record(path: &Path, params: KdfParams) -> Vec<u8> {
    let mut out = get_meta(path, "slots");
    assert_eq!(out[23], 1, "an Argon2id record");
    out[24..28].copy_from_slice(&params.m_cost_kib.to_le_bytes());
    out[28..32].copy_from_slice(&params.t_cost.to_le_bytes());
    out[32..36].copy_from_slice(&params.p_cost.to_le_bytes());
    out
}

#[test]
fn hostile_kdf_parameters_are_refused_before_deriving() {
    let dir = tempfile::tempdir().unwrap();
    let path = passphrase_store(dir.path());
    let hostile = [
        // 4 GiB x 64 passes: within the old ceilings; deriving would take minutes.
        KdfParams {
            m_cost_kib: 4 << 20,
            t_cost: 64,
            p_cost: 1,
        },
        // 2 GiB once: over the memory limit.
        KdfParams {
            m_cost_kib: 2 << 20,
            t_cost: 1,
            p_cost: 1,
        },
        // 1 GiB x 8 passes: over memory x passes.
        KdfParams {
            m_cost_kib: 1 << 20,
            t_cost: 8,
            p_cost: 1,
        },
    ];
    for params in hostile {
        set_meta(&path, "slots", &kdf_record(&path, params));
        let before = bytes(&path);
        for read_only in [false, true] {
            let opened = if read_only {
                Store::open_read_only(&path, passphrase("pw"), fast_opts())
            } else {
                Store::open(&path, passphrase("pw"), fast_opts())
            };
            let err = opened.unwrap_err();
            assert!(
                matches!(err, Error::Key(CryptoError::KdfOverLimit { .. })),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("m={} KiB", params.m_cost_kib))
                    && msg.contains(&format!("t={}", params.t_cost))
                    && msg.contains("kdf_limits")
                    && msg.contains("--max-kdf-memory"),
                "{msg}"
            );
            assert!(bytes(&path) == before, "the file changed");
        }
    }
}

#[test]
fn kdf_limits_are_the_callers_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = passphrase_store(dir.path());
    // The test parameters use 64 KiB: a caller allowing 32 KiB refuses them...
    let tight = Options {
        kdf_limits: KdfLimits {
            max_memory_kib: 32,
            max_memory_passes_kib: 32,
        },
        ..fast_opts()
    };
    let err = Store::open(&path, passphrase("pw"), tight.clone()).unwrap_err();
    assert!(matches!(err, Error::Key(CryptoError::KdfOverLimit { .. })));
    // ...including for a store it creates, which it could not open again.
    let err = Store::create(dir.path().join("t.sealkv"), passphrase("pw"), tight).unwrap_err();
    assert!(matches!(err, Error::Key(CryptoError::KdfOverLimit { .. })));
    assert!(!dir.path().join("t.sealkv").exists());
    // The defaults accept them.
    Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
}

#[test]
fn an_empty_passphrase_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::create(dir.path().join("e.sealkv"), passphrase(""), fast_opts()).unwrap_err();
    assert!(err.to_string().contains("empty passphrase"), "{err}");
    let store = Store::create(dir.path().join("f.sealkv"), passphrase("pw"), fast_opts()).unwrap();
    assert!(store.rekey(passphrase("")).is_err());
}

#[test]
fn changed_meta_records_are_caught_at_open_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let opts = Options {
        compression: Compression::NONE,
        ..fast_opts()
    };
    Store::create(&path, key(), opts.clone())
        .unwrap()
        .put("n", "k", b"v".to_vec())
        .unwrap();
    let settings = get_meta(&path, "settings");
    let format = get_meta(&path, "format");
    assert_eq!(format, FORMAT_VERSION.to_le_bytes());
    // Flip each bit of the settings record (compression back on, another cipher, ...),
    // and set the format record back to 1.
    let mut changes: Vec<(&str, Vec<u8>)> = Vec::new();
    for i in 0..settings.len() * 8 {
        let mut s = settings.clone();
        s[i / 8] ^= 1 << (i % 8);
        changes.push(("settings", s));
    }
    changes.push(("format", 1u32.to_le_bytes().to_vec()));
    for (name, value) in changes {
        set_meta(&path, name, &value);
        let before = bytes(&path);
        for read_only in [false, true] {
            let opened = if read_only {
                Store::open_read_only(&path, key(), opts.clone())
            } else {
                Store::open(&path, key(), opts.clone())
            };
            match opened {
                Err(Error::MetaTampered) => {}
                // A change that makes the record unreadable is caught before the
                // digest is compared.
                Err(Error::Corrupt(m)) if name == "settings" && m.contains("settings") => {}
                other => panic!("{name} changed to {value:?}: {other:?}"),
            }
            assert!(bytes(&path) == before, "the file changed");
        }
        let original = if name == "settings" {
            &settings
        } else {
            &format
        };
        set_meta(&path, name, original);
    }
    // Put back as they were, the store opens and still writes uncompressed.
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    assert_eq!(store.options().compression.codec, Codec::None);
}

#[test]
fn a_format_1_store_is_upgraded_then_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.sealkv");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v1.sealkv"),
        &path,
    )
    .unwrap();
    let golden = MasterKey::from_bytes(&[0x42; 32]).unwrap();
    let before = bytes(&path);
    Store::open_read_only(&path, golden.clone(), Options::default()).unwrap();
    assert!(bytes(&path) == before, "a read-only open upgraded the file");
    assert_eq!(get_meta(&path, "format"), 1u32.to_le_bytes());
    assert_eq!(get_meta(&path, "keyring")[0], 1);
    drop(Store::open(&path, golden.clone(), Options::default()).unwrap());
    assert_eq!(get_meta(&path, "format"), FORMAT_VERSION.to_le_bytes());
    assert_eq!(
        get_meta(&path, "keyring")[0],
        2,
        "keyring sealed again as v2"
    );
    // From now on its settings are authenticated.
    let mut settings = get_meta(&path, "settings");
    settings[1] ^= 1;
    set_meta(&path, "settings", &settings);
    let err = Store::open(&path, golden, Options::default()).unwrap_err();
    assert!(
        matches!(err, Error::MetaTampered | Error::Corrupt(_)),
        "{err:?}"
    );
}

#[cfg(unix)]
#[test]
fn new_files_are_private_and_compaction_keeps_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    assert_eq!(mode(&path), 0o600, "a new store is the owner's only");
    store.put("n", "k", b"v".to_vec()).unwrap();
    let backup = dir.path().join("b.sealkv");
    store.backup(&backup).unwrap();
    assert_eq!(mode(&backup), 0o600, "a backup is the owner's only");
    store.compact().unwrap();
    assert_eq!(mode(&path), 0o600, "compaction keeps 0600");
    // A mode the owner chose on purpose survives compaction (and so `sealkv rotate`).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    store.compact().unwrap();
    assert_eq!(mode(&path), 0o640);
    assert_eq!(store.count("n").unwrap(), 1);
}

#[test]
fn seal_counts_survive_a_commit_that_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let state = Arc::new(FaultState::default());
    let store = Store::create(&path, key(), faulty_opts(state.clone())).unwrap();
    // Enough seals in one batch to outrun the reservation persisted at creation, so
    // this commit must carry the keyring; its first attempt fails.
    let n = sealkv_crypto::SEAL_RESERVATION as usize + 10;
    let mut batch = sealkv_engine::Batch::new();
    for i in 0..n {
        batch.put("n", &i.to_string(), vec![1]);
    }
    state.arm(1, false);
    store.set(&batch).unwrap();
    assert!(
        state.failures.load(Ordering::SeqCst) >= 1,
        "no fault was injected"
    );
    let sealed = store.stats().unwrap().keys[0].seals;
    assert!(sealed as usize > n);
    drop(store);
    // What a crash now would leave: the counts on disk must bound the seals made.
    let reopened = Store::open(&path, key(), fast_opts()).unwrap();
    let persisted = reopened.stats().unwrap().keys[0].seals;
    assert!(
        persisted >= sealed,
        "the keyring on disk counts {persisted} seals, fewer than the {sealed} made"
    );
}

#[test]
fn commit_failed_says_the_outcome_of_a_failed_write_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(FaultState::default());
    let store = Store::create(
        dir.path().join("s.sealkv"),
        key(),
        faulty_opts(state.clone()),
    )
    .unwrap();
    state.arm(1, true);
    let err = store.put("n", "k", b"v".to_vec()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CommitFailed {
                outcome_unknown: true,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("may or may not have taken effect") && !msg.contains("nothing applied"),
        "{msg}"
    );
}

#[test]
fn a_panic_while_reopening_poisons_the_store_instead_of_hanging_writers() {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(FaultState::default());
    let calls = Arc::new(AtomicU64::new(0));
    let factory: sealkv_engine::internal::BackendFactory = {
        let (state, calls) = (state.clone(), calls.clone());
        Arc::new(move |path: &Path, _create: bool| {
            // The store file's reopen panics (its commit journal opens as usual).
            let journal = path.extension().is_some_and(|e| e == "journal");
            if !journal && calls.fetch_add(1, Ordering::SeqCst) >= 1 {
                panic!("injected: backend factory panics on reopen");
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            let inner = FileBackend::new(file).map_err(std::io::Error::other)?;
            Ok(Box::new(Faulty {
                inner,
                state: state.clone(),
            }) as Box<dyn StorageBackend>)
        })
    };
    let opts = Options {
        backend: Some(factory),
        commit_retry_delay: Duration::from_millis(1),
        ..fast_opts()
    };
    let store = Store::create(dir.path().join("s.sealkv"), key(), opts).unwrap();
    state.arm(1, true);
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || store.put("n", &i.to_string(), vec![1]))
        })
        .collect();
    let results = finishes("writers after a panicking reopen", move || {
        writers
            .into_iter()
            .map(|w| w.join().expect("a writer panicked"))
            .collect::<Vec<_>>()
    });
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert!(store.is_poisoned());
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the reopen was not reached"
    );
    let later = store.clone();
    let r = finishes("a write on the poisoned store", move || {
        later.put("n", "late", vec![1])
    });
    assert!(matches!(r, Err(Error::Poisoned)), "{r:?}");
}

#[test]
fn the_reencryption_callback_may_rotate_and_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s.sealkv"), key(), fast_opts()).unwrap();
    for i in 0..20 {
        store.put("n", &i.to_string(), vec![i as u8]).unwrap();
    }
    store.rotate().unwrap();
    // A rotation during the run does not restart it (the run ends after one pass; the
    // next run does a whole pass); the callback rotates once.
    let s = store.clone();
    let keys = finishes("reencrypt with a rotating callback", move || {
        let mut rotated = false;
        s.reencrypt(5, |_| {
            if !rotated {
                s.rotate().unwrap();
                rotated = true;
            }
        })
        .unwrap();
        s.stats().unwrap().keys.len()
    });
    assert_eq!(keys, 3);

    // A callback that writes while an automatic rotation is due: the clock jumps past
    // `rotate_after` in the first callback, so the write rotates.
    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock_now = now.clone();
    let opts = Options {
        rotate_after: Some(Duration::from_secs(1000)),
        clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
        ..fast_opts()
    };
    let store = Store::create(dir.path().join("auto.sealkv"), key(), opts).unwrap();
    for i in 0..20 {
        store.put("n", &i.to_string(), vec![i as u8]).unwrap();
    }
    store.rotate().unwrap();
    let s = store.clone();
    finishes("reencrypt with a writing callback", move || {
        let mut i = 0;
        s.reencrypt(5, |_| {
            if i == 0 {
                now.fetch_add(2000, Ordering::SeqCst);
            }
            s.put("w", &i.to_string(), vec![1]).unwrap();
            i += 1;
        })
        .unwrap();
    });
    assert_eq!(store.stats().unwrap().keys.len(), 3, "the write rotated");
    assert_eq!(store.count("n").unwrap(), 20);
    assert!(store.verify().unwrap().is_empty());
}
