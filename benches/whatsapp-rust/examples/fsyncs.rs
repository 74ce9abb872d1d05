//! How many fsyncs a durable session put costs each store: run it under strace.
//!
//! ```sh
//! cargo build --release --example fsyncs   # in benches/whatsapp-rust
//! for s in sqlite-normal sqlite-full sealkv sealkv-exclusive; do
//!   strace -f -c -e trace=fsync,fdatasync,sync_file_range,msync \
//!     ../../target/release/examples/fsyncs $s 1000
//! done
//! ```
//!
//! Each run opens one store in a fresh directory beside the current one (the disk under
//! test, not a tmpfs), seeds 1,000 sessions, then makes N session puts one after the
//! other (each a record the row did not hold) and prints the time per put; strace's count of fsync-like calls, divided by N,
//! is what each put asked of the disk (the seeding's few calls included).
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sealkv::{MasterKey, Options};
use sealkv_whatsapp::SealkvBackend;
use wacore::store::traits::Backend;
use whatsapp_rust_sqlite_storage::{SqliteStore, SqliteStoreConfig, Synchronous};

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().expect("a store: sqlite-normal, sqlite-full, sealkv, sealkv-exclusive");
    let n: usize = args.next().map_or(1000, |n| n.parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let dir = tempfile::tempdir_in(".").unwrap();
    let key = || MasterKey::from_bytes(&[7; 32]).unwrap();
    let store: Arc<dyn Backend> = match kind.as_str() {
        "sealkv" => Arc::new(SealkvBackend::create(dir.path().join("s.sealkv"), key(), Options::default()).unwrap()),
        "sealkv-exclusive" => Arc::new(
            SealkvBackend::create(
                dir.path().join("x.sealkv"),
                key(),
                Options { concurrency: sealkv::Concurrency::Exclusive, ..Options::default() },
            )
            .unwrap(),
        ),
        "sqlite-normal" | "sqlite-full" => {
            let synchronous = if kind == "sqlite-full" { Synchronous::Full } else { Synchronous::Normal };
            let path = dir.path().join("w.db");
            let cfg = SqliteStoreConfig { synchronous, ..Default::default() };
            Arc::new(rt.block_on(SqliteStore::with_config(path.to_str().unwrap(), cfg)).unwrap())
        }
        other => panic!("unknown store {other}"),
    };
    let record = |i: usize| Bytes::from((0..1024).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>());
    let address = |i: usize| -> Arc<str> { Arc::from(format!("1555{i:07}@s.whatsapp.net.0")) };
    let seed: Vec<(Arc<str>, Bytes)> = (0..1000).map(|i| (address(i), record(i))).collect();
    rt.block_on(store.put_sessions_batch(&seed)).unwrap();
    let start = Instant::now();
    for k in 0..n {
        let i = (k * 7919) % 1000;
        // A new record each time: writing back the bytes a row holds is a no-op for
        // SQLite (no page is written, nothing synced), which is not what a bot does.
        rt.block_on(store.put_session(&address(i), &record(i + k + 1))).unwrap();
    }
    let per = start.elapsed() / n as u32;
    println!("{kind}: {n} session puts, {per:?} each");
}
