//! The real `sealkv` binary: every command, every exit status, secrets kept out of output.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

const PASS: &str = "cli-test-passphrase-do-not-print";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn db(&self) -> PathBuf {
        self.dir.path().join("db.sealkv")
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("sealkv").unwrap();
        c.env_remove("SEALKV_MASTER_KEY")
            .env_remove("SEALKV_NEW_PASSPHRASE")
            .env("SEALKV_PASSPHRASE", PASS);
        c
    }
    fn run(&self, args: &[&str]) -> assert_cmd::assert::Assert {
        self.cmd().args(args).assert()
    }
    fn init(&self) -> &Self {
        self.run(&["init", s(&self.db())]).success();
        self
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn no_secret() -> impl Predicate<[u8]> {
    predicate::str::contains(PASS).not().from_utf8()
}

#[test]
fn put_get_ls_del_roundtrip_binary_values_through_pipes() {
    let e = Env::new();
    e.init();
    let db = e.db();
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    e.cmd()
        .args(["put", s(&db), "session", "4915550001.0"])
        .write_stdin(binary.clone())
        .assert()
        .success();
    e.cmd()
        .args(["get", s(&db), "session", "4915550001.0"])
        .assert()
        .success()
        .stdout(binary.clone());
    let file = e.path("value.bin");
    std::fs::write(&file, b"from a file").unwrap();
    e.run(&["put", s(&db), "creds", "creds", s(&file)])
        .success();
    e.cmd()
        .args(["put", s(&db), "pre-key", "1", "-"])
        .write_stdin("dash")
        .assert()
        .success();
    e.run(&["ls", s(&db)])
        .success()
        .stdout("creds\npre-key\nsession\n");
    e.run(&["ls", s(&db), "session"])
        .success()
        .stdout("4915550001.0\n");
    e.run(&["get", s(&db), "creds", "creds"])
        .success()
        .stdout("from a file");
    e.run(&["del", s(&db), "pre-key", "1"]).success();
    e.run(&["del", s(&db), "pre-key", "1"])
        .code(1)
        .stderr(predicate::str::contains("no value at pre-key/1"));
    e.run(&["get", s(&db), "pre-key", "1"]).code(1);
}

#[test]
fn exit_statuses_and_messages() {
    let e = Env::new();
    e.init();
    let db = e.db();
    // Usage error.
    e.run(&["get", s(&db)]).code(2);
    e.run(&["frobnicate"]).code(2);
    // Wrong passphrase.
    e.cmd()
        .env("SEALKV_PASSPHRASE", "wrong")
        .args(["ls", s(&db)])
        .assert()
        .code(3)
        .stderr(
            predicate::str::contains("sealkv: wrong master key or passphrase")
                .and(predicate::str::contains("hint:")),
        );
    // Missing database.
    e.run(&["ls", s(&e.path("missing"))])
        .code(2)
        .stderr(predicate::str::contains("sealkv init"));
    // Not a sealkv file.
    std::fs::write(e.path("junk"), vec![7u8; 10_000]).unwrap();
    e.run(&["ls", s(&e.path("junk"))])
        .code(2)
        .stderr(predicate::str::contains("not a sealkv database"));
    // Init over an existing file.
    e.run(&["init", s(&db)])
        .code(2)
        .stderr(predicate::str::contains("already exists"));
}

#[test]
fn no_terminal_and_no_secret_fails_at_once() {
    let e = Env::new();
    e.init();
    e.cmd()
        .env_remove("SEALKV_PASSPHRASE")
        .args(["ls", s(&e.db())])
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("no terminal")
                .and(predicate::str::contains("hint: set SEALKV_PASSPHRASE")),
        );
}

