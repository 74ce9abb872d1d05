//! Arbitrary bytes as a sealed value: see `sealkv_crypto::internal::fuzz_envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealkv_crypto::internal::fuzz_envelope(data));
