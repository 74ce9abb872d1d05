//! A client's side of the socket: row operations forwarded to the owner.
//!
//! A client keeps a small pool of authenticated connections. A read view takes one
//! for its life (its first read asks the owner for a fresh snapshot, so a point get
//! is one round trip); a write transaction takes one, sends its changes without
//! waiting (they are answered, if one failed, at the next request that is), and
//! waits only for reads, for changes that hand back the row they replaced, and for
//! the commit. A held lock key keeps a connection too: the owner releases the lock if
//! that connection ends.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Write};
use std::ops::Bound;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeroize::Zeroizing;

use super::server::SCAN_CHUNK;
use super::wire::{self, Dec, Enc};
use super::{Address, Hello, mac};
use crate::error::{Error, Result};
use crate::guards::lock;
use crate::rowstore::{Found, Range, RowRead, RowWrite, Table, View, Visit};

/// One authenticated connection to the owner.
pub(crate) struct Conn {
    input: BufReader<UnixStream>,
    out: BufWriter<UnixStream>,
    buf: Vec<u8>,
    /// False once a call failed midway: the connection is then out of step and
    /// dropped instead of going back to the pool.
    sound: bool,
}

impl Conn {
    /// Connects and reads the owner's hello (nothing is proven yet).
    pub(crate) fn open(address: &Address) -> std::io::Result<(Self, Hello)> {
        let stream = address.connect()?;
        let mut conn = Self {
            input: BufReader::new(stream.try_clone()?),
            out: BufWriter::new(stream),
            buf: Vec::new(),
            sound: true,
        };
        conn.out
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        let hello = conn.read_hello().map_err(std::io::Error::other)?;
        Ok((conn, hello))
    }

    fn read_hello(&mut self) -> Result<Hello> {
        wire::recv(&mut self.input, &mut self.buf)?;
        let mut d = Dec::new(&self.buf);
        if d.u8()? != wire::OK {
            return Err(Error::Owner {
                what: "the store's socket did not greet as a sealkv owner".into(),
                transient: false,
            });
        }
        let version = d.u8()?;
        if version != wire::VERSION {
            return Err(Error::Owner {
                what: format!(
                    "the store's owner process speaks protocol {version}, this build {}: \
                     run one sealkv version on a store",
                    wire::VERSION
                ),
                transient: false,
            });
        }
        let nonce = d.array()?;
        let n = d.u32()?;
        let mut records = Vec::new();
        for _ in 0..n {
            let name = d.bytes()?.to_vec();
            let value = d.bytes()?.to_vec();
            records.push((name, value));
        }
        d.done()?;
        Ok(Hello { nonce, records })
    }

    /// Proves this process holds the store's key, and checks the owner's proof.
    pub(crate) fn authenticate(mut self, hello: &Hello, auth: &[u8; 32]) -> Result<Self> {
        let mut ours = [0u8; 32];
        sealkv_crypto::fill_random(&mut ours).map_err(Error::Key)?;
        let mut proof = Enc::new(wire::OK);
        proof.0.extend_from_slice(&ours);
        proof
            .0
            .extend_from_slice(&mac(auth, b"client", &hello.nonce, &ours));
        let mut d = self.call(&proof)?;
        let theirs: [u8; 32] = d.array()?;
        let expect = mac(auth, b"owner", &hello.nonce, &ours);
        if blake3::Hash::from(theirs) != blake3::Hash::from(expect) {
            return Err(Error::Owner {
                what: "the process serving this store's socket could not prove it holds \
                       the store's key; refusing to use it"
                    .into(),
                transient: false,
            });
        }
        self.out.get_ref().set_read_timeout(None)?;
        Ok(self)
    }

    /// True when an idle connection is still open at the other end (an owner that
    /// exited or died closed it). An idle connection has nothing to read: a read that
    /// would block means it is alive.
    fn alive(&self) -> bool {
        use std::io::Read;
        let stream = self.out.get_ref();
        if !self.input.buffer().is_empty() || stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let alive = matches!(
            (&*stream).read(&mut byte),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        );
        stream.set_nonblocking(false).is_ok() && alive
    }