#[test]
fn key_files_and_hex_env_keys_work() {
    let e = Env::new();
    let key_file = e.path("key.hex");
    std::fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
    let db = e.db();
    e.cmd()
        .env_remove("SEALKV_PASSPHRASE")
        .args(["--key-file", s(&key_file), "init", s(&db)])
        .assert()
        .success();
    e.cmd()
        .env_remove("SEALKV_PASSPHRASE")
        .env("SEALKV_MASTER_KEY", "ab".repeat(32))
        .args(["put", s(&db), "n", "k"])
        .write_stdin("v")
        .assert()
        .success();
    // A passphrase for a raw-key store is the wrong kind of key: exit 3.
    e.run(&["ls", s(&db)]).code(3);
    let raw = e.path("key.raw");
    std::fs::write(&raw, [0xab; 32]).unwrap();
    e.cmd()
        .env_remove("SEALKV_PASSPHRASE")
        .args(["--key-file", s(&raw), "get", s(&db), "n", "k"])
        .assert()
        .success()
        .stdout("v");
}

#[test]
fn value_over_the_limit_is_refused() {
    let e = Env::new();
    e.init();
    let big = vec![1u8; (16 << 20) + 1];
    e.cmd()
        .args(["put", s(&e.db()), "n", "big"])
        .write_stdin(big)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("over the store's limit"));
    e.run(&["ls", s(&e.db())]).success().stdout("");
}

#[test]
fn secrets_never_appear_in_output() {
    let e = Env::new();
    e.init();
    let db = e.db();
    e.cmd()
        .args(["put", s(&db), "n", "k"])
        .write_stdin("v")
        .assert()
        .success()
        .stdout(no_secret())
        .stderr(no_secret());
    for args in [
        vec!["stats", s(&db)],
        vec!["verify", s(&db)],
        vec!["ls", s(&db)],
    ] {
        e.run(&args)
            .success()
            .stdout(no_secret())
            .stderr(no_secret());
    }
    e.cmd()
        .env("SEALKV_PASSPHRASE", "x")
        .args(["ls", s(&db)])
        .assert()
        .code(3)
        .stderr(no_secret());
}

#[test]
fn a_store_in_use_by_an_app_is_read_and_written_by_the_command() {
    let e = Env::new();
    e.init();
    let db = e.db();
    let store = sealkv::Store::open(
        &db,
        sealkv::Passphrase::new(PASS),
        sealkv::Options::default(),
    )
    .unwrap();
    store
        .put("session", "app", b"from the app".to_vec())
        .unwrap();
    e.run(&["get", s(&db), "session", "app"])
        .success()
        .stdout("from the app");
    e.cmd()
        .args(["put", s(&db), "session", "cli"])
        .write_stdin("from the cli")
        .assert()
        .success();
    assert_eq!(
        &store.get_one("session", "cli").unwrap().unwrap()[..],
        b"from the cli"
    );
    e.run(&["verify", s(&db)]).success();
    e.run(&["stats", s(&db)]).success();
    let backup = e.path("live-backup.sealkv");
    e.run(&["backup", s(&db), s(&backup)]).success();
    e.run(&["verify", s(&backup)]).success();
    drop(store);
}

#[test]
fn a_store_in_exclusive_mode_in_use_is_reported() {
    let e = Env::new();
    let db = e.db();
    let opts = sealkv::Options {
        kdf: sealkv::KdfParams::INSECURE_FOR_TESTS,
        concurrency: sealkv::Concurrency::Exclusive,
        ..sealkv::Options::default()
    };
    let store = sealkv::Store::create(&db, sealkv::Passphrase::new(PASS), opts).unwrap();
    e.run(&["ls", s(&db)])
        .code(2)
        .stderr(predicate::str::contains("in use"));
    drop(store);
    e.run(&["ls", s(&db)]).success();
}

