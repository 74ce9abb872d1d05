//! `tauri-plugin-sealkv`: an encrypted, crash-safe key-value store for a Tauri 2 app,
//! its key in the OS keychain.
//!
//! Each store is a [sealkv](https://docs.rs/sealkv) file in the app's data directory,
//! `<name>.sealkv`: values compressed and sealed (XChaCha20-Poly1305), names kept only
//! as keyed tags, every write an atomic, durable transaction. Its key is a random
//! 32-byte key in the OS credential store under the app's identifier (no prompt, no
//! Argon2 at start-up); a recovery passphrase, when the app gives one, opens it when the
//! keychain has lost its key (see [`Sealkv::open`]).
//!
//! ```no_run
//! // In the app: `with_sealkv(tauri::Builder::default()).run(tauri::generate_context!())`.
//! fn with_sealkv<R: tauri::Runtime>(app: tauri::Builder<R>) -> tauri::Builder<R> {
//!     app.plugin(tauri_plugin_sealkv::init()).setup(|app| {
//!         use tauri_plugin_sealkv::SealkvExt;
//!         app.sealkv().open("notes", None)?;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! The web side uses the guest package `tauri-plugin-sealkv-api`, or
//! `window.__TAURI__.sealkv` with `app.withGlobalTauri`. The capability must allow the
//! commands it uses: `sealkv:default` allows them all; `sealkv:allow-get` and the like
//! one at a time; a [`StoreScope`] entry (`{ "store": "notes" }`) narrows a permission
//! to the stores it names.
//!
//! The core ([`Sealkv`]) knows nothing of Tauri; this module and the commands are the
//! only Tauri-facing code.

mod commands;
mod error;
mod stores;

use std::path::PathBuf;

use tauri::plugin::{Builder as PluginBuilder, TauriPlugin};
use tauri::{Manager, RunEvent, Runtime};

pub use commands::StoreScope;
pub use error::{Error, Result};
pub use sealkv;
pub use stores::{
    Change, Data, Encoding, KEYCHAIN_LABEL, MAX_STORE_NAME, Opened, Problem, RECOVERY_LABEL, Read,
    Sealkv,
};

/// The plugin with its defaults: stores in the app's data directory, keys under the
/// app's identifier in the OS keychain.
pub fn init<R: Runtime>() -> TauriPlugin<R> {
    Builder::default().build()
}

/// The plugin, with its directory or keychain service chosen.
#[derive(Debug, Default)]
pub struct Builder {
    directory: Option<PathBuf>,
    service: Option<String>,
}

impl Builder {
    /// Keeps the stores in `directory` instead of the app's data directory.
    pub fn directory(mut self, directory: impl Into<PathBuf>) -> Self {
        self.directory = Some(directory.into());
        self
    }

    /// Keeps the keys under the keychain service `service` instead of the app's
    /// identifier.
    pub fn keychain_service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// The plugin.
    pub fn build<R: Runtime>(self) -> TauriPlugin<R> {
        PluginBuilder::new("sealkv")
            .invoke_handler(tauri::generate_handler![
                commands::open,
                commands::close,
                commands::get,
                commands::set,
                commands::delete,
                commands::list,
                commands::namespaces,
                commands::rotate,
                commands::verify,
            ])
            .setup(move |app, _api| {
                let directory = match self.directory {
                    Some(directory) => directory,
                    None => app.path().app_data_dir()?,
                };
                let service = self
                    .service
                    .unwrap_or_else(|| app.config().identifier.clone());
                app.manage(Sealkv::new(directory, service));
                Ok(())
            })
            .on_event(|app, event| {
                if let RunEvent::Exit = event {
                    // Closing flushes the stores' keychain anchors.
                    app.sealkv().close_all();
                }
            })
            .build()
    }
}

/// `app.sealkv()`: the app's Rust side uses the same stores as its web side.
pub trait SealkvExt<R: Runtime> {
    /// The plugin's stores.
    fn sealkv(&self) -> &Sealkv;
}

impl<R: Runtime, T: Manager<R>> SealkvExt<R> for T {
    fn sealkv(&self) -> &Sealkv {
        self.state::<Sealkv>().inner()
    }
}
