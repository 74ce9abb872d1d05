//! Opening what is not a healthy sealkv store gives a clear error and changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use sealkv_engine::{Error, Store};

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn healthy(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("good.sealkv");
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    for i in 0..50 {
        store
            .put("session", &i.to_string(), vec![i as u8; 500])
            .unwrap();
    }
    path
}

#[test]
fn each_bad_file_gets_its_error_and_stays_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let good = healthy(dir.path());
    let good_bytes = bytes(&good);

    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let random = dir.path().join("random");
    std::fs::write(
        &random,
        (0..100_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let unrelated = dir.path().join("unrelated.redb");
    {
        let db = redb::Database::create(&unrelated).unwrap();
        let t = db.begin_write().unwrap();
        t.open_table(redb::TableDefinition::<&str, u64>::new("other"))
            .unwrap()
            .insert("x", 1)
            .unwrap();
        t.commit().unwrap();
    }
    let truncated = dir.path().join("truncated.sealkv");
    std::fs::write(&truncated, &good_bytes[..good_bytes.len() / 3]).unwrap();
    let tiny = dir.path().join("tiny.sealkv");
    std::fs::write(&tiny, &good_bytes[..100]).unwrap();

    type Check = fn(&Error) -> bool;
    let cases: Vec<(&Path, Check)> = vec![
        (&empty, |e| matches!(e, Error::NotSealkv(_))),
        (&random, |e| matches!(e, Error::NotSealkv(_))),
        (&unrelated, |e| matches!(e, Error::NotSealkv(_))),
        (&truncated, |e| {
            matches!(e, Error::Corrupt(_) | Error::Storage(_))
        }),
        (&tiny, |e| {
            matches!(e, Error::Corrupt(_) | Error::Storage(_))
        }),
        (dir.path(), |e| matches!(e, Error::NotSealkv(_))),
    ];
    for (path, check) in cases {
        let before = if path.is_file() {
            Some(bytes(path))
        } else {
            None
        };
        let err = Store::open(path, key(), fast_opts()).unwrap_err();
        assert!(check(&err), "{}: unexpected {err:?}", path.display());
        assert!(!err.to_string().is_empty());
        if let Some(before) = before {
            assert!(bytes(path) == before, "{} changed", path.display());
        }
    }

    // Wrong key: refused, file untouched.
    let other = sealkv_engine::MasterKey::from_bytes(&[9; 32]).unwrap();
    assert!(matches!(
        Store::open(&good, other, fast_opts()),
        Err(Error::WrongKey)
    ));
    assert!(bytes(&good) == good_bytes, "the file changed");
    // Missing file.
    assert!(matches!(
        Store::open(dir.path().join("nope"), key(), fast_opts()),
        Err(Error::Io(_))
    ));
}

#[test]
fn newer_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let good = healthy(dir.path());
    {
        let db = redb::Database::open(&good).unwrap();
        let t = db.begin_write().unwrap();
        t.open_table(redb::TableDefinition::<&str, &[u8]>::new("sealkv_meta"))
            .unwrap()
            .insert("format", &99u32.to_le_bytes()[..])
            .unwrap();
        t.commit().unwrap();
    }
    let before = bytes(&good);
    let err = Store::open(&good, key(), fast_opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NewerFormat {
                found: 99,
                supported: sealkv_engine::FORMAT_VERSION
            }
        ),
        "{err:?}"
    );
    assert!(bytes(&good) == before, "the file changed");
}

#[test]
fn a_store_in_exclusive_mode_in_use_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("x.sealkv");
    let exclusive = sealkv_engine::Options {
        concurrency: sealkv_engine::Concurrency::Exclusive,
        ..fast_opts()
    };
    drop(Store::create(&good, key(), exclusive).unwrap());
    let held = Store::open(&good, key(), fast_opts()).unwrap();
    assert_eq!(held.concurrency(), sealkv_engine::Concurrency::Exclusive);
    let before = bytes(&good);
    for err in open_errors(&good) {
        assert!(matches!(err, Error::Locked(_)), "{err:?}");
        assert!(err.to_string().contains("in use"));
        assert!(bytes(&good) == before, "the file changed");
    }
}

#[test]
fn a_shared_store_opens_many_times_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let good = healthy(dir.path());
    let a = Store::open(&good, key(), fast_opts()).unwrap();
    let b = Store::open(&good, key(), fast_opts()).unwrap();
    let ro = Store::open_read_only(&good, key(), fast_opts()).unwrap();
    assert_eq!(a.concurrency(), sealkv_engine::Concurrency::Shared);
    a.put("session", "from-a", b"a".to_vec()).unwrap();
    assert_eq!(&b.get_one("session", "from-a").unwrap().unwrap()[..], b"a");
    assert_eq!(&ro.get_one("session", "from-a").unwrap().unwrap()[..], b"a");
    b.put("session", "from-b", b"b".to_vec()).unwrap();
    assert_eq!(&a.get_one("session", "from-b").unwrap().unwrap()[..], b"b");
    assert_eq!(ro.count("session").unwrap(), 52);
}

#[test]
fn create_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let good = healthy(dir.path());
    let before = bytes(&good);
    assert!(matches!(
        Store::create(&good, key(), fast_opts()),
        Err(Error::AlreadyExists(_))
    ));
    assert!(bytes(&good) == before, "the file changed");
}

#[test]
fn tampered_values_are_named_by_verify_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sealkv");
    let marker = b"MARKER-VALUE-0123456789".repeat(4);
    {
        let store = Store::create(
            &path,
            key(),
            sealkv_engine::Options {
                compression: sealkv_engine::Compression::NONE,
                ..fast_opts()
            },
        )
        .unwrap();
        store.put("session", "victim", marker.clone()).unwrap();
        store.put("session", "bystander", b"fine".to_vec()).unwrap();
    }
    // Find the victim's sealed bytes in the file (through redb, read-only), then flip
    // one byte of them in place.
    let sealed: Vec<Vec<u8>> = {
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
    let mut damaged = bytes(&path);
    let victim = sealed.iter().max_by_key(|v| v.len()).unwrap();
    let at = damaged
        .windows(victim.len())
        .position(|w| w == victim.as_slice())
        .unwrap();
    damaged[at + victim.len() - 20] ^= 0x01;
    std::fs::write(&path, &damaged).unwrap();
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    let failures = store.verify().unwrap();
    // The damaged value (its tag, which the content hash stands on, is intact: the
    // failure to open is what reports it).
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].to_string().contains("session/"),
        "{}",
        failures[0]
    );
    let err = store.get("session", &["victim"]).unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }));
    assert!(err.to_string().contains("session/victim"), "{err}");
    assert_eq!(store.get("session", &["bystander"]).unwrap().len(), 1);
}

/// The errors of a read-write and then a read-only open of `path`, both of which must
/// fail.
fn open_errors(path: &std::path::Path) -> [Error; 2] {
    [
        Store::open(path, key(), fast_opts()).unwrap_err(),
        Store::open_read_only(path, key(), fast_opts()).unwrap_err(),
    ]
}

#[test]
fn a_store_held_by_an_older_sealkv_is_reported_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let good = healthy(dir.path());
    // An older sealkv opened its store with redb's default mode: a whole-file lock.
    let older = redb::Database::open(&good).unwrap();
    let before = bytes(&good);
    for err in open_errors(&good) {
        assert!(matches!(err, Error::Locked(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("in use") && msg.contains("older"), "{msg}");
    }
    assert!(bytes(&good) == before, "the file changed");
    drop(older);
    Store::open(&good, key(), fast_opts()).unwrap();
}
