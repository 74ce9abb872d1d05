//! The `sealkv` command: a thin layer over the library.
//!
//! Exit status: 0 success; 1 key not found; 2 usage or any other error; 3 wrong
//! passphrase or master key; 4 integrity failure.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod secrets;

use std::process::ExitCode;

use clap::Parser;

/// A failure with its exit status and an optional hint line.
pub struct Failure {
    /// Exit status.
    pub code: u8,
    /// The one-line error.
    pub message: String,
    /// Advice, printed as `hint: …`.
    pub hint: Option<String>,
}

impl Failure {
    /// A failure with this exit status and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint line.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<sealkv::Error> for Failure {
    fn from(e: sealkv::Error) -> Self {
        use sealkv::Error as E;
        let message = e.to_string();
        match e {
            E::WrongKey => Failure::new(3, message).hint(
                "check --key-file / SEALKV_MASTER_KEY or --passphrase-file / SEALKV_PASSPHRASE",
            ),
            E::KeyKindMismatch { expected } => {
                Failure::new(3, message).hint(if expected == "passphrase" {
                    "give the passphrase with --passphrase-file or SEALKV_PASSPHRASE"
                } else {
                    "give the raw key with --key-file or SEALKV_MASTER_KEY"
                })
            }
            E::Integrity { .. } => Failure::new(4, message)
                .hint("run `sealkv verify` to list every damaged value; restore from a backup"),
            E::NotAlone => Failure::new(2, message)
                .hint("stop the programs using the store, then run `sealkv compact`"),
            E::MetaTampered => Failure::new(4, message)
                .hint("restore the store from a backup; do not write to this file"),
            E::RolledBack { .. } => Failure::new(6, message).hint(
                "find the newer copy of the store; if restoring this one was meant, run \
                 `sealkv accept-restore DB`",
            ),
            E::Anchor { hint, .. } => Failure::new(7, message).hint(hint),
            E::Keychain { .. } => Failure::new(2, message),
            E::Key(sealkv::CryptoError::KdfOverLimit { .. }) => Failure::new(2, message),
            E::Key(sealkv::CryptoError::InvalidKey(_)) => Failure::new(2, message).hint(
                "give a non-empty passphrase (SEALKV_PASSPHRASE, --passphrase-file or the prompt)",
            ),
            E::Locked(_) => {
                Failure::new(2, message).hint("close the other program using the store, then retry")
            }
            E::Server { what, hint, .. } => {
                Failure::new(2, format!("PostgreSQL: {what}")).hint(hint)
            }
            E::NotSealkv(_) => {
                Failure::new(2, message).hint("check the path; create a store with `sealkv init`")
            }
            E::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound => {
                Failure::new(2, message).hint("check the path; create a store with `sealkv init`")
            }
            E::CommitFailed {
                outcome_unknown: true,
                ..
            } => Failure::new(2, message).hint(
                "check the disk (space, errors), then read the values back before writing again",
            ),
            E::Poisoned | E::CommitFailed { .. } => Failure::new(2, message)
                .hint("check the disk (space, errors), then run the command again"),
            _ => Failure::new(2, message),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::new(2, format!("i/o error: {e}"))
    }
}

fn main() -> ExitCode {
    // redb 4.5 can panic on some damaged files; the library contains that and reports a
    // clean "damaged" error, so its panic message would only confuse. Others still print.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.location().is_some_and(|l| l.file().contains("/redb-")) {
            default_hook(info);
        }
    }));
    // Stores anchored in the OS keychain are checked whichever way they are opened.
    sealkv::keychain::install_anchors();
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            // A closed stdout pipe (`sealkv get … | head`) is not an error worth a word.
            if f.message.contains("Broken pipe") {
                return ExitCode::SUCCESS;
            }
            eprintln!("sealkv: {}", f.message);
            if let Some(h) = f.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(f.code)
        }
    }
}
