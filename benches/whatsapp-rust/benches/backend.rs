//! sealkv-whatsapp against whatsapp-rust-sqlite-storage 0.7.0 on the operations a bot
//! does most: session put/get, a 100-session batch, a pre-key batch of 812, device
//! save/load.
//!
//! The SQLite store runs with `synchronous=NORMAL` by default, which does not fsync each
//! commit in WAL mode; it is measured that way and with `synchronous=FULL` (durable, as
//! every sealkv commit is). Every write changes the bytes stored: SQLite turns an
//! update to identical bytes into a no-op (no page written, no fsync), so a bench that
//! writes back what a row holds measures nothing on that side (an earlier version of
//! this bench did, and reported a 13.7 µs "FULL" put). `examples/fsyncs.rs` counts the
//! fsyncs each store's put makes, under strace. sealkv is measured with writes on the `blocking` pool (the
//! default) and inline on the calling task, which is how the default was chosen, and in
//! exclusive mode (one process per file).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealkv::{MasterKey, Options};
use sealkv_whatsapp::SealkvBackend;
use tokio::runtime::Runtime;
use wacore::store::Device;
use wacore::store::traits::{DeviceStore, SignalStore};
use whatsapp_rust_sqlite_storage::{SqliteStore, SqliteStoreConfig, Synchronous};

const SESSIONS: usize = 1000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn record(i: usize) -> Bytes {
    Bytes::from((0..1024).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>())
}

fn address(i: usize) -> Arc<str> {
    Arc::from(format!("1555{i:07}@s.whatsapp.net.0"))
}

/// The stores under test, each in its own file.
fn stores(rt: &Runtime, dir: &tempfile::TempDir) -> Vec<(&'static str, Arc<dyn wacore::store::traits::Backend>)> {
    let key = || MasterKey::from_bytes(&[7; 32]).unwrap();
    let sealed = SealkvBackend::create(dir.path().join("s.sealkv"), key(), Options::default()).unwrap();
    let inline = SealkvBackend::create(dir.path().join("i.sealkv"), key(), Options::default())
        .unwrap()
        .inline_writes(true);
    let exclusive = SealkvBackend::create(
        dir.path().join("x.sealkv"),
        key(),
        Options { concurrency: sealkv::Concurrency::Exclusive, ..Options::default() },
    )
    .unwrap();
    let sqlite = |name: &str, sync| {
        let path = dir.path().join(name);
        let cfg = SqliteStoreConfig { synchronous: sync, ..Default::default() };
        rt.block_on(SqliteStore::with_config(path.to_str().unwrap(), cfg)).unwrap()
    };
    vec![
        ("sealkv", Arc::new(sealed)),
        ("sealkv-inline-writes", Arc::new(inline)),
        ("sealkv-exclusive", Arc::new(exclusive)),
        ("sqlite-normal", Arc::new(sqlite("n.db", Synchronous::Normal))),
        ("sqlite-full", Arc::new(sqlite("f.db", Synchronous::Full))),
    ]
}

fn backend(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let stores = stores(&rt, &dir);
    for (_, store) in &stores {
        let batch: Vec<(Arc<str>, Bytes)> = (0..SESSIONS).map(|i| (address(i), record(i))).collect();
        rt.block_on(store.put_sessions_batch(&batch)).unwrap();
        rt.block_on(store.create()).unwrap();
    }

    let mut g = c.benchmark_group("wa-session-get");
    g.throughput(Throughput::Elements(1));
    for (name, store) in &stores {
        let mut i = 0;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                i = (i + 7919) % SESSIONS;
                black_box(rt.block_on(store.get_session(&address(i))).unwrap().unwrap());
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("wa-session-put");
    g.throughput(Throughput::Elements(1));
    for (name, store) in &stores {
        let (mut i, mut round) = (0, 0);
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                i = (i + 7919) % SESSIONS;
                round += 1;
                // A record the row does not hold: SQLite writes back identical bytes as a
                // no-op (no page written, no fsync), which a ratchet step never is.
                rt.block_on(store.put_session(&address(i), &record(i + round))).unwrap();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("wa-sessions-batch-100");
    g.throughput(Throughput::Elements(100));
    for (name, store) in &stores {
        let mut round = 0;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                round += 1;
                let batch: Vec<(Arc<str>, Bytes)> =
                    (0..100).map(|j| (address((round * 100 + j) % SESSIONS), record(j + round))).collect();
                rt.block_on(store.put_sessions_batch(&batch)).unwrap();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("wa-prekeys-batch-812");
    g.throughput(Throughput::Elements(812));
    g.sample_size(20);
    for (name, store) in &stores {
        let mut round = 0u32;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                round += 1;
                let keys: Vec<(u32, Bytes)> =
                    (0..812).map(|j| (round * 812 + j, Bytes::from(vec![j as u8; 75]))).collect();
                rt.block_on(store.store_prekeys_batch(&keys, false)).unwrap();
            })
        });
    }
    g.finish();

    let mut device = Device::new();
    let mut g = c.benchmark_group("wa-device-save");
    for (name, store) in &stores {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                // Changed each time, for the same reason as the session put.
                device.app_version_last_fetched_ms += 1;
                rt.block_on(store.save(&device)).unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("wa-device-load");
    for (name, store) in &stores {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(rt.block_on(store.load()).unwrap().unwrap()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    targets = backend
}
criterion_main!(benches);
