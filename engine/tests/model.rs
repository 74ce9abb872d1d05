//! Differential test: random operation sequences against a `BTreeMap` model.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use sealkv_engine::{Batch, Error, Store};

#[derive(Debug, Clone)]
enum Op {
    Set(Vec<(u8, u8, Option<Vec<u8>>)>),
    Tx(Vec<(u8, u8, Option<Vec<u8>>)>, bool),
    Clear,
    Reopen,
}

fn change() -> impl Strategy<Value = (u8, u8, Option<Vec<u8>>)> {
    (
        0u8..3,
        0u8..6,
        proptest::option::weighted(0.7, proptest::collection::vec(any::<u8>(), 0..300)),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(change(), 1..6).prop_map(Op::Set),
        3 => (proptest::collection::vec(change(), 1..6), any::<bool>()).prop_map(|(c, ok)| Op::Tx(c, ok)),
        1 => Just(Op::Clear),
        1 => Just(Op::Reopen),
    ]
}

type Model = BTreeMap<(String, String), Vec<u8>>;

fn names(ns: u8, key: u8) -> (String, String) {
    (format!("ns{ns}"), format!("key-{key}"))
}

fn check(store: &Store, model: &Model) {
    let mut namespaces: Vec<String> = model.keys().map(|(n, _)| n.clone()).collect();
    namespaces.dedup();
    assert_eq!(store.namespaces().unwrap(), namespaces);
    for ns in 0..3u8 {
        let ns = format!("ns{ns}");
        let expected: Vec<String> = model
            .keys()
            .filter(|(n, _)| *n == ns)
            .map(|(_, k)| k.clone())
            .collect();
        assert_eq!(store.list(&ns).unwrap(), expected);
        let all: Vec<String> = (0..6u8).map(|k| format!("key-{k}")).collect();
        let got = store.get(&ns, &all).unwrap();
        for (k, v) in got {
            assert_eq!(&v[..], &model[&(ns.clone(), k)][..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_btreemap_model(ops in proptest::collection::vec(op(), 1..25)) {
        for place in engines() {
        let path = place.addr("m.sealkv");
        let mut store = Store::create(&path, key(), fast_opts()).unwrap();
        let mut model = Model::new();
        for op in ops.clone() {
            match op {
                Op::Set(changes) => {
                    let mut b = Batch::new();
                    for (ns, k, v) in &changes {
                        let (ns, k) = names(*ns, *k);
                        b.set(&ns, &k, v.clone());
                    }
                    store.set(&b).unwrap();
                    apply(&mut model, &changes);
                }
                Op::Tx(changes, commit) => {
                    let r = store.transaction("lock", |tx| {
                        for (ns, k, v) in &changes {
                            let (ns, k) = names(*ns, *k);
                            match v {
                                Some(v) => tx.put(&ns, &k, v.clone()),
                                None => tx.delete(&ns, &k),
                            }
                        }
                        if commit { Ok(()) } else { Err(Error::InvalidName("abort".into())) }
                    });
                    prop_assert_eq!(r.is_ok(), commit);
                    if commit {
                        apply(&mut model, &changes);
                    }
                }
                Op::Clear => {
                    store.clear().unwrap();
                    model.clear();
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(&path, key(), fast_opts()).unwrap();
                }
            }
            check(&store, &model);
        }
        prop_assert!(store.verify().unwrap().is_empty());
        }
    }
}

fn apply(model: &mut Model, changes: &[(u8, u8, Option<Vec<u8>>)]) {
    // Within one batch the last change to a key wins, as in Batch.
    for (ns, k, v) in changes {
        let key = names(*ns, *k);
        match v {
            Some(v) => {
                model.insert(key, v.clone());
            }
            None => {
                model.remove(&key);
            }
        }
    }
}
