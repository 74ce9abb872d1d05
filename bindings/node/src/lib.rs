#![deny(missing_docs)]
//! The native half of the `sealkv` npm package: a thin napi-rs layer over the `sealkv`
//! facade. Every store call is an [`AsyncTask`] that runs on the libuv thread pool, so
//! nothing blocks the event loop. Errors cross as `SEALKV_<CODE>: <message>` and the
//! JavaScript half (`lib/`) turns them into `Error`s with a stable `code`.
//!
//! Types and errors are mapped here once; everything else (Baileys' JSON, sessions as
//! views) lives in the Rust facade or in `lib/`.
//!
//! No panic leaves this crate: a panic unwinding into napi's C callbacks aborts Node.
//! Every entry point (each `#[napi]` function's body, each task's `compute`, the
//! finalizer) runs under [`guarded`], which turns a panic into `SEALKV_INTERNAL`.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::RwLock;
use std::time::Duration;

use napi::bindgen_prelude::{AsyncTask, Buffer, ObjectFinalize, ToNapiValue, TypeName};
use napi::{Env, Error as NapiError, Status, Task};
use napi_derive::napi;
use sealkv::{
    Batch, Concurrency, Error, KdfParams, MasterKey, Options, Passphrase, Secret, Session, Store,
};

/// (Spelled `napi::Result` in the signatures of `#[napi]` functions: napi's type
/// generator recognizes only that name.)
type NapiResult<T> = napi::Result<T>;

/// The stable `code` of an engine error, as JavaScript sees it: `SEALKV_` and the
/// engine's own code in capitals (`SEALKV_WRONG_KEY`).
fn code_of(err: &Error) -> String {
    format!("SEALKV_{}", err.code().to_ascii_uppercase())
}

fn js_error(code: &str, message: impl std::fmt::Display) -> NapiError {
    NapiError::new(Status::GenericFailure, format!("{code}: {message}"))
}

fn engine_error(err: Error) -> NapiError {
    js_error(&code_of(&err), err)
}

fn closed() -> NapiError {
    js_error("SEALKV_CLOSED", "the store is closed")
}

fn invalid(message: impl std::fmt::Display) -> NapiError {
    js_error("SEALKV_INVALID_ARGUMENT", message)
}

/// Runs `f`, turning a panic into a `SEALKV_INTERNAL` error. The panic's own message is
/// not passed on (it could quote a value or a name); Rust's panic hook has printed it
/// on stderr, for a bug report.
///
/// `AssertUnwindSafe`: what a panic can leave half-changed is the store, and the engine
/// guards that itself (a panic it catches in a read or a commit makes the store refuse
/// writes until reopened); this only keeps the unwind out of napi.
fn guarded<T>(f: impl FnOnce() -> NapiResult<T>) -> NapiResult<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            // A payload whose own drop panics would unwind from here after all: leaked
            // instead, as napi's own guard does (one small allocation per panic).
            std::mem::forget(payload);
            Err(js_error(
                "SEALKV_INTERNAL",
                "internal error: sealkv panicked (a bug; its message is on stderr); the call \
                 did not finish, and reopening the store is the safe course",
            ))
        }
    }
}

/// How to unlock a store: exactly one of a passphrase or a 32-byte key.
#[napi(object)]
pub struct SecretInput {
    /// A passphrase (Argon2id derives the master key).
    pub passphrase: Option<String>,
    /// A raw 32-byte master key.
    pub key: Option<Buffer>,
}

/// Argon2id cost for a store created with a passphrase.
#[napi(object)]
pub struct KdfInput {
    /// Memory in KiB (default 65536).
    pub memory_kib: u32,
    /// Passes (default 3).
    pub passes: u32,
    /// Lanes (default 1).
    pub lanes: u32,
}

