//! The one source of randomness: the operating system's generator.
//!
//! Every nonce, data key, name key, salt and database id is drawn here, straight from
//! the kernel (`getrandom(2)` on Linux, `getentropy` on macOS, `ProcessPrng` on
//! Windows). A user-space generator such as rand 0.9's `ThreadRng` keeps its state in
//! the process; after `fork()` the parent and the child continue from the same state
//! and draw the same nonces, which under one data key means keystream reuse and
//! forgeable Poly1305/GHASH tags. The kernel's generator has no such state to copy.
//! A syscall per seal costs well under a microsecond; writes are fsync-bound (the
//! crypto bench's `seal-1KiB` measures seal with it).

use crate::CryptoError;

/// Fills `buf` from the operating system's generator.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|_| CryptoError::Random)
}
