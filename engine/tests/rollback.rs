//! Rollback detection: the generation and its anchor, accept-restore, and the content
//! hash that catches single rows put back or removed (docs/FORMAT.md, "State record";
//! docs/SECURITY.md, "Rollback").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use rand::Rng;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use sealkv_engine::anchor::{AnchorStore, install_keychain_anchors};
use sealkv_engine::{AnchorLocation, Batch, Error, Options, Store};

const DATA: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sealkv_data");

fn file_anchor(dir: &Path) -> AnchorLocation {
    AnchorLocation::File(dir.join("store.anchor"))
}

/// A new store `s.sealkv` in `dir`, anchored in `dir/store.anchor`.
fn anchored(dir: &Path) -> (std::path::PathBuf, Store) {
    let path = dir.join("s.sealkv");
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    store.set_anchor(Some(file_anchor(dir))).unwrap();
    (path, store)
}

fn write_some(store: &Store, from: u32, n: u32) {
    for i in from..from + n {
        store
            .put("ns", &format!("k{i}"), format!("value {i}").into_bytes())
            .unwrap();
    }
}

#[test]
fn every_commit_advances_the_generation_and_reopening_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    assert_eq!(store.generation(), 0);
    write_some(&store, 0, 3);
    assert_eq!(store.generation(), 3);
    let mut b = Batch::new();
    b.put("a", "1", b"x".to_vec()).put("b", "2", b"y".to_vec());
    store.set(&b).unwrap();
    assert_eq!(store.generation(), 4);
    drop(store);
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    assert_eq!(store.generation(), 4);
    assert_eq!(store.restore_epoch(), 0);
    assert!(store.verify().unwrap().is_empty());
}

#[test]
fn an_older_copy_put_back_is_refused_by_a_file_anchor_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = anchored(dir.path());
    write_some(&store, 0, 5);
    drop(store);
    let old = dir.path().join("old.sealkv");
    std::fs::copy(&path, &old).unwrap();
    // 20 values rewritten, as the issue's operator did.
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    assert_eq!(
        store.anchor(),
        Some(file_anchor(dir.path())),
        "recorded in the store"
    );
    for i in 0..20 {
        store.put("ns", &format!("k{i}"), b"new".to_vec()).unwrap();
    }
    let newest = store.generation();
    drop(store);
    let current = dir.path().join("current.sealkv");
    std::fs::copy(&path, &current).unwrap();
    std::fs::copy(&old, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    for read_only in [false, true] {
        let opened = if read_only {
            Store::open_read_only(&path, key(), fast_opts())
        } else {
            Store::open(&path, key(), fast_opts())
        };
        match opened {
            Err(Error::RolledBack {
                file,
                anchor,
                location,
            }) => {
                assert_eq!(file, (0, 6));
                assert_eq!(anchor, (0, newest));
                assert!(location.ends_with("store.anchor"));
            }
            other => panic!("an older copy opened: {other:?}"),
        }
        assert!(std::fs::read(&path).unwrap() == before, "the file changed");
    }
    let msg = Store::open(&path, key(), fast_opts())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("older copy") && msg.contains("accept-restore"),
        "{msg}"
    );
    // The current copy put back opens.
    std::fs::copy(&current, &path).unwrap();
    Store::open(&path, key(), fast_opts()).unwrap();
}