    /// Queues a frame that is not answered.
    fn send(&mut self, frame: &Enc) -> Result<()> {
        wire::send(&mut self.out, frame).inspect_err(|_| self.sound = false)
    }

    /// Sends a frame and waits for its answer: the fields after the `OK` tag, or the
    /// owner's error.
    fn call(&mut self, frame: &Enc) -> Result<Dec<'_>> {
        self.sound = false;
        wire::send(&mut self.out, frame)?;
        self.out.flush().map_err(wire::lost)?;
        wire::recv(&mut self.input, &mut self.buf)?;
        self.sound = true;
        self.decoded()
    }

    /// Sends a frame whose answer is read later, with [`Conn::answer`]: the connection
    /// is out of step (not pooled) until it is.
    fn ask(&mut self, frame: &Enc) -> Result<()> {
        self.sound = false;
        wire::send(&mut self.out, frame)
    }

    /// Reads the answer to the frame [`Conn::ask`] sent, once `next` (a frame of its
    /// own, whose answer follows) is sent too: both go in one write, so the two cost
    /// one round trip. The connection stays out of step: `next`'s answer is unread.
    fn answer(&mut self, next: &Enc) -> Result<Dec<'_>> {
        wire::send(&mut self.out, next)?;
        self.out.flush().map_err(wire::lost)?;
        wire::recv(&mut self.input, &mut self.buf)?;
        self.decoded()
    }

    /// Reads the next answer (of a frame already sent and flushed).
    fn next_answer(&mut self) -> Result<Dec<'_>> {
        wire::recv(&mut self.input, &mut self.buf)?;
        self.sound = true;
        self.decoded()
    }

    fn decoded(&self) -> Result<Dec<'_>> {
        let mut d = Dec::new(&self.buf);
        match d.u8()? {
            wire::OK => Ok(d),
            _ => Err(wire::error_from(&mut d)),
        }
    }
}

/// The client end of one owner.
pub(crate) struct Remote {
    address: Address,
    auth: Zeroizing<[u8; 32]>,
    pool: Mutex<Vec<Conn>>,
    /// Set when a connection was lost: the owner is gone (or going), and the next
    /// call finds the next one.
    lost: AtomicBool,
}

impl Remote {
    pub(crate) fn new(address: Address, auth: Zeroizing<[u8; 32]>, first: Conn) -> Arc<Self> {
        Arc::new(Self {
            address,
            auth,
            pool: Mutex::new(vec![first]),
            lost: AtomicBool::new(false),
        })
    }

    /// True once a connection to this owner was lost.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    fn conn(&self) -> Result<Conn> {
        if self.is_lost() {
            return Err(wire::lost(std::io::Error::other("the owner is gone")));
        }
        let pooled = lock(&self.pool).pop();
        if let Some(c) = pooled {
            if c.alive() {
                return Ok(c);
            }
            // The owner closed it: it exited or died.
            return Err(self.note(wire::lost(std::io::Error::other(
                "the owner closed the connection",
            ))));
        }
        let (conn, hello) = Conn::open(&self.address).map_err(|e| self.note(wire::lost(e)))?;
        conn.authenticate(&hello, &self.auth)
            .map_err(|e| self.note(e))
    }

    fn put_back(&self, conn: Conn) {
        if conn.sound && !self.is_lost() {
            let mut pool = lock(&self.pool);
            if pool.len() < 64 {
                pool.push(conn);
            }
        }
    }

    /// Notes a lost connection (the owner is gone) and passes the error on.
    fn note(&self, e: Error) -> Error {
        if e.is_transient_server() {
            self.lost.store(true, Ordering::Release);
            lock(&self.pool).clear();
        }
        e
    }

    pub(crate) fn view(self: &Arc<Self>) -> Result<View> {
        Ok(Arc::new(RemoteView {
            remote: self.clone(),
            conn: Mutex::new(Some(self.conn()?)),
            fresh: AtomicBool::new(true),
        }))
    }

    pub(crate) fn write(
        &self,
        f: &mut dyn FnMut(&mut dyn RowWrite) -> Result<()>,
        committing: &mut bool,
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let result = (|| {
            // BEGIN's answer (the meta records it carries) is read with the answer of
            // the transaction's first read, so the two cost one round trip.
            conn.ask(&Enc::new(wire::BEGIN))?;
            let mut w = RemoteWrite {
                conn: std::cell::RefCell::new(&mut conn),
                begun: std::cell::Cell::new(false),
                queued: std::cell::Cell::new(0),
                meta: std::cell::RefCell::new(HashMap::new()),
                expiry_empty: std::cell::Cell::new(None),
            };
            if let Err(e) = f(&mut w) {
                // The owner rolls the transaction back; nothing answers an abort.
                if w.begun.get() && w.send(&Enc::new(wire::ABORT)).is_ok() {
                    let _ = w.conn.borrow_mut().out.flush();
                }
                return Err(e);
            }
            *committing = true;
            w.call(&Enc::new(wire::COMMIT), |_| Ok(()))
        })();
        let result = result.map_err(|e| self.note(e));
        self.put_back(conn);
        result
    }
}

