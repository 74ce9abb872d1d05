//! Sessions and expiry: a session-scoped get and durable set against the default
//! session's (same store, same keys, one run), and dropping a session of 10,000 values
//! from a store of 1,000,000.
//!
//! Run: `cargo bench -p sealkv-benches --bench sessions`
//! (the sweep's effect on writers is measured by `--bin sweep_stall`).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sealkv_benches::{auth_like_value, fill, found_len, key_name};
use sealkv_engine::{MasterKey, Options, Store};

const N: usize = 10_000;

fn new_store(dir: &std::path::Path, name: &str) -> Store {
    Store::create(
        dir.join(name),
        MasterKey::generate().expect("os random"),
        Options::default(),
    )
    .expect("create")
}

fn scoped_get_and_set(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let store = new_store(dir.path(), "s.sealkv");
    let session = store.session("4915550001").expect("session");
    fill(|b| store.set(b).expect("fill"), N, "session");
    fill(|b| session.set(b).expect("fill"), N, "session");

    let mut g = c.benchmark_group("session-get-1KiB");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("default-session", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            found_len(store.get_one("session", &key_name(i)))
        })
    });
    g.bench_function("named-session", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            found_len(session.get_one("session", &key_name(i)))
        })
    });
    g.finish();

    let value = auth_like_value(1024, 1);
    let mut g = c.benchmark_group("session-durable-set-1KiB");
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    g.bench_function("default-session", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            store
                .put("session", &key_name(i), value.clone())
                .expect("put")
        })
    });
    g.bench_function("named-session", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            session
                .put("session", &key_name(i), value.clone())
                .expect("put")
        })
    });
    g.finish();
}

fn drop_session(c: &mut Criterion) {
    // 99 sessions of 10,000 values and the one to drop: 1,000,000 values, 1 KiB each.
    let dir = tempfile::tempdir().expect("dir");
    let store = new_store(dir.path(), "farm.sealkv");
    let started = Instant::now();
    for s in 0..99 {
        let session = store.session(&format!("bot-{s}")).expect("session");
        fill(|b| session.set(b).expect("fill"), N, "session");
    }
    eprintln!("filled 990,000 values in {:.1?}", started.elapsed());
    let mut g = c.benchmark_group("drop-session");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("10k-of-1M", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let victim = store.session("victim").expect("session");
                fill(|b| victim.set(b).expect("fill"), N, "session");
                let t = Instant::now();
                assert!(store.drop_session("victim").expect("drop"));
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, scoped_get_and_set, drop_session);
criterion_main!(benches);
