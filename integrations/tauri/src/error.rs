//! The plugin's errors: a stable `code` and a message, as JavaScript receives them.

use serde::Serialize;

/// A failed call. It reaches JavaScript as `{ code, message }`; the guest package
/// throws it as a `SealkvError`. Messages never hold keys, passphrases or values.
///
/// Codes are the engine's (`SEALKV_WRONG_KEY`, `SEALKV_KEYCHAIN`, `SEALKV_ROLLED_BACK`,
/// …, the same as the Node package's) and the plugin's own: `SEALKV_NOT_OPEN`,
/// `SEALKV_INVALID_ARGUMENT`, `SEALKV_NOT_JSON`, `SEALKV_NOT_TEXT`, `SEALKV_IO`,
/// `SEALKV_INTERNAL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Error {
    /// The stable code to match on.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// The plugin's `Result`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new("SEALKV_INVALID_ARGUMENT", message)
    }

    pub(crate) fn io(message: impl Into<String>) -> Self {
        Self::new("SEALKV_IO", message)
    }

    pub(crate) fn not_open(name: &str) -> Self {
        Self::new(
            "SEALKV_NOT_OPEN",
            format!("the store {name:?} is not open: open it first"),
        )
    }
}

impl From<sealkv::Error> for Error {
    fn from(e: sealkv::Error) -> Self {
        Self {
            code: format!("SEALKV_{}", e.code().to_ascii_uppercase()),
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}
