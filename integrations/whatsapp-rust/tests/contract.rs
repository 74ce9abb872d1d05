//! The behaviour whatsapp-rust-sqlite-storage 0.7.0's tests check, re-expressed against
//! `SealkvBackend` (names follow the SQLite tests they mirror).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use sealkv::{MasterKey, Options};
use sealkv_whatsapp::SealkvBackend;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::traits::*;

fn key() -> MasterKey {
    MasterKey::from_bytes(&[7; 32]).unwrap()
}

/// Where a test's store lives: a file, or, with `SEALKV_WA_PG` set to a server URL
/// (scripts/test runs this file a second time so), a store on PostgreSQL.
struct Place {
    _dir: tempfile::TempDir,
    addr: std::path::PathBuf,
}

fn place() -> Place {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = tempfile::tempdir().unwrap();
    let addr = match std::env::var("SEALKV_WA_PG") {
        Ok(url) if !url.is_empty() => std::path::PathBuf::from(format!(
            "{url}?store=wa_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )),
        _ => dir.path().join("wa.sealkv"),
    };
    Place { _dir: dir, addr }
}

fn backend() -> (Place, SealkvBackend) {
    let place = place();
    let b = SealkvBackend::create(&place.addr, key(), Options::default()).unwrap();
    (place, b)
}

fn reopen(place: &Place) -> SealkvBackend {
    SealkvBackend::open(&place.addr, key(), Options::default()).unwrap()
}

fn mac(i: u8) -> AppStateMutationMAC {
    AppStateMutationMAC {
        index_mac: vec![i; 32],
        value_mac: vec![i ^ 0xff; 32],
    }
}

#[tokio::test]
async fn put_signal_batches_persist_and_upsert() {
    let (_d, b) = backend();
    let s = |a: &str| -> Arc<str> { Arc::from(a) };
    b.put_sessions_batch(&[
        (s("a.0"), Bytes::from_static(b"one")),
        (s("b.0"), Bytes::from_static(b"two")),
        (s("a.0"), Bytes::from_static(b"one again")),
    ])
    .await
    .unwrap();
    assert_eq!(
        &b.get_session("a.0").await.unwrap().unwrap()[..],
        b"one again"
    );
    assert_eq!(&b.get_session("b.0").await.unwrap().unwrap()[..], b"two");
    b.put_sessions_batch(&[(s("b.0"), Bytes::from_static(b"three"))])
        .await
        .unwrap();
    assert_eq!(&b.get_session("b.0").await.unwrap().unwrap()[..], b"three");
    assert!(b.has_session("b.0").await.unwrap());
    b.delete_session("b.0").await.unwrap();
    assert!(!b.has_session("b.0").await.unwrap());

    b.put_identities_batch(&[(s("a.0"), [1; 32]), (s("c.0"), [2; 32])])
        .await
        .unwrap();
    b.put_identities_batch(&[(s("a.0"), [3; 32])])
        .await
        .unwrap();
    assert_eq!(b.load_identity("a.0").await.unwrap(), Some([3; 32]));
    assert_eq!(b.load_identity("c.0").await.unwrap(), Some([2; 32]));
    b.delete_identity("c.0").await.unwrap();
    assert_eq!(b.load_identity("c.0").await.unwrap(), None);

    b.put_sender_keys_batch(&[(s("g:x"), Bytes::from_static(b"sk1"))])
        .await
        .unwrap();
    b.put_sender_keys_batch(&[(s("g:x"), Bytes::from_static(b"sk2"))])
        .await
        .unwrap();
    assert_eq!(b.get_sender_key("g:x").await.unwrap().unwrap(), b"sk2");
    b.delete_sender_key("g:x").await.unwrap();
    assert_eq!(b.get_sender_key("g:x").await.unwrap(), None);

    // Empty batches are fine.
    b.put_sessions_batch(&[]).await.unwrap();
    b.put_identities_batch(&[]).await.unwrap();
    b.put_sender_keys_batch(&[]).await.unwrap();
}

#[tokio::test]
async fn has_signal_state_for_user_matches_by_user_prefix() {
    let (_d, b) = backend();
    assert!(!b.has_signal_state_for_user("15550001").await.unwrap());
    b.put_session("15550001:3@s.whatsapp.net.0", b"s")
        .await
        .unwrap();
    b.put_identity("100000012@lid.0", [1; 32]).await.unwrap();
    assert!(b.has_signal_state_for_user("15550001").await.unwrap());
    assert!(b.has_signal_state_for_user("100000012").await.unwrap());
    assert!(
        !b.has_signal_state_for_user("1555000").await.unwrap(),
        "prefix of a user is not the user"
    );
}

#[tokio::test]
async fn prekeys_watermark_and_batch_loads() {
    let (_d, b) = backend();
    assert_eq!(b.get_max_prekey_id().await.unwrap(), 0, "0 when empty");
    let keys: Vec<(u32, Bytes)> = (1..=812)
        .map(|i| (i, Bytes::from(format!("pk{i}"))))
        .collect();
    b.store_prekeys_batch(&keys, false).await.unwrap();
    assert_eq!(b.get_max_prekey_id().await.unwrap(), 812);
    assert_eq!(&b.load_prekey(17).await.unwrap().unwrap()[..], b"pk17");
    let loaded = b.load_prekeys_batch(&[5, 9999, 6]).await.unwrap();
    let ids: Vec<u32> = loaded.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, vec![5, 6]);
    assert_eq!(&loaded[1].1[..], b"pk6");
    b.remove_prekey(812).await.unwrap();
    assert_eq!(b.get_max_prekey_id().await.unwrap(), 811);

    b.store_signed_prekey(1, b"spk1").await.unwrap();
    b.store_signed_prekey(2, b"spk2").await.unwrap();
    assert_eq!(b.load_signed_prekey(2).await.unwrap().unwrap(), b"spk2");
    let mut all = b.load_all_signed_prekeys().await.unwrap();
    all.sort();
    assert_eq!(all, vec![(1, b"spk1".to_vec()), (2, b"spk2".to_vec())]);
    b.remove_signed_prekey(1).await.unwrap();
    assert_eq!(b.load_signed_prekey(1).await.unwrap(), None);
}

#[tokio::test]
async fn mark_prekeys_uploaded_never_resurrects_deleted_rows() {
    let (_d, b) = backend();
    b.store_prekey(1, b"one", false).await.unwrap();
    b.store_prekey(2, b"two", false).await.unwrap();
    b.remove_prekey(1).await.unwrap();
    b.mark_prekeys_uploaded(&[1, 2]).await.unwrap();
    assert_eq!(b.load_prekey(1).await.unwrap(), None);
    assert_eq!(&b.load_prekey(2).await.unwrap().unwrap()[..], b"two");
    b.mark_prekeys_uploaded(&[]).await.unwrap();
}

#[tokio::test]
async fn batch_mutation_macs_matches_per_item() {
    let (_d, b) = backend();
    let macs: Vec<AppStateMutationMAC> = (0..25).map(mac).collect();
    b.put_mutation_macs("regular", 7, &macs).await.unwrap();
    let wanted: Vec<[u8; 32]> = (0..26).map(|i| [i; 32]).collect();
    let batch = b.get_mutation_macs("regular", &wanted).await.unwrap();
    assert_eq!(batch.len(), 25, "the unknown key is absent");
    for i in 0..25u8 {
        let one = b
            .get_mutation_mac("regular", &[i; 32])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(batch[&[i; 32]], one);
        assert_eq!(one, vec![i ^ 0xff; 32]);
    }
    assert!(
        b.get_mutation_macs("regular", &[])
            .await
            .unwrap()
            .is_empty()
    );
    b.delete_mutation_macs("regular", &[vec![3; 32]])
        .await
        .unwrap();
    assert_eq!(b.get_mutation_mac("regular", &[3; 32]).await.unwrap(), None);
}

#[tokio::test]
async fn clear_mutation_macs_wipes_only_named_collection() {
    let (_d, b) = backend();
    b.put_mutation_macs("regular", 1, &[mac(1)]).await.unwrap();
    b.put_mutation_macs("critical_block", 1, &[mac(1)])
        .await
        .unwrap();
    b.clear_mutation_macs("regular").await.unwrap();
    assert_eq!(b.get_mutation_mac("regular", &[1; 32]).await.unwrap(), None);
    assert!(
        b.get_mutation_mac("critical_block", &[1; 32])
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn versions_and_sync_keys() {
    let (_d, b) = backend();
    let absent = b.get_version("regular").await.unwrap();
    assert_eq!(absent.version, 0, "absent: the default HashState");
    let mut state = HashState {
        version: 42,
        hash: [9; 128],
        mac_mismatch_fatal: true,
        ..Default::default()
    };
    state.index_value_map.insert("idx".into(), vec![1, 2, 3]);
    b.set_version("regular", state).await.unwrap();
    let got = b.get_version("regular").await.unwrap();
    assert_eq!(
        (got.version, got.hash, got.mac_mismatch_fatal),
        (42, [9; 128], true)
    );
    assert_eq!(got.index_value_map["idx"], vec![1, 2, 3]);

    assert_eq!(b.get_latest_sync_key_id().await.unwrap(), None);
    let k = |ts| AppStateSyncKey {
        key_data: vec![5; 32],
        fingerprint: vec![1],
        timestamp: ts,
    };
    b.set_sync_key(&[0, 0, 1, 2], k(1)).await.unwrap();
    b.set_sync_key(&[0, 0, 1, 10], k(2)).await.unwrap();
    b.set_sync_key(&[0, 0, 1, 3], k(3)).await.unwrap();
    assert_eq!(
        b.get_sync_key(&[0, 0, 1, 10])
            .await
            .unwrap()
            .unwrap()
            .timestamp,
        2
    );
    assert_eq!(
        b.get_latest_sync_key_id().await.unwrap(),
        Some(vec![0, 0, 1, 10])
    );
}

/// Rows in the backend's session that did not come from it (an older build, damage
/// that still authenticates is impossible, but a foreign writer with the key is not).
fn raw_put(b: &SealkvBackend, namespace: &str, key: &str, value: &[u8]) {
    b.store()
        .session("whatsapp-rust/1")
        .unwrap()
        .put(namespace, key, value.to_vec())
        .unwrap();
}

#[tokio::test]
async fn legacy_blobs_self_heal_then_overwrite() {
    let (_d, b) = backend();
    raw_put(
        &b,
        "app-state-sync-key",
        &hex::encode([1, 2]),
        b"\x00legacy bincode",
    );
    raw_put(&b, "app-state-version", "regular", b"\x01\x02");
    assert!(
        b.get_sync_key(&[1, 2]).await.unwrap().is_none(),
        "undecodable: absent"
    );
    assert_eq!(
        b.get_version("regular").await.unwrap().version,
        0,
        "undecodable: default"
    );
    let key = AppStateSyncKey {
        key_data: vec![1; 32],
        fingerprint: vec![],
        timestamp: 5,
    };
    b.set_sync_key(&[1, 2], key).await.unwrap();
    assert_eq!(b.get_sync_key(&[1, 2]).await.unwrap().unwrap().timestamp, 5);
}

#[tokio::test]
async fn latest_sync_key_skips_undecodable_rows() {
    let (_d, b) = backend();
    let key = AppStateSyncKey {
        key_data: vec![1; 32],
        fingerprint: vec![],
        timestamp: 5,
    };
    b.set_sync_key(&[0, 1], key).await.unwrap();
    raw_put(&b, "app-state-sync-key", &hex::encode([0, 9]), b"garbage");
    // A key whose data is not 32 bytes does not count either.
    let short = AppStateSyncKey {
        key_data: vec![1; 8],
        fingerprint: vec![],
        timestamp: 6,
    };
    b.set_sync_key(&[0, 8], short).await.unwrap();
    assert_eq!(b.get_latest_sync_key_id().await.unwrap(), Some(vec![0, 1]));
    assert!(b.get_sync_key(&[0, 8]).await.unwrap().is_none());
}

#[tokio::test]
async fn device_registry_save_update_get() {
    let (_d, b) = backend();
    assert!(b.get_devices("nobody").await.unwrap().is_none());
    let record = DeviceListRecord {
        user: "15550001".into(),
        devices: vec![DeviceInfo::new(0, None), DeviceInfo::new(3, Some(42))],
        timestamp: 1_700_000_000,
        phash: Some("2:abc".into()),
        raw_id: None,
    };
    b.update_device_list(record.clone()).await.unwrap();
    let got = b.get_devices("15550001").await.unwrap().unwrap();
    assert_eq!(got.devices.len(), 2);
    assert_eq!(got.devices[1].key_index, Some(42));
    assert_eq!(got.phash.as_deref(), Some("2:abc"));
    let mut newer = record;
    newer.devices.truncate(1);
    newer.phash = Some("2:def".into());
    b.update_device_lists(vec![newer]).await.unwrap();
    let got = b.get_devices("15550001").await.unwrap().unwrap();
    assert_eq!(
        (got.devices.len(), got.phash.as_deref()),
        (1, Some("2:def"))
    );
    b.delete_devices("15550001").await.unwrap();
    assert!(b.get_devices("15550001").await.unwrap().is_none());
}

#[tokio::test]
async fn sender_key_devices() {
    let (_d, b) = backend();
    assert!(
        b.get_sender_key_devices("g1@g.us")
            .await
            .unwrap()
            .is_empty()
    );
    b.set_sender_key_status(
        "g1@g.us",
        &[("a:1@s.whatsapp.net", true), ("b@s.whatsapp.net", false)],
    )
    .await
    .unwrap();
    b.set_sender_key_status("g2@g.us", &[("a:1@s.whatsapp.net", true)])
        .await
        .unwrap();
    let mut got = b.get_sender_key_devices("g1@g.us").await.unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a:1@s.whatsapp.net".into(), true),
            ("b@s.whatsapp.net".into(), false)
        ]
    );
    // Upsert overwrites.
    b.set_sender_key_status("g1@g.us", &[("b@s.whatsapp.net", true)])
        .await
        .unwrap();
    assert_eq!(b.get_sender_key_devices("g1@g.us").await.unwrap().len(), 2);
    assert!(
        b.get_sender_key_devices("g1@g.us")
            .await
            .unwrap()
            .iter()
            .all(|(_, k)| *k)
    );
    // Rows of one device go from every group.
    b.delete_sender_key_device_rows(&["a:1@s.whatsapp.net"])
        .await
        .unwrap();
    assert_eq!(b.get_sender_key_devices("g1@g.us").await.unwrap().len(), 1);
    assert!(
        b.get_sender_key_devices("g2@g.us")
            .await
            .unwrap()
            .is_empty()
    );
    b.set_sender_key_status("g2@g.us", &[("c@s.whatsapp.net", true)])
        .await
        .unwrap();
    b.clear_sender_key_devices("g1@g.us").await.unwrap();
    assert!(
        b.get_sender_key_devices("g1@g.us")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        b.get_sender_key_devices("g2@g.us").await.unwrap().len(),
        1,
        "groups are separate"
    );
    b.clear_all_sender_key_devices().await.unwrap();
    assert!(
        b.get_sender_key_devices("g2@g.us")
            .await
            .unwrap()
            .is_empty()
    );
}

fn lid(lid: &str, pn: &str, created: i64, updated: i64) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.into(),
        phone_number: pn.into(),
        created_at: created,
        updated_at: updated,
        learning_source: "usync".into(),
    }
}

