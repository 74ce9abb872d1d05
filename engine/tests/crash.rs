//! Crash consistency by SIGKILL: a child process runs durable work and prints each
//! acknowledged commit; the parent kills it at a random moment, reopens the store and
//! checks that every acknowledged commit is there, nothing is half-applied, and
//! verify() is clean. Workloads: multi-namespace sets and per-key transactions,
//! re-encryption after rotation (resumed after every kill), and rekey.
//!
//! CI runs 30 + 20 + 10 kills. Long mode: `SEALKV_CRASH_ROUNDS=50 cargo test --release
//! -p sealkv-engine --test crash` multiplies the kills by 50.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use sealkv_engine::{Batch, Error, Store};

const CHILD: &str = "SEALKV_CRASH_CHILD";
const PATH: &str = "SEALKV_CRASH_PATH";

fn rounds(base: usize) -> usize {
    base * std::env::var("SEALKV_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The child's entry point: does nothing unless started by a parent below.
#[test]
fn crash_child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let path = std::env::var(PATH).unwrap();
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        "writes" => {
            let store = Store::open(&path, key(), fast_opts()).unwrap();
            let start: u64 = store.count("a").unwrap();
            for i in start.. {
                if i % 2 == 0 {
                    let mut b = Batch::new();
                    b.put("a", &i.to_string(), i.to_le_bytes().to_vec())
                        .put("b", &i.to_string(), vec![i as u8; 700])
                        .put("meta", "last", i.to_le_bytes().to_vec());
                    store.set(&b).unwrap();
                } else {
                    store
                        .transaction(&format!("lock{}", i % 3), |tx| {
                            tx.put("a", &i.to_string(), i.to_le_bytes().to_vec());
                            tx.put("b", &i.to_string(), vec![i as u8; 700]);
                            tx.put("meta", "last", i.to_le_bytes().to_vec());
                            Ok::<_, Error>(())
                        })
                        .unwrap();
                }
                writeln!(out, "ACK {i}").unwrap();
                out.flush().unwrap();
            }
        }
        "reencrypt" => {
            let store = Store::open(&path, key(), fast_opts()).unwrap();
            writeln!(out, "OPEN").unwrap();
            out.flush().unwrap();
            store
                .reencrypt(25, |p| {
                    writeln!(out, "BATCH {}", p.resealed).unwrap();
                    out.flush().unwrap();
                })
                .unwrap();
            writeln!(out, "DONE").unwrap();
            out.flush().unwrap();
        }
        "rekey" => {
            let mut current = std::env::var("SEALKV_CRASH_SECRET").unwrap();
            let store = Store::open(&path, passphrase(&current), fast_opts()).unwrap();
            loop {
                let next = if current == "alpha" { "beta" } else { "alpha" };
                store.rekey(passphrase(next)).unwrap();
                current = next.to_string();
                writeln!(out, "ACK {current}").unwrap();
                out.flush().unwrap();
            }
        }
        "drop-sessions" => {
            let store = Store::open(&path, key(), fast_opts()).unwrap();
            for s in 0..DROP_SESSIONS {
                store.drop_session(&format!("bot-{s}")).unwrap();
                writeln!(out, "ACK {s}").unwrap();
                out.flush().unwrap();
            }
            writeln!(out, "DONE").unwrap();
            out.flush().unwrap();
        }
        "sweep" => {
            let store = Store::open(&path, key(), later_opts()).unwrap();
            writeln!(out, "OPEN").unwrap();
            out.flush().unwrap();
            let n = store.sweep().unwrap();
            writeln!(out, "DONE {n}").unwrap();
            out.flush().unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
}

const DROP_SESSIONS: usize = 6;
const PER_SESSION: usize = 400;
const EXPIRING: usize = 4000;
/// The clock of the sweep test: values are written at `T0` to live an hour, and swept at
/// `T0` + 10 hours.
const T0: u64 = 1_700_000_000;

fn clock_opts(now: u64) -> sealkv_engine::Options {
    sealkv_engine::Options {
        clock: std::sync::Arc::new(move || now),
        ..fast_opts()
    }
}

fn later_opts() -> sealkv_engine::Options {
    clock_opts(T0 + 36_000)
}

fn spawn(mode: &str, path: &Path, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env(PATH, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Reads the child's lines for `run_for`, then SIGKILLs it. Returns the lines seen.
fn run_and_kill(mut child: Child, run_for: Duration) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + run_for;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
    reader.join().unwrap()
}

/// Reads the child's lines until `count` of them start with `prefix`, waits `then`,
/// and SIGKILLs it (unless it ended first). Returns the lines seen.
fn kill_after_lines(mut child: Child, prefix: &str, count: usize, then: Duration) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    let mut matched = 0;
    while matched < count {
        let Some(line) = lines.next() else { break };
        matched += usize::from(line.starts_with(prefix));
        seen.push(line);
    }
    std::thread::sleep(then);
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
    seen.extend(lines);
    seen
}

#[test]
fn killed_writers_lose_no_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sealkv");
    drop(Store::create(&path, key(), fast_opts()).unwrap());
    let mut rng = rand::rng();
    let mut acked_max: Option<u64> = None;
    let kills = rounds(30);
    for round in 0..kills {
        let lines = run_and_kill(
            spawn("writes", &path, &[]),
            Duration::from_millis(rng.random_range(20..250)),
        );
        for l in &lines {
            if let Some(n) = l.strip_prefix("ACK ") {
                let n: u64 = n.parse().unwrap();
                acked_max = Some(acked_max.map_or(n, |m| m.max(n)));
            }
        }
        let store = Store::open(&path, key(), fast_opts()).unwrap();
        assert!(
            store.verify().unwrap().is_empty(),
            "round {round}: verify failed"
        );
        let a = store.list("a").unwrap();
        let b = store.list("b").unwrap();
        assert_eq!(a, b, "round {round}: a transaction was half-applied");
        let present = a.len() as u64;
        if let Some(max) = acked_max {
            assert!(
                present > max,
                "round {round}: acknowledged commit {max} lost ({present} present)"
            );
            let last = store.get("meta", &["last"]).unwrap();
            let last = u64::from_le_bytes(last["last"][..8].try_into().unwrap());
            assert!(
                last >= max,
                "round {round}: meta/last {last} behind ack {max}"
            );
        }
        // Values are whole: every present key holds its own number.
        let keys: Vec<String> = (0..present).map(|i| i.to_string()).collect();
        let got = store.get("a", &keys).unwrap();
        assert_eq!(
            got.len() as u64,
            present,
            "round {round}: keys are not 0..n"
        );
        for (k, v) in got {
            assert_eq!(
                u64::from_le_bytes(v[..8].try_into().unwrap()).to_string(),
                k
            );
        }
    }
    assert!(
        acked_max.unwrap_or(0) > 10,
        "the children acknowledged commits"
    );
    println!(
        "{kills} kills; {} acknowledged commits all present",
        acked_max.unwrap_or(0) + 1
    );
}

#[test]
fn killed_reencryption_resumes_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sealkv");
    let values = 3000;
    {
        let store = Store::create(&path, key(), fast_opts()).unwrap();
        let mut b = Batch::new();
        for i in 0..values {
            b.put(
                &format!("ns{}", i % 4),
                &format!("k{i}"),
                format!("value-{i}-").repeat(30).into_bytes(),
            );
        }
        store.set(&b).unwrap();
        store.rotate().unwrap();
    }
    let mut rng = rand::rng();
    let kills = rounds(20);
    let mut completed_runs = 0;
    let mut interrupted = 0;
    for round in 0..kills {
        // Killed after a random number of committed batches (of about 120) plus a
        // random moment inside the next one: mid-job however fast the machine is.
        let lines = kill_after_lines(
            spawn("reencrypt", &path, &[]),
            "BATCH",
            rng.random_range(0..60),
            Duration::from_micros(rng.random_range(0..4000)),
        );
        let done = lines.iter().any(|l| l == "DONE");
        if !done {
            interrupted += 1;
        }
        let store = Store::open(&path, key(), fast_opts()).unwrap();
        assert!(store.verify().unwrap().is_empty(), "round {round}");
        assert_eq!(
            store.count("ns1").unwrap(),
            values as u64 / 4,
            "round {round}"
        );
        let probe = store.get("ns3", &["k7"]).unwrap();
        assert_eq!(&probe["k7"][..], "value-7-".repeat(30).as_bytes());
        if done {
            completed_runs += 1;
            let per_key = store.stats().unwrap().values_per_key;
            assert_eq!(
                per_key.len(),
                1,
                "round {round}: done, yet values under old keys: {per_key:?}"
            );
            store.rotate().unwrap(); // next round re-encrypts again
        }
    }
    // Finish whatever is in flight and check the end state.
    let store = Store::open(&path, key(), fast_opts()).unwrap();
    store.reencrypt(100, |_| {}).unwrap();
    assert_eq!(store.stats().unwrap().values_per_key.len(), 1);
    assert!(store.verify().unwrap().is_empty());
    assert!(
        interrupted >= kills / 2,
        "most runs were killed mid-way ({interrupted}/{kills})"
    );
    println!("{kills} kills, {interrupted} mid-re-encryption, {completed_runs} runs completed");
}

