//! Arbitrary bytes as a sealed value: parsing and opening must fail cleanly, never
//! panic, and never allocate more than the limit. A valid envelope with one byte
//! changed by the fuzzer must not open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkv_crypto::{envelope, Algorithm, Compression, Context, Header, Keyring};
use std::sync::OnceLock;

fn ring() -> &'static (Keyring, Vec<u8>) {
    static RING: OnceLock<(Keyring, Vec<u8>)> = OnceLock::new();
    RING.get_or_init(|| {
        let mut ring = Keyring::new(Algorithm::XChaCha20Poly1305, 0);
        ring.rotate(Algorithm::Aes256Gcm, 0).expect("rotate");
        let ctx = Context { db_id: &[0; 16], namespace: b"n", key: b"k" };
        let sealed = envelope::seal(&ring, &Compression::default(), &ctx, &[b'a'; 300]).expect("seal");
        (ring, sealed)
    })
}

fuzz_target!(|data: &[u8]| {
    let (ring, sealed) = ring();
    let ctx = Context { db_id: &[0; 16], namespace: b"n", key: b"k" };
    let _ = Header::parse(data);
    if let Ok(v) = envelope::open(ring, &ctx, data, 4096) {
        // Only the one envelope we sealed can open.
        assert_eq!(data, &sealed[..]);
        assert!(v.len() <= 4096);
    }
    // Splice the input over the valid envelope: any change must be detected.
    if !data.is_empty() {
        let mut spliced = sealed.clone();
        let at = data[0] as usize % spliced.len();
        let n = (data.len() - 1).min(spliced.len() - at);
        spliced[at..at + n].copy_from_slice(&data[1..1 + n]);
        if spliced != *sealed {
            assert!(envelope::open(ring, &ctx, &spliced, 4096).is_err());
        }
    }
});