#[tokio::test]
async fn lid_mappings() {
    let (_d, b) = backend();
    b.put_lid_mapping(&lid("100", "555", 10, 10)).await.unwrap();
    b.put_lid_mappings(&[lid("100", "555", 20, 20), lid("200", "666", 5, 5)])
        .await
        .unwrap();
    let got = b.get_lid_mapping("100").await.unwrap().unwrap();
    assert_eq!(
        (got.created_at, got.updated_at),
        (10, 20),
        "an upsert keeps created_at"
    );
    assert_eq!(b.get_pn_mapping("555").await.unwrap().unwrap().lid, "100");
    // The LID's phone changes: the old number no longer maps to it.
    b.put_lid_mapping(&lid("100", "777", 30, 30)).await.unwrap();
    assert!(b.get_pn_mapping("555").await.unwrap().is_none());
    assert_eq!(b.get_pn_mapping("777").await.unwrap().unwrap().lid, "100");
    // Two LIDs for one number: the most recently updated wins.
    b.put_lid_mapping(&lid("300", "777", 1, 1)).await.unwrap();
    assert_eq!(b.get_pn_mapping("777").await.unwrap().unwrap().lid, "100");
    b.put_lid_mapping(&lid("300", "777", 1, 99)).await.unwrap();
    assert_eq!(b.get_pn_mapping("777").await.unwrap().unwrap().lid, "300");
    assert_eq!(b.get_all_lid_mappings().await.unwrap().len(), 3);
    // The newer LID moves to another number: the number falls back to the other LID
    // that still has it.
    b.put_lid_mapping(&lid("300", "888", 1, 120)).await.unwrap();
    assert_eq!(b.get_pn_mapping("777").await.unwrap().unwrap().lid, "100");
    assert_eq!(b.get_pn_mapping("888").await.unwrap().unwrap().lid, "300");
}

