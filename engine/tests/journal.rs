//! The commit journal of a file held by one process: commits acknowledged before a
//! crash are all there after it (read-write and read-only opens alike), a torn last
//! record is not, a journal that does not follow its file is refused without
//! changing anything, and a closed store is one file again.
//! The crash is a real child process that aborts (no destructor runs).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sealkv_engine::{Batch, Concurrency, Error, Options, Store};

const CHILD: &str = "SEALKV_JOURNAL_CHILD";

fn journal_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

fn opts(mode: Concurrency) -> Options {
    Options {
        concurrency: mode,
        ..fast_opts()
    }
}

/// The child's entry point: does nothing unless started by a test below. Writes
/// 100 single puts and one batch of 812 rows, says DONE, and aborts.
#[test]
fn journal_child() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    let mode = match std::env::var("SEALKV_JOURNAL_MODE").as_deref() {
        Ok("exclusive") => Concurrency::Exclusive,
        _ => Concurrency::Shared,
    };
    let store = Store::create(&path, key(), opts(mode)).unwrap();
    for i in 0..100 {
        store
            .put(
                "session",
                &format!("s{i}"),
                format!("value {i}").into_bytes(),
            )
            .unwrap();
    }
    let mut batch = Batch::new();
    for i in 0..812 {
        batch.put("pre-key", &format!("{i}"), vec![i as u8; 75]);
    }
    store.set(&batch).unwrap();
    store.delete("session", "s0").unwrap();
    println!("DONE");
    std::process::abort();
}

/// Runs the child in `mode` on a new store at `path`; returns once it has crashed.
fn crash_after_writes(path: &Path, mode: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "journal_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, path)
        .env("SEALKV_JOURNAL_MODE", mode)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("DONE"),
        "the child did not finish its writes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the child should have aborted");
}

fn assert_all_there(store: &Store) {
    assert_eq!(store.count("session").unwrap(), 99);
    assert_eq!(store.get_one("session", "s0").unwrap(), None);
    assert_eq!(
        &store.get_one("session", "s99").unwrap().unwrap()[..],
        b"value 99"
    );
    assert_eq!(store.count("pre-key").unwrap(), 812);
    assert_eq!(
        &store.get_one("pre-key", "811").unwrap().unwrap()[..],
        &[811u16 as u8; 75][..]
    );
}

#[test]
fn acknowledged_commits_survive_a_crash_through_the_journal() {
    for mode in ["shared", "exclusive"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sealkv");
        crash_after_writes(&path, mode);
        let journal = journal_of(&path);
        // The last commits are in the journal only: the file alone lacks them (this
        // is what the test would miss if the journal were not replayed).
        let len = std::fs::metadata(&journal).unwrap().len();
        assert!(len > 32, "{mode}: the crash left an empty journal");
        let alone = dir.path().join("alone.sealkv");
        std::fs::copy(&path, &alone).unwrap();
        let lacking = Store::open_read_only(&alone, key(), fast_opts()).unwrap();
        assert!(
            lacking.count("session").unwrap() != 99 || lacking.count("pre-key").unwrap() != 812,
            "{mode}: the file alone already had every commit"
        );
        drop(lacking);
        // A read-only open replays the journal in memory and writes nothing.
        let file_before = std::fs::read(&path).unwrap();
        let journal_before = std::fs::read(&journal).unwrap();
        {
            let ro = Store::open_read_only(&path, key(), fast_opts()).unwrap();
            assert_all_there(&ro);
        }
        assert!(std::fs::read(&path).unwrap() == file_before, "{mode}");
        assert!(std::fs::read(&journal).unwrap() == journal_before, "{mode}");
        // A wrong key changes nothing either.
        let wrong = sealkv_engine::MasterKey::from_bytes(&[1; 32]).unwrap();
        assert!(matches!(
            Store::open(&path, wrong, fast_opts()),
            Err(Error::WrongKey)
        ));
        assert!(std::fs::read(&journal).unwrap() == journal_before, "{mode}");
        // A read-write open replays it into the file, and writes on.
        {
            let rw = Store::open(&path, key(), fast_opts()).unwrap();
            assert_all_there(&rw);
            rw.put("session", "after", b"crash".to_vec()).unwrap();
        }
        // Closed cleanly: no journal, and the file alone has everything.
        assert!(!journal.exists(), "{mode}: a clean close left the journal");
        std::fs::copy(&path, &alone).unwrap();
        let reopened = Store::open_read_only(&alone, key(), fast_opts()).unwrap();
        assert_eq!(reopened.count("session").unwrap(), 100);
        assert_eq!(reopened.count("pre-key").unwrap(), 812);
    }
}

