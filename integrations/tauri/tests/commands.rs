//! The plugin's commands through Tauri's mock runtime: each call goes through Tauri's
//! IPC and its ACL, resolved from the plugin's own permission files
//! (`permissions/default.toml` and the generated `allow-*`/`deny-*`), as an app's
//! build would resolve them.
//!
//! The stores' keys go to a real Secret Service (scripts/tauri-check starts
//! gnome-keyring on a private D-Bus session); without one the tests that open a store
//! skip themselves, unless `SEALKV_REQUIRE_KEYCHAIN` is set.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{TestApp, have_keychain};
use serde_json::{Value, json};
use tauri_plugin_sealkv::SealkvExt;
use tauri_plugin_sealkv::sealkv::SlotKind;
use tauri_plugin_sealkv::sealkv::keychain::Keychain;

const RECOVERY: &str = "correct horse battery staple";

/// A temporary directory and an app with `sealkv:default` on it, when a Secret
/// Service answers.
fn keychain_app() -> Option<(tempfile::TempDir, TestApp)> {
    if !have_keychain() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::new(dir.path(), &["sealkv:default"]);
    Some((dir, app))
}

fn id_of(opened: &Value) -> String {
    opened["id"].as_str().unwrap().to_string()
}

#[test]
fn the_commands_read_and_write_through_the_ipc() {
    let Some((dir, t)) = keychain_app() else {
        return;
    };
    let opened = t.ok("open", json!({ "name": "notes" }));
    assert_eq!(opened["created"], true);
    assert_eq!(opened["repaired"], false);
    assert_eq!(opened["alreadyOpen"], false);
    let id = id_of(&opened);
    assert_eq!(
        t.ok("open", json!({ "name": "notes" }))["alreadyOpen"],
        true
    );

    // One atomic batch: bytes, text, JSON, a deletion.
    t.ok(
        "set",
        json!({ "name": "notes", "changes": [
            { "namespace": "notes", "key": "bin", "value": { "bytes": [0, 1, 255] } },
            { "namespace": "notes", "key": "text", "value": { "text": "the secret plan" } },
            { "namespace": "prefs", "key": "json", "value": { "json": { "theme": "dark", "size": 3 } } },
            { "namespace": "notes", "key": "never", "value": null },
        ]}),
    );
    let get = |ns: &str, key: &str, encoding: &str| {
        t.call(
            "get",
            json!({ "name": "notes", "namespace": ns, "key": key, "encoding": encoding }),
        )
    };
    assert_eq!(
        get("notes", "bin", "bytes"),
        Ok(json!({ "bytes": [0, 1, 255] }))
    );
    assert_eq!(
        get("notes", "text", "text"),
        Ok(json!({ "text": "the secret plan" }))
    );
    assert_eq!(
        get("prefs", "json", "json"),
        Ok(json!({ "json": { "theme": "dark", "size": 3 } }))
    );
    assert_eq!(get("notes", "missing", "bytes"), Ok(Value::Null));
    // The encoding defaults to bytes; a value that is not what was asked for is an error.
    assert_eq!(
        t.ok(
            "get",
            json!({ "name": "notes", "namespace": "notes", "key": "bin" })
        ),
        json!({ "bytes": [0, 1, 255] })
    );
    assert_eq!(
        get("notes", "bin", "text").unwrap_err()["code"],
        "SEALKV_NOT_TEXT"
    );
    assert_eq!(
        get("notes", "text", "json").unwrap_err()["code"],
        "SEALKV_NOT_JSON"
    );

    assert_eq!(
        t.ok("list", json!({ "name": "notes", "namespace": "notes" })),
        json!(["bin", "text"])
    );
    assert_eq!(
        t.ok("namespaces", json!({ "name": "notes" })),
        json!(["notes", "prefs"])
    );
    assert_eq!(
        t.ok(
            "delete",
            json!({ "name": "notes", "namespace": "notes", "key": "bin" })
        ),
        true
    );
    assert_eq!(
        t.ok(
            "delete",
            json!({ "name": "notes", "namespace": "notes", "key": "bin" })
        ),
        false
    );
    assert!(t.ok("rotate", json!({ "name": "notes" })).as_u64().unwrap() >= 2);
    assert_eq!(t.ok("verify", json!({ "name": "notes" })), json!([]));

    // Closed, it answers SEALKV_NOT_OPEN; reopened, the data is there.
    assert_eq!(t.ok("close", json!({ "name": "notes" })), true);
    assert_eq!(
        t.code(
            "get",
            json!({ "name": "notes", "namespace": "notes", "key": "text" })
        ),
        "SEALKV_NOT_OPEN"
    );
    let again = t.ok("open", json!({ "name": "notes" }));
    assert_eq!(
        (again["created"].clone(), id_of(&again)),
        (json!(false), id.clone())
    );
    assert_eq!(
        get("notes", "text", "text"),
        Ok(json!({ "text": "the secret plan" }))
    );

    // The file is the app directory's notes.sealkv and holds no plaintext.
    let bytes = std::fs::read(dir.path().join("notes.sealkv")).unwrap();
    for needle in [&b"the secret plan"[..], b"theme", b"prefs"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "plaintext in the file"
        );
    }
    t.ok("close", json!({ "name": "notes" }));
    t.forget(&id);
}