#[tokio::test]
async fn base_keys_and_group_metadata() {
    let (_d, b) = backend();
    assert!(!b.has_same_base_key("a.0", "m1", b"k").await.unwrap());
    b.save_base_key("a.0", "m1", b"k").await.unwrap();
    assert!(b.has_same_base_key("a.0", "m1", b"k").await.unwrap());
    assert!(!b.has_same_base_key("a.0", "m1", b"other").await.unwrap());
    assert!(
        !b.has_same_base_key("a.0m", "1", b"k").await.unwrap(),
        "parts do not run together"
    );
    b.delete_base_key("a.0", "m1").await.unwrap();
    assert!(!b.has_same_base_key("a.0", "m1", b"k").await.unwrap());

    assert!(b.get_group_metadata("g@g.us").await.unwrap().is_none());
    b.put_group_metadata("g@g.us", b"v1").await.unwrap();
    b.put_group_metadata("g@g.us", b"v2").await.unwrap();
    assert_eq!(
        b.get_group_metadata("g@g.us").await.unwrap().unwrap(),
        b"v2"
    );
    b.delete_group_metadata("g@g.us").await.unwrap();
    assert!(b.get_group_metadata("g@g.us").await.unwrap().is_none());
}

fn tc(token: &[u8], ts: i64, sender: Option<i64>) -> TcTokenEntry {
    TcTokenEntry {
        token: token.to_vec(),
        token_timestamp: ts,
        sender_timestamp: sender,
    }
}