#[test]
fn accept_restore_advances_the_epoch_and_then_refuses_the_copy_that_was_current() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = anchored(dir.path());
    write_some(&store, 0, 3);
    drop(store);
    let backup = dir.path().join("backup.sealkv");
    std::fs::copy(&path, &backup).unwrap();
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    write_some(&store, 3, 10);
    drop(store);
    let newer = dir.path().join("newer.sealkv");
    std::fs::copy(&path, &newer).unwrap();
    // The backup is restored, knowingly.
    std::fs::copy(&backup, &path).unwrap();
    assert!(matches!(
        Store::open(&path, key(), fast_opts()),
        Err(Error::RolledBack { .. })
    ));
    let store = Store::accept_restore(&path, key(), fast_opts()).unwrap();
    assert_eq!(store.restore_epoch(), 1);
    assert_eq!(store.count("ns").unwrap(), 3);
    store.put("ns", "after", b"restore".to_vec()).unwrap();
    drop(store);
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    assert_eq!(store.restore_epoch(), 1);
    drop(store);
    // The copy that was current before the restore is older now, whatever its
    // generation.
    std::fs::copy(&newer, &path).unwrap();
    match Store::open(&path, key(), fast_opts()) {
        Err(Error::RolledBack { file, anchor, .. }) => {
            assert_eq!(file.0, 0);
            assert_eq!(anchor.0, 1);
            assert!(
                file.1 > anchor.1,
                "the newer copy has the higher generation"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_or_foreign_anchor_is_its_own_error_never_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let anchor = dir.path().join("store.anchor");
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    store.set_anchor(Some(file_anchor(dir.path()))).unwrap();
    write_some(&store, 0, 2);
    drop(store);
    let saved = std::fs::read(&anchor).unwrap();
    std::fs::remove_file(&anchor).unwrap();
    let err = Store::open(&path, key(), fast_opts()).unwrap_err();
    assert!(matches!(err, Error::Anchor { .. }), "{err:?}");
    assert!(err.to_string().contains("accept-restore"), "{err}");
    // Another store's anchor in its place.
    let other = Store::create(dir.path().join("o.sealkv"), key(), fast_opts()).unwrap();
    other.set_anchor(Some(file_anchor(dir.path()))).unwrap();
    drop(other);
    let err = Store::open(&path, key(), fast_opts()).unwrap_err();
    assert!(matches!(err, Error::Anchor { .. }), "{err:?}");
    // Garbage.
    std::fs::write(&anchor, vec![7u8; 200]).unwrap();
    assert!(matches!(
        Store::open(&path, key(), fast_opts()),
        Err(Error::Anchor { .. })
    ));
    std::fs::write(&anchor, &saved).unwrap();
    Store::open(&path, key(), fast_opts()).unwrap();
    // accept-restore writes a missing anchor again.
    std::fs::remove_file(&anchor).unwrap();
    drop(Store::accept_restore(&path, key(), fast_opts()).unwrap());
    Store::open(&path, key(), fast_opts()).unwrap();
}

#[test]
fn an_anchor_named_at_open_is_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    write_some(&store, 0, 2);
    drop(store);
    let old = dir.path().join("old.sealkv");
    std::fs::copy(&path, &old).unwrap();
    let anchored = Options {
        anchor: Some(file_anchor(dir.path())),
        ..fast_opts()
    };
    // No record at that place yet: an error, not a pass.
    assert!(matches!(
        Store::open(&path, key(), anchored.clone()),
        Err(Error::Anchor { .. })
    ));
    drop(Store::accept_restore(&path, key(), anchored.clone()).unwrap());
    let store = Store::open(&path, key(), anchored.clone()).unwrap();
    write_some(&store, 2, 2);
    drop(store);
    std::fs::copy(&old, &path).unwrap();
    assert!(matches!(
        Store::open(&path, key(), anchored),
        Err(Error::RolledBack { .. })
    ));
}

/// Copies one data row from `from` into `to` (or deletes it from `to`), as someone with
/// the file and no key could.
fn raw_edit(to: &Path, from: Option<&Path>, nth: usize) {
    let db = redb::Database::open(to).unwrap();
    let row_key: [u8; 32] = {
        let r = db.begin_read().unwrap();
        let t = r.open_table(DATA).unwrap();
        let mut rows = t.iter().unwrap();
        *rows.nth(nth).unwrap().unwrap().0.value()
    };
    let value = from.map(|from| {
        let old = redb::Database::builder().open_read_only(from).unwrap();
        let r = old.begin_read().unwrap();
        let t = r.open_table(DATA).unwrap();
        t.get(&row_key).unwrap().unwrap().value().to_vec()
    });
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(DATA).unwrap();
        match &value {
            Some(v) => {
                t.insert(&row_key, v.as_slice()).unwrap();
            }
            None => {
                t.remove(&row_key).unwrap();
            }
        }
    }
    w.commit().unwrap();
}

