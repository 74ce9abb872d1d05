//! With no Secret Service at all (a Linux session with no keyring daemon), `open` fails
//! with `SEALKV_KEYCHAIN` and its hint, creates nothing, and the recovery passphrase
//! cannot open an existing store either (its anchor is in the keychain).
//!
//! The test runs itself again in a child process whose session bus address points
//! nowhere (the environment of this process cannot be changed safely while other
//! threads run). The store it tries to open was made by the parent on the real Secret
//! Service when there is one; without one, only the creation case runs.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::TestApp;
use serde_json::{Value, json};
use tauri_plugin_sealkv::sealkv::keychain::Keychain;

const CHILD: &str = "SEALKV_TAURI_NO_KEYCHAIN_CHILD";
const SERVICE: &str = "dev.sealkv.tauri-no-keychain";

/// `open` through Tauri's IPC, the capability allowing every command.
fn open(dir: &Path, args: Value) -> Result<Value, Value> {
    TestApp::with_service(dir, &["sealkv:default"], SERVICE.to_string()).call("open", args)
}

#[test]
fn without_a_secret_service_open_fails_clearly_and_makes_nothing() {
    if let Some(dir) = std::env::var_os(CHILD) {
        // The child: no session bus to reach.
        let dir = Path::new(&dir);
        let fresh = open(dir, json!({ "name": "fresh" })).unwrap_err();
        assert_eq!(fresh["code"], "SEALKV_KEYCHAIN", "{fresh}");
        assert!(
            fresh["message"]
                .as_str()
                .unwrap()
                .contains("Secret Service"),
            "{fresh}"
        );
        assert!(!dir.join("fresh.sealkv").exists());
        if dir.join("vault.sealkv").exists() {
            let before = std::fs::read(dir.join("vault.sealkv")).unwrap();
            for args in [
                json!({ "name": "vault" }),
                json!({ "name": "vault", "recoveryPassphrase": "correct horse battery staple" }),
            ] {
                let e = open(dir, args).unwrap_err();
                assert_eq!(e["code"], "SEALKV_KEYCHAIN", "{e}");
            }
            assert!(std::fs::read(dir.join("vault.sealkv")).unwrap() == before);
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A store made on the real Secret Service, when there is one.
    let made = Keychain::new(SERVICE).ok().and_then(|_| {
        let sealkv = tauri_plugin_sealkv::Sealkv::new(dir.path(), SERVICE);
        let opened = sealkv
            .open("vault", Some("correct horse battery staple"))
            .ok()?;
        sealkv.close("vault");
        Some(opened.id)
    });
    if made.is_none() {
        assert!(
            std::env::var_os("SEALKV_REQUIRE_KEYCHAIN").is_none(),
            "SEALKV_REQUIRE_KEYCHAIN is set but no Secret Service answers"
        );
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_a_secret_service_open_fails_clearly_and_makes_nothing",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/sealkv-no-bus",
        )
        .status()
        .unwrap();
    if let Some(id) = made {
        let keychain = Keychain::new(SERVICE).unwrap();
        let _ = keychain.delete_key(&id);
        let _ = keychain.delete_key(&format!("{id}.anchor"));
    }
    assert!(status.success(), "the child failed: {status}");
}
