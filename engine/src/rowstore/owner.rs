//! The owner engine: the default way processes share a store file.
//!
//! The first process to open the file becomes its **owner**: it opens redb alone
//! (`ExclusiveWriter`: one fsync per commit, its page cache kept warm) and serves the
//! store's other processes over a Unix socket beside the file. Any other process is
//! a **client**: it runs the whole engine above the row-store seam (names, sealing,
//! the keyring, sessions, expiry, its own group commit) and forwards row operations
//! only: read views, write transactions, lock keys. Rows cross the socket sealed,
//! as they lie on disk.
//!
//! **Authentication, both ways.** The owner greets with a fresh nonce and the records
//! a client needs to unlock the store (format, id, key slots, the sealed keyring:
//! what the file shows anyone who can read it). The client proves it holds the
//! store key with a MAC over both sides' nonces under a subkey of the store key; only
//! then does the owner answer with its own proof and serve anything. A peer that
//! cannot prove it learns only that it was refused.
//!
//! **Takeover.** When the owner exits, or dies, the next call of a client that finds
//! its connection lost holds an election: whoever opens the file alone first (redb's
//! whole-file lock decides, and releases itself when a process dies) recovers it and
//! serves; the others connect to it. A write whose commit was under way when the
//! connection was lost is looked up by its commit token on the new owner (see
//! `docs/ROWSTORE.md`, "Exactly once"), never written twice. Lock keys taken from
//! the old owner are gone with it: their transactions' commits find them not held.
//!
//! See `docs/SHARING.md`.

pub(crate) mod client;
pub(crate) mod server;
pub(crate) mod wire;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use self::client::{Conn, Remote};
use self::server::Server;
use super::file::FileRows;
use super::file::locks::FileLocks;
use super::{LockGuard, RowStore, RowWrite, View};
use crate::error::{Error, Result};
use crate::guards::{read_lock, write_lock};
use crate::options::{Concurrency, Options};

/// The meta records an owner's hello carries: what a client needs to unlock the
/// store (and what the file shows without a key).
pub(crate) const HELLO_RECORDS: [&str; 7] = [
    crate::meta::META_ANCHOR,
    crate::meta::META_FORMAT,
    crate::meta::META_DB_ID,
    crate::meta::META_SLOTS,
    crate::meta::META_KEYRING,
    crate::meta::META_KDF,
    crate::meta::META_STORE_KEY,
];

/// The meta records every commit reads, sent with the answer to `BEGIN` (with
/// whether the expiry index is empty): a client's commit then reads them without a
/// round trip each.
pub(crate) const PRELOAD: [&str; 3] = [
    crate::outcome::META_COMMITS,
    crate::meta::META_KEYRING,
    crate::state::META_STATE,
];

