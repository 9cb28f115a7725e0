//! `config.json` text into a model description.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wgmoe::model::config::ModelConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ModelConfig::from_json(text, "fuzz/config.json");
    }
});
