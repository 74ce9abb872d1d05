//! The default shared mode: the first process to open a file owns it and serves the
//! others over its socket; when the owner exits or dies, another process takes over.
//! Real child processes, killed with SIGKILL where the test says so.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use sealkv_engine::{Concurrency, Error, Store};

const CHILD: &str = "SEALKV_OWNER_CHILD";
const PATH: &str = "SEALKV_OWNER_PATH";

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// One increment of the shared counter, with a key of its own (`<name>-<i>`), in one
/// transaction under the counter's lock key.
fn increment(store: &Store, name: &str, i: usize) -> Result<(), Error> {
    store.transaction("total", |tx| {
        let now = tx.get("c", &["total"])?;
        let n: u64 = now
            .get("total")
            .map(|v| String::from_utf8_lossy(v).parse().unwrap())
            .unwrap_or(0);
        tx.put("c", "total", (n + 1).to_string().into_bytes());
        tx.put("c", &format!("{name}-{i}"), b"1".to_vec());
        Ok::<_, Error>(())
    })
}

/// The child's entry point: does nothing unless started by a test below.
#[test]
fn owner_child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let path = std::env::var(PATH).unwrap();
    let name = std::env::var("SEALKV_OWNER_NAME").unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    say(format!("READY {}", store.is_owner()));
    match mode.as_str() {
        // Increments the shared counter until killed, told to stop (a second line on
        // stdin) or done, saying each time one was acknowledged (and each failure, by
        // kind).
        "counter" => {
            let count: usize = std::env::var("SEALKV_OWNER_COUNT")
                .unwrap()
                .parse()
                .unwrap();
            // All start together, on a line from the test.
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).unwrap();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let told = stop.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                told.store(true, std::sync::atomic::Ordering::Release);
            });
            for i in 0..count {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                match increment(&store, &name, i) {
                    Ok(()) => say(format!("ACK {i} {}", now_micros())),
                    Err(e) => say(format!("ERR {i} {}", e.code())),
                }
            }
            say(format!("DONE {}", store.is_owner()));
        }
        // Writes one value, then waits for its stdin to close before closing the store.
        "hold" => {
            store.put("n", &name, b"from the owner".to_vec()).unwrap();
            say("WROTE".into());
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(store);
            say("CLOSED".into());
        }
        // Reads a value and says what it found.
        "read" => {
            let v = store.get_one("n", &name).unwrap();
            say(format!(
                "VALUE {}",
                v.map_or("none".into(), |v| String::from_utf8_lossy(&v).into_owned())
            ));
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn(mode: &str, path: &Path, name: &str, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "owner_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env(PATH, path)
        .env("SEALKV_OWNER_NAME", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The child's output lines, read on a thread (so a test can wait with a deadline).
fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            // The test harness starts the child's first line with its own words.
            let line = match line.split_once("owner_child ... ") {
                Some((_, ours)) => ours.to_owned(),
                None => line,
            };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &std::sync::mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line starting {prefix:?}"));
        if line.starts_with(prefix) {
            return line;
        }
    }
}

fn new_store(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let store = Store::create(&path, passphrase("pw"), fast_opts()).unwrap();
    assert_eq!(store.concurrency(), Concurrency::Shared);
    assert!(store.is_owner(), "the creator owns the file");
    path
}

fn socket_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

#[test]
fn a_second_handle_is_served_by_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let owner = Store::create(&path, passphrase("pw"), fast_opts()).unwrap();
    owner.put("n", "a", b"1".to_vec()).unwrap();
    let client = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    assert!(owner.is_owner() && !client.is_owner());
    assert_eq!(&client.get_one("n", "a").unwrap().unwrap()[..], b"1");
    client.put("n", "b", b"2".to_vec()).unwrap();
    assert_eq!(&owner.get_one("n", "b").unwrap().unwrap()[..], b"2");
    // Listings, counts, scans and verify go through the socket too.
    for i in 0..1200 {
        client
            .put("many", &format!("k{i:04}"), vec![7; 100])
            .unwrap();
    }
    assert_eq!(client.count("many").unwrap(), 1200);
    assert_eq!(client.list("many").unwrap().len(), 1200);
    assert!(client.verify().unwrap().is_empty());
    assert!(owner.verify().unwrap().is_empty());
    // A wrong passphrase is refused by the client itself (the owner's greeting
    // carries the key slots, as the file does), and the owner serves on.
    assert!(matches!(
        Store::open(&path, passphrase("wrong"), fast_opts()),
        Err(Error::WrongKey)
    ));
    assert_eq!(&client.get_one("n", "a").unwrap().unwrap()[..], b"1");
    // The socket is the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(socket_of(&path))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// A client's idle connection holds no snapshot on the owner: otherwise redb keeps
/// every page the owner's later commits free (they may still be read through it), and
/// the file grows with each commit (and each commit gets slower).
#[test]
fn an_idle_client_pins_no_pages_of_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let owner = Store::create(&path, passphrase("pw"), fast_opts()).unwrap();
    owner.put("n", "a", vec![1; 4000]).unwrap();
    let client = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    assert!(!client.is_owner());
    // Reads through the socket, then the client goes idle.
    assert_eq!(client.get_one("n", "a").unwrap().unwrap().len(), 4000);
    assert_eq!(client.count("n").unwrap(), 1);
    let before = std::fs::metadata(&path).unwrap().len();
    for i in 0..3000u32 {
        owner.put("n", "a", vec![i as u8; 4000]).unwrap();
    }
    drop(owner);
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(
        after < before + (4 << 20),
        "the file grew from {before} to {after} bytes rewriting one value"
    );
    drop(client);
}

