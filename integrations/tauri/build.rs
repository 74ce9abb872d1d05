//! Generates the plugin's permissions (an allow and a deny per command) and hands them,
//! with the global API script, to the app's build.

const COMMANDS: &[&str] = &[
    "open",
    "close",
    "get",
    "set",
    "delete",
    "list",
    "namespaces",
    "rotate",
    "verify",
];

fn main() {
    tauri_plugin::Builder::new(COMMANDS)
        .global_api_script_path("./api-iife.js")
        .build();
}
