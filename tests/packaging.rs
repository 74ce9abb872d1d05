//! What a program depending on `sealkv` compiles: no test-only code (the chosen-nonce
//! sealer and the fuzz bodies live behind `test-internals`, which only tests and the
//! fuzz targets enable).
#![allow(clippy::unwrap_used)]

use std::process::Command;

/// `cargo tree` of the `sealkv` package's normal (non-dev) dependencies, with features.
fn normal_tree() -> String {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "-p",
            "sealkv",
            "-e",
            "normal,features",
            "--prefix",
            "none",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The features each workspace package declares.
fn declared_features(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package}"));
    pkg["features"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn the_library_ships_no_test_internals() {
    // The test-only code is gated...
    for package in ["sealkv-crypto", "sealkv-engine"] {
        let features = declared_features(package);
        assert!(
            features.contains(&"test-internals".to_string()),
            "{package} has no test-internals feature gating its test-only code: {features:?}"
        );
        assert!(
            !features.contains(&"default".to_string()),
            "{package}: {features:?}"
        );
    }
    // ...and nothing a library user builds turns the gate on.
    let tree = normal_tree();
    assert!(tree.contains("sealkv-crypto v"), "unexpected tree:\n{tree}");
    assert!(
        !tree.contains("test-internals"),
        "a normal build of sealkv enables test-only code:\n{tree}"
    );
}

#[test]
fn the_library_does_not_compile_the_commands_dependencies() {
    let tree = normal_tree();
    for crate_name in ["clap", "indicatif", "rpassword"] {
        assert!(
            !tree
                .lines()
                .any(|l| l.starts_with(&format!("{crate_name} v"))),
            "a program depending on sealkv compiles {crate_name}:\n{tree}"
        );
    }
}

/// The binding crates may not forbid `unsafe` (napi's and Rustler's macros expand to
/// it), so check that our own source there has none.
#[test]
fn the_bindings_write_no_unsafe_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["bindings/node/src", "bindings/elixir/native/sealkv_nif/src"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("the binding's src exists") {
            let path = entry.expect("readable directory").path();
            let text = std::fs::read_to_string(&path).expect("readable source");
            assert!(
                !text.contains("unsafe"),
                "{} contains `unsafe`: the binding's own code must not need it",
                path.display()
            );
        }
    }
}

/// The row stores sit below the seam: nothing in `engine/src/rowstore/` may reach up
/// into the store, its commits, transactions, sessions or reads (issue 26's layering;
/// the lock guards and private-file creation live below it, in `guards.rs` and
/// `rowstore/file.rs`).
#[test]
fn the_row_stores_import_nothing_from_the_layers_above_them() {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable directory") {
            let path = entry.expect("readable entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src/rowstore");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() >= 5, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable source");
        for above in [
            "crate::store",
            "crate::commit",
            "crate::txn",
            "crate::session",
            "crate::read::",
        ] {
            assert!(
                !text.contains(above),
                "{} uses {above}: the row stores must not depend on the layers above them",
                path.display()
            );
        }
    }
}
