//! The owner socket's wire format: length-prefixed frames of plain binary fields.
//!
//! A frame is a `u32` little-endian length, then that many bytes: a one-byte tag and
//! its fields. Integers are little-endian; byte strings are a `u32` length then the
//! bytes; an optional byte string is a `0`/`1` byte then the string. Rows cross the
//! socket as they lie in the file: sealed envelopes under keyed tags.

use std::io::{BufRead, Write};
use std::ops::Bound;

use crate::error::{Error, Result};
use crate::rowstore::Table;

/// The protocol version in the owner's hello; a client of another version is refused
/// by the client itself (it cannot read the rest).
/// Version 2 added `RELEASE`.
pub(crate) const VERSION: u8 = 2;

/// Largest frame either side accepts: well above the largest value (16 MiB by default;
/// a store may allow more, up to this).
pub(crate) const MAX_FRAME: usize = 1 << 30;

// Client requests. Reads carry a "fresh view" byte outside a write transaction.
pub(crate) const GET: u8 = 1;
pub(crate) const GET_MANY: u8 = 2;
pub(crate) const SCAN: u8 = 3;
pub(crate) const LEN: u8 = 4;
pub(crate) const IS_EMPTY: u8 = 5;
/// Ends a read view: the owner drops its snapshot (a redb read transaction, which an
/// idle connection would otherwise hold, keeping every page later commits free from
/// being reused). Not answered.
pub(crate) const RELEASE: u8 = 6;
pub(crate) const BEGIN: u8 = 0x10;
pub(crate) const PUT: u8 = 0x11;
pub(crate) const DELETE: u8 = 0x12;
pub(crate) const REPLACE: u8 = 0x13;
pub(crate) const REMOVE: u8 = 0x14;
pub(crate) const PUT_IF_ABSENT: u8 = 0x15;
pub(crate) const DELETE_RANGE: u8 = 0x16;
pub(crate) const COMMIT: u8 = 0x18;
pub(crate) const ABORT: u8 = 0x19;

// Replies.
pub(crate) const OK: u8 = 0x80;
pub(crate) const ERR: u8 = 0x81;

/// An owner-side error as it crosses the socket.
pub(crate) mod err {
    pub(crate) const OTHER: u8 = 0;
    pub(crate) const CORRUPT: u8 = 1;
    pub(crate) const READ_ONLY: u8 = 2;
    pub(crate) const POISONED: u8 = 3;
    pub(crate) const IO: u8 = 4;
    pub(crate) const REFUSED: u8 = 6;
}

/// A frame being built.
#[derive(Default)]
pub(crate) struct Enc(pub(crate) Vec<u8>);

impl Enc {
    pub(crate) fn new(tag: u8) -> Self {
        Self(vec![tag])
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        // Frames are capped far below 4 GiB, so every length fits.
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    pub(crate) fn opt(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(v) => self.u8(1).bytes(v),
        }
    }
    pub(crate) fn table(&mut self, t: Table) -> &mut Self {
        self.u8(match t {
            Table::Data => 0,
            Table::Meta => 1,
            Table::Expiry => 2,
        })
    }
    pub(crate) fn bound(&mut self, b: Bound<&[u8]>) -> &mut Self {
        match b {
            Bound::Unbounded => self.u8(0),
            Bound::Included(k) => self.u8(1).bytes(k),
            Bound::Excluded(k) => self.u8(2).bytes(k),
        }
    }
}

/// A frame being read.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
}

fn malformed() -> Error {
    Error::Owner {
        what: "a malformed message on the owner socket".into(),
        transient: false,
    }
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(malformed());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn opt(&mut self) -> Result<Option<&'a [u8]>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes()?)),
            _ => Err(malformed()),
        }
    }
    pub(crate) fn table(&mut self) -> Result<Table> {
        match self.u8()? {
            0 => Ok(Table::Data),
            1 => Ok(Table::Meta),
            2 => Ok(Table::Expiry),
            _ => Err(malformed()),
        }
    }
    pub(crate) fn bound(&mut self) -> Result<Bound<&'a [u8]>> {
        match self.u8()? {
            0 => Ok(Bound::Unbounded),
            1 => Ok(Bound::Included(self.bytes()?)),
            2 => Ok(Bound::Excluded(self.bytes()?)),
            _ => Err(malformed()),
        }
    }
    pub(crate) fn done(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed())
        }
    }
}

/// The connection to the other side was lost (or never made): a transient failure,
/// after which the client finds the owner again.
pub(crate) fn lost(e: std::io::Error) -> Error {
    Error::Owner {
        what: format!("the connection to the store's owner process was lost: {e}"),
        transient: true,
    }
}

/// Writes one frame (buffered: the caller flushes before it waits for a reply).
pub(crate) fn send(out: &mut impl Write, frame: &Enc) -> Result<()> {
    if frame.0.len() > MAX_FRAME {
        return Err(Error::Owner {
            what: "a message too large for the owner socket".into(),
            transient: false,
        });
    }
    out.write_all(&(frame.0.len() as u32).to_le_bytes())
        .and_then(|()| out.write_all(&frame.0))
        .map_err(lost)
}

/// Reads one frame into `buf` (replacing what it held).
pub(crate) fn recv(input: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<()> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(lost)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME || len == 0 {
        return Err(malformed());
    }
    buf.clear();
    buf.resize(len, 0);
    input.read_exact(buf).map_err(lost)
}

/// Encodes an owner-side error for the socket.
pub(crate) fn error_frame(e: &Error) -> Enc {
    let (kind, message) = match e {
        Error::Corrupt(what) => (err::CORRUPT, what.clone()),
        Error::ReadOnly => (err::READ_ONLY, String::new()),
        Error::Poisoned => (err::POISONED, String::new()),
        Error::Io(_) | Error::Storage(_) => (err::IO, e.to_string()),
        other => (err::OTHER, other.to_string()),
    };
    let mut f = Enc::new(ERR);
    f.u8(kind).bytes(message.as_bytes());
    f
}

/// Reads an error frame's fields (after its tag) back into an error.
pub(crate) fn error_from(d: &mut Dec<'_>) -> Error {
    let kind = d.u8().unwrap_or(err::OTHER);
    let message = d
        .bytes()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    match kind {
        err::CORRUPT => Error::Corrupt(message),
        err::READ_ONLY => Error::ReadOnly,
        err::POISONED => Error::Poisoned,
        err::IO => Error::Io(std::io::Error::other(format!(
            "in the owner process: {message}"
        ))),
        err::REFUSED => Error::Owner {
            what: "the store's owner process refused this process: it could not prove it \
                   holds the store's key"
                .into(),
            transient: false,
        },
        _ => Error::Owner {
            what: format!("the owner process failed: {message}"),
            transient: false,
        },
    }
}