#[test]
fn a_row_put_back_or_deleted_behind_sealkvs_back_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    write_some(&store, 0, 10);
    drop(store);
    let old = dir.path().join("old.sealkv");
    std::fs::copy(&path, &old).unwrap();
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    for i in 0..10 {
        store
            .put("ns", &format!("k{i}"), b"rewritten".to_vec())
            .unwrap();
    }
    assert!(store.verify().unwrap().is_empty());
    drop(store);
    let clean = dir.path().join("clean.sealkv");
    std::fs::copy(&path, &clean).unwrap();
    for edit in ["put back", "deleted"] {
        std::fs::copy(&clean, &path).unwrap();
        // Row 3 is a value (the catalog row sorts elsewhere); either way it is a row.
        raw_edit(&path, (edit == "put back").then_some(old.as_path()), 3);
        let store = Store::open(&path, key(), fast_opts()).unwrap();
        let failures = store.verify().unwrap();
        assert!(
            failures.iter().any(|e| matches!(e, Error::ContentChanged)),
            "a row {edit}: {failures:?}"
        );
        // A read-only handle sees it too.
        drop(store);
        let ro = Store::open_read_only(&path, key(), fast_opts()).unwrap();
        assert!(
            ro.verify()
                .unwrap()
                .iter()
                .any(|e| matches!(e, Error::ContentChanged))
        );
    }
}

#[test]
fn every_write_path_keeps_the_content_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let now = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_000_000));
    let clock = now.clone();
    let opts = Options {
        clock: std::sync::Arc::new(move || clock.load(Ordering::SeqCst)),
        ..fast_opts()
    };
    let store = Store::create(&path, key(), opts.clone()).unwrap();
    let clean = |store: &Store, what: &str| {
        let failures = store.verify().unwrap();
        assert!(failures.is_empty(), "after {what}: {failures:?}");
    };
    write_some(&store, 0, 50);
    clean(&store, "puts");
    store.delete("ns", "k3").unwrap();
    let mut b = Batch::new();
    b.put("ns", "k4", b"again".to_vec())
        .delete("ns", "k5")
        .put("ns", "k4", b"twice in one batch".to_vec())
        .put("other", "x", vec![1; 5000]);
    store.set(&b).unwrap();
    clean(&store, "a batch");
    store
        .transaction("lock", |tx| {
            tx.put("ns", "k6", b"in a transaction".to_vec());
            tx.delete("ns", "k7");
            Ok::<_, Error>(())
        })
        .unwrap();
    clean(&store, "a transaction");
    let s = store.session("bot-1").unwrap();
    s.put("ns", "k", b"session value".to_vec()).unwrap();
    s.put_with_ttl("ttl", "k", b"expires".to_vec(), Duration::from_secs(10))
        .unwrap();
    clean(&store, "a session");
    now.fetch_add(2 * 3600, Ordering::SeqCst);
    store.sweep().unwrap();
    clean(&store, "a sweep");
    store.drop_session("bot-1").unwrap();
    clean(&store, "a dropped session");
    store.rotate().unwrap();
    store.reencrypt(7, |_| {}).unwrap();
    clean(&store, "rotation and re-encryption");
    store.clear().unwrap();
    clean(&store, "clear");
    write_some(&store, 0, 3);
    store.compact().unwrap();
    clean(&store, "compaction");
    store.add_slot(passphrase("recovery"), Some("r")).unwrap();
    store.rekey(key()).unwrap();
    clean(&store, "slot changes");
    let backup = dir.path().join("b.sealkv");
    store.backup(&backup).unwrap();
    let b = Store::open(&backup, key(), opts).unwrap();
    clean(&b, "a backup");
}

