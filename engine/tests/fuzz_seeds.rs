//! Replays the committed fuzz seeds (`fuzz/seeds/`) through the same bodies the
//! cargo-fuzz targets run, and runs a small deterministic mutation fuzz of a valid
//! store file, so every CI run exercises them without a nightly toolchain.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use rand::{Rng, SeedableRng};
use sealkv_engine::internal::{fuzz_concurrent, fuzz_open, fuzz_ops, write_seed_store};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

#[test]
fn store_ops_seeds_hold_the_model() {
    let seeds = seeds("store_ops");
    assert!(!seeds.is_empty());
    for s in &seeds {
        fuzz_ops(s);
    }
}

#[test]
fn store_concurrent_seeds_hold_the_models() {
    let seeds = seeds("store_concurrent");
    assert!(!seeds.is_empty());
    for s in &seeds {
        fuzz_concurrent(s);
    }
}

#[test]
fn store_open_seeds_never_panic() {
    let seeds = seeds("store_open");
    assert!(!seeds.is_empty());
    for s in &seeds {
        fuzz_open(s);
    }
}

#[test]
fn mutated_store_files_open_cleanly_or_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.sealkv");
    write_seed_store(&path).unwrap();
    let valid = std::fs::read(&path).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..300 {
        let mut bytes = valid.clone();
        match round % 3 {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
            }
            1 => bytes.truncate(rng.random_range(0..bytes.len())),
            _ => {
                let i = rng.random_range(0..bytes.len() - 16);
                rng.fill(&mut bytes[i..i + 16]);
            }
        }
        fuzz_open(&bytes);
    }
}
