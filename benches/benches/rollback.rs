//! What rollback detection costs, in one run so the ratios hold:
//!
//! - the state record (generation and content hash) on a durable 1 KiB set and on an
//!   812-row pre-key batch, against the same commits with it turned off (as before
//!   format 3; `internal::BENCH_WITHOUT_STATE`);
//! - each anchor's cost per commit: none, a file, a PostgreSQL row (with
//!   `SEALKV_BENCH_PG=postgres://user@host/db` and PGPASSWORD), and the OS keychain
//!   (in a D-Bus session with a Secret Service, as `scripts/keychain-check` starts).
//!   PostgreSQL and keychain anchors are written at most once a second; the bench
//!   reports the mean over many commits, so that write is spread over them.
//!
//! Run: `cargo bench -p sealkv-benches --bench rollback`. A durable commit's fsync
//! varies by more than what is measured here, so run it a second time with
//! `SEALKV_BENCH_DIR=/dev/shm` too: on tmpfs an fsync costs next to nothing, and what
//! is left is the state's and the anchor's own cost per commit, in µs, to set against a
//! durable commit on the disk.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sealkv_benches::{auth_like_value, fill};
use sealkv_engine::internal::BENCH_WITHOUT_STATE;
use sealkv_engine::{AnchorLocation, Batch, MasterKey, Options, Store};

const N: usize = 10_000;

/// Where the stores go: `SEALKV_BENCH_DIR` (say /dev/shm), or the system's temp folder.
fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SEALKV_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("dir"),
        None => tempfile::tempdir().expect("dir"),
    }
}

fn store(dir: &std::path::Path, name: &str) -> Store {
    let store = Store::create(
        dir.join(name),
        MasterKey::generate().expect("os random"),
        Options {
            concurrency: sealkv_engine::Concurrency::Exclusive,
            ..Options::default()
        },
    )
    .expect("create");
    fill(|b| store.set(b).expect("fill"), N, "session");
    store
}

/// One durable 1 KiB put on `timed`, then one on `other`, `iters` times; returns the
/// time of the `timed` puts only. Both bench functions of a pair run the same
/// alternation, so the disk's drift and the page cache treat both variants alike
/// (a run of one variant then the other measured mostly the disk's mood).
fn alternating(
    iters: u64,
    timed: (&Store, bool),
    other: (&Store, bool),
    value: &[u8],
    i: &mut usize,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        *i += 1;
        let key = format!("k{}", *i % N);
        BENCH_WITHOUT_STATE.store(timed.1, Ordering::SeqCst);
        let t = Instant::now();
        timed.0.put("session", &key, value.to_vec()).expect("put");
        total += t.elapsed();
        BENCH_WITHOUT_STATE.store(other.1, Ordering::SeqCst);
        other.0.put("session", &key, value.to_vec()).expect("put");
    }
    BENCH_WITHOUT_STATE.store(false, Ordering::SeqCst);
    total
}

/// Each variant on a store of its own, filled alike (the batches add rows, so a store
/// shared by both would be larger for whichever ran second).
fn state_cost(c: &mut Criterion) {
    let dir = bench_dir();
    let value = auth_like_value(1024, 1);
    let without = store(dir.path(), "set-without.sealkv");
    let with = store(dir.path(), "set-with.sealkv");
    let mut g = c.benchmark_group("state-durable-set-1k");
    g.sample_size(40).measurement_time(Duration::from_secs(8));
    let mut i = 0usize;
    g.bench_function("without-state", |b| {
        b.iter_custom(|n| alternating(n, (&without, true), (&with, false), &value, &mut i))
    });
    g.bench_function("with-state", |b| {
        b.iter_custom(|n| alternating(n, (&with, false), (&without, true), &value, &mut i))
    });
    g.finish();

    let mut g = c.benchmark_group("state-prekey-batch-812");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    let value = auth_like_value(75, 4);
    for (name, off) in [("without-state", true), ("with-state", false)] {
        let store = store(dir.path(), &format!("batch-{name}.sealkv"));
        let mut round = 0usize;
        g.bench_function(name, |b| {
            BENCH_WITHOUT_STATE.store(off, Ordering::SeqCst);
            b.iter(|| {
                round += 1;
                let mut batch = Batch::new();
                for i in 0..812 {
                    batch.put("pre-key", &format!("{round}-{i}"), value.clone());
                }
                store.set(&batch).expect("set");
            })
        });
    }
    BENCH_WITHOUT_STATE.store(false, Ordering::SeqCst);
    g.finish();
}

/// Each anchor against no anchor, alternating puts as [`alternating`] does.
fn anchor_cost(c: &mut Criterion) {
    let dir = bench_dir();
    let value = auth_like_value(1024, 2);
    let mut anchors: Vec<(&str, AnchorLocation)> = vec![(
        "file",
        AnchorLocation::File(dir.path().join("bench.anchor")),
    )];
    if let Ok(url) = std::env::var("SEALKV_BENCH_PG") {
        anchors.push(("postgres", AnchorLocation::parse(&url).expect("url")));
    }
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
        sealkv::keychain::install_anchors();
        anchors.push((
            "keychain",
            AnchorLocation::Keychain(format!("sealkv-bench-{}", std::process::id())),
        ));
    }
    let mut g = c.benchmark_group("anchor-durable-set-1k");
    g.sample_size(40).measurement_time(Duration::from_secs(8));
    for (name, anchor) in anchors {
        let bare = store(dir.path(), &format!("{name}-none.sealkv"));
        let anchored = store(dir.path(), &format!("{name}.sealkv"));
        anchored.set_anchor(Some(anchor)).expect("anchor");
        let mut i = 0usize;
        g.bench_function(format!("{name}-none"), |b| {
            b.iter_custom(|n| alternating(n, (&bare, false), (&anchored, false), &value, &mut i))
        });
        g.bench_function(name, |b| {
            b.iter_custom(|n| alternating(n, (&anchored, false), (&bare, false), &value, &mut i))
        });
    }
    g.finish();
}

criterion_group!(benches, state_cost, anchor_cost);
criterion_main!(benches);