#[tokio::test]
async fn tc_tokens_put_upsert_delete_list() {
    let (_d, b) = backend();
    assert!(b.get_tc_token("a@s.whatsapp.net").await.unwrap().is_none());
    b.put_tc_token("a@s.whatsapp.net", &tc(b"t1", 100, Some(50)))
        .await
        .unwrap();
    let got = b.get_tc_token("a@s.whatsapp.net").await.unwrap().unwrap();
    assert_eq!(
        (got.token, got.token_timestamp, got.sender_timestamp),
        (b"t1".to_vec(), 100, Some(50))
    );
    b.put_tc_token("a@s.whatsapp.net", &tc(b"t2", 200, None))
        .await
        .unwrap();
    let got = b.get_tc_token("a@s.whatsapp.net").await.unwrap().unwrap();
    assert_eq!(
        (got.token, got.sender_timestamp),
        (b"t2".to_vec(), None),
        "a put overwrites all fields"
    );
    b.put_tc_token("b@s.whatsapp.net", &tc(b"t", 1, None))
        .await
        .unwrap();
    b.put_tc_token("c@s.whatsapp.net", &tc(b"t", 1, None))
        .await
        .unwrap();
    let mut jids = b.get_all_tc_token_jids().await.unwrap();
    jids.sort();
    assert_eq!(
        jids,
        vec!["a@s.whatsapp.net", "b@s.whatsapp.net", "c@s.whatsapp.net"]
    );
    b.delete_tc_token("b@s.whatsapp.net").await.unwrap();
    assert!(b.get_tc_token("b@s.whatsapp.net").await.unwrap().is_none());
}

