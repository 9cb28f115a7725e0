//! The tokenizer a GGUF file's vocabulary describes (`tokenizer.ggml.*`), rebuilt as a Hugging Face
//! `tokenizers` byte-level BPE: GPT-2's byte alphabet, llama.cpp's pre-tokenizer regexes, the
//! special and user-defined tokens, the bos / eos tokens and the chat template.

use super::format::{GgufFile, Value};
use crate::error::{Error, Result};
use serde_json::{json, Map, Value as Json};

/// GPT-2's byte-to-unicode table (`bytes_to_unicode`): printable bytes map to themselves, the rest
/// to U+0100 onwards.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer for `tokenizer.ggml.pre` (llama.cpp's `llama_vocab_pre_type` regexes).
fn pre_tokenizer(pre: Option<&str>) -> Json {
    let split = |re: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]})
    };
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    match pre.unwrap_or("default") {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "dbrx"
        | "smaug-bpe" => split(LLAMA3_SPLIT),
        "tekken" => split(TEKKEN_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "megrez" => split(QWEN2_SPLIT),
        "gpt-4o" | "llama4" | "minimax-m2" => split(GPT4O_SPLIT),
        // llama.cpp splits digits one by one before the GPT-2 regex for these (SmolLM2's own
        // tokenizer.json does the same with `Digits(individual_digits)` + `ByteLevel`).
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva-7b" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level],
        }),
        _ => byte_level,
    }
}

/// `(tokenizer, chat template, bos token, eos tokens, eos ids)`.
pub type TokenizerParts = (
    tokenizers::Tokenizer,
    Option<String>,
    Option<String>,
    Vec<String>,
    Vec<u32>,
);

/// Build the tokenizer a GGUF's metadata describes (byte-level BPE, `tokenizer.ggml.model == "gpt2"`).
pub fn tokenizer_parts(f: &GgufFile) -> Result<TokenizerParts> {
    let name = f.name();
    let model = f.opt_str("tokenizer.ggml.model").unwrap_or("(none)");
    if model != "gpt2" {
        return Err(Error::unsupported(format!(
            "{name}: tokenizer.ggml.model {model:?} is not supported; supported: gpt2 (byte-level BPE)"
        )));
    }
    let tokens: Vec<&str> = f
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::bad_model(&f.path, "tokenizer.ggml.tokens is missing"))?
        .iter()
        .map(|v| v.as_str().unwrap_or(""))
        .collect();
    let types: Vec<i64> = f
        .get("tokenizer.ggml.token_type")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.as_i64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let merges = f
        .get("tokenizer.ggml.merges")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::bad_model(
                &f.path,
                "tokenizer.ggml.merges is missing (needed for a gpt2 tokenizer)",
            )
        })?;

    let table = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        let spelled = if in_alphabet(t) {
            t.to_string()
        } else {
            t.bytes().map(|b| table[b as usize]).collect()
        };
        vocab.insert(spelled, json!(i));
    }
    let merges: Vec<Json> = merges
        .iter()
        .filter_map(|m| m.as_str())
        .filter_map(|m| m.split_once(' ').map(|(a, b)| json!([a, b])))
        .collect();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match types.get(i) {
            // CONTROL: special; a non-byte-level spelling is a llama.cpp mislabel (transformers skips it).
            Some(3) if in_alphabet(t) => added.push(json!({"id": i, "content": t, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})),
            // USER_DEFINED: matched whole in text, not special.
            Some(4) => added.push(json!({"id": i, "content": t, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": false})),
            _ => {}
        }
    }
    let token_of = |key: &str| -> Option<(u32, String)> {
        let id = f.get(key)?.as_u64()? as usize;
        tokens.get(id).map(|t| (id as u32, t.to_string()))
    };
    let bos = token_of("tokenizer.ggml.bos_token_id");
    let add_bos = f
        .get("tokenizer.ggml.add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let post = match (&bos, add_bos) {
        (Some((id, t)), true) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": t, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {t.as_str(): {"id": t, "ids": [id], "tokens": [t]}},
        }),
        _ => Json::Null,
    };
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(f.opt_str("tokenizer.ggml.pre")),
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    let text = serde_json::to_string(&spec).map_err(|e| Error::bad_model(&f.path, format!("tokenizer: {e}")))?;
    let tok: tokenizers::Tokenizer = text.parse().map_err(|e| {
        Error::bad_model(
            &f.path,
            format!("could not build the tokenizer from the GGUF vocabulary: {e}"),
        )
    })?;

    let mut eos_ids = Vec::new();
    let mut eos = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some((id, t)) = token_of(key) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
                eos.push(t);
            }
        }
    }
    let template = f.opt_str("tokenizer.chat_template").map(str::to_string);
    Ok((tok, template, bos.map(|b| b.1), eos, eos_ids))
}