/// Options for opening or creating a store.
#[napi(object)]
pub struct OpenInput {
    /// Create the store when the file does not exist (default true).
    pub create: Option<bool>,
    /// Only create: reject with `SEALKV_EXISTS` when the file exists.
    pub create_new: Option<bool>,
    /// Open read-only (never writes; a store that needs recovery is read through an
    /// in-memory view).
    pub read_only: Option<bool>,
    /// Argon2id cost for a new passphrase store.
    pub kdf: Option<KdfInput>,
    /// `"shared"` (default: several processes may open the file; the first owns it and
    /// serves the others), `"exclusive"` (one process) or `"multi-writer"` (every
    /// process writes the file itself). Recorded at creation.
    pub concurrency: Option<String>,
    /// PostgreSQL: synchronous standbys every commit must wait for (refused with a
    /// clear error on a server that has fewer); the URL's `sync_replicas` raises it.
    pub sync_replicas: Option<u32>,
    /// PostgreSQL: how long calls keep trying while the server fails over, in ms
    /// (default 30000).
    pub failover_timeout_ms: Option<u32>,
    /// Accept this copy of the store as current after a restore meant as one (its
    /// anchor says it is older): see `Store::accept_restore`.
    pub accept_restore: Option<bool>,
}

/// One change of a batch: a put (with `value`) or a delete (`value` absent or null).
#[napi(object)]
pub struct Change {
    /// Namespace of the value.
    pub namespace: String,
    /// Key of the value.
    pub key: String,
    /// New value; absent or null deletes.
    pub value: Option<Buffer>,
    /// Time to live in milliseconds (whole seconds, at least one).
    pub ttl_ms: Option<f64>,
}

/// What `health` found.
#[napi(object)]
pub struct HealthReport {
    /// No problem found.
    pub healthy: bool,
    /// `file` or `postgres`.
    pub engine: String,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
    /// What may want attention but does not make the store unhealthy.
    pub notes: Vec<String>,
    /// Whether this handle's last commit succeeded (absent before its first).
    pub last_commit_ok: Option<bool>,
    /// Milliseconds since this handle's last commit ended.
    pub last_commit_age_ms: Option<f64>,
}

/// The process's Prometheus recorder, installed when the first store is opened (`None`
/// when the process had installed another recorder first).
static PROMETHEUS: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
    std::sync::OnceLock::new();

fn prometheus() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| {
                sealkv::observe::describe();
                // Histogram samples pile up until a render or an upkeep drains them:
                // an application that never calls metricsText() must not grow.
                let upkeep = handle.clone();
                let _ = std::thread::Builder::new()
                    .name("sealkv-metrics-upkeep".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(Duration::from_secs(5));
                            upkeep.run_upkeep();
                        }
                    });
                handle
            })
        })
        .as_ref()
}

/// A problem `verify` found.
#[napi(object)]
pub struct Problem {
    /// Stable code of the problem.
    pub code: String,
    /// What is wrong.
    pub message: String,
}

fn secret_of(input: SecretInput) -> NapiResult<Secret> {
    match (input.passphrase, input.key) {
        (Some(p), None) => Ok(Secret::Passphrase(Passphrase::new(p))),
        (None, Some(k)) => MasterKey::from_bytes(&k)
            .map(Secret::Key)
            .map_err(|e| engine_error(Error::Key(e))),
        _ => Err(invalid("give exactly one of `passphrase` or `key`")),
    }
}

fn options_of(input: &OpenInput) -> NapiResult<Options> {
    let mut opts = Options::default();
    if let Some(kdf) = &input.kdf {
        opts.kdf = KdfParams {
            m_cost_kib: kdf.memory_kib,
            t_cost: kdf.passes,
            p_cost: kdf.lanes,
        };
    }
    if let Some(n) = input.sync_replicas {
        opts.sync_replicas = n;
    }
    if let Some(ms) = input.failover_timeout_ms {
        opts.failover_timeout = std::time::Duration::from_millis(u64::from(ms));
    }
    opts.concurrency = match input.concurrency.as_deref() {
        None | Some("shared") => Concurrency::Shared,
        Some("exclusive") => Concurrency::Exclusive,
        Some("multi-writer") => Concurrency::MultiWriter,
        Some(other) => {
            return Err(invalid(format!(
                "unknown concurrency {other:?} (use \"shared\", \"exclusive\" or \"multi-writer\")"
            )));
        }
    };
    Ok(opts)
}

/// Opens (or creates) a store off the event loop.
pub struct OpenTask {
    path: String,
    /// The secret and options, or the error found in them (rejected, not thrown).
    setup: Option<NapiResult<(Secret, Options)>>,
    create: bool,
    create_new: bool,
    read_only: bool,
    accept_restore: bool,
}

