//! sealkv against SQLCipher (rusqlite, bundled SQLCipher, WAL, synchronous=FULL) and raw
//! redb on the same data in one run: point get and durable single write, 1 KiB values;
//! and batched bulk import against raw redb batched puts.
//!
//! Run: `cargo bench -p sealkv-benches --bench peers`, then
//! `cargo run -p sealkv-benches --bin ratios` for the table.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redb::{ReadableDatabase, TableDefinition};
use rusqlite::{Connection, params};
use sealkv_benches::auth_like_value;
use sealkv_engine::{Batch, MasterKey, Options, Store};

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
fn key_name(i: usize) -> String {
    format!("4915550{i:06}.0")
}

fn sqlcipher(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    // A raw 256-bit key, as sealkv's raw-key mode (no KDF in the measured path).
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", "ab".repeat(32)))
        .expect("key");
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .expect("pragmas");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv (ns TEXT, k TEXT, v BLOB, PRIMARY KEY (ns, k))",
    )
    .expect("table");
    conn
}

/// One bulk round on raw redb: every value under the row key `key_of("{round}-{j}")`,
/// in one durable write transaction.
fn raw_bulk(
    db: &redb::Database,
    round: usize,
    values: &[Vec<u8>],
    key_of: impl Fn(&str) -> Vec<u8>,
) {
    let txn = db.begin_write().expect("w");
    {
        let mut t = txn.open_table(RAW).expect("t");
        for (j, v) in values.iter().enumerate() {
            t.insert(key_of(&format!("{round}-{j}")).as_slice(), v.as_slice())
                .expect("i");
        }
    }
    txn.commit().expect("c");
}

fn peers(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::create(
        dir.path().join("s.sealkv"),
        MasterKey::generate().expect("os random"),
        one_process(),
    )
    .expect("s");
    let mut b = Batch::new();
    for i in 0..N {
        b.put("session", &key_name(i), auth_like_value(1024, i as u64));
    }
    store.set(&b).expect("fill");
    let mut sql = sqlcipher(&dir.path().join("c.db"));
    {
        let tx = sql.transaction().expect("tx");
        for i in 0..N {
            tx.execute(
                "INSERT INTO kv VALUES ('session', ?1, ?2)",
                params![key_name(i), auth_like_value(1024, i as u64)],
            )
            .expect("insert");
        }
        tx.commit().expect("commit");
    }

    let mut g = c.benchmark_group("peer-get-1KiB");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("sealkv", |bch| {
        bch.iter(|| {
            i = (i + 7919) % N;
            let k = key_name(i);
            store.get("session", &[k.as_str()]).expect("get").len()
        })
    });
    g.bench_function("sqlcipher", |bch| {
        let mut stmt = sql
            .prepare_cached("SELECT v FROM kv WHERE ns = 'session' AND k = ?1")
            .expect("prep");
        bch.iter(|| {
            i = (i + 7919) % N;
            let v: Vec<u8> = stmt
                .query_row(params![key_name(i)], |r| r.get(0))
                .expect("row");
            v.len()
        })
    });
    g.finish();

    let value = auth_like_value(1024, 3);
    let mut g = c.benchmark_group("peer-durable-set-1KiB");
    g.throughput(Throughput::Elements(1))
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    g.bench_function("sealkv", |bch| {
        bch.iter(|| {
            i = (i + 1) % N;
            store
                .put("session", &key_name(i), value.clone())
                .expect("put")
        })
    });
    g.bench_function("sqlcipher", |bch| {
        bch.iter(|| {
            i = (i + 1) % N;
            sql.execute(
                "INSERT OR REPLACE INTO kv VALUES ('session', ?1, ?2)",
                params![key_name(i), value],
            )
            .expect("put")
        })
    });
    g.finish();

    // Bulk import: 1000 values per transaction.
    let raw = redb::Database::create(dir.path().join("bulk.redb")).expect("raw");
    let bulk_store = Store::create(
        dir.path().join("bulk.sealkv"),
        MasterKey::generate().expect("os random"),
        one_process(),
    )
    .expect("s");
    let values: Vec<Vec<u8>> = (0..1000).map(|j| auth_like_value(1024, j)).collect();
    let mut round = 0usize;
    let mut g = c.benchmark_group("bulk-import-1000x1KiB");
    g.throughput(Throughput::Elements(1000)).sample_size(20);
    g.bench_function("raw-redb", |bch| {
        bch.iter(|| {
            round += 1;
            raw_bulk(&raw, round, &values, |name| name.as_bytes().to_vec())
        })
    });
    // sealkv stores rows under keyed tags of their names, so a batch lands in random
    // B-tree order; this peer inserts the same names prefixed by a hash, in random order
    // too, to tell the cost of private names apart from the cost of sealing.
    let hashed = redb::Database::create(dir.path().join("bulk-hashed.redb")).expect("raw");
    g.bench_function("raw-redb-hashed-order", |bch| {
        bch.iter(|| {
            round += 1;
            raw_bulk(&hashed, round, &values, |name| {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(name, &mut h);
                let mut key = std::hash::Hasher::finish(&h).to_be_bytes().to_vec();
                key.extend_from_slice(name.as_bytes());
                key
            })
        })
    });
    g.bench_function("sealkv", |bch| {
        bch.iter(|| {
            round += 1;
            let mut b = Batch::new();
            for (j, v) in values.iter().enumerate() {
                b.put("pre-key", &format!("{round}-{j}"), v.clone());
            }
            bulk_store.set(&b).expect("set")
        })
    });
    g.finish();
    let _ = raw.begin_read();
}

criterion_group!(benches, peers);
criterion_main!(benches);
