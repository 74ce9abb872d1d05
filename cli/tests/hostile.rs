//! Hostile inputs through the CLI, table-driven: each gets its documented exit status
//! and message, and the database file is left byte-identical.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

const PASS: &str = "hostile-pass";

fn sealkv() -> Command {
    let mut c = Command::cargo_bin("sealkv").unwrap();
    c.env("SEALKV_PASSPHRASE", PASS)
        .env_remove("SEALKV_MASTER_KEY");
    c
}

fn make_db(dir: &Path, name: &str) -> PathBuf {
    let db = dir.join(name);
    sealkv()
        .args(["init", db.to_str().unwrap(), "--compression", "none"])
        .assert()
        .success();
    sealkv()
        .args(["put", db.to_str().unwrap(), "session", "victim"])
        .write_stdin("V".repeat(400))
        .assert()
        .success();
    db
}

struct Case {
    name: &'static str,
    /// Arguments; `{db}` is replaced by the case's file.
    args: Vec<String>,
    stdin: Vec<u8>,
    code: i32,
    stderr_has: &'static str,
}

fn case(name: &'static str, args: &[&str], code: i32, stderr_has: &'static str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: Vec::new(),
        code,
        stderr_has,
    }
}

#[test]
fn hostile_inputs_get_their_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = make_db(d, "good.sealkv");

    let empty = d.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let random = d.join("random");
    std::fs::write(
        &random,
        (0..50_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 9) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let truncated = d.join("truncated.sealkv");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let flipped = make_db(d, "flipped.sealkv");
    {
        let sealed: Vec<u8> = {
            let rdb = redb::ReadOnlyDatabase::open(&flipped).unwrap();
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
        let mut raw = std::fs::read(&flipped).unwrap();
        let at = raw
            .windows(sealed.len())
            .position(|w| w == sealed.as_slice())
            .unwrap();
        raw[at + 200] ^= 0x08;
        std::fs::write(&flipped, raw).unwrap();
    }
    let a_dir = d.join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();

    let g = good.to_str().unwrap();
    let long_name = "n".repeat(100_000); // argv caps one argument at 128 KiB; the limit is 1 KiB
    let mut cases = vec![
        case(
            "empty file",
            &["ls", empty.to_str().unwrap()],
            2,
            "not a sealkv database",
        ),
        case(
            "random bytes",
            &["ls", random.to_str().unwrap()],
            2,
            "not a sealkv database",
        ),
        case(
            "truncated database",
            &["ls", truncated.to_str().unwrap()],
            2,
            "damaged",
        ),
        case(
            "one flipped bit in a value",
            &["get", flipped.to_str().unwrap(), "session", "victim"],
            4,
            "session/victim",
        ),
        case(
            "a directory instead of a file",
            &["ls", a_dir.to_str().unwrap()],
            2,
            "not a sealkv database",
        ),
        case(
            "empty namespace",
            &["get", g, "", "k"],
            2,
            "must not be empty",
        ),
        case(
            "empty key",
            &["put", g, "session", "", "/dev/null"],
            2,
            "must not be empty",
        ),
        case(
            "100 KB key",
            &["get", g, "session", &long_name],
            2,
            "over the limit",
        ),
        case(
            "100 KB namespace",
            &["put", g, &long_name, "k", "/dev/null"],
            2,
            "over the limit",
        ),
        case(
            "missing value file",
            &["put", g, "session", "k", "/nonexistent/value"],
            2,
            "cannot read",
        ),
        case(
            "wrong passphrase file",
            &["--passphrase-file", "/nonexistent", "ls", g],
            2,
            "cannot read passphrase file",
        ),
        case(
            "bad key file",
            &["--key-file", empty.to_str().unwrap(), "ls", g],
            2,
            "32 raw bytes or 64 hex",
        ),
    ];
    let mut over = case(
        "value over the limit",
        &["put", g, "session", "big"],
        2,
        "over the store's limit",
    );
    over.stdin = vec![0u8; (16 << 20) + 1];
    cases.push(over);

    for c in &cases {
        let files: Vec<PathBuf> = [&good, &empty, &random, &truncated, &flipped]
            .into_iter()
            .cloned()
            .collect();
        let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        let out = sealkv()
            .args(&c.args)
            .write_stdin(c.stdin.clone())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(c.code), "{}: {stderr}", c.name);
        assert!(stderr.starts_with("sealkv: "), "{}: {stderr}", c.name);
        assert!(stderr.contains(c.stderr_has), "{}: {stderr}", c.name);
        assert!(!stderr.contains("panicked"), "{}: {stderr}", c.name);
        for (f, b) in files.iter().zip(&before) {
            assert!(
                &std::fs::read(f).unwrap() == b,
                "{}: {} changed",
                c.name,
                f.display()
            );
        }
    }

    // Names with separators, dots and odd characters are just names.
    for name in ["a/b", "../etc/passwd", "x:y", "tab\there", "emoji-🔑"] {
        sealkv()
            .args(["put", g, "odd", name])
            .write_stdin(name)
            .assert()
            .success();
        sealkv()
            .args(["get", g, "odd", name])
            .assert()
            .success()
            .stdout(name.to_string());
    }
}

#[cfg(unix)]
#[test]
fn invalid_utf8_names_are_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path(), "u.sealkv");
    let bad = std::ffi::OsStr::from_bytes(b"bad\xffname");
    let before = std::fs::read(&db).unwrap();
    let out = sealkv()
        .arg("get")
        .arg(&db)
        .arg("session")
        .arg(bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UTF-8"));
    assert!(std::fs::read(&db).unwrap() == before, "the file changed");
}

#[cfg(unix)]
#[test]
fn unreadable_and_unwritable_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = make_db(dir.path(), "perm.sealkv");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o000)).unwrap();
    // root reads anything: then the permission cannot stop us, and the test says so.
    if std::fs::File::open(&db).is_ok() {
        eprintln!(
            "running as root: permission bits are not enforced; checked only that nothing breaks"
        );
        sealkv()
            .args(["ls", db.to_str().unwrap()])
            .assert()
            .success();
        return;
    }
    let out = sealkv()
        .args(["ls", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ermission"));
}
