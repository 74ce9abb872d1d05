//! Power loss with torn writes: a backend keeps a "durable" image (what the last sync
//! made durable) and the writes since. At a crash point it builds what a disk might
//! hold after power loss, keeping a random subset of unsynced writes, some torn at a
//! 512-byte sector boundary; the store is then opened from that image and must hold
//! exactly the acknowledged commits (plus, at most, the one in flight), whole.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use rand::{Rng, SeedableRng};
use redb::StorageBackend;
use sealkv_engine::{Batch, Options, Store};

/// One file on the simulated disk: what a read sees, what the last sync made durable,
/// and the writes since.
#[derive(Default)]
struct File {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>, Option<u64>)>, // (offset, data, set_len)
}

impl File {
    /// What this file might hold after power loss: the durable image with a random
    /// subset of the writes since, some torn at a 512-byte sector boundary.
    fn after_power_loss(&self, rng: &mut rand::rngs::StdRng) -> Vec<u8> {
        let mut image = self.durable.clone();
        for (offset, data, set_len) in &self.pending {
            if let Some(len) = set_len {
                if rng.random_bool(0.5) {
                    image.resize(*len as usize, 0);
                }
                continue;
            }
            let keep = match rng.random_range(0..4) {
                0 | 1 => 0,                                                          // lost
                2 => data.len(),                                                     // whole
                _ => (rng.random_range(0..=data.len() / 512) * 512).min(data.len()), // torn
            };
            let end = *offset as usize + keep;
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(&data[..keep]);
        }
        image
    }
}

/// The disk: the store file and its commit journal (`<store>.journal`), with one
/// crash point across both.
#[derive(Default)]
struct Disk {
    files: [File; 2],
    ops: u64,
    crash_at: u64,
    /// The power-loss images of the store file and the journal.
    crashed: Option<[Vec<u8>; 2]>,
    rng_seed: u64,
}

impl Disk {
    /// Counts an operation; at the crash point, captures the power-loss images and
    /// from then on fails everything.
    fn step(&mut self) -> io::Result<()> {
        if self.crashed.is_some() {
            return Err(io::Error::other("power lost"));
        }
        self.ops += 1;
        if self.crash_at != 0 && self.ops == self.crash_at {
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.rng_seed ^ self.ops);
            let store = self.files[0].after_power_loss(&mut rng);
            let journal = self.files[1].after_power_loss(&mut rng);
            self.crashed = Some([store, journal]);
            return Err(io::Error::other("power lost"));
        }
        Ok(())
    }
}

/// A file of the disk: 0 the store, 1 its journal.
#[derive(Clone)]
struct PowerLoss(Arc<Mutex<Disk>>, usize);

impl std::fmt::Debug for PowerLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PowerLoss")
    }
}

impl StorageBackend for PowerLoss {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().files[self.1].current.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let d = self.0.lock().unwrap();
        let f = &d.files[self.1];
        let end = offset as usize + out.len();
        if end > f.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        out.copy_from_slice(&f.current[offset as usize..end]);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.step()?;
        let f = &mut d.files[self.1];
        f.current.resize(len as usize, 0);
        f.pending.push((0, Vec::new(), Some(len)));
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.step()?;
        let f = &mut d.files[self.1];
        f.durable = f.current.clone();
        f.pending.clear();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.step()?;
        let f = &mut d.files[self.1];
        let end = offset as usize + data.len();
        if f.current.len() < end {
            f.current.resize(end, 0);
        }
        f.current[offset as usize..end].copy_from_slice(data);
        f.pending.push((offset, data.to_vec(), None));
        Ok(())
    }
}

/// Options on `disk`: the store file and its journal, in exclusive mode (the simulated
/// disk has no byte-range locks: one process), without commit retries.
fn on_disk(disk: &Arc<Mutex<Disk>>) -> Options {
    let disk = disk.clone();
    let factory: sealkv_engine::internal::BackendFactory = Arc::new(move |path: &Path, _| {
        let journal = path.extension().is_some_and(|e| e == "journal");
        Ok(Box::new(PowerLoss(disk.clone(), usize::from(journal))) as Box<dyn StorageBackend>)
    });
    Options {
        concurrency: sealkv_engine::Concurrency::Exclusive,
        backend: Some(factory),
        commit_retries: 0,
        ..fast_opts()
    }
}

/// The power-loss images of a store file and its journal.
type Images = [Vec<u8>; 2];

/// Writes the power-loss images where a store at `path` and its journal go.
fn write_images(path: &Path, images: &Images) {
    std::fs::write(path, &images[0]).unwrap();
    let mut journal = path.as_os_str().to_owned();
    journal.push(".journal");
    std::fs::write(journal, &images[1]).unwrap();
}

