//! Typed values: the encoding `put_as`/`get_as` use (MessagePack with field names)
//! against JSON and postcard, on a
//! creds-shaped struct: encode and decode time, and the bytes stored (raw and after
//! snappy, which the store applies), then `get_as` against a plain `get_one` on a store.
//!
//! Run: `cargo bench -p sealkv-benches --bench typed`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sealkv_engine::{MasterKey, Options, Store};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct KeyPair {
    public: Vec<u8>,
    private: Vec<u8>,
}

#[derive(Clone, Serialize, Deserialize)]
struct SignedPreKey {
    key_pair: KeyPair,
    key_id: u32,
    signature: Vec<u8>,
}

/// Baileys' `AuthenticationCreds`, as a Rust bot would type them (keys as byte vectors).
#[derive(Clone, Serialize, Deserialize)]
struct Creds {
    noise_key: KeyPair,
    pairing_ephemeral_key_pair: KeyPair,
    signed_identity_key: KeyPair,
    signed_pre_key: SignedPreKey,
    registration_id: u32,
    adv_secret_key: String,
    me: Option<Me>,
    account: Option<Vec<u8>>,
    next_pre_key_id: u32,
    first_unuploaded_pre_key_id: u32,
    account_sync_counter: u32,
    registered: bool,
    platform: Option<String>,
    routing_info: Option<Vec<u8>>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Me {
    id: String,
    lid: String,
    name: String,
}

fn pair(seed: u8) -> KeyPair {
    KeyPair {
        public: (0..32)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i))
            .collect(),
        private: (0..32)
            .map(|i| seed.wrapping_mul(17).wrapping_add(i * 3))
            .collect(),
    }
}

fn creds() -> Creds {
    Creds {
        noise_key: pair(1),
        pairing_ephemeral_key_pair: pair(2),
        signed_identity_key: pair(3),
        signed_pre_key: SignedPreKey {
            key_pair: pair(4),
            key_id: 1,
            signature: (0..64).map(|i| (i * 7) as u8).collect(),
        },
        registration_id: 14_223,
        adv_secret_key: "nU2Y3kQ0W2m5x8ZQkF1p7Tg8s0b3JxYv6R1cLh9eXo4=".into(),
        me: Some(Me {
            id: "4915550001:7@s.whatsapp.net".into(),
            lid: "102938475610293:7@lid".into(),
            name: "bot".into(),
        }),
        account: Some((0..420).map(|i| (i * 13) as u8).collect()),
        next_pre_key_id: 813,
        first_unuploaded_pre_key_id: 813,
        account_sync_counter: 3,
        registered: true,
        platform: Some("smba".into()),
        routing_info: Some(vec![8, 8, 8, 2, 1]),
    }
}

fn snappy_len(bytes: &[u8]) -> usize {
    snap::raw::Encoder::new()
        .compress_vec(bytes)
        .expect("snappy")
        .len()
}

fn encodings(c: &mut Criterion) {
    let value = creds();
    let json = serde_json::to_vec(&value).expect("json");
    let post = postcard::to_allocvec(&value).expect("postcard");
    let msgpack = rmp_serde::to_vec_named(&value).expect("msgpack");
    for (name, bytes) in [
        ("json", &json),
        ("postcard", &post),
        ("msgpack-named", &msgpack),
    ] {
        println!(
            "creds-shaped value, {name}: {} bytes ({} after snappy)",
            bytes.len(),
            snappy_len(bytes)
        );
    }
    let mut g = c.benchmark_group("typed-creds");
    g.bench_function("json-encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&value)).expect("json"))
    });
    g.bench_function("json-decode", |b| {
        b.iter(|| serde_json::from_slice::<Creds>(black_box(&json)).expect("json"))
    });
    g.bench_function("postcard-encode", |b| {
        b.iter(|| postcard::to_allocvec(black_box(&value)).expect("postcard"))
    });
    g.bench_function("postcard-decode", |b| {
        b.iter(|| postcard::from_bytes::<Creds>(black_box(&post)).expect("postcard"))
    });
    g.bench_function("msgpack-named-encode", |b| {
        b.iter(|| rmp_serde::to_vec_named(black_box(&value)).expect("msgpack"))
    });
    g.bench_function("msgpack-named-decode", |b| {
        b.iter(|| rmp_serde::from_slice::<Creds>(black_box(&msgpack)).expect("msgpack"))
    });
    g.finish();

    // What it adds to a read: get_as against get_one of the same bytes.
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::create(
        dir.path().join("t.sealkv"),
        MasterKey::generate().expect("os random"),
        Options::default(),
    )
    .expect("create");
    store.put_as("creds", "creds", &value).expect("put");
    let mut g = c.benchmark_group("typed-store");
    g.bench_function("get_one", |b| {
        b.iter(|| {
            store
                .get_one("creds", "creds")
                .expect("get")
                .expect("present")
        })
    });
    g.bench_function("get_as", |b| {
        b.iter(|| {
            store
                .get_as::<Creds>("creds", "creds")
                .expect("get")
                .expect("present")
        })
    });
    g.finish();
}

criterion_group!(benches, encodings);
criterion_main!(benches);
