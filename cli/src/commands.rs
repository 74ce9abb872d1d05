//! One function per command, each a few library calls.

use std::io::{IsTerminal, Read, Write};

use clap::CommandFactory as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sealkv::{Algorithm, Batch, Codec, Compression, Options, Session, Store};

use crate::Failure;
use crate::cli::{CipherArg, Cli, Command, CompressionArg};
use crate::secrets;

/// The secret that opens `db`: from the OS keychain with `--keychain`, else as
/// [`secrets::master`] finds it.
fn secret_for(db: &Path, cli_secret: &crate::cli::SecretArgs) -> Result<sealkv::Secret, Failure> {
    match &cli_secret.keychain {
        Some(service) => Ok(sealkv::Secret::Key(
            sealkv::keychain::Keychain::new(service)?.key_for(db)?,
        )),
        None => secrets::master(cli_secret, false),
    }
}

fn open(db: &Path, cli_secret: &crate::cli::SecretArgs) -> Result<Store, Failure> {
    let secret = secret_for(db, cli_secret)?;
    Ok(Store::open(db, secret, cli_secret.options())?)
}

/// Opens for commands that only read: the file is not written at all.
fn open_ro(db: &Path, cli_secret: &crate::cli::SecretArgs) -> Result<Store, Failure> {
    let secret = secret_for(db, cli_secret)?;
    Ok(Store::open_read_only(db, secret, cli_secret.options())?)
}

/// A recovery secret given beside `--keychain` at init: a passphrase file or
/// SEALKV_PASSPHRASE, or a key file or SEALKV_MASTER_KEY.
fn recovery_secret(s: &crate::cli::SecretArgs) -> Result<Option<sealkv::Secret>, Failure> {
    let given = s.key_file.is_some()
        || s.passphrase_file.is_some()
        || std::env::var_os("SEALKV_MASTER_KEY").is_some_and(|v| !v.is_empty())
        || std::env::var_os("SEALKV_PASSPHRASE").is_some_and(|v| !v.is_empty());
    given.then(|| secrets::master(s, false)).transpose()
}