/// A read view on the owner: one snapshot there, through one connection.
struct RemoteView {
    remote: Arc<Remote>,
    conn: Mutex<Option<Conn>>,
    /// True until the first read, which asks the owner for a fresh snapshot.
    fresh: AtomicBool,
}

impl RemoteView {
    fn call<T>(&self, frame: &mut Enc, read: impl FnOnce(Dec<'_>) -> Result<T>) -> Result<T> {
        let mut slot = lock(&self.conn);
        let conn = slot
            .as_mut()
            .ok_or_else(|| wire::lost(std::io::Error::other("the owner is gone")))?;
        // The fresh byte sits right after the tag.
        frame.0[1] = u8::from(self.fresh.swap(false, Ordering::AcqRel));
        let result = conn.call(frame).and_then(read);
        result.map_err(|e| self.remote.note(e))
    }
}

impl Drop for RemoteView {
    /// The connection goes back to the pool; if a read took a snapshot on the owner,
    /// the owner is told to drop it first (an idle connection must not pin one).
    fn drop(&mut self) {
        if let Some(mut conn) = lock(&self.conn).take() {
            let read = !self.fresh.load(Ordering::Acquire);
            if read && (conn.send(&Enc::new(wire::RELEASE)).is_err() || conn.out.flush().is_err()) {
                // Out of step or gone: not pooled.
                return;
            }
            self.remote.put_back(conn);
        }
    }
}

/// A read request's frame: tag, fresh byte (set when sent), table.
fn read_frame(tag: u8, table: Table) -> Enc {
    let mut f = Enc::new(tag);
    f.u8(0).table(table);
    f
}

fn decode_many(mut d: Dec<'_>) -> Result<Vec<Option<Found<'static>>>> {
    let n = d.u32()?;
    let mut found = Vec::with_capacity(n as usize);
    for _ in 0..n {
        found.push(d.opt()?.map(|v| Found::Owned(v.to_vec())));
    }
    Ok(found)
}

/// Scans `range` chunk by chunk through `call`, which sends a frame and decodes its
/// rows.
fn scan_chunks(
    table: Table,
    range: Range<'_>,
    visit: Visit<'_>,
    call: &mut dyn FnMut(&mut Enc) -> Result<Rows>,
) -> Result<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let mut f = read_frame(wire::SCAN, table);
        match &after {
            None => f.bound(range.0),
            Some(k) => f.bound(Bound::Excluded(k)),
        };
        f.bound(range.1).u32(SCAN_CHUNK);
        let rows = call(&mut f)?;
        let full = rows.len() as u32 >= SCAN_CHUNK;
        for (k, v) in &rows {
            if !visit(k, v)? {
                return Ok(());
            }
        }
        match rows.into_iter().last() {
            Some((k, _)) if full => after = Some(k),
            _ => return Ok(()),
        }
    }
}

/// Rows of a scan chunk, copied out: key, value.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn decode_rows(mut d: Dec<'_>) -> Result<Rows> {
    let n = d.u32()?;
    let mut rows = Vec::with_capacity(n as usize);
    for _ in 0..n {
        rows.push((d.bytes()?.to_vec(), d.bytes()?.to_vec()));
    }
    Ok(rows)
}