impl Task for OpenTask {
    type Output = Store;
    type JsValue = NativeStore;

    fn compute(&mut self) -> NapiResult<Store> {
        guarded(|| {
            let (secret, opts) = self.setup.take().ok_or_else(closed)??;
            let path = Path::new(&self.path);
            let result = if self.accept_restore {
                Store::accept_restore(path, secret, opts)
            } else if self.create_new {
                Store::create(path, secret, opts)
            } else if self.read_only {
                Store::open_read_only(path, secret, opts)
            } else if self.create {
                sealkv::open_or_create(path, secret, opts)
            } else {
                Store::open(path, secret, opts)
            };
            result.map_err(engine_error)
        })
    }

    fn resolve(&mut self, _env: Env, store: Store) -> NapiResult<NativeStore> {
        Ok(NativeStore {
            store: RwLock::new(Some(store)),
        })
    }
}

/// Opens the store at `path`, creating it when absent unless `options.create` is false.
#[napi]
pub fn open_store(path: String, secret: SecretInput, options: OpenInput) -> AsyncTask<OpenTask> {
    let create = options.create.unwrap_or(true);
    let create_new = options.create_new.unwrap_or(false);
    let read_only = options.read_only.unwrap_or(false);
    let accept_restore = options.accept_restore.unwrap_or(false);
    let setup = guarded(|| options_of(&options).and_then(|opts| Ok((secret_of(secret)?, opts))));
    prometheus();
    AsyncTask::new(OpenTask {
        path,
        setup: Some(setup),
        create,
        create_new,
        read_only,
        accept_restore,
    })
}

/// An open store. Methods take the session id (null for the default session) so that
/// one native handle serves every session view the JavaScript half hands out.
#[napi(custom_finalize)]
pub struct NativeStore {
    store: RwLock<Option<Store>>,
}

impl ObjectFinalize for NativeStore {
    /// Drops the store (closing it when no call still holds it) under [`guarded`]: the
    /// garbage collector runs this, so a panic here would abort Node. There is no one
    /// to report an error to.
    fn finalize(self, _env: Env) -> NapiResult<()> {
        let _ = guarded(|| {
            drop(self.store.into_inner());
            Ok(())
        });
        Ok(())
    }
}

impl NativeStore {
    fn store(&self) -> NapiResult<Store> {
        // A poisoned lock only means a thread panicked while closing; the Option is
        // still either Some or None.
        let guard = self.store.read().unwrap_or_else(|e| e.into_inner());
        guard.clone().ok_or_else(closed)
    }

    /// Session `id` (the default session for `None`). Derived on every call: it costs
    /// three keyed hashes, lost in a napi round trip of about 20 µs (a get in a named
    /// session measured the same as one in the default session).
    fn session(&self, id: Option<String>) -> NapiResult<Session> {
        let store = self.store()?;
        match id.as_deref() {
            Some(name) => store.session(name).map_err(engine_error),
            None => Ok(store.default_session()),
        }
    }

    /// A task running the job `prepare` makes on the calling thread; an error (or a
    /// panic) in `prepare` (a closed store, a bad argument) rejects the task's promise
    /// rather than throwing.
    fn task<T, J>(&self, prepare: impl FnOnce() -> NapiResult<J>) -> AsyncTask<Work<T>>
    where
        T: Send + ToNapiValue + TypeName + 'static,
        J: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        AsyncTask::new(Work {
            job: Some(guarded(prepare).map(|job| Box::new(job) as Job<T>)),
        })
    }

    /// A task running `f` on the store.
    fn on_store<T>(
        &self,
        f: impl FnOnce(Store) -> Result<T, Error> + Send + 'static,
    ) -> AsyncTask<Work<T>>
    where
        T: Send + ToNapiValue + TypeName + 'static,
    {
        self.task(|| self.store().map(|store| move || f(store)))
    }

    /// A task running `f` in session `id`.
    fn in_session<T>(
        &self,
        id: Option<String>,
        f: impl FnOnce(Session) -> Result<T, Error> + Send + 'static,
    ) -> AsyncTask<Work<T>>
    where
        T: Send + ToNapiValue + TypeName + 'static,
    {
        self.task(|| self.session(id).map(|session| move || f(session)))
    }
}

