//! Typed values with serde: `put_as`/`get_as` beside plain byte values.
#![allow(clippy::unwrap_used)]

use sealkv::{Batch, Error, KdfParams, Options, Passphrase, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct KeyPair {
    public: Vec<u8>,
    private: Vec<u8>,
}

/// A creds-shaped value, as a Rust bot would keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Creds {
    registration_id: u32,
    noise_key: KeyPair,
    adv_secret_key: String,
    me: Option<String>,
    next_pre_key_id: u32,
}

/// The same type one release later: a field added, with a default.
#[derive(Debug, PartialEq, Deserialize)]
struct CredsV2 {
    registration_id: u32,
    noise_key: KeyPair,
    adv_secret_key: String,
    me: Option<String>,
    next_pre_key_id: u32,
    #[serde(default)]
    platform: Option<String>,
}

/// A type whose Serialize fails, quoting a secret in its message.
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refusing secret-looking data"))
    }
}

fn creds() -> Creds {
    Creds {
        registration_id: 4242,
        noise_key: KeyPair {
            public: vec![1; 32],
            private: vec![2; 32],
        },
        adv_secret_key: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==".into(),
        me: Some("4915550001:7@s.whatsapp.net".into()),
        next_pre_key_id: 813,
    }
}

fn store(dir: &tempfile::TempDir) -> Store {
    let opts = Options {
        kdf: KdfParams::INSECURE_FOR_TESTS,
        ..Options::default()
    };
    Store::create(dir.path().join("t.sealkv"), Passphrase::new("pw"), opts).unwrap()
}

#[test]
fn typed_values_round_trip_in_stores_sessions_batches_and_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    store.put_as("creds", "creds", &creds()).unwrap();
    assert_eq!(
        store.get_as::<Creds>("creds", "creds").unwrap(),
        Some(creds())
    );
    assert_eq!(store.get_as::<Creds>("creds", "absent").unwrap(), None);

    let bot = store.session("bot-2").unwrap();
    bot.put_as("counters", "n", &7u64).unwrap();
    assert_eq!(bot.get_as::<u64>("counters", "n").unwrap(), Some(7));
    assert_eq!(store.get_as::<u64>("counters", "n").unwrap(), None);

    // Typed and plain values side by side in one batch.
    let mut batch = Batch::new();
    batch
        .put_as("device-list", "4915550001", &vec!["0", "2"])
        .unwrap()
        .put("raw", "bytes", vec![0, 255]);
    store.set(&batch).unwrap();
    assert_eq!(
        store
            .get_as::<Vec<String>>("device-list", "4915550001")
            .unwrap(),
        Some(vec!["0".to_string(), "2".to_string()])
    );
    assert_eq!(
        &store.get_one("raw", "bytes").unwrap().unwrap()[..],
        &[0, 255]
    );

    let next = store
        .transaction("creds", |tx| {
            let mut c: Creds = tx.get_as("creds", "creds")?.unwrap();
            c.next_pre_key_id += 1;
            tx.put_as("creds", "creds", &c)?;
            // Reads through the transaction see its own typed write.
            Ok::<_, Error>(
                tx.get_as::<Creds>("creds", "creds")?
                    .unwrap()
                    .next_pre_key_id,
            )
        })
        .unwrap();
    assert_eq!(next, 814);
    assert_eq!(
        store
            .get_as::<Creds>("creds", "creds")
            .unwrap()
            .unwrap()
            .next_pre_key_id,
        814
    );

    // A type that gained a defaulted field reads the older values.
    let v2: CredsV2 = store.get_as("creds", "creds").unwrap().unwrap();
    assert_eq!((v2.registration_id, v2.platform), (4242, None));
}

#[test]
fn a_value_of_another_shape_is_an_error_naming_it_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    store
        .put("creds", "creds", b"secret-looking plain bytes".to_vec())
        .unwrap();
    store.put_as("counters", "n", &"not a number").unwrap();
    // Plain text whose first byte is a MessagePack number ('4' is 52): refused whole.
    store
        .put("counters", "plain", b"42 apples".to_vec())
        .unwrap();

    for err in [
        store.get_as::<Creds>("creds", "creds").unwrap_err(),
        store.get_as::<u64>("counters", "n").unwrap_err(),
        store.get_as::<u32>("counters", "plain").unwrap_err(),
    ] {
        let Error::Serde { decoding: true, .. } = &err else {
            panic!("{err:?}");
        };
        let text = err.to_string();
        assert!(
            text.contains("creds/creds") || text.contains("counters/"),
            "{text}"
        );
        // The data itself is never quoted.
        assert!(
            !text.contains("secret-looking")
                && !text.contains("not a number")
                && !text.contains("apples"),
            "{text}"
        );
    }

    // Encoding can fail too (here the type's own Serialize refuses): nothing is
    // written, and a batch is left as it was.
    let odd = Refuses;
    let err = store.put_as("odd", "map", &odd).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Serde {
                decoding: false,
                ..
            }
        ),
        "{err:?}"
    );
    let mut batch = Batch::new();
    batch.put("a", "b", vec![1]);
    assert!(batch.put_as("odd", "map", &odd).is_err());
    store.set(&batch).unwrap();
    assert_eq!(store.namespaces().unwrap(), vec!["a", "counters", "creds"]);
}
