//! What sharing a store between processes costs: the same operations, in one run, on
//! a store in
//! - shared mode (the default), in the process that owns the file (`shared-owner`:
//!   redb opened alone, keyring checks in every write transaction, lock keys on the
//!   file beside the store) and in a client of that owner (`shared-client`: every row
//!   operation over the owner's Unix socket; the owner here is another handle in this
//!   process, so both ends share the two cores as two processes would);
//! - multi-writer mode (`multi-writer`: redb MultiWriter, every process writing the
//!   file, a fresh read transaction per read);
//! - exclusive mode (one process at a time).
//!
//! Run: `cargo bench -p sealkv-benches --bench sharing`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealkv_benches::{
    auth_like_value, create_store, fill, found_len, key_name, settle, transaction_round,
};
use sealkv_engine::{Concurrency, MasterKey, Options, Store};

const N: usize = 10_000;

fn store(dir: &std::path::Path, mode: Concurrency) -> (Store, std::path::PathBuf, MasterKey) {
    let (store, path, key) = create_store(dir, &format!("{mode:?}.sealkv"), mode);
    fill(|b| store.set(b).expect("fill"), N, "session");
    (store, path, key)
}

fn sharing(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let (owner, path, key) = store(dir.path(), Concurrency::Shared);
    let client = Store::open(&path, key, Options::default()).expect("client");
    assert!(owner.is_owner() && !client.is_owner());
    let stores = [
        ("shared-owner", owner),
        ("shared-client", client),
        (
            "multi-writer",
            store(dir.path(), Concurrency::MultiWriter).0,
        ),
        ("exclusive", store(dir.path(), Concurrency::Exclusive).0),
    ];
    settle();
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
