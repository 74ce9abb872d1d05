//! Soak: two writer processes on one store file, in the default shared mode, SIGKILLed
//! over and over, one at a time, at random moments (`README.md`, "Faults").
//!
//! ```text
//! cargo run --release -p sealkv-benches --bin soak -- [KILLS] [DIR]
//! ```
//!
//! Each writer runs a mixed workload and reports on its standard output each step the
//! store acknowledged: a batch putting two values together (`a/N`, `b/N`), a delete of
//! an older pair, and a transaction that increments its counter and logs the step
//! under the same lock key (the counter and the log must always agree). After each
//! kill the parent checks, from a third process's view of the store: every
//! acknowledged step of the killed writer is there; no batch is there by half (`a/N` without `b/N`, a
//! counter that disagrees with its log); `verify` reports nothing. Then it starts the
//! killed writer again, which goes on from the store's own state. Default 1,000 kills.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use sealkv_engine::{Batch, Error, MasterKey, Options, Store};

const KEY: [u8; 32] = [7; 32];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("writer") {
        return writer(Path::new(&args[2]), &args[3]);
    }
    let kills: u32 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let tmp = tempfile::tempdir()?;
    let dir = args.get(2).map(PathBuf::from).unwrap_or(tmp.path().into());
    let path = dir.join("soak.sealkv");
    let _ = std::fs::remove_file(&path);
    Store::create(&path, MasterKey::from_bytes(&KEY)?, Options::default())?;
    let exe = std::env::current_exe()?;
    let names = ["w0", "w1"];
    let mut writers: Vec<Writer> = names
        .iter()
        .map(|n| Writer::start(&exe, &path, n))
        .collect::<Result<_, _>>()?;
    // Acknowledged steps per writer.
    let mut acked = [0u64; 2];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let started = Instant::now();
    let (mut lost, mut halves) = (0u64, 0u64);
    for kill in 0..kills {
        std::thread::sleep(Duration::from_millis(5 + rng.next() % 60));
        let victim = (rng.next() % 2) as usize;
        writers[victim].child.kill()?;
        writers[victim].child.wait()?;
        for (i, w) in writers.iter_mut().enumerate() {
            acked[i] = acked[i].max(w.drain());
        }
        let store = Store::open_read_only(&path, MasterKey::from_bytes(&KEY)?, Options::default())?;
        let failures = store.verify()?;
        if !failures.is_empty() {
            return Err(format!("kill {kill}: verify: {failures:?}").into());
        }
        // The killed writer's rows stand still; the other writer's move under the
        // reads (each read is its own snapshot), so they are checked when it is killed.
        let (l, h) = check(&store, names[victim], acked[victim])?;
        if l + h > 0 {
            eprintln!("kill {kill}: {}: {l} lost, {h} half-applied", names[victim]);
        }
        lost += l;
        halves += h;
        drop(store);
        writers[victim] = Writer::start(&exe, &path, names[victim])?;
        if (kill + 1) % 100 == 0 {
            eprintln!(
                "{} kills, {} steps acknowledged, {lost} lost, {halves} half-applied, {:.0} s",
                kill + 1,
                acked.iter().sum::<u64>(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    for w in &mut writers {
        w.child.kill()?;
        w.child.wait()?;
    }
    println!(
        "soak: {kills} SIGKILLs, {} steps acknowledged, {lost} lost, {halves} half-applied, \
         verify clean after each kill, {:.0} s",
        acked.iter().sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
    if lost + halves > 0 {
        return Err("acknowledged writes lost or batches half-applied".into());
    }
    Ok(())
}

/// A writer process and the steps it reported.
struct Writer {
    child: Child,
    steps: Receiver<u64>,
}

impl Writer {
    fn start(exe: &Path, path: &Path, name: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let mut child = Command::new(exe)
            .args(["writer", path.to_str().ok_or("path")?, name])
            .stdout(Stdio::piped())
            .spawn()?;
        let out: ChildStdout = child.stdout.take().ok_or("stdout")?;
        let (tx, steps) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(n) = line.trim().parse() {
                    let _ = tx.send(n);
                }
            }
        });
        Ok(Self { child, steps })
    }

    /// The last step reported so far (0: none).
    fn drain(&mut self) -> u64 {
        // Give the reader thread the lines already written before the kill.
        std::thread::sleep(Duration::from_millis(2));
        self.steps.try_iter().max().unwrap_or(0)
    }
}

/// Checks writer `name`'s rows: every step up to `acked` present (`(lost, halves)`).
fn check(store: &Store, name: &str, acked: u64) -> Result<(u64, u64), Error> {
    let (mut lost, mut halves) = (0, 0);
    let counter = counter_of(store, name)?;
    let log = store.count(&format!("{name}-log"))?;
    if counter != log {
        halves += 1;
    }
    if counter < acked {
        lost += acked - counter;
    }
    // The last few pairs are kept (older ones are deleted as the writer goes): both
    // values of a pair, or neither.
    for n in counter.saturating_sub(3)..=counter {
        let got = store.get(name, &[format!("a/{n}"), format!("b/{n}")])?;
        if got.len() == 1 {
            halves += 1;
        }
        if n > 0 && n <= acked && got.is_empty() {
            lost += 1;
        }
    }
    Ok((lost, halves))
}

fn counter_of(store: &Store, name: &str) -> Result<u64, Error> {
    Ok(store
        .get_one(&format!("{name}-counter"), "n")?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0))
}

/// A writer: steps until killed, each acknowledged step printed.
fn writer(path: &Path, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(path, MasterKey::from_bytes(&KEY)?, Options::default())?;
    let (counter_ns, log_ns) = (format!("{name}-counter"), format!("{name}-log"));
    loop {
        // One step: the pair, the delete of an old pair, the counter and its log, all
        // in one transaction under the writer's lock key.
        let n = store.transaction(name, |tx| {
            let n = tx
                .get(&counter_ns, &["n"])?
                .get("n")
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let value = vec![(n % 251) as u8; 64 + (n % 7) as usize * 100];
            let mut b = Batch::new();
            b.put(name, &format!("a/{n}"), value.clone())
                .put(name, &format!("b/{n}"), value);
            if n > 4 {
                b.delete(name, &format!("a/{}", n - 4))
                    .delete(name, &format!("b/{}", n - 4));
            }
            tx.set(b);
            tx.put(&counter_ns, "n", n.to_string().into_bytes());
            tx.put(&log_ns, &n.to_string(), b"step".to_vec());
            Ok::<_, Error>(n)
        })?;
        println!("{n}");
    }
}

/// xorshift64: the kill schedule needs no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