// ---- faults ------------------------------------------------------------------------

/// Anchors behind the "keychain" kind in this test binary: files, whose writes fail
/// while `FAIL` is set (the real keychain is tested in the `sealkv` crate).
static FAIL: AtomicBool = AtomicBool::new(false);

struct Failing(AnchorLocation);

impl AnchorStore for Failing {
    fn read(&self) -> sealkv_engine::Result<Vec<Vec<u8>>> {
        self.inner().read()
    }
    fn advance(
        &self,
        record: &[u8],
        at: (u64, u64),
        rank: &sealkv_engine::anchor::Rank<'_>,
    ) -> sealkv_engine::Result<()> {
        if FAIL.load(Ordering::SeqCst) {
            return Err(Error::Anchor {
                what: "injected failure".into(),
                hint: "test",
            });
        }
        self.inner().advance(record, at, rank)
    }
    fn rebase(&self, record: &[u8]) -> sealkv_engine::Result<()> {
        self.inner().rebase(record)
    }
}

impl Failing {
    fn inner(&self) -> Box<dyn AnchorStore> {
        sealkv_engine::anchor::file_store(match &self.0 {
            AnchorLocation::File(p) => p.clone(),
            _ => unreachable!(),
        })
    }
}

fn failing_anchors(service: &str, account: &str) -> sealkv_engine::Result<Box<dyn AnchorStore>> {
    Ok(Box::new(Failing(AnchorLocation::File(
        Path::new(service).join(account),
    ))))
}

#[test]
fn anchor_writes_that_fail_never_raise_a_false_alarm_and_lag_at_most_their_window() {
    install_keychain_anchors(failing_anchors);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let location = AnchorLocation::Keychain(dir.path().to_str().unwrap().to_owned());
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    store.set_anchor(Some(location)).unwrap();
    write_some(&store, 0, 3);
    drop(store); // close writes what the interval held back
    let at_close = dir.path().join("at-close.sealkv");
    std::fs::copy(&path, &at_close).unwrap();

    // Every anchor write fails from here: commits still succeed, health says so.
    FAIL.store(true, Ordering::SeqCst);
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    write_some(&store, 3, 5);
    assert!(store.anchor_lagging());
    assert!(!store.health().is_healthy());
    drop(store);
    // The file is ahead of its anchor: it opens (no false alarm)...
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    drop(store);
    FAIL.store(false, Ordering::SeqCst);
    // ...and a rollback to the last state the anchor recorded is within the window the
    // failures opened (it opens), while anything older is refused.
    let newest = dir.path().join("newest.sealkv");
    std::fs::copy(&path, &newest).unwrap();
    std::fs::copy(&at_close, &path).unwrap();
    drop(Store::open(&path, key(), fast_opts()).unwrap());
    std::fs::copy(&newest, &path).unwrap();
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    assert!(!store.anchor_lagging(), "a write succeeded again");
    drop(store);
    std::fs::copy(&at_close, &path).unwrap();
    assert!(matches!(
        Store::open(&path, key(), fast_opts()),
        Err(Error::RolledBack { .. })
    ));
}

#[test]
fn a_commit_that_fails_never_advances_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let state = std::sync::Arc::new(FaultState::default());
    let store = Store::create(&path, key(), faulty_opts(state.clone())).unwrap();
    store.set_anchor(Some(file_anchor(dir.path()))).unwrap();
    write_some(&store, 0, 2);
    let g = store.generation();
    // Fail every write and sync from the first: the commit fails before the disk.
    state.arm(1, true);
    assert!(store.put("ns", "x", b"y".to_vec()).is_err());
    state.disarm();
    drop(store);
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    assert_eq!(store.generation(), g, "nothing committed");
}

// ---- SIGKILL -----------------------------------------------------------------------

const CHILD: &str = "SEALKV_ROLLBACK_CHILD";