#[test]
fn a_capability_without_allow_set_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let readers = [
        "sealkv:allow-open",
        "sealkv:allow-get",
        "sealkv:allow-list",
        "sealkv:allow-close",
    ];
    let t = TestApp::new(dir.path(), &readers);
    let write = json!({ "name": "notes", "changes": [
        { "namespace": "notes", "key": "k", "value": { "text": "v" } },
    ]});
    // Tauri refuses it before the plugin sees it: the message names the permission.
    let refused = t.call("set", write.clone()).unwrap_err();
    let message = refused.as_str().unwrap_or_default();
    assert!(message.contains("sealkv.set not allowed"), "{refused}");
    assert!(message.contains("sealkv:allow-set"), "{refused}");
    for command in ["delete", "rotate", "verify", "namespaces"] {
        let refused = t
            .call(
                command,
                json!({ "name": "notes", "namespace": "n", "key": "k" }),
            )
            .unwrap_err();
        let message = refused.as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("sealkv.{command} not allowed")),
            "{command}: {refused}"
        );
    }
    // An allowed command reaches the plugin (which says the store is not open).
    assert_eq!(
        t.code(
            "get",
            json!({ "name": "notes", "namespace": "n", "key": "k" })
        ),
        "SEALKV_NOT_OPEN"
    );
    // A deny wins over the default set.
    let denied = TestApp::new(dir.path(), &["sealkv:default", "sealkv:deny-set"]);
    let refused = denied.call("set", write.clone()).unwrap_err();
    assert!(
        refused
            .as_str()
            .unwrap_or_default()
            .contains("sealkv.set explicitly denied"),
        "{refused}"
    );

    if !have_keychain() {
        return;
    }
    // With the store open the same holds, and nothing was written.
    let id = id_of(&t.ok("open", json!({ "name": "notes" })));
    let refused = t.call("set", write).unwrap_err();
    assert!(
        refused.as_str().unwrap_or_default().contains("not allowed"),
        "{refused}"
    );
    assert_eq!(
        t.ok("list", json!({ "name": "notes", "namespace": "notes" })),
        json!([])
    );
    t.ok("close", json!({ "name": "notes" }));
    t.forget(&id);
}

#[test]
fn the_apps_rust_side_uses_the_same_stores() {
    let Some((_dir, t)) = keychain_app() else {
        return;
    };
    let opened = t.app.sealkv().open("notes", None).unwrap();
    assert!(opened.created);
    // Written from Rust, read through the IPC, and the other way round.
    let store = t.app.sealkv().store("notes").unwrap();
    store.put("notes", "from-rust", b"1".to_vec()).unwrap();
    assert_eq!(
        t.ok(
            "get",
            json!({ "name": "notes", "namespace": "notes", "key": "from-rust", "encoding": "text" })
        ),
        json!({ "text": "1" })
    );
    t.ok(
        "set",
        json!({ "name": "notes", "changes": [
            { "namespace": "notes", "key": "from-js", "value": { "json": [1, 2] } },
        ]}),
    );
    assert_eq!(
        store.get_one("notes", "from-js").unwrap().unwrap().to_vec(),
        b"[1,2]"
    );
    assert_eq!(t.app.sealkv().open_names(), vec!["notes".to_string()]);
    drop(store);
    assert!(t.app.sealkv().close("notes"));
    assert!(t.app.sealkv().store("notes").is_err());
    t.forget(&opened.id);
}

