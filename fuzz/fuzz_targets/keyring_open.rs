//! Arbitrary bytes as a keyring record: see `sealkv_crypto::internal::fuzz_keyring`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealkv_crypto::internal::fuzz_keyring(data));
