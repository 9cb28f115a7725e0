//! A GGUF file from bytes, and if it opens, everything the loader reads from it: every tensor
//! under its transformers name (dequantised), the model config and the tokenizer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgmoe::model::gguf::{GgufFile, GgufSource};
use wgmoe::model::source::TensorSource;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return;
    };
    let Ok(src) = GgufSource::from_file(file) else {
        return;
    };
    for name in src.names() {
        let _ = src.get(&name).map(|t| t.to_f32());
    }
    let _ = src.config();
    let _ = src.tokenizer_parts();
});