/// The child's entry point: writes until killed, printing each acknowledged generation.
#[test]
fn rollback_child() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        store
            .put("ns", &format!("k{}", i % 50), vec![i as u8; 300])
            .unwrap();
        use std::io::Write;
        writeln!(out, "{}", store.generation()).unwrap();
        out.flush().unwrap();
    }
}

/// Starts [`rollback_child`] on `path` and waits for its first acknowledged commit:
/// the child, that commit's generation, and the generations it acknowledges next.
fn start_writer(
    path: &Path,
) -> (
    std::process::Child,
    u64,
    impl Iterator<Item = u64> + Send + use<>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "rollback_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // libtest's own lines come before the child's.
    let mut generations = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| l.trim().parse::<u64>().ok());
    let first = generations.next().expect("the writer never wrote");
    (child, first, generations)
}

fn kills() -> usize {
    50 * std::env::var("SEALKV_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[test]
fn a_writer_killed_at_random_points_never_raises_a_false_alarm_and_older_copies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = anchored(dir.path());
    drop(store);
    let mut rng = rand::rng();
    let mut copies = Vec::new();
    for round in 0..kills() {
        // The writer is writing (its first commit is acknowledged) before the kill.
        let (mut child, first, lines) = start_writer(&path);
        let reader = std::thread::spawn(move || lines.last().unwrap_or(first));
        std::thread::sleep(Duration::from_millis(rng.random_range(1..60)));
        child.kill().unwrap();
        child.wait().unwrap();
        let acknowledged = reader.join().unwrap();
        // Never a false alarm: the file is at or past its anchor.
        let store = Store::open(&path, key(), fast_opts())
            .unwrap_or_else(|e| panic!("round {round}: a false alarm: {e}"));
        assert!(
            store.generation() >= acknowledged,
            "round {round}: an acknowledged commit was lost"
        );
        // One commit from this process, so the anchor is past every earlier copy.
        store.put("ns", "parent", vec![round as u8]).unwrap();
        drop(store);
        let copy = dir.path().join(format!("copy{round}.sealkv"));
        std::fs::copy(&path, &copy).unwrap();
        copies.push(copy);
    }
    let current = dir.path().join("current.sealkv");
    std::fs::copy(&path, &current).unwrap();
    // Every earlier copy put back is refused: the window is the commits the anchor had
    // not recorded when the writer died, never an earlier round.
    for copy in &copies[..copies.len() - 1] {
        std::fs::copy(copy, &path).unwrap();
        assert!(
            matches!(
                Store::open(&path, key(), fast_opts()),
                Err(Error::RolledBack { .. })
            ),
            "{} was accepted",
            copy.display()
        );
    }
    std::fs::copy(&current, &path).unwrap();
    assert!(
        Store::open(&path, key(), fast_opts())
            .unwrap()
            .verify()
            .unwrap()
            .is_empty()
    );
}

// ---- PostgreSQL --------------------------------------------------------------------

#[test]
fn on_postgres_a_row_changed_by_sql_fails_verify_and_an_anchor_row_refuses_an_older_copy() {
    let Some(url) = test_pg() else {
        return;
    };
    let place = Place::new(Some(url.clone()));
    let addr = place.addr("rb");
    let store = Store::create(&addr, key(), fast_opts()).unwrap();
    write_some(&store, 0, 10);
    let snapshot: Vec<(Vec<u8>, Vec<u8>)> = {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let table = format!("sealkv_{}_data", store_name(&addr));
        c.query(&format!("SELECT k, v FROM {table} ORDER BY k"), &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    for i in 0..10 {
        store
            .put("ns", &format!("k{i}"), b"rewritten".to_vec())
            .unwrap();
    }
    assert!(store.verify().unwrap().is_empty());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let table = format!("sealkv_{}_data", store_name(&addr));
    // An older row put back by an UPDATE.
    let (k, old_v) = &snapshot[2];
    let now: Vec<u8> = c
        .query_one(&format!("SELECT v FROM {table} WHERE k = $1"), &[k])
        .unwrap()
        .get(0);
    c.execute(
        &format!("UPDATE {table} SET v = $2 WHERE k = $1"),
        &[k, old_v],
    )
    .unwrap();
    assert!(
        store
            .verify()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Error::ContentChanged))
    );
    c.execute(
        &format!("UPDATE {table} SET v = $2 WHERE k = $1"),
        &[k, &now],
    )
    .unwrap();
    assert!(store.verify().unwrap().is_empty());
    // A row deleted.
    c.execute(&format!("DELETE FROM {table} WHERE k = $1"), &[k])
        .unwrap();
    assert!(
        store
            .verify()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Error::ContentChanged))
    );
    drop(store);

    drop(c);
    // A file store anchored on the server, in a process given the password as
    // PGPASSWORD (an anchor's URL, kept in the store, holds none).
    let (without, password) = split_password(&url);
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pg_anchor_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PG_CHILD, without)
        .env("PGPASSWORD", password)
        .status()
        .unwrap();
    assert!(status.success(), "the PostgreSQL anchor checks failed");
}

