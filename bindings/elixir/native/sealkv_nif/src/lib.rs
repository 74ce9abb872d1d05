#![deny(missing_docs)]
//! The native half of the `sealkv` Mix project: a thin Rustler layer over the `sealkv`
//! facade, loaded by `Sealkv.Native` (`bindings/elixir/lib/sealkv/native.ex`) with
//! `:erlang.load_nif/2`, so the project needs no Hex package.
//!
//! Scheduling: every call that can block runs on a dirty scheduler (opening, which
//! derives a key with Argon2id, on a dirty CPU one; disk and server work on dirty I/O
//! ones), so the VM's normal schedulers keep running. A transaction runs on a thread of
//! its own, which holds the lock key and the engine's transaction while the Elixir
//! function runs: taking the lock key never occupies a scheduler (the thread sends a
//! message once it holds the key), and the function's reads and writes reach it over a
//! channel.
//!
//! Errors are `{:error, {code, message}}` with a stable atom `code`; the Elixir half
//! makes them `%Sealkv.Error{}`. Arguments are decoded by hand, never by Rustler's
//! generated decoders: a `badarg` raised by a NIF carries its arguments in the
//! stacktrace, and `open`'s include the passphrase or key. No panic leaves this crate
//! either (see [`guarded`]).

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rustler::{
    Atom, Binary, Encoder, Env, LocalPid, NewBinary, OwnedEnv, Resource, ResourceArc, Term,
};
use sealkv::{Batch, Concurrency, Error, MasterKey, Options, Passphrase, Secret, Session, Store};

mod atoms {
    rustler::atoms! {
        ok,
        error,
        nil,
        sealkv_tx,
        // Open modes
        open,
        create,
        open_or_create,
        accept_restore,
        read_only,
        // Secrets
        passphrase,
        key,
        // Options
        concurrency,
        shared,
        exclusive,
        multi_writer,
        kdf_memory_kib,
        kdf_passes,
        kdf_lanes,
        lock_timeout_ms,
        sync_replicas,
        failover_timeout_ms,
        // What an error code that is not an atom's name would become (none is)
        sealkv_error,
    }
}

/// An error on its way to Elixir: a stable code (an atom's name) and a message with no
/// secret in it.
struct Failure {
    code: &'static str,
    message: String,
}

impl Failure {
    /// `{code, message}`, the code as an atom.
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        (code_atom(env, self.code), &self.message).encode(env)
    }
}

/// A problem `verify` found: `{code, message}`, the code as an atom.
struct ProblemTerm(&'static str, String);

impl Encoder for ProblemTerm {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        (code_atom(env, self.0), &self.1).encode(env)
    }
}

/// The atom named `code` (every code is a plain lower-case name, always a valid atom).
fn code_atom(env: Env<'_>, code: &str) -> Atom {
    Atom::from_str(env, code).unwrap_or_else(|_| atoms::sealkv_error())
}

type NifResult<T> = Result<T, Failure>;

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure {
            code: code_of(&err),
            message: err.to_string(),
        }
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        code: "invalid_argument",
        message: message.into(),
    }
}

fn closed() -> Failure {
    Failure {
        code: "closed",
        message: "the store is closed".into(),
    }
}

/// The stable `code` of an engine error, as Elixir sees it: the engine's own
/// ([`Error::code`]), except that an older copy put back is `:older_copy`.
fn code_of(err: &Error) -> &'static str {
    match err.code() {
        "rolled_back" => "older_copy",
        code => code,
    }
}

/// Runs `f`, turning a panic into an `:internal` error. The panic's own message is not
/// passed on (it could quote a value or a name); Rust's panic hook has printed it on
/// stderr, for a bug report. Rustler would raise instead, with the NIF's arguments
/// (a passphrase, a value) in the exception's stacktrace.
///
/// `AssertUnwindSafe`: the engine guards the store itself (a panic it catches in a read
/// or a commit makes the store refuse writes until reopened); this only keeps the
/// unwind and the arguments out of the VM.
fn guarded<T>(f: impl FnOnce() -> NifResult<T>) -> NifResult<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            // A payload whose own drop panics would unwind from here after all.
            std::mem::forget(payload);
            Err(internal())
        }
    }
}