type Model = BTreeMap<(String, String), Vec<u8>>;

fn contents(store: &Store) -> Model {
    let mut out = Model::new();
    for ns in store.namespaces().unwrap() {
        let keys = store.list(&ns).unwrap();
        for (k, v) in store.get(&ns, &keys).unwrap() {
            out.insert((ns.clone(), k), v.to_vec());
        }
    }
    out
}

/// Runs a workload on a power-loss disk that crashes at operation `crash_at`; returns
/// the image and the models after each acknowledged commit (index 0: empty store).
fn run(crash_at: u64, seed: u64) -> (Option<Images>, Vec<Model>, bool) {
    let disk = Arc::new(Mutex::new(Disk {
        rng_seed: seed,
        ..Disk::default()
    }));
    let opts = on_disk(&disk);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("p"), key(), opts).unwrap();
    disk.lock().unwrap().ops = 0;
    disk.lock().unwrap().crash_at = crash_at;
    let mut models = vec![Model::new()];
    let mut model = Model::new();
    let mut in_flight_done = true;
    for i in 0..12u32 {
        let mut b = Batch::new();
        let mut next = model.clone();
        for j in 0..3 {
            let (ns, k) = (
                format!("ns{}", (i + j) % 3),
                format!("k{}", (i * 7 + j) % 10),
            );
            if (i + j) % 5 == 4 {
                b.delete(&ns, &k);
                next.remove(&(ns, k));
            } else {
                let v = vec![(i * 3 + j) as u8; 200 + 300 * j as usize];
                b.put(&ns, &k, v.clone());
                next.insert((ns, k), v);
            }
        }
        if store.set(&b).is_err() {
            models.push(next); // in flight: may or may not have landed
            in_flight_done = false;
            break;
        }
        model = next;
        models.push(model.clone());
    }
    drop(store);
    let image = disk.lock().unwrap().crashed.take();
    (image, models, in_flight_done)
}

#[test]
fn power_loss_at_every_operation_keeps_acknowledged_commits_whole() {
    let (_, full, _) = run(0, 0);
    assert_eq!(full.len(), 13);
    let mut crash_points = 0;
    let mut landed_in_flight = 0;
    for crash_at in 1..10_000u64 {
        for seed in 0..3u64 {
            let (image, models, done) = run(crash_at, seed);
            let Some(image) = image else {
                // The workload finished before this operation: the sweep is complete.
                assert_eq!(models.len(), 13);
                assert!(done);
                println!(
                    "{crash_points} power-loss images checked; {landed_in_flight} kept the in-flight commit"
                );
                assert!(crash_points > 50);
                return;
            };
            crash_points += 1;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("image.sealkv");
            write_images(&path, &image);
            let store = Store::open(&path, key(), fast_opts()).unwrap_or_else(|e| {
                panic!("crash at op {crash_at} seed {seed}: does not open: {e}")
            });
            assert!(
                store.verify().unwrap().is_empty(),
                "crash at op {crash_at} seed {seed}"
            );
            let got = contents(&store);
            // Without a failed commit, the last model is acknowledged (the crash hit the
            // close); otherwise the last one was in flight.
            let (acked, in_flight) = if done {
                (&models[models.len() - 1], &models[models.len() - 1])
            } else {
                (&models[models.len() - 2], &models[models.len() - 1])
            };
            if &got == in_flight && got != *acked {
                landed_in_flight += 1;
            }
            assert!(
                &got == acked || &got == in_flight,
                "crash at op {crash_at} seed {seed}: state is neither the acknowledged one nor the in-flight one"
            );
        }
    }
    panic!("the workload never finished");
}

/// Values with the expiry time they were put with, if any.
type TimedModel = BTreeMap<(String, String), (Vec<u8>, Option<u64>)>;

