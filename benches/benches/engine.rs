//! The store against raw redb (no encryption), in one run so the ratios hold:
//! point get of 1 KiB values, single-thread durable set, and group commit
//! (8 threads on distinct lock keys vs 1 thread).
//!
//! Run: `cargo bench -p sealkv-benches --bench engine`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redb::{ReadableDatabase, TableDefinition};
use sealkv_benches::{
    auth_like_value, fill, found_len, key_name, random_row_keys, settle, transaction_round,
};
use sealkv_crypto::{Algorithm, Codec, Compression};
use sealkv_engine::{MasterKey, Options, Store};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
const N: usize = 10_000;

/// The store's options for these comparisons: exclusive mode, the single-process
/// configuration the README's ratio targets were set for (`--bench sharing` measures
/// what the default shared mode costs on top).
fn one_process() -> Options {
    Options {
        concurrency: sealkv_engine::Concurrency::Exclusive,
        ..Options::default()
    }
}
fn sealkv_store(dir: &std::path::Path, name: &str, opts: Options) -> Store {
    let store = Store::create(
        dir.join(name),
        MasterKey::generate().expect("os random"),
        opts,
    )
    .expect("create");
    fill(|b| store.set(b).expect("fill"), N, "session");
    settle();
    store
}

fn raw_db(dir: &std::path::Path) -> redb::Database {
    let db = redb::Database::create(dir.join("raw.redb")).expect("raw");
    let txn = db.begin_write().expect("w");
    {
        let mut t = txn.open_table(RAW).expect("t");
        for i in 0..N {
            t.insert(
                key_name(i).as_bytes(),
                auth_like_value(1024, i as u64).as_slice(),
            )
            .expect("i");
        }
    }
    txn.commit().expect("c");
    db
}

/// A raw redb get in its own read transaction, handing the value to `f`.
fn raw_get<T>(raw: &redb::Database, i: usize, f: impl FnOnce(&[u8]) -> T) -> T {
    let txn = raw.begin_read().expect("r");
    let t = txn.open_table(RAW).expect("t");
    f(t.get(key_name(i).as_bytes())
        .expect("g")
        .expect("present")
        .value())
}

fn point_get(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let raw = raw_db(dir.path());
    // Default settings: snappy + XChaCha20-Poly1305.
    let default = sealkv_store(dir.path(), "default", one_process());
    let zstd = sealkv_store(
        dir.path(),
        "zstd-xchacha",
        Options {
            compression: Compression::with_codec(Codec::Zstd),
            ..one_process()
        },
    );
    let fast = sealkv_store(
        dir.path(),
        "snappy-aes",
        Options {
            cipher: Algorithm::Aes256Gcm,
            compression: Compression::with_codec(Codec::Snappy),
            ..one_process()
        },
    );
    let mut g = c.benchmark_group("get-1KiB");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("raw-redb", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            raw_get(&raw, i, <[u8]>::len)
        })
    });
    // The same get, returning the value as an owned copy, as any caller that keeps it
    // past the read transaction must (and as sealkv's get does).
    g.bench_function("raw-redb-owned", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            raw_get(&raw, i, <[u8]>::to_vec)
        })
    });
    for (name, store) in [
        ("sealkv-default", &default),
        ("sealkv-zstd-xchacha", &zstd),
        ("sealkv-snappy-aesgcm", &fast),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 7919) % N;
                found_len(store.get_one("session", &key_name(i)))
            })
        });
    }
    g.finish();
}