/// What a panic becomes.
fn internal() -> Failure {
    Failure {
        code: "internal",
        message: "internal error: sealkv panicked (a bug; its message is on stderr); the call \
                  did not finish, and reopening the store is the safe course"
            .into(),
    }
}

/// `{:ok, value}` or `{:error, {code, message}}`, computed under [`guarded`].
fn reply<'a, T: Encoder>(env: Env<'a>, f: impl FnOnce() -> NifResult<T>) -> Term<'a> {
    encode_result(env, guarded(f))
}

fn encode_result<'a, T: Encoder>(env: Env<'a>, result: NifResult<T>) -> Term<'a> {
    match result {
        Ok(value) => (atoms::ok(), value).encode(env),
        Err(f) => (atoms::error(), f.encode(env)).encode(env),
    }
}

/// A binary term holding `bytes`.
fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut out = NewBinary::new(env, bytes.len());
    out.as_mut_slice().copy_from_slice(bytes);
    Term::from(out)
}

/// Bytes of a binary argument (what an Elixir string or binary is).
fn bytes_of<'a>(term: Term<'a>, what: &str) -> NifResult<Binary<'a>> {
    term.decode::<Binary>()
        .map_err(|_| invalid(format!("{what} must be a binary")))
}

fn string_of(term: Term<'_>, what: &str) -> NifResult<String> {
    let bytes = bytes_of(term, what)?;
    String::from_utf8(bytes.as_slice().to_vec())
        .map_err(|_| invalid(format!("{what} must be valid UTF-8")))
}

fn strings_of(term: Term<'_>, what: &str) -> NifResult<Vec<String>> {
    let items: Vec<Term> = term
        .decode()
        .map_err(|_| invalid(format!("{what} must be a list of binaries")))?;
    items.into_iter().map(|t| string_of(t, what)).collect()
}

/// `nil` or a session name.
fn session_name(term: Term<'_>) -> NifResult<Option<String>> {
    if term.decode::<Atom>().is_ok_and(|a| a == atoms::nil()) {
        return Ok(None);
    }
    string_of(term, "a session").map(Some)
}

fn u32_of(term: Term<'_>, what: &str) -> NifResult<u32> {
    term.decode::<u32>()
        .map_err(|_| invalid(format!("{what} must be a non-negative integer below 2^32")))
}

/// The secret: `{:passphrase, binary}` or `{:key, <<_::256>>}`. Errors never quote it.
fn secret_of(term: Term<'_>) -> NifResult<Secret> {
    let (kind, value): (Atom, Term) = term
        .decode()
        .map_err(|_| invalid("give exactly one of `passphrase:` or `key:`"))?;
    if kind == atoms::passphrase() {
        let bytes = bytes_of(value, "the passphrase")?;
        let text = std::str::from_utf8(bytes.as_slice())
            .map_err(|_| invalid("the passphrase must be valid UTF-8"))?;
        Ok(Secret::Passphrase(Passphrase::new(text)))
    } else if kind == atoms::key() {
        let bytes = bytes_of(value, "the key")?;
        MasterKey::from_bytes(bytes.as_slice())
            .map(Secret::Key)
            .map_err(|e| Failure::from(Error::Key(e)))
    } else {
        Err(invalid("give exactly one of `passphrase:` or `key:`"))
    }
}

