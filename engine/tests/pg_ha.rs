//! A replicated PostgreSQL failing over under writers: a primary and a synchronous
//! standby from `scripts/pg-ha` (`SEALKV_TEST_PG_HA`, a two-host URL, and
//! `SEALKV_TEST_PG_HA_DIR`); skipped without them unless `SEALKV_REQUIRE_PG_HA` is set.
//!
//! - Writers in three processes (this one, the CLI, the Node package through
//!   `useSealedAuthState`) while the primary is SIGKILLed and the standby promoted, two
//!   rounds: every acknowledged write is there once, counters agree with their log
//!   rows (no stale batch replayed), every writer resumes within the failover bound.
//! - A commit caught in the synchronous wait when the primary dies (the standby's
//!   replication frozen through a proxy): acknowledged only if present on the new
//!   primary, applied once; a transaction whose lock key lived on the dead primary
//!   writes nothing.
//! - `sync_replicas`: accepted on the pair, refused by the lone promoted server,
//!   accepted again once the old primary follows it.
//!
//! The tests share the pair, one at a time, and leave it a primary with a synchronous
//! standby.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use proxy::Proxy;
use sealkv_engine::{Error, Options, Store};

/// The pair is one cluster: one test at a time.
static PAIR: Mutex<()> = Mutex::new(());

/// The longest a writer may take to resume after the primary is killed: the failover
/// timeout the stores use (a bound of the contract, not a performance figure).
const BOUND: Duration = Duration::from_secs(30);

struct Pair {
    /// The two-host URL, password included (never printed).
    url: String,
    dir: PathBuf,
    _one_at_a_time: MutexGuard<'static, ()>,
}