impl RowRead for RemoteView {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        let mut f = read_frame(wire::GET, table);
        f.bytes(key);
        self.call(&mut f, |mut d| {
            Ok(d.opt()?.map(|v| Found::Owned(v.to_vec())))
        })
    }
    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Found<'_>>>> {
        let mut f = read_frame(wire::GET_MANY, table);
        f.u32(keys.len() as u32);
        for k in keys {
            f.bytes(k);
        }
        self.call(&mut f, decode_many)
    }
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        scan_chunks(table, range, visit, &mut |f| self.call(f, decode_rows))
    }
    fn len(&self, table: Table) -> Result<u64> {
        self.call(&mut read_frame(wire::LEN, table), |mut d| d.u64())
    }
    fn is_empty(&self, table: Table) -> Result<bool> {
        self.call(&mut read_frame(wire::IS_EMPTY, table), |mut d| {
            Ok(d.u8()? == 1)
        })
    }
}

/// Bytes of unanswered frames a write transaction queues before it reads `BEGIN`'s
/// answer (well below any platform's socket buffer: 8 KiB on macOS).
const UNANSWERED_BEFORE_BEGIN: usize = 4 << 10;

/// Meta records by name as a write transaction knows them (`None`: absent).
type MetaCache = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// A write transaction on the owner. Reads take the connection through a `RefCell`:
/// the row-store traits read through `&self`.
struct RemoteWrite<'c> {
    conn: std::cell::RefCell<&'c mut Conn>,
    /// True once `BEGIN`'s answer was read (it is read with the first call's).
    begun: std::cell::Cell<bool>,
    /// Bytes of unanswered frames queued while `BEGIN`'s answer is unread.
    queued: std::cell::Cell<usize>,
    /// Meta records as this transaction has them, where known (those the owner sent
    /// with `BEGIN`, kept up to date by this transaction's own changes).
    meta: std::cell::RefCell<MetaCache>,
    /// Whether the expiry index is empty, where known.
    expiry_empty: std::cell::Cell<Option<bool>>,
}

impl RemoteWrite<'_> {
    fn call<T>(&self, frame: &Enc, read: impl FnOnce(Dec<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.borrow_mut();
        if self.begun.get() {
            return conn.call(frame).and_then(read);
        }
        let d = conn.answer(frame)?;
        let (meta, expiry_empty) = Self::begun_with(d)?;
        *self.meta.borrow_mut() = meta;
        self.expiry_empty.set(Some(expiry_empty));
        self.begun.set(true);
        conn.next_answer().and_then(read)
    }

    /// The meta records and expiry state `BEGIN`'s answer carries.
    fn begun_with(mut d: Dec<'_>) -> Result<(MetaCache, bool)> {
        let n = d.u32()?;
        let mut meta = HashMap::new();
        for _ in 0..n {
            let name = d.bytes()?.to_vec();
            meta.insert(name, d.opt()?.map(<[u8]>::to_vec));
        }
        Ok((meta, d.u8()? == 1))
    }

    /// [`RemoteWrite::settle`] before a change to `table`, unless it is the data
    /// table (whose rows `BEGIN` does not carry).
    fn settle_for(&self, table: Table) -> Result<()> {
        if table == Table::Data {
            return Ok(());
        }
        self.settle()
    }

    /// Reads `BEGIN`'s answer now if it is still unread (with a cheap read), before
    /// the meta records or the expiry state it carries are used or changed.
    fn settle(&self) -> Result<()> {
        if !self.begun.get() {
            self.call(&read_frame(wire::IS_EMPTY, Table::Meta), |_| Ok(()))?;
        }
        Ok(())
    }
    fn send(&self, frame: &Enc) -> Result<()> {
        // Until BEGIN's answer is read, the owner may be blocked writing it (it carries
        // the keyring); a client that kept writing unanswered frames into a full socket
        // would block too. So it reads that answer before queuing much.
        if !self.begun.get() {
            let queued = self.queued.get() + frame.0.len();
            self.queued.set(queued);
            if queued > UNANSWERED_BEFORE_BEGIN {
                self.settle()?;
            }
        }
        self.conn.borrow_mut().send(frame)
    }

    /// Notes a change to `key` of `table`: `Some(value)` written, `None` removed, or
    /// (`unknown`) changed in a way only the owner knows.
    fn noted(&self, table: Table, key: &[u8], now: Option<&[u8]>, unknown: bool) {
        match table {
            Table::Meta if unknown => {
                self.meta.borrow_mut().remove(key);
            }
            Table::Meta => {
                self.meta
                    .borrow_mut()
                    .insert(key.to_vec(), now.map(<[u8]>::to_vec));
            }
            Table::Expiry => self.expiry_empty.set(match now {
                Some(_) if !unknown => Some(false),
                _ => None,
            }),
            Table::Data => {}
        }
    }
}

