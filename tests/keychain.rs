//! The OS keychain (feature `keychain`) against a real Secret Service: gnome-keyring on
//! a private D-Bus session, which `scripts/keychain-check` starts (with
//! `SEALKV_REQUIRE_KEYCHAIN=1`, a missing Secret Service fails the test; without it,
//! the test skips itself).
#![cfg(feature = "keychain")]
#![allow(clippy::unwrap_used)]

use std::process::Command;

use sealkv::keychain::Keychain;
use sealkv::{Error, MasterKey, Options, Store};

const CHILD: &str = "SEALKV_KEYCHAIN_CHILD";

/// The keychain, or None (and the test skips) when no Secret Service answers and none
/// is required.
fn keychain(service: &str) -> Option<Keychain> {
    match Keychain::new(service) {
        Ok(k) => Some(k),
        Err(e) if std::env::var("SEALKV_REQUIRE_KEYCHAIN").is_err() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("SEALKV_REQUIRE_KEYCHAIN is set but {e}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A second process: reads the key of (service, account) and prints it in hex, or
/// prints the error.
#[test]
fn keychain_child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let service = std::env::var("SEALKV_KEYCHAIN_SERVICE").unwrap();
    let account = std::env::var("SEALKV_KEYCHAIN_ACCOUNT").unwrap();
    match (mode.as_str(), Keychain::new(&service)) {
        ("load", Ok(k)) => match k.load_key(&account) {
            Ok(key) => println!("KEY {}", hex(key.expose())),
            Err(e) => println!("ERROR {e}"),
        },
        (_, Err(e)) => println!("ERROR {e}"),
        _ => unreachable!(),
    }
}

fn child(mode: &str, service: &str, account: &str, extra: &[(&str, &str)]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "keychain_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .env("SEALKV_KEYCHAIN_SERVICE", service)
        .env("SEALKV_KEYCHAIN_ACCOUNT", account)
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // libtest prints "test keychain_child ... " before the child's own line.
    text.lines()
        .find_map(|l| {
            l.find("KEY ")
                .or_else(|| l.find("ERROR "))
                .map(|at| &l[at..])
        })
        .unwrap_or_else(|| panic!("the child said nothing: {text}"))
        .to_string()
}

#[test]
fn a_key_in_the_keychain_opens_its_store_from_another_process_and_its_loss_is_clear() {
    let service = format!("sealkv-test-{}", std::process::id());
    let Some(keychain) = keychain(&service) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sealkv");
    let key = MasterKey::generate().unwrap();
    let store = Store::create(&path, key.clone(), Options::default()).unwrap();
    store.put("notes", "n1", b"a secret note".to_vec()).unwrap();
    drop(store);
    let account = "store-4f2a";
    keychain.store_key(account, &key).unwrap();

    // The Secret Service holds it under the service and account, as other tools see it.
    let found = Command::new("secret-tool")
        .args(["lookup", "service", &service, "username", account])
        .output()
        .unwrap();
    assert_eq!(found.stdout, key.expose(), "secret-tool lookup");

    // Another process reads it, with no prompt, and it opens the store.
    let line = child("load", &service, account, &[]);
    assert_eq!(line, format!("KEY {}", hex(key.expose())));
    let loaded = keychain.load_key(account).unwrap();
    let store = Store::open(&path, loaded, Options::default()).unwrap();
    assert_eq!(
        &store.get_one("notes", "n1").unwrap().unwrap()[..],
        b"a secret note"
    );

    // The entry deleted: a clear error, naming what is gone and the way out.
    assert!(keychain.delete_key(account).unwrap());
    assert!(!keychain.delete_key(account).unwrap());
    let err = keychain.load_key(account).unwrap_err();
    let Error::Keychain { .. } = &err else {
        panic!("{err:?}");
    };
    let text = err.to_string();
    assert!(text.contains(account) && text.contains(&service), "{text}");
    assert!(text.contains("recovery passphrase"), "{text}");
    assert!(!text.contains(&hex(key.expose())), "{text}");
    let line = child("load", &service, account, &[]);
    assert!(line.starts_with("ERROR keychain:"), "{line}");
}

#[test]
fn no_secret_service_is_an_error_never_a_fallback() {
    if keychain("sealkv-test-probe").is_none() {
        return;
    }
    // A process whose session bus address leads nowhere.
    let line = child(
        "load",
        "sealkv-test-nobus",
        "a",
        &[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
    );
    assert!(line.starts_with("ERROR keychain:"), "{line}");
    assert!(line.contains("Secret Service"), "{line}");
}

#[test]
fn an_entry_that_is_not_a_key_is_refused() {
    let service = format!("sealkv-test-bad-{}", std::process::id());
    let Some(keychain) = keychain(&service) else {
        return;
    };
    let stored = Command::new("sh")
        .args([
            "-c",
            &format!(
                "printf 'not a key' | secret-tool store --label=test service {service} username odd"
            ),
        ])
        .status()
        .unwrap();
    assert!(stored.success());
    let err = keychain.load_key("odd").unwrap_err();
    assert!(
        err.to_string().contains("does not hold a 32-byte key"),
        "{err}"
    );
    assert!(!err.to_string().contains("not a key"), "{err}");
    keychain.delete_key("odd").unwrap();
}
