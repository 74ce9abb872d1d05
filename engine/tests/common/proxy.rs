//! A fault proxy between the engine and the test PostgreSQL server, on 127.0.0.1.
//!
//! It forwards bytes both ways and reads the client's side as PostgreSQL's protocol
//! (a startup message, then typed messages), so it can act at a chosen statement:
//!
//! - [`Proxy::cut_after_commit`]: the next simple-query `COMMIT` goes to the server,
//!   and once the server answers, both sockets are closed without relaying the
//!   answer (a reply lost with its connection: the commit took effect, the client
//!   cannot know);
//! - [`Proxy::freeze_after`]: after the next simple query containing a text, the
//!   connection stops in both directions but stays open (a host gone silent, as far
//!   as the server can tell) until [`Proxy::close_all`];
//! - [`Proxy::refuse_for`]: new connections are closed at once for a while;
//! - [`Proxy::freeze_all`]: every open connection stops in both directions now (a
//!   standby's replication connection that no longer delivers anything).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Cut the connection that sends the next `COMMIT`, after the server answers.
    cut_commit: AtomicBool,
    /// Freeze the connection that sends the next query containing this.
    freeze_on: Mutex<Option<String>>,
    /// Refuse new connections until then.
    refuse_until: Mutex<Option<Instant>>,
    /// Connections cut after a COMMIT so far.
    cuts: AtomicUsize,
    /// Connections frozen so far.
    freezes: AtomicUsize,
    /// Every socket, to close them all.
    sockets: Mutex<Vec<TcpStream>>,
    /// Every connection, to freeze them all.
    conns: Mutex<Vec<Arc<Conn>>>,
}

/// A running proxy; see the module docs.
pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let refused = st
                    .refuse_until
                    .lock()
                    .unwrap()
                    .is_some_and(|t| Instant::now() < t);
                if refused {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let st = st.clone();
                std::thread::spawn(move || serve(client, server, st));
            }
        });
        Self { port, state }
    }

    /// `url` (a `postgres://user:pw@host:port/db…` URL) through this proxy.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (creds, rest) = rest.rsplit_once('@').unwrap();
        let (_, path) = rest.split_once('/').unwrap();
        format!("{scheme}://{creds}@127.0.0.1:{}/{path}", self.port)
    }

    /// Arms the lost-reply fault for the next `COMMIT`.
    pub fn cut_after_commit(&self) {
        self.state.cut_commit.store(true, Ordering::SeqCst);
    }

    /// Arms the silent-host fault for the next query containing `text`.
    pub fn freeze_after(&self, text: &str) {
        *self.state.freeze_on.lock().unwrap() = Some(text.to_string());
    }

    /// Closes new connections at once for `d`.
    pub fn refuse_for(&self, d: Duration) {
        *self.state.refuse_until.lock().unwrap() = Some(Instant::now() + d);
    }

    /// Connections cut after a `COMMIT` so far.
    pub fn cuts(&self) -> usize {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// Connections frozen so far.
    pub fn freezes(&self) -> usize {
        self.state.freezes.load(Ordering::SeqCst)
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.state.conns.lock().unwrap().len()
    }

    /// Freezes every connection open now: nothing more moves either way.
    pub fn freeze_all(&self) {
        for c in self.state.conns.lock().unwrap().iter() {
            c.frozen.store(true, Ordering::SeqCst);
        }
    }

    /// Closes every connection made so far (frozen ones included).
    pub fn close_all(&self) {
        for s in self.state.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Waits up to `limit` for `f` to hold.
    pub fn wait_for(&self, limit: Duration, f: impl Fn(&Self) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// One connection's state shared by its two directions.
#[derive(Default)]
struct Conn {
    /// The server's next bytes answer an armed COMMIT: drop them and close.
    cutting: AtomicBool,
    /// Nothing moves any more, either way.
    frozen: AtomicBool,
}

fn serve(mut client: TcpStream, mut server: TcpStream, st: Arc<State>) {
    {
        let mut sockets = st.sockets.lock().unwrap();
        sockets.push(client.try_clone().unwrap());
        sockets.push(server.try_clone().unwrap());
    }
    let conn = Arc::new(Conn::default());
    st.conns.lock().unwrap().push(conn.clone());
    let (mut from_server, mut to_client) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    let (c, s) = (conn.clone(), st.clone());
    let (close_client, close_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from_server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if c.cutting.load(Ordering::SeqCst) {
                // The server answered the COMMIT: the reply is lost with the connection.
                s.cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if c.frozen.load(Ordering::SeqCst) {
                // Swallowed: a silent host neither sends nor reads.
                continue;
            }
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        if !c.frozen.load(Ordering::SeqCst) {
            let _ = close_client.shutdown(Shutdown::Both);
            let _ = close_server.shutdown(Shutdown::Both);
        }
    });
    // The client's side, message by message. First the startup message (after any
    // SSL or GSS encryption requests, which the server answers with one byte).
    loop {
        let Some(msg) = read_untyped(&mut client) else {
            return end(&client, &server);
        };
        if server.write_all(&msg).is_err() {
            return end(&client, &server);
        }
        let code = u32::from_be_bytes(msg[4..8].try_into().unwrap());
        if msg.len() != 8 || (code != 80877103 && code != 80877104) {
            break;
        }
    }
    loop {
        let Some(msg) = read_typed(&mut client) else {
            return end(&client, &server);
        };
        let query = (msg[0] == b'Q').then(|| String::from_utf8_lossy(&msg[5..]).to_string());
        let mut freeze = false;
        if let Some(q) = &query {
            let trimmed = q.trim_end_matches('\0').trim();
            if trimmed.eq_ignore_ascii_case("COMMIT") && st.cut_commit.swap(false, Ordering::SeqCst)
            {
                conn.cutting.store(true, Ordering::SeqCst);
            }
            let mut armed = st.freeze_on.lock().unwrap();
            if armed.as_deref().is_some_and(|t| q.contains(t)) {
                *armed = None;
                freeze = true;
            }
        }
        if conn.frozen.load(Ordering::SeqCst) {
            // Frozen by `freeze_all`: swallowed.
            continue;
        }
        if server.write_all(&msg).is_err() {
            return end(&client, &server);
        }
        if freeze {
            conn.frozen.store(true, Ordering::SeqCst);
            st.freezes.fetch_add(1, Ordering::SeqCst);
            // Read nothing more from the client; the sockets stay open until closed.
            return;
        }
    }
}

fn end(client: &TcpStream, server: &TcpStream) {
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

fn read_untyped(r: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).ok()?;
    let n = u32::from_be_bytes(len) as usize;
    let mut msg = len.to_vec();
    msg.resize(n.max(4), 0);
    r.read_exact(&mut msg[4..]).ok()?;
    Some(msg)
}

fn read_typed(r: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).ok()?;
    let n = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut msg = head.to_vec();
    msg.resize(1 + n.max(4), 0);
    r.read_exact(&mut msg[5..]).ok()?;
    Some(msg)
}
