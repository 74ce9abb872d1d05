//! Key life cycle costs: re-encryption throughput (100k values of 1 KiB), and rekey
//! time at 10k and at 1M values (it re-seals only the keyring, so it must not grow).
//!
//! Run: `cargo bench -p sealkv-benches --bench rotation`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealkv_benches::auth_like_value;
use sealkv_engine::{Batch, MasterKey, Options, Store};

fn filled(dir: &std::path::Path, name: &str, n: usize, size: usize) -> Store {
    let store = Store::create(
        dir.join(name),
        MasterKey::from_bytes(&[1; 32]).expect("key"),
        Options::default(),
    )
    .expect("create");
    let mut batch = Batch::new();
    for i in 0..n {
        batch.put(
            &format!("ns{}", i % 10),
            &format!("{i:08}"),
            auth_like_value(size, i as u64),
        );
        if batch.len() == 10_000 {
            store.set(&batch).expect("fill");
            batch = Batch::new();
        }
    }
    store.set(&batch).expect("fill");
    store
}

fn reencrypt(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let n = 100_000;
    let store = filled(dir.path(), "re.sealkv", n, 1024);
    let mut g = c.benchmark_group("reencrypt-100k-1KiB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(n as u64));
    g.bench_function("values", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                store.rotate().expect("rotate");
                let start = Instant::now();
                let report = store.reencrypt(1000, |_| {}).expect("reencrypt");
                total += start.elapsed();
                assert!(report.resealed >= n as u64);
            }
            total
        })
    });
    g.finish();
}

fn rekey(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let mut g = c.benchmark_group("rekey");
    g.sample_size(20);
    for n in [10_000usize, 1_000_000] {
        let store = filled(dir.path(), &format!("rk{n}.sealkv"), n, 64);
        let keys = [
            MasterKey::from_bytes(&[1; 32]).expect("k"),
            MasterKey::from_bytes(&[2; 32]).expect("k"),
        ];
        let mut flip = 0;
        g.bench_with_input(BenchmarkId::new("values", n), &n, |b, _| {
            b.iter(|| {
                flip ^= 1;
                store.rekey(keys[flip].clone()).expect("rekey");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, reencrypt, rekey);
criterion_main!(benches);
