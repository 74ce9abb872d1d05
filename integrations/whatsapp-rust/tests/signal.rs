//! Two clients' stores — whatsapp-rust's own `SignalProtocolStoreAdapter` over its
//! `PersistenceManager` over `SealkvBackend` — run a Signal session with wacore's
//! libsignal, are dropped, reopened from their files, and go on. Then a crash test
//! modelled on upstream's `tests/signal_durability_sqlite.rs`, and a scan of the files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use rand::SeedableRng;
use sealkv::{MasterKey, Options};
use sealkv_whatsapp::SealkvBackend;
use wacore::libsignal::protocol::consts::SENDER_CHAIN_RESERVATION_BATCH;
use wacore::libsignal::protocol::{
    ChainKey, CiphertextMessage, IdentityKey, KeyPair, PreKeyBundle, PreKeyRecord, PreKeyStore,
    ProtocolAddress, RootKey, SenderKeyRecord, SenderKeyStore, SessionRecord, SessionState,
    UsePQRatchet, create_sender_key_distribution_message, group_encrypt, message_decrypt,
    message_encrypt, process_prekey_bundle,
};
use wacore::libsignal::store::sender_key_name::SenderKeyName;
use wacore::store::traits::{Backend, SignalStore};
use whatsapp_rust::store::persistence_manager::PersistenceManager;
use whatsapp_rust::store::signal_adapter::SignalProtocolStoreAdapter;
use whatsapp_rust::store::signal_cache::SignalStoreCache;

const ALICE: &str = "15550001111@s.whatsapp.net";
const BOB: &str = "15550002222@s.whatsapp.net";

fn key(byte: u8) -> MasterKey {
    MasterKey::from_bytes(&[byte; 32]).unwrap()
}

fn open_or_create(path: &Path, byte: u8) -> SealkvBackend {
    if path.exists() {
        SealkvBackend::open(path, key(byte), Options::default()).unwrap()
    } else {
        SealkvBackend::create(path, key(byte), Options::default()).unwrap()
    }
}

/// One client's stores, as whatsapp-rust builds them.
struct Party {
    backend: Arc<dyn Backend>,
    pm: Arc<PersistenceManager>,
    cache: Arc<SignalStoreCache>,
    adapter: SignalProtocolStoreAdapter,
}

async fn party(path: &Path, byte: u8) -> Party {
    let backend: Arc<dyn Backend> = Arc::new(open_or_create(path, byte));
    let pm = Arc::new(PersistenceManager::new(backend.clone()).await.unwrap());
    let cache = Arc::new(SignalStoreCache::new());
    let adapter = SignalProtocolStoreAdapter::new(pm.get_device_arc().await, cache.clone());
    Party {
        backend,
        pm,
        cache,
        adapter,
    }
}

impl Party {
    /// What the client does before a message leaves: the cache reaches the backend.
    async fn flush(&self) {
        let signal: &dyn SignalStore = self.backend.as_ref();
        self.cache.flush(signal).await.unwrap();
        self.pm.flush().await.unwrap();
    }

    async fn send(&mut self, to: &ProtocolAddress, text: &str) -> CiphertextMessage {
        let ct = message_encrypt(
            text.as_bytes(),
            to,
            &mut self.adapter.session_store,
            &mut self.adapter.identity_store,
        )
        .await
        .unwrap();
        self.flush().await;
        ct
    }

    async fn receive(&mut self, from: &ProtocolAddress, ct: &CiphertextMessage) -> String {
        let mut rng = rand::make_rng::<rand::rngs::StdRng>();
        let res = message_decrypt(
            ct,
            from,
            &mut self.adapter.session_store,
            &mut self.adapter.identity_store,
            &mut self.adapter.pre_key_store,
            &self.adapter.signed_pre_key_store,
            &mut rng,
            UsePQRatchet::No,
        )
        .await
        .unwrap();
        if let Some(id) = res.consumed_prekey_id {
            self.adapter
                .pre_key_store
                .buffer_consumed_prekey(id, from)
                .await;
        }
        self.flush().await;
        String::from_utf8(res.plaintext).unwrap()
    }
}

