//! Prints the ratio table from the last criterion run (target/criterion), comparing
//! sealkv with its peers measured in the same run.
//!
//! Run after `cargo bench -p sealkv-benches`: `cargo run -p sealkv-benches --bin ratios`.

use std::path::{Path, PathBuf};

/// Mean time per iteration in nanoseconds, from criterion's estimates.json.
fn mean_ns(root: &Path, group: &str, id: &str) -> Option<f64> {
    let path = root.join(group).join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"));
    // (what, group, sealkv id, peer id, items per iteration of the sealkv side / of the peer side, target)
    let rows: &[(&str, &str, &str, &str, f64, f64, &str)] = &[
        (
            "point get 1 KiB, default (snappy + XChaCha20) vs raw redb",
            "get-1KiB",
            "sealkv-default",
            "raw-redb",
            1.0,
            1.0,
            ">= 0.5",
        ),
        (
            "point get 1 KiB, default vs raw redb returning an owned copy",
            "get-1KiB",
            "sealkv-default",
            "raw-redb-owned",
            1.0,
            1.0,
            ">= 0.5",
        ),
        (
            "point get 1 KiB, zstd + XChaCha20 vs raw redb",
            "get-1KiB",
            "sealkv-zstd-xchacha",
            "raw-redb",
            1.0,
            1.0,
            "-",
        ),
        (
            "point get 1 KiB, snappy + AES-256-GCM vs raw redb",
            "get-1KiB",
            "sealkv-snappy-aesgcm",
            "raw-redb",
            1.0,
            1.0,
            ">= 0.5",
        ),
        (
            "durable set 1 KiB vs raw redb durable put",
            "durable-set-1KiB",
            "sealkv",
            "raw-redb",
            1.0,
            1.0,
            ">= 0.9",
        ),
        (
            "16 threads distinct keys vs 1 thread (rate)",
            "durable-transactions",
            "threads/16",
            "threads/1",
            320.0,
            20.0,
            ">= 10",
        ),
        (
            "ceiling for 16 threads: raw redb, 16 puts per durable commit vs 1 (rate)",
            "raw-redb-durable-batch",
            "puts/16",
            "puts/1",
            16.0,
            1.0,
            "-",
        ),
        (
            "8 threads distinct keys vs 1 thread (rate)",
            "durable-transactions",
            "threads/8",
            "threads/1",
            160.0,
            20.0,
            "-",
        ),
        (
            "bulk import, batches of 1000, vs raw redb",
            "bulk-import-1000x1KiB",
            "sealkv",
            "raw-redb",
            1.0,
            1.0,
            ">= 0.8",
        ),
        (
            "bulk import vs raw redb inserting the same names in hashed order",
            "bulk-import-1000x1KiB",
            "sealkv",
            "raw-redb-hashed-order",
            1.0,
            1.0,
            "-",
        ),
        (
            "point get 1 KiB vs SQLCipher",
            "peer-get-1KiB",
            "sealkv",
            "sqlcipher",
            1.0,
            1.0,
            "> 1",
        ),
        (
            "durable single write 1 KiB vs SQLCipher",
            "peer-durable-set-1KiB",
            "sealkv",
            "sqlcipher",
            1.0,
            1.0,
            "> 1",
        ),
    ];
    println!("| comparison (throughput ratio, higher is better for sealkv) | ratio | target |");
    println!("|---|---|---|");
    for (what, group, ours, peer, ours_items, peer_items, target) in rows {
        match (mean_ns(&root, group, ours), mean_ns(&root, group, peer)) {
            (Some(a), Some(b)) => {
                // Throughput ratio: (items/time) ours over (items/time) peer.
                let ratio = (ours_items / a) / (peer_items / b);
                println!("| {what} | {ratio:.2}x | {target} |");
            }
            _ => println!("| {what} | not measured | {target} |"),
        }
    }
}
