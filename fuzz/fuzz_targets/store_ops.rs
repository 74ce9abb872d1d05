//! Operation sequences with injected I/O errors against a model: see
//! `sealkv_engine::internal::fuzz_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealkv_engine::internal::fuzz_ops(data));