/// Options from a map with atom keys (the Elixir half checks names and builds it).
fn options_of(term: Term<'_>) -> NifResult<Options> {
    let entries: Vec<(Atom, Term)> = term
        .decode::<std::collections::HashMap<Atom, Term>>()
        .map_err(|_| invalid("options must be a map"))?
        .into_iter()
        .collect();
    let mut opts = Options::default();
    for (name, value) in entries {
        if name == atoms::concurrency() {
            let mode: Atom = value
                .decode()
                .map_err(|_| invalid("concurrency must be :shared, :exclusive or :multi_writer"))?;
            opts.concurrency = if mode == atoms::shared() {
                Concurrency::Shared
            } else if mode == atoms::exclusive() {
                Concurrency::Exclusive
            } else if mode == atoms::multi_writer() {
                Concurrency::MultiWriter
            } else {
                return Err(invalid(
                    "concurrency must be :shared, :exclusive or :multi_writer",
                ));
            };
        } else if name == atoms::kdf_memory_kib() {
            opts.kdf.m_cost_kib = u32_of(value, "kdf memory_kib")?;
        } else if name == atoms::kdf_passes() {
            opts.kdf.t_cost = u32_of(value, "kdf passes")?;
        } else if name == atoms::kdf_lanes() {
            opts.kdf.p_cost = u32_of(value, "kdf lanes")?;
        } else if name == atoms::lock_timeout_ms() {
            opts.lock_timeout = Duration::from_millis(u32_of(value, "lock_timeout")?.into());
        } else if name == atoms::sync_replicas() {
            opts.sync_replicas = u32_of(value, "sync_replicas")?;
        } else if name == atoms::failover_timeout_ms() {
            opts.failover_timeout =
                Duration::from_millis(u32_of(value, "failover_timeout")?.into());
        } else {
            return Err(invalid("unknown option"));
        }
    }
    Ok(opts)
}

/// An open store: a NIF resource, so the store is closed when the last Elixir term
/// referring to it is garbage-collected, or by `close/1` (calls running then finish
/// first; the file is released when the last of them ends).
pub struct StoreRes {
    store: RwLock<Option<Store>>,
}

#[rustler::resource_impl]
impl Resource for StoreRes {}

impl Drop for StoreRes {
    /// The VM runs this on a normal scheduler when the collector frees the handle; a
    /// store's last handle closes its file (and its engine's threads), so that is
    /// done on a thread of its own.
    fn drop(&mut self) {
        let store = self
            .store
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(store) = store {
            // When no thread can be had, spawn drops the closure: closed here after all.
            let _ = std::thread::Builder::new()
                .name("sealkv-close".into())
                .spawn(move || drop(store));
        }
    }
}

impl StoreRes {
    fn store(&self) -> NifResult<Store> {
        // A poisoned lock only means a thread panicked while closing.
        let guard = self.store.read().unwrap_or_else(|e| e.into_inner());
        guard.clone().ok_or_else(closed)
    }

    fn session(&self, name: Term<'_>) -> NifResult<Session> {
        let store = self.store()?;
        match session_name(name)? {
            Some(id) => Ok(store.session(&id)?),
            None => Ok(store.default_session()),
        }
    }
}

fn store_of<'a>(term: Term<'a>) -> NifResult<ResourceArc<StoreRes>> {
    term.decode()
        .map_err(|_| invalid("not a sealkv store handle"))
}

/// Opens the store at `path`. `mode` is `:open`, `:create`, `:open_or_create`,
/// `:read_only` or `:accept_restore`. On a dirty CPU scheduler: opening a passphrase store derives its key
/// with Argon2id.
#[rustler::nif(schedule = "DirtyCpu")]
fn open<'a>(
    env: Env<'a>,
    path: Term<'a>,
    mode: Term<'a>,
    secret: Term<'a>,
    options: Term<'a>,
) -> Term<'a> {
    reply(env, || open_in(path, mode, secret, options))
}

/// [`open`] for a `postgres://` URL, on a dirty I/O scheduler: it waits on the network
/// (and keeps trying while the server fails over) more than it derives keys.
#[rustler::nif(schedule = "DirtyIo")]
fn open_remote<'a>(
    env: Env<'a>,
    url: Term<'a>,
    mode: Term<'a>,
    secret: Term<'a>,
    options: Term<'a>,
) -> Term<'a> {
    reply(env, || open_in(url, mode, secret, options))
}

