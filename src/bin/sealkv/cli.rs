//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// sealkv: an encrypted embedded key-value store in one file.
///
/// The master key comes from, first found: --key-file, SEALKV_MASTER_KEY (64 hex
/// characters), --passphrase-file, SEALKV_PASSPHRASE, or a prompt on the terminal.
/// Secrets are never taken as argument values.
#[derive(Debug, Parser)]
#[command(name = "sealkv", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub secret: SecretArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct SecretArgs {
    /// File holding the master key: 32 raw bytes or 64 hex characters.
    #[arg(long, global = true, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// File holding the passphrase (one trailing newline is ignored).
    #[arg(long, global = true, value_name = "PATH")]
    pub passphrase_file: Option<PathBuf>,
    /// Most memory a store's Argon2id parameters may ask for, in MiB. A store's
    /// parameters come from its file; raise this only for a file you trust.
    #[arg(long, global = true, value_name = "MIB", default_value_t = 1024)]
    pub max_kdf_memory: u32,
    /// Most memory × passes a store's Argon2id parameters may ask for, in MiB.
    #[arg(long, global = true, value_name = "MIB", default_value_t = 4096)]
    pub max_kdf_work: u64,
}

impl SecretArgs {
    /// The library's options with the key derivation limits given here.
    pub fn options(&self) -> sealkv::Options {
        sealkv::Options {
            kdf_limits: sealkv::KdfLimits {
                max_memory_kib: self.max_kdf_memory.saturating_mul(1024),
                max_memory_passes_kib: self.max_kdf_work.saturating_mul(1024),
            },
            ..sealkv::Options::default()
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CipherArg {
    /// XChaCha20-Poly1305 (default).
    Xchacha20poly1305,
    /// AES-256-GCM (fast with AES instructions; rotated before its seal budget).
    Aes256gcm,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    /// zstd level 1: smaller files, slower reads and writes.
    Zstd,
    /// snappy (default).
    Snappy,
    /// no compression.
    None,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new encrypted store.
    Init {
        /// Database file to create.
        db: PathBuf,
        /// AEAD for data keys.
        #[arg(long, value_enum, default_value = "xchacha20poly1305")]
        cipher: CipherArg,
        /// Compression before sealing.
        #[arg(long, value_enum, default_value = "snappy")]
        compression: CompressionArg,
    },
    /// Store a value, read from FILE, or from stdin when FILE is absent or -.
    Put {
        /// Database file.
        db: PathBuf,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Value file (stdin when absent or -).
        file: Option<PathBuf>,
    },
    /// Write a value's raw bytes to stdout (exit 1 if absent).
    Get {
        /// Database file.
        db: PathBuf,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
    /// Delete a value (exit 1 if absent).
    Del {
        /// Database file.
        db: PathBuf,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
    /// List namespaces, or the keys of one namespace, sorted, one per line.
    Ls {
        /// Database file.
        db: PathBuf,
        /// Namespace whose keys to list.
        namespace: Option<String>,
    },
    /// New data key, re-encrypt every value, destroy the old key, compact.
    Rotate {
        /// Database file.
        db: PathBuf,
        /// Values re-sealed per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Change the passphrase or master key (the new one from --new-key-file,
    /// --new-passphrase-file, SEALKV_NEW_PASSPHRASE, or the prompt).
    Rekey {
        /// Database file.
        db: PathBuf,
        /// File holding the new master key.
        #[arg(long, value_name = "PATH")]
        new_key_file: Option<PathBuf>,
        /// File holding the new passphrase.
        #[arg(long, value_name = "PATH")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Open every value; print each one that fails (exit 4 if any).
    Verify {
        /// Database file.
        db: PathBuf,
    },
    /// Entries and bytes per namespace, data keys and their states, file size.
    Stats {
        /// Database file.
        db: PathBuf,
    },
    /// Write a consistent copy of the store to DEST.
    Backup {
        /// Database file.
        db: PathBuf,
        /// Where to write the copy (must not exist).
        dest: PathBuf,
    },
    /// Rewrite the file with live data only.
    Compact {
        /// Database file.
        db: PathBuf,
    },
    /// Export every value as JSON lines {namespace, key, value (base64)}. Plaintext!
    Export {
        /// Database file.
        db: PathBuf,
        /// Output file (- for stdout).
        out: PathBuf,
        /// Confirm that the output holds secrets in plaintext.
        #[arg(long)]
        plaintext: bool,
    },
    /// Import a Baileys auth folder (useMultiFileAuthState), all or nothing.
    ImportBaileys {
        /// Database file.
        db: PathBuf,
        /// The auth folder.
        dir: PathBuf,
        /// Skip empty or unparsable files (each is listed) instead of stopping.
        #[arg(long)]
        skip_bad: bool,
        /// Replace auth state the store already holds.
        #[arg(long)]
        replace: bool,
    },
    /// Write the auth state as a folder Baileys loads (DIR absent or empty).
    ExportBaileys {
        /// Database file.
        db: PathBuf,
        /// The folder to write.
        dir: PathBuf,
    },
    /// Import JSON lines as written by export, all or nothing.
    Import {
        /// Database file.
        db: PathBuf,
        /// Input file (- for stdin).
        input: PathBuf,
    },
}
