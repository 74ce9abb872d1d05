//! Fuzz bodies, shared by the cargo-fuzz targets in `fuzz/` and by the tests that
//! replay the committed seeds on every CI run.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::StorageBackend;
use sealkv_crypto::{KdfParams, MasterKey};

use crate::{Batch, Error, Options, Store};

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

fn fuzz_key() -> Option<MasterKey> {
    MasterKey::from_bytes(&[0x42; 32]).ok()
}

/// Options for fuzzing: cheap KDF, small cache.
pub fn fuzz_options() -> Options {
    Options {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        cache_size: 1 << 20,
        // The in-memory disks of the fuzz bodies have no byte-range locks.
        concurrency: crate::Concurrency::Exclusive,
        ..Options::default()
    }
}

/// Fuzz body: `data` as the bytes of a store file. Opening (read-write and read-only)
/// must give a result or an error, never a panic, a hang or an unbounded allocation.
pub fn fuzz_open(data: &[u8]) {
    let Some(key) = fuzz_key() else { return };
    let path = std::env::temp_dir().join(format!(
        "sealkv-fuzz-{}-{}.sealkv",
        std::process::id(),
        NEXT_FILE.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(store) = Store::open_read_only(&path, key.clone(), fuzz_options()) {
        let _ = store.verify();
        let _ = store.namespaces();
    }
    if let Ok(store) = Store::open(&path, key, fuzz_options()) {
        let _ = store.verify();
        let _ = store.put("fuzz", "k", b"v".to_vec());
    }
    let _ = std::fs::remove_file(&path);
}

/// Writes a small valid store to `path`, a seed for [`fuzz_open`].
pub fn write_seed_store(path: &Path) -> crate::Result<()> {
    let key = fuzz_key().ok_or(Error::WrongKey)?;
    let store = Store::create(path, key, fuzz_options())?;
    let mut b = Batch::new();
    b.put("session", "4915550001.0", b"session record".repeat(20))
        .put("creds", "creds", b"{}".to_vec());
    store.set(&b)?;
    Ok(())
}

/// An in-memory disk whose writes, syncs and resizes can fail at a chosen operation.
#[derive(Clone, Default)]
struct FaultyMemory {
    bytes: Arc<Mutex<Vec<u8>>>,
    /// The bytes of the store's commit journal, on the same disk (one fault count).
    journal: Arc<Mutex<Vec<u8>>>,
    ops: Arc<AtomicU64>,
    fail_at: Arc<AtomicU64>,
}

impl std::fmt::Debug for FaultyMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultyMemory")
    }
}

impl FaultyMemory {
    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn step(&self) -> io::Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        let at = self.fail_at.load(Ordering::SeqCst);
        if at != 0 && n >= at {
            return Err(io::Error::other("injected fault"));
        }
        Ok(())
    }
}