fn format_time(secs: u64) -> String {
    if secs == 0 {
        return "-".into();
    }
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// The session a command works in: `--session ID`, or the default one.
fn session(store: &Store, id: &Option<String>) -> Result<Session, Failure> {
    Ok(match id {
        Some(id) => store.session(id)?,
        None => store.default_session(),
    })
}

fn stdout_write(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

pub fn run(cli: Cli) -> Result<u8, Failure> {
    let s = &cli.secret;
    match cli.command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sealkv", &mut out);
            stdout_write(&out)?;
        }
        Command::Man { dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            stdout_write(&out)?;
        }
        Command::Man { dir: Some(dir) } => {
            let command = Cli::command();
            let mut pages = vec![("sealkv".to_string(), command.clone())];
            for sub in command.get_subcommands() {
                let name = format!("sealkv-{}", sub.get_name());
                let version = command.get_version().unwrap_or_default().to_string();
                pages.push((name.clone(), sub.clone().name(name).version(version)));
            }
            for (name, page) in pages {
                let mut out = Vec::new();
                clap_mangen::Man::new(page).render(&mut out)?;
                std::fs::write(dir.join(format!("{name}.1")), out)?;
            }
            eprintln!("wrote the man pages into {}", dir.display());
        }
        Command::Init {
            db,
            cipher,
            compression,
            anchor,
        } => {
            let anchor = anchor
                .as_deref()
                .map(sealkv::AnchorLocation::parse)
                .transpose()?;
            let opts = Options {
                cipher: match cipher {
                    CipherArg::Xchacha20poly1305 => Algorithm::XChaCha20Poly1305,
                    CipherArg::Aes256gcm => Algorithm::Aes256Gcm,
                },
                compression: match compression {
                    CompressionArg::Zstd => Compression::with_codec(Codec::Zstd),
                    CompressionArg::Snappy => Compression::with_codec(Codec::Snappy),
                    CompressionArg::None => Compression::NONE,
                },
                ..s.options()
            };
            let store = match &s.keychain {
                Some(service) => {
                    let recovery = recovery_secret(s)?;
                    let keychain = sealkv::keychain::Keychain::new(service)?;
                    let store = keychain.create_store(&db, opts)?;
                    match recovery {
                        Some(secret) => {
                            let id = store.add_slot(secret, Some("recovery"))?;
                            eprintln!("added recovery slot {id}");
                        }
                        None => eprintln!(
                            "warning: the store's only key is in the keychain; add a recovery \
                             slot (`sealkv add-slot --keychain {service} DB \
                             --new-passphrase-file F`) or it is lost with the keychain"
                        ),
                    }
                    store
                }
                None => Store::create(&db, secrets::master(s, true)?, opts)?,
            };
            if let Some(anchor) = anchor {
                store.set_anchor(Some(anchor))?;
            }
            eprintln!(
                "created {} (store id {})",
                store.path().display(),
                store.id_hex()
            );
        }
        Command::Slots { db } => {
            let store = open_ro(&db, s)?;
            let mut out = String::new();
            for slot in store.slots()? {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}{}{}\n",
                    slot.id,
                    slot.kind.name(),
                    format_time(slot.created),
                    slot.label.as_deref().unwrap_or("-"),
                    slot.service
                        .as_deref()
                        .map(|svc| format!("\tservice={svc}"))
                        .unwrap_or_default(),
                    if slot.id == store.opened_slot() {
                        "\t(opened with)"
                    } else {
                        ""
                    }
                ));
            }
            stdout_write(out.as_bytes())?;
        }
        Command::AddSlot {
            db,
            new_key_file,
            new_passphrase_file,
            new_keychain,
            label,
        } => {
            let store = open(&db, s)?;
            let id = match new_keychain {
                Some(service) => {
                    sealkv::keychain::Keychain::new(&service)?.add_slot(&store, label.as_deref())?
                }
                None => {
                    let new = secrets::new_master(
                        new_key_file.as_deref(),
                        new_passphrase_file.as_deref(),
                    )?;
                    store.add_slot(new, label.as_deref())?
                }
            };
            eprintln!("added slot {id}");
        }
        Command::RemoveSlot { db, id } => {
            let store = open(&db, s)?;
            store.remove_slot(id)?;
            eprintln!("removed slot {id}; its secret no longer opens the store");
        }
        Command::Anchor { db, location } => {
            let store = open(&db, s)?;
            if location == "none" {
                store.set_anchor(None)?;
                eprintln!("the store has no anchor now: older copies are no longer refused");
            } else {
                store.set_anchor(Some(sealkv::AnchorLocation::parse(&location)?))?;
                eprintln!(
                    "anchored at {location}; an older copy of the store is refused from now on"
                );
            }
        }
        Command::AcceptRestore { db } => {
            let secret = secret_for(&db, s)?;
            let store = Store::accept_restore(&db, secret, s.options())?;
            eprintln!(
                "accepted this copy: restore epoch {}, generation {}; the copy that was \
                 current before is refused from now on",
                store.restore_epoch(),
                store.generation()
            );
        }
        Command::Put {
            db,
            session: sid,
            ttl,
            namespace,
            key,
            file,
        } => {
            // Everything that can be checked without the store is checked before it is
            // opened for writing, so a bad request leaves the file untouched.
            sealkv::check_name(&namespace)?;
            sealkv::check_name(&key)?;
            if let Some(id) = &sid {
                sealkv::check_name(id).map_err(|e| Failure::new(2, format!("session id: {e}")))?;
            }
            let mut value = zeroize::Zeroizing::new(Vec::new());
            match file.as_deref() {
                None => std::io::stdin().read_to_end(&mut value)?,
                Some(p) if p == Path::new("-") => std::io::stdin().read_to_end(&mut value)?,
                Some(p) => std::fs::File::open(p)
                    .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", p.display())))?
                    .read_to_end(&mut value)?,
            };
            let limit = Options::default().max_value_size;
            if value.len() > limit {
                return Err(sealkv::Error::ValueTooLarge {
                    namespace,
                    key,
                    size: value.len(),
                    limit,
                }
                .into());
            }
            let store = open(&db, s)?;
            let target = session(&store, &sid)?;
            match ttl {
                Some(ttl) => target.put_with_ttl(&namespace, &key, value.to_vec(), ttl)?,
                None => target.put(&namespace, &key, value.to_vec())?,
            }
        }
        Command::Get {
            db,
            session: sid,
            namespace,
            key,
        } => {
            let store = open_ro(&db, s)?;
            let Some(value) = session(&store, &sid)?.get_one(&namespace, &key)? else {
                return Err(Failure::new(1, format!("no value at {namespace}/{key}")));
            };
            stdout_write(&value)?;
        }
        Command::Del {
            db,
            session: sid,
            namespace,
            key,
        } => {
            sealkv::check_name(&namespace)?;
            sealkv::check_name(&key)?;
            let store = open(&db, s)?;
            if !session(&store, &sid)?.delete(&namespace, &key)? {
                return Err(Failure::new(1, format!("no value at {namespace}/{key}")));
            }
        }
        Command::Ls {
            db,
            session: sid,
            namespace,
        } => {
            let store = open_ro(&db, s)?;
            let target = session(&store, &sid)?;
            let names = match namespace {
                Some(ns) => target.list(&ns)?,
                None => target.namespaces()?,
            };
            let mut text = String::new();
            for n in names {
                text.push_str(&n);
                text.push('\n');
            }
            stdout_write(text.as_bytes())?;
        }
        Command::Rotate { db, batch } => {
            let store = open(&db, s)?;
            let new_id = store.rotate()?;
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "re-encrypting {bar:40} {pos}/{len} ({eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
            let report = store.reencrypt(batch, |p| {
                if let Some(bar) = &bar {
                    bar.set_length(p.total);
                    bar.set_position(p.scanned);
                }
            })?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let destroyed = store.destroy_unused_keys()?;
            // While another process has the store open the file cannot be replaced:
            // the rotation stands, and the purge of old ciphertext waits.
            let compacted = match store.compact() {
                Ok(()) => "compacted",
                Err(sealkv::Error::NotAlone) => {
                    "not compacted: another process has the store open (old ciphertext \
                     stays in free pages until `sealkv compact` runs with the store closed)"
                }
                Err(e) => return Err(e.into()),
            };
            let ids: Vec<String> = destroyed.iter().map(u32::to_string).collect();
            eprintln!(
                "rotated to data key {new_id}; re-sealed {} values; destroyed key(s) {}; {compacted}",
                report.resealed,
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            );
        }
        Command::Rekey {
            db,
            new_key_file,
            new_passphrase_file,
        } => {
            let store = open(&db, s)?;
            let new = secrets::new_master(new_key_file.as_deref(), new_passphrase_file.as_deref())?;
            store.rekey(new)?;
            eprintln!(
                "master key changed; the old one no longer opens {}",
                store.path().display()
            );
        }
        Command::Verify { db } => {
            let store = open_ro(&db, s)?;
            let failures = store.verify()?;
            let mut out = String::new();
            for f in &failures {
                out.push_str(&format!("FAIL {f}\n"));
            }
            stdout_write(out.as_bytes())?;
            if !failures.is_empty() {
                return Err(
                    Failure::new(4, format!("{} value(s) failed to open", failures.len()))
                        .hint("restore the damaged values from a backup"),
                );
            }
            eprintln!("ok: every value opens");
        }
        Command::Health { db } => {
            let store = open_ro(&db, s)?;
            let health = store.health();
            let mut out = format!("engine: {}\n", health.engine);
            if let Some(last) = health.last_commit {
                out.push_str(&format!(
                    "last commit: {} {} s ago\n",
                    if last.ok { "ok" } else { "failed" },
                    last.age.as_secs()
                ));
            }
            for note in health.notes() {
                out.push_str(&format!("note: {note}\n"));
            }
            let problems = health.problems();
            for p in &problems {
                out.push_str(&format!("problem: {p}\n"));
            }
            stdout_write(out.as_bytes())?;
            if !problems.is_empty() {
                return Err(
                    Failure::new(5, format!("unhealthy: {}", problems.join("; ")))
                        .hint("see the problems above"),
                );
            }
            eprintln!("ok: healthy");
        }
        Command::Stats { db } => {
            let store = open_ro(&db, s)?;
            let st = store.stats()?;
            let mut out = String::new();
            // On a server the size is that of the store's tables and their indexes.
            let what = match sealkv::Location::parse(&db)? {
                sealkv::Location::File(_) => "file size",
                sealkv::Location::Postgres(_) => "table size",
            };
            out.push_str(&format!(
                "store id: {}\nformat: {}\ngeneration: {}\nrestore epoch: {}\nanchor: {}\n\
                 {what}: {} bytes\nrows: {}\n",
                store.id_hex(),
                store.format()?,
                store.generation(),
                store.restore_epoch(),
                store
                    .anchor()
                    .map_or_else(|| "none".to_string(), |a| a.to_string()),
                st.file_size,
                st.entries
            ));
            for (ns, n) in &st.namespaces {
                out.push_str(&format!(
                    "namespace {ns}: {} entries, {} bytes sealed\n",
                    n.entries, n.bytes
                ));
            }
            for k in &st.keys {
                out.push_str(&format!(
                    "key {}: {} {} seals<={} values={}\n",
                    k.id,
                    k.algorithm.name(),
                    k.state.name(),
                    k.seals,
                    st.values_per_key.get(&k.id).copied().unwrap_or(0)
                ));
            }
            stdout_write(out.as_bytes())?;
        }
        Command::Backup { db, dest } => {
            open_ro(&db, s)?.backup(&dest)?;
            // A URL is shown without its password.
            let shown = sealkv::Location::parse(&dest)?.display_path();
            eprintln!("wrote {}", shown.display());
        }
        Command::Compact { db } => {
            open(&db, s)?.compact()?;
        }
        Command::Export {
            db,
            session: sid,
            out,
            plaintext,
        } => {
            if !plaintext {
                return Err(Failure::new(
                    2,
                    "export writes every secret in plaintext; refusing without --plaintext",
                )
                .hint("add --plaintext if that is what you want, and protect the output"));
            }
            let store = open_ro(&db, s)?;
            let source = session(&store, &sid)?;
            let mut text = zeroize::Zeroizing::new(String::new());
            for ns in source.namespaces()? {
                let keys = source.list(&ns)?;
                for (key, value) in source.get(&ns, &keys)? {
                    let line = serde_json::json!({"namespace": ns, "key": key, "value": B64.encode(&value[..])});
                    text.push_str(&line.to_string());
                    text.push('\n');
                }
            }
            if out == Path::new("-") {
                stdout_write(text.as_bytes())?;
            } else {
                write_private(&out, text.as_bytes())?;
            }
        }
        Command::ImportBaileys {
            db,
            session: sid,
            dir,
            skip_bad,
            replace,
        } => {
            let state = sealkv::auth::AuthState::for_session(session(&open(&db, s)?, &sid)?);
            let report = sealkv::auth::import_baileys(
                &state,
                &dir,
                sealkv::auth::ImportOptions { skip_bad, replace },
            )
            .map_err(auth_failure)?;
            let mut out = String::new();
            for (family, n) in &report.imported {
                out.push_str(&format!("{family}: {n}\n"));
            }
            for (path, why) in &report.skipped {
                out.push_str(&format!("skipped {}: {why}\n", path.display()));
            }
            stdout_write(out.as_bytes())?;
            let total: usize = report.imported.values().sum();
            eprintln!(
                "imported {total} values from {} in one transaction",
                dir.display()
            );
        }
        Command::ExportBaileys {
            db,
            session: sid,
            dir,
        } => {
            let state = sealkv::auth::AuthState::for_session(session(&open_ro(&db, s)?, &sid)?);
            let n = sealkv::auth::export_baileys(&state, &dir).map_err(auth_failure)?;
            eprintln!("wrote {n} files to {}", dir.display());
        }
        Command::Sessions { db } => {
            let store = open_ro(&db, s)?;
            let mut text = String::new();
            for id in store.sessions()? {
                text.push_str(&id);
                text.push('\n');
            }
            stdout_write(text.as_bytes())?;
        }
        Command::DropSession { db, id } => {
            sealkv::check_name(&id).map_err(|e| Failure::new(2, format!("session id: {e}")))?;
            let store = open(&db, s)?;
            if !store.drop_session(&id)? {
                return Err(Failure::new(1, "no such session"));
            }
            eprintln!("dropped the session and all its values");
        }
        Command::Sweep { db } => {
            let n = open(&db, s)?.sweep()?;
            eprintln!("removed {n} expired value(s); run `sealkv compact` to purge them");
        }
        Command::Import {
            db,
            session: sid,
            input,
        } => {
            let store = open(&db, s)?;
            let target = session(&store, &sid)?;
            let mut text = zeroize::Zeroizing::new(String::new());
            if input == Path::new("-") {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                std::fs::File::open(&input)
                    .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", input.display())))?
                    .read_to_string(&mut text)?;
            }
            let mut batch = Batch::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let bad = |why: &str| {
                    Failure::new(
                        2,
                        format!(
                            "{} line {}: {why}; nothing imported",
                            input.display(),
                            i + 1
                        ),
                    )
                };
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|_| bad("not JSON"))?;
                let field = |name: &str| {
                    v.get(name)
                        .and_then(|x| x.as_str())
                        .ok_or_else(|| bad(&format!("no string \"{name}\"")))
                };
                let value = B64
                    .decode(field("value")?)
                    .map_err(|_| bad("value is not base64"))?;
                batch.put(field("namespace")?, field("key")?, value);
            }
            let n = batch.len();
            target.set(&batch)?;
            eprintln!("imported {n} values");
        }
    }
    Ok(0)
}

fn auth_failure(e: sealkv::auth::AuthError) -> Failure {
    match e {
        sealkv::auth::AuthError::Store(e) => e.into(),
        sealkv::auth::AuthError::NotEmpty => {
            Failure::new(2, e.to_string()).hint("pass --replace to replace it")
        }
        sealkv::auth::AuthError::BadFile { .. } => Failure::new(2, e.to_string())
            .hint("pass --skip-bad to import the rest and list what was skipped"),
        other => Failure::new(2, other.to_string()),
    }
}

/// Writes a file readable only by its owner (it holds plaintext secrets).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| Failure::new(2, format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