#[test]
fn a_torn_last_record_is_not_replayed_and_the_rest_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    crash_after_writes(&path, "exclusive");
    let journal = journal_of(&path);
    let mut bytes = std::fs::read(&journal).unwrap();
    // A record cut short by the crash: a length, a sequence number, half a body.
    bytes.extend_from_slice(&100u32.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&[7; 40]);
    std::fs::write(&journal, &bytes).unwrap();
    let rw = Store::open(&path, key(), fast_opts()).unwrap();
    assert_all_there(&rw);
    assert!(rw.verify().unwrap().is_empty());
}

#[test]
fn a_journal_that_does_not_follow_its_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    // An older copy of the file, taken when the store was made.
    {
        let store = Store::create(&path, key(), opts(Concurrency::Exclusive)).unwrap();
        store.put("session", "a", b"1".to_vec()).unwrap();
    }
    let older = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    // The same path, a new store that crashes with commits in its journal; then the
    // older file is put back beside that journal.
    crash_after_writes(&path, "exclusive");
    let journal = journal_of(&path);
    std::fs::write(&path, &older).unwrap();
    let journal_before = std::fs::read(&journal).unwrap();
    let err = Store::open(&path, key(), fast_opts()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt(what) if what.contains("journal")),
        "{err:?}"
    );
    let err = Store::open_read_only(&path, key(), fast_opts()).unwrap_err();
    assert!(matches!(&err, Error::Corrupt(_)), "{err:?}");
    assert!(std::fs::read(&path).unwrap() == older);
    assert!(std::fs::read(&journal).unwrap() == journal_before);
    // Moved away, the file opens as it is.
    std::fs::rename(&journal, dir.path().join("kept.journal")).unwrap();
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    assert_eq!(&store.get_one("session", "a").unwrap().unwrap()[..], b"1");
}

#[test]
fn a_live_file_is_whole_a_second_after_its_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let store = Store::create(&path, key(), opts(Concurrency::Exclusive)).unwrap();
    // Right after create, the file alone is a store already.
    let copy = dir.path().join("copy.sealkv");
    std::fs::copy(&path, &copy).unwrap();
    Store::open_read_only(&copy, key(), fast_opts()).unwrap();
    std::fs::remove_file(&copy).unwrap();
    for i in 0..50 {
        store.put("session", &format!("{i}"), vec![1; 100]).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    std::fs::copy(&path, &copy).unwrap();
    let ro = Store::open_read_only(&copy, key(), fast_opts()).unwrap();
    assert_eq!(ro.count("session").unwrap(), 50);
}

#[test]
fn the_multi_writer_mode_keeps_no_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let store = Store::create(&path, key(), opts(Concurrency::MultiWriter)).unwrap();
    store.put("session", "a", b"1".to_vec()).unwrap();
    assert!(!journal_of(&path).exists());
    let exclusive = dir.path().join("e.sealkv");
    let store = Store::create(&exclusive, key(), opts(Concurrency::Exclusive)).unwrap();
    store.put("session", "a", b"1".to_vec()).unwrap();
    assert!(journal_of(&exclusive).exists());
}

/// One increment of a counter, read and written in one transaction.
fn increment(store: &Store) {
    store
        .transaction("n", |tx| {
            let now = tx.get("c", &["n"])?;
            let n: u64 = now
                .get("n")
                .map(|v| String::from_utf8_lossy(v).parse().unwrap())
                .unwrap_or(0);
            tx.put("c", "n", (n + 1).to_string().into_bytes());
            Ok::<_, Error>(())
        })
        .unwrap();
}

fn counter(store: &Store) -> String {
    String::from_utf8(store.get_one("c", "n").unwrap().unwrap().to_vec()).unwrap()
}