impl StorageBackend for FaultyMemory {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes().len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let b = self.bytes();
        let start = offset as usize;
        let src = b
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(src);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.step()?;
        self.bytes().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.step()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.step()?;
        let mut b = self.bytes();
        let end = offset as usize + data.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// [`fuzz_options`] with every store file on `disk`.
fn on_memory(disk: &FaultyMemory) -> Options {
    let disk = disk.clone();
    let factory: crate::rowstore::file::backend::BackendFactory =
        Arc::new(move |path: &Path, _| {
            let mut file = disk.clone();
            if path.extension().is_some_and(|e| e == "journal") {
                file.bytes = disk.journal.clone();
            }
            Ok(Box::new(file) as Box<dyn StorageBackend>)
        });
    Options {
        backend: Some(factory),
        ..fuzz_options()
    }
}

type Model = BTreeMap<(String, String), Vec<u8>>;

fn contents(store: &Store) -> Option<Model> {
    let mut out = Model::new();
    for ns in store.namespaces().ok()? {
        let keys = store.list(&ns).ok()?;
        for (k, v) in store.get(&ns, &keys).ok()? {
            out.insert((ns.clone(), k), v.to_vec());
        }
    }
    Some(out)
}

/// Fuzz body: `data` drives a sequence of operations (sets, deletes, transactions,
/// clears, reopens) against a `BTreeMap` model, with I/O failing from the operation
/// number in the first two bytes on. Every acknowledged write must be there after a
/// reopen; a failed one is there whole or not at all.
pub fn fuzz_ops(data: &[u8]) {
    let Some(key) = fuzz_key() else { return };
    let (fail_at, script) = match data {
        [a, b, rest @ ..] => (u64::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let disk = FaultyMemory::default();
    let opts = Options {
        commit_retries: 1,
        commit_retry_delay: Default::default(),
        ..on_memory(&disk)
    };
    let path = Path::new("fuzz-memory");
    let Ok(mut store) = Store::create(path, key.clone(), opts.clone()) else {
        // Creating fails only through an injected fault: then nothing is to be checked.
        assert!(
            fail_at > 0,
            "a store on a healthy in-memory disk must be created"
        );
        return;
    };
    disk.ops.store(0, Ordering::SeqCst);
    disk.fail_at.store(fail_at, Ordering::SeqCst);
    let mut model = Model::new();
    for chunk in script.chunks(3).take(64) {
        let [op, a, b] = match chunk {
            [op, a, b] => [*op, *a, *b],
            _ => break,
        };
        let ns = format!("ns{}", a % 3);
        let k = format!("k{}", b % 8);
        let value = vec![a ^ b; usize::from(b) * 4];
        let mut next = model.clone();
        let result = match op % 5 {
            0 => {
                next.insert((ns.clone(), k.clone()), value.clone());
                store.put(&ns, &k, value)
            }
            1 => {
                next.remove(&(ns.clone(), k.clone()));
                store.delete(&ns, &k).map(|_| ())
            }
            2 => {
                let other = format!("k{}", b.wrapping_add(1) % 8);
                next.insert((ns.clone(), k.clone()), value.clone());
                next.remove(&(ns.clone(), other.clone()));
                store.transaction(&ns, |tx| {
                    tx.put(&ns, &k, value.clone());
                    tx.delete(&ns, &other);
                    Ok::<_, Error>(())
                })
            }
            3 => {
                next.clear();
                store.clear()
            }
            _ => {
                drop(store);
                disk.fail_at.store(0, Ordering::SeqCst);
                match Store::open(path, key.clone(), opts.clone()) {
                    Ok(s) => store = s,
                    Err(e) => panic!("reopen after clean close failed: {e}"),
                }
                Ok(())
            }
        };
        match result {
            Ok(()) => model = next,
            Err(_) => {
                // Reopen without faults: the write is there whole or not at all.
                drop(store);
                disk.fail_at.store(0, Ordering::SeqCst);
                store = match Store::open(path, key.clone(), opts.clone()) {
                    Ok(s) => s,
                    Err(e) => panic!("store does not reopen after an injected fault: {e}"),
                };
                let now =
                    contents(&store).unwrap_or_else(|| panic!("contents unreadable after a fault"));
                assert!(
                    now == model || now == next,
                    "a failed write left a partial state"
                );
                model = now;
            }
        }
        assert!(
            contents(&store).is_some_and(|c| c == model),
            "store and model differ"
        );
    }
    drop(store);
    disk.fail_at.store(0, Ordering::SeqCst);
    let store = Store::open(path, key, opts).unwrap_or_else(|e| panic!("final reopen failed: {e}"));
    assert!(
        contents(&store).is_some_and(|c| c == model),
        "store and model differ after reopen"
    );
    assert!(store.verify().is_ok_and(|f| f.is_empty()), "verify failed");
}

/// Fuzz body: two threads drive handles of one in-memory store at once. `data` is
/// split into two scripts; each thread puts and deletes in a namespace of its own
/// (checked against its own model) and increments a shared counter in transactions
/// under one lock key. Whatever the interleaving, each namespace must match its model,
/// the counter must equal the increments made, and after a reopen `verify` is clean.
pub fn fuzz_concurrent(data: &[u8]) {
    let Some(key) = fuzz_key() else { return };
    let opts = on_memory(&FaultyMemory::default());
    let path = Path::new("fuzz-memory");
    let store = match Store::create(path, key.clone(), opts.clone()) {
        Ok(s) => s,
        Err(e) => panic!("a store on a healthy in-memory disk must be created: {e}"),
    };
    let half = data.len() / 2;
    let scripts = [&data[..half], &data[half..]];
    let results: Vec<(Model, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = scripts
            .iter()
            .enumerate()
            .map(|(t, script)| {
                let store = store.clone();
                s.spawn(move || run_script(&store, t, script))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    let check = |store: &Store| {
        let increments: u64 = results.iter().map(|(_, n)| n).sum();
        assert_eq!(counter(store), increments, "an increment was lost");
        for (t, (model, _)) in results.iter().enumerate() {
            let ns = format!("t{t}");
            let keys = store.list(&ns).unwrap_or_else(|e| panic!("list: {e}"));
            let got: Model = store
                .get(&ns, &keys)
                .unwrap_or_else(|e| panic!("get: {e}"))
                .into_iter()
                .map(|(k, v)| ((ns.clone(), k), v.to_vec()))
                .collect();
            assert!(
                &got == model,
                "thread {t}'s namespace differs from its model"
            );
        }
    };
    check(&store);
    drop(store);
    let store = Store::open(path, key, opts).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    check(&store);
    assert!(store.verify().is_ok_and(|f| f.is_empty()), "verify failed");
}

/// The shared counter of [`fuzz_concurrent`].
fn counter(store: &Store) -> u64 {
    match store.get_one("shared", "counter") {
        Ok(Some(v)) => v
            .as_slice()
            .try_into()
            .map(u64::from_le_bytes)
            .unwrap_or_else(|_| panic!("the counter is not 8 bytes")),
        Ok(None) => 0,
        Err(e) => panic!("counter: {e}"),
    }
}

/// One thread of [`fuzz_concurrent`]: returns its namespace's model and its increments.
fn run_script(store: &Store, t: usize, script: &[u8]) -> (Model, u64) {
    let ns = format!("t{t}");
    let mut model = Model::new();
    let mut increments = 0;
    for chunk in script.chunks(2).take(48) {
        let [op, a] = match chunk {
            [op, a] => [*op, *a],
            _ => break,
        };
        let k = format!("k{}", a % 8);
        match op % 4 {
            0 => {
                let value = vec![a; usize::from(op) * 3];
                store
                    .put(&ns, &k, value.clone())
                    .unwrap_or_else(|e| panic!("put: {e}"));
                model.insert((ns.clone(), k), value);
            }
            1 => {
                store
                    .delete(&ns, &k)
                    .unwrap_or_else(|e| panic!("delete: {e}"));
                model.remove(&(ns.clone(), k));
            }
            2 => {
                let value = vec![a ^ 0x5a; usize::from(a)];
                store
                    .transaction("counter", |tx| {
                        let n = tx
                            .get("shared", &["counter"])?
                            .get("counter")
                            .and_then(|v| v.as_slice().try_into().ok())
                            .map(u64::from_le_bytes)
                            .unwrap_or(0);
                        tx.put("shared", "counter", (n + 1).to_le_bytes().to_vec());
                        tx.put(&ns, &k, value.clone());
                        Ok::<_, Error>(())
                    })
                    .unwrap_or_else(|e| panic!("transaction: {e}"));
                increments += 1;
                model.insert((ns.clone(), k), value);
            }
            _ => {
                let got = store
                    .get_one(&ns, &k)
                    .unwrap_or_else(|e| panic!("get: {e}"));
                let want = model.get(&(ns.clone(), k));
                assert_eq!(
                    got.as_deref().map(|v| v.as_slice()),
                    want.map(Vec::as_slice)
                );
            }
        }
    }
    (model, increments)
}
