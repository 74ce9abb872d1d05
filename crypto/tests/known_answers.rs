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
/// Version 2 adds the meta digest (0x5d...) after the name key.
fn keyring_plaintext(version: u8) -> Vec<u8> {
    let mut p = vec![version];
    p.extend_from_slice(&[0x11; 32]);
    if version >= 2 {
        p.extend_from_slice(&[0x5d; 32]);
    }
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

/// A nonce of distinct bytes (`seed`, `seed + 1`, …): a construction that swapped or
/// dropped nonce halves would not give the committed bytes, as it might with a nonce of
/// one repeated byte.
fn counting_nonce(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn compute() -> Vec<(String, Vec<u8>)> {
    let record = internal::seal_keyring_plaintext(
        &master(),
        &DB_ID,
        &KEYRING_NONCE,
        &keyring_plaintext(1),
        1,
    )
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
    let v2_nonce: [u8; 24] = counting_nonce(0x30, 24).try_into().unwrap();
    let record_v2 =
        internal::seal_keyring_plaintext(&master(), &DB_ID, &v2_nonce, &keyring_plaintext(2), 2)
            .unwrap();
    out.push(("keyring-v2".to_string(), record_v2));
    for (key_id, alg) in [
        (1u32, Algorithm::XChaCha20Poly1305),
        (2, Algorithm::Aes256Gcm),
    ] {
        let nonce = counting_nonce(0x60 + key_id as u8, alg.nonce_len());
        let sealed =
            internal::seal_with_nonce(&ring, key_id, &nonce, &Compression::NONE, &ctx, &plaintext)
                .unwrap();
        out.push((format!("{}-none-counting-nonce", alg.name()), sealed));
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
            "# sealkv format known answers: name, then hex bytes. See known_answers.rs.\n",
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
        10,
        "ten vectors: keyring v1, 2 algorithms x 3 codecs, keyring v2, 2 counting nonces"
    );
    let ring = Keyring::open(&master(), &DB_ID, &committed[0].1).expect("committed keyring opens");
    assert_eq!(ring.primary().id(), 2);
    assert_eq!(ring.bound_meta(), None, "a version 1 keyring binds no meta");
    let v2 = Keyring::open(&master(), &DB_ID, &committed[7].1).expect("keyring v2 opens");
    assert_eq!(v2.bound_meta(), Some(&[0x5d; 32]));
    assert_eq!(v2.primary().id(), 2);
    let plaintext = b"sealkv known answer ".repeat(8);
    let ctx = Context {
        db_id: &DB_ID,
        namespace: b"session",
        key: b"4915550001.0",
    };
    for ((name, bytes), (cname, cbytes)) in committed.iter().zip(&computed) {
        assert_eq!(name, cname);
        if !name.starts_with("keyring") {
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

/// draft-irtf-cfrg-xchacha-03, appendix A.3.1: the published XChaCha20-Poly1305 vector,
/// through the data-key construction (HChaCha20 subkey, then ring's ChaCha20-Poly1305).
/// Its nonce has 24 distinct bytes, so swapped nonce halves or a wrong subkey input
/// would not give these bytes.
#[test]
fn xchacha20poly1305_matches_the_draft_vector() {
    let key: [u8; 32] =
        hex::decode("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .unwrap()
            .try_into()
            .unwrap();
    let nonce = hex::decode("404142434445464748494a4b4c4d4e4f5051525354555657").unwrap();
    let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let expected = concat!(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb",
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452",
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9",
        "21f9664c97637da9768812f615c68b13b52e",
        "c0875924c1c7987947deafd8780acf49"
    );
    let sealed =
        internal::aead_seal(Algorithm::XChaCha20Poly1305, &key, &nonce, &aad, plaintext).unwrap();
    assert_eq!(hex::encode(sealed), expected);
}
