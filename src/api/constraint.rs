//! Constrained decoding: the reply is guaranteed to match a JSON schema, a Lark grammar or a
//! regular expression. Before each step a grammar automaton ([llguidance]) turns what was
//! generated so far into a mask of the tokens that can come next; the GPU sets every other logit
//! to -inf before sampling, so the sampler (greedy or not) only ever picks allowed tokens.

use crate::error::{Error, Result};
use crate::generate::TokenConstraint;
use crate::tokenizer::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use std::sync::Arc;

/// What a constrained reply must match. Pass it in [`crate::GenerateOptions::constraint`].
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    grammar: Grammar,
}

#[derive(Clone, Debug, PartialEq)]
enum Grammar {
    JsonSchema(Value),
    Lark(String),
    Regex(String),
}

impl Constraint {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    pub fn json_object() -> Self {
        Self::json_schema(json!({"type": "object"}))
    }

    /// A JSON value that validates against `schema` (draft 2020-12; `$ref`, `anyOf`, `enum`,
    /// `const`, string formats and lengths, number bounds, `required`, ...). The JSON is written
    /// as Python's `json.dumps` writes it (`", "` and `": "` separators, no newlines) unless the
    /// schema's `x-guidance` object says otherwise.
    pub fn json_schema(schema: Value) -> Self {
        Self {
            grammar: Grammar::JsonSchema(schema),
        }
    }

    /// A grammar in llguidance's Lark dialect; it may embed JSON schemas with `%json { ... }`.
    pub fn lark(grammar: impl Into<String>) -> Self {
        Self {
            grammar: Grammar::Lark(grammar.into()),
        }
    }

    /// Text matching a regular expression (Rust `regex` syntax, anchored at both ends).
    pub fn regex(pattern: impl Into<String>) -> Self {
        Self {
            grammar: Grammar::Regex(pattern.into()),
        }
    }

    fn top_level(&self) -> Result<TopLevelGrammar> {
        Ok(match &self.grammar {
            Grammar::JsonSchema(schema) => {
                let Value::Object(fields) = schema else {
                    return Err(Error::bad_input("a JSON schema must be a JSON object"));
                };
                let mut fields = fields.clone();
                // Small models given free whitespace tend to spend their tokens on it.
                fields.entry("x-guidance").or_insert_with(
                    || json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
                );
                TopLevelGrammar::from_json_schema(Value::Object(fields))
            }
            Grammar::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            Grammar::Regex(r) => TopLevelGrammar::from_regex(r),
        })
    }
}

/// The model's tokenizer as the grammar engine sees it: every token's bytes in a trie. Built once
/// per model, on the first constrained generation.
pub(crate) struct Grammars {
    factory: ParserFactory,
    eos: Vec<u32>,
    words: usize,
}

impl Grammars {
    /// `vocab`: the model's logit rows, which may exceed the tokenizer's ids (padding rows never
    /// get a bit). `eos`: the tokens a complete grammar allows (the generation's stop tokens).
    pub(crate) fn new(tokenizer: &Tokenizer, vocab: usize, eos: &[u32]) -> Result<Self> {
        let bytes = token_bytes(tokenizer, vocab)?;
        let first_eos = *eos
            .first()
            .ok_or_else(|| Error::unsupported("constrained decoding: the model has no end-of-sequence token"))?;
        let mut info = TokRxInfo::new(bytes.len() as u32, first_eos);
        info.tok_bos = tokenizer.bos_id();
        let mut trie = TokTrie::from(&info, &bytes);
        if eos.len() > 1 {
            trie = trie.with_eos_tokens(eos);
        }
        let env: TokEnv = Arc::new(Env {
            trie,
            tokenizer: tokenizer.clone(),
        });
        let factory =
            ParserFactory::new_simple(&env).map_err(|e| Error::unsupported(format!("constrained decoding: {e}")))?;
        Ok(Self {
            factory,
            eos: eos.to_vec(),
            words: vocab.div_ceil(32),
        })
    }

