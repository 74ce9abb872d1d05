//! Seal + open throughput of the envelope: both algorithms, each codec, 64 B to 16 KiB.
//!
//! Values look like bot auth state: JSON with base64 key material, which compresses
//! somewhat (the JSON) but not much (the keys).
//!
//! Also the cost of drawing nonces from the operating system (every seal does, see
//! crypto/src/random.rs) next to rand's user-space ThreadRng, which does not reseed
//! after fork() and so is not used, and the cost of a seal alone.
//!
//! Run: `cargo bench -p sealkv-benches --bench crypto`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealkv_benches::auth_like_value;
use sealkv_crypto::{Algorithm, Codec, Compression, Context, Keyring, envelope};

fn seal_open(c: &mut Criterion) {
    let db_id = [1u8; 16];
    let ctx = Context {
        db_id: &db_id,
        namespace: b"session",
        key: b"4915550001.0",
    };
    for alg in [Algorithm::XChaCha20Poly1305, Algorithm::Aes256Gcm] {
        let ring = Keyring::new(alg, 0).expect("os random");
        let mut group = c.benchmark_group(format!("seal+open/{}", alg.name()));
        for size in [64usize, 1024, 16 * 1024] {
            let value = auth_like_value(size, 7);
            group.throughput(Throughput::Bytes(size as u64));
            for codec in [Codec::None, Codec::Zstd, Codec::Snappy] {
                let compression = Compression::with_codec(codec);
                group.bench_with_input(BenchmarkId::new(codec.name(), size), &value, |b, v| {
                    b.iter(|| {
                        let sealed = envelope::seal(&ring, &compression, &ctx, v).expect("seal");
                        envelope::open(&ring, &ctx, &sealed, 1 << 20).expect("open")
                    })
                });
            }
        }
        group.finish();
    }
}

fn nonces(c: &mut Criterion) {
    let mut group = c.benchmark_group("nonce-24B");
    let mut nonce = [0u8; 24];
    group.bench_function("os-getrandom", |b| {
        b.iter(|| {
            sealkv_crypto::fill_random(&mut nonce).expect("os random");
            nonce[0]
        })
    });
    group.bench_function("rand-threadrng", |b| {
        b.iter(|| {
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
            nonce[0]
        })
    });
    group.finish();

    let db_id = [1u8; 16];
    let ctx = Context {
        db_id: &db_id,
        namespace: b"session",
        key: b"4915550001.0",
    };
    let ring = Keyring::new(Algorithm::XChaCha20Poly1305, 0).expect("os random");
    let value = auth_like_value(1024, 7);
    let compression = Compression::with_codec(Codec::Snappy);
    c.bench_function("seal-1KiB/xchacha20poly1305-snappy", |b| {
        b.iter(|| envelope::seal(&ring, &compression, &ctx, &value).expect("seal"))
    });
}

criterion_group!(benches, seal_open, nonces);
criterion_main!(benches);