/// The owner is SIGKILLed while it and two clients increment one counter under one
/// lock key, each increment acknowledged to its process: afterwards every
/// acknowledged increment is there, none is applied twice (a replayed commit would
/// set the counter back over another process's increment), and the clients were
/// served again within moments.
#[test]
fn an_owner_killed_mid_commit_loses_no_acknowledged_write_and_applies_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = new_store(dir.path(), "s.sealkv");
    // The clients run until told to stop once each was served after the kill (a fixed
    // count let a client favoured by the unfair lock key finish before the kill).
    let count = "1000000";
    let mut owner = spawn("counter", &path, "o", &[("SEALKV_OWNER_COUNT", count)]);
    let owner_out = lines(&mut owner);
    assert_eq!(wait_for(&owner_out, "READY"), "READY true");
    let mut clients: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let mut child = spawn("counter", &path, name, &[("SEALKV_OWNER_COUNT", count)]);
            let out = lines(&mut child);
            assert_eq!(wait_for(&out, "READY"), "READY false");
            (child, out)
        })
        .collect();
    for child in std::iter::once(&mut owner).chain(clients.iter_mut().map(|(c, _)| c)) {
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    // Let them all write a while, then kill the owner, wherever it is. The lines
    // read meanwhile are kept for the count below.
    let mut before: Vec<Vec<String>> = Vec::new();
    for (_, out) in &clients {
        let mut seen = Vec::new();
        loop {
            let line = out.recv_timeout(Duration::from_secs(60)).unwrap();
            // The lock key is not fair (waiters poll): one process may run far
            // ahead of another. Each has been served a few times.
            let enough = line.starts_with("ACK 5 ");
            seen.push(line);
            if enough {
                break;
            }
        }
        before.push(seen);
    }
    let mut owner_acks: Vec<usize> = Vec::new();
    owner.kill().unwrap();
    let killed = now_micros();
    owner.wait().unwrap();
    // Every line it wrote (the reader stops at the end of its output).
    for line in owner_out.iter() {
        if let Some(rest) = line.strip_prefix("ACK ") {
            owner_acks.push(rest.split(' ').next().unwrap().parse().unwrap());
        }
    }
    let mut acked: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut uncertain = 0usize;
    let mut first_after: Vec<u128> = Vec::new();
    let mut took_over = 0;
    for (((child, out), name), seen) in clients.iter_mut().zip(["a", "b"]).zip(before) {
        let mut mine = Vec::new();
        let mut first = None;
        let mut seen = seen.into_iter();
        loop {
            let line = match seen.next() {
                Some(line) => line,
                None => out.recv_timeout(Duration::from_secs(120)).unwrap(),
            };
            if let Some(rest) = line.strip_prefix("ACK ") {
                let mut parts = rest.split(' ');
                mine.push(parts.next().unwrap().parse().unwrap());
                let at: u128 = parts.next().unwrap().parse().unwrap();
                if at > killed && first.is_none() {
                    first = Some(at - killed);
                    // Served after the kill: a few more, then stop.
                    child.stdin.as_mut().unwrap().write_all(b"stop\n").unwrap();
                }
            } else if let Some(rest) = line.strip_prefix("ERR ") {
                // Only a commit whose outcome the owner's death left unknown may fail,
                // or a transaction whose lock key was held on the dead owner (not
                // applied: the new owner does not hold it).
                eprintln!("{name}: {line}");
                if rest.ends_with("commit_failed") {
                    uncertain += 1;
                } else {
                    assert!(rest.ends_with("lock_lost"), "{line}");
                }
            } else if let Some(owner) = line.strip_prefix("DONE ") {
                took_over += usize::from(owner == "true");
                break;
            }
        }
        assert!(child.wait().unwrap().success());
        let last = mine.last().copied();
        first_after.push(
            first.unwrap_or_else(|| panic!("{name} served after the kill (last ack {last:?})")),
        );
        acked.insert(name, mine);
    }
    // One took over from the killed owner; the other from it, if it finished first.
    assert!(took_over >= 1, "a client took over");
    let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    let total: u64 = String::from_utf8_lossy(&store.get_one("c", "total").unwrap().unwrap())
        .parse()
        .unwrap();
    let acknowledged = (owner_acks.len() + acked.values().map(Vec::len).sum::<usize>()) as u64;
    // The owner may have died with one increment committed but not acknowledged.
    assert!(
        total >= acknowledged && total <= acknowledged + uncertain as u64 + 1,
        "counter {total}, acknowledged {acknowledged}, uncertain {uncertain}"
    );
    for (name, list) in acked.iter().chain([(&"o", &owner_acks)]) {
        for i in list {
            assert!(
                store
                    .get_one("c", &format!("{name}-{i}"))
                    .unwrap()
                    .is_some(),
                "{name}-{i} was acknowledged and is gone"
            );
        }
    }
    assert!(store.verify().unwrap().is_empty());
    // Takeover: the store serves again within a second of the SIGKILL (measured
    // here: the first write 1 to 100 ms after it). A client's own first write may come
    // later: the lock key is not fair, and the other may hold it for a while.
    let served = first_after.iter().min().unwrap();
    eprintln!("first acknowledged write after the kill, per client: {first_after:?} µs");
    assert!(*served < 1_000_000, "takeover took {served} µs");
}