#[test]
fn tampered_value_exits_4_and_names_the_key() {
    let e = Env::new();
    let db = e.db();
    e.run(&["init", s(&db), "--compression", "none"]).success();
    let marker = "M".repeat(300);
    e.cmd()
        .args(["put", s(&db), "session", "victim"])
        .write_stdin(marker)
        .assert()
        .success();
    // Flip a byte inside the longest sealed value.
    let sealed: Vec<u8> = {
        let rdb = redb::ReadOnlyDatabase::open(&db).unwrap();
        let t = redb::ReadableDatabase::begin_read(&rdb).unwrap();
        let table = t
            .open_table(redb::TableDefinition::<[u8; 32], &[u8]>::new("sealkv_data"))
            .unwrap();
        redb::ReadableTable::iter(&table)
            .unwrap()
            .map(|r| r.unwrap().1.value().to_vec())
            .max_by_key(Vec::len)
            .unwrap()
    };
    let mut raw = std::fs::read(&db).unwrap();
    let at = raw
        .windows(sealed.len())
        .position(|w| w == sealed.as_slice())
        .unwrap();
    raw[at + 100] ^= 1;
    std::fs::write(&db, raw).unwrap();
    e.run(&["get", s(&db), "session", "victim"])
        .code(4)
        .stderr(predicate::str::contains("session/victim"));
    e.run(&["verify", s(&db)])
        .code(4)
        .stdout(predicate::str::contains("FAIL"));
}

#[test]
fn rotate_rekey_backup_compact_stats() {
    let e = Env::new();
    e.init();
    let db = e.db();
    for i in 0..20 {
        e.cmd()
            .args(["put", s(&db), "session", &format!("k{i}")])
            .write_stdin(format!("v{i}"))
            .assert()
            .success();
    }
    e.run(&["rotate", s(&db), "--batch", "7"])
        .success()
        .stderr(predicate::str::contains("destroyed key(s) 1"));
    e.run(&["stats", s(&db)]).success().stdout(
        predicate::str::contains("key 1: xchacha20poly1305 destroyed")
            .and(predicate::str::contains("key 2:")),
    );
    e.run(&["verify", s(&db)]).success();
    e.cmd()
        .env("SEALKV_NEW_PASSPHRASE", "second pass")
        .args(["rekey", s(&db)])
        .assert()
        .success();
    e.run(&["ls", s(&db)]).code(3);
    e.cmd()
        .env("SEALKV_PASSPHRASE", "second pass")
        .args(["get", s(&db), "session", "k3"])
        .assert()
        .success()
        .stdout("v3");
    let backup = e.path("b.sealkv");
    e.cmd()
        .env("SEALKV_PASSPHRASE", "second pass")
        .args(["backup", s(&db), s(&backup)])
        .assert()
        .success();
    e.cmd()
        .env("SEALKV_PASSPHRASE", "second pass")
        .args(["compact", s(&db)])
        .assert()
        .success();
    e.cmd()
        .env("SEALKV_PASSPHRASE", "second pass")
        .args(["ls", s(&backup), "session"])
        .assert()
        .success()
        .stdout(predicate::str::contains("k19"));
    // No new secret and no terminal: a clear error.
    e.cmd()
        .env("SEALKV_PASSPHRASE", "second pass")
        .args(["rekey", s(&db)])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("SEALKV_NEW_PASSPHRASE"));
}

#[test]
fn export_requires_plaintext_flag_and_import_is_all_or_nothing() {
    let e = Env::new();
    e.init();
    let db = e.db();
    e.cmd()
        .args(["put", s(&db), "a", "1"])
        .write_stdin(vec![0u8, 255, 10])
        .assert()
        .success();
    e.cmd()
        .args(["put", s(&db), "b", "2"])
        .write_stdin("two")
        .assert()
        .success();
    let out = e.path("dump.jsonl");
    e.run(&["export", s(&db), s(&out)])
        .code(2)
        .stderr(predicate::str::contains("--plaintext"));
    assert!(!out.exists());
    e.run(&["export", s(&db), s(&out), "--plaintext"]).success();
    let dump = std::fs::read_to_string(&out).unwrap();
    assert_eq!(dump.lines().count(), 2);

    let db2 = e.path("db2.sealkv");
    e.run(&["init", s(&db2)]).success();
    let bad = e.path("bad.jsonl");
    std::fs::write(&bad, format!("{dump}{{\"namespace\":\"c\"}}\n")).unwrap();
    e.run(&["import", s(&db2), s(&bad)])
        .code(2)
        .stderr(predicate::str::contains("line 3"));
    e.run(&["ls", s(&db2)]).success().stdout("");
    e.run(&["import", s(&db2), s(&out)]).success();
    e.run(&["get", s(&db2), "a", "1"])
        .success()
        .stdout(vec![0u8, 255, 10]);
}

