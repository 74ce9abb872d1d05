//! secret-notes: one note, kept in `notes.sealkv` in the app's data directory, sealed
//! under a key the OS keychain holds (service `dev.sealkv.secret-notes`). The window
//! (../dist) shows the note last saved and saves a new one.

// No console window on Windows in release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_sealkv::init())
        .run(tauri::generate_context!());
    if let Err(e) = app {
        eprintln!("secret-notes: {e}");
        std::process::exit(1);
    }
}