#[test]
fn killed_rekey_leaves_exactly_one_valid_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.sealkv");
    {
        let store = Store::create(&path, passphrase("alpha"), fast_opts()).unwrap();
        store.put("n", "k", b"v".to_vec()).unwrap();
    }
    let mut current = "alpha".to_string();
    let mut rng = rand::rng();
    let mut moved = 0;
    for round in 0..rounds(10) {
        let lines = run_and_kill(
            spawn("rekey", &path, &[("SEALKV_CRASH_SECRET", &current)]),
            Duration::from_millis(rng.random_range(20..200)),
        );
        let rekeys = lines.iter().filter(|l| l.starts_with("ACK ")).count();
        let a = Store::open(&path, passphrase("alpha"), fast_opts());
        let a_ok = a.is_ok();
        drop(a);
        let b = Store::open(&path, passphrase("beta"), fast_opts());
        let b_ok = b.is_ok();
        drop(b);
        assert!(a_ok ^ b_ok, "round {round}: alpha {a_ok}, beta {b_ok}");
        let valid = if a_ok { "alpha" } else { "beta" };
        // With an even number of acknowledged rekeys the secret we started with, or the
        // other one if one more rekey committed before its acknowledgement: either way
        // exactly one, which the assertion above checks. Count rounds that moved.
        moved += usize::from(rekeys > 0);
        let store = Store::open(&path, passphrase(valid), fast_opts()).unwrap();
        assert_eq!(&store.get("n", &["k"]).unwrap()["k"][..], b"v");
        current = valid.to_string();
    }
    assert!(
        moved > 0,
        "some children completed rekeys before being killed"
    );
}

