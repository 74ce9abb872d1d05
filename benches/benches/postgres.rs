//! The PostgreSQL engine against raw PostgreSQL running the same statements without
//! sealing, and against the redb engine, in one run so the ratios hold: point get,
//! single-thread durable set, and 16 threads committing transactions.
//!
//! Needs a server: `eval "$(bash scripts/pg start)"` starts a private one (durable:
//! `fsync` and `synchronous_commit` on) and sets `SEALKV_TEST_PG`; then
//! `cargo bench -p sealkv-benches --bench postgres`.
//!
//! The raw peers, per durable set:
//! - `raw-pg-minimal`: `BEGIN`, one `INSERT … ON CONFLICT DO UPDATE`, `COMMIT`;
//! - `raw-pg-same-statements`: what the engine sends for one put, on plain bytes (see
//!   docs/POSTGRES.md): `BEGIN`, `SET LOCAL lock_timeout`, the keyring row's
//!   `SELECT … FOR UPDATE` and the expiry check (one round trip), one statement holding the `unnest` upsert of the value and the `unnest`
//!   insert-if-absent of its catalog entry, `COMMIT`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postgres::types::Type;
use postgres::{Client, NoTls};
use sealkv_benches::{auth_like_value, fill, found_len, key_name, transaction_round};
use sealkv_engine::{MasterKey, Options, Store};

const N: usize = 10_000;

fn server() -> String {
    std::env::var("SEALKV_TEST_PG")
        .expect("set SEALKV_TEST_PG to a server URL: eval \"$(bash scripts/pg start)\" starts one")
}

/// A 32-byte row key, random-looking like sealkv's tags.
fn tag(i: usize) -> Vec<u8> {
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..4)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect()
}

/// The raw peer's tables, as the engine's (every column bytea), freshly made.
fn raw_tables(client: &mut Client) {
    client
        .batch_execute(
            "DROP TABLE IF EXISTS raw_data, raw_meta, raw_expiry;
             CREATE TABLE raw_data (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE raw_meta (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE raw_expiry (k bytea PRIMARY KEY);
             INSERT INTO raw_meta VALUES ('keyring', 'x');",
        )
        .expect("raw tables");
    let mut keys = Vec::new();
    let mut values = Vec::new();
    for i in 0..N {
        keys.push(tag(i));
        values.push(auth_like_value(1024, i as u64));
    }
    client
        .execute(
            "INSERT INTO raw_data SELECT * FROM unnest($1::bytea[], $2::bytea[])",
            &[&keys, &values],
        )
        .expect("fill raw");
}

fn raw_minimal_set(client: &mut Client, k: &[u8], v: &[u8]) {
    let mut tx = client.transaction().expect("begin");
    tx.query_typed(
        "INSERT INTO raw_data (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        &[(&k, Type::BYTEA), (&v, Type::BYTEA)],
    )
    .expect("upsert");
    tx.commit().expect("commit");
}

fn raw_same_statements_set(client: &mut Client, k: &[u8], v: &[u8]) {
    client
        .simple_query(
            "BEGIN; SET LOCAL lock_timeout = 30000; \
             SELECT encode(v, 'hex') AS keyring FROM raw_meta \
             WHERE k = '\\x6b657972696e67' FOR UPDATE; \
             SELECT EXISTS (SELECT 1 FROM raw_expiry) AS expiring; \
             SELECT encode(v, 'hex') AS commits FROM raw_meta WHERE k = '\\x636f6d6d697473'",
        )
        .expect("begin, keyring lock, commit record");
    let (keys, values) = (vec![k], vec![v]);
    let (catalog, entry) = (vec![tag(N + 1)], vec![vec![0u8; 60]]);
    // The commit record as the engine writes it: a count and 32 tokens of 16 bytes.
    let (record_key, record) = (vec![b"commits".to_vec()], vec![vec![7u8; 8 + 32 * 16]]);
    client
        .query_typed(
            "WITH w0 AS (INSERT INTO raw_data (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
             ON CONFLICT (k) DO UPDATE SET v = excluded.v), \
             w1 AS (INSERT INTO raw_data (k, v) SELECT * FROM unnest($3::bytea[], $4::bytea[]) \
             ON CONFLICT (k) DO NOTHING), \
             w2 AS (INSERT INTO raw_meta (k, v) SELECT * FROM unnest($5::bytea[], $6::bytea[]) \
             ON CONFLICT (k) DO UPDATE SET v = excluded.v) SELECT 1",
            &[
                (&keys, Type::BYTEA_ARRAY),
                (&values, Type::BYTEA_ARRAY),
                (&catalog, Type::BYTEA_ARRAY),
                (&entry, Type::BYTEA_ARRAY),
                (&record_key, Type::BYTEA_ARRAY),
                (&record, Type::BYTEA_ARRAY),
            ],
        )
        .expect("upsert, catalog entry and commit record");
    client.batch_execute("COMMIT").expect("commit");
}

struct Setup {
    _dir: tempfile::TempDir,
    url: String,
    pg: Store,
    file: Store,
}

fn setup(name: &str) -> Setup {
    let url = server();
    let dir = tempfile::tempdir().expect("dir");
    let store_url = format!("{url}?store=bench_{name}_{}", std::process::id());
    let pg = Store::create(
        &store_url,
        MasterKey::generate().expect("key"),
        Options::default(),
    )
    .expect("pg store");
    fill(|b| pg.set(b).expect("fill"), N, "session");
    let file = Store::create(
        dir.path().join("bench.sealkv"),
        MasterKey::generate().expect("key"),
        Options::default(),
    )
    .expect("file store");
    fill(|b| file.set(b).expect("fill"), N, "session");
    Setup {
        _dir: dir,
        url,
        pg,
        file,
    }
}

fn point_get(c: &mut Criterion) {
    let s = setup("get");
    let mut raw = Client::connect(&s.url, NoTls).expect("raw client");
    raw_tables(&mut raw);
    let mut g = c.benchmark_group("pg-get-1KiB");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("raw-pg", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            let row = raw
                .query_typed_opt(
                    "SELECT v FROM raw_data WHERE k = $1",
                    &[(&tag(i), Type::BYTEA)],
                )
                .expect("get")
                .expect("present");
            row.get::<_, Vec<u8>>(0).len()
        })
    });
    g.bench_function("sealkv-pg", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            found_len(s.pg.get_one("session", &key_name(i)))
        })
    });
    g.bench_function("sealkv-redb-file", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            found_len(s.file.get_one("session", &key_name(i)))
        })
    });
    g.finish();
}

