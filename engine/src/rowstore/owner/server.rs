//! The owner's side of the socket: a thread accepts connections, and a thread per
//! connection proves the owner holds the store's key, checks the client's proof, and
//! then serves its row operations on the owner's file.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use zeroize::Zeroizing;

use super::wire::{self, Dec, Enc};
use super::{Address, HELLO_RECORDS, mac};
use crate::error::{Error, Result};
use crate::guards::lock;
use crate::rowstore::file::FileRows;
use crate::rowstore::{RowRead, RowStore, RowWrite, Table, View};

/// What every connection thread shares.
struct Shared {
    file: Arc<FileRows>,
    auth: Zeroizing<[u8; 32]>,
    /// The longest a client may keep a write transaction open while sending nothing.
    stall: Duration,
    /// Open connections, to shut down when the owner stops.
    conns: Mutex<HashMap<u64, UnixStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
    next_conn: AtomicU64,
}

/// The socket server of an owner process.
pub(crate) struct Server {
    address: Address,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    /// The socket file as bound (device, inode): removed at stop only if it is
    /// still this one.
    bound: Option<(u64, u64)>,
}

impl Server {
    /// Binds the store's socket (replacing a stale one: only the owner, which holds
    /// the file, binds it) and starts serving.
    pub(crate) fn start(
        address: Address,
        file: Arc<FileRows>,
        auth: Zeroizing<[u8; 32]>,
        stall: Duration,
    ) -> Result<Self> {
        let listener = address.bind()?;
        let shared = Arc::new(Shared {
            file,
            auth,
            stall,
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
        });
        // The accept loop holds the rest weakly: if it cannot be woken at stop (the
        // socket file was removed under it), it is left blocked, holding only the
        // listener, and the file is released all the same.
        let accepting = Arc::downgrade(&shared);
        let accept = std::thread::Builder::new()
            .name("sealkv-owner".into())
            .spawn(move || accept_loop(&listener, &accepting))?;
        tracing::debug!(target: "sealkv::owner", "serving the store's other processes");
        Ok(Self {
            bound: address.identity(),
            address,
            shared,
            accept: Some(accept),
        })
    }

    /// True while another process is connected.
    pub(crate) fn has_clients(&self) -> bool {
        !lock(&self.shared.conns).is_empty()
    }

    /// Stops serving: the socket goes, connections are shut down (their clients find
    /// the next owner), and every thread has ended when this returns, so the file can
    /// be released.
    pub(crate) fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::Release);
        // Wakes the accept loop, which then sees `stopping`; the socket file goes
        // after it (while this process still holds the file: no new owner has bound
        // one yet). A loop that cannot be woken is left behind (see `start`).
        if self.address.identity() == self.bound && self.address.connect().is_ok() {
            let _ = accept.join();
        }
        if self.address.identity() == self.bound {
            self.address.unlink();
        }
        for conn in lock(&self.shared.conns).values() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &UnixListener, shared: &std::sync::Weak<Shared>) {
    for stream in listener.incoming() {
        let Some(shared) = shared.upgrade() else {
            break;
        };
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let Ok(copy) = stream.try_clone() else {
            continue;
        };
        lock(&shared.conns).insert(id, copy);
        let serving = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("sealkv-owner-conn".into())
            .spawn(move || {
                let result = serve(&serving, stream);
                lock(&serving.conns).remove(&id);
                if let Err(e) = result {
                    tracing::debug!(target: "sealkv::owner", error = %e, "a client connection ended");
                }
            });
        if let Ok(t) = spawned {
            let mut threads = lock(&shared.threads);
            if shared.stopping.load(Ordering::Acquire) {
                // `stop` has taken the list already: this thread ends with the
                // connection, which it shut down.
                continue;
            }
            threads.retain(|t| !t.is_finished());
            threads.push(t);
        } else {
            lock(&shared.conns).remove(&id);
        }
    }
}