#[tokio::test]
async fn touch_and_store_received_preserve_each_others_field() {
    let (_d, b) = backend();
    let j = "x@s.whatsapp.net";
    b.touch_tc_token_sender_timestamp(j, 5000).await.unwrap();
    let got = b.get_tc_token(j).await.unwrap().unwrap();
    assert!(got.token.is_empty(), "a placeholder");
    b.store_received_tc_token(j, b"real", 4000).await.unwrap();
    let got = b.get_tc_token(j).await.unwrap().unwrap();
    assert_eq!(
        (
            got.token.as_slice(),
            got.token_timestamp,
            got.sender_timestamp
        ),
        (&b"real"[..], 4000, Some(5000))
    );
    b.touch_tc_token_sender_timestamp(j, 6000).await.unwrap();
    assert_eq!(
        b.get_tc_token(j).await.unwrap().unwrap().sender_timestamp,
        Some(6000)
    );
    b.touch_tc_token_sender_timestamp(j, 1000).await.unwrap();
    let got = b.get_tc_token(j).await.unwrap().unwrap();
    assert_eq!(got.sender_timestamp, Some(6000), "touch only advances");
    assert_eq!(got.token, b"real", "touch keeps the token");
}

#[tokio::test]
async fn store_received_tc_token_is_newer_wins() {
    let (_d, b) = backend();
    let j = "y@s.whatsapp.net";
    b.store_received_tc_token(j, b"new", 2000).await.unwrap();
    b.store_received_tc_token(j, b"old", 1000).await.unwrap();
    assert_eq!(b.get_tc_token(j).await.unwrap().unwrap().token, b"new");
    b.store_received_tc_token(j, b"newer", 3000).await.unwrap();
    assert_eq!(b.get_tc_token(j).await.unwrap().unwrap().token, b"newer");
}

