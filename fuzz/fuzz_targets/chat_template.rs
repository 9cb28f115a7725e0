//! Chat-template rendering through the library's `Tokenizer`: the input is a template, then
//! NUL-separated message contents (system, user, assistant, user, ...).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use wgmoe::tokenizer::{Message, Tokenizer};

/// A two-token word-level tokenizer: the template is what is fuzzed, not the vocabulary.
fn inner() -> &'static tokenizers::Tokenizer {
    static TOK: OnceLock<tokenizers::Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":null,"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"<unk>":0,"<s>":1,"</s>":2},"unk_token":"<unk>"}}"#;
        json.parse().expect("the fuzz target's tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let template = parts.next().unwrap_or_default().to_string();
    let roles = ["system", "user", "assistant", "user"];
    let messages: Vec<Message> = parts
        .enumerate()
        .map(|(i, c)| Message::new(roles[i % roles.len()], c))
        .collect();
    let tok = Tokenizer::from_parts(
        inner().clone(),
        Some(template),
        Some("<s>".into()),
        vec!["</s>".into()],
        vec![],
    );
    let _ = tok.apply_chat_template(&messages, true);
});
