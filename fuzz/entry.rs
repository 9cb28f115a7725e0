//! The fuzz targets' entry points, one per target: the fuzz crate's library, also included by the
//! regression test that replays saved crash inputs (`kernels-tests/fuzz_regressions.rs`). Each
//! must end in a value or an error for every input.

use wgmoe::internals::model::config::ModelConfig;
use wgmoe::internals::model::gguf::{GgufFile, GgufSource};
use wgmoe::internals::model::safetensors::read_header;
use wgmoe::internals::model::source::TensorSource;
use wgmoe::internals::tokenizer::{Message, Tokenizer};

/// A GGUF file from bytes, and if it opens, everything the loader reads from it: every tensor
/// under its transformers name (dequantised), the model config and the tokenizer.
pub fn gguf(data: &[u8]) {
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
}

/// The safetensors header reader on a whole file's bytes; and, for an input that starts with
/// `{`, on a file made of it: JSON up to the first NUL as the header (the length prefix written
/// for it, so mutations of the JSON keep a valid prefix), the rest as the data.
pub fn safetensors_header(data: &[u8]) {
    let _ = read_header(data, "fuzz.safetensors");
    if data.first() == Some(&b'{') {
        let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        let mut file = (cut as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&data[..cut]);
        file.extend_from_slice(data.get(cut + 1..).unwrap_or(&[]));
        let _ = read_header(&file, "fuzz.safetensors");
    }
}

/// `config.json` text into a model description.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ModelConfig::from_json(text, "fuzz/config.json");
    }
}

/// Chat-template rendering through the library's `Tokenizer`: the input is a template, then
/// NUL-separated message contents (system, user, assistant, user, ...). The vocabulary is two
/// words: the template is what is fuzzed.
pub fn chat_template(data: &[u8]) -> wgmoe::Result<String> {
    static TOK: std::sync::OnceLock<tokenizers::Tokenizer> = std::sync::OnceLock::new();
    let inner = TOK.get_or_init(|| {
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":null,"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"<unk>":0,"<s>":1,"</s>":2},"unk_token":"<unk>"}}"#;
        json.parse().expect("the fuzz target's tokenizer")
    });
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let template = parts.next().unwrap_or_default().to_string();
    let roles = ["system", "user", "assistant", "user"];
    let messages: Vec<Message> = parts
        .enumerate()
        .map(|(i, c)| Message::new(roles[i % roles.len()], c))
        .collect();
    let tok = Tokenizer::from_parts(
        inner.clone(),
        Some(template),
        Some("<s>".into()),
        vec!["</s>".into()],
        vec![],
    );
    tok.apply_chat_template(&messages, true)
}