#[test]
fn closed_stdout_pipe_exits_quietly() {
    let e = Env::new();
    e.init();
    let db = e.db();
    e.cmd()
        .args(["put", s(&db), "n", "big"])
        .write_stdin(vec![b'x'; 4 << 20])
        .assert()
        .success();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("sealkv"))
        .args(["get", s(&db), "n", "big"])
        .env("SEALKV_PASSPHRASE", PASS)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // reader goes away
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_meta(db: &Path, name: &str, value: &[u8]) {
    let rdb = redb::Database::open(db).unwrap();
    let t = rdb.begin_write().unwrap();
    t.open_table(redb::TableDefinition::<&str, &[u8]>::new("sealkv_meta"))
        .unwrap()
        .insert(name, value)
        .unwrap();
    t.commit().unwrap();
}

fn get_meta(db: &Path, name: &str) -> Vec<u8> {
    let rdb = redb::ReadOnlyDatabase::open(db).unwrap();
    let t = redb::ReadableDatabase::begin_read(&rdb).unwrap();
    let table = t
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("sealkv_meta"))
        .unwrap();
    redb::ReadableTable::get(&table, name)
        .unwrap()
        .unwrap()
        .value()
        .to_vec()
}

#[test]
fn a_changed_settings_record_exits_4_and_writes_nothing() {
    let e = Env::new();
    let db = e.db();
    e.run(&["init", s(&db), "--compression", "none"]).success();
    let mut settings = get_meta(&db, "settings");
    settings[1] ^= 2; // codec none -> another codec
    set_meta(&db, "settings", &settings);
    let before = std::fs::read(&db).unwrap();
    e.cmd()
        .args(["put", s(&db), "doc", "text"])
        .write_stdin("a".repeat(4001))
        .assert()
        .code(4)
        .stderr(predicate::str::contains("changed outside sealkv"));
    e.run(&["ls", s(&db)]).code(4);
    assert!(std::fs::read(&db).unwrap() == before, "the file changed");
}

#[test]
fn hostile_kdf_parameters_are_refused_with_the_flags_that_allow_them() {
    let e = Env::new();
    let db = e.db();
    e.init();
    // The default parameters ask for 64 MiB; a caller allowing 32 refuses them.
    e.run(&["stats", s(&db), "--max-kdf-memory", "32"])
        .code(2)
        .stderr(
            predicate::str::contains("m=65536 KiB")
                .and(predicate::str::contains("--max-kdf-memory")),
        );
    // Rewritten to 4 GiB x 64 passes (the salt kept): refused before deriving.
    // The one slot's key derivation record starts at byte 23 of the slots record
    // (docs/FORMAT.md): kind, then m and t.
    let mut slots = get_meta(&db, "slots");
    slots[24..28].copy_from_slice(&(4u32 << 20).to_le_bytes());
    slots[28..32].copy_from_slice(&64u32.to_le_bytes());
    set_meta(&db, "slots", &slots);
    let before = std::fs::read(&db).unwrap();
    e.run(&["stats", s(&db)])
        .code(2)
        .stderr(predicate::str::contains("m=4194304 KiB, t=64"));
    assert!(std::fs::read(&db).unwrap() == before, "the file changed");
}

