//! Replays the committed fuzz seeds (`fuzz/seeds/`) through the bodies the cargo-fuzz
//! targets run, on every CI run.

use std::path::Path;

use sealkv_crypto::internal::{fuzz_envelope, fuzz_keyring};

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let bytes = std::fs::read(entry.map(|e| e.path()).unwrap_or_default()).unwrap_or_default();
        body(&bytes);
        n += 1;
    }
    assert!(n > 0, "no seeds for {target}");
}

#[test]
fn envelope_seeds() {
    replay("envelope_open", fuzz_envelope);
}

#[test]
fn keyring_seeds() {
    replay("keyring_open", fuzz_keyring);
}
