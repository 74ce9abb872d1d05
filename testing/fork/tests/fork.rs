//! A forked child must never seal with the nonces its parent will use.
//!
//! rand 0.9's `ThreadRng` keeps its state in the process and does not reseed after
//! `fork()`: with it, a parent and a child that both seal after the fork drew the same
//! nonce, so the same plaintext gave byte-identical envelopes (keystream reuse and
//! forgeable tags under one data key). sealkv draws every nonce from the operating
//! system, which this test checks with a real fork. It runs without libtest's harness,
//! in a process with one thread, where forking is sound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use sealkv_crypto::{Algorithm, Compression, Context, Keyring, envelope, fill_random};

/// Runs `child` in a forked process and returns what it wrote.
fn in_child(child: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: this process has one thread (no libtest harness), so the child starts
    // from a consistent copy of it; the child exits with _exit and never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let out = child();
        // SAFETY: fds[1] is the pipe's write end, owned by this process from here on.
        let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let ok = w.write_all(&out).is_ok();
        drop(w);
        // SAFETY: ends the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // SAFETY: fds[1] is ours and no longer needed in the parent.
    unsafe { libc::close(fds[1]) };
    // SAFETY: fds[0] is the pipe's read end, owned by the parent from here on.
    let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
    got
}

fn main() {
    let mut passed = 0;
    for alg in [Algorithm::XChaCha20Poly1305, Algorithm::Aes256Gcm] {
        let ring = Keyring::new(alg, 0).unwrap();
        let ctx = Context {
            db_id: &[3; 16],
            namespace: b"session",
            key: b"4915550001.0",
        };
        let plain = b"the same plaintext on both sides of the fork";
        // Warm whatever generator the seal path uses, as a running store would have.
        envelope::seal(&ring, &Compression::NONE, &ctx, plain).unwrap();

        let from_child =
            in_child(|| envelope::seal(&ring, &Compression::NONE, &ctx, plain).unwrap());
        let from_parent = envelope::seal(&ring, &Compression::NONE, &ctx, plain).unwrap();
        assert_eq!(from_child.len(), from_parent.len());
        assert_ne!(
            from_child,
            from_parent,
            "{}: parent and child sealed byte-identical envelopes after fork",
            alg.name()
        );
        // Both still open: the child sealed a real envelope under the same key.
        assert_eq!(
            &envelope::open(&ring, &ctx, &from_child, 1 << 10).unwrap()[..],
            plain
        );
        passed += 1;
    }
    // The raw draw as well: 32 bytes in the child and the parent differ.
    let child = in_child(|| {
        let mut b = vec![0u8; 32];
        fill_random(&mut b).unwrap();
        b
    });
    let mut parent = vec![0u8; 32];
    fill_random(&mut parent).unwrap();
    assert_ne!(child, parent);
    passed += 1;
    println!("{passed} passed, 0 failed");
}