#[test]
fn init_refuses_an_empty_passphrase() {
    let e = Env::new();
    let empty = e.path("empty-passphrase");
    std::fs::write(&empty, "\n").unwrap();
    e.cmd()
        .args(["init", s(&e.db()), "--passphrase-file", s(&empty)])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("empty passphrase").and(predicate::str::contains("hint:")),
        );
    assert!(!e.db().exists() || std::fs::metadata(e.db()).unwrap().len() == 0);
}

#[test]
fn read_commands_work_on_a_store_that_was_not_closed() {
    let e = Env::new();
    e.init();
    let db = e.db();
    let copy = e.path("copy.sealkv");
    {
        let store = sealkv::Store::open(
            &db,
            sealkv::Passphrase::new(PASS),
            sealkv::Options::default(),
        )
        .unwrap();
        store.put("session", "a", b"alpha".to_vec()).unwrap();
        // A copy of a live store needs crash recovery; its newest commits are in the
        // journal beside it (folded into the file within a second), so a copy of a
        // live store is both files.
        std::fs::copy(&db, &copy).unwrap();
        let mut journal = db.as_os_str().to_owned();
        journal.push(".journal");
        let mut copy_journal = copy.as_os_str().to_owned();
        copy_journal.push(".journal");
        std::fs::copy(journal, copy_journal).unwrap();
    }
    let before = std::fs::read(&copy).unwrap();
    e.run(&["get", s(&copy), "session", "a"])
        .success()
        .stdout("alpha");
    e.run(&["ls", s(&copy), "session"]).success().stdout("a\n");
    e.run(&["stats", s(&copy)]).success();
    e.run(&["verify", s(&copy)]).success();
    e.run(&["export", s(&copy), s(&e.path("out.jsonl")), "--plaintext"])
        .success();
    assert!(
        std::fs::read(&copy).unwrap() == before,
        "a read command wrote the file"
    );
    // A wrong passphrase does not recover (write) it either.
    e.cmd()
        .env("SEALKV_PASSPHRASE", "wrong")
        .args(["put", s(&copy), "session", "b"])
        .write_stdin("beta")
        .assert()
        .code(3);
    assert!(
        std::fs::read(&copy).unwrap() == before,
        "a wrong passphrase wrote the file"
    );
    e.cmd()
        .args(["put", s(&copy), "session", "b"])
        .write_stdin("beta")
        .assert()
        .success();
    e.run(&["ls", s(&copy), "session"])
        .success()
        .stdout("a\nb\n");
}

#[test]
fn sessions_scope_every_value_command() {
    let e = Env::new();
    e.init();
    let db = e.db();
    for (session, value) in [("4915550001", "one"), ("4915550002", "two")] {
        e.cmd()
            .args(["put", s(&db), "--session", session, "creds", "creds"])
            .write_stdin(value)
            .assert()
            .success();
    }
    e.cmd()
        .args(["put", s(&db), "creds", "creds"])
        .write_stdin("default")
        .assert()
        .success();
    e.run(&["get", s(&db), "--session", "4915550002", "creds", "creds"])
        .success()
        .stdout("two");
    e.run(&["get", s(&db), "creds", "creds"])
        .success()
        .stdout("default");
    e.run(&["get", s(&db), "--session", "nobody", "creds", "creds"])
        .code(1);
    e.run(&["ls", s(&db), "--session", "4915550001"])
        .success()
        .stdout("creds\n");
    e.run(&["sessions", s(&db)])
        .success()
        .stdout("4915550001\n4915550002\n");
    // export / import of one session.
    let out = e.path("one.jsonl");
    e.run(&[
        "export",
        s(&db),
        "--session",
        "4915550001",
        s(&out),
        "--plaintext",
    ])
    .success();
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    e.run(&["import", s(&db), "--session", "copy", s(&out)])
        .success();
    e.run(&["get", s(&db), "--session", "copy", "creds", "creds"])
        .success()
        .stdout("one");
    e.run(&["del", s(&db), "--session", "copy", "creds", "creds"])
        .success();
    e.run(&["del", s(&db), "--session", "copy", "creds", "creds"])
        .code(1);
    // drop-session: exit 1 when there is no such session.
    e.run(&["drop-session", s(&db), "4915550001"]).success();
    e.run(&["drop-session", s(&db), "4915550001"])
        .code(1)
        .stderr(predicate::str::contains("no such session"));
    e.run(&["sessions", s(&db)])
        .success()
        .stdout("4915550002\n");
    e.run(&["get", s(&db), "creds", "creds"])
        .success()
        .stdout("default");
    // A session id breaks the same rules a name does.
    e.cmd()
        .args(["put", s(&db), "--session", "", "n", "k"])
        .write_stdin("v")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("session id").and(predicate::str::contains("empty")));
    let long = "x".repeat(sealkv::MAX_NAME_LEN + 1);
    e.run(&["drop-session", s(&db), &long]).code(2);
    // Session names never appear in the file.
    let raw = std::fs::read(&db).unwrap();
    assert!(!raw.windows(10).any(|w| w == b"4915550002"));
}