fn pair() -> Option<Pair> {
    let (url, dir) = match (
        std::env::var("SEALKV_TEST_PG_HA"),
        std::env::var("SEALKV_TEST_PG_HA_DIR"),
    ) {
        (Ok(u), Ok(d)) if !u.is_empty() && !d.is_empty() => (u, PathBuf::from(d)),
        _ => {
            assert!(
                std::env::var_os("SEALKV_REQUIRE_PG_HA").is_none(),
                "SEALKV_REQUIRE_PG_HA is set but SEALKV_TEST_PG_HA names no pair (scripts/pg-ha start)"
            );
            return None;
        }
    };
    let guard = PAIR.lock().unwrap_or_else(|p| p.into_inner());
    Some(Pair {
        url,
        dir,
        _one_at_a_time: guard,
    })
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Pair {
    /// Runs `scripts/pg-ha VERB DIR ARGS…` (or the script `SEALKV_TEST_PG_HA_SCRIPT`
    /// names: `scripts/ha-patroni` drives a Patroni cluster with the same verbs);
    /// returns what it prints.
    fn run(&self, verb: &str, args: &[&str]) -> String {
        let script = std::env::var_os("SEALKV_TEST_PG_HA_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("scripts/pg-ha"));
        let out = Command::new("bash")
            .arg(script)
            .arg(verb)
            .arg(&self.dir)
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/pg-ha {verb} {args:?} failed");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn sql(&self, node: &str, sql: &str) -> String {
        self.run("sql", &[node, sql])
    }

    /// The node that is the primary now.
    fn primary(&self) -> &'static str {
        for node in ["a", "b"] {
            let running =
                std::fs::read_to_string(self.dir.join(node).join("postmaster.pid")).is_ok();
            if running && self.sql(node, "SELECT pg_is_in_recovery()") == "f" {
                return node;
            }
        }
        panic!("the pair has no primary");
    }

    fn port(&self, node: &str) -> u16 {
        std::fs::read_to_string(self.dir.join(format!("{node}.port")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A store's URL on the pair, with more parameters.
    fn store(&self, name: &str, more: &str) -> String {
        format!("{}&store={name}_{}{more}", self.url, std::process::id())
    }

    /// Kills the primary with its backends, fences it, promotes the standby. Returns
    /// (old primary, new primary, the instant the primary was dead).
    fn fail_over(&self) -> (&'static str, &'static str, Instant) {
        let old = self.primary();
        let new = other(old);
        self.run("kill", &[old]);
        // From here the primary is dead: any acknowledgement after this is the new one's.
        let killed = Instant::now();
        self.run("fence", &[old]);
        self.run("promote", &[new]);
        eprintln!(
            "failed over from {old} to {new} in {:?} (kill to promoted)",
            killed.elapsed()
        );
        (old, new, killed)
    }

    /// The old primary becomes a synchronous standby of the new one.
    fn heal(&self, old: &str) {
        self.run("rebuild", &[old]);
    }
}

fn other(node: &str) -> &'static str {
    if node == "a" { "b" } else { "a" }
}

/// `url` without its password, and the password (for PGPASSWORD): child processes
/// never get it on their command line.
fn split_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (creds, rest) = rest.split_once('@').unwrap();
    let (user, password) = creds.split_once(':').unwrap();
    (format!("{scheme}://{user}@{rest}"), password.to_string())
}

fn opts() -> Options {
    Options {
        failover_timeout: BOUND,
        ..fast_opts()
    }
}

/// The acknowledgements of one writer: (number, when).
type Acks = Arc<Mutex<Vec<(u64, Instant)>>>;

fn count(acks: &Acks) -> usize {
    acks.lock().unwrap().len()
}

fn acked_after(acks: &Acks, t: Instant) -> Vec<(u64, Instant)> {
    acks.lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at > t)
        .copied()
        .collect()
}

fn wait(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hex_key() -> String {
    "5a".repeat(32)
}

/// The number in a Node log or counter value, `{"n":N}`.
fn node_n(v: &[u8]) -> u64 {
    let text = std::str::from_utf8(v).unwrap();
    text.trim_start_matches("{\"n\":")
        .trim_end_matches('}')
        .parse()
        .unwrap()
}

#[test]
fn writers_in_three_processes_ride_failovers_and_lose_nothing() {
    let Some(pair) = pair() else { return };
    let url = pair.store("ha_farm", "");
    let (plain_url, password) = split_password(&url);
    let store = Store::create(&url, key(), opts()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (rust_acks, cli_acks, node_acks): (Acks, Acks, Acks) = Default::default();

    // Rust: a counter and one log row per increment, under a lock key.
    let rust = {
        let (store, stop, acks) = (store.clone(), stop.clone(), rust_acks.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let round = store.transaction("rust-writer", |tx| {
                    let n = tx
                        .get("counter", &["rust"])?
                        .get("rust")
                        .map(|v| u64::from_le_bytes(v.as_slice().try_into().unwrap()))
                        .unwrap_or(0)
                        + 1;
                    tx.put("counter", "rust", n.to_le_bytes().to_vec());
                    tx.put("log", &format!("rust-{n}"), n.to_le_bytes().to_vec());
                    Ok::<_, Error>(n)
                });
                match round {
                    Ok(n) => acks.lock().unwrap().push((n, Instant::now())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };

    // The CLI: one `sealkv put` process per log row, tried again until acknowledged.
    let bin = std::env::var_os("SEALKV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo().join("target"));
            target.join("debug/sealkv")
        });
    assert!(
        bin.exists(),
        "no CLI at {} (build it, or set SEALKV_BIN)",
        bin.display()
    );
    let cli = {
        let (stop, acks, plain_url, password) = (
            stop.clone(),
            cli_acks.clone(),
            plain_url.clone(),
            password.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 1u64;
            let mut failures = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut child = Command::new(&bin)
                    .args(["put", &plain_url, "log", &format!("cli-{n}")])
                    .env("SEALKV_MASTER_KEY", hex_key())
                    .env("PGPASSWORD", &password)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(format!("cli {n}").as_bytes())
                    .unwrap();
                if child.wait().unwrap().success() {
                    acks.lock().unwrap().push((n, Instant::now()));
                    n += 1;
                } else {
                    failures += 1;
                }
            }
            failures
        })
    };

    // Node: Baileys' auth state, read-modify-write rounds (test/ha-writer.mjs).
    let node_dir = repo().join("bindings/node");
    let mut node = Command::new("node")
        .arg("test/ha-writer.mjs")
        .current_dir(&node_dir)
        .env("SEALKV_HA_URL", &plain_url)
        .env("SEALKV_HA_KEY", hex_key())
        .env("PGPASSWORD", &password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (and the built package in bindings/node)");
    let node_in = node.stdin.take().unwrap();
    let node_reader = {
        let (out, acks) = (node.stdout.take().unwrap(), node_acks.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            for line in BufReader::new(out).lines() {
                let line = line.unwrap();
                if let Some(n) = line.strip_prefix("ack ") {
                    acks.lock()
                        .unwrap()
                        .push((n.parse().unwrap(), Instant::now()));
                } else {
                    errors.push(line);
                }
            }
            errors
        })
    };

    let writers = [
        ("rust", &rust_acks),
        ("cli", &cli_acks),
        ("node", &node_acks),
    ];
    // scripts/ha-soak asks for more rounds.
    let rounds: u32 = std::env::var("SEALKV_HA_ROUNDS")
        .ok()
        .map(|r| r.parse().unwrap())
        .unwrap_or(2);
    let mut resumed = Vec::new();
    for round in 1..=rounds {
        let before: Vec<usize> = writers.iter().map(|(_, a)| count(a)).collect();
        wait(Duration::from_secs(60), "every writer to write", || {
            writers
                .iter()
                .zip(&before)
                .all(|((_, a), b)| count(a) >= b + 5)
        });
        let (old, _, killed) = pair.fail_over();
        wait(
            BOUND + Duration::from_secs(30),
            "every writer to resume",
            || {
                writers
                    .iter()
                    .all(|(_, a)| acked_after(a, killed).len() >= 5)
            },
        );
        for (name, acks) in &writers {
            let first = acked_after(acks, killed)[0].1 - killed;
            eprintln!("round {round}: {name} resumed {first:?} after the kill");
            assert!(first < BOUND, "{name} resumed only after {first:?}");
            resumed.push(first);
        }
        pair.heal(old);
    }
    stop.store(true, Ordering::SeqCst);
    drop(node_in);
    assert!(node.wait().unwrap().success(), "the Node writer failed");
    let node_errors = node_reader.join().unwrap();
    let rust_failures = rust.join().unwrap();
    let cli_failures = cli.join().unwrap();
    let lock_lost = rust_failures
        .iter()
        .filter(|e| e.contains("lock key was lost"))
        .count();
    eprintln!(
        "acknowledged: rust {}, cli {}, node {}; failed attempts: rust {} ({lock_lost} LockLost, \
         others: {:?}), cli {}, node {} ({:?})",
        count(&rust_acks),
        count(&cli_acks),
        count(&node_acks),
        rust_failures.len(),
        rust_failures
            .iter()
            .find(|e| !e.contains("lock key was lost")),
        cli_failures,
        node_errors.len(),
        node_errors.first(),
    );

    // On the new primary, through a fresh handle: every acknowledged write is there
    // (lost: acknowledged and absent), and each counter equals its log rows (a stale
    // batch replayed would set a counter back under its rows: applied twice).
    drop(store);
    let store = Store::open(&url, key(), opts()).unwrap();
    let (mut lost, mut twice) = (0u64, 0u64);
    let mut tally = |counter: u64, rows: u64| {
        lost += counter.saturating_sub(rows);
        twice += rows.saturating_sub(counter);
    };
    let logs = store.list("log").unwrap();
    let rust_counter = store
        .get_one("counter", "rust")
        .unwrap()
        .map_or(0, |v| u64::from_le_bytes(v.as_slice().try_into().unwrap()));
    tally(
        rust_counter,
        logs.iter().filter(|k| k.starts_with("rust-")).count() as u64,
    );
    let node_counter = store
        .get_one("app-state-sync-version", "node")
        .unwrap()
        .map_or(0, |v| node_n(&v));
    tally(
        node_counter,
        store.list("sender-key-memory").unwrap().len() as u64,
    );
    for (n, _) in rust_acks.lock().unwrap().iter() {
        let v = store.get_one("log", &format!("rust-{n}")).unwrap();
        lost += u64::from(v.is_none_or(|v| v.to_vec() != n.to_le_bytes()) || *n > rust_counter);
    }
    for (n, _) in cli_acks.lock().unwrap().iter() {
        let v = store.get_one("log", &format!("cli-{n}")).unwrap();
        lost += u64::from(v.is_none_or(|v| v.to_vec() != format!("cli {n}").into_bytes()));
    }
    for (n, _) in node_acks.lock().unwrap().iter() {
        let v = store
            .get_one("sender-key-memory", &format!("node-{n}"))
            .unwrap();
        lost += u64::from(v.is_none_or(|v| node_n(&v) != *n) || *n > node_counter);
    }
    resumed.sort();
    let acknowledged = count(&rust_acks) + count(&cli_acks) + count(&node_acks);
    eprintln!(
        "HA figures: {rounds} failovers, {acknowledged} acknowledged writes, {lost} lost, \
         {twice} applied twice; kill to first acknowledged write: median {:?}, max {:?}",
        resumed[resumed.len() / 2],
        resumed[resumed.len() - 1],
    );
    assert_eq!(lost, 0, "acknowledged writes were lost");
    assert_eq!(twice, 0, "a stale batch was replayed");
    assert!(store.verify().unwrap().is_empty());
}

#[test]
fn a_commit_caught_in_the_synchronous_wait_is_applied_once_or_not_at_all() {
    let Some(pair) = pair() else { return };
    let primary = pair.primary();
    let standby = other(primary);
    // The standby replicates through a proxy, so that its stream can be frozen.
    let proxy = Proxy::start(pair.port(primary));
    pair.run("via", &[standby, &proxy.port.to_string()]);
    let sync = format!(
        "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'node_{standby}'"
    );
    wait(
        Duration::from_secs(30),
        "the standby through the proxy",
        || proxy.connections() > 0 && pair.sql(primary, &sync) == "sync",
    );

    let url = pair.store("ha_wait", "");
    let put_store = Store::create(&url, key(), opts()).unwrap();
    let txn_store = Store::open(&url, key(), opts()).unwrap();
    put_store.put("n", "k", b"before".to_vec()).unwrap();
    txn_store
        .transaction("counter", |tx| {
            tx.put("n", "counter", 1u64.to_le_bytes().to_vec());
            Ok::<_, Error>(())
        })
        .unwrap();

    // Nothing reaches the standby any more: the next commits wait for it.
    proxy.freeze_all();
    let put = std::thread::spawn(move || {
        let r = put_store.put("n", "k", b"caught".to_vec());
        (put_store, r)
    });
    let txn = std::thread::spawn(move || {
        let r = txn_store.transaction("counter", |tx| {
            let n = u64::from_le_bytes(
                tx.get("n", &["counter"])?["counter"]
                    .as_slice()
                    .try_into()
                    .unwrap(),
            );
            tx.put("n", "counter", (n + 1).to_le_bytes().to_vec());
            Ok::<_, Error>(n + 1)
        });
        (txn_store, r)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !put.is_finished(),
        "a commit was acknowledged before its standby had it"
    );
    let (old, _, _) = pair.fail_over();
    let (store, put_result) = put.join().unwrap();
    let (_, txn_result) = txn.join().unwrap();
    drop(proxy);
    let value = store.get_one("n", "k").unwrap().unwrap().to_vec();
    match &put_result {
        // Acknowledged: present on the new primary.
        Ok(()) => assert_eq!(value, b"caught"),
        Err(Error::CommitFailed {
            outcome_unknown: true,
            ..
        }) => assert!(value == b"caught" || value == b"before"),
        Err(e) => panic!("the caught put: {e}"),
    }
    let counter = u64::from_le_bytes(
        store
            .get_one("n", "counter")
            .unwrap()
            .unwrap()
            .as_slice()
            .try_into()
            .unwrap(),
    );
    match &txn_result {
        Ok(n) => assert_eq!(counter, *n, "an acknowledged increment is there, once"),
        // Its lock key lived on the dead primary: nothing of it was written.
        Err(_) => assert_eq!(counter, 1, "a failed increment wrote nothing"),
    }
    eprintln!("caught put: {put_result:?}; caught transaction: {txn_result:?}");
    assert!(store.verify().unwrap().is_empty());
    pair.heal(old);
}

#[test]
fn sync_replicas_is_kept_by_the_pair_and_refused_by_a_lone_primary() {
    let Some(pair) = pair() else { return };
    let url = pair.store("ha_sync", "");
    let guarded = pair.store("ha_sync", "&sync_replicas=1");
    Store::create(&url, key(), opts()).unwrap();
    let store = Store::open(&guarded, key(), opts()).unwrap();
    store.put("n", "1", b"replicated".to_vec()).unwrap();
    // The option asks for more than the pair has.
    let e = Store::open(
        &url,
        key(),
        Options {
            sync_replicas: 2,
            ..opts()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("waits for 1 synchronous standbys"), "{e}");
    assert!(
        !e.contains(&split_password(&url).1),
        "the password leaked: {e}"
    );

    let (old, _, _) = pair.fail_over();
    // The promoted standby has no standby of its own: writes are refused, nothing written.
    let e = store.put("n", "2", b"alone".to_vec()).unwrap_err();
    assert!(
        e.to_string().contains("synchronous_standby_names = ''"),
        "{e}"
    );
    let e = Store::open(&guarded, key(), opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("synchronous_standby_names"), "{e}");
    let plain = Store::open(&url, key(), opts()).unwrap();
    assert!(plain.get_one("n", "2").unwrap().is_none());
    assert!(
        plain.get_one("n", "1").unwrap().is_some(),
        "a replicated write survived"
    );

    // Second round: the old primary follows the new one; the guarantee holds again.
    pair.heal(old);
    store.put("n", "2", b"replicated again".to_vec()).unwrap();
    Store::open(&guarded, key(), opts()).unwrap();
    let (old, _, _) = pair.fail_over();
    assert_eq!(
        plain.get_one("n", "2").unwrap().unwrap().to_vec(),
        b"replicated again"
    );
    pair.heal(old);
}
