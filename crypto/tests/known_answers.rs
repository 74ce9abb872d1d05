//! Known-answer vectors: fixed keys, nonces and plaintexts give exactly the committed
//! bytes, and the committed bytes open. If a later version changes the format, this
//! test says so; the committed vectors must keep opening forever.
//!
//! Regenerate (only for a deliberate format change) with
//! `SEALKV_WRITE_KAT=1 cargo test -p sealkv-crypto --test known_answers`.
#![allow(clippy::unwrap_used)]

use sealkv_crypto::{
    Algorithm, Codec, Compression, Context, Keyring, MasterKey, envelope, internal,
};

const DB_ID: [u8; 16] = [0xdb; 16];
const KEYRING_NONCE: [u8; 24] = [0x24; 24];
const VECTORS: &str = include_str!("vectors/envelope-v1.txt");

fn master() -> MasterKey {
    MasterKey::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap()
}

/// Keyring plaintext written by hand from docs/FORMAT.md: name key 0x11..., key 1
/// XChaCha20-Poly1305 decrypt-only (0x42...), key 2 AES-256-GCM primary (0x43...).
fn keyring_plaintext() -> Vec<u8> {
    let mut p = vec![1u8];
    p.extend_from_slice(&[0x11; 32]);
    p.extend_from_slice(&3u32.to_le_bytes());
    p.extend_from_slice(&2u32.to_le_bytes());
    for (id, alg, state, byte) in [(1u32, 1u8, 2u8, 0x42u8), (2, 2, 1, 0x43)] {
        p.extend_from_slice(&id.to_le_bytes());
        p.push(alg);
        p.push(state);
        p.extend_from_slice(&1_700_000_000u64.to_le_bytes());
        p.extend_from_slice(&7u64.to_le_bytes());
        p.extend_from_slice(&[byte; 32]);
    }
    p
}

fn compute() -> Vec<(String, Vec<u8>)> {
    let record =
        internal::seal_keyring_plaintext(&master(), &DB_ID, &KEYRING_NONCE, &keyring_plaintext())
            .unwrap();
    let ring = Keyring::open(&master(), &DB_ID, &record).unwrap();
    let mut out = vec![("keyring".to_string(), record)];
    let plaintext = b"sealkv known answer ".repeat(8);
    let ctx = Context {
        db_id: &DB_ID,
        namespace: b"session",
        key: b"4915550001.0",
    };
    for (key_id, alg) in [
        (1u32, Algorithm::XChaCha20Poly1305),
        (2, Algorithm::Aes256Gcm),
    ] {
        for codec in [Codec::None, Codec::Zstd, Codec::Snappy] {
            let nonce = vec![key_id as u8 * 0x10 + codec as u8; alg.nonce_len()];
            let c = Compression {
                codec,
                zstd_level: 1,
                min_size: 16,
            };
            let sealed =
                internal::seal_with_nonce(&ring, key_id, &nonce, &c, &ctx, &plaintext).unwrap();
            out.push((format!("{}-{}", alg.name(), codec.name()), sealed));
        }
    }
    out
}

fn committed() -> Vec<(String, Vec<u8>)> {
    VECTORS
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, hex_bytes) = l.split_once(' ').expect("vector line is `name hex`");
            (
                name.to_string(),
                hex::decode(hex_bytes.trim()).expect("vector is hex"),
            )
        })
        .collect()
}

#[test]
fn committed_vectors_open_and_match() {
    let computed = compute();
    if std::env::var_os("SEALKV_WRITE_KAT").is_some() {
        let mut text = String::from(
            "# sealkv format v1 known answers: name, then hex bytes. See known_answers.rs.\n",
        );
        for (name, bytes) in &computed {
            text.push_str(&format!("{name} {}\n", hex::encode(bytes)));
        }
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/envelope-v1.txt"),
            text,
        )
        .unwrap();
        return;
    }
    let committed = committed();
    assert_eq!(
        committed.len(),
        7,
        "seven vectors: keyring and 2 algorithms x 3 codecs"
    );
    let ring = Keyring::open(&master(), &DB_ID, &committed[0].1).expect("committed keyring opens");
    assert_eq!(ring.primary().id(), 2);
    let plaintext = b"sealkv known answer ".repeat(8);
    let ctx = Context {
        db_id: &DB_ID,
        namespace: b"session",
        key: b"4915550001.0",
    };
    for ((name, bytes), (cname, cbytes)) in committed.iter().zip(&computed) {
        assert_eq!(name, cname);
        if name != "keyring" {
            assert_eq!(
                &envelope::open(&ring, &ctx, bytes, 1 << 20).unwrap()[..],
                &plaintext[..],
                "{name} opens"
            );
        }
        // zstd's exact output may change with the zstd library version; what must never
        // change is that old bytes open (checked above). Every other vector is exact.
        if !name.ends_with("-zstd") {
            assert_eq!(hex::encode(bytes), hex::encode(cbytes), "{name} bytes");
        }
    }
}