type Job<T> = Box<dyn FnOnce() -> Result<T, Error> + Send>;

/// One store operation on the thread pool.
pub struct Work<T> {
    job: Option<NapiResult<Job<T>>>,
}

impl<T> Task for Work<T>
where
    T: Send + ToNapiValue + TypeName + 'static,
{
    type Output = T;
    type JsValue = T;

    fn compute(&mut self) -> NapiResult<T> {
        guarded(|| {
            let job = self.job.take().ok_or_else(closed)??;
            job().map_err(engine_error)
        })
    }

    fn resolve(&mut self, _env: Env, output: T) -> NapiResult<T> {
        Ok(output)
    }
}

fn ttl_of(ms: f64) -> NapiResult<Duration> {
    if !ms.is_finite() || ms < 1000.0 {
        return Err(js_error(
            "SEALKV_INVALID_TTL",
            format!("time to live of {ms} ms: give at least 1000 ms"),
        ));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// Builds a batch on the calling thread (bad arguments reject before any work).
fn batch_of(changes: Vec<Change>) -> NapiResult<Batch> {
    let mut batch = Batch::new();
    for change in changes {
        match (change.value, change.ttl_ms) {
            (None, _) => batch.delete(&change.namespace, &change.key),
            (Some(v), None) => batch.put(&change.namespace, &change.key, v.to_vec()),
            (Some(v), Some(ms)) => {
                batch.put_with_ttl(&change.namespace, &change.key, v.to_vec(), ttl_of(ms)?)
            }
        };
    }
    Ok(batch)
}

#[napi]
impl NativeStore {
    /// Values of `keys` in `namespace`, in the order asked, null where absent.
    #[napi(ts_return_type = "Promise<Array<Buffer | null>>")]
    pub fn get(
        &self,
        session: Option<String>,
        namespace: String,
        keys: Vec<String>,
    ) -> AsyncTask<Work<Vec<Option<Buffer>>>> {
        self.in_session(session, move |s| {
            let mut found = s.get(&namespace, &keys)?;
            Ok(keys
                .iter()
                .map(|k| {
                    found
                        .remove(k)
                        .map(|mut v| Buffer::from(std::mem::take(&mut *v)))
                })
                .collect::<Vec<Option<Buffer>>>())
        })
    }

    /// Applies puts and deletes in one atomic, durable transaction.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn set(&self, session: Option<String>, changes: Vec<Change>) -> AsyncTask<Work<()>> {
        self.task(|| {
            let batch = batch_of(changes)?;
            let s = self.session(session)?;
            Ok(move || s.set(&batch))
        })
    }

    /// The keys of `namespace`, sorted.
    #[napi(ts_return_type = "Promise<Array<string>>")]
    pub fn list(&self, session: Option<String>, namespace: String) -> AsyncTask<Work<Vec<String>>> {
        self.in_session(session, move |s| s.list(&namespace))
    }

    /// The namespaces that hold values.
    #[napi(ts_return_type = "Promise<Array<string>>")]
    pub fn namespaces(&self, session: Option<String>) -> AsyncTask<Work<Vec<String>>> {
        self.in_session(session, move |s| s.namespaces())
    }

    /// Deletes one value; resolves whether it existed.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn delete(
        &self,
        session: Option<String>,
        namespace: String,
        key: String,
    ) -> AsyncTask<Work<bool>> {
        self.in_session(session, move |s| s.delete(&namespace, &key))
    }

    /// Deletes every value of the session, in one transaction.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn clear(&self, session: Option<String>) -> AsyncTask<Work<()>> {
        self.in_session(session, move |s| s.clear())
    }

    /// The named sessions that hold values.
    #[napi(ts_return_type = "Promise<Array<string>>")]
    pub fn sessions(&self) -> AsyncTask<Work<Vec<String>>> {
        self.on_store(|store| store.sessions())
    }

    /// Deletes a named session and all its values; resolves whether it had any.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn drop_session(&self, id: String) -> AsyncTask<Work<bool>> {
        self.on_store(move |store| store.drop_session(&id))
    }

    /// Removes expired values now; resolves how many.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn sweep(&self) -> AsyncTask<Work<f64>> {
        self.on_store(|store| store.sweep().map(|n| n as f64))
    }

    /// Makes a new primary data key; resolves its id.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn rotate(&self) -> AsyncTask<Work<u32>> {
        self.on_store(|store| store.rotate())
    }

    /// Opens every value and checks the store; resolves the problems found.
    #[napi(ts_return_type = "Promise<Array<Problem>>")]
    pub fn verify(&self) -> AsyncTask<Work<Vec<Problem>>> {
        self.on_store(|store| {
            Ok(store
                .verify()?
                .into_iter()
                .map(|e| Problem {
                    code: code_of(&e),
                    message: e.to_string(),
                })
                .collect::<Vec<_>>())
        })
    }

    /// The metrics of every store of this process, in Prometheus' text format (empty
    /// when the process installed another metrics recorder first).
    #[napi]
    pub fn metrics_text(&self) -> napi::Result<String> {
        guarded(|| Ok(prometheus().map(|h| h.render()).unwrap_or_default()))
    }

    /// Checks the store (a round trip on PostgreSQL): see `Store::health`.
    #[napi(ts_return_type = "Promise<HealthReport>")]
    pub fn health(&self) -> AsyncTask<Work<HealthReport>> {
        self.on_store(|store| {
            let h = store.health();
            Ok(HealthReport {
                healthy: h.is_healthy(),
                engine: h.engine.to_string(),
                problems: h.problems(),
                notes: h.notes(),
                last_commit_ok: h.last_commit.map(|c| c.ok),
                last_commit_age_ms: h.last_commit.map(|c| c.age.as_secs_f64() * 1000.0),
            })
        })
    }

    /// Anchors the store against rollback at `location` (a file path,
    /// `keychain:SERVICE` or a `postgres://` URL without a password), or removes its
    /// anchor (`null`): see `Store::set_anchor`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn set_anchor(&self, location: Option<String>) -> AsyncTask<Work<()>> {
        self.on_store(move |store| {
            let location = location
                .as_deref()
                .map(sealkv::AnchorLocation::parse)
                .transpose()?;
            store.set_anchor(location)
        })
    }

    /// The store's restore epoch: how many restores were accepted.
    #[napi(getter)]
    pub fn restore_epoch(&self) -> napi::Result<f64> {
        guarded(|| Ok(self.store()?.restore_epoch() as f64))
    }

    /// Writes a consistent copy of the store to `dest` (a new file), online.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn backup(&self, dest: String) -> AsyncTask<Work<()>> {
        self.on_store(move |store| store.backup(&dest))
    }

    /// Closes this handle: later calls reject with `SEALKV_CLOSED`. Calls already
    /// running finish first; the file is released when the last of them ends.
    #[napi]
    pub fn close(&self) -> napi::Result<()> {
        guarded(|| {
            let store = self.store.write().unwrap_or_else(|e| e.into_inner()).take();
            // Dropped (and the file released, if no call holds it) outside the lock.
            drop(store);
            Ok(())
        })
    }

    /// Whether `close` was called.
    #[napi(getter)]
    pub fn closed(&self) -> napi::Result<bool> {
        guarded(|| {
            Ok(self
                .store
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_none())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What napi's `execute` callback gets from a task whose job panics: a rejection,
    /// not an unwind (which would abort Node), and none of the panic's message.
    #[test]
    fn a_panicking_task_rejects_with_sealkv_internal() {
        let job: Job<u32> = Box::new(|| panic!("secret value 0xDEADBEEF"));
        let mut work = Work { job: Some(Ok(job)) };
        let Err(err) = work.compute() else {
            panic!("a panicking job resolved");
        };
        assert!(
            err.reason.starts_with("SEALKV_INTERNAL: "),
            "{}",
            err.reason
        );
        assert!(!err.reason.contains("DEADBEEF"), "{}", err.reason);
    }

    /// The same for the work a call does on the JavaScript thread before its task.
    #[test]
    fn a_panic_on_the_calling_thread_becomes_sealkv_internal() {
        let Err(err) = guarded(|| -> NapiResult<()> { panic!("secret value 0xDEADBEEF") }) else {
            panic!("a panicking call succeeded");
        };
        assert!(
            err.reason.starts_with("SEALKV_INTERNAL: "),
            "{}",
            err.reason
        );
        assert!(!err.reason.contains("DEADBEEF"), "{}", err.reason);
    }
}
