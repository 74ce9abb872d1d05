//! What the state record (generation and content hash) costs per commit, in CPU
//! instructions, for `valgrind --tool=callgrind` (repeatable, unlike wall-clock times
//! on a shared VM, where one fsync varies by more than the difference):
//!
//! ```sh
//! cargo build --release -p sealkv-benches --bin state_cost
//! for state in on off; do for n in 0 200; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/state_cost $state set $n 2>&1 | grep 'Collected'
//! done; done        # then the same with `batch 0` and `batch 5`
//! ```
//!
//! Each run fills an exclusive store of 10,000 values, then makes N commits: durable
//! 1 KiB puts (`set`) or 812-row pre-key batches (`batch`). (I(N) - I(0)) / N is the
//! cost of one commit; `off` turns the state off as before format 3.

use std::sync::atomic::Ordering;

use sealkv_benches::{auth_like_value, fill};
use sealkv_engine::internal::BENCH_WITHOUT_STATE;
use sealkv_engine::{Batch, MasterKey, Options, Store};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: state_cost on|off set|batch N";
    let (state, kind, n) = match args.as_slice() {
        [_, s, k, n] => (s.as_str(), k.as_str(), n.parse::<usize>().expect(usage)),
        _ => panic!("{usage}"),
    };
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::create(
        dir.path().join("s.sealkv"),
        MasterKey::from_bytes(&[9; 32]).expect("key"),
        Options {
            concurrency: sealkv_engine::Concurrency::Exclusive,
            ..Options::default()
        },
    )
    .expect("create");
    fill(|b| store.set(b).expect("fill"), 10_000, "session");
    BENCH_WITHOUT_STATE.store(state == "off", Ordering::SeqCst);
    match kind {
        "set" => {
            let value = auth_like_value(1024, 1);
            for i in 0..n {
                store
                    .put("session", &format!("k{i}"), value.clone())
                    .expect("put");
            }
        }
        "batch" => {
            let value = auth_like_value(75, 4);
            for round in 0..n {
                let mut batch = Batch::new();
                for i in 0..812 {
                    batch.put("pre-key", &format!("{round}-{i}"), value.clone());
                }
                store.set(&batch).expect("set");
            }
        }
        _ => panic!("{usage}"),
    }
}
