//! A store written by an earlier build opens and reads back byte for byte: the file
//! format is a promise. `data/format-v1.sealkv` was written by commit e9aa2cf (rows keyed
//! by redb's `[u8; 32]`, two data keys after one rotation, zstd + XChaCha20-Poly1305)
//! with the raw master key `[0x42; 32]`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use sealkv_engine::{MasterKey, Options, Store};

fn copy_of_golden(dir: &std::path::Path) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v1.sealkv");
    let dst = dir.join("golden.sealkv");
    std::fs::copy(src, &dst).unwrap();
    dst
}

fn key() -> MasterKey {
    MasterKey::from_bytes(&[0x42; 32]).unwrap()
}

fn check_contents(store: &Store) {
    assert_eq!(
        store.namespaces().unwrap(),
        ["blob", "creds", "pre-key", "session"]
    );
    let creds = store.get("creds", &["creds"]).unwrap();
    assert_eq!(
        &creds["creds"][..],
        br#"{"noiseKey":{"private":"AAAA"},"registrationId":42}"#
    );
    let ids: Vec<String> = (0..20).map(|i: u32| i.to_string()).collect();
    let pre = store.get("pre-key", &ids).unwrap();
    assert_eq!(pre.len(), 20);
    for i in 0..20u32 {
        let want = format!("{{\"keyId\":{i},\"private\":\"{}\"}}", "QUJD".repeat(10));
        assert_eq!(&pre[&i.to_string()][..], want.as_bytes());
    }
    let blob = store.get("blob", &["big", "tiny"]).unwrap();
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(&blob["big"][..], &big[..]);
    assert_eq!(&blob["tiny"][..], b"x");
    assert_eq!(
        store
            .get_one("session", "4915550001.0")
            .unwrap()
            .map(|v| v.to_vec()),
        Some(b"session under the second data key".repeat(4))
    );
    assert_eq!(store.count("pre-key").unwrap(), 20);
    assert!(store.verify().unwrap().is_empty());
}

#[test]
fn a_format_1_file_opens_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_of_golden(dir.path());
    check_contents(&Store::open_read_only(&path, key(), Options::default()).unwrap());
    let store = Store::open(&path, key(), Options::default()).unwrap();
    check_contents(&store);
    // And it takes writes, deletes and a re-encryption as any store does.
    store.put("pre-key", "20", b"new".to_vec()).unwrap();
    assert!(store.delete("pre-key", "20").unwrap());
    assert_eq!(store.stats().unwrap().keys.len(), 2);
    store.reencrypt(7, |_| {}).unwrap();
    check_contents(&store);
}

/// `data/format-v2.sealkv` was written by commit 10f623b (format 2: one implicit slot
/// in its `kdf` and `store_key` records, no state record) with the raw key
/// `[0x42; 32]`: 21 values in `creds` and `pre-key`, a rotation, a value in `session`
/// under the second data key, and one in the named session `bot-2`.
#[test]
fn a_format_2_file_opens_reads_back_and_gains_a_generation_on_its_first_write_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.sealkv");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v2.sealkv"),
        &path,
    )
    .unwrap();
    let check = |store: &Store| {
        assert_eq!(store.count("pre-key").unwrap(), 20);
        assert_eq!(
            &store.get_one("pre-key", "7").unwrap().unwrap()[..],
            format!("{{\"keyId\":7,\"private\":\"{}\"}}", "QUJD".repeat(10)).as_bytes()
        );
        assert_eq!(
            store
                .get_one("session", "4915550001.0")
                .unwrap()
                .map(|v| v.to_vec()),
            Some(b"session under the second data key".repeat(4))
        );
        let s = store.session("bot-2").unwrap();
        assert_eq!(
            &s.get_one("app-state", "k").unwrap().unwrap()[..],
            b"in a named session"
        );
        assert_eq!(store.stats().unwrap().keys.len(), 2);
        assert!(store.verify().unwrap().is_empty());
    };
    let before = std::fs::read(&path).unwrap();
    let ro = Store::open_read_only(&path, key(), Options::default()).unwrap();
    check(&ro);
    assert_eq!(ro.generation(), 0, "read-only: no state record yet");
    drop(ro);
    assert!(
        std::fs::read(&path).unwrap() == before,
        "a read-only open wrote"
    );
    let store = Store::open(&path, key(), Options::default()).unwrap();
    check(&store);
    assert_eq!(store.generation(), 1, "the upgrade is the first generation");
    let slots = store.slots().unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].kind, sealkv_engine::SlotKind::Key);
    store.put("extra", "new", b"v".to_vec()).unwrap();
    assert_eq!(store.generation(), 2);
    assert!(store.verify().unwrap().is_empty());
    drop(store);
    // Opened again at format 3, with the same key.
    let store = Store::open(&path, key(), Options::default()).unwrap();
    check(&store);
    assert_eq!(store.generation(), 2);
    assert!(
        Store::open(
            &path,
            MasterKey::from_bytes(&[1; 32]).unwrap(),
            Options::default()
        )
        .is_err()
    );
}
