//! `sealkv --keychain` against a real Secret Service: gnome-keyring on a private D-Bus
//! session, which `scripts/keychain-check` starts. Without one (and without
//! `SEALKV_REQUIRE_KEYCHAIN`), the test skips itself.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command as Std;

use assert_cmd::Command;
use predicates::prelude::*;

const RECOVERY: &str = "recovery-passphrase-do-not-print";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// True when a Secret Service answers: an item stored with `secret-tool` reads back.
/// Without one the test skips itself, unless `SEALKV_REQUIRE_KEYCHAIN` is set.
fn have_keychain() -> bool {
    let probe = format!("sealkv-probe-{}", std::process::id());
    let stored = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        && Std::new("sh")
            .args([
                "-c",
                &format!(
                    "printf probe | secret-tool store --label=probe service {probe} username p"
                ),
            ])
            .status()
            .is_ok_and(|s| s.success());
    let ok = stored
        && Std::new("secret-tool")
            .args(["lookup", "service", &probe, "username", "p"])
            .output()
            .is_ok_and(|o| o.stdout == b"probe");
    let _ = Std::new("secret-tool")
        .args(["clear", "service", &probe, "username", "p"])
        .status();
    if !ok {
        assert!(
            std::env::var_os("SEALKV_REQUIRE_KEYCHAIN").is_none(),
            "SEALKV_REQUIRE_KEYCHAIN is set but no Secret Service answers"
        );
        eprintln!("skipped: no Secret Service");
    }
    ok
}

fn sealkv() -> Command {
    let mut c = Command::cargo_bin("sealkv").unwrap();
    c.env_remove("SEALKV_MASTER_KEY")
        .env_remove("SEALKV_PASSPHRASE")
        .env_remove("SEALKV_NEW_PASSPHRASE");
    c
}

/// What `secret-tool` prints, without the secrets' lines (kept out of test output).
fn secret_tool(args: &[&str]) -> String {
    let out = Std::new("secret-tool").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("secret = "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn a_store_made_with_keychain_opens_without_a_prompt_and_survives_the_entrys_loss() {
    if !have_keychain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.sealkv");
    let service = format!("sealkv-cli-test-{}", std::process::id());
    let recovery = dir.path().join("recovery.txt");
    std::fs::write(&recovery, RECOVERY).unwrap();
    // Created with a keychain slot and a recovery passphrase slot.
    let out = sealkv()
        .args(["--keychain", &service, "init", s(&db)])
        .args(["--passphrase-file", s(&recovery)])
        .assert()
        .success()
        .stderr(predicate::str::contains("added recovery slot 2"))
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8(out).unwrap();
    let id = text
        .split("store id ")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches(')')
        .to_string();
    assert_eq!(id.len(), 32, "{text}");
    // The keychain holds the key under the store's id, and the anchor beside it.
    let found = secret_tool(&["search", "--all", "service", &service]);
    // (keyring-core labels its items `keyring:ACCOUNT@SERVICE`.)
    assert!(found.contains(&format!(":{id}@{service}\n")), "{found}");
    assert!(
        found.contains(&format!(":{id}.anchor@{service}\n")),
        "{found}"
    );
    // Another process opens it with no secret given.
    sealkv()
        .args(["--keychain", &service, "put", s(&db), "notes", "1"])
        .write_stdin("a secret note")
        .assert()
        .success();
    sealkv()
        .args(["--keychain", &service, "get", s(&db), "notes", "1"])
        .assert()
        .success()
        .stdout("a secret note");
    sealkv()
        .args(["--keychain", &service, "slots", s(&db)])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("1\tkeychain\t")
                .and(predicate::str::contains(format!("service={service}")))
                .and(predicate::str::contains("2\tpassphrase\t"))
                .and(predicate::str::contains("recovery")),
        );
    // The keychain entry is gone (a reset): a clear error, nothing opened.
    assert!(
        Std::new("secret-tool")
            .args(["clear", "service", &service, "username", &id])
            .status()
            .unwrap()
            .success()
    );
    sealkv()
        .args(["--keychain", &service, "get", s(&db), "notes", "1"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("keychain")
                .and(predicate::str::contains("recovery passphrase")),
        );
    // The recovery passphrase opens it, and adds a new keychain slot.
    sealkv()
        .args([
            "--passphrase-file",
            s(&recovery),
            "get",
            s(&db),
            "notes",
            "1",
        ])
        .assert()
        .success()
        .stdout("a secret note");
    let service2 = format!("{service}-new");
    sealkv()
        .args(["--passphrase-file", s(&recovery), "add-slot", s(&db)])
        .args(["--new-keychain", &service2, "--label", "new laptop"])
        .assert()
        .success()
        .stderr(predicate::str::contains("added slot 3"));
    sealkv()
        .args(["--keychain", &service2, "get", s(&db), "notes", "1"])
        .assert()
        .success()
        .stdout("a secret note");
    // No plaintext and no secret in the file.
    let raw = std::fs::read(&db).unwrap();
    for needle in [&b"a secret note"[..], RECOVERY.as_bytes(), b"notes"] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "{:?} is in the file",
            String::from_utf8_lossy(needle)
        );
    }
    // The anchor in the keychain refuses an older copy.
    let old = dir.path().join("old.sealkv");
    std::fs::copy(&db, &old).unwrap();
    sealkv()
        .args(["--keychain", &service2, "put", s(&db), "notes", "2"])
        .write_stdin("newer")
        .assert()
        .success();
    std::fs::copy(&old, &db).unwrap();
    sealkv()
        .args(["--keychain", &service2, "get", s(&db), "notes", "1"])
        .assert()
        .code(6);
    for account in [id.clone(), format!("{id}.anchor")] {
        for svc in [&service, &service2] {
            let _ = Std::new("secret-tool")
                .args(["clear", "service", svc, "username", &account])
                .status();
        }
    }
}
