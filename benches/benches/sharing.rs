//! What sharing a store between processes costs: the same operations on a store in
//! shared mode (the default: redb MultiWriter, a fresh read transaction per read,
//! keyring checks in every write transaction, cross-process transaction locks) and in
//! exclusive mode (one process at a time, as before shared mode existed), in one run.
//!
//! Run: `cargo bench -p sealkv-benches --bench sharing`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealkv_benches::{auth_like_value, fill, found_len, key_name, transaction_round};
use sealkv_engine::{Concurrency, MasterKey, Options, Store};

const N: usize = 10_000;

fn store(dir: &std::path::Path, mode: Concurrency) -> Store {
    let store = Store::create(
        dir.join(format!("{mode:?}.sealkv")),
        MasterKey::generate().expect("os random"),
        Options {
            concurrency: mode,
            ..Options::default()
        },
    )
    .expect("create");
    fill(|b| store.set(b).expect("fill"), N, "session");
    store
}

fn sharing(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let stores = [
        ("shared", store(dir.path(), Concurrency::Shared)),
        ("exclusive", store(dir.path(), Concurrency::Exclusive)),
    ];
    let mut g = c.benchmark_group("sharing-get-1KiB");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    for (name, store) in &stores {
        g.bench_function(*name, |b| {
            b.iter(|| {
                i = (i + 7919) % N;
                found_len(store.get_one("session", &key_name(i)))
            })
        });
    }
    g.finish();

    let value = auth_like_value(1024, 1);
    let mut g = c.benchmark_group("sharing-durable-set-1KiB");
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (name, store) in &stores {
        g.bench_function(*name, |b| {
            b.iter(|| {
                i = (i + 7919) % N;
                store
                    .put("session", &key_name(i), value.clone())
                    .expect("put")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sharing-durable-transactions");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for (name, store) in &stores {
        for threads in [1usize, 16] {
            g.throughput(Throughput::Elements(threads as u64 * 20));
            g.bench_with_input(BenchmarkId::new(*name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        transaction_round(store, threads, &value);
                    }
                    start.elapsed()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, sharing);
criterion_main!(benches);
