//! Compression before sealing: none, zstd or snappy, with contexts reused per thread.
//!
//! Compression is skipped for values under [`Compression::min_size`] and whenever the
//! compressed form is not smaller; the codec actually used is recorded in each envelope.
//! Decompression runs only on authenticated data and is capped: the expected length is
//! read from the frame header and checked against the limit before any output buffer
//! is allocated, so a "compression bomb" costs nothing.

use std::cell::RefCell;

use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;

/// The codec of one value, as recorded in the envelope header (low nibble).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    None = 0,
    /// Zstandard frame with its content size in the header.
    Zstd = 1,
    /// Snappy raw block (its length prefix gives the decompressed size).
    Snappy = 2,
}

impl Codec {
    /// The codec with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::None),
            1 => Some(Self::Zstd),
            2 => Some(Self::Snappy),
            _ => None,
        }
    }

    /// Its name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zstd => "zstd",
            Self::Snappy => "snappy",
        }
    }
}

/// How a store compresses values before sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// The codec to try.
    pub codec: Codec,
    /// zstd level (ignored for other codecs). 1 by default: higher levels bought nothing
    /// on bot-auth values in our measurements.
    pub zstd_level: i32,
    /// Values shorter than this are stored uncompressed.
    pub min_size: usize,
}

/// snappy by default. zstd (level 1) shrinks bot auth state more (74% of its size left
/// against snappy's 82%, on the Baileys fixture), but decompressing a small zstd frame
/// rebuilds its entropy tables every time: a 1 KiB point get took 3.5 µs with zstd and
/// 2.0 µs with snappy (`cargo bench -p sealkv-benches --bench engine -- get-1KiB`).
impl Default for Compression {
    fn default() -> Self {
        Self {
            codec: Codec::Snappy,
            zstd_level: 1,
            min_size: 64,
        }
    }
}

impl Compression {
    /// No compression at all.
    pub const NONE: Self = Self {
        codec: Codec::None,
        zstd_level: 1,
        min_size: 0,
    };

    /// Compression with the given codec and default level and threshold.
    pub fn with_codec(codec: Codec) -> Self {
        Self {
            codec,
            ..Self::default()
        }
    }

    /// Appends `input`, compressed if that pays, to `out` and returns the codec used.
    ///
    /// `out` must already have room reserved (see [`Self::max_output`]) so that no
    /// reallocation leaves a plaintext copy behind.
    pub(crate) fn compress_into(
        &self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Codec, CryptoError> {
        if input.len() < self.min_size.max(1) || self.codec == Codec::None {
            out.extend_from_slice(input);
            return Ok(Codec::None);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let scratch = &mut *scratch;
            let result = match self.codec {
                Codec::Zstd => zstd_compress(self.zstd_level, input, &mut scratch.buf),
                Codec::Snappy => snappy_compress(&mut scratch.snappy, input, &mut scratch.buf),
                Codec::None => unreachable_codec(),
            };
            let used = match result {
                Ok(()) if scratch.buf.len() < input.len() => {
                    out.extend_from_slice(&scratch.buf);
                    self.codec
                }
                Ok(()) => {
                    out.extend_from_slice(input);
                    Codec::None
                }
                Err(e) => {
                    scratch.buf.zeroize();
                    return Err(e);
                }
            };
            // The scratch buffer held plaintext (compressed); wipe it before the next use.
            scratch.buf.zeroize();
            Ok(used)
        })
    }

    /// Upper bound on what [`Self::compress_into`] appends for `len` input bytes.
    pub(crate) fn max_output(len: usize) -> usize {
        len
    }
}

fn unreachable_codec() -> Result<(), CryptoError> {
    Err(CryptoError::Compression("no codec".into()))
}

struct Scratch {
    buf: Vec<u8>,
    snappy: snap::raw::Encoder,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch { buf: Vec::new(), snappy: snap::raw::Encoder::new() });
    static ZSTD_C: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static ZSTD_D: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static SNAPPY_D: RefCell<snap::raw::Decoder> = RefCell::new(snap::raw::Decoder::new());
}

fn zstd_compress(level: i32, input: &[u8], buf: &mut Vec<u8>) -> Result<(), CryptoError> {
    let err = |e: std::io::Error| CryptoError::Compression(e.to_string());
    ZSTD_C.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match &mut *cell {
            Some((l, c)) if *l == level => c,
            slot => {
                let c = zstd::bulk::Compressor::new(level).map_err(err)?;
                &mut slot.insert((level, c)).1
            }
        };
        buf.clear();
        buf.reserve(zstd::zstd_safe::compress_bound(input.len()));
        compressor.compress_to_buffer(input, buf).map_err(err)?;
        Ok(())
    })
}