    /// A fresh automaton for one generation. A malformed schema or grammar is `BadInput`.
    pub(crate) fn start(&self, c: &Constraint) -> Result<Box<dyn TokenConstraint>> {
        let bad = |e: String| Error::bad_input(format!("the constraint cannot be used: {e}"));
        let parser = self
            .factory
            .create_parser(c.top_level()?)
            .map_err(|e| bad(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(bad(e));
        }
        Ok(Box::new(Active {
            matcher,
            eos: self.eos.clone(),
            words: self.words,
        }))
    }
}

struct Active {
    matcher: Matcher,
    eos: Vec<u32>,
    words: usize,
}

impl TokenConstraint for Active {
    fn mask(&mut self) -> Result<Vec<u32>> {
        if self.matcher.is_stopped() {
            let mut bits = vec![0u32; self.words];
            for &t in &self.eos {
                if let Some(w) = bits.get_mut(t as usize / 32) {
                    *w |= 1 << (t % 32);
                }
            }
            return Ok(bits);
        }
        let vob = self
            .matcher
            .compute_mask()
            .map_err(|e| Error::Device(format!("constrained decoding failed: {e}")))?;
        let mut bits = vob.as_slice().to_vec();
        bits.resize(self.words, 0);
        Ok(bits)
    }

    fn accept(&mut self, token: u32) -> Result<()> {
        if self.matcher.is_stopped() {
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(|e| {
            Error::Device(format!(
                "constrained decoding: the sampled token {token} broke the grammar: {e}"
            ))
        })
    }
}

struct Env {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie
            .tokenize_with_greedy_fallback(s, |s| self.tokenizer.encode(s, false).unwrap_or_default())
    }
}

/// Every token's bytes, as the grammar engine matches them: byte-level BPE tokens through GPT-2's
/// byte-to-character map, byte-fallback (SentencePiece) tokens with `<0xNN>` as one byte and `▁`
/// as a space, special tokens behind the trie's special marker (never matched by text).
fn token_bytes(tokenizer: &Tokenizer, vocab: usize) -> Result<Vec<Vec<u8>>> {
    use tokenizers::DecoderWrapper;
    let inner = tokenizer.inner();
    fn kind(d: &DecoderWrapper, level: &mut bool, fallback: &mut bool) {
        match d {
            DecoderWrapper::ByteLevel(_) => *level = true,
            DecoderWrapper::ByteFallback(_) => *fallback = true,
            DecoderWrapper::Sequence(s) => s.get_decoders().iter().for_each(|d| kind(d, level, fallback)),
            _ => {}
        }
    }
    let (mut level, mut fallback) = (false, false);
    if let Some(d) = inner.get_decoder() {
        kind(d, &mut level, &mut fallback);
    }
    if !level && !fallback {
        return Err(Error::unsupported(
            "constrained decoding needs a byte-level or byte-fallback tokenizer",
        ));
    }
    let char_to_byte: std::collections::HashMap<char, u8> = byte_level_chars();
    let specials: std::collections::HashSet<u32> = inner
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    let n = vocab.max(inner.get_vocab_size(true));
    let mut out = Vec::with_capacity(n);
    for id in 0..n as u32 {
        let Some(name) = inner.id_to_token(id) else {
            // Rows past the tokenizer's ids: never allowed by text.
            let mut b = format!(".<[{id}]>").into_bytes();
            b[0] = TokTrie::SPECIAL_TOKEN_MARKER;
            out.push(b);
            continue;
        };
        let bytes = if specials.contains(&id) {
            let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            b.extend(name.as_bytes());
            b
        } else if inner.get_added_tokens_decoder().get(&id).is_some() {
            name.into_bytes()
        } else if level {
            name.chars()
                .map(|c| char_to_byte.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .unwrap_or_default()
        } else if name.len() == 6 && name.starts_with("<0x") && name.ends_with('>') {
            u8::from_str_radix(&name[3..5], 16).map(|b| vec![b]).unwrap_or_default()
        } else {
            name.replace('\u{2581}', " ").into_bytes()
        };
        out.push(bytes);
    }
    Ok(out)
}

/// GPT-2's map from the printable characters byte-level BPE writes back to the bytes they stand
/// for.
fn byte_level_chars() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                (b as char, b)
            } else {
                let c = char::from_u32(next).unwrap_or('\0');
                next += 1;
                (c, b)
            }
        })
        .collect()
}
