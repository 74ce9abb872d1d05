//! Import of a folder written by Baileys itself, checked against its manifest; export
//! back; the messy cases (zero-byte files, `.tmp` leftovers, old Buffer forms, legacy
//! tc-token names); CLI import-baileys/export-baileys.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealkv::auth::{self, AuthState, Family, ImportOptions};
use sealkv::{KdfParams, MasterKey, Options, Store};
use serde_json::Value as Json;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/baileys-auth-sample")
}

fn manifest() -> Json {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/baileys-auth-sample.manifest.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn state(dir: &Path, name: &str) -> AuthState {
    let opts = Options {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        ..Options::default()
    };
    AuthState::new(
        Store::create(
            dir.join(name),
            MasterKey::from_bytes(&[3; 32]).unwrap(),
            opts,
        )
        .unwrap(),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn import_matches_what_baileys_itself_loads() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), "a.sealkv");
    let report = auth::import_baileys(&st, &fixture(), ImportOptions::default()).unwrap();
    let m = manifest();
    let declared: BTreeMap<String, usize> =
        serde_json::from_value(m["families_present"].clone()).unwrap();
    assert_eq!(report.imported, declared);
    assert!(report.skipped.is_empty());
    let mut checked = 0;
    for entry in m["files"].as_array().unwrap() {
        let family = entry["family"].as_str().unwrap();
        let id = entry["id"].as_str().unwrap_or("creds");
        let expected: Json = serde_json::from_str(entry["baileys_get"].as_str().unwrap()).unwrap();
        let stored = if family == "creds" {
            st.creds().unwrap().unwrap()
        } else {
            let f = Family::from_name(family).unwrap();
            st.get(f, &[id])
                .unwrap()
                .remove(id)
                .unwrap_or_else(|| panic!("{family}/{id} missing"))
        };
        assert_eq!(stored, expected, "{family}/{id}");
        checked += 1;
    }
    assert_eq!(checked, m["file_count"].as_u64().unwrap() as usize);
}

#[test]
fn export_gives_back_the_files_and_roundtrips_byte_identically() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), "a.sealkv");
    auth::import_baileys(&st, &fixture(), ImportOptions::default()).unwrap();
    let out = dir.path().join("out");
    let n = auth::export_baileys(&st, &out).unwrap();
    assert_eq!(n, 56);
    for e in std::fs::read_dir(fixture()).unwrap() {
        let e = e.unwrap();
        let original: Json = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        let exported = std::fs::read(out.join(e.file_name()))
            .unwrap_or_else(|_| panic!("{:?} not exported", e.file_name()));
        // Baileys wrote compact JSON.stringify output; we give back the same bytes.
        assert_eq!(
            exported,
            std::fs::read(e.path()).unwrap(),
            "{:?} bytes",
            e.file_name()
        );
        let exported: Json = serde_json::from_slice(&exported).unwrap();
        assert_eq!(exported, original, "{:?}", e.file_name());
    }
    // export → import → export is byte-identical.
    let st2 = state(dir.path(), "b.sealkv");
    auth::import_baileys(&st2, &out, ImportOptions::default()).unwrap();
    let out2 = dir.path().join("out2");
    auth::export_baileys(&st2, &out2).unwrap();
    for e in std::fs::read_dir(&out).unwrap() {
        let e = e.unwrap();
        assert_eq!(
            std::fs::read(e.path()).unwrap(),
            std::fs::read(out2.join(e.file_name())).unwrap()
        );
    }
    assert!(matches!(
        auth::export_baileys(&st2, &out2),
        Err(auth::AuthError::FolderNotEmpty(_))
    ));
}

