//! Property tests: seal/open round-trips for every algorithm and codec.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use sealkv_crypto::{Algorithm, Codec, Compression, Context, Keyring, MasterKey, envelope};

const LIMIT: usize = 1 << 20;

fn algorithms() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::XChaCha20Poly1305),
        Just(Algorithm::Aes256Gcm)
    ]
}

fn codecs() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::None), Just(Codec::Zstd), Just(Codec::Snappy)]
}

fn values() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        // Compressible: a few distinct bytes repeated.
        (proptest::collection::vec(any::<u8>(), 1..8), 0usize..4096).prop_map(|(unit, n)| unit
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn seal_then_open_returns_the_value(
        alg in algorithms(),
        codec in codecs(),
        level in 1i32..4,
        value in values(),
        ns in proptest::collection::vec(any::<u8>(), 0..40),
        key in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let ring = Keyring::new(alg, 0).unwrap();
        let compression = Compression { codec, zstd_level: level, min_size: 16 };
        let ctx = Context { db_id: &[3; 16], namespace: &ns, key: &key };
        let sealed = envelope::seal(&ring, &compression, &ctx, &value).unwrap();
        prop_assert!(sealed.len() <= value.len() + 48);
        let opened = envelope::open(&ring, &ctx, &sealed, LIMIT).unwrap();
        prop_assert_eq!(&opened[..], &value[..]);
    }

    #[test]
    fn keyring_survives_rotation_and_resealing(rotations in 0usize..6, destroy_first in any::<bool>()) {
        let master = MasterKey::generate().unwrap();
        let mut ring = Keyring::new(Algorithm::XChaCha20Poly1305, 0).unwrap();
        let ctx = Context { db_id: &[4; 16], namespace: b"n", key: b"k" };
        let mut sealed = vec![envelope::seal(&ring, &Compression::default(), &ctx, b"v0").unwrap()];
        for i in 0..rotations {
            let alg = if i % 2 == 0 { Algorithm::Aes256Gcm } else { Algorithm::XChaCha20Poly1305 };
            ring.rotate(alg, i as u64).unwrap();
            sealed.push(envelope::seal(&ring, &Compression::default(), &ctx, format!("v{}", i + 1).as_bytes()).unwrap());
        }
        if destroy_first && rotations > 0 {
            ring.destroy(1).unwrap();
        }
        let ring = Keyring::open(&master, &[4; 16], ring.seal(&master, &[4; 16], &[0; 32]).unwrap().record()).unwrap();
        for (i, s) in sealed.iter().enumerate() {
            let got = envelope::open(&ring, &ctx, s, LIMIT);
            if i == 0 && destroy_first && rotations > 0 {
                prop_assert!(got.is_err());
            } else {
                let want = format!("v{i}");
                prop_assert_eq!(&got.unwrap()[..], want.as_bytes());
            }
        }
    }
}

#[test]
fn empty_and_maximum_size_values_roundtrip() {
    let max = 4 << 20;
    let big: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    for alg in [Algorithm::XChaCha20Poly1305, Algorithm::Aes256Gcm] {
        let ring = Keyring::new(alg, 0).unwrap();
        for codec in [Codec::None, Codec::Zstd, Codec::Snappy] {
            let c = Compression::with_codec(codec);
            let ctx = Context {
                db_id: &[5; 16],
                namespace: b"ns",
                key: b"k",
            };
            for value in [&[][..], &big[..]] {
                let sealed = envelope::seal(&ring, &c, &ctx, value).unwrap();
                assert_eq!(
                    &envelope::open(&ring, &ctx, &sealed, max).unwrap()[..],
                    value
                );
            }
            let sealed = envelope::seal(&ring, &c, &ctx, &big).unwrap();
            assert!(envelope::open(&ring, &ctx, &sealed, max - 1).is_err());
        }
    }
}
