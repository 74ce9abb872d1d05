//! See `sealkv_engine::internal::fuzz_concurrent`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sealkv_engine::internal::fuzz_concurrent(data);
});
