//! Test-only package: see `tests/fork.rs`. It exists so that the one test that needs
//! `unsafe` (a real `fork(2)`) lives outside the crates that forbid it.
#![cfg_attr(not(test), forbid(unsafe_code))]