#[tokio::test]
async fn two_parties_talk_reopen_and_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_path, bob_path) = (
        dir.path().join("alice.sealkv"),
        dir.path().join("bob.sealkv"),
    );
    let alice_addr = ProtocolAddress::new(ALICE, 0.into());
    let bob_addr = ProtocolAddress::new(BOB, 0.into());

    let mut alice = party(&alice_path, 1).await;
    let mut bob = party(&bob_path, 2).await;
    let alice_identity = alice
        .pm
        .get_device_snapshot()
        .identity_key
        .public_key
        .serialize();

    // Bob publishes a one-time pre-key; Alice builds a session from his bundle.
    let mut rng = rand::make_rng::<rand::rngs::StdRng>();
    let one_time = KeyPair::generate(&mut rng);
    bob.adapter
        .pre_key_store
        .save_pre_key(9001.into(), &PreKeyRecord::new(9001.into(), &one_time))
        .await
        .unwrap();
    assert!(bob.backend.load_prekey(9001).await.unwrap().is_some());
    let d = bob.pm.get_device_snapshot();
    let bundle = PreKeyBundle::new(
        d.registration_id,
        0.into(),
        Some((9001.into(), one_time.public_key)),
        d.signed_pre_key_id.into(),
        d.signed_pre_key.public_key,
        d.signed_pre_key_signature.to_vec(),
        IdentityKey::new(d.identity_key.public_key),
    )
    .unwrap();
    process_prekey_bundle(
        &bob_addr,
        &mut alice.adapter.session_store,
        &mut alice.adapter.identity_store,
        &bundle,
        &mut rng,
        UsePQRatchet::No,
    )
    .await
    .unwrap();

    let first = alice.send(&bob_addr, "hello bob").await;
    assert!(matches!(first, CiphertextMessage::PreKeySignalMessage(_)));
    assert_eq!(bob.receive(&alice_addr, &first).await, "hello bob");
    let reply = bob.send(&alice_addr, "hello alice").await;
    assert!(matches!(reply, CiphertextMessage::SignalMessage(_)));
    assert_eq!(alice.receive(&bob_addr, &reply).await, "hello alice");
    assert!(
        bob.backend.load_prekey(9001).await.unwrap().is_none(),
        "the consumed one-time pre-key is gone once the session is durable"
    );
    assert!(
        alice
            .backend
            .has_session(&bob_addr.to_string())
            .await
            .unwrap()
    );

    // Drop both clients and reopen them from their files.
    drop(alice);
    drop(bob);
    let mut alice = party(&alice_path, 1).await;
    let mut bob = party(&bob_path, 2).await;
    assert_eq!(
        alice
            .pm
            .get_device_snapshot()
            .identity_key
            .public_key
            .serialize(),
        alice_identity,
        "the identity survives the restart"
    );
    for i in 0..5 {
        let m = alice.send(&bob_addr, &format!("after reopen {i}")).await;
        assert!(matches!(m, CiphertextMessage::SignalMessage(_)));
        assert_eq!(
            bob.receive(&alice_addr, &m).await,
            format!("after reopen {i}")
        );
        let r = bob.send(&alice_addr, &format!("reply {i}")).await;
        assert_eq!(alice.receive(&bob_addr, &r).await, format!("reply {i}"));
    }
    drop(alice);
    drop(bob);

    // Neither file shows a JID or a message.
    for path in [&alice_path, &bob_path] {
        let bytes = std::fs::read(path).unwrap();
        for needle in [
            "15550001111",
            "15550002222",
            "whatsapp.net",
            "hello",
            "reply",
            "after reopen",
            "session",
            "prekey",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} appears in {}",
                path.display()
            );
        }
    }
}

// ---- Crash durability, after upstream's tests/signal_durability_sqlite.rs ----------

const CHILD_MARKER: &str = "SEALKV_WA_DURABILITY_CHILD";
const DATABASE_ENV: &str = "SEALKV_WA_DURABILITY_DATABASE";
const FIXTURE_SEED: u64 = 0x51A6_5A17_EC4A_5E01;

type DmFingerprint = ([u8; 32], [u8; 16]);

struct CachedSenderKeyStore<'a> {
    cache: &'a SignalStoreCache,
    backend: &'a SealkvBackend,
}

#[async_trait::async_trait]
impl SenderKeyStore for CachedSenderKeyStore<'_> {
    async fn store_sender_key(
        &mut self,
        name: &SenderKeyName,
        record: SenderKeyRecord,
    ) -> wacore::libsignal::protocol::error::Result<()> {
        self.cache.put_sender_key(name, record).await;
        Ok(())
    }

    async fn load_sender_key(
        &self,
        name: &SenderKeyName,
    ) -> wacore::libsignal::protocol::error::Result<Option<SenderKeyRecord>> {
        Ok(self
            .cache
            .get_sender_key(name, self.backend)
            .await
            .map_err(|e| {
                wacore::libsignal::protocol::SignalProtocolError::BackendError(
                    "sealkv durability test",
                    e.into(),
                )
            })?
            .map(|record| (*record).clone()))
    }
}

fn dm_address() -> ProtocolAddress {
    ProtocolAddress::new("15550008001", 1.into())
}

fn group_name() -> SenderKeyName {
    SenderKeyName::from_parts("120363000000080001@g.us", "15550008002@s.whatsapp.net:0")
}

fn fresh_session(rng: &mut rand::rngs::StdRng) -> SessionRecord {
    let local = IdentityKey::new(KeyPair::generate(rng).public_key);
    let remote = IdentityKey::new(KeyPair::generate(rng).public_key);
    let base_key = KeyPair::generate(rng).public_key;
    let mut state = SessionState::new(3, &local, &remote, &RootKey::new([7; 32]), &base_key);
    state.set_sender_chain(&KeyPair::generate(rng), &ChainKey::new([11; 32], 0));
    SessionRecord::new(state)
}

