//! How long writers wait while a sweep removes 100,000 expired values.
//!
//! A writer thread makes durable single puts, back to back, first alone (the
//! baseline: one commit's time) and then while the main thread runs `Store::sweep`
//! over 100,000 expired 1 KiB values (100 batches of 1,000, each its own write
//! transaction). It prints the writer's latencies in both phases and the sweep's
//! time per batch: a writer should wait at most about one sweep batch plus its own
//! commit, never the whole sweep.
//!
//! Run: `cargo run --release -p sealkv-benches --bin sweep_stall [VALUES]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealkv_benches::auth_like_value;
use sealkv_engine::{Batch, MasterKey, Options, Store};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn writer(store: Store, stop: Arc<AtomicBool>, limit: usize) -> Vec<Duration> {
    let value = auth_like_value(1024, 3);
    let mut lat = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) && lat.len() < limit {
        let t = Instant::now();
        store
            .put("live", &format!("w{}", i % 1000), value.clone())
            .expect("put");
        lat.push(t.elapsed());
        i += 1;
    }
    lat.sort();
    lat
}

fn report(name: &str, lat: &[Duration]) {
    println!(
        "{name}: {} puts, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        lat.len(),
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
}

fn main() {
    let values: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("dir");
    let now = Arc::new(AtomicU64::new(1_700_000_000));
    let clock = now.clone();
    let opts = Options {
        clock: Arc::new(move || clock.load(Ordering::SeqCst)),
        ..Options::default()
    };
    let store = Store::create(
        dir.path().join("sweep.sealkv"),
        MasterKey::generate().expect("os random"),
        opts,
    )
    .expect("create");
    let started = Instant::now();
    for chunk in (0..values).collect::<Vec<_>>().chunks(1000) {
        let mut b = Batch::new();
        for &i in chunk {
            b.put_with_ttl(
                "msg-secret",
                &i.to_string(),
                auth_like_value(1024, i as u64),
                Duration::from_secs(60),
            );
        }
        store.set(&b).expect("fill");
    }
    println!(
        "wrote {values} expiring values in {:.1?}",
        started.elapsed()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let baseline = writer(store.clone(), stop.clone(), 300);
    report("writer alone (baseline)", &baseline);

    // Two hours on: every value has expired and its bucket has closed. The writer's own
    // commits sweep a few each (bounded); the explicit sweep takes the rest.
    now.fetch_add(7200, Ordering::SeqCst);
    let w = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || writer(store, stop, usize::MAX))
    };
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let removed = store.sweep().expect("sweep");
    let sweep_time = t.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let during = w.join().expect("writer");
    let batches = removed.div_ceil(1000).max(1);
    println!(
        "sweep: removed {removed} in {sweep_time:.2?} ({batches} batches, {:.2?} a batch)",
        sweep_time / batches as u32
    );
    report("writer during the sweep", &during);
    println!(
        "max writer wait during the sweep = {:.1} baseline commits, {:.2} sweep batches",
        during.last().copied().unwrap_or_default().as_secs_f64()
            / percentile(&baseline, 0.5).as_secs_f64(),
        during.last().copied().unwrap_or_default().as_secs_f64()
            / (sweep_time.as_secs_f64() / batches as f64)
    );
    assert_eq!(store.count("msg-secret").expect("count"), 0);
}