fn open_in(
    path: Term<'_>,
    mode: Term<'_>,
    secret: Term<'_>,
    options: Term<'_>,
) -> NifResult<ResourceArc<StoreRes>> {
    let path = string_of(path, "the path")?;
    let mode: Atom = mode.decode().map_err(|_| invalid("unknown open mode"))?;
    let secret = secret_of(secret)?;
    let opts = options_of(options)?;
    let path = Path::new(&path);
    let store = if mode == atoms::open() {
        Store::open(path, secret, opts)
    } else if mode == atoms::create() {
        Store::create(path, secret, opts)
    } else if mode == atoms::open_or_create() {
        sealkv::open_or_create(path, secret, opts)
    } else if mode == atoms::read_only() {
        Store::open_read_only(path, secret, opts)
    } else if mode == atoms::accept_restore() {
        Store::accept_restore(path, secret, opts)
    } else {
        return Err(invalid("unknown open mode"));
    }?;
    Ok(ResourceArc::new(StoreRes {
        store: RwLock::new(Some(store)),
    }))
}

/// Values of `keys` in `namespace`, in the order asked, `nil` where absent.
#[rustler::nif(schedule = "DirtyIo")]
fn get<'a>(
    env: Env<'a>,
    store: Term<'a>,
    session: Term<'a>,
    namespace: Term<'a>,
    keys: Term<'a>,
) -> Term<'a> {
    let found = guarded(|| {
        let session = store_of(store)?.session(session)?;
        let namespace = string_of(namespace, "the namespace")?;
        let keys = strings_of(keys, "keys")?;
        let mut found = session.get(&namespace, &keys)?;
        Ok(keys
            .iter()
            .map(|k| found.remove(k))
            .collect::<Vec<Option<sealkv::Value>>>())
    });
    encode_result(env, found.map(|values| values_term(env, &values)))
}

fn values_term<'a>(env: Env<'a>, values: &[Option<sealkv::Value>]) -> Term<'a> {
    values
        .iter()
        .map(|v| match v {
            Some(bytes) => binary(env, bytes),
            None => atoms::nil().encode(env),
        })
        .collect::<Vec<Term>>()
        .encode(env)
}

/// A batch from a list of `{namespace, key, value}` (a `nil` value deletes) and
/// `{namespace, key, value, ttl_ms}`.
fn batch_of(changes: Term<'_>) -> NifResult<Batch> {
    let items: Vec<Term> = changes
        .decode()
        .map_err(|_| invalid("changes must be a list of tuples"))?;
    let mut batch = Batch::new();
    for item in items {
        let fields = rustler::types::tuple::get_tuple(item)
            .map_err(|_| invalid("each change must be a tuple"))?;
        let (ns, key, value, ttl) = match fields[..] {
            [ns, key, value] => (ns, key, value, None),
            [ns, key, value, ttl] => (ns, key, value, Some(ttl)),
            _ => {
                return Err(invalid(
                    "each change is {namespace, key, value} or {…, ttl_ms}",
                ));
            }
        };
        let ns = string_of(ns, "the namespace")?;
        let key = string_of(key, "the key")?;
        // Checked here, so that a transaction's bad write fails where it is made, not
        // at its commit.
        sealkv::check_name(&ns)?;
        sealkv::check_name(&key)?;
        if value.decode::<Atom>().is_ok_and(|a| a == atoms::nil()) {
            batch.delete(&ns, &key);
            continue;
        }
        let value = bytes_of(value, "a value")?.as_slice().to_vec();
        match ttl {
            None => batch.put(&ns, &key, value),
            Some(ms) => {
                let ms: u64 = ms
                    .decode()
                    .map_err(|_| invalid("ttl_ms must be a positive integer"))?;
                batch.put_with_ttl(&ns, &key, value, Duration::from_millis(ms))
            }
        };
    }
    Ok(batch)
}

/// Applies puts and deletes in one atomic, durable transaction.
#[rustler::nif(schedule = "DirtyIo")]
fn set<'a>(env: Env<'a>, store: Term<'a>, session: Term<'a>, changes: Term<'a>) -> Term<'a> {
    reply(env, || {
        let session = store_of(store)?.session(session)?;
        let batch = batch_of(changes)?;
        session.set(&batch)?;
        Ok(atoms::ok())
    })
}