const PG_CHILD: &str = "SEALKV_PG_ANCHOR_CHILD";

/// `postgres://user:password@rest` → (`postgres://user@rest`, `password`).
fn split_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (credentials, host) = rest.split_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    (format!("{scheme}://{user}@{host}"), password.to_owned())
}

/// Run by the test above, with the anchor's URL (no password) and PGPASSWORD set.
#[test]
fn pg_anchor_child() {
    let Ok(url) = std::env::var(PG_CHILD) else {
        return;
    };
    let password = std::env::var("PGPASSWORD").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    store
        .set_anchor(Some(AnchorLocation::parse(&url).unwrap()))
        .unwrap();
    write_some(&store, 0, 2);
    drop(store);
    let old = dir.path().join("old.sealkv");
    std::fs::copy(&path, &old).unwrap();
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    write_some(&store, 2, 2);
    drop(store); // close writes what the interval held back
    let newer = dir.path().join("newer.sealkv");
    std::fs::copy(&path, &newer).unwrap();
    std::fs::copy(&old, &path).unwrap();
    match Store::open(&path, key(), fast_opts()) {
        Err(e @ Error::RolledBack { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("postgres://") && !msg.contains(&password),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    let store = Store::accept_restore(&path, key(), fast_opts()).unwrap();
    assert_eq!(store.restore_epoch(), 1);
    drop(store);
    Store::open(&path, key(), fast_opts()).unwrap();
    std::fs::copy(&newer, &path).unwrap();
    assert!(matches!(
        Store::open(&path, key(), fast_opts()),
        Err(Error::RolledBack { .. })
    ));
    // An unreachable server is an error, never a pass.
    let dead = AnchorLocation::parse("postgres://nobody@127.0.0.1:1/none").unwrap();
    let fresh = dir.path().join("fresh.sealkv");
    drop(Store::create(&fresh, key(), fast_opts()).unwrap());
    let err = Store::open(
        &fresh,
        key(),
        Options {
            anchor: Some(dead),
            ..fast_opts()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Anchor { .. }), "{err:?}");
}

fn store_name(addr: &Path) -> String {
    addr.to_str()
        .unwrap()
        .split("store=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned()
}

/// Opening (and reading) while another process commits, over and over: the anchor is
/// read before the file's state, so a commit in between never looks like a rollback.
#[test]
fn opening_while_another_process_commits_never_raises_a_false_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = anchored(dir.path());
    drop(store);
    let (mut child, _, lines) = start_writer(&path);
    let drain = std::thread::spawn(move || lines.count());
    let mut opened = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        for read_only in [false, true] {
            let result = if read_only {
                Store::open_read_only(&path, key(), fast_opts())
            } else {
                Store::open(&path, key(), fast_opts())
            };
            match result {
                Ok(store) => {
                    store.get_one("ns", "k1").unwrap();
                    opened += 1;
                }
                Err(e) => panic!("open {opened} (read-only: {read_only}): {e}"),
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let commits = drain.join().unwrap();
    assert!(
        opened > 20 && commits > 20,
        "{opened} opens, {commits} commits"
    );
}

const UPGRADE_CHILD: &str = "SEALKV_UPGRADE_CHILD";

/// Opens a format 2 file (shared) and writes 20 values under its own name.
#[test]
fn upgrade_child() {
    let Ok(path) = std::env::var(UPGRADE_CHILD) else {
        return;
    };
    let name = std::env::var("SEALKV_UPGRADE_NAME").unwrap();
    let golden = sealkv_engine::MasterKey::from_bytes(&[0x42; 32]).unwrap();
    let store = Store::open(&path, golden, Options::default()).unwrap();
    for i in 0..20 {
        store
            .put(&name, &format!("k{i}"), vec![i as u8; 100])
            .unwrap();
    }
}

/// Two processes open one format 2 file at once and write: one upgrades it, the other
/// takes up the upgrade, and both keep the content hash (verify stays clean).
#[test]
fn two_processes_upgrading_one_file_at_once_both_keep_the_state() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.sealkv");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v2.sealkv"),
            &path,
        )
        .unwrap();
        let children: Vec<_> = ["a", "b"]
            .iter()
            .map(|name| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", "upgrade_child", "--test-threads=1"])
                    .env(UPGRADE_CHILD, &path)
                    .env("SEALKV_UPGRADE_NAME", name)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let golden = sealkv_engine::MasterKey::from_bytes(&[0x42; 32]).unwrap();
        let store = Store::open(&path, golden, Options::default()).unwrap();
        assert_eq!(store.count("a").unwrap(), 20);
        assert_eq!(store.count("b").unwrap(), 20);
        // The upgrade, then one generation per commit of either process.
        assert!(store.generation() >= 41, "{}", store.generation());
        let failures = store.verify().unwrap();
        assert!(failures.is_empty(), "round {round}: {failures:?}");
    }
}

/// The same backup restored and accepted twice: the second acceptance must pass the
/// epoch the first one gave, or the copy current between the two would open again.
#[test]
fn a_restore_accepted_twice_refuses_every_copy_current_before() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = anchored(dir.path());
    write_some(&store, 0, 3);
    drop(store);
    let backup = dir.path().join("b.sealkv");
    std::fs::copy(&path, &backup).unwrap();
    let mut current = Vec::new();
    for round in 1..=2u64 {
        let store = Store::open(&path, key(), fast_opts()).unwrap();
        write_some(&store, 10 * round as u32, 10);
        drop(store);
        let copy = dir.path().join(format!("current{round}.sealkv"));
        std::fs::copy(&path, &copy).unwrap();
        current.push(copy);
        std::fs::copy(&backup, &path).unwrap();
        let store = Store::accept_restore(&path, key(), fast_opts()).unwrap();
        assert_eq!(store.restore_epoch(), round);
        drop(store);
        Store::open(&path, key(), fast_opts()).unwrap();
    }
    for copy in &current {
        std::fs::copy(copy, &path).unwrap();
        assert!(matches!(
            Store::open(&path, key(), fast_opts()),
            Err(Error::RolledBack { .. })
        ));
    }
}

#[test]
fn a_damaged_anchor_file_is_written_again_by_accept_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = anchored(dir.path());
    write_some(&store, 0, 3);
    drop(store);
    std::fs::write(dir.path().join("store.anchor"), vec![9u8; 160]).unwrap();
    assert!(matches!(
        Store::open(&path, key(), fast_opts()),
        Err(Error::Anchor { .. })
    ));
    drop(Store::accept_restore(&path, key(), fast_opts()).unwrap());
    Store::open(&path, key(), fast_opts()).unwrap();
}