impl RowRead for RemoteWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Found<'_>>> {
        if table == Table::Meta {
            self.settle()?;
        }
        if table == Table::Meta
            && let Some(known) = self.meta.borrow().get(key)
        {
            return Ok(known.clone().map(Found::Owned));
        }
        let mut f = read_frame(wire::GET, table);
        f.bytes(key);
        self.call(&f, |mut d| Ok(d.opt()?.map(|v| Found::Owned(v.to_vec()))))
    }
    fn get_many(&self, table: Table, keys: &[&[u8]]) -> Result<Vec<Option<Found<'_>>>> {
        let mut f = read_frame(wire::GET_MANY, table);
        f.u32(keys.len() as u32);
        for k in keys {
            f.bytes(k);
        }
        self.call(&f, decode_many)
    }
    fn scan(&self, table: Table, range: Range<'_>, visit: Visit<'_>) -> Result<()> {
        scan_chunks(table, range, visit, &mut |f| self.call(f, decode_rows))
    }
    fn len(&self, table: Table) -> Result<u64> {
        self.call(&read_frame(wire::LEN, table), |mut d| d.u64())
    }
    fn is_empty(&self, table: Table) -> Result<bool> {
        if table == Table::Expiry {
            self.settle()?;
        }
        if table == Table::Expiry
            && let Some(known) = self.expiry_empty.get()
        {
            return Ok(known);
        }
        self.call(&read_frame(wire::IS_EMPTY, table), |mut d| Ok(d.u8()? == 1))
    }
}

impl RowWrite for RemoteWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.settle_for(table)?;
        let mut f = Enc::new(wire::PUT);
        f.table(table).bytes(key).bytes(value);
        self.noted(table, key, Some(value), false);
        self.send(&f)
    }
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.settle_for(table)?;
        let mut f = Enc::new(wire::DELETE);
        f.table(table).bytes(key);
        self.noted(table, key, None, true);
        self.send(&f)
    }
    fn replace(
        &mut self,
        table: Table,
        key: &[u8],
        value: &[u8],
        old: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        self.settle_for(table)?;
        let mut f = Enc::new(wire::REPLACE);
        f.table(table).bytes(key).bytes(value);
        self.noted(table, key, Some(value), false);
        self.call(&f, |mut d| {
            old(d.opt()?);
            Ok(())
        })
    }
    fn remove(
        &mut self,
        table: Table,
        key: &[u8],
        old: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        self.settle_for(table)?;
        let mut f = Enc::new(wire::REMOVE);
        f.table(table).bytes(key);
        self.noted(table, key, None, true);
        self.call(&f, |mut d| {
            old(d.opt()?);
            Ok(())
        })
    }
    fn put_if_absent(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.settle_for(table)?;
        let mut f = Enc::new(wire::PUT_IF_ABSENT);
        f.table(table).bytes(key).bytes(value);
        self.noted(table, key, Some(value), true);
        self.send(&f)
    }
    fn delete_range(&mut self, table: Table, range: Range<'_>) -> Result<()> {
        self.settle_for(table)?;
        let mut f = Enc::new(wire::DELETE_RANGE);
        f.table(table).bound(range.0).bound(range.1);
        match table {
            Table::Meta => self.meta.borrow_mut().clear(),
            Table::Expiry => self.expiry_empty.set(None),
            Table::Data => {}
        }
        self.send(&f)
    }
    fn batches_reads(&self) -> bool {
        true
    }
}