/// A store made with a recovery passphrase, holding one value; closed again.
fn recoverable(t: &TestApp) -> String {
    let opened = t.ok(
        "open",
        json!({ "name": "vault", "recoveryPassphrase": RECOVERY }),
    );
    t.ok(
        "set",
        json!({ "name": "vault", "changes": [
            { "namespace": "v", "key": "k", "value": { "text": "kept" } },
        ]}),
    );
    let slots = t.app.sealkv().store("vault").unwrap().slots().unwrap();
    let kinds: Vec<_> = slots.iter().map(|s| (s.kind, s.label.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (SlotKind::Keychain, None),
            (SlotKind::Passphrase, Some("recovery".to_string()))
        ]
    );
    t.ok("close", json!({ "name": "vault" }));
    id_of(&opened)
}

/// Opens the store with its recovery passphrase: what `open` says it did
/// (`recovered`, `repaired`, `restoreAccepted`).
fn recover(t: &TestApp) -> [bool; 3] {
    let opened = t.ok(
        "open",
        json!({ "name": "vault", "recoveryPassphrase": RECOVERY }),
    );
    ["recovered", "repaired", "restoreAccepted"]
        .map(|flag| opened[flag].as_bool().unwrap_or_else(|| panic!("{opened}")))
}

/// After a recovery: the value is there, a new keychain slot was added, and a fresh
/// app with the same service opens the store with no passphrase.
fn check_recovered(t: &TestApp, dir: &Path, id: &str) {
    assert_eq!(
        t.ok(
            "get",
            json!({ "name": "vault", "namespace": "v", "key": "k", "encoding": "text" })
        ),
        json!({ "text": "kept" })
    );
    let slots = t.app.sealkv().store("vault").unwrap().slots().unwrap();
    let keychain: Vec<_> = slots
        .iter()
        .filter(|s| s.kind == SlotKind::Keychain)
        .collect();
    assert_eq!(keychain.len(), 2, "{slots:?}");
    assert_eq!(keychain[1].label.as_deref(), Some("keychain"));
    t.ok("close", json!({ "name": "vault" }));
    let later = TestApp::with_service(dir, &["sealkv:default"], t.service.clone());
    let opened = later.ok("open", json!({ "name": "vault" }));
    assert_eq!(
        (&opened["created"], &opened["recovered"]),
        (&json!(false), &json!(false))
    );
    later.ok("close", json!({ "name": "vault" }));
    later.forget(id);
}

#[test]
fn the_recovery_passphrase_opens_a_store_whose_keychain_entry_is_gone_and_repairs_it() {
    let Some((dir, t)) = keychain_app() else {
        return;
    };
    let id = recoverable(&t);
    // The key's entry is deleted; its anchor's stays.
    assert!(Keychain::new(&t.service).unwrap().delete_key(&id).unwrap());
    let before = std::fs::read(dir.path().join("vault.sealkv")).unwrap();
    let lost = t.call("open", json!({ "name": "vault" })).unwrap_err();
    assert_eq!(lost["code"], "SEALKV_KEYCHAIN", "{lost}");
    assert!(
        lost["message"]
            .as_str()
            .unwrap()
            .contains("recovery passphrase"),
        "{lost}"
    );
    assert_eq!(
        t.code(
            "open",
            json!({ "name": "vault", "recoveryPassphrase": "not the passphrase" })
        ),
        "SEALKV_WRONG_KEY"
    );
    let after = std::fs::read(dir.path().join("vault.sealkv")).unwrap();
    assert!(before == after, "a failed open changed the file");

    assert_eq!(
        recover(&t),
        [true, true, false],
        "recovered, repaired, restoreAccepted"
    );
    check_recovered(&t, dir.path(), &id);
}