#[test]
fn baileys_folders_import_and_export_per_session() {
    let e = Env::new();
    e.init();
    let db = e.db();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/baileys-auth-sample");
    e.run(&["import-baileys", s(&db), "--session", "bot-a", s(&sample)])
        .success();
    e.run(&["sessions", s(&db)]).success().stdout("bot-a\n");
    e.run(&["ls", s(&db)]).success().stdout("");
    let out = e.path("out");
    e.run(&["export-baileys", s(&db), "--session", "bot-a", s(&out)])
        .success();
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|f| f.unwrap().file_name())
        .collect();
    files.sort();
    let mut originals: Vec<_> = std::fs::read_dir(&sample)
        .unwrap()
        .map(|f| f.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".json"))
        .collect();
    originals.sort();
    assert_eq!(files, originals);
    // The default session exports nothing.
    e.run(&["export-baileys", s(&db), s(&e.path("empty"))])
        .success();
    assert_eq!(std::fs::read_dir(e.path("empty")).unwrap().count(), 0);
}

#[test]
fn ttl_forms_and_expiry() {
    let e = Env::new();
    e.init();
    let db = e.db();
    for bad in [
        "30",
        "10x",
        "s",
        "-5m",
        "1.5h",
        "0s",
        "99999999999999999999d",
    ] {
        e.cmd()
            .args(["put", s(&db), &format!("--ttl={bad}"), "n", "k"])
            .write_stdin("v")
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--ttl"))
            .stderr(
                predicate::str::contains("30s, 15m, 12h or 7d")
                    .or(predicate::str::contains("more than zero"))
                    .or(predicate::str::contains("too long")),
            );
    }
    e.cmd()
        .args(["put", s(&db), "--ttl", "30s", "n", "k"])
        .write_stdin("v")
        .assert()
        .stderr(predicate::str::is_empty())
        .success();
    e.cmd()
        .args(["put", s(&db), "--ttl", "7d", "n", "week"])
        .write_stdin("w")
        .assert()
        .success();
    e.run(&["ls", s(&db), "n"]).success().stdout("k\nweek\n");
    // Seen from a minute later, the 30 s value is gone and the week-long one is not.
    let later = sealkv::system_clock() + 60;
    let opts = sealkv::Options {
        clock: std::sync::Arc::new(move || later),
        ..sealkv::Options::default()
    };
    {
        let store = sealkv::Store::open(&db, sealkv::Passphrase::new(PASS), opts).unwrap();
        assert!(store.get_one("n", "k").unwrap().is_none());
        assert_eq!(store.list("n").unwrap(), ["week"]);
        assert_eq!(store.sweep().unwrap(), 1);
    }
    e.run(&["sweep", s(&db)]).success();
    e.run(&["ls", s(&db), "n"]).success().stdout("week\n");
}

