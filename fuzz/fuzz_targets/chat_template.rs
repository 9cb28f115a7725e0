//! See `fuzz/entry.rs`. Rendering runs under the library's last-resort guard, which turns a panic
//! inside minijinja into an error: the default panic hook is restored (libfuzzer-sys's would abort
//! on it first), so such a panic counts as the error it is for an app, and only a panic that
//! escapes the library, an abort or a hang is a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let _ = wgmoe_fuzz::chat_template(data);
});