#[test]
fn messy_folders_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let messy = dir.path().join("messy");
    copy_dir(&fixture(), &messy);
    std::fs::write(messy.join("pre-key-99.json.tmp"), b"{partial").unwrap();
    std::fs::write(
        messy.join("contacts-tc-token-111@lid.json"),
        br#"{"token":{"type":"Buffer","data":[1,2,3]},"timestamp":"1"}"#,
    )
    .unwrap();
    std::fs::write(
        messy.join("pre-key-500.json"),
        br#"{"private":{"buffer":true,"value":"AQID"},"public":{"type":"Buffer","data":[4,5]}}"#,
    )
    .unwrap();
    std::fs::write(messy.join("session-empty.json"), b"").unwrap();

    // A zero-byte file stops the import, naming it; nothing is written.
    let st = state(dir.path(), "m.sealkv");
    let err = auth::import_baileys(&st, &messy, ImportOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("session-empty.json") && err.to_string().contains("empty file"),
        "{err}"
    );
    assert!(st.is_empty().unwrap());

    // With skip_bad the rest goes in, and the skipped file is listed.
    let report = auth::import_baileys(
        &st,
        &messy,
        ImportOptions {
            skip_bad: true,
            replace: false,
        },
    )
    .unwrap();
    assert_eq!(report.skipped.len(), 1);
    assert!(
        report
            .ignored
            .iter()
            .any(|p| p.ends_with("pre-key-99.json.tmp"))
    );
    assert_eq!(report.imported["tctoken"], 5);
    let tc = st.get(Family::Tctoken, &["111@lid"]).unwrap();
    assert_eq!(
        tc["111@lid"]["token"],
        serde_json::json!({"type": "Buffer", "data": "AQID"})
    );
    let pk = st.get(Family::PreKey, &["500"]).unwrap();
    assert_eq!(
        pk["500"]["private"],
        serde_json::json!({"type": "Buffer", "data": "AQID"})
    );
    assert_eq!(
        pk["500"]["public"],
        serde_json::json!({"type": "Buffer", "data": "BAU="})
    );

    // A second import needs replace; with it, the state is exactly the new folder.
    let err = auth::import_baileys(&st, &fixture(), ImportOptions::default()).unwrap_err();
    assert!(matches!(err, auth::AuthError::NotEmpty));
    auth::import_baileys(
        &st,
        &fixture(),
        ImportOptions {
            skip_bad: false,
            replace: true,
        },
    )
    .unwrap();
    assert!(st.get(Family::PreKey, &["500"]).unwrap().is_empty());
    assert_eq!(st.store().count("pre-key").unwrap(), 28);
}

#[test]
fn library_get_set_transaction_and_creds() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), "l.sealkv");
    assert!(st.creds().unwrap().is_none());
    st.save_creds(&serde_json::json!({"registered": false}))
        .unwrap();
    let mut changes = auth::AuthChanges::new();
    changes
        .entry(Family::PreKey)
        .or_default()
        .insert("1".into(), Some(serde_json::json!({"k": 1})));
    changes
        .entry(Family::Session)
        .or_default()
        .insert("a.0".into(), Some(serde_json::json!("s")));
    st.set(&changes).unwrap();
    st.transaction("acct", |tx| {
        assert_eq!(tx.get(Family::PreKey, &["1"])?.len(), 1);
        let mut del = auth::AuthChanges::new();
        del.entry(Family::PreKey)
            .or_default()
            .insert("1".into(), None);
        tx.set(&del)?;
        assert!(tx.get(Family::PreKey, &["1"])?.is_empty());
        Ok(())
    })
    .unwrap();
    assert!(st.get(Family::PreKey, &["1"]).unwrap().is_empty());
    assert_eq!(
        st.creds().unwrap().unwrap()["registered"],
        Json::Bool(false)
    );
}

#[test]
fn cli_import_and_export_baileys() {
    use assert_cmd::Command;
    use predicates::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.sealkv");
    let run = |args: &[&std::ffi::OsStr]| {
        Command::cargo_bin("sealkv")
            .unwrap()
            .env("SEALKV_PASSPHRASE", "pw")
            .args(args)
            .assert()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    run(&[&os("init"), db.as_os_str()]).success();
    run(&[&os("import-baileys"), db.as_os_str(), fixture().as_os_str()])
        .success()
        .stdout(predicate::str::contains("pre-key: 28").and(predicate::str::contains("creds: 1")));
    run(&[&os("import-baileys"), db.as_os_str(), fixture().as_os_str()])
        .code(2)
        .stderr(predicate::str::contains("--replace"));
    run(&[
        &os("import-baileys"),
        db.as_os_str(),
        fixture().as_os_str(),
        &os("--replace"),
    ])
    .success();
    let out = dir.path().join("exported");
    run(&[&os("export-baileys"), db.as_os_str(), out.as_os_str()]).success();
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 56);
    let bad = dir.path().join("bad");
    copy_dir(&fixture(), &bad);
    std::fs::write(bad.join("creds.json"), b"").unwrap();
    let db2 = dir.path().join("cli2.sealkv");
    run(&[&os("init"), db2.as_os_str()]).success();
    run(&[&os("import-baileys"), db2.as_os_str(), bad.as_os_str()])
        .code(2)
        .stderr(predicate::str::contains("creds.json").and(predicate::str::contains("--skip-bad")));
    run(&[&os("ls"), db2.as_os_str()]).success().stdout("");
}