/// An owner's greeting.
pub(crate) struct Hello {
    pub(crate) nonce: [u8; 32],
    /// Meta records by name.
    pub(crate) records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The greeting's records read like a store's meta table (what unlocks the store,
/// and what [`crate::inspect`] shows); the other tables are empty.
impl super::RowRead for Hello {
    fn get(&self, table: super::Table, key: &[u8]) -> Result<Option<super::Found<'_>>> {
        Ok(self
            .records
            .iter()
            .find(|(k, _)| table == super::Table::Meta && k == key)
            .map(|(_, v)| super::Found::Owned(v.clone())))
    }
    fn scan(
        &self,
        table: super::Table,
        range: super::Range<'_>,
        visit: super::Visit<'_>,
    ) -> Result<()> {
        if table != super::Table::Meta {
            return Ok(());
        }
        let mut rows: Vec<&(Vec<u8>, Vec<u8>)> = self.records.iter().collect();
        rows.sort();
        for (k, v) in rows {
            if std::ops::RangeBounds::<&[u8]>::contains(&range, &k.as_slice()) && !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }
    fn len(&self, table: super::Table) -> Result<u64> {
        Ok(if table == super::Table::Meta {
            self.records.len() as u64
        } else {
            0
        })
    }
    fn is_empty(&self, table: super::Table) -> Result<bool> {
        Ok(self.len(table)? == 0)
    }
}

/// The key both sides prove they hold: a subkey of the store key.
pub(crate) fn auth_key(store_key: &[u8; 32], db_id: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key("sealkv owner socket authentication v1");
    h.update(store_key).update(db_id);
    Zeroizing::new(*h.finalize().as_bytes())
}

/// One side's proof: a MAC of its role and both nonces.
pub(crate) fn mac(key: &[u8; 32], role: &[u8], owner: &[u8; 32], client: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(role).update(owner).update(client);
    *h.finalize().as_bytes()
}

/// Where a store's owner listens.
#[derive(Clone, Debug)]
pub(crate) enum Address {
    /// A socket file: `<store>.sock` beside the store, or, where that path is too
    /// long for a socket, a hashed name in `$XDG_RUNTIME_DIR`.
    Path(PathBuf),
    /// Linux's abstract namespace (no file), for a long path without a runtime dir.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Abstract(Vec<u8>),
}

/// Longest socket path that fits `sockaddr_un` everywhere (108 on Linux, 104 on the
/// BSDs and macOS, less the terminating NUL and some room).
const MAX_SOCKET_PATH: usize = 100;

impl Address {
    /// The owner address of the store at `path`.
    pub(crate) fn for_store(path: &Path) -> Result<Self> {
        let absolute = std::path::absolute(path)?;
        let mut beside = absolute.clone().into_os_string();
        beside.push(".sock");
        let beside = PathBuf::from(beside);
        if fits(&beside) {
            return Ok(Self::Path(beside));
        }
        // A long path: a name made from the file's identity, which every process
        // resolves the same way.
        let canonical = std::fs::canonicalize(&absolute).unwrap_or(absolute);
        let hash = blake3::hash(canonical.as_os_str().as_encoded_bytes());
        let name = format!("sealkv-{}.sock", &hash.to_hex()[..32]);
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
            let p = dir.join(&name);
            if dir.is_absolute() && fits(&p) {
                return Ok(Self::Path(p));
            }
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            Ok(Self::Abstract(name.into_bytes()))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Err(Error::Owner {
            what: format!(
                "the store's path is too long for its owner socket ({} bytes) and \
                 XDG_RUNTIME_DIR is not set: set it, move the store, or open it with \
                 Concurrency::MultiWriter",
                beside.as_os_str().len()
            ),
            transient: false,
        })
    }

    pub(crate) fn connect(&self) -> std::io::Result<UnixStream> {
        match self {
            Self::Path(p) => UnixStream::connect(p),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                UnixStream::connect_addr(&addr)
            }
        }
    }

    /// Binds the socket. A socket file is made under a temporary name, set to mode
    /// 0600, then renamed into place (replacing a stale one a dead owner left), so it
    /// is never reachable with wider permissions.
    pub(crate) fn bind(&self) -> Result<UnixListener> {
        match self {
            Self::Path(p) => {
                let tmp = temporary(p)?;
                let listener = UnixListener::bind(&tmp)?;
                let placed = (|| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
                    std::fs::rename(&tmp, p)
                })();
                if let Err(e) = placed {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
                Ok(listener)
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                Ok(UnixListener::bind_addr(&addr)?)
            }
        }
    }

    /// The socket file's identity (device, inode), if it is a file that exists.
    pub(crate) fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        match self {
            Self::Path(p) => std::fs::symlink_metadata(p)
                .ok()
                .map(|m| (m.dev(), m.ino())),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Abstract(_) => None,
        }
    }