/// A journal append whose sync fails, or that is torn: the increment is applied
/// exactly once (the engine reopens the file, which replays what the journal holds,
/// and looks the commit up by its token before writing anything again), and the store
/// goes on.
#[test]
fn a_failed_journal_append_is_applied_exactly_once() {
    use sealkv_engine::internal::{JournalFault, inject_journal_fault, journal_fault_armed};
    for fault in [JournalFault::FailSync, JournalFault::TornWrite] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sealkv");
        let store = Store::create(&path, key(), opts(Concurrency::Exclusive)).unwrap();
        increment(&store);
        inject_journal_fault(&path, fault);
        increment(&store);
        assert!(
            !journal_fault_armed(&path),
            "{fault:?}: the fault never fired"
        );
        increment(&store);
        assert_eq!(counter(&store), "3", "{fault:?}");
        drop(store);
        let reopened = Store::open(&path, key(), fast_opts()).unwrap();
        assert_eq!(counter(&reopened), "3", "{fault:?}");
        assert!(reopened.verify().unwrap().is_empty());
    }
}

/// A damaged record with whole, later records after it is not a torn append: the
/// records after it were acknowledged, so the open is refused and nothing changes. A
/// journal of another kind (a wrong header) is refused the same way.
#[test]
fn a_damaged_journal_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    crash_after_writes(&path, "exclusive");
    let journal = journal_of(&path);
    let good = std::fs::read(&journal).unwrap();
    // A byte of the first record's body (past the 32-byte header and the record's
    // 12-byte length and sequence).
    let mut bad = good.clone();
    bad[32 + 12 + 3] ^= 0x40;
    std::fs::write(&journal, &bad).unwrap();
    let file_before = std::fs::read(&path).unwrap();
    for read_only in [false, true] {
        let err = if read_only {
            Store::open_read_only(&path, key(), fast_opts()).map(|_| ())
        } else {
            Store::open(&path, key(), fast_opts()).map(|_| ())
        }
        .unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt(what) if what.contains("damaged")),
            "{err:?}"
        );
    }
    assert!(std::fs::read(&journal).unwrap() == bad);
    assert!(std::fs::read(&path).unwrap() == file_before);
    // Another header: refused too, and left alone.
    let mut other = good.clone();
    other[..16].copy_from_slice(b"sealkv journal 9");
    std::fs::write(&journal, &other).unwrap();
    let err = Store::open(&path, key(), fast_opts()).unwrap_err();
    assert!(matches!(&err, Error::Corrupt(_)), "{err:?}");
    assert!(std::fs::read(&journal).unwrap() == other);
    // The journal as it was: everything is there.
    std::fs::write(&journal, &good).unwrap();
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    assert_all_there(&store);
}

/// A checkpoint whose durable commit fails: the journal takes no more commits, the
/// next one reopens the file (applying the whole journal again) and goes through,
/// applied once, and nothing acknowledged is lost.
#[test]
fn a_failed_checkpoint_reopens_the_file_and_loses_nothing() {
    use sealkv_engine::internal::{JournalFault, inject_journal_fault, journal_fault_armed};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let store = Store::create(&path, key(), opts(Concurrency::Exclusive)).unwrap();
    // Armed first, so the checkpoint that fails is the one after these commits.
    inject_journal_fault(&path, JournalFault::FailCheckpoint);
    for _ in 0..3 {
        increment(&store);
    }
    // The checkpoint thread runs within a second of the last commit.
    let waited = std::time::Instant::now();
    while journal_fault_armed(&path) {
        assert!(waited.elapsed().as_secs() < 10, "no checkpoint ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The failed checkpoint left its three records in the journal.
    let journal = journal_of(&path);
    let before = std::fs::metadata(&journal).unwrap().len();
    increment(&store);
    assert_eq!(counter(&store), "4");
    // That commit went through a reopen, which applied the journal and started a new
    // one holding only it (a journal that took commits on would hold four records).
    let after = std::fs::metadata(&journal).unwrap().len();
    assert!(
        after < before,
        "the journal was not applied again: {before} then {after} bytes"
    );
    increment(&store);
    drop(store);
    let reopened = Store::open(&path, key(), fast_opts()).unwrap();
    assert_eq!(counter(&reopened), "5");
    assert!(reopened.verify().unwrap().is_empty());
}