fn serve(shared: &Shared, stream: UnixStream) -> Result<()> {
    let mut input = BufReader::new(stream.try_clone()?);
    let mut out = BufWriter::new(stream.try_clone()?);
    let mut buf = Vec::new();
    // The handshake: hello (with the records a client needs to unlock the store, and
    // a fresh nonce), the client's proof, then the owner's.
    let mut nonce = [0u8; 32];
    sealkv_crypto::fill_random(&mut nonce).map_err(Error::Key)?;
    let mut hello = Enc::new(wire::OK);
    hello.u8(wire::VERSION).0.extend_from_slice(&nonce);
    {
        let view = shared.file.view()?;
        let mut records = Vec::new();
        for name in HELLO_RECORDS {
            if let Some(v) = view.get(Table::Meta, name.as_bytes())? {
                records.push((name, v.to_vec()));
            }
        }
        hello.u32(records.len() as u32);
        for (name, value) in &records {
            hello.bytes(name.as_bytes()).bytes(value);
        }
    }
    wire::send(&mut out, &hello)?;
    out.flush().map_err(wire::lost)?;
    stream.set_read_timeout(Some(shared.stall))?;
    wire::recv(&mut input, &mut buf)?;
    let mut d = Dec::new(&buf);
    let proven = d.u8()? == wire::OK && {
        let theirs: [u8; 32] = d.array()?;
        let proof: [u8; 32] = d.array()?;
        let expect = mac(&shared.auth, b"client", &nonce, &theirs);
        let ok = blake3::Hash::from(proof) == blake3::Hash::from(expect);
        if ok {
            let mut reply = Enc::new(wire::OK);
            reply
                .0
                .extend_from_slice(&mac(&shared.auth, b"owner", &nonce, &theirs));
            wire::send(&mut out, &reply)?;
        }
        ok
    };
    if !proven {
        let mut refused = Enc::new(wire::ERR);
        refused.u8(wire::err::REFUSED).bytes(&[]);
        let _ = wire::send(&mut out, &refused).and_then(|()| out.flush().map_err(wire::lost));
        tracing::info!(target: "sealkv::owner", "refused a process that could not prove it holds the store's key");
        return Err(Error::Owner {
            what: "a client that could not prove it holds the key".into(),
            transient: false,
        });
    }
    out.flush().map_err(wire::lost)?;
    stream.set_read_timeout(None)?;

    let mut view: Option<View> = None;
    loop {
        wire::recv(&mut input, &mut buf)?;
        let mut d = Dec::new(&buf);
        let tag = d.u8()?;
        match tag {
            wire::GET | wire::GET_MANY | wire::SCAN | wire::LEN | wire::IS_EMPTY => {
                let fresh = d.u8()? == 1;
                let reply = (|| {
                    if fresh || view.is_none() {
                        view = None;
                        view = Some(shared.file.view()?);
                    }
                    let rows = view.as_deref().ok_or(Error::Poisoned)?;
                    read(tag, &mut d, rows)
                })();
                reply_with(&mut out, reply)?;
            }
            wire::RELEASE => view = None,
            wire::BEGIN => {
                view = None;
                write(shared, &stream, &mut input, &mut out, &mut buf)?;
            }
            _ => {
                return Err(Error::Owner {
                    what: format!("an unknown request {tag:#x} on the owner socket"),
                    transient: false,
                });
            }
        }
    }
}

fn reply_with(out: &mut BufWriter<UnixStream>, reply: Result<Enc>) -> Result<()> {
    let frame = match reply {
        Ok(f) => f,
        Err(e) => wire::error_frame(&e),
    };
    wire::send(out, &frame)?;
    out.flush().map_err(wire::lost)
}

/// Rows per scan reply; the client asks for the next chunk after the last key.
pub(crate) const SCAN_CHUNK: u32 = 512;

/// Answers one read on `rows`.
fn read(tag: u8, d: &mut Dec<'_>, rows: &dyn RowRead) -> Result<Enc> {
    let table = d.table()?;
    let mut r = Enc::new(wire::OK);
    match tag {
        wire::GET => {
            let key = d.bytes()?;
            r.opt(rows.get(table, key)?.as_deref());
        }
        wire::GET_MANY => {
            let n = d.u32()? as usize;
            let mut keys = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                keys.push(d.bytes()?);
            }
            let found = rows.get_many(table, &keys)?;
            r.u32(found.len() as u32);
            for v in &found {
                r.opt(v.as_deref());
            }
        }
        wire::SCAN => {
            let lo = d.bound()?;
            let hi = d.bound()?;
            let limit = d.u32()?.clamp(1, SCAN_CHUNK);
            let mut body = Enc::default();
            let mut count = 0u32;
            rows.scan(table, (lo, hi), &mut |k, v| {
                body.bytes(k).bytes(v);
                count += 1;
                Ok(count < limit)
            })?;
            r.u32(count).0.extend_from_slice(&body.0);
        }
        wire::LEN => {
            r.u64(rows.len(table)?);
        }
        _ => {
            r.u8(u8::from(rows.is_empty(table)?));
        }
    }
    d.done()?;
    Ok(r)
}