/// Deletes one value; `{:ok, existed}`.
#[rustler::nif(schedule = "DirtyIo")]
fn delete<'a>(
    env: Env<'a>,
    store: Term<'a>,
    session: Term<'a>,
    namespace: Term<'a>,
    key: Term<'a>,
) -> Term<'a> {
    reply(env, || {
        let session = store_of(store)?.session(session)?;
        let namespace = string_of(namespace, "the namespace")?;
        let key = string_of(key, "the key")?;
        Ok(session.delete(&namespace, &key)?)
    })
}

/// The keys of `namespace`, sorted.
#[rustler::nif(schedule = "DirtyIo")]
fn list<'a>(env: Env<'a>, store: Term<'a>, session: Term<'a>, namespace: Term<'a>) -> Term<'a> {
    reply(env, || {
        let session = store_of(store)?.session(session)?;
        let namespace = string_of(namespace, "the namespace")?;
        Ok(session.list(&namespace)?)
    })
}

/// The namespaces that hold values.
#[rustler::nif(schedule = "DirtyIo")]
fn namespaces<'a>(env: Env<'a>, store: Term<'a>, session: Term<'a>) -> Term<'a> {
    reply(env, || {
        Ok(store_of(store)?.session(session)?.namespaces()?)
    })
}

/// The named sessions that hold values, sorted.
#[rustler::nif(schedule = "DirtyIo")]
fn sessions<'a>(env: Env<'a>, store: Term<'a>) -> Term<'a> {
    reply(env, || Ok(store_of(store)?.store()?.sessions()?))
}

/// Deletes a named session and all its values in one transaction; `{:ok, had_any}`.
#[rustler::nif(schedule = "DirtyIo")]
fn drop_session<'a>(env: Env<'a>, store: Term<'a>, id: Term<'a>) -> Term<'a> {
    reply(env, || {
        let id = string_of(id, "the session")?;
        Ok(store_of(store)?.store()?.drop_session(&id)?)
    })
}

/// Deletes every value of the session, in one transaction.
#[rustler::nif(schedule = "DirtyIo")]
fn clear<'a>(env: Env<'a>, store: Term<'a>, session: Term<'a>) -> Term<'a> {
    reply(env, || {
        store_of(store)?.session(session)?.clear()?;
        Ok(atoms::ok())
    })
}

/// Removes expired values now; `{:ok, count}`.
#[rustler::nif(schedule = "DirtyIo")]
fn sweep<'a>(env: Env<'a>, store: Term<'a>) -> Term<'a> {
    reply(env, || Ok(store_of(store)?.store()?.sweep()?))
}

/// Writes a consistent copy of the store to `dest` (a new file or a URL), online.
#[rustler::nif(schedule = "DirtyIo")]
fn backup<'a>(env: Env<'a>, store: Term<'a>, dest: Term<'a>) -> Term<'a> {
    reply(env, || {
        let dest = string_of(dest, "the destination")?;
        store_of(store)?.store()?.backup(&dest)?;
        Ok(atoms::ok())
    })
}

/// Anchors the store at `location` (a string), or removes its anchor (`nil`).
#[rustler::nif(schedule = "DirtyIo")]
fn set_anchor<'a>(env: Env<'a>, store: Term<'a>, location: Term<'a>) -> Term<'a> {
    reply(env, || {
        let location = if location.is_atom() {
            None
        } else {
            let text = string_of(location, "the anchor location")?;
            Some(sealkv::AnchorLocation::parse(&text)?)
        };
        store_of(store)?.store()?.set_anchor(location)?;
        Ok(atoms::ok())
    })
}

/// The store's restore epoch; `{:ok, n}`.
#[rustler::nif]
fn restore_epoch<'a>(env: Env<'a>, store: Term<'a>) -> Term<'a> {
    reply(env, || Ok(store_of(store)?.store()?.restore_epoch()))
}

/// Makes a new primary data key; `{:ok, id}`.
#[rustler::nif(schedule = "DirtyIo")]
fn rotate<'a>(env: Env<'a>, store: Term<'a>) -> Term<'a> {
    reply(env, || Ok(store_of(store)?.store()?.rotate()?))
}

