//! Where the master key comes from. Never from an argument value.

use std::io::IsTerminal;
use std::path::Path;

use sealkv::{MasterKey, Passphrase, Secret};
use subtle::ConstantTimeEq;

use crate::Failure;
use crate::cli::SecretArgs;

const NO_SECRET_HINT: &str =
    "set SEALKV_PASSPHRASE or SEALKV_MASTER_KEY, or pass --passphrase-file or --key-file";

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|e| Failure::new(2, format!("cannot read {what} {}: {e}", path.display())))
}

fn key_from_file(path: &Path) -> Result<Secret, Failure> {
    let bytes = zeroize::Zeroizing::new(read_file(path, "key file")?);
    MasterKey::from_key_file(&bytes)
        .map(Secret::Key)
        .map_err(|e| Failure::new(2, format!("{}: {e}", path.display())))
}

fn env(name: &str) -> Option<zeroize::Zeroizing<String>> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(zeroize::Zeroizing::new)
}

fn prompt(label: &str, confirm: bool) -> Result<Secret, Failure> {
    // Ask only on a real terminal: with none, fail at once instead of hanging.
    if !std::io::stdin().is_terminal() || std::fs::File::open("/dev/tty").is_err() {
        return Err(Failure::new(
            2,
            "no master key given and no terminal to ask for a passphrase",
        )
        .hint(NO_SECRET_HINT));
    }
    let first = zeroize::Zeroizing::new(
        rpassword::prompt_password(format!("{label}: "))
            .map_err(|e| Failure::new(2, format!("cannot read passphrase: {e}")))?,
    );
    if first.is_empty() {
        return Err(Failure::new(2, "empty passphrase"));
    }
    if confirm {
        let again = zeroize::Zeroizing::new(
            rpassword::prompt_password(format!("{label} (again): "))
                .map_err(|e| Failure::new(2, format!("cannot read passphrase: {e}")))?,
        );
        if !bool::from(first.as_bytes().ct_eq(again.as_bytes())) {
            return Err(Failure::new(2, "the two passphrases differ"));
        }
    }
    Ok(Secret::Passphrase(Passphrase::new(
        first.as_bytes().to_vec(),
    )))
}

/// The master key for opening (or, with `confirm`, creating) a store.
pub fn master(args: &SecretArgs, confirm: bool) -> Result<Secret, Failure> {
    if let Some(path) = &args.key_file {
        return key_from_file(path);
    }
    if let Some(hex) = env("SEALKV_MASTER_KEY") {
        return MasterKey::from_hex(&hex)
            .map(Secret::Key)
            .map_err(|e| Failure::new(2, format!("SEALKV_MASTER_KEY: {e}")));
    }
    if let Some(path) = &args.passphrase_file {
        let bytes = zeroize::Zeroizing::new(read_file(path, "passphrase file")?);
        return Ok(Secret::Passphrase(Passphrase::new(bytes.to_vec())));
    }
    if let Some(p) = env("SEALKV_PASSPHRASE") {
        return Ok(Secret::Passphrase(Passphrase::new(p.as_bytes().to_vec())));
    }
    prompt("passphrase", confirm)
}

/// The new master key for `rekey`.
pub fn new_master(
    key_file: Option<&Path>,
    passphrase_file: Option<&Path>,
) -> Result<Secret, Failure> {
    if let Some(path) = key_file {
        return key_from_file(path);
    }
    if let Some(path) = passphrase_file {
        let bytes = zeroize::Zeroizing::new(read_file(path, "passphrase file")?);
        return Ok(Secret::Passphrase(Passphrase::new(bytes.to_vec())));
    }
    if let Some(p) = env("SEALKV_NEW_PASSPHRASE") {
        return Ok(Secret::Passphrase(Passphrase::new(p.as_bytes().to_vec())));
    }
    prompt("new passphrase", true).map_err(|f| {
        if f.hint.is_some() {
            Failure::new(
                2,
                "no new key given and no terminal to ask for a passphrase",
            )
            .hint("set SEALKV_NEW_PASSPHRASE, or pass --new-passphrase-file or --new-key-file")
        } else {
            f
        }
    })
}
