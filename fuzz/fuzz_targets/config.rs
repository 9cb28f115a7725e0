//! See `fuzz/entry.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wgmoe_fuzz::config(data));
