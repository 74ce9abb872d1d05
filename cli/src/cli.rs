//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `sealkv --version`: the release, and the file formats it reads and writes.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (writes store format 3; opens formats 1 to 3, upgrading an older store when it opens it \
     for writing)"
);

/// sealkv: an encrypted embedded key-value store in one file.
///
/// Wherever a store path is asked for, a PostgreSQL URL names a store on a server:
/// postgres://user@host:port/dbname?store=NAME (the password from PGPASSWORD).
///
/// The master key comes from, first found: --keychain (the OS keychain), --key-file,
/// SEALKV_MASTER_KEY (64 hex characters), --passphrase-file, SEALKV_PASSPHRASE, or a
/// prompt on the terminal. Any of the store's key slots opens it. Secrets are never
/// taken as argument values.
///
/// Exit status: 0 success, 1 not found, 2 usage or other error, 3 wrong key, 4 damaged
/// or changed store, 5 unhealthy, 6 an older copy than the store's anchor has seen
/// (see accept-restore), 7 the anchor cannot be read or written.

#[derive(Debug, Parser)]
#[command(name = "sealkv", version = VERSION, about)]
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
    /// Take the master key from the OS keychain, under this service (the account is
    /// the store's id). With init: make a fresh key there and a keychain slot for it.
    #[arg(long, global = true, value_name = "SERVICE")]
    pub keychain: Option<String>,
    /// Most memory a store's Argon2id parameters may ask for, in MiB. A store's
    /// parameters come from its file; raise this only for a file you trust.
    #[arg(long, global = true, value_name = "MIB", default_value_t = 1024)]
    pub max_kdf_memory: u32,
    /// Most memory × passes a store's Argon2id parameters may ask for, in MiB.
    #[arg(long, global = true, value_name = "MIB", default_value_t = 4096)]
    pub max_kdf_work: u64,
    /// PostgreSQL: refuse to write unless the server waits for this many synchronous
    /// standbys on every commit (as the URL's sync_replicas=N).
    #[arg(long, global = true, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=64))]
    pub sync_replicas: u32,
    /// PostgreSQL: how long to keep trying while the server fails over (30s, 2m).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_ttl,
          default_value = "30s")]
    pub failover_timeout: std::time::Duration,
}