/// Opens every value and checks the store; `{:ok, [{code, message}]}`.
#[rustler::nif(schedule = "DirtyIo")]
fn verify<'a>(env: Env<'a>, store: Term<'a>) -> Term<'a> {
    reply(env, || {
        let problems = store_of(store)?.store()?.verify()?;
        Ok(problems
            .iter()
            .map(|e| ProblemTerm(code_of(e), e.to_string()))
            .collect::<Vec<_>>())
    })
}

/// Closes the handle: later calls return `:closed`. On a dirty I/O scheduler: the last
/// handle of a store releases its file.
#[rustler::nif(schedule = "DirtyIo")]
fn close<'a>(env: Env<'a>, store: Term<'a>) -> Term<'a> {
    reply(env, || {
        let res = store_of(store)?;
        let store = res.store.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(store);
        Ok(atoms::ok())
    })
}

/// What the Elixir function of a transaction asks of the thread that holds it.
enum TxOp {
    Get {
        namespace: String,
        keys: Vec<String>,
        reply: Sender<NifResult<Vec<Option<sealkv::Value>>>>,
    },
    Write(Batch),
    Commit(Sender<NifResult<()>>),
}

/// A transaction in progress: the sending end of its thread's channel. Dropping it
/// (the Elixir process ended, or the handle was garbage-collected) without a commit
/// discards the transaction's writes and releases its lock key.
pub struct TxRes {
    ops: Mutex<Option<Sender<TxOp>>>,
}

#[rustler::resource_impl]
impl Resource for TxRes {}

impl TxRes {
    fn send(&self, op: TxOp) -> NifResult<()> {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.as_ref()
            .ok_or_else(ended)?
            .send(op)
            .map_err(|_| ended())
    }
}

/// A call on a transaction that has committed, been aborted, or lost its thread.
fn ended() -> Failure {
    Failure {
        code: "closed",
        message: "the transaction has ended".into(),
    }
}

fn tx_of<'a>(term: Term<'a>) -> NifResult<ResourceArc<TxRes>> {
    term.decode()
        .map_err(|_| invalid("not a sealkv transaction handle"))
}

/// Begins a transaction on `lock_key`: returns `{:ok, tx}` at once, and the calling
/// process then receives `{:sealkv_tx, tag, :ok}` once the lock key is held (or
/// `{:sealkv_tx, tag, {:error, {code, message}}}`). Waiting for the lock key happens on
/// the transaction's own thread, never on a scheduler: Elixir processes queued on one
/// key must not take the dirty schedulers its holder needs to finish. (The call itself
/// runs on a dirty I/O scheduler: a named session's keys are derived under the
/// keyring's lock, which a rotation holds across a commit.)
#[rustler::nif(schedule = "DirtyIo")]
fn tx_begin<'a>(
    env: Env<'a>,
    store: Term<'a>,
    session: Term<'a>,
    lock_key: Term<'a>,
    tag: Term<'a>,
) -> Term<'a> {
    let caller = env.pid();
    let tag_env = OwnedEnv::new();
    let tag = tag_env.save(tag);
    reply(env, || {
        let session = store_of(store)?.session(session)?;
        let lock_key = string_of(lock_key, "the lock key")?;
        let (ops, inbox) = channel();
        std::thread::Builder::new()
            .name("sealkv-tx".into())
            .spawn(move || run_transaction(session, &lock_key, inbox, caller, tag_env, tag))
            .map_err(|e| Failure::from(Error::Io(e)))?;
        Ok(ResourceArc::new(TxRes {
            ops: Mutex::new(Some(ops)),
        }))
    })
}

/// Why a transaction's closure ended without committing.
enum Ended {
    /// The Elixir side dropped the transaction (aborted, raised, or died).
    Dropped,
    Engine(Error),
    /// sealkv panicked (a bug): reported as `:internal`, never unwound into the VM.
    Panicked,
}

impl From<Error> for Ended {
    fn from(e: Error) -> Self {
        Ended::Engine(e)
    }
}