#[test]
fn after_a_keychain_reset_the_recovery_passphrase_accepts_the_file_and_anchors_it_again() {
    let Some((dir, t)) = keychain_app() else {
        return;
    };
    let id = recoverable(&t);
    // The whole keychain is gone (a reset, a new machine): the key and the anchor.
    let keychain = Keychain::new(&t.service).unwrap();
    assert!(keychain.delete_key(&id).unwrap());
    assert!(keychain.delete_key(&format!("{id}.anchor")).unwrap());
    assert_eq!(
        t.code("open", json!({ "name": "vault" })),
        "SEALKV_KEYCHAIN"
    );
    assert_eq!(
        recover(&t),
        [true, true, true],
        "recovered, repaired, restoreAccepted"
    );
    // The new key is in the keychain; and the anchor is back, or the fresh open in
    // check_recovered would fail with SEALKV_ANCHOR.
    assert!(keychain.load_key(&id).is_ok());
    check_recovered(&t, dir.path(), &id);
}

#[test]
fn a_change_without_a_value_is_refused_not_taken_for_a_deletion() {
    let Some((_dir, t)) = keychain_app() else {
        return;
    };
    let id = id_of(&t.ok("open", json!({ "name": "notes" })));
    t.ok(
        "set",
        json!({ "name": "notes", "changes": [
            { "namespace": "n", "key": "k", "value": { "text": "v" } },
        ]}),
    );
    assert!(
        t.call(
            "set",
            json!({ "name": "notes", "changes": [{ "namespace": "n", "key": "k" }] })
        )
        .is_err()
    );
    assert_eq!(
        t.ok("list", json!({ "name": "notes", "namespace": "n" })),
        json!(["k"])
    );
    t.ok("close", json!({ "name": "notes" }));
    t.forget(&id);
}

#[test]
fn scopes_on_store_names_narrow_what_a_command_may_touch() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::with_scoped(
        dir.path(),
        json!([
            { "identifier": "sealkv:allow-open", "allow": [{ "store": "notes" }] },
            { "identifier": "sealkv:allow-get", "allow": [{ "store": "*" }], "deny": [{ "store": "vault" }] },
            "sealkv:allow-list",
        ]),
    );
    let get = |name: &str| t.code("get", json!({ "name": name, "namespace": "n", "key": "k" }));
    // Outside the scope: refused by the plugin, before anything is opened or read.
    assert_eq!(
        t.code("open", json!({ "name": "other" })),
        "SEALKV_NOT_ALLOWED"
    );
    assert_eq!(get("vault"), "SEALKV_NOT_ALLOWED");
    assert!(!dir.path().join("other.sealkv").exists());
    // Inside it, the call reaches the store (which is not open).
    assert_eq!(get("notes"), "SEALKV_NOT_OPEN");
    assert_eq!(get("anything"), "SEALKV_NOT_OPEN");
    // A permission without a scope allows every store.
    assert_eq!(
        t.code("list", json!({ "name": "vault", "namespace": "n" })),
        "SEALKV_NOT_OPEN"
    );
}

#[test]
fn bad_store_names_are_refused_and_nothing_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::new(dir.path(), &["sealkv:default"]);
    let long = "a".repeat(65);
    for name in [
        "",
        "../escape",
        "a/b",
        "notes.sealkv",
        "nul\0",
        long.as_str(),
    ] {
        assert_eq!(
            t.code("open", json!({ "name": name })),
            "SEALKV_INVALID_ARGUMENT",
            "{name:?}"
        );
    }
    // A missing or mistyped argument is Tauri's error, and nothing is opened.
    assert!(t.call("open", json!({})).is_err());
    assert!(t.call("get", json!({ "name": 3 })).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn values_stay_out_of_debug_output() {
    use tauri_plugin_sealkv::{Change, Data, Read};
    let change: Change = serde_json::from_value(json!({
        "namespace": "n", "key": "k", "value": { "text": "hunter2" },
    }))
    .unwrap();
    let json: Data = serde_json::from_value(json!({ "json": { "pin": "4921" } })).unwrap();
    let bytes: Data = serde_json::from_value(json!({ "bytes": [104, 117, 110] })).unwrap();
    let read = Read::Text("opened secret".into());
    let named: Change = serde_json::from_value(json!({
        "namespace": "contacts", "key": "alice", "value": null,
    }))
    .unwrap();
    let shown = format!("{change:?} {json:?} {bytes:?} {read:?} {named:?}");
    for secret in [
        "hunter2",
        "4921",
        "104",
        "opened secret",
        "contacts",
        "alice",
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("Text(<7 bytes>)"), "{shown}");
}
