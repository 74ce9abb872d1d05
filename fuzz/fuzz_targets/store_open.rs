//! A mutated store file: see `sealkv_engine::internal::fuzz_open`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealkv_engine::internal::fuzz_open(data));