/// The transaction's thread: takes the lock key through the engine, tells the caller,
/// then serves the Elixir function's reads and writes until it commits or goes away.
fn run_transaction(
    session: Session,
    lock_key: &str,
    inbox: Receiver<TxOp>,
    caller: LocalPid,
    mut tag_env: OwnedEnv,
    tag: rustler::env::SavedTerm,
) {
    let mut commit_reply: Option<Sender<NifResult<()>>> = None;
    let mut told = false;
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
        session.transaction(lock_key, |tx| -> Result<(), Ended> {
            told = true;
            // The caller may be gone already: then the channel is closed too.
            let _ = tag_env.send_and_clear(&caller, |env| {
                (atoms::sealkv_tx(), tag.load(env), atoms::ok()).encode(env)
            });
            loop {
                match inbox.recv() {
                    Ok(TxOp::Get {
                        namespace,
                        keys,
                        reply,
                    }) => {
                        let found = tx.get(&namespace, &keys).map(|mut found| {
                            keys.iter().map(|k| found.remove(k)).collect::<Vec<_>>()
                        });
                        let _ = reply.send(found.map_err(Failure::from));
                    }
                    Ok(TxOp::Write(batch)) => tx.set(batch),
                    Ok(TxOp::Commit(reply)) => {
                        commit_reply = Some(reply);
                        return Ok(());
                    }
                    Err(_) => return Err(Ended::Dropped),
                }
            }
        })
    }));
    let result = run.unwrap_or(Err(Ended::Panicked));
    match result {
        Ok(()) => {
            if let Some(reply) = commit_reply {
                let _ = reply.send(Ok(()));
            }
        }
        Err(Ended::Dropped) => {}
        Err(ended) => {
            let failure = match ended {
                Ended::Engine(e) => Failure::from(e),
                _ => internal(),
            };
            if let Some(reply) = commit_reply {
                let _ = reply.send(Err(failure));
            } else if !told {
                let _ = tag_env.send_and_clear(&caller, |env| {
                    let err = (atoms::error(), failure.encode(env));
                    (atoms::sealkv_tx(), tag.load(env), err).encode(env)
                });
            }
        }
    }
}

/// Reads through the transaction: its own writes first, then the store.
#[rustler::nif(schedule = "DirtyIo")]
fn tx_get<'a>(env: Env<'a>, tx: Term<'a>, namespace: Term<'a>, keys: Term<'a>) -> Term<'a> {
    let found = guarded(|| {
        let tx = tx_of(tx)?;
        let namespace = string_of(namespace, "the namespace")?;
        let keys = strings_of(keys, "keys")?;
        let (reply, answer) = channel();
        tx.send(TxOp::Get {
            namespace,
            keys,
            reply,
        })?;
        answer.recv().map_err(|_| ended())?
    });
    encode_result(env, found.map(|values| values_term(env, &values)))
}

/// Buffers puts and deletes (the `set/2` change list) in the transaction.
#[rustler::nif]
fn tx_set<'a>(env: Env<'a>, tx: Term<'a>, changes: Term<'a>) -> Term<'a> {
    reply(env, || {
        let tx = tx_of(tx)?;
        tx.send(TxOp::Write(batch_of(changes)?))?;
        Ok(atoms::ok())
    })
}

/// Commits the transaction's writes in one durable commit and releases its lock key.
#[rustler::nif(schedule = "DirtyIo")]
fn tx_commit<'a>(env: Env<'a>, tx: Term<'a>) -> Term<'a> {
    reply(env, || {
        let tx = tx_of(tx)?;
        let (reply, answer) = channel();
        tx.send(TxOp::Commit(reply))?;
        let result = answer.recv().map_err(|_| ended())?;
        // Ended: later calls on this handle are refused.
        tx.ops.lock().unwrap_or_else(|e| e.into_inner()).take();
        result.map(|()| atoms::ok())
    })
}

/// Discards the transaction's writes and releases its lock key.
#[rustler::nif]
fn tx_abort<'a>(env: Env<'a>, tx: Term<'a>) -> Term<'a> {
    reply(env, || {
        let tx = tx_of(tx)?;
        tx.ops.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(atoms::ok())
    })
}

rustler::init!("Elixir.Sealkv.Native");