/// What a store holding `model` shows at `now`.
fn at(model: &TimedModel, now: u64) -> Model {
    model
        .iter()
        .filter(|(_, (_, exp))| exp.is_none_or(|e| e > now))
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

/// One step of the mixed workload, on a store whose clock is `clock`.
enum Step {
    Set(u32),
    Rotate,
    Reencrypt,
    /// Moves the clock past every time to live, then sweeps.
    Sweep,
}

const START: u64 = 1_000_000;
const LATER: u64 = START + 100_000;

/// Runs the mixed workload (sets with and without a time to live, deletes, a
/// rotation, a re-encryption in batches, a TTL sweep) on a power-loss disk that
/// crashes at operation `crash_at`. Returns the image, the models after each
/// acknowledged step with the clock then, and whether every step finished.
fn run_mixed(crash_at: u64, seed: u64) -> (Option<Images>, Vec<(TimedModel, u64)>, bool) {
    let disk = Arc::new(Mutex::new(Disk {
        rng_seed: seed,
        ..Disk::default()
    }));
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(START));
    let c = clock.clone();
    let opts = Options {
        clock: Arc::new(move || c.load(std::sync::atomic::Ordering::SeqCst)),
        ..on_disk(&disk)
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("p"), key(), opts).unwrap();
    disk.lock().unwrap().ops = 0;
    disk.lock().unwrap().crash_at = crash_at;
    let steps = [
        Step::Set(0),
        Step::Set(1),
        Step::Set(2),
        Step::Rotate,
        Step::Set(3),
        Step::Reencrypt,
        Step::Set(4),
        Step::Sweep,
        Step::Set(5),
    ];
    let mut model = TimedModel::new();
    let mut models = vec![(model.clone(), START)];
    for step in steps {
        let mut next = model.clone();
        let result = match step {
            Step::Set(i) => {
                let mut b = Batch::new();
                for j in 0..4u32 {
                    let (ns, k) = (
                        format!("ns{}", (i + j) % 3),
                        format!("k{}", (i * 5 + j) % 9),
                    );
                    if (i + j) % 4 == 3 {
                        b.delete(&ns, &k);
                        next.remove(&(ns, k));
                    } else {
                        let v = vec![(i * 4 + j) as u8; 100 + 250 * j as usize];
                        let now = clock.load(std::sync::atomic::Ordering::SeqCst);
                        if j == 1 {
                            b.put_with_ttl(&ns, &k, v.clone(), std::time::Duration::from_secs(60));
                            next.insert((ns, k), (v, Some(now + 60)));
                        } else {
                            b.put(&ns, &k, v.clone());
                            next.insert((ns, k), (v, None));
                        }
                    }
                }
                store.set(&b)
            }
            Step::Rotate => store.rotate().map(drop),
            Step::Reencrypt => store.reencrypt(3, |_| {}).map(drop),
            Step::Sweep => {
                clock.store(LATER, std::sync::atomic::Ordering::SeqCst);
                store.sweep().map(drop)
            }
        };
        let now = clock.load(std::sync::atomic::Ordering::SeqCst);
        if result.is_err() {
            models.push((next, now)); // in flight: may or may not have landed
            drop(store);
            let image = disk.lock().unwrap().crashed.take();
            return (image, models, false);
        }
        model = next;
        models.push((model.clone(), now));
    }
    drop(store);
    let image = disk.lock().unwrap().crashed.take();
    (image, models, true)
}

#[test]
fn power_loss_at_every_operation_of_a_mixed_workload_keeps_acknowledged_commits_whole() {
    let (_, full, done) = run_mixed(0, 0);
    assert!(done);
    let steps = full.len();
    let mut crash_points = 0;
    for crash_at in 1..100_000u64 {
        // Five ways each cut can tear the writes since the last sync.
        for seed in 0..5u64 {
            let (image, models, done) = run_mixed(crash_at, seed);
            let Some(image) = image else {
                assert_eq!(models.len(), steps);
                assert!(done);
                println!("{crash_points} power-loss images of the mixed workload checked");
                // Commits go through the journal (one append and sync each), so the
                // workload makes fewer disk operations than with redb's own commits.
                assert!(crash_points >= 250, "{crash_points} cut points");
                return;
            };
            crash_points += 1;
            let (acked, in_flight) = if done {
                (&models[models.len() - 1], &models[models.len() - 1])
            } else {
                (&models[models.len() - 2], &models[models.len() - 1])
            };
            // Read at the clock of the step in flight (a value put with a time to
            // live reads as absent after the sweep's clock jump either way).
            let now = in_flight.1;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("image.sealkv");
            write_images(&path, &image);
            let opts = Options {
                clock: Arc::new(move || now),
                ..fast_opts()
            };
            let store = Store::open(&path, key(), opts).unwrap_or_else(|e| {
                panic!("crash at op {crash_at} seed {seed}: does not open: {e}")
            });
            assert!(
                store.verify().unwrap().is_empty(),
                "crash at op {crash_at} seed {seed}"
            );
            let got = contents(&store);
            assert!(
                got == at(&acked.0, now) || got == at(&in_flight.0, now),
                "crash at op {crash_at} seed {seed}: state is neither the acknowledged one nor the in-flight one"
            );
            // The store goes on after the crash.
            store.put("after", "crash", b"x".to_vec()).unwrap();
        }
    }
    panic!("the workload never finished");
}
