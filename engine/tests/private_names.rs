//! The file shows no names and no values: only keyed tags and ciphertext.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sealkv_engine::{Codec, Compression, Options, Store};

#[test]
fn raw_file_holds_no_names_or_values() {
    for codec in [Codec::None, Codec::Zstd, Codec::Snappy] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sealkv");
        let namespace = "session-namespace-marker";
        let key_name = "4915550001234.0";
        let marker = "PLAINTEXT-MARKER-7f3a".repeat(20);
        {
            let opts = Options {
                compression: Compression::with_codec(codec),
                ..fast_opts()
            };
            let store = Store::create(&path, key(), opts).unwrap();
            store
                .put(namespace, key_name, marker.clone().into_bytes())
                .unwrap();
            store
                .put("creds", "creds", br#"{"noiseKey":"secret"}"#.to_vec())
                .unwrap();
            assert_eq!(store.list(namespace).unwrap(), vec![key_name]);
        }
        let raw = std::fs::read(&path).unwrap();
        for needle in [
            namespace,
            key_name,
            "4915550001234",
            "PLAINTEXT-MARKER",
            "noiseKey",
            "creds",
        ] {
            assert!(
                raw.windows(needle.len()).all(|w| w != needle.as_bytes()),
                "{needle:?} appears in the file ({codec:?})"
            );
        }
        let store = Store::open(&path, key(), fast_opts()).unwrap();
        assert_eq!(store.namespaces().unwrap(), vec!["creds", namespace]);
    }
}