impl SecretArgs {
    /// The library's options with the key derivation limits given here.
    pub fn options(&self) -> sealkv::Options {
        sealkv::Options {
            kdf_limits: sealkv::KdfLimits {
                max_memory_kib: self.max_kdf_memory.saturating_mul(1024),
                max_memory_passes_kib: self.max_kdf_work.saturating_mul(1024),
            },
            sync_replicas: self.sync_replicas,
            failover_timeout: self.failover_timeout,
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
        /// Where to anchor the store against rollback: a file path, keychain:SERVICE
        /// or postgres://user@host/db (see `sealkv anchor`). With --keychain the store
        /// is anchored in the keychain unless this says otherwise.
        #[arg(long, value_name = "LOCATION")]
        anchor: Option<String>,
    },
    /// List the store's key slots: id, kind, when added, label (keychain: service).
    Slots {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
    },
    /// Add a key slot: one more way to open the store (the new secret from
    /// --new-key-file, --new-passphrase-file, SEALKV_NEW_PASSPHRASE, the prompt, or
    /// a fresh key kept in the OS keychain with --new-keychain).
    AddSlot {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// File holding the new slot's raw key.
        #[arg(long, value_name = "PATH", group = "new")]
        new_key_file: Option<PathBuf>,
        /// File holding the new slot's passphrase.
        #[arg(long, value_name = "PATH", group = "new")]
        new_passphrase_file: Option<PathBuf>,
        /// Make a fresh key in the OS keychain under this service.
        #[arg(long, value_name = "SERVICE", group = "new")]
        new_keychain: Option<String>,
        /// A label to tell the slot by (e.g. "recovery").
        #[arg(long)]
        label: Option<String>,
    },
    /// Remove a key slot (not the last one); its secret no longer opens the store.
    RemoveSlot {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// The slot's id (`sealkv slots`).
        id: u32,
    },
    /// Anchor the store against rollback at LOCATION (a file path, keychain:SERVICE, or
    /// postgres://user@host/db without a password), or `none` to stop: every later open
    /// refuses an older copy of the store (exit 6).
    Anchor {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Where to keep the anchor, or none.
        location: String,
    },
    /// Accept this copy of the store as current after a restore meant as one (its
    /// anchor says it is older): advance its restore epoch and write the anchor from it.
    /// The copy that was current before is refused from then on.
    AcceptRestore {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
    },
    /// Store a value, read from FILE, or from stdin when FILE is absent or -.
    Put {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Time to live: the value reads as absent after it, and a sweep removes it.
        /// A whole number with a unit: 30s, 15m, 12h or 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<std::time::Duration>,
        /// Session (one bot of many in the file); the default session when absent.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Value file (stdin when absent or -).
        file: Option<PathBuf>,
    },
    /// Write a value's raw bytes to stdout (exit 1 if absent).
    Get {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Session (one bot of many in the file); the default session when absent.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
    /// Delete a value (exit 1 if absent).
    Del {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Session (one bot of many in the file); the default session when absent.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
    /// List namespaces, or the keys of one namespace, sorted, one per line.
    Ls {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Session (one bot of many in the file); the default session when absent.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Namespace whose keys to list.
        namespace: Option<String>,
    },
    /// New data key, re-encrypt every value, destroy the old key, compact.
    Rotate {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Values re-sealed per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Change the passphrase or master key (the new one from --new-key-file,
    /// --new-passphrase-file, SEALKV_NEW_PASSPHRASE, or the prompt).
    Rekey {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
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
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
    },
    /// Entries and bytes per namespace, data keys and their states, file (or table) size.
    Stats {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
    },
    /// Check the store as a container's HEALTHCHECK would: exit 0 when healthy, 5 with
    /// the reasons when not (2 when it cannot even be opened: a server gone, say).
    Health {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
    },
    /// Write a consistent copy of the store to DEST.
    Backup {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Where to write the copy (must not exist): a file, or a postgres:// URL. The
        /// copy goes between engines as it is, sealed, and opens with the same key.
        dest: PathBuf,
    },
    /// Rewrite the file with live data only.
    Compact {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
    },
    /// Export every value as JSON lines {namespace, key, value (base64)}. Plaintext!
    Export {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Session (one bot of many in the file); the default session when absent.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Output file (- for stdout).
        out: PathBuf,
        /// Confirm that the output holds secrets in plaintext.
        #[arg(long)]
        plaintext: bool,
    },
    /// Import a Baileys auth folder (useMultiFileAuthState), all or nothing.
    ImportBaileys {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Session (one bot of many in the file); the default session when absent.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
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
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Session (one bot of many in the file); the default session when absent.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// The folder to write.
        dir: PathBuf,
    },
    /// List the named sessions (those holding values), sorted, one per line.
    Sessions {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
    },
    /// Delete every value of one session, in one transaction (exit 1 if it has none).
    DropSession {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// The session id.
        id: String,
    },
    /// Delete every expired value from the file (reads hide them already).
    Sweep {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
    },
    /// Print a shell completion script (source it, or install it where your shell
    /// looks: e.g. ~/.local/share/bash-completion/completions/sealkv).
    Completions {
        /// Shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `sealkv man > ~/.local/share/man/man1/sealkv.1`;
    /// with --dir, write it and one page per command (sealkv-put.1, …) there.
    Man {
        /// Folder to write sealkv.1 and sealkv-COMMAND.1 into.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Import JSON lines as written by export, all or nothing.
    Import {
        /// Store: a file path, or a postgres://user@host:port/db?store=NAME URL.
        db: PathBuf,
        /// Session (one bot of many in the file); the default session when absent.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Input file (- for stdin).
        input: PathBuf,
    },
}

/// Parses a time to live: a whole number of seconds, minutes, hours or days.
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    const FORMS: &str = "expected a whole number with a unit: 30s, 15m, 12h or 7d";
    let unit = text.chars().last().ok_or_else(|| FORMS.to_string())?;
    let secs_per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(FORMS.to_string()),
    };
    let number = &text[..text.len() - 1];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FORMS.to_string());
    }
    let n: u64 = number.parse().map_err(|_| FORMS.to_string())?;
    if n == 0 {
        return Err("a time to live must be more than zero".to_string());
    }
    n.checked_mul(secs_per)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| "that time to live is too long".to_string())
}