#[test]
fn a_killed_drop_session_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sealkv");
    let mut rng = rand::rng();
    for round in 0..rounds(6) {
        let _ = std::fs::remove_file(&path);
        {
            let store = Store::create(&path, key(), fast_opts()).unwrap();
            store
                .put("shared", "k", b"default session".to_vec())
                .unwrap();
            for s in 0..DROP_SESSIONS {
                let session = store.session(&format!("bot-{s}")).unwrap();
                let mut b = Batch::new();
                for i in 0..PER_SESSION {
                    b.put(
                        ["session", "pre-key"][i % 2],
                        &i.to_string(),
                        vec![s as u8; 300],
                    );
                }
                session.set(&b).unwrap();
            }
        }
        let lines = kill_after_lines(
            spawn("drop-sessions", &path, &[]),
            "ACK",
            rng.random_range(0..DROP_SESSIONS),
            Duration::from_millis(rng.random_range(0..15)),
        );
        let acked = lines.iter().filter(|l| l.starts_with("ACK")).count();
        let store = Store::open(&path, key(), fast_opts()).unwrap();
        assert!(store.verify().unwrap().is_empty(), "round {round}");
        assert_eq!(
            store.get_one("shared", "k").unwrap().unwrap().as_slice(),
            b"default session"
        );
        let mut listed = Vec::new();
        for s in 0..DROP_SESSIONS {
            let session = store.session(&format!("bot-{s}")).unwrap();
            let n = session.count("session").unwrap() + session.count("pre-key").unwrap();
            if s < acked {
                assert_eq!(n, 0, "round {round}: acknowledged drop of bot-{s} undone");
            }
            assert!(
                n == 0 || n == PER_SESSION as u64,
                "round {round}: bot-{s} half dropped ({n} values)"
            );
            if n > 0 {
                listed.push(format!("bot-{s}"));
            }
        }
        assert_eq!(store.sessions().unwrap(), listed, "round {round}");
    }
}

#[test]
fn a_killed_sweep_is_all_or_nothing_per_batch_and_finishes_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let mut rng = rand::rng();
    for round in 0..rounds(6) {
        let _ = std::fs::remove_file(&path);
        {
            let store = Store::create(&path, key(), clock_opts(T0)).unwrap();
            let mut b = Batch::new();
            for i in 0..EXPIRING {
                b.put_with_ttl(
                    "msg-secret",
                    &i.to_string(),
                    vec![7; 200],
                    Duration::from_secs(3600),
                );
                if i % 10 == 0 {
                    b.put("keep", &i.to_string(), vec![1; 50]);
                }
            }
            store.set(&b).unwrap();
        }
        let lines = kill_after_lines(
            spawn("sweep", &path, &[]),
            "OPEN",
            1,
            Duration::from_millis(rng.random_range(0..40)),
        );
        let finished = lines.iter().any(|l| l.starts_with("DONE"));
        let store = Store::open(&path, key(), later_opts()).unwrap();
        assert!(store.verify().unwrap().is_empty(), "round {round}");
        assert_eq!(
            store.count("msg-secret").unwrap(),
            0,
            "round {round}: expired values visible"
        );
        assert_eq!(
            store.count("keep").unwrap(),
            (EXPIRING / 10) as u64,
            "round {round}"
        );
        let rows = |store: &Store| -> u64 {
            store
                .stats()
                .unwrap()
                .namespaces
                .get("msg-secret")
                .map_or(0, |n| n.entries)
        };
        if finished {
            assert_eq!(rows(&store), 0, "round {round}: a finished sweep left rows");
        }
        // Whatever the kill left, a sweep after it removes every expired row: no row
        // lost its index entry while keeping its data.
        store.sweep().unwrap();
        assert_eq!(
            rows(&store),
            0,
            "round {round}: rows left after the second sweep"
        );
        assert_eq!(store.count("keep").unwrap(), (EXPIRING / 10) as u64);
    }
}
