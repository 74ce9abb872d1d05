//! End to end on a local file: create an encrypted store, write bot-auth-like secrets,
//! read them back, rotate the data key (re-encrypting everything), verify, and show
//! that the file holds no plaintext.
//!
//! Run: `cargo run --release --example demo [PATH]` (default `./demo.sealkv`, replaced).

use std::time::Instant;

use sealkv::{Batch, Options, Passphrase, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "demo.sealkv".into());
    let _ = std::fs::remove_file(&path);
    let passphrase = || Passphrase::new("demo passphrase - use your own");

    let t = Instant::now();
    let store = Store::create(&path, passphrase(), Options::default())?;
    println!(
        "created {path} (Argon2id 64 MiB, 3 passes) in {:.2?}",
        t.elapsed()
    );

    // Auth state shaped like Baileys': creds plus Signal key families.
    let phone = "4915550001234";
    let mut batch = Batch::new();
    batch.put("creds", "creds", format!(r#"{{"me":{{"id":"{phone}:7@s.whatsapp.net"}},"noiseKey":{{"private":{{"type":"Buffer","data":"SECRET-NOISE-KEY"}}}}}}"#).into_bytes());
    for i in 0..500 {
        batch.put(
            "pre-key",
            &i.to_string(),
            format!(r#"{{"private":"SECRET-PREKEY-{i:04}","public":"pub-{i}"}}"#).into_bytes(),
        );
    }
    for d in 0..20 {
        batch.put(
            "session",
            &format!("{phone}.{d}"),
            format!("SECRET-SESSION-RECORD-{d}-")
                .repeat(40)
                .into_bytes(),
        );
    }
    let t = Instant::now();
    store.set(&batch)?;
    println!(
        "wrote {} values in one atomic transaction in {:.2?}",
        batch.len(),
        t.elapsed()
    );

    let got = store.get("pre-key", &["7", "499"])?;
    assert_eq!(
        &got["7"][..],
        br#"{"private":"SECRET-PREKEY-0007","public":"pub-7"}"#
    );
    println!(
        "read back pre-keys 7 and 499; namespaces: {:?}",
        store.namespaces()?
    );

    // A per-account transaction: read, delete a used pre-key, all or nothing.
    store.transaction(phone, |tx| {
        let used = tx.get("pre-key", &["7"])?;
        assert!(used.contains_key("7"));
        tx.delete("pre-key", "7");
        Ok::<_, sealkv::Error>(())
    })?;

    let t = Instant::now();
    let new_key = store.rotate()?;
    let report = store.reencrypt(100, |_| {})?;
    let destroyed = store.destroy_unused_keys()?;
    store.compact()?;
    println!(
        "rotated to data key {new_key}, re-sealed {} values, destroyed key(s) {destroyed:?}, compacted, in {:.2?}",
        report.resealed,
        t.elapsed()
    );

    let failures = store.verify()?;
    println!("verify: {} failures", failures.len());
    drop(store);

    let raw = std::fs::read(&path)?;
    let leaks: Vec<&str> = ["SECRET", phone, "pre-key", "session", "creds", "noiseKey"]
        .into_iter()
        .filter(|needle| raw.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .collect();
    println!(
        "scanned {} bytes of {path}: plaintext found: {leaks:?}",
        raw.len()
    );

    let reopened = Store::open(&path, passphrase(), Options::default())?;
    println!(
        "reopened with the passphrase: {} pre-keys",
        reopened.count("pre-key")?
    );
    drop(reopened);
    match Store::open(&path, Passphrase::new("wrong"), Options::default()) {
        Err(e) => println!("a wrong passphrase: {e}"),
        Ok(_) => return Err("a wrong passphrase opened the store".into()),
    }
    if !failures.is_empty() || !leaks.is_empty() {
        return Err("demo failed".into());
    }
    println!("ok");
    Ok(())
}
