//! What metrics cost: a point get and a durable set of 1 KiB values with no recorder
//! (the facade's no-op), and with `metrics-exporter-prometheus`' recorder (installed
//! as the thread-local recorder while its store is opened and measured, so both run in
//! one process; a store registers its hot-path handles when it opens).
//!
//! Run: `cargo bench -p sealkv-benches --bench observe`

use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use sealkv_benches::{auth_like_value, fill, key_name};
use sealkv_engine::{Concurrency, MasterKey, Options, Store};

const N: usize = 10_000;

/// One measured call on a store, for a key.
type Op<'a> = dyn Fn(&Store, &str) + 'a;

fn store(dir: &std::path::Path, name: &str) -> Store {
    let store = Store::create(
        dir.join(name),
        MasterKey::generate().expect("os random"),
        Options {
            concurrency: Concurrency::Exclusive,
            ..Options::default()
        },
    )
    .expect("create");
    fill(|b| store.set(b).expect("fill"), N, "session");
    store
}

fn observed(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tmp");
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let plain = store(dir.path(), "plain.sealkv");
    let observed = metrics::with_local_recorder(&recorder, || store(dir.path(), "observed.sealkv"));
    let value = auth_like_value(1024, 7);
    // Each operation on both stores, the observed one under its recorder.
    let cases: [(&str, &Store, Option<&PrometheusRecorder>); 2] = [
        ("no-recorder", &plain, None),
        ("prometheus", &observed, Some(&recorder)),
    ];
    let ops: [(&str, &Op); 2] = [
        ("get-1KiB", &|s, k| {
            s.get_one("session", k).expect("get");
        }),
        ("durable-set-1KiB", &|s, k| {
            s.put("session", k, value.clone()).expect("put");
        }),
    ];
    let mut i = 0;
    for (group, op) in ops {
        let mut g = c.benchmark_group(group);
        for (name, store, recorder) in cases {
            let mut bench = || {
                g.bench_function(name, |b| {
                    b.iter(|| {
                        i = (i + 7919) % N;
                        op(store, &key_name(i))
                    })
                });
            };
            match recorder {
                Some(r) => metrics::with_local_recorder(r, bench),
                None => bench(),
            }
        }
        g.finish();
    }
    // The recorder saw the measured calls.
    assert!(handle.render().contains("sealkv_commits_total"));
}

criterion_group!(benches, observed);
criterion_main!(benches);
