//! Peak memory (RSS) of opening a store of 1M entries and reading 100k random keys,
//! for sealkv with default options and for raw redb holding the same data.
//!
//! Each phase runs in a fresh child process, so the peak (`VmHWM` from
//! `/proc/self/status`, Linux only) covers just that phase.
//!
//! Run: `cargo run --release -p sealkv-benches --bin memory [ENTRIES] [READS]`
//! (defaults 1000000 and 100000; values are 1 KiB of Baileys-like JSON).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use redb::{ReadableDatabase, TableDefinition};
use sealkv_benches::auth_like_value;
use sealkv_engine::{Batch, MasterKey, Options, Store};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
const VALUE: usize = 1024;

fn key_name(i: usize) -> String {
    format!("4915550{i:07}.0")
}

fn master() -> MasterKey {
    MasterKey::from_bytes(&[7; 32]).expect("32 bytes")
}

/// Peak resident set size of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Random-looking key indices, the same in every phase.
fn picks(entries: usize, reads: usize) -> impl Iterator<Item = usize> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..reads).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % entries as u64) as usize
    })
}

fn fill(dir: &Path, entries: usize) {
    let store = Store::create(dir.join("m.sealkv"), master(), Options::default()).expect("create");
    let raw = redb::Database::create(dir.join("m.redb")).expect("raw");
    for start in (0..entries).step_by(10_000) {
        let end = (start + 10_000).min(entries);
        let mut batch = Batch::new();
        let txn = raw.begin_write().expect("w");
        {
            let mut t = txn.open_table(RAW).expect("t");
            for i in start..end {
                let v = auth_like_value(VALUE, i as u64);
                t.insert(key_name(i).as_bytes(), v.as_slice()).expect("i");
                batch.put("session", &key_name(i), v);
            }
        }
        txn.commit().expect("c");
        store.set(&batch).expect("fill");
    }
}

fn read_sealkv(dir: &Path, entries: usize, reads: usize) -> usize {
    let store = Store::open(dir.join("m.sealkv"), master(), Options::default()).expect("open");
    let mut bytes = 0;
    for i in picks(entries, reads) {
        let k = key_name(i);
        let found = store.get("session", &[k.as_str()]).expect("get");
        bytes += found.values().map(|v| v.len()).sum::<usize>();
    }
    bytes
}

fn read_raw(dir: &Path, entries: usize, reads: usize) -> usize {
    let db = redb::Database::open(dir.join("m.redb")).expect("open");
    let txn = db.begin_read().expect("r");
    let t = txn.open_table(RAW).expect("t");
    let mut bytes = 0;
    for i in picks(entries, reads) {
        bytes += t
            .get(key_name(i).as_bytes())
            .expect("get")
            .map_or(0, |v| v.value().len());
    }
    bytes
}

fn child(phase: &str, dir: &Path, entries: usize, reads: usize) -> String {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--phase",
            phase,
            &dir.display().to_string(),
            &entries.to_string(),
            &reads.to_string(),
        ])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{phase}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--phase") {
        let (phase, dir) = (args[1].as_str(), Path::new(&args[2]));
        let entries: usize = args[3].parse().expect("entries");
        let reads: usize = args[4].parse().expect("reads");
        let start = Instant::now();
        let bytes = match phase {
            "fill" => {
                fill(dir, entries);
                0
            }
            "sealkv" => read_sealkv(dir, entries, reads),
            "raw" => read_raw(dir, entries, reads),
            other => panic!("unknown phase {other}"),
        };
        println!(
            "{} {:.2} {bytes}",
            peak_rss_kib(),
            start.elapsed().as_secs_f64()
        );
        return;
    }
    let entries: usize = args
        .first()
        .map_or(1_000_000, |a| a.parse().expect("ENTRIES"));
    let reads: usize = args.get(1).map_or(100_000, |a| a.parse().expect("READS"));
    let dir = tempfile::tempdir().expect("dir");
    let filled = child("fill", dir.path(), entries, reads);
    let size = |name: &str| {
        std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64
    };
    println!(
        "filled {entries} entries of {VALUE} B in {} s: sealkv file {:.0} MiB, raw redb file {:.0} MiB",
        filled.split(' ').nth(1).unwrap_or("?"),
        size("m.sealkv"),
        size("m.redb")
    );
    println!("| open + {reads} random point gets | peak RSS | time | bytes read |");
    println!("|---|---|---|---|");
    for (name, phase) in [("sealkv (default options)", "sealkv"), ("raw redb", "raw")] {
        let out = child(phase, dir.path(), entries, reads);
        let f: Vec<&str> = out.split(' ').collect();
        let rss_mib = f[0].parse::<f64>().unwrap_or(0.0) / 1024.0;
        println!("| {name} | {rss_mib:.0} MiB | {} s | {} |", f[1], f[2]);
    }
}