#[test]
fn health_is_a_healthcheck() {
    let e = Env::new();
    e.init();
    let db = e.db();
    e.cmd()
        .args(["put", s(&db), "n", "k"])
        .write_stdin("v")
        .assert()
        .success();
    e.run(&["health", s(&db)])
        .success()
        .stdout(predicate::str::contains("engine: file"))
        .stderr(predicate::str::contains("ok: healthy"));
    // A store that cannot be opened is not healthy either: its own exit status.
    e.run(&["health", s(&e.path("missing"))]).code(2);
    e.cmd()
        .env("SEALKV_PASSPHRASE", "wrong")
        .args(["health", s(&db)])
        .assert()
        .code(3);
    // A server that is gone.
    e.run(&["health", "postgres://sealkv@127.0.0.1:1/x?store=a"])
        .code(2)
        .stderr(predicate::str::contains("cannot reach"));
}

/// `--version` names the store format this build writes (kept in step with the
/// library's constant), and completions and the man page come from the same
/// definitions as the parser: every command is in them.
#[test]
fn version_completions_and_man_page_describe_the_commands() {
    let env = Env::new();
    let version = env.run(&["--version"]).success();
    let text = String::from_utf8(version.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains(&format!("writes store format {}", sealkv::FORMAT_VERSION)),
        "{text}"
    );
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = env.run(&["completions", shell]).success();
        let script = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        for command in ["init", "rotate", "verify", "import-baileys", "completions"] {
            assert!(
                script.contains(command),
                "{shell} completions lack {command}"
            );
        }
    }
    env.run(&["completions", "tcsh"])
        .failure()
        .code(2)
        .stderr(predicate::str::contains("invalid value"));
    let man = env.run(&["man"]).success();
    let page = String::from_utf8(man.get_output().stdout.clone()).unwrap();
    assert!(page.contains(".TH sealkv 1"), "{page}");
    for command in ["sealkv\\-rotate", "sealkv\\-verify", "PASSPHRASE"] {
        assert!(page.contains(command), "the man page lacks {command}");
    }
    // One page per command, with its options.
    let dir = env.path("man");
    std::fs::create_dir(&dir).unwrap();
    env.run(&["man", "--dir", s(&dir)]).success();
    let put = std::fs::read_to_string(dir.join("sealkv-put.1")).unwrap();
    assert!(
        put.contains(".TH sealkv-put 1") && put.contains("\\-\\-ttl"),
        "{put}"
    );
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert!(pages > 20, "{pages} pages");
}

