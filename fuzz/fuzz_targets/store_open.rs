//! See `sealkv_engine::internal::fuzz_open`.
//!
//! redb 4.5 panics on some damaged pages; sealkv contains those panics and reports the
//! file as damaged. libFuzzer's hook aborts on every panic, caught or not, so panics
//! raised inside redb are let through to sealkv's handler; any other panic is a crash.
#![no_main]

use std::sync::Once;

static HOOK: Once = Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("/redb-")) {
                abort_hook(info);
            }
        }));
    });
    sealkv_engine::internal::fuzz_open(data);
});
