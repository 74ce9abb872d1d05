//! Metrics and traces of a workload with recognisable names and values: each operation
//! moves exactly the counters it should, and no namespace, key, value, session id,
//! lock key, path or passphrase appears in any metric or any trace line (TRACE level).
//! One test: the recorder and the subscriber are global to the process.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sealkv_engine::{Batch, Error, Options, Store, observe};

/// A metric as a name and its labels, `name{k=v,…}`.
type Series = BTreeMap<String, f64>;

/// Counters (their increments) and histograms (their observations) since the last
/// snapshot, by series: the debugging recorder drains both.
fn snapshot(s: &Snapshotter) -> (Series, Series) {
    let (mut counters, mut histograms) = (Series::new(), Series::new());
    for (key, _, _, value) in s.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        match value {
            DebugValue::Counter(n) => {
                counters.insert(name, n as f64);
            }
            DebugValue::Gauge(v) => {
                counters.insert(name, v.into_inner());
            }
            DebugValue::Histogram(v) => {
                histograms.insert(name, v.len() as f64);
            }
        }
    }
    (counters, histograms)
}

/// What one step did: counter increments and histogram observations, nonzero ones
/// only (the size gauge aside).
struct Probe {
    s: Snapshotter,
    /// Every series name seen, for the leak check.
    seen: Vec<String>,
}