#[test]
fn an_owner_that_closes_hands_the_store_to_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = new_store(dir.path(), "s.sealkv");
    let mut owner = spawn("hold", &path, "k", &[]);
    let out = lines(&mut owner);
    assert_eq!(wait_for(&out, "READY"), "READY true");
    wait_for(&out, "WROTE");
    let client = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    assert!(!client.is_owner());
    assert_eq!(
        &client.get_one("n", "k").unwrap().unwrap()[..],
        b"from the owner"
    );
    drop(owner.stdin.take());
    wait_for(&out, "CLOSED");
    assert!(owner.wait().unwrap().success());
    assert!(!socket_of(&path).exists() || client.is_owner());
    // The next call finds the owner gone and takes over.
    client.put("n", "after", b"1".to_vec()).unwrap();
    assert!(client.is_owner());
    assert!(socket_of(&path).exists());
    let mut reader = spawn("read", &path, "after", &[]);
    let out = lines(&mut reader);
    assert_eq!(wait_for(&out, "READY"), "READY false");
    assert_eq!(wait_for(&out, "VALUE"), "VALUE 1");
    assert!(reader.wait().unwrap().success());
}

#[test]
fn a_socket_left_by_a_killed_owner_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = new_store(dir.path(), "s.sealkv");
    let mut owner = spawn("hold", &path, "k", &[]);
    let out = lines(&mut owner);
    wait_for(&out, "WROTE");
    owner.kill().unwrap();
    owner.wait().unwrap();
    assert!(socket_of(&path).exists(), "a dead owner leaves its socket");
    let store = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    assert!(store.is_owner());
    assert_eq!(
        &store.get_one("n", "k").unwrap().unwrap()[..],
        b"from the owner"
    );
    let mut reader = spawn("read", &path, "k", &[]);
    let out = lines(&mut reader);
    assert_eq!(wait_for(&out, "READY"), "READY false");
    assert_eq!(wait_for(&out, "VALUE"), "VALUE from the owner");
    assert!(reader.wait().unwrap().success());
}

