//! Tauri's build step: the config, the capabilities and the plugins' permissions.

fn main() {
    tauri_build::build()
}