/// A format 2 copy of a store (from before its upgrade) opened with the anchor named:
/// refused, as the oldest state there is.
#[test]
fn a_copy_from_before_format_3_is_refused_when_the_anchor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.sealkv");
    let golden_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v2.sealkv");
    std::fs::copy(&golden_src, &path).unwrap();
    let golden = sealkv_engine::MasterKey::from_bytes(&[0x42; 32]).unwrap();
    let anchored = Options {
        anchor: Some(file_anchor(dir.path())),
        ..Options::default()
    };
    drop(Store::accept_restore(&path, golden.clone(), anchored.clone()).unwrap());
    let store = Store::open(&path, golden.clone(), anchored.clone()).unwrap();
    store.put("x", "y", b"z".to_vec()).unwrap();
    drop(store);
    std::fs::copy(&golden_src, &path).unwrap();
    for read_only in [false, true] {
        let opened = if read_only {
            Store::open_read_only(&path, golden.clone(), anchored.clone())
        } else {
            Store::open(&path, golden.clone(), anchored.clone())
        };
        assert!(
            matches!(opened, Err(Error::RolledBack { file: (0, 0), .. })),
            "{:?}",
            opened.err()
        );
    }
}

#[test]
fn hand_built_anchor_locations_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s.sealkv"), key(), fast_opts()).unwrap();
    for bad in [
        AnchorLocation::File("relative.anchor".into()),
        AnchorLocation::Postgres("postgres://u:secret@h/db".into()),
        AnchorLocation::Keychain(String::new()),
    ] {
        let err = store.set_anchor(Some(bad.clone())).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
    assert_eq!(store.anchor(), None);
}

