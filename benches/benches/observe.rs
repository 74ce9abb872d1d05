//! What metrics cost: a point get and a durable set of 1 KiB values with no recorder
//! (the facade's no-op), and with `metrics-exporter-prometheus`' recorder (installed
//! as the thread-local recorder while its store is opened and measured, so both run in
//! one process; a store registers its hot-path handles when it opens).
//!
//! Run: `cargo bench -p sealkv-benches --bench observe`

use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;
use sealkv_benches::{auth_like_value, fill, key_name};
use sealkv_engine::{Concurrency, MasterKey, Options, Store};

const N: usize = 10_000;

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
    let plain = store(dir.path(), "plain.sealkv");
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let observed = metrics::with_local_recorder(&recorder, || store(dir.path(), "observed.sealkv"));
    let value = auth_like_value(1024, 7);

    let mut g = c.benchmark_group("get-1KiB");
    let mut i = 0;
    g.bench_function("no-recorder", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            plain.get_one("session", &key_name(i)).expect("get")
        })
    });
    metrics::with_local_recorder(&recorder, || {
        g.bench_function("prometheus", |b| {
            b.iter(|| {
                i = (i + 7919) % N;
                observed.get_one("session", &key_name(i)).expect("get")
            })
        });
    });
    g.finish();

    let mut g = c.benchmark_group("durable-set-1KiB");
    g.bench_function("no-recorder", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            plain
                .put("session", &key_name(i), value.clone())
                .expect("put")
        })
    });
    metrics::with_local_recorder(&recorder, || {
        g.bench_function("prometheus", |b| {
            b.iter(|| {
                i = (i + 7919) % N;
                observed
                    .put("session", &key_name(i), value.clone())
                    .expect("put")
            })
        });
    });
    g.finish();
    // The recorder saw the measured calls.
    assert!(handle.render().contains("sealkv_commits_total"));
}

criterion_group!(benches, observed);
criterion_main!(benches);
