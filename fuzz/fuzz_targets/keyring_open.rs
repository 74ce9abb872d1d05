//! Arbitrary bytes as a sealed keyring record, and as the keyring plaintext behind a
//! valid seal: both must give an error or a consistent keyring, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkv_crypto::{internal, Keyring, MasterKey};

fuzz_target!(|data: &[u8]| {
    let master = MasterKey::from_bytes(&[9; 32]).expect("32 bytes");
    let _ = Keyring::open(&master, &[1; 16], data);
    // The plaintext parser sits behind the AEAD; reach it by sealing the input.
    let record = internal::seal_keyring_plaintext(&master, &[1; 16], &[2; 24], data).expect("seal");
    if let Ok(ring) = Keyring::open(&master, &[1; 16], &record) {
        // A parsed keyring is consistent: it has a primary and reseals.
        let _ = ring.primary().id();
        let resealed = ring.seal(&master, &[1; 16]).expect("reseal");
        assert!(Keyring::open(&master, &[1; 16], &resealed).is_ok());
    }
});