fn durable_set(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let raw = redb::Database::create(dir.path().join("raw-set.redb")).expect("raw");
    let store = Store::create(
        dir.path().join("set.sealkv"),
        MasterKey::generate().expect("os random"),
        one_process(),
    )
    .expect("s");
    let value = auth_like_value(1024, 1);
    let mut g = c.benchmark_group("durable-set-1KiB");
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut i = 0usize;
    g.bench_function("raw-redb", |b| {
        b.iter(|| {
            i += 1;
            let txn = raw.begin_write().expect("w");
            txn.open_table(RAW)
                .expect("t")
                .insert(key_name(i % N).as_bytes(), value.as_slice())
                .expect("i");
            txn.commit().expect("c");
        })
    });
    g.bench_function("sealkv", |b| {
        b.iter(|| {
            i += 1;
            store
                .put("session", &key_name(i % N), value.clone())
                .expect("put");
        })
    });
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(
        Store::create(
            dir.path().join("gc.sealkv"),
            MasterKey::generate().expect("os random"),
            one_process(),
        )
        .expect("s"),
    );
    let value = auth_like_value(1024, 2);
    let mut g = c.benchmark_group("durable-transactions");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for threads in [1usize, 8, 16] {
        g.throughput(Throughput::Elements(threads as u64 * 20));
        g.bench_with_input(
            BenchmarkId::new("threads", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        transaction_round(&store, threads, &value);
                    }
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

/// The ceiling for group commit on this disk: raw redb committing 1 and 16 puts of
/// random 32-byte keys (as sealkv's rows are) per durable transaction, in a table of
/// 320 rows like the one `group_commit` writes. 16 callers sharing a commit can be at
/// most 16 x (time of 1) / (time of 16) faster than one caller alone.
fn raw_batch_ceiling(c: &mut Criterion) {
    const KEYED: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("keyed");
    let dir = tempfile::tempdir().expect("dir");
    let db = redb::Database::create(dir.path().join("batch.redb")).expect("raw");
    let mut random_key = random_row_keys(0x9E37_79B9_7F4A_7C15);
    let keys: Vec<[u8; 32]> = (0..320).map(|_| random_key()).collect();
    let value = auth_like_value(1024, 3);
    let txn = db.begin_write().expect("w");
    {
        let mut t = txn.open_table(KEYED).expect("t");
        for k in &keys {
            t.insert(k, value.as_slice()).expect("i");
        }
    }
    txn.commit().expect("c");
    let mut g = c.benchmark_group("raw-redb-durable-batch");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let mut next = 0usize;
    for n in [1usize, 16] {
        g.bench_function(BenchmarkId::new("puts", n), |b| {
            b.iter(|| {
                let txn = db.begin_write().expect("w");
                {
                    let mut t = txn.open_table(KEYED).expect("t");
                    for _ in 0..n {
                        next = (next + 7) % keys.len();
                        t.insert(&keys[next], value.as_slice()).expect("i");
                    }
                }
                txn.commit().expect("c");
            })
        });
    }
    g.finish();
}

/// A bot's pre-key upload: 812 new 75-byte rows in one durable commit, into a store
/// of 10,000 rows, through sealkv, and raw redb inserting 812 random 32-byte keys (as
/// sealkv's row keys are) in arrival order and sorted.
///
/// `steady`: the store stays at its size, as a bot's does (the previous upload's rows
/// are deleted before each timed commit, untimed); `growing`: every upload stays, so
/// the store grows by 812 rows an iteration (to several hundred thousand rows by the
/// end of a run: far more leaves for random keys to land in, the worst case).
fn prekey_batch(c: &mut Criterion) {
    const KEYED: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("keyed");
    const ROWS: usize = 812;
    let dir = tempfile::tempdir().expect("dir");
    let value = auth_like_value(75, 4);
    let mut g = c.benchmark_group("prekey-batch-812");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for steady in [true, false] {
        let store = sealkv_store(
            dir.path(),
            if steady {
                "steady.sealkv"
            } else {
                "growing.sealkv"
            },
            one_process(),
        );
        let mut round = 0usize;
        let name = if steady {
            "sealkv-steady"
        } else {
            "sealkv-growing"
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    if steady && round > 0 {
                        let mut old = sealkv_engine::Batch::new();
                        for i in 0..ROWS {
                            old.delete("pre-key", &format!("{round}-{i}"));
                        }
                        store.set(&old).expect("delete");
                    }
                    round += 1;
                    let mut batch = sealkv_engine::Batch::new();
                    for i in 0..ROWS {
                        batch.put("pre-key", &format!("{round}-{i}"), value.clone());
                    }
                    batch
                },
                |batch| store.set(&batch).expect("set"),
                criterion::BatchSize::PerIteration,
            )
        });
    }
    let db = redb::Database::create(dir.path().join("raw.redb")).expect("raw");
    let mut random_key = random_row_keys(0x2545_F491_4F6C_DD1D);
    let fill_txn = db.begin_write().expect("w");
    {
        let mut t = fill_txn.open_table(KEYED).expect("t");
        for _ in 0..N {
            t.insert(&random_key(), value.as_slice()).expect("i");
        }
    }
    fill_txn.commit().expect("c");
    for (sorted, steady) in [(false, true), (true, true), (false, false)] {
        let name = match (sorted, steady) {
            (false, true) => "raw-redb-steady-arrival-order",
            (true, true) => "raw-redb-steady-sorted",
            _ => "raw-redb-growing-arrival-order",
        };
        let mut previous: Vec<[u8; 32]> = Vec::new();
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    if steady && !previous.is_empty() {
                        let txn = db.begin_write().expect("w");
                        {
                            let mut t = txn.open_table(KEYED).expect("t");
                            for k in &previous {
                                t.remove(k).expect("r");
                            }
                        }
                        txn.commit().expect("c");
                    }
                    let mut keys: Vec<[u8; 32]> = (0..ROWS).map(|_| random_key()).collect();
                    if sorted {
                        keys.sort_unstable();
                    }
                    previous = keys.clone();
                    keys
                },
                |keys| {
                    let txn = db.begin_write().expect("w");
                    {
                        let mut t = txn.open_table(KEYED).expect("t");
                        for k in &keys {
                            t.insert(k, value.as_slice()).expect("i");
                        }
                    }
                    txn.commit().expect("c");
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    point_get,
    durable_set,
    group_commit,
    raw_batch_ceiling,
    prekey_batch
);
criterion_main!(benches);
