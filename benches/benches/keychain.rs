//! Opening a store through the OS keychain, against a passphrase (Argon2id at its
//! default cost) and a raw key, in one run: the keychain's lookup is the whole price of
//! not asking the user. `keychain-open-store` is the whole path a desktop app takes
//! (`Keychain::open_store` on a store `Keychain::create_store` made, as
//! tauri-plugin-sealkv opens it): a connection to the Secret Service, the key's lookup,
//! the anchor entry's, and the open checking that keychain anchor.
//!
//! Needs a Secret Service; on a machine without a desktop session:
//!
//! ```sh
//! HOME=$(mktemp -d) CARGO_HOME=~/.cargo RUSTUP_HOME=~/.rustup dbus-run-session -- bash -c \
//!   'printf pw | gnome-keyring-daemon --unlock --components=secrets >/dev/null;
//!    cargo bench -p sealkv-benches --bench keychain'
//! ```

use criterion::{Criterion, criterion_group, criterion_main};
use sealkv::keychain::Keychain;
use sealkv::{MasterKey, Options, Passphrase, Store};

fn open(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let keyed = dir.path().join("keyed.sealkv");
    let key = MasterKey::generate().expect("os random");
    drop(Store::create(&keyed, key.clone(), Options::default()).expect("create"));
    let service = format!("sealkv-bench-{}", std::process::id());
    let keychain = Keychain::new(&service).expect("a Secret Service (see the header)");
    keychain.store_key("bench", &key).expect("store");
    let phrased = dir.path().join("phrased.sealkv");
    drop(
        Store::create(
            &phrased,
            Passphrase::new("correct horse battery"),
            Options::default(),
        )
        .expect("create"),
    );

    let desktop = dir.path().join("desktop.sealkv");
    let desktop_service = format!("sealkv-bench-desktop-{}", std::process::id());
    let made = Keychain::new(&desktop_service)
        .and_then(|k| k.create_store(&desktop, Options::default()))
        .expect("create through the keychain");
    let desktop_id = made.id_hex();
    drop(made);

    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    g.bench_function("keychain", |b| {
        b.iter(|| {
            let key = Keychain::new(&service)
                .and_then(|k| k.load_key("bench"))
                .expect("load");
            Store::open(&keyed, key, Options::default()).expect("open")
        })
    });
    g.bench_function("keychain-open-store", |b| {
        b.iter(|| {
            Keychain::new(&desktop_service)
                .and_then(|k| k.open_store(&desktop, Options::default()))
                .expect("open_store")
        })
    });
    g.bench_function("raw-key", |b| {
        b.iter(|| Store::open(&keyed, key.clone(), Options::default()).expect("open"))
    });
    g.bench_function("passphrase-argon2id-default", |b| {
        b.iter(|| {
            Store::open(
                &phrased,
                Passphrase::new("correct horse battery"),
                Options::default(),
            )
            .expect("open")
        })
    });
    g.finish();
    keychain.delete_key("bench").expect("delete");
    let desktop_keychain = Keychain::new(&desktop_service).expect("keychain");
    desktop_keychain.delete_key(&desktop_id).expect("delete");
    desktop_keychain
        .delete_key(&format!("{desktop_id}.anchor"))
        .expect("delete");
}

criterion_group!(benches, open);
criterion_main!(benches);