fn snappy_compress(
    enc: &mut snap::raw::Encoder,
    input: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    buf.clear();
    buf.resize(snap::raw::max_compress_len(input.len()), 0);
    let n = enc
        .compress(input, buf)
        .map_err(|e| CryptoError::Compression(e.to_string()))?;
    buf.truncate(n);
    Ok(())
}

/// Decompresses authenticated `input` written with `codec`, refusing output over `limit`.
pub(crate) fn decompress(
    codec: Codec,
    input: &[u8],
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let too_large = |size: u64| CryptoError::TooLarge {
        size,
        limit: limit as u64,
    };
    match codec {
        Codec::None => {
            if input.len() > limit {
                return Err(too_large(input.len() as u64));
            }
            Ok(Zeroizing::new(input.to_vec()))
        }
        Codec::Zstd => {
            let size = match zstd::zstd_safe::get_frame_content_size(input) {
                Ok(Some(size)) => size,
                _ => return Err(CryptoError::Malformed("zstd frame without a content size")),
            };
            if size > limit as u64 {
                return Err(too_large(size));
            }
            let mut out = Zeroizing::new(Vec::with_capacity(size as usize));
            ZSTD_D.with(|cell| {
                let mut cell = cell.borrow_mut();
                let d = match &mut *cell {
                    Some(d) => d,
                    slot => slot.insert(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| CryptoError::Compression(e.to_string()))?,
                    ),
                };
                match d.decompress_to_buffer(input, &mut *out) {
                    Ok(n) if n as u64 == size => Ok(()),
                    _ => Err(CryptoError::Malformed(
                        "zstd frame does not decompress to its size",
                    )),
                }
            })?;
            Ok(out)
        }
        Codec::Snappy => {
            let size = snap::raw::decompress_len(input)
                .map_err(|_| CryptoError::Malformed("bad snappy length prefix"))?;
            if size > limit {
                return Err(too_large(size as u64));
            }
            let mut out = Zeroizing::new(vec![0u8; size]);
            SNAPPY_D.with(|d| match d.borrow_mut().decompress(input, &mut out) {
                Ok(n) if n == size => Ok(()),
                _ => Err(CryptoError::Malformed(
                    "snappy block does not decompress to its size",
                )),
            })?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: Compression, input: &[u8]) -> Codec {
        let mut out = Vec::with_capacity(Compression::max_output(input.len()));
        let codec = c.compress_into(input, &mut out).unwrap();
        assert!(out.len() <= input.len());
        let back = decompress(codec, &out, input.len()).unwrap();
        assert_eq!(&back[..], input);
        codec
    }

    #[test]
    fn compresses_when_it_pays_and_skips_otherwise() {
        let text = b"session-record ".repeat(100);
        assert_eq!(
            roundtrip(Compression::with_codec(Codec::Zstd), &text),
            Codec::Zstd
        );
        assert_eq!(
            roundtrip(Compression::with_codec(Codec::Snappy), &text),
            Codec::Snappy
        );
        // Tiny: below threshold.
        assert_eq!(
            roundtrip(Compression::with_codec(Codec::Zstd), b"tiny"),
            Codec::None
        );
        // Random: does not shrink.
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut rnd = vec![0u8; 4096];
        crate::random::fill_random(&mut rnd).unwrap();
        assert_eq!(
            roundtrip(Compression::with_codec(Codec::Zstd), &rnd),
            Codec::None
        );
        let _ = roundtrip(Compression::with_codec(Codec::Snappy), &noise);
        assert_eq!(roundtrip(Compression::NONE, &text), Codec::None);
    }

    #[test]
    fn levels_can_change_between_calls() {
        let text = b"abcabcabc".repeat(50);
        for level in [1, 3, 1, 9] {
            let c = Compression {
                zstd_level: level,
                ..Compression::with_codec(Codec::Zstd)
            };
            assert_eq!(roundtrip(c, &text), Codec::Zstd);
        }
    }

    #[test]
    fn bombs_are_refused_before_allocation() {
        let big = vec![0u8; 1 << 20];
        let z = zstd::bulk::compress(&big, 1).unwrap();
        assert!(matches!(
            decompress(Codec::Zstd, &z, 1000),
            Err(CryptoError::TooLarge {
                size: 1048576,
                limit: 1000
            })
        ));
        let s = snap::raw::Encoder::new().compress_vec(&big).unwrap();
        assert!(matches!(
            decompress(Codec::Snappy, &s, 1000),
            Err(CryptoError::TooLarge { .. })
        ));
        assert!(matches!(
            decompress(Codec::None, &big, 1000),
            Err(CryptoError::TooLarge { .. })
        ));
        // A zstd frame that lies about its size, or garbage, is an error, not a panic.
        assert!(decompress(Codec::Zstd, b"\x28\xb5\x2f\xfd garbage", 1000).is_err());
        assert!(decompress(Codec::Snappy, b"\xff\xff\xff\xff\x0f", 1000).is_err());
    }
}