/// Serves one write transaction: the client's changes applied as they come, its reads
/// answered, until it commits or aborts. Changes are not answered one by one: the
/// first that fails is reported at the next request that is answered.
fn write(
    shared: &Shared,
    stream: &UnixStream,
    input: &mut BufReader<UnixStream>,
    out: &mut BufWriter<UnixStream>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    // A client that stops sending mid-transaction (frozen, or dead without its socket
    // closing) must not hold the owner's write lock for ever.
    stream.set_read_timeout(Some(shared.stall))?;
    let mut committing = false;
    let mut began = false;
    let mut failed: Option<Error> = None;
    // Set when the connection itself failed: the transaction rolls back and the
    // connection ends.
    let mut broken: Option<Error> = None;
    let result = shared.file.write(
        &mut |w| {
            began = true;
            // The answer carries what every commit reads first, saving the client a
            // round trip for each.
            let mut first = Enc::new(wire::OK);
            first.u32(super::PRELOAD.len() as u32);
            for name in super::PRELOAD {
                first
                    .bytes(name.as_bytes())
                    .opt(w.get(Table::Meta, name.as_bytes())?.as_deref());
            }
            first.u8(u8::from(w.is_empty(Table::Expiry)?));
            reply_with(out, Ok(first)).inspect_err(|e| broken = Some(e.duplicate()))?;
            loop {
                if let Err(e) = wire::recv(input, buf) {
                    broken = Some(e.duplicate());
                    return Err(e);
                }
                let mut d = Dec::new(buf);
                let tag = d.u8()?;
                let step = match tag {
                    wire::PUT | wire::DELETE | wire::PUT_IF_ABSENT | wire::DELETE_RANGE => {
                        if failed.is_none()
                            && let Err(e) = change(tag, &mut d, w)
                        {
                            failed = Some(e);
                        }
                        None
                    }
                    wire::COMMIT | wire::ABORT => None,
                    _ => Some(match failed.take() {
                        Some(e) => wire::error_frame(&e),
                        None => match answer(tag, &mut d, w) {
                            Ok(r) => r,
                            Err(e) => wire::error_frame(&e),
                        },
                    }),
                };
                if let Some(reply) = step
                    && let Err(e) = reply_with(out, Ok(reply))
                {
                    broken = Some(e.duplicate());
                    return Err(e);
                }
                match tag {
                    wire::COMMIT => return failed.take().map_or(Ok(()), Err),
                    wire::ABORT => return Err(Error::Poisoned),
                    _ => {}
                }
            }
        },
        &mut committing,
    );
    stream.set_read_timeout(None)?;
    if let Some(e) = broken {
        return Err(e);
    }
    if !began {
        // The transaction never began (a file that cannot be written): the client
        // waits for the answer to BEGIN.
        return reply_with(out, result.map(|()| Enc::new(wire::OK)));
    }
    if committing {
        if result.is_err() {
            // The file's state in memory is suspect after a failed commit: reopen it
            // (redb recovers to the last durable commit) before anyone writes again.
            let _ = shared.file.recover();
        }
        return reply_with(out, result.map(|()| Enc::new(wire::OK)));
    }
    // Aborted by the client (no reply wanted), or a change failed at COMMIT.
    match result {
        Err(Error::Poisoned) => Ok(()),
        other => reply_with(out, other.map(|()| Enc::new(wire::OK))),
    }
}

/// Applies one change that is not answered.
fn change(tag: u8, d: &mut Dec<'_>, w: &mut dyn RowWrite) -> Result<()> {
    let table = d.table()?;
    match tag {
        wire::PUT => {
            let (k, v) = (d.bytes()?, d.bytes()?);
            w.put(table, k, v)?;
        }
        wire::DELETE => w.delete(table, d.bytes()?)?,
        wire::PUT_IF_ABSENT => {
            let (k, v) = (d.bytes()?, d.bytes()?);
            w.put_if_absent(table, k, v)?;
        }
        _ => {
            let (lo, hi) = (d.bound()?, d.bound()?);
            w.delete_range(table, (lo, hi))?;
        }
    }
    d.done()
}

/// Answers a request inside a write transaction: a read, a change that hands back
/// the row it replaced, or a check of lock proofs.
fn answer(tag: u8, d: &mut Dec<'_>, w: &mut dyn RowWrite) -> Result<Enc> {
    match tag {
        wire::GET | wire::GET_MANY | wire::SCAN | wire::LEN | wire::IS_EMPTY => {
            let _fresh = d.u8()?;
            read(tag, d, &*w)
        }
        wire::REPLACE | wire::REMOVE => {
            let table = d.table()?;
            let key = d.bytes()?;
            let mut r = Enc::new(wire::OK);
            let mut old = |v: Option<&[u8]>| {
                r.opt(v);
            };
            if tag == wire::REPLACE {
                let value = d.bytes()?;
                w.replace(table, key, value, &mut old)?;
            } else {
                w.remove(table, key, &mut old)?;
            }
            d.done()?;
            Ok(r)
        }
        _ => Err(Error::Owner {
            what: format!("an unknown request {tag:#x} in a write transaction"),
            transient: false,
        }),
    }
}