#[tokio::test]
async fn delete_expired_two_window_pruning() {
    let (_d, b) = backend();
    // (token_cutoff, sender_cutoff) = (1000, 2000)
    b.put_tc_token("stale-placeholder", &tc(b"", 100, Some(100)))
        .await
        .unwrap();
    b.put_tc_token("orphan-expired", &tc(b"t", 500, None))
        .await
        .unwrap();
    b.put_tc_token("recent-placeholder", &tc(b"", 3000, Some(3000)))
        .await
        .unwrap();
    b.put_tc_token("expired-token-live-sender", &tc(b"t", 500, Some(2500)))
        .await
        .unwrap();
    b.put_tc_token("live-token", &tc(b"t", 1500, None))
        .await
        .unwrap();
    assert_eq!(b.delete_expired_tc_tokens(1000, 2000).await.unwrap(), 2);
    let mut left = b.get_all_tc_token_jids().await.unwrap();
    left.sort();
    assert_eq!(
        left,
        vec![
            "expired-token-live-sender",
            "live-token",
            "recent-placeholder"
        ]
    );
    assert_eq!(
        b.delete_expired_tc_tokens(1000, 2000).await.unwrap(),
        0,
        "kept rows keep their index entries"
    );
    assert_eq!(b.delete_expired_tc_tokens(1600, 2600).await.unwrap(), 2);
}

