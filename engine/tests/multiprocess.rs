//! Several processes on one store (shared mode, the default): real child processes
//! write while this one reads, writes, rotates, rekeys and backs up.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sealkv_engine::{Concurrency, Error, Options, Store};

const CHILD: &str = "SEALKV_MP_CHILD";
const PATH: &str = "SEALKV_MP_PATH";

/// The child's entry point: does nothing unless started by a test below.
#[test]
fn mp_child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let path = std::env::var(PATH).unwrap();
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    match mode.as_str() {
        // Writes `count` values named `<prefix><i>`, one durable commit each.
        "writer" => {
            let prefix = std::env::var("SEALKV_MP_PREFIX").unwrap();
            let count: usize = std::env::var("SEALKV_MP_COUNT").unwrap().parse().unwrap();
            let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
            say("READY".into());
            for i in 0..count {
                store
                    .put(
                        "n",
                        &format!("{prefix}{i}"),
                        format!("{prefix}{i}").into_bytes(),
                    )
                    .unwrap();
            }
            say("DONE".into());
        }
        // Holds the transaction lock "shared-key" until its stdin closes.
        "holder" => {
            let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
            store
                .transaction("shared-key", |tx| {
                    tx.put("n", "holder", b"held".to_vec());
                    say("HOLDING".into());
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                    Ok::<_, Error>(())
                })
                .unwrap();
            say("RELEASED".into());
        }
        // Rotates, re-encrypts every value and destroys the old key.
        "rotate-destroy" => {
            let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
            store.rotate().unwrap();
            store.reencrypt(100, |_| {}).unwrap();
            assert_eq!(store.destroy_unused_keys().unwrap(), [1]);
            say("DONE".into());
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn(mode: &str, path: &Path, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "mp_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env(PATH, path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Reads the child's stdout until a line ending in `want` (the first line also holds
/// libtest's "test mp_child ... ").
fn wait_for(lines: &mut impl Iterator<Item = String>, want: &str) {
    for line in lines.by_ref() {
        if line.ends_with(want) {
            return;
        }
    }
    panic!("the child ended before saying {want}");
}

fn lines(child: &mut Child) -> impl Iterator<Item = String> + use<> {
    BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
}

fn new_store(place: &Place) -> std::path::PathBuf {
    let path = place.addr("mp.sealkv");
    drop(Store::create(&path, passphrase("pw"), fast_opts()).unwrap());
    path
}

#[test]
fn two_writer_processes_and_this_one_lose_nothing() {
    each_engine(|place| {
        let path = new_store(place);
        let mut a = spawn(
            "writer",
            &path,
            &[("SEALKV_MP_PREFIX", "a"), ("SEALKV_MP_COUNT", "150")],
        );
        let mut b = spawn(
            "writer",
            &path,
            &[("SEALKV_MP_PREFIX", "b"), ("SEALKV_MP_COUNT", "150")],
        );
        let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
        for i in 0..100 {
            store
                .put("n", &format!("c{i}"), format!("c{i}").into_bytes())
                .unwrap();
        }
        assert!(a.wait().unwrap().success());
        assert!(b.wait().unwrap().success());
        // This process reads what the others committed, without reopening.
        assert_eq!(store.count("n").unwrap(), 400);
        for p in ["a", "b", "c"] {
            let v = store.get_one("n", &format!("{p}7")).unwrap().unwrap();
            assert_eq!(&v[..], format!("{p}7").as_bytes());
        }
        assert!(store.verify().unwrap().is_empty());
    });
}

#[test]
fn a_transaction_lock_key_excludes_another_process() {
    each_engine(|place| {
        let path = new_store(place);
        let mut holder = spawn("holder", &path, &[]);
        let mut out = lines(&mut holder);
        wait_for(&mut out, "HOLDING");
        // Another lock key goes through at once; the held one times out.
        let quick = Options {
            lock_timeout: Duration::from_millis(300),
            ..fast_opts()
        };
        let store = Store::open(&path, passphrase("pw"), quick).unwrap();
        store
            .transaction("another-key", |tx| {
                tx.put("n", "other", b"1".to_vec());
                Ok::<_, Error>(())
            })
            .unwrap();
        let started = Instant::now();
        let err = store
            .transaction("shared-key", |tx| {
                tx.put("n", "waiter", b"1".to_vec());
                Ok::<_, Error>(())
            })
            .unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(store.get_one("n", "waiter").unwrap().is_none());
        assert!(!err.to_string().contains("shared-key"), "{err}");
        // A patient waiter gets the lock once the holder commits, and sees its write.
        let patient = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
        let waiter = std::thread::spawn(move || {
            patient
                .transaction("shared-key", |tx| {
                    let seen = tx.get("n", &["holder"])?.len();
                    tx.put("n", "waiter", b"1".to_vec());
                    Ok::<_, Error>(seen)
                })
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !waiter.is_finished(),
            "the lock did not exclude the other process"
        );
        holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
        wait_for(&mut out, "RELEASED");
        assert_eq!(
            waiter.join().unwrap(),
            1,
            "the waiter ran before the holder committed"
        );
        assert!(holder.wait().unwrap().success());
    });
}

#[test]
fn rotation_and_rekey_in_one_process_reach_a_writing_one() {
    each_engine(|place| {
        let path = new_store(place);
        let mut writer = spawn(
            "writer",
            &path,
            &[("SEALKV_MP_PREFIX", "w"), ("SEALKV_MP_COUNT", "400")],
        );
        let mut out = lines(&mut writer);
        wait_for(&mut out, "READY");
        let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
        let old = store.stats().unwrap().keys[0].id;
        // Rotate, re-encrypt everything, destroy the old key, change the passphrase: all
        // while the other process writes.
        let new = store.rotate().unwrap();
        store.reencrypt(50, |_| {}).unwrap();
        store.rekey(passphrase("new pw")).unwrap();
        wait_for(&mut out, "DONE");
        assert!(
            writer.wait().unwrap().success(),
            "the writer failed after the key changes"
        );
        // Whatever the writer sealed before it saw the rotation is re-encrypted now.
        store.reencrypt(50, |_| {}).unwrap();
        store.destroy_key(old).unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(
            stats.values_per_key.get(&old),
            None,
            "a value is still under the old key"
        );
        assert!(stats.values_per_key[&new] >= 400);
        assert!(store.verify().unwrap().is_empty());
        assert_eq!(store.count("n").unwrap(), 400);
        drop(store);
        assert!(matches!(
            Store::open(&path, passphrase("pw"), fast_opts()),
            Err(Error::WrongKey)
        ));
        let reopened = Store::open(&path, passphrase("new pw"), fast_opts()).unwrap();
        assert_eq!(
            &reopened.get_one("n", "w399").unwrap().unwrap()[..],
            b"w399"
        );
    });
}

#[test]
fn a_process_never_seals_under_a_key_another_destroyed() {
    each_engine(|place| {
        let path = new_store(place);
        // This process opens first and keeps its keyring (key 1 primary).
        let stale = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
        stale.put("n", "before", b"1".to_vec()).unwrap();
        // Another process rotates, re-encrypts and destroys key 1.
        let mut rotator = spawn("rotate-destroy", &path, &[]);
        assert!(rotator.wait().unwrap().success());
        // Before writing, a scan already sees the other process's keys.
        assert!(stale.verify().unwrap().is_empty());
        assert_eq!(stale.stats().unwrap().keys.len(), 2);
        // This process writes and reads on: its write is sealed under the new key.
        stale.put("n", "after", b"2".to_vec()).unwrap();
        let stats = stale.stats().unwrap();
        assert_eq!(
            stats.values_per_key.get(&1),
            None,
            "{:?}",
            stats.values_per_key
        );
        assert_eq!(&stale.get_one("n", "before").unwrap().unwrap()[..], b"1");
        assert_eq!(&stale.get_one("n", "after").unwrap().unwrap()[..], b"2");
        assert!(stale.verify().unwrap().is_empty());
    });
}

#[test]
fn a_backup_taken_while_another_process_writes_is_consistent() {
    each_engine(|place| {
        let path = new_store(place);
        let mut writer = spawn(
            "writer",
            &path,
            &[("SEALKV_MP_PREFIX", "w"), ("SEALKV_MP_COUNT", "300")],
        );
        let mut out = lines(&mut writer);
        wait_for(&mut out, "READY");
        let store = Store::open_read_only(&path, passphrase("pw"), fast_opts()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let backup = place.dir.path().join("backup.sealkv");
        store.backup(&backup).unwrap();
        wait_for(&mut out, "DONE");
        assert!(writer.wait().unwrap().success());
        let copy = Store::open(&backup, passphrase("pw"), fast_opts()).unwrap();
        assert!(copy.verify().unwrap().is_empty());
        // A prefix of the writer's commits: w0..wN, nothing after a gap.
        let n = copy.count("n").unwrap();
        let keys: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        assert_eq!(
            copy.get("n", &keys).unwrap().len() as u64,
            n,
            "the backup is not a prefix"
        );
        assert_eq!(
            store.count("n").unwrap(),
            300,
            "the reader follows the writer"
        );
    });
}

#[test]
fn compaction_waits_for_the_store_to_itself() {
    let place = Place::new(None);
    let path = new_store(&place);
    let a = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    a.put("n", "k", b"v".to_vec()).unwrap();
    // Another process has it open: replacing the file would strand its writes.
    let mut holder = spawn("holder", &path, &[]);
    let mut out = lines(&mut holder);
    wait_for(&mut out, "HOLDING");
    let err = a.compact().unwrap_err();
    assert!(matches!(err, Error::NotAlone), "{err:?}");
    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_for(&mut out, "RELEASED");
    assert!(holder.wait().unwrap().success());
    // Alone again: it compacts, and writes from a process opened afterwards land in the
    // new file.
    a.compact().unwrap();
    let b = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    b.put("n", "after", b"1".to_vec()).unwrap();
    assert_eq!(&a.get_one("n", "after").unwrap().unwrap()[..], b"1");
    assert_eq!(a.count("n").unwrap(), 3);
    assert!(a.verify().unwrap().is_empty());
}

/// A commit whose last fsync failed is visible after the file is reopened. Its retry
/// must find it, not write it again over a newer commit another process made meanwhile.
#[test]
fn a_commit_whose_fsync_failed_is_not_replayed_over_another_processs_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let state = std::sync::Arc::new(FaultState::default());
    let a = Store::create(
        &path,
        passphrase("pw"),
        Options {
            commit_retries: 2,
            commit_retry_delay: Duration::from_millis(1500),
            // redb's multi-writer mode, where every process writes the file itself
            // (the owner mode has its own test in tests/owner.rs).
            concurrency: Concurrency::MultiWriter,
            ..faulty_opts(state.clone())
        },
    )
    .unwrap();
    // How many writes and syncs a commit takes: in redb's shared mode, the one before
    // the last is the sync that makes the commit durable (checked below).
    state.arm(u64::MAX, false);
    a.put("n", "warm-up", b"x".to_vec()).unwrap();
    let per_commit = state.ops.load(std::sync::atomic::Ordering::SeqCst);
    state.arm(per_commit - 1, false);
    let writer = std::thread::spawn(move || {
        let r = a.put("n", "k0", b"from A".to_vec());
        (a, r)
    });
    let end = Instant::now() + Duration::from_secs(10);
    while state.failures.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < end, "the fault never fired");
        std::thread::sleep(Duration::from_millis(5));
    }
    state.disarm();
    assert_eq!(
        state.first_kind.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a sync failed"
    );
    // While A waits to retry, another process writes k0 and is acknowledged.
    let mut child = spawn(
        "writer",
        &path,
        &[("SEALKV_MP_PREFIX", "k"), ("SEALKV_MP_COUNT", "1")],
    );
    assert!(child.wait().unwrap().success());
    let (a, result) = writer.join().unwrap();
    result.unwrap();
    assert_eq!(
        a.get_one("n", "k0").unwrap().unwrap().to_vec(),
        b"k0".to_vec(),
        "the other process's acknowledged write survives"
    );
    assert!(!a.is_poisoned());
    assert!(a.verify().unwrap().is_empty());
}
