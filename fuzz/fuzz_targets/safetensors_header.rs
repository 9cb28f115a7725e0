//! The safetensors header reader on a whole file's bytes; and, for an input that starts with
//! `{`, on a file made of it: JSON up to the first NUL as the header (the length prefix written
//! for it, so mutations of the JSON keep a valid prefix), the rest as the data.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgmoe::model::safetensors::read_header;

fuzz_target!(|data: &[u8]| {
    let _ = read_header(data, "fuzz.safetensors");
    if data.first() == Some(&b'{') {
        let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        let mut file = (cut as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&data[..cut]);
        file.extend_from_slice(data.get(cut + 1..).unwrap_or(&[]));
        let _ = read_header(&file, "fuzz.safetensors");
    }
});