#[tokio::test]
async fn sent_messages_take_is_read_and_delete() {
    let (_d, b) = backend();
    b.store_sent_message("chat@s.whatsapp.net", "M1", b"payload")
        .await
        .unwrap();
    b.store_sent_message("chat@s.whatsapp.net", "M1", b"payload 2")
        .await
        .unwrap();
    assert_eq!(
        b.take_sent_message("chat@s.whatsapp.net", "M1")
            .await
            .unwrap()
            .unwrap(),
        b"payload 2"
    );
    assert_eq!(
        b.take_sent_message("chat@s.whatsapp.net", "M1")
            .await
            .unwrap(),
        None,
        "a second take finds nothing"
    );

    b.store_sent_message("chat@s.whatsapp.net", "M2", b"p")
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(b.delete_expired_sent_messages(now - 60).await.unwrap(), 0);
    assert_eq!(b.delete_expired_sent_messages(now + 60).await.unwrap(), 1);
    assert_eq!(
        b.take_sent_message("chat@s.whatsapp.net", "M2")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn pending_inbound_round_trip_and_expiry() {
    let (_d, b) = backend();
    b.store_pending_inbound("c", "s", "1", b"m1").await.unwrap();
    b.store_pending_inbound_batch(&[
        PendingInboundRow {
            chat: "c",
            sender: "s",
            id: "2",
            message: b"m2",
        },
        PendingInboundRow {
            chat: "c",
            sender: "s",
            id: "3",
            message: b"m3",
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        b.get_pending_inbound("c", "s", "2").await.unwrap().unwrap(),
        b"m2"
    );
    b.delete_pending_inbound("c", "s", "1").await.unwrap();
    assert_eq!(b.get_pending_inbound("c", "s", "1").await.unwrap(), None);
    b.delete_pending_inbound_batch(&[PendingInboundKey {
        chat: "c",
        sender: "s",
        id: "2",
    }])
    .await
    .unwrap();
    assert_eq!(b.get_pending_inbound("c", "s", "2").await.unwrap(), None);
    assert_eq!(b.delete_expired_pending_inbound(i64::MAX).await.unwrap(), 1);
    assert_eq!(b.get_pending_inbound("c", "s", "3").await.unwrap(), None);
}

fn secret(
    chat: &str,
    sender: &str,
    id: &str,
    byte: u8,
    expires_at: i64,
    message_ts: i64,
) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: chat.into(),
        sender: sender.into(),
        msg_id: id.into(),
        secret: [byte; 32],
        expires_at,
        message_ts,
    }
}

#[tokio::test]
async fn msg_secrets() {
    let (_d, b) = backend();
    assert_eq!(b.get_msg_secret("c", "s", "m").await.unwrap(), None);
    b.put_msg_secret("c", "s", "m", &[1; 32]).await.unwrap();
    assert_eq!(
        b.get_msg_secret("c", "s", "m").await.unwrap().unwrap(),
        vec![1; 32]
    );
    b.put_msg_secret("c", "s", "m", &[2; 32]).await.unwrap();
    assert_eq!(
        b.get_msg_secret("c", "s", "m").await.unwrap().unwrap(),
        vec![2; 32],
        "upsert replaces the secret"
    );
    // Keyed by all three parts.
    assert_eq!(b.get_msg_secret("c", "s2", "m").await.unwrap(), None);
    assert_eq!(b.get_msg_secret("c2", "s", "m").await.unwrap(), None);

    // A batch across many rows, a duplicate later in it wins.
    let mut entries: Vec<MsgSecretEntry> = (0..101)
        .map(|i| secret("c", "s", &format!("M{i}"), 3, 0, 0))
        .collect();
    entries.push(secret("c", "s", "M0", 9, 0, 0));
    assert_eq!(b.put_msg_secrets(entries).await.unwrap(), 102);
    assert_eq!(
        b.get_msg_secret("c", "s", "M0").await.unwrap().unwrap(),
        vec![9; 32]
    );
    assert_eq!(b.put_msg_secrets(vec![]).await.unwrap(), 0);

    // Expiry merge: the later deadline wins, 0 (never) wins over all.
    b.put_msg_secrets(vec![secret("c", "s", "E", 1, 9_000, 0)])
        .await
        .unwrap();
    b.put_msg_secrets(vec![secret("c", "s", "E", 1, 3_000, 0)])
        .await
        .unwrap();
    assert_eq!(
        b.delete_expired_msg_secrets(5_000).await.unwrap(),
        0,
        "kept the 9,000 deadline"
    );
    assert_eq!(
        b.delete_expired_msg_secrets(9_000).await.unwrap(),
        1,
        "inclusive cutoff"
    );
    b.put_msg_secrets(vec![
        secret("c", "s", "N", 1, 100, 0),
        secret("c", "s", "P", 1, 100, 0),
    ])
    .await
    .unwrap();
    b.put_msg_secrets(vec![secret("c", "s", "N", 1, 0, 0)])
        .await
        .unwrap();
    assert_eq!(
        b.delete_expired_msg_secrets(1_000).await.unwrap(),
        1,
        "N never expires now; P went"
    );
    assert!(b.get_msg_secret("c", "s", "N").await.unwrap().is_some());
    assert!(b.get_msg_secret("c", "s", "P").await.unwrap().is_none());

    // The parent message time is kept by a later put without one.
    b.put_msg_secrets(vec![secret("c", "s", "T", 1, 0, 777)])
        .await
        .unwrap();
    b.put_msg_secrets(vec![secret("c", "s", "T", 2, 0, 0)])
        .await
        .unwrap();
    assert_eq!(
        b.get_msg_secret_with_ts("c", "s", "T").await.unwrap(),
        Some((vec![2; 32], 777))
    );
    assert_eq!(
        b.get_msg_secret_with_ts("c", "s", "absent").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn accounts_in_one_file_are_isolated() {
    let (_d, one) = backend();
    let two = one.with_device(2).unwrap();
    assert_eq!((one.device_id(), two.device_id()), (1, 2));
    one.put_msg_secret("c", "s", "m", &[1; 32]).await.unwrap();
    one.put_session("a.0", b"one").await.unwrap();
    assert_eq!(two.get_msg_secret("c", "s", "m").await.unwrap(), None);
    assert_eq!(two.get_session("a.0").await.unwrap(), None);
    two.put_session("a.0", b"two").await.unwrap();
    assert_eq!(&one.get_session("a.0").await.unwrap().unwrap()[..], b"one");
    assert_eq!(one.delete_expired_msg_secrets(i64::MAX).await.unwrap(), 0);
}

#[tokio::test]
async fn create_new_device_uses_configured_device_id() {
    let (dir, b) = backend();
    let b = b.with_device(42).unwrap();
    assert!(!b.exists().await.unwrap());
    assert_eq!(b.create().await.unwrap(), 42);
    assert!(b.exists().await.unwrap());
    assert!(b.create().await.is_err(), "creating twice is refused");
    assert!(!b.with_device(1).unwrap().exists().await.unwrap());
    let device = b.load().await.unwrap().unwrap();
    assert!(device.registration_id >= 1);
    // The skipped field is restored, not left empty.
    assert_eq!(
        format!("{:?}", device.device_props.os),
        format!("{:?}", wacore::store::device::DEVICE_PROPS.os)
    );
    drop(b);
    let again = reopen(&dir).with_device(42).unwrap();
    let reloaded = again.load().await.unwrap().unwrap();
    assert_eq!(reloaded.registration_id, device.registration_id);
    assert_eq!(
        reloaded.identity_key.public_key.serialize(),
        device.identity_key.public_key.serialize(),
        "the identity survives a restart"
    );
}

#[tokio::test]
async fn prekey_watermarks_survive_save_load_roundtrip() {
    let (dir, b) = backend();
    b.create().await.unwrap();
    let mut device = b.load().await.unwrap().unwrap();
    assert_eq!(device.first_unupload_pre_key_id, 0);
    device.next_pre_key_id = 913;
    device.first_unupload_pre_key_id = 101;
    device.push_name = "bot".into();
    b.save(&device).await.unwrap();
    drop(b);
    let loaded = reopen(&dir).load().await.unwrap().unwrap();
    assert_eq!(
        (loaded.next_pre_key_id, loaded.first_unupload_pre_key_id),
        (913, 101)
    );
    assert_eq!(loaded.push_name, "bot");
}

#[test]
fn create_and_open_work_inside_a_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in-runtime.sealkv");
        let b = SealkvBackend::create(&path, key(), Options::default()).unwrap();
        b.put_session("a.0", b"x").await.unwrap();
        drop(b);
        let b = SealkvBackend::open(&path, key(), Options::default()).unwrap();
        assert!(b.has_session("a.0").await.unwrap());
        let wrong = SealkvBackend::open(
            &path,
            MasterKey::from_bytes(&[8; 32]).unwrap(),
            Options::default(),
        );
        assert!(matches!(wrong, Err(sealkv::Error::WrongKey)));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_prekeys_stay_removed_while_marks_race() {
    let (_d, b) = backend();
    let ids: Vec<u32> = (1..=200).collect();
    let keys: Vec<(u32, Bytes)> = ids
        .iter()
        .map(|i| (*i, Bytes::from_static(b"pk")))
        .collect();
    b.store_prekeys_batch(&keys, false).await.unwrap();
    let marker = {
        let (b, ids) = (b.clone(), ids.clone());
        tokio::spawn(async move {
            for _ in 0..40 {
                b.mark_prekeys_uploaded(&ids).await.unwrap();
            }
        })
    };
    for id in &ids {
        b.remove_prekey(*id).await.unwrap();
    }
    marker.await.unwrap();
    assert_eq!(
        b.get_max_prekey_id().await.unwrap(),
        0,
        "a mark brought back a removed pre-key"
    );
}

#[tokio::test]
async fn errors_do_not_name_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_value_size: 64,
        ..Options::default()
    };
    let b = SealkvBackend::create(dir.path().join("wa.sealkv"), key(), opts).unwrap();
    let jid = "15550009999@s.whatsapp.net.0";
    let err = b.put_session(jid, &[0; 100]).await.unwrap_err();
    let shown = format!(
        "{err} {err:?} {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(shown.contains("over the store's limit"), "{shown}");
    assert!(
        !shown.contains("15550009999"),
        "a JID reached the error: {shown}"
    );
    let long = "x".repeat(2000);
    let err = b.put_session(&long, b"s").await.unwrap_err();
    assert!(!format!("{err:?}").contains(&long[..100]));
}

/// A store put back from an older copy would bring back consumed one-time pre-keys:
/// the backend's open refuses it with the engine's `RolledBack`.
#[tokio::test]
async fn an_older_copy_that_would_resurrect_a_consumed_prekey_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wa.sealkv");
    let store = sealkv::Store::create(&path, key(), Options::default()).unwrap();
    store
        .set_anchor(Some(sealkv::AnchorLocation::File(
            dir.path().join("wa.anchor"),
        )))
        .unwrap();
    let b = SealkvBackend::from_store(store).unwrap();
    b.store_prekey(7, b"one-time", false).await.unwrap();
    drop(b);
    let backup = dir.path().join("backup.sealkv");
    std::fs::copy(&path, &backup).unwrap();
    let b = reopen_file(&path);
    b.remove_prekey(7).await.unwrap();
    drop(b);
    std::fs::copy(&backup, &path).unwrap();
    match SealkvBackend::open(&path, key(), Options::default()) {
        Err(sealkv::Error::RolledBack { .. }) => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("the older copy opened: pre-key 7 would be used twice"),
    }
}

fn reopen_file(path: &std::path::Path) -> SealkvBackend {
    SealkvBackend::open(path, key(), Options::default()).unwrap()
}