fn durable_set(c: &mut Criterion) {
    let s = setup("set");
    let mut raw = Client::connect(&s.url, NoTls).expect("raw client");
    raw_tables(&mut raw);
    let value = auth_like_value(1024, 1);
    let mut g = c.benchmark_group("pg-durable-set-1KiB");
    g.throughput(Throughput::Elements(1))
        .sample_size(30)
        .measurement_time(Duration::from_secs(6));
    let mut i = 0usize;
    g.bench_function("raw-pg-minimal", |b| {
        b.iter(|| {
            i += 1;
            raw_minimal_set(&mut raw, &tag(i % N), &value);
        })
    });
    g.bench_function("raw-pg-same-statements", |b| {
        b.iter(|| {
            i += 1;
            raw_same_statements_set(&mut raw, &tag(i % N), &value);
        })
    });
    g.bench_function("sealkv-pg", |b| {
        b.iter(|| {
            i += 1;
            s.pg.put("session", &key_name(i % N), value.clone())
                .expect("put");
        })
    });
    g.bench_function("sealkv-redb-file", |b| {
        b.iter(|| {
            i += 1;
            s.file
                .put("session", &key_name(i % N), value.clone())
                .expect("put");
        })
    });
    g.finish();
}

/// 16 threads, each committing 20 one-value transactions (raw: 20 durable upserts on a
/// connection of its own, the server's own group commit sharing WAL flushes).
fn sixteen_threads(c: &mut Criterion) {
    let s = setup("threads");
    let mut raw = Client::connect(&s.url, NoTls).expect("raw client");
    raw_tables(&mut raw);
    let value = auth_like_value(1024, 2);
    let threads = 16usize;
    let mut clients: Vec<Client> = (0..threads)
        .map(|_| Client::connect(&s.url, NoTls).expect("raw client"))
        .collect();
    let mut g = c.benchmark_group("pg-16-threads");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(threads as u64 * 20));
    for (name, same) in [("raw-pg-minimal", false), ("raw-pg-same-statements", true)] {
        g.bench_function(BenchmarkId::new(name, threads), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for round in 0..iters as usize {
                    std::thread::scope(|scope| {
                        for (t, client) in clients.iter_mut().enumerate() {
                            let value = &value;
                            scope.spawn(move || {
                                for j in 0..20 {
                                    let k = tag((round * 7 + t * 20 + j) % N);
                                    if same {
                                        raw_same_statements_set(client, &k, value);
                                    } else {
                                        raw_minimal_set(client, &k, value);
                                    }
                                }
                            });
                        }
                    });
                }
                start.elapsed()
            })
        });
    }
    let pg = Arc::new(s.pg.clone());
    for (name, store) in [("sealkv-pg", &*pg), ("sealkv-redb-file", &s.file)] {
        g.bench_function(BenchmarkId::new(name, threads), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    transaction_round(store, threads, &value);
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, point_get, durable_set, sixteen_threads);
criterion_main!(benches);
