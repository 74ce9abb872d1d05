//! The plugin's commands: each runs its store call on a blocking thread (a write waits
//! for an fsync), never on the main thread or the async runtime's workers.

use serde::Deserialize;
use tauri::ipc::{CommandScope, GlobalScope};
use tauri::{AppHandle, Runtime, async_runtime, command};
use zeroize::Zeroizing;

use crate::SealkvExt;
use crate::error::{Error, Result};
use crate::stores::{Change, Encoding, Opened, Problem, Read, Sealkv};

/// A scope entry of a `sealkv` permission in a capability: `{ "store": "notes" }`, or
/// `{ "store": "*" }` for every store.
#[derive(Debug, Deserialize)]
pub struct StoreScope {
    /// A store's name, or `*`.
    pub store: String,
}

/// Whether the capability lets this command touch the store `name`: no `deny` entry
/// names it, and an `allow` entry does when there are any (a permission without a
/// scope allows every store).
fn in_scope(
    global: &GlobalScope<StoreScope>,
    command: &CommandScope<StoreScope>,
    name: &str,
) -> Result<()> {
    let names = |s: &StoreScope| s.store == name || s.store == "*";
    let denied = global
        .denies()
        .iter()
        .chain(command.denies())
        .any(|s| names(s));
    let allows: Vec<_> = global.allows().iter().chain(command.allows()).collect();
    if denied || !(allows.is_empty() || allows.iter().any(|s| names(s))) {
        return Err(Error::new(
            "SEALKV_NOT_ALLOWED",
            format!("the capability does not allow this command on the store {name:?}"),
        ));
    }
    Ok(())
}

/// Runs `call` on the store `name` on a blocking thread, once the capability's scopes
/// allow that store.
async fn on_store<R: Runtime, T: Send + 'static>(
    app: AppHandle<R>,
    (global, scope): (GlobalScope<StoreScope>, CommandScope<StoreScope>),
    name: String,
    call: impl FnOnce(&Sealkv, &str) -> Result<T> + Send + 'static,
) -> Result<T> {
    in_scope(&global, &scope, &name)?;
    async_runtime::spawn_blocking(move || call(app.sealkv(), &name))
        .await
        // A panic's message is not passed on (it could quote a name); Rust's panic hook
        // printed it on stderr.
        .unwrap_or_else(|_| Err(Error::new("SEALKV_INTERNAL", "the call failed (a bug)")))
}

#[command]
pub(crate) async fn open<R: Runtime>(
    app: AppHandle<R>,
    global: GlobalScope<StoreScope>,
    scope: CommandScope<StoreScope>,
    name: String,
    recovery_passphrase: Option<String>,
) -> Result<Opened> {
    let recovery = recovery_passphrase.map(Zeroizing::new);
    on_store(app, (global, scope), name, move |s, name| {
        s.open(name, recovery.as_deref().map(String::as_str))
    })
    .await
}

#[command]
pub(crate) async fn close<R: Runtime>(
    app: AppHandle<R>,
    global: GlobalScope<StoreScope>,
    scope: CommandScope<StoreScope>,
    name: String,
) -> Result<bool> {
    on_store(app, (global, scope), name, move |s, name| Ok(s.close(name))).await
}

#[command]
pub(crate) async fn get<R: Runtime>(
    app: AppHandle<R>,
    global: GlobalScope<StoreScope>,
    scope: CommandScope<StoreScope>,
    name: String,
    namespace: String,
    key: String,
    encoding: Option<Encoding>,
) -> Result<Option<Read>> {
    on_store(app, (global, scope), name, move |s, name| {
        s.get(name, &namespace, &key, encoding.unwrap_or_default())
    })
    .await
}

#[command]
pub(crate) async fn set<R: Runtime>(
    app: AppHandle<R>,
    global: GlobalScope<StoreScope>,
    scope: CommandScope<StoreScope>,
    name: String,
    changes: Vec<Change>,
) -> Result<()> {
    on_store(app, (global, scope), name, move |s, name| {
        s.set(name, changes)
    })
    .await
}

#[command]
pub(crate) async fn delete<R: Runtime>(
    app: AppHandle<R>,
    global: GlobalScope<StoreScope>,
    scope: CommandScope<StoreScope>,
    name: String,
    namespace: String,
    key: String,
) -> Result<bool> {
    on_store(app, (global, scope), name, move |s, name| {
        s.delete(name, &namespace, &key)
    })
    .await
}

#[command]
pub(crate) async fn list<R: Runtime>(
    app: AppHandle<R>,
    global: GlobalScope<StoreScope>,
    scope: CommandScope<StoreScope>,
    name: String,
    namespace: String,
) -> Result<Vec<String>> {
    on_store(app, (global, scope), name, move |s, name| {
        s.list(name, &namespace)
    })
    .await
}

#[command]
pub(crate) async fn namespaces<R: Runtime>(
    app: AppHandle<R>,
    global: GlobalScope<StoreScope>,
    scope: CommandScope<StoreScope>,
    name: String,
) -> Result<Vec<String>> {
    on_store(app, (global, scope), name, move |s, name| {
        s.namespaces(name)
    })
    .await
}

#[command]
pub(crate) async fn rotate<R: Runtime>(
    app: AppHandle<R>,
    global: GlobalScope<StoreScope>,
    scope: CommandScope<StoreScope>,
    name: String,
) -> Result<u32> {
    on_store(app, (global, scope), name, move |s, name| s.rotate(name)).await
}

#[command]
pub(crate) async fn verify<R: Runtime>(
    app: AppHandle<R>,
    global: GlobalScope<StoreScope>,
    scope: CommandScope<StoreScope>,
    name: String,
) -> Result<Vec<Problem>> {
    on_store(app, (global, scope), name, move |s, name| s.verify(name)).await
}