    /// Removes the socket file (the owner stopping).
    pub(crate) fn unlink(&self) {
        if let Self::Path(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The name a socket file is bound under before it is renamed into place: short,
/// in the same directory.
fn temporary(socket: &Path) -> Result<PathBuf> {
    let mut random = [0u8; 4];
    sealkv_crypto::fill_random(&mut random).map_err(Error::Key)?;
    let name = format!(".sk{:08x}", u32::from_le_bytes(random));
    Ok(match socket.parent() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    })
}

/// True when a socket at `path`, and its temporary name, fit a socket address.
fn fits(path: &Path) -> bool {
    let dir = path.parent().map_or(0, |d| d.as_os_str().len());
    path.as_os_str().len() <= MAX_SOCKET_PATH && dir + 12 <= MAX_SOCKET_PATH
}

/// The outcome of an election.
pub(crate) enum Elected {
    /// This process opened the file alone: it owns it now.
    Owner(redb::Database),
    /// Another process owns it: connected (not yet authenticated).
    Client(Conn, Hello),
    /// A read-only opener found no owner: it may open the file for reading.
    Free,
}

/// Becomes the store's owner, or finds it, within `wait`.
pub(crate) fn elect(
    path: &Path,
    opts: &Options,
    address: &Address,
    read_only: bool,
    wait: Duration,
) -> Result<Elected> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_micros(500);
    loop {
        if !read_only {
            match FileRows::open_redb(path, opts, false, Concurrency::Exclusive) {
                Ok(db) => return Ok(Elected::Owner(db)),
                Err(Error::Locked(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match Conn::open(address) {
            Ok((conn, hello)) => return Ok(Elected::Client(conn, hello)),
            Err(e)
                if read_only
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
            {
                return Ok(Elected::Free);
            }
            // No owner yet (it is starting, or died and nobody took over), or one
            // that went away mid-greeting: try again.
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(Error::Locked(path.to_path_buf()));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The owner's side of a store: its file, its lock table, its server.
pub(crate) struct Owner {
    /// First: stopped (its threads joined) before the file is released.
    server: Option<Server>,
    file: Arc<FileRows>,
}

#[derive(Clone)]
enum Role {
    Owner(Arc<Owner>),
    Client(Arc<Remote>),
    /// A read-only handle of a store no process owned when it opened.
    Reader(Arc<FileRows>),
}

/// A store file shared through an owner process (see the module docs).
pub(crate) struct OwnedRows {
    path: PathBuf,
    address: Address,
    opts: Options,
    /// Lock keys: byte locks on a file beside the store (`<store>.locks`), held by
    /// each process itself, so a lock outlives a change of owner and is released by
    /// the system when its process dies. None for a read-only handle.
    locks: Option<FileLocks>,
    auth: Zeroizing<[u8; 32]>,
    read_only: bool,
    role: RwLock<Role>,
    /// Bumped at each takeover: a thread that saw a lost connection under an older
    /// role does not hold a second election.
    generation: AtomicU64,
}

impl OwnedRows {
    /// This process owns the file (`file`, opened alone): serve the others.
    pub(crate) fn owner(
        path: &Path,
        file: FileRows,
        opts: &Options,
        name_key: &sealkv_crypto::NameKey,
        auth: Zeroizing<[u8; 32]>,
    ) -> Result<Self> {
        let address = Address::for_store(path)?;
        let owner = Self::serve(&address, file, opts, &auth)?;
        Ok(Self {
            path: path.to_path_buf(),
            address,
            opts: opts.clone(),
            locks: Some(FileLocks::open_beside(path, name_key)?),
            auth,
            read_only: false,
            role: RwLock::new(Role::Owner(Arc::new(owner))),
            generation: AtomicU64::new(0),
        })
    }

    /// Another process owns the file; `conn` is authenticated to it.
    pub(crate) fn client(
        path: &Path,
        address: Address,
        conn: Conn,
        opts: &Options,
        name_key: &sealkv_crypto::NameKey,
        auth: Zeroizing<[u8; 32]>,
        read_only: bool,
    ) -> Result<Self> {
        let remote = Remote::new(address.clone(), auth.clone(), conn);
        let locks = match read_only {
            true => None,
            false => Some(FileLocks::open_beside(path, name_key)?),
        };
        Ok(Self {
            path: path.to_path_buf(),
            address,
            opts: opts.clone(),
            locks,
            auth,
            read_only,
            role: RwLock::new(Role::Client(remote)),
            generation: AtomicU64::new(0),
        })
    }

    fn serve(
        address: &Address,
        file: FileRows,
        opts: &Options,
        auth: &Zeroizing<[u8; 32]>,
    ) -> Result<Owner> {
        let file = Arc::new(file);
        // A test backend is not a file other processes can open: nobody to serve.
        let server = match opts.backend {
            Some(_) => None,
            None => Some(Server::start(
                address.clone(),
                file.clone(),
                auth.clone(),
                opts.stall_timeout,
            )?),
        };
        Ok(Owner { server, file })
    }

    fn current(&self) -> (Role, u64) {
        let generation = self.generation.load(Ordering::Acquire);
        (read_lock(&self.role).clone(), generation)
    }

    /// After the connection to the owner was lost (seen under `seen`): finds the next
    /// owner, or becomes it.
    fn take_over(&self, seen: u64) -> Result<()> {
        let mut role = write_lock(&self.role);
        if self.generation.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        let started = Instant::now();
        let next = match elect(
            &self.path,
            &self.opts,
            &self.address,
            self.read_only,
            self.opts.failover_timeout,
        )? {
            Elected::Owner(db) => {
                let file = FileRows::new_owned(&self.path, db, &self.opts)?;
                let owner = Self::serve(&self.address, file, &self.opts, &self.auth)?;
                tracing::info!(
                    target: "sealkv::owner",
                    millis = started.elapsed().as_millis() as u64,
                    "took over the store from an owner that went away"
                );
                Role::Owner(Arc::new(owner))
            }
            Elected::Client(conn, hello) => {
                let conn = conn.authenticate(&hello, &self.auth)?;
                Role::Client(Remote::new(self.address.clone(), self.auth.clone(), conn))
            }
            Elected::Free => Role::Reader(Arc::new(FileRows::open_reader(&self.path, &self.opts)?)),
        };
        *role = next;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Runs `f` on the current role; when the owner turns out gone, takes over (or
    /// finds the next owner) and runs it again.
    fn retrying<T>(&self, f: impl Fn(&Role) -> Result<T>) -> Result<T> {
        for _ in 0..3 {
            let (role, seen) = self.current();
            match f(&role) {
                Err(e) if e.is_transient_server() && !matches!(role, Role::Owner(_)) => {
                    self.take_over(seen)?;
                }
                other => return other,
            }
        }
        f(&self.current().0)
    }
}

impl RowStore for OwnedRows {
    fn view(&self) -> Result<View> {
        self.retrying(|role| match role {
            Role::Owner(o) => o.file.view(),
            Role::Client(r) => r.view(),
            Role::Reader(f) => f.view(),
        })
    }

    fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn RowWrite) -> Result<()>,
        committing: &mut bool,
    ) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        // Not retried here: the engine's commit path looks up an uncertain commit.
        match self.current().0 {
            Role::Owner(o) => o.file.write(f, committing),
            Role::Client(r) => r.write(f, committing),
            Role::Reader(_) => Err(Error::ReadOnly),
        }
    }

    fn recover(&self) -> Result<()> {
        let (role, seen) = self.current();
        match role {
            Role::Owner(o) => o.file.recover(),
            Role::Client(r) if r.is_lost() => self.take_over(seen),
            Role::Client(_) | Role::Reader(_) => Ok(()),
        }
    }

    fn poison_on_failure(&self) -> bool {
        matches!(self.current().0, Role::Owner(_))
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// A lost owner is ridden out like a server failing over.
    fn rides_failover(&self) -> bool {
        true
    }

    fn lock(
        &self,
        session: Option<&str>,
        lock_key: &str,
        timeout: Duration,
    ) -> Result<Option<LockGuard<'_>>> {
        FileLocks::guard(self.locks.as_ref(), session, lock_key, timeout)
    }

    fn size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    fn compact(&self) -> Result<()> {
        match self.current().0 {
            Role::Owner(o) => {
                // A client that has just exited may not have been noticed yet: its
                // connection's thread ends as soon as it reads the end.
                let busy = || o.server.as_ref().is_some_and(Server::has_clients);
                let until = Instant::now() + Duration::from_millis(500);
                while busy() {
                    if Instant::now() >= until {
                        return Err(Error::NotAlone);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                o.file.compact()
            }
            Role::Client(_) => Err(Error::NotAlone),
            Role::Reader(_) => Err(Error::ReadOnly),
        }
    }

    fn is_owner(&self) -> bool {
        matches!(*read_lock(&self.role), Role::Owner(_))
    }

    fn lost(&self) -> bool {
        match self.current().0 {
            Role::Owner(o) => o.file.lost(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_path_gets_a_short_socket_name() {
        let short = Address::for_store(Path::new("/tmp/a.db")).unwrap();
        assert!(matches!(&short, Address::Path(p) if p == Path::new("/tmp/a.db.sock")));
        let long = format!("/tmp/{}/store.db", "d".repeat(200));
        match Address::for_store(Path::new(&long)).unwrap() {
            Address::Path(p) => assert!(p.as_os_str().len() <= MAX_SOCKET_PATH),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Address::Abstract(name) => assert!(name.len() < 64),
        }
    }

    fn store(dir: &Path) -> (PathBuf, crate::Store, sealkv_crypto::MasterKey) {
        let path = dir.join("s.sealkv");
        let key = sealkv_crypto::MasterKey::generate().unwrap();
        let store = crate::Store::create(&path, key.clone(), Options::default()).unwrap();
        store.put("n", "k", b"v".to_vec()).unwrap();
        (path, store, key)
    }

    /// A peer that cannot prove it holds the store key is refused, and is sent
    /// nothing after the greeting; one that can is served.
    #[test]
    fn the_owner_refuses_a_peer_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (path, owner, _) = store(dir.path());
        let address = Address::for_store(&path).unwrap();
        let (conn, hello) = Conn::open(&address).unwrap();
        let wrong = auth_key(&[9; 32], &[0; 16]);
        let err = conn.authenticate(&hello, &wrong).err().unwrap();
        assert!(
            matches!(&err, Error::Owner { transient: false, what } if what.contains("refused")),
            "{err:?}"
        );
        // The right key, from the owner's own handle: served.
        let right = auth_key(read_lock(&owner.inner.master).expose(), &owner.inner.db_id);
        let (conn, hello) = Conn::open(&address).unwrap();
        let conn = conn.authenticate(&hello, &right).unwrap();
        let remote = Remote::new(address, right, conn);
        let view = remote.view().unwrap();
        assert!(view.len(super::super::Table::Data).unwrap() >= 1);
    }

    /// A process serving the socket that cannot prove it holds the store key (a
    /// stranger squatting the path while the file is held) is not used.
    #[test]
    fn a_client_refuses_an_owner_without_the_key() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let (path, owner, key) = store(dir.path());
        let address = Address::for_store(&path).unwrap();
        let (_, greeting) = Conn::open(&address).unwrap();
        drop(owner);
        // Held by a process that serves nothing; a stranger answers on the socket.
        let _held =
            FileRows::open_redb(&path, &Options::default(), false, Concurrency::Exclusive).unwrap();
        let listener = address.bind().unwrap();
        let stranger = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hello = wire::Enc::new(wire::OK);
            hello.u8(wire::VERSION).0.extend_from_slice(&[1; 32]);
            hello.u32(greeting.records.len() as u32);
            for (k, v) in &greeting.records {
                hello.bytes(k).bytes(v);
            }
            let mut frame = (hello.0.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&hello.0);
            s.write_all(&frame).unwrap();
            let mut proof = [0u8; 4 + 1 + 64];
            s.read_exact(&mut proof).unwrap();
            // A made-up proof of its own.
            let mut reply = 33u32.to_le_bytes().to_vec();
            reply.push(wire::OK);
            reply.extend_from_slice(&[7; 32]);
            s.write_all(&reply).unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            rest
        });
        let err = crate::Store::open(&path, key, Options::default()).unwrap_err();
        assert!(
            matches!(&err, Error::Owner { what, .. } if what.contains("could not prove")),
            "{err:?}"
        );
        // The client sent nothing after its proof.
        assert!(stranger.join().unwrap().is_empty());
    }

    #[test]
    fn each_side_proves_something_different() {
        let key = auth_key(&[1; 32], &[2; 16]);
        let other = auth_key(&[3; 32], &[2; 16]);
        let (o, c) = ([4; 32], [5; 32]);
        assert_ne!(mac(&key, b"client", &o, &c), mac(&key, b"owner", &o, &c));
        assert_ne!(mac(&key, b"client", &o, &c), mac(&other, b"client", &o, &c));
        assert_ne!(mac(&key, b"client", &o, &c), mac(&key, b"client", &c, &o));
    }
}
