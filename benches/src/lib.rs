//! Shared helpers for sealkv's criterion benches (the benches live in `benches/`).

/// A stream of random-looking 32-byte keys (as sealkv's row keys are: keyed tags, spread
/// over the B-tree), from a xorshift generator started at `seed`.
pub fn random_row_keys(seed: u64) -> impl FnMut() -> [u8; 32] {
    let mut state = seed;
    move || {
        let mut k = [0u8; 32];
        for chunk in k.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        k
    }
}

/// A value of `size` bytes shaped like Baileys auth state: JSON with base64 key
/// material. Deterministic for a given `seed`.
pub fn auth_like_value(size: usize, seed: u64) -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(size);
    let mut field = 0;
    while out.len() < size {
        out.extend_from_slice(
            format!("{{\"field{field}\":{{\"type\":\"Buffer\",\"data\":\"").as_bytes(),
        );
        for _ in 0..44 {
            out.push(B64[(next() % 64) as usize]);
        }
        out.extend_from_slice(b"\"}},");
        field += 1;
    }
    out.truncate(size);
    out
}

/// The key of the `i`-th value in the benches: a Baileys session id.
pub fn key_name(i: usize) -> String {
    format!("4915550{i:06}.0")
}

/// The length of a value a read bench looked up, which must be there.
pub fn found_len(read: sealkv_engine::Result<Option<sealkv_engine::Value>>) -> usize {
    read.expect("get").expect("present").len()
}

/// Writes `n` 1 KiB values named by [`key_name`] into `namespace`, 1,000 per batch,
/// through `set` (a store's or a session's).
pub fn fill(set: impl Fn(&sealkv_engine::Batch), n: usize, namespace: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut b = sealkv_engine::Batch::new();
        for &i in chunk {
            b.put(namespace, &key_name(i), auth_like_value(1024, i as u64));
        }
        set(&b);
    }
}

/// One round of the group-commit benches: `threads` threads, each committing 20
/// one-value transactions under a lock key of its own.
pub fn transaction_round(store: &sealkv_engine::Store, threads: usize, value: &[u8]) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for j in 0..20 {
                    store
                        .transaction(&format!("acct{t}"), |tx| {
                            tx.put("session", &format!("{t}.{j}"), value.to_vec());
                            Ok::<_, sealkv_engine::Error>(())
                        })
                        .expect("tx");
                }
            });
        }
    });
}

/// Lets the disk settle after a fill: a store that commits through its journal folds
/// the fill into its file within a second (a checkpoint writing every page the fill
/// dirtied), and the kernel writes back what it buffered. Measuring before that times
/// the first store against that I/O. Waits 1.5 s, then syncs the file systems.
pub fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    // `sync` is POSIX; where it is missing the wait alone has to do.
    let _ = std::process::Command::new("sync").status();
}

/// A new store named `name` in `dir`, in `mode` (default options otherwise), with its
/// path and key, so a second handle (a client of its owner) can open it.
pub fn create_store(
    dir: &std::path::Path,
    name: &str,
    mode: sealkv_engine::Concurrency,
) -> (
    sealkv_engine::Store,
    std::path::PathBuf,
    sealkv_engine::MasterKey,
) {
    let path = dir.join(name);
    let key = sealkv_engine::MasterKey::generate().expect("os random");
    let store = sealkv_engine::Store::create(
        &path,
        key.clone(),
        sealkv_engine::Options {
            concurrency: mode,
            ..sealkv_engine::Options::default()
        },
    )
    .expect("create");
    (store, path, key)
}