impl Probe {
    fn step(&mut self) -> (Series, Series) {
        let (counters, histograms) = snapshot(&self.s);
        self.seen.extend(counters.keys().cloned());
        self.seen.extend(histograms.keys().cloned());
        let nonzero = |s: Series| {
            s.into_iter()
                .filter(|(k, v)| *v != 0.0 && !k.starts_with(observe::STORE_BYTES))
                .collect()
        };
        (nonzero(counters), nonzero(histograms))
    }
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

fn expect(got: &Series, want: &[(String, f64)], what: &str) {
    let want: Series = want.iter().cloned().collect();
    assert_eq!(got, &want, "{what}");
}

/// Trace output, collected.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn each_operation_moves_its_metrics_and_nothing_secret_is_recorded() {
    let recorder = DebuggingRecorder::new();
    let mut probe = Probe {
        s: recorder.snapshotter(),
        seen: Vec::new(),
    };
    recorder.install().unwrap();
    observe::describe();
    let lines = Lines::default();
    let writer = lines.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    // Recognisable secrets: none of these may show anywhere.
    let secrets = [
        "secretpath-4915550001",
        "hunter2-passphrase",
        "4915550002.0",
        "ns-pre-key-secret",
        "key-secret-77",
        "value-secret-payload",
        "lock-secret-4915550003",
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.sealkv", secrets[0]));
    let now = Arc::new(AtomicU64::new(1_700_000_000));
    let clock_now = now.clone();
    let opts = Options {
        clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
        ..fast_opts()
    };
    let store = Store::create(&path, passphrase(secrets[1]), opts.clone()).unwrap();
    probe.step();
    let ok = series(observe::COMMITS, &[("engine", "file"), ("outcome", "ok")]);
    let one_commit = |h: &Series, group: f64| {
        assert_eq!(h.get(&series(observe::COMMIT_GROUP_SIZE, &[])), Some(&1.0));
        assert_eq!(h.get(&series(observe::COMMIT_WAIT, &[])), Some(&group));
        assert_eq!(h.get(&series(observe::COMMIT_WRITE, &[])), Some(&1.0));
        assert_eq!(h.get(&series(observe::COMMIT_SYNC, &[])), Some(&1.0));
    };

    // A put, and a batch of two in a session: one commit each.
    store
        .put(secrets[3], secrets[4], secrets[5].as_bytes().to_vec())
        .unwrap();
    let (c, h) = probe.step();
    expect(&c, &[(ok.clone(), 1.0)], "a put");
    one_commit(&h, 1.0);
    let bot = store.session(secrets[2]).unwrap();
    let mut batch = Batch::new();
    batch
        .put(secrets[3], "a", b"1".to_vec())
        .put(secrets[3], "b", b"2".to_vec());
    bot.set(&batch).unwrap();
    let (c, h) = probe.step();
    expect(&c, &[(ok.clone(), 1.0)], "a batch");
    one_commit(&h, 1.0);

    // Reads: a hit opens one value, a miss none.
    assert!(store.get_one(secrets[3], secrets[4]).unwrap().is_some());
    let get = series(observe::READS, &[("operation", "get")]);
    let opened = series(observe::VALUES_OPENED, &[]);
    expect(
        &probe.step().0,
        &[(get.clone(), 1.0), (opened.clone(), 1.0)],
        "a hit",
    );
    assert!(store.get_one(secrets[3], "absent").unwrap().is_none());
    expect(&probe.step().0, &[(get.clone(), 1.0)], "a miss");
    assert_eq!(bot.get(secrets[3], &["a", "b"]).unwrap().len(), 2);
    expect(
        &probe.step().0,
        &[(get, 1.0), (opened, 2.0)],
        "two in one get",
    );

    // A transaction under a lock key: one lock wait, one commit.
    store
        .transaction(secrets[6], |tx| {
            tx.put(secrets[3], secrets[4], b"next".to_vec());
            Ok::<_, Error>(())
        })
        .unwrap();
    let (c, h) = probe.step();
    expect(&c, &[(ok.clone(), 1.0)], "a transaction");
    assert_eq!(h.get(&series(observe::LOCK_WAIT, &[])), Some(&1.0));

    // A rotation commits once.
    store.rotate().unwrap();
    expect(
        &probe.step().0,
        &[(ok.clone(), 1.0), (series(observe::ROTATIONS, &[]), 1.0)],
        "a rotation",
    );

    // A value that expires, swept.
    store
        .put_with_ttl(secrets[3], "short", b"x".to_vec(), Duration::from_secs(1))
        .unwrap();
    probe.step();
    now.fetch_add(7200, Ordering::SeqCst);
    assert_eq!(store.sweep().unwrap(), 1);
    let (c, _) = probe.step();
    assert_eq!(c.get(&series(observe::SWEEPS, &[])), Some(&1.0));
    assert_eq!(c.get(&series(observe::EXPIRED, &[])), Some(&1.0));

    // A wrong passphrase.
    drop(bot);
    drop(store);
    assert!(matches!(
        Store::open(&path, passphrase("not it"), opts.clone()),
        Err(Error::WrongKey)
    ));
    expect(
        &probe.step().0,
        &[(series(observe::WRONG_KEY, &[]), 1.0)],
        "a wrong key",
    );
    let store = Store::open(&path, passphrase(secrets[1]), opts).unwrap();
    let health = store.health();
    assert!(health.is_healthy(), "{:?}", health.problems());
    store.stats().unwrap();
    probe.step();

    // Nothing secret anywhere: metric names and labels, help texts, trace lines.
    let traces = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(
        traces.contains("opened"),
        "the trace has the opens:\n{traces}"
    );
    assert!(
        traces.contains("commit"),
        "the trace has the commits:\n{traces}"
    );
    for span in ["open{", "commit:", "transaction:", "rotate:", "sweep:"] {
        assert!(
            traces.contains(span),
            "no {span} span in the trace:\n{traces}"
        );
    }
    let recorded = format!("{:?}\n{traces}", probe.seen);
    for secret in secrets {
        assert!(
            !recorded.contains(secret),
            "{secret:?} was recorded:\n{recorded}"
        );
    }
    // Every series is one of the documented metrics.
    for s in &probe.seen {
        let name = s.split('{').next().unwrap();
        assert!(
            observe::METRICS.iter().any(|(m, _, _)| *m == name),
            "{name} is not documented"
        );
    }
}
