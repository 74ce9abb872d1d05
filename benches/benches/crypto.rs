//! Seal + open throughput of the envelope: both algorithms, each codec, 64 B to 16 KiB.
//!
//! Values look like bot auth state: JSON with base64 key material, which compresses
//! somewhat (the JSON) but not much (the keys).
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
        let ring = Keyring::new(alg, 0);
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

criterion_group!(benches, seal_open);
criterion_main!(benches);