#[test]
fn two_stores_in_one_folder_have_their_own_owners() {
    let dir = tempfile::tempdir().unwrap();
    let a = new_store(dir.path(), "a.sealkv");
    let b = new_store(dir.path(), "b.sealkv");
    let mut owners: Vec<_> = [(&a, "in-a"), (&b, "in-b")]
        .iter()
        .map(|(path, name)| {
            let mut child = spawn("hold", path, name, &[]);
            let out = lines(&mut child);
            assert_eq!(wait_for(&out, "READY"), "READY true");
            wait_for(&out, "WROTE");
            (child, out)
        })
        .collect();
    let sa = Store::open(&a, passphrase("pw"), fast_opts()).unwrap();
    let sb = Store::open(&b, passphrase("pw"), fast_opts()).unwrap();
    assert!(!sa.is_owner() && !sb.is_owner());
    assert!(sa.get_one("n", "in-a").unwrap().is_some());
    assert!(sa.get_one("n", "in-b").unwrap().is_none());
    assert!(sb.get_one("n", "in-b").unwrap().is_some());
    assert!(sb.get_one("n", "in-a").unwrap().is_none());
    sa.put("n", "x", b"a".to_vec()).unwrap();
    sb.put("n", "x", b"b".to_vec()).unwrap();
    assert_eq!(&sa.get_one("n", "x").unwrap().unwrap()[..], b"a");
    assert_eq!(&sb.get_one("n", "x").unwrap().unwrap()[..], b"b");
    assert_ne!(sa.id_hex(), sb.id_hex());
    for (child, out) in &mut owners {
        drop(child.stdin.take());
        wait_for(out, "CLOSED");
        assert!(child.wait().unwrap().success());
    }
}

/// A store created in the multi-writer mode (every store before the owner mode)
/// opens in it while another process has it so, and moves to the owner mode, in an
/// authenticated record, when a process opens it alone.
#[test]
fn a_multi_writer_store_moves_to_the_owner_mode_when_opened_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sealkv");
    let multi = sealkv_engine::Options {
        concurrency: Concurrency::MultiWriter,
        ..fast_opts()
    };
    let first = Store::create(&path, passphrase("pw"), multi.clone()).unwrap();
    first.put("n", "k", b"v".to_vec()).unwrap();
    // Held in the multi-writer mode: a default open joins it.
    let second = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    assert_eq!(second.concurrency(), Concurrency::MultiWriter);
    assert!(!second.is_owner());
    drop((first, second));
    // Asked for the multi-writer mode, it stays.
    let kept = Store::open(&path, passphrase("pw"), multi).unwrap();
    assert_eq!(kept.concurrency(), Concurrency::MultiWriter);
    drop(kept);
    // Opened alone with the default: it moves.
    let moved = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    assert_eq!(moved.concurrency(), Concurrency::Shared);
    assert!(moved.is_owner());
    let client = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    assert_eq!(client.concurrency(), Concurrency::Shared);
    assert_eq!(&client.get_one("n", "k").unwrap().unwrap()[..], b"v");
    drop((moved, client));
    let again = Store::open_read_only(&path, passphrase("pw"), fast_opts()).unwrap();
    assert_eq!(again.concurrency(), Concurrency::Shared);
    assert!(again.verify().unwrap().is_empty());
}

/// An exclusive store held by one process is refused to another with `Locked`, as
/// before the owner mode: nobody serves it.
#[test]
fn an_exclusive_store_in_use_is_still_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.sealkv");
    let opts = sealkv_engine::Options {
        concurrency: Concurrency::Exclusive,
        ..fast_opts()
    };
    let held = Store::create(&path, passphrase("pw"), opts).unwrap();
    assert!(!held.is_owner());
    assert!(matches!(
        Store::open(&path, passphrase("pw"), fast_opts()),
        Err(Error::Locked(_))
    ));
    assert!(matches!(
        Store::open_read_only(&path, passphrase("pw"), fast_opts()),
        Err(Error::Locked(_))
    ));
}