fn spend_dm(record: &mut SessionRecord) -> (u32, DmFingerprint) {
    let chain = record
        .session_state()
        .unwrap()
        .get_sender_chain_key()
        .unwrap();
    let keys = chain.message_keys().generate_keys();
    let fingerprint = (*keys.cipher_key(), *keys.iv());
    let next = chain.next_chain_key().unwrap();
    record
        .session_state_mut()
        .unwrap()
        .set_sender_chain_key(&next)
        .unwrap();
    if chain.index() >= record.reserved_sender_chain_index() {
        record.reserve_sender_chain_counters(chain.index());
    }
    (chain.index(), fingerprint)
}

/// The child: flushes a session and a sender key (the durable lease), spends five more
/// counters of each without flushing, says so, and waits to be SIGKILLed.
async fn crash_child(database: &Path) {
    let store = open_or_create(database, 3);
    let cache = SignalStoreCache::new();
    let address = dm_address();
    let name = group_name();
    let mut rng = rand::rngs::StdRng::seed_from_u64(FIXTURE_SEED);

    let mut dm = fresh_session(&mut rng);
    assert_eq!(spend_dm(&mut dm).0, 0);
    cache.put_session(&address, dm).await;
    let mut sender = CachedSenderKeyStore {
        cache: &cache,
        backend: &store,
    };
    create_sender_key_distribution_message(&name, &mut sender, &mut rng)
        .await
        .unwrap();
    let first = group_encrypt(&mut sender, &name, b"first", &mut rng)
        .await
        .unwrap();
    assert_eq!(first.iteration(), 0);
    cache.flush(&store).await.expect("durable lease flush");
    assert!(!cache.needs_pre_wire_flush().await);

    let mut dm = cache.get_session(&address, &store).await.unwrap().unwrap();
    for expected in 1..=5 {
        assert_eq!(spend_dm(&mut dm).0, expected);
    }
    cache.put_session(&address, dm).await;
    for expected in 1..=5 {
        let m = group_encrypt(&mut sender, &name, b"unflushed", &mut rng)
            .await
            .unwrap();
        assert_eq!(m.iteration(), expected);
    }
    println!("ready to die");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

async fn verify_recovery(database: &Path) {
    let store = open_or_create(database, 3);
    let cache = SignalStoreCache::new();
    let address = dm_address();
    let name = group_name();
    let mut rng = rand::rngs::StdRng::seed_from_u64(FIXTURE_SEED ^ 0xFFFF);

    let mut child_record = fresh_session(&mut rand::rngs::StdRng::seed_from_u64(FIXTURE_SEED));
    let child_fingerprints: Vec<DmFingerprint> =
        (0..6).map(|_| spend_dm(&mut child_record).1).collect();

    let mut recovered = cache
        .get_session(&address, &store)
        .await
        .unwrap()
        .expect("durable session");
    let (counter, fingerprint) = spend_dm(&mut recovered);
    assert_eq!(
        counter, SENDER_CHAIN_RESERVATION_BATCH,
        "recovery burns to the persisted lease"
    );
    assert!(
        !child_fingerprints.contains(&fingerprint),
        "no message key is reused"
    );
    cache.put_session(&address, recovered).await;

    let mut sender = CachedSenderKeyStore {
        cache: &cache,
        backend: &store,
    };
    let group = group_encrypt(&mut sender, &name, b"recovered", &mut rng)
        .await
        .unwrap();
    assert_eq!(group.iteration(), SENDER_CHAIN_RESERVATION_BATCH);
    assert!(cache.needs_pre_wire_flush().await);
    cache.flush(&store).await.unwrap();
    assert!(!cache.needs_pre_wire_flush().await);

    cache.clear_after_flush().await;
    let mut exact = cache.get_session(&address, &store).await.unwrap().unwrap();
    assert_eq!(spend_dm(&mut exact).0, SENDER_CHAIN_RESERVATION_BATCH + 1);
    cache.put_session(&address, exact).await;
    let exact_group = group_encrypt(&mut sender, &name, b"exact", &mut rng)
        .await
        .unwrap();
    assert_eq!(exact_group.iteration(), SENDER_CHAIN_RESERVATION_BATCH + 1);
}

#[tokio::test]
#[ignore = "run as a subprocess by signal_durability_process_restart"]
async fn signal_durability_crash_child() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let database = PathBuf::from(std::env::var(DATABASE_ENV).unwrap());
    crash_child(&database).await;
}

#[tokio::test]
async fn signal_durability_process_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("durability.sealkv");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "signal_durability_crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_MARKER, "1")
        .env(DATABASE_ENV, &database)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.ends_with("ready to die"));
    assert!(ready, "the child stopped before its flush");
    child.kill().unwrap(); // SIGKILL: no exit hooks, no destructors
    let status = child.wait().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "the child was SIGKILLed");
    }
    verify_recovery(&database).await;
}
