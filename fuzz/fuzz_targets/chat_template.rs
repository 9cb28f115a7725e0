//! See `fuzz/entry.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = wgmoe_fuzz::chat_template(data);
});