#[test]
fn slots_are_listed_added_and_removed_and_any_one_opens_the_store() {
    let e = Env::new();
    e.init();
    let db = e.db();
    e.cmd()
        .args(["put", s(&db), "n", "k"])
        .write_stdin("v")
        .assert()
        .success();
    let key = e.path("recovery.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    e.run(&[
        "add-slot",
        s(&db),
        "--new-key-file",
        s(&key),
        "--label",
        "recovery",
    ])
    .success()
    .stderr(predicate::str::contains("added slot 2"));
    e.run(&["slots", s(&db)]).success().stdout(
        predicate::str::contains("1\tpassphrase\t")
            .and(predicate::str::contains("\t(opened with)"))
            .and(predicate::str::contains("2\tkey\t"))
            .and(predicate::str::contains("\trecovery")),
    );
    // The key slot opens the store with no passphrase at all.
    e.cmd()
        .env_remove("SEALKV_PASSPHRASE")
        .args(["--key-file", s(&key), "get", s(&db), "n", "k"])
        .assert()
        .success()
        .stdout("v");
    // Removing the passphrase slot: the passphrase no longer opens it.
    e.cmd()
        .env_remove("SEALKV_PASSPHRASE")
        .args(["--key-file", s(&key), "remove-slot", s(&db), "1"])
        .assert()
        .success();
    e.run(&["get", s(&db), "n", "k"]).code(3);
    // The last slot cannot go; an unknown one is named.
    e.cmd()
        .env_remove("SEALKV_PASSPHRASE")
        .args(["--key-file", s(&key), "remove-slot", s(&db), "2"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("last key slot"));
    e.cmd()
        .env_remove("SEALKV_PASSPHRASE")
        .args(["--key-file", s(&key), "remove-slot", s(&db), "9"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no key slot 9"));
}

#[test]
fn an_older_copy_exits_6_until_accept_restore_and_a_lost_anchor_exits_7() {
    let e = Env::new();
    let db = e.db();
    let anchor = e.path("db.anchor");
    e.run(&["init", s(&db), "--anchor", s(&anchor)]).success();
    e.cmd()
        .args(["put", s(&db), "n", "k"])
        .write_stdin("old")
        .assert()
        .success();
    let backup = e.path("backup.sealkv");
    std::fs::copy(&db, &backup).unwrap();
    e.cmd()
        .args(["put", s(&db), "n", "k"])
        .write_stdin("new")
        .assert()
        .success();
    e.run(&["stats", s(&db)]).success().stdout(
        predicate::str::contains("format: 3")
            .and(predicate::str::contains("generation: 3"))
            .and(predicate::str::contains(format!(
                "anchor: {}",
                anchor.display()
            ))),
    );
    std::fs::copy(&backup, &db).unwrap();
    for command in [
        vec!["get", s(&db), "n", "k"],
        vec!["ls", s(&db)],
        vec!["verify", s(&db)],
    ] {
        e.run(&command).code(6).stdout("").stderr(
            predicate::str::contains("older copy").and(predicate::str::contains("accept-restore")),
        );
    }
    e.run(&["accept-restore", s(&db)])
        .success()
        .stderr(predicate::str::contains("restore epoch 1"));
    e.run(&["get", s(&db), "n", "k"]).success().stdout("old");
    std::fs::remove_file(&anchor).unwrap();
    e.run(&["get", s(&db), "n", "k"])
        .code(7)
        .stderr(predicate::str::contains("no anchor record"));
    e.run(&["accept-restore", s(&db)]).success();
    e.run(&["anchor", s(&db), "none"]).success();
    std::fs::copy(&backup, &db).unwrap();
    e.run(&["get", s(&db), "n", "k"]).code(6);
}

/// A bot (here, this test process through the library) owns the store and keeps it
/// open; the CLI's commands are its clients, and what they do reaches the bot.
#[test]
fn commands_work_on_a_store_a_running_program_owns() {
    let e = Env::new();
    let db = e.db();
    e.init();
    let bot = sealkv::Store::open(
        &db,
        sealkv::Passphrase::new(PASS),
        sealkv::Options::default(),
    )
    .unwrap();
    assert!(bot.is_owner());
    bot.put("session", "4915550001.0", b"from the bot".to_vec())
        .unwrap();
    e.cmd()
        .args(["get", s(&db), "session", "4915550001.0"])
        .assert()
        .success()
        .stdout("from the bot");
    e.cmd()
        .args(["put", s(&db), "pre-key", "1", "-"])
        .write_stdin("from the cli")
        .assert()
        .success();
    assert_eq!(
        &bot.get_one("pre-key", "1").unwrap().unwrap()[..],
        b"from the cli"
    );
    e.run(&["ls", s(&db), "session"])
        .success()
        .stdout(predicate::str::contains("4915550001.0"));
    e.run(&["verify", s(&db)]).success();
    let backup = e.path("backup.sealkv");
    e.run(&["backup", s(&db), s(&backup)]).success();
    e.run(&["verify", s(&backup)]).success();
    // Rotation reaches the bot; the compaction after it needs the file alone, which
    // the bot has: skipped, and said so.
    let before = bot.stats().unwrap().keys.len();
    e.run(&["rotate", s(&db)])
        .success()
        .stderr(predicate::str::contains("not compacted: another process"))
        .stderr(no_secret());
    bot.put("session", "after", b"x".to_vec()).unwrap();
    assert_eq!(bot.stats().unwrap().keys.len(), before + 1);
    assert!(bot.verify().unwrap().is_empty());
    assert!(bot.is_owner());
}