/// One passphrase slot over the caller's Argon2 limits does not stop another slot from
/// opening the store.
#[test]
fn a_slot_over_the_kdf_limits_is_skipped_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let costly = Options {
        kdf: sealkv_engine::KdfParams {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        },
        ..fast_opts()
    };
    drop(Store::create(&path, passphrase("pw"), costly).unwrap());
    // A slot added with the cheap test parameters.
    let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    store.add_slot(passphrase("pw"), Some("cheap")).unwrap();
    drop(store);
    let tight = Options {
        kdf_limits: sealkv_engine::KdfLimits {
            max_memory_kib: 128,
            max_memory_passes_kib: 128,
        },
        ..fast_opts()
    };
    let store = Store::open(&path, passphrase("pw"), tight.clone()).unwrap();
    assert_eq!(store.opened_slot(), 2);
    drop(store);
    // With the cheap slot gone, the limit is what is reported.
    let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    store.remove_slot(2).unwrap();
    drop(store);
    assert!(matches!(
        Store::open(&path, passphrase("pw"), tight),
        Err(Error::Key(sealkv_engine::CryptoError::KdfOverLimit { .. }))
    ));
}

/// An anchor file replaced by a rename while the store is open (a sync tool, a restored
/// folder): the open store writes the file at the path from then on, not the old one.
#[test]
fn an_anchor_file_replaced_while_open_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let anchor = dir.path().join("store.anchor");
    let store = Store::create(&path, key(), fast_opts()).unwrap();
    store.set_anchor(Some(file_anchor(dir.path()))).unwrap();
    write_some(&store, 0, 3);
    drop(store);
    let older = dir.path().join("older.sealkv");
    std::fs::copy(&path, &older).unwrap();
    let stale = dir.path().join("anchor.copy");
    std::fs::copy(&anchor, &stale).unwrap();
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    write_some(&store, 3, 3);
    std::fs::rename(&stale, &anchor).unwrap();
    write_some(&store, 6, 3);
    drop(store);
    Store::open(&path, key(), fast_opts()).unwrap();
    std::fs::copy(&older, &path).unwrap();
    match Store::open(&path, key(), fast_opts()) {
        Err(Error::RolledBack { .. }) => {}
        other => panic!("{:?}", other.map(|s| s.generation())),
    }
}
