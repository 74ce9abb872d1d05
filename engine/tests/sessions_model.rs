//! Differential test with sessions and expiry: random operations on the default session
//! and two named ones, values with and without a time to live, a clock that moves,
//! sweeps, dropped sessions and reopens, against a `BTreeMap` model.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use sealkv_engine::{Batch, Error, Options, Store};

/// A change: (namespace, key, None to delete or Some((value, ttl in seconds))).
type Change = (u8, u8, Option<(Vec<u8>, Option<u64>)>);

#[derive(Debug, Clone)]
enum Op {
    Set(u8, Vec<Change>),
    Tx(u8, Vec<Change>, bool),
    Advance(u64),
    Sweep,
    Drop(u8),
    Reopen,
}

fn change() -> impl Strategy<Value = Change> {
    (
        0u8..2,
        0u8..4,
        proptest::option::weighted(
            0.75,
            (
                proptest::collection::vec(any::<u8>(), 0..80),
                proptest::option::weighted(0.5, prop_oneof![1u64..60, 3000u64..8000]),
            ),
        ),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, proptest::collection::vec(change(), 1..5)).prop_map(|(s, c)| Op::Set(s, c)),
        2 => (0u8..3, proptest::collection::vec(change(), 1..5), any::<bool>())
            .prop_map(|(s, c, ok)| Op::Tx(s, c, ok)),
        3 => prop_oneof![1u64..90, 3000u64..9000].prop_map(Op::Advance),
        1 => Just(Op::Sweep),
        1 => (1u8..3).prop_map(Op::Drop),
        1 => Just(Op::Reopen),
    ]
}

/// (session, namespace, key) → (value, expires at).
type Model = BTreeMap<(u8, String, String), (Vec<u8>, Option<u64>)>;

const SESSIONS: [&str; 3] = ["", "bot-a", "bot-b"];

fn names(ns: u8, key: u8) -> (String, String) {
    (format!("ns{ns}"), format!("key-{key}"))
}

fn live(model: &Model, now: u64) -> impl Iterator<Item = (&(u8, String, String), &Vec<u8>)> {
    model
        .iter()
        .filter(move |(_, (_, exp))| exp.is_none_or(|at| at > now))
        .map(|(k, (v, _))| (k, v))
}

fn check(store: &Store, model: &Model, now: u64) {
    let mut sessions: Vec<String> = live(model, now)
        .filter(|((s, _, _), _)| *s != 0)
        .map(|((s, _, _), _)| SESSIONS[*s as usize].to_string())
        .collect();
    sessions.dedup();
    assert_eq!(store.sessions().unwrap(), sessions, "sessions");
    for (si, session) in SESSIONS.iter().enumerate() {
        let si = si as u8;
        let handle = store
            .session(if si == 0 { "unused" } else { session })
            .unwrap();
        let mut namespaces: Vec<String> = live(model, now)
            .filter(|((s, _, _), _)| *s == si)
            .map(|((_, n, _), _)| n.clone())
            .collect();
        namespaces.dedup();
        let got = if si == 0 {
            store.namespaces().unwrap()
        } else {
            handle.namespaces().unwrap()
        };
        assert_eq!(got, namespaces, "namespaces of session {si}");
        for ns in 0..2u8 {
            let ns = format!("ns{ns}");
            let expected: Vec<String> = live(model, now)
                .filter(|((s, n, _), _)| *s == si && *n == ns)
                .map(|((_, _, k), _)| k.clone())
                .collect();
            let all: Vec<String> = (0..4u8).map(|k| format!("key-{k}")).collect();
            let (list, count, got) = if si == 0 {
                (
                    store.list(&ns).unwrap(),
                    store.count(&ns).unwrap(),
                    store.get(&ns, &all).unwrap(),
                )
            } else {
                (
                    handle.list(&ns).unwrap(),
                    handle.count(&ns).unwrap(),
                    handle.get(&ns, &all).unwrap(),
                )
            };
            assert_eq!(list, expected, "list {si}/{ns}");
            assert_eq!(count, expected.len() as u64, "count {si}/{ns}");
            assert_eq!(got.len(), expected.len(), "get {si}/{ns}");
            for (k, v) in got {
                assert_eq!(&v[..], &model[&(si, ns.clone(), k)].0[..]);
            }
        }
    }
}

