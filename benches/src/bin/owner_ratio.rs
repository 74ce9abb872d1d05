//! Durable sets and point gets of the sharing modes, interleaved: each round runs a
//! burst on every store in turn (owner, client, multi-writer, exclusive), so the
//! disk's drift over the run lands on all of them alike, and the medians of the
//! rounds are compared. Criterion's groups run one store after another, and on this
//! VM the fsync time drifts between them by more than the differences measured.
//!
//! Run: `cargo run --release -p sealkv-benches --bin owner_ratio [rounds]`

use std::time::Instant;

use sealkv_benches::{auth_like_value, create_store};
use sealkv_engine::{Concurrency, Options, Store};

const BURST: usize = 20;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().expect("dir");
    let make = |name: &str, mode: Concurrency| create_store(dir.path(), name, mode);
    let (owner, path, key) = make("owner.sealkv", Concurrency::Shared);
    let client = Store::open(&path, key, Options::default()).expect("client");
    assert!(owner.is_owner() && !client.is_owner());
    let stores = [
        ("shared, owner", owner),
        ("shared, client", client),
        (
            "multi-writer",
            make("multi.sealkv", Concurrency::MultiWriter).0,
        ),
        (
            "exclusive",
            make("exclusive.sealkv", Concurrency::Exclusive).0,
        ),
    ];
    let value = auth_like_value(1024, 1);
    for (_, s) in &stores {
        for i in 0..1000 {
            s.put("n", &format!("k{i}"), value.clone()).expect("fill");
        }
    }
    let mut sets: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
    let mut gets: Vec<Vec<f64>> = vec![Vec::new(); stores.len()];
    for round in 0..rounds {
        // Each round starts with a different store.
        for k in 0..stores.len() {
            let i = (round + k) % stores.len();
            let s = &stores[i].1;
            let t = Instant::now();
            for j in 0..BURST {
                s.put("n", &format!("k{}", (round * 31 + j) % 1000), value.clone())
                    .expect("put");
            }
            sets[i].push(t.elapsed().as_secs_f64() * 1e6 / BURST as f64);
            let t = Instant::now();
            for j in 0..1000 {
                let v = s
                    .get_one("n", &format!("k{}", (j * 7919) % 1000))
                    .expect("get");
                std::hint::black_box(v);
            }
            gets[i].push(t.elapsed().as_secs_f64() * 1e6 / 1000.0);
        }
    }
    println!("{rounds} rounds; each: {BURST} durable 1 KiB sets, 1000 point gets per store");
    println!("| store | durable set (median µs) | point get (median µs) |");
    println!("|---|---:|---:|");
    let mut med = Vec::new();
    for (i, (name, _)) in stores.iter().enumerate() {
        let (s, g) = (median(&mut sets[i]), median(&mut gets[i]));
        println!("| {name} | {s:.1} | {g:.2} |");
        med.push((s, g));
    }
    let (owner, client, _, exclusive) = (med[0], med[1], med[2], med[3]);
    println!(
        "owner vs exclusive, speed: set {:.2}x, get {:.2}x; client vs owner, time: set {:.2}x",
        exclusive.0 / owner.0,
        exclusive.1 / owner.1,
        client.0 / owner.0
    );
}