fn write(store: &Store, s: u8, batch: &Batch) -> Result<(), Error> {
    if s == 0 {
        store.set(batch)
    } else {
        store.session(SESSIONS[s as usize]).unwrap().set(batch)
    }
}

fn apply(model: &mut Model, s: u8, changes: &[Change], now: u64) {
    for (ns, k, v) in changes {
        let (ns, k) = names(*ns, *k);
        match v {
            Some((v, ttl)) => {
                model.insert((s, ns, k), (v.clone(), ttl.map(|t| now + t)));
            }
            None => {
                model.remove(&(s, ns, k));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn sessions_and_expiry_match_the_model(ops in proptest::collection::vec(op(), 1..30)) {
        for place in engines() {
        let path = place.addr("m.sealkv");
        let clock = Arc::new(AtomicU64::new(1_700_000_000));
        let c = clock.clone();
        let opts = Options {
            clock: Arc::new(move || c.load(Ordering::SeqCst)),
            ..fast_opts()
        };
        let mut store = Store::create(&path, key(), opts.clone()).unwrap();
        let mut model = Model::new();
        for op in ops.clone() {
            let now = clock.load(Ordering::SeqCst);
            match op {
                Op::Set(s, changes) => {
                    let mut b = Batch::new();
                    for (ns, k, v) in &changes {
                        let (ns, k) = names(*ns, *k);
                        match v {
                            Some((v, Some(ttl))) => {
                                b.put_with_ttl(&ns, &k, v.clone(), Duration::from_secs(*ttl));
                            }
                            Some((v, None)) => {
                                b.put(&ns, &k, v.clone());
                            }
                            None => {
                                b.delete(&ns, &k);
                            }
                        }
                    }
                    write(&store, s, &b).unwrap();
                    apply(&mut model, s, &changes, now);
                }
                Op::Tx(s, changes, commit) => {
                    let body = |tx: &mut sealkv_engine::Tx<'_>| {
                        for (ns, k, v) in &changes {
                            let (ns, k) = names(*ns, *k);
                            match v {
                                Some((v, Some(ttl))) => {
                                    tx.put_with_ttl(&ns, &k, v.clone(), Duration::from_secs(*ttl));
                                }
                                Some((v, None)) => tx.put(&ns, &k, v.clone()),
                                None => tx.delete(&ns, &k),
                            }
                        }
                        if commit { Ok(()) } else { Err(Error::InvalidName("abort".into())) }
                    };
                    let r = if s == 0 {
                        store.transaction("lock", body)
                    } else {
                        store.session(SESSIONS[s as usize]).unwrap().transaction("lock", body)
                    };
                    prop_assert_eq!(r.is_ok(), commit);
                    if commit {
                        apply(&mut model, s, &changes, now);
                    }
                }
                Op::Advance(secs) => {
                    clock.fetch_add(secs, Ordering::SeqCst);
                }
                Op::Sweep => {
                    store.sweep().unwrap();
                    // Nothing expired is left in the file: every remaining value is live.
                    model.retain(|_, (_, e)| e.is_none_or(|at| at > now));
                    let rows: u64 = store
                        .stats()
                        .unwrap()
                        .namespaces
                        .values()
                        .map(|n| n.entries)
                        .sum();
                    prop_assert_eq!(rows, model.len() as u64, "rows after a sweep");
                }
                Op::Drop(s) => {
                    let had_live = live(&model, now).any(|((m, _, _), _)| *m == s);
                    let had_any = model.keys().any(|(m, _, _)| *m == s);
                    let existed = store.drop_session(SESSIONS[s as usize]).unwrap();
                    if had_live {
                        prop_assert!(existed);
                    }
                    if !had_any {
                        prop_assert!(!existed);
                    }
                    model.retain(|(m, _, _), _| *m != s);
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(&path, key(), opts.clone()).unwrap();
                }
            }
            check(&store, &model, clock.load(Ordering::SeqCst));
        }
        prop_assert!(store.verify().unwrap().is_empty());
        }
    }
}
