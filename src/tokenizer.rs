//! Tokenizer and chat templates: Hugging Face `tokenizers` plus what `tokenizer_config.json` and
//! `generation_config.json` add (chat template, special tokens, end-of-sequence ids), with the chat
//! template rendered by minijinja the way transformers renders it with jinja2.
//!
//! Semantics follow transformers 5:
//! - `encode(text, add_special)` is `tokenizer(text, add_special_tokens=...)`: BOS/EOS come from
//!   `tokenizer.json`'s post-processor (transformers ignores `add_bos_token` in
//!   `tokenizer_config.json` when a `tokenizer.json` exists). Truncation and padding stored in
//!   `tokenizer.json` are switched off.
//! - The chat template comes from `chat_template.jinja` if present, else from
//!   `tokenizer_config.json`'s `chat_template` (a string, or a list of `{name, template}` of which
//!   the one named "default" is used). It sees `messages`, `tools` and `documents` (none),
//!   `add_generation_prompt`, the named special tokens (`bos_token`, `eos_token`, `pad_token`, ...,
//!   only those that are set), the functions `raise_exception` and `strftime_now`, a `tojson`
//!   filter like transformers' (Python `json.dumps`, no HTML escaping) and Python string, list and
//!   dict methods (minijinja-contrib pycompat). `trim_blocks` and `lstrip_blocks` are on,
//!   `keep_trailing_newline` off, and `None`/`True`/`False` print as Python prints them.
//! - The ids of a chat are `encode(apply_chat_template(..), false)`: the template writes its own
//!   special tokens (`apply_chat_template(..., tokenize=True)`).
//! - End-of-sequence ids: `generation_config.json`'s `eos_token_id` (an int or a list), then the id
//!   of `tokenizer_config.json`'s `eos_token`; `config.json`'s `eos_token_id` only when neither
//!   gives one.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use minijinja::value::{Kwargs, Value, ValueKind};

use crate::error::{Error, Result};
use crate::input;

/// One chat message: `role` is "system", "user", "assistant" (or "tool"), `content` its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
    /// A tool's result, for templates that render tool calls (Qwen3, Llama 3.1, ...).
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new("tool", content)
    }
}

/// A tokenizer with its chat template and special tokens. Cloning is cheap (the vocabulary is
/// shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    /// Where the tokenizer came from (a file or a description), for error messages.
    source: String,
    chat_template: Option<String>,
    /// Where the chat template came from, or why there is none.
    template_source: String,
    bos: Option<String>,
    bos_id: Option<u32>,
    eos: Vec<String>,
    eos_ids: Vec<u32>,
    /// Named special tokens the template sees (`bos_token`, `eos_token`, `pad_token`, ...).
    special_tokens: Vec<(String, String)>,
    add_bos_token: Option<bool>,
    clean_up_spaces: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("has_chat_template", &self.chat_template.is_some())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eos_ids", &self.eos_ids)
            .finish()
    }
}

const NAMED_SPECIAL_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

impl Tokenizer {
    /// Loads a Hugging Face tokenizer folder: `tokenizer.json` (required), `tokenizer_config.json`,
    /// `chat_template.jinja`, `generation_config.json` and `config.json` (all optional).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let Some(bytes) = input::read_regular_opt(&tok_path, input::LARGE_JSON_CAP, "tokenizer.json")? else {
            return Err(Error::bad_model(
                &tok_path,
                "not found. A model folder needs tokenizer.json (the Hugging Face tokenizers format) to tokenize \
                 text",
            ));
        };
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            Error::bad_model(
                &tok_path,
                format!("not a valid tokenizer.json (truncated or from an unsupported tokenizers version?): {e}"),
            )
        })?;
        check_post_processor(&inner, &tok_path)?;

        let config_path = dir.join("tokenizer_config.json");
        let config = read_json_opt(&config_path, input::TOKENIZER_CONFIG_CAP)?;
        let config = config.as_ref().and_then(|c| c.as_object());

        // Named special tokens.
        let mut special = Vec::new();
        if let Some(c) = config {
            for name in NAMED_SPECIAL_TOKENS {
                if let Some(s) = c.get(name).and_then(token_content) {
                    special.push((name.to_string(), s));
                }
            }
        }
        let get_special = |name: &str| special.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let bos = get_special("bos_token");
        let eos: Vec<String> = get_special("eos_token").into_iter().collect();

        // Chat template: chat_template.jinja wins over tokenizer_config.json.
        let jinja_path = dir.join("chat_template.jinja");
        let jinja = input::read_text_opt(&jinja_path, input::CONFIG_CAP, "chat template")?;
        let (chat_template, template_source) = if let Some(t) = jinja {
            (Some(t), jinja_path.display().to_string())
        } else {
            match config.and_then(|c| c.get("chat_template")) {
                None | Some(serde_json::Value::Null) => (
                    None,
                    format!(
                        "{} has no chat_template and there is no {}",
                        config_path.display(),
                        jinja_path.display()
                    ),
                ),
                Some(v) => parse_template_entry(v, &config_path)?,
            }
        };

        let add_bos_token = config.and_then(|c| c.get("add_bos_token")).and_then(|v| v.as_bool());
        let clean_up_spaces = config
            .and_then(|c| c.get("clean_up_tokenization_spaces"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);

        // End-of-sequence ids.
        let gen_path = dir.join("generation_config.json");
        let mut eos_ids = match read_json_opt(&gen_path, input::CONFIG_CAP)? {
            Some(g) => id_list(g.get("eos_token_id"), &gen_path)?,
            None => Vec::new(),
        };
        let eos_from_config: Vec<u32> = eos.iter().filter_map(|t| inner.token_to_id(t)).collect();
        for id in eos_from_config {
            push_unique(&mut eos_ids, id);
        }
        if eos_ids.is_empty() {
            let model_config = dir.join("config.json");
            if let Some(c) = read_json_opt(&model_config, input::CONFIG_CAP)? {
                eos_ids = id_list(c.get("eos_token_id"), &model_config)?;
            }
        }

        let mut tok = Self::from_parts(inner, chat_template, bos, eos, eos_ids);
        tok.source = tok_path.display().to_string();
        tok.template_source = template_source;
        tok.special_tokens = special;
        tok.add_bos_token = add_bos_token;
        tok.clean_up_spaces = clean_up_spaces;
        Ok(tok)
    }

    /// Builds a tokenizer from parts (a GGUF vocabulary, a test): `bos`/`eos` are token strings
    /// (exposed to the chat template as `bos_token` and `eos_token`, the first eos), `eos_ids` the
    /// ids that end generation; the ids of the `eos` strings are added to them. BOS insertion is
    /// whatever `inner`'s post-processor does; see [`Tokenizer::set_add_special`] to set it.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        chat_template: Option<String>,
        bos: Option<String>,
        eos: Vec<String>,
        eos_ids: Vec<u32>,
    ) -> Self {
        let mut inner = inner;
        // transformers turns off truncation/padding stored in tokenizer.json; a prompt must never
        // be cut silently.
        let _ = inner.with_truncation(None);
        inner.with_padding(None);
        let bos_id = bos.as_deref().and_then(|b| inner.token_to_id(b));
        let mut ids = Vec::new();
        for id in eos_ids
            .into_iter()
            .chain(eos.iter().filter_map(|e| inner.token_to_id(e)))
        {
            push_unique(&mut ids, id);
        }
        let mut special = Vec::new();
        if let Some(b) = &bos {
            special.push(("bos_token".to_string(), b.clone()));
        }
        if let Some(e) = eos.first() {
            special.push(("eos_token".to_string(), e.clone()));
        }
        let template_source = if chat_template.is_some() {
            "the chat template given with the tokenizer".to_string()
        } else {
            "no chat template was given with the tokenizer".to_string()
        };
        Tokenizer {
            inner: Arc::new(inner),
            source: "tokenizer".to_string(),
            chat_template,
            template_source,
            bos,
            bos_id,
            eos,
            eos_ids: ids,
            special_tokens: special,
            add_bos_token: None,
            clean_up_spaces: false,
        }
    }

    /// The same tokenizer with another chat template (`None`: none), named `source` in errors.
    pub fn with_chat_template(mut self, template: Option<String>, source: impl Into<String>) -> Self {
        self.chat_template = template;
        self.template_source = source.into();
        self
    }

    /// Names where this tokenizer came from in error messages (e.g. "model.gguf").
    pub fn with_source(mut self, source: impl Into<String>, template_source: impl Into<String>) -> Self {
        self.source = source.into();
        self.template_source = template_source.into();
        self
    }

    /// Replaces the post-processor so that `encode(.., true)` adds BOS and/or EOS, as
    /// transformers' `update_post_processor` does (for tokenizers without one, e.g. from GGUF's
    /// `tokenizer.ggml.add_bos_token`). Errors if a requested token is not set or not in the vocabulary.
    pub fn set_add_special(&mut self, add_bos: bool, add_eos: bool) -> Result<()> {
        use tokenizers::processors::template::TemplateProcessing;
        let mut single = String::new();
        let mut pair_b = String::new();
        let mut specials: Vec<(String, u32)> = Vec::new();
        let lookup = |name: &str, tok: Option<&String>| -> Result<(String, u32)> {
            let t = tok.ok_or_else(|| {
                Error::bad_model(&self.source, format!("cannot add {name}: the tokenizer has no {name}"))
            })?;
            let id = self
                .inner
                .token_to_id(t)
                .ok_or_else(|| Error::bad_model(&self.source, format!("{name} {t:?} is not in the vocabulary")))?;
            Ok((t.clone(), id))
        };
        let bos = if add_bos {
            Some(lookup("bos_token", self.bos.as_ref())?)
        } else {
            None
        };
        let eos = if add_eos {
            Some(lookup("eos_token", self.eos.first())?)
        } else {
            None
        };
        if let Some((b, id)) = &bos {
            single.push_str(&format!("{b}:0 "));
            pair_b.push_str(&format!(" {b}:1"));
            specials.push((b.clone(), *id));
        }
        single.push_str("$A:0");
        pair_b.push_str(" $B:1");
        if let Some((e, id)) = &eos {
            single.push_str(&format!(" {e}:0"));
            pair_b.push_str(&format!(" {e}:1"));
            if !specials.iter().any(|(s, _)| s == e) {
                specials.push((e.clone(), *id));
            }
        }
        let pair = format!("{single}{pair_b}");
        let err = |e: String| Error::bad_model(&self.source, format!("cannot build the BOS/EOS template: {e}"));
        let processor = TemplateProcessing::builder()
            .try_single(single)
            .map_err(err)?
            .try_pair(pair)
            .map_err(err)?
            .special_tokens(specials)
            .build()
            .map_err(|e| err(e.to_string()))?;
        Arc::make_mut(&mut self.inner).with_post_processor(Some(processor));
        self.add_bos_token = Some(add_bos);
        Ok(())
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Text to ids, as `tokenizer.encode(text, add_special_tokens=add_special)` in Python.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        crate::error::guard(&format!("{}: encoding", self.source), || {
            let enc = self
                .inner
                .encode_fast(text, add_special)
                .map_err(|e| Error::bad_model(&self.source, format!("cannot encode the text: {e}")))?;
            Ok(enc.get_ids().to_vec())
        })
    }

    /// Ids to text, as `tokenizer.decode(ids, skip_special_tokens=skip_special)` in transformers.
    /// An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let text = self.raw_decode(ids, skip_special)?;
        Ok(if self.clean_up_spaces && !self.is_bpe() {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    fn raw_decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        crate::error::guard(&format!("{}: decoding", self.source), || {
            self.inner
                .decode(ids, skip_special)
                .map_err(|e| Error::bad_model(&self.source, format!("cannot decode ids: {e}")))
        })
    }

    /// Errors if any id has no token in the vocabulary (added tokens included).
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(Error::bad_input(format!(
                "token id {bad} is out of range for {} (vocabulary of {} tokens)",
                self.source,
                self.vocab_size()
            )));
        }
        Ok(())
    }

    fn is_bpe(&self) -> bool {
        matches!(self.inner.get_model(), tokenizers::ModelWrapper::BPE(_))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Ids that end generation (generation_config.json's, then the eos token's).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The eos token strings.
    pub fn eos_tokens(&self) -> &[String] {
        &self.eos
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_deref()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// `tokenizer_config.json`'s `add_bos_token` where present (informational: `encode` follows the
    /// post-processor, as transformers does when `tokenizer.json` exists).
    pub fn add_bos_token(&self) -> Option<bool> {
        self.add_bos_token
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders the chat template as transformers'
    /// `apply_chat_template(messages, add_generation_prompt=..., tokenize=False)`.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.apply_chat_template_with(messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// [`Tokenizer::apply_chat_template`] with extra template variables, like keyword arguments to
    /// transformers' `apply_chat_template` (e.g. `{"enable_thinking": false}` for Qwen3). They
    /// override the special tokens but not `messages`, `documents` or `add_generation_prompt`;
    /// `tools`, a list of tool definitions, is the template's `tools` (as transformers'
    /// `tools=` argument).
    pub fn apply_chat_template_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let Some(template) = self.chat_template.as_deref() else {
            return Err(Error::bad_input(format!(
                "{} has no chat template ({}); use a plain prompt instead of chat",
                self.source, self.template_source
            )));
        };
        // Budgets: a template that loops forever or renders without end is stopped with an error.
        let content: usize = messages.iter().map(|m| m.content.len() + m.role.len()).sum();
        let cap = TEMPLATE_OUTPUT_BASE + 4 * content;
        let render_err = |e: minijinja::Error| {
            let mut msg = match e.kind() {
                minijinja::ErrorKind::OutOfFuel => format!(
                    "the chat template from {} did not finish within {TEMPLATE_FUEL} steps (a loop that does \
                     not end?)",
                    self.template_source
                ),
                minijinja::ErrorKind::WriteFailure => format!(
                    "the chat template from {} rendered more than {cap} bytes for {content} bytes of messages",
                    self.template_source
                ),
                _ => format!("the chat template from {} failed to render: {e}", self.template_source),
            };
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let _ = write!(msg, ": {s}");
                src = s.source();
            }
            Error::unsupported(msg)
        };
        let what = format!("rendering the chat template from {}", self.template_source);
        let render = || {
            crate::error::guard(&what, || {
                let template = without_generation_blocks(template);
                template_guard::check(&template).map_err(|why| {
                    Error::unsupported(format!("the chat template from {} {why}", self.template_source))
                })?;
                let env = chat_environment();
                let tmpl = env
                    .template_from_named_str("chat_template", &template)
                    .map_err(render_err)?;
                let ctx = self.template_context(messages, add_generation_prompt, extra);
                let mut out = CappedWriter { buf: Vec::new(), cap };
                tmpl.render_captured_to(ctx, &mut out).map_err(render_err)?;
                String::from_utf8(out.buf)
                    .map_err(|e| Error::unsupported(format!("{what}: the output is not UTF-8: {e}")))
            })
        };
        // Parsing, rendering and dropping what the template built all recurse on its structure or
        // its values; on a thread with TEMPLATE_STACK they need that many times more nesting to
        // overflow than on a default 8 MiB stack (which aborts the process, past any guard).
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("wgmoe-chat-template".into())
                .stack_size(TEMPLATE_STACK)
                .spawn_scoped(scope, render)
                .map_err(|e| Error::unsupported(format!("{what}: cannot start its thread: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(Error::unsupported(format!("{what}: its thread panicked"))))
        })
    }

    /// What a chat template sees: the special tokens, `extra` over them, then the messages,
    /// `tools` (`extra`'s list, else none), `documents` (none) and `add_generation_prompt`.
    fn template_context(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Value {
        let mut ctx: Vec<(String, Value)> = Vec::new();
        for (k, v) in &self.special_tokens {
            ctx.push((k.clone(), Value::from(v.as_str())));
        }
        for (k, v) in extra {
            ctx.retain(|(name, _)| name != k);
            ctx.push((k.clone(), Value::from_serialize(v)));
        }
        const FIXED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];
        ctx.retain(|(name, _)| !FIXED.contains(&name.as_str()));
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_iter([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        ctx.push(("messages".into(), Value::from(msgs)));
        let tools = extra.get("tools").filter(|t| t.is_array());
        ctx.push(("tools".into(), tools.map_or(Value::from(()), Value::from_serialize)));
        ctx.push(("documents".into(), Value::from(())));
        ctx.push(("add_generation_prompt".into(), Value::from(add_generation_prompt)));
        Value::from_iter(ctx)
    }

    /// The ids of a chat: `encode(apply_chat_template(..), false)`, as transformers'
    /// `apply_chat_template(..., tokenize=True)`.
    pub fn encode_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        self.encode(&text, false)
    }

    /// A decoder that turns ids, given one at a time, into text deltas.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder {
        StreamDecoder {
            tok: self.clone(),
            skip_special,
            ids: Vec::new(),
            read: 0,
        }
    }
}

/// Turns a growing sequence of ids into text deltas, printing only complete characters: a
/// character split over several byte tokens (byte-level BPE, SentencePiece byte fallback) comes out
/// once its last byte arrives. The concatenated deltas plus [`StreamDecoder::finish`] equal the
/// decode of all ids (without transformers' `clean_up_tokenization_spaces`, which BPE tokenizers
/// ignore anyway).
///
/// It decodes a small window: the ids since the last emitted text plus the ones just before them
/// (so decoders that treat the first token specially, like SentencePiece's leading space, see
/// context), and emits the new text once it does not end in U+FFFD. A model that really emits
/// U+FFFD has it held until the next complete character or `finish`.
#[derive(Clone, Debug)]
pub struct StreamDecoder {
    tok: Tokenizer,
    skip_special: bool,
    /// The window: `ids[..read]` were emitted already (context), `ids[read..]` are pending.
    ids: Vec<u32>,
    read: usize,
}

impl StreamDecoder {
    /// Adds one id; returns the new complete text (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tok.check_ids(&[id])?;
        self.ids.push(id);
        let prefix = self.tok.raw_decode(&self.ids[..self.read], self.skip_special)?;
        let text = self.tok.raw_decode(&self.ids, self.skip_special)?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') && text.is_char_boundary(prefix.len()) {
            let delta = text[prefix.len()..].to_string();
            self.ids.drain(..self.read);
            self.read = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Adds several ids; returns the new complete text.
    pub fn push_all(&mut self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        for &id in ids {
            out.push_str(&self.push(id)?);
        }
        Ok(out)
    }

    /// Returns whatever is still held back (an incomplete character shows as U+FFFD) and starts
    /// over.
    pub fn finish(&mut self) -> Result<String> {
        let prefix = self.tok.raw_decode(&self.ids[..self.read], self.skip_special)?;
        let text = self.tok.raw_decode(&self.ids, self.skip_special)?;
        self.ids.clear();
        self.read = 0;
        if text.len() > prefix.len() && text.is_char_boundary(prefix.len()) {
            Ok(text[prefix.len()..].to_string())
        } else {
            Ok(String::new())
        }
    }
}

/// The tokenizers crate panics while encoding when a template post-processor names a special
/// token it does not define (or one whose ids and tokens differ in number): refuse such a file at
/// load, naming the token. Ids outside the vocabulary are refused too.
fn check_post_processor(inner: &tokenizers::Tokenizer, path: &Path) -> Result<()> {
    let Some(pp) = inner.get_post_processor() else {
        return Ok(());
    };
    let v = serde_json::to_value(pp).map_err(|e| Error::bad_model(path, format!("unreadable post_processor: {e}")))?;
    let bad = |msg: String| Error::bad_model(path, format!("post_processor: {msg}"));
    let mut stack = vec![&v];
    while let Some(node) = stack.pop() {
        match node {
            serde_json::Value::Array(a) => stack.extend(a),
            serde_json::Value::Object(o) => {
                if o.get("type").and_then(|t| t.as_str()) == Some("TemplateProcessing") {
                    let specials = o.get("special_tokens").and_then(|s| s.as_object());
                    for piece in ["single", "pair"]
                        .iter()
                        .filter_map(|k| o.get(*k)?.as_array())
                        .flatten()
                    {
                        if let Some(id) = piece.get("SpecialToken").and_then(|t| t.get("id")?.as_str()) {
                            if !specials.is_some_and(|s| s.contains_key(id)) {
                                return Err(bad(format!(
                                    "the template uses special token {id:?}, which it does not define"
                                )));
                            }
                        }
                    }
                    for (name, t) in specials.into_iter().flatten() {
                        let ids = t.get("ids").and_then(|x| x.as_array()).map_or(0, Vec::len);
                        let tokens = t.get("tokens").and_then(|x| x.as_array()).map_or(0, Vec::len);
                        if ids != tokens {
                            return Err(bad(format!("special token {name:?} has {ids} ids for {tokens} tokens")));
                        }
                        let out_of_range = t
                            .get("ids")
                            .and_then(|x| x.as_array())
                            .into_iter()
                            .flatten()
                            .find(|id| {
                                id.as_u64()
                                    .and_then(|i| u32::try_from(i).ok())
                                    .is_none_or(|i| inner.id_to_token(i).is_none())
                            });
                        if let Some(id) = out_of_range {
                            return Err(bad(format!(
                                "special token {name:?} has id {id}, outside the vocabulary"
                            )));
                        }
                    }
                }
                stack.extend(o.values());
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// tokenizer_config.json helpers

fn read_json_opt(path: &Path, cap: u64) -> Result<Option<serde_json::Value>> {
    let Some(text) = input::read_text_opt(path, cap, "JSON file")? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::bad_model(path, format!("invalid JSON: {e}")))
}

/// A special token entry: a string or an AddedToken object `{"content": ...}`.
fn token_content(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

/// `chat_template` in tokenizer_config.json: a string, a list of `{name, template}` or a map
/// name -> template; of several, "default".
fn parse_template_entry(v: &serde_json::Value, path: &Path) -> Result<(Option<String>, String)> {
    let file = path.display().to_string();
    let mut named: Vec<(String, String)> = Vec::new();
    match v {
        serde_json::Value::String(s) => return Ok((Some(s.clone()), file)),
        serde_json::Value::Array(items) => {
            for it in items {
                let name = it.get("name").and_then(|n| n.as_str());
                let tmpl = it.get("template").and_then(|t| t.as_str());
                match (name, tmpl) {
                    (Some(n), Some(t)) => named.push((n.to_string(), t.to_string())),
                    _ => {
                        return Err(Error::bad_model(
                            path,
                            "chat_template list entries must be {\"name\": ..., \"template\": ...}",
                        ))
                    }
                }
            }
        }
        serde_json::Value::Object(o) => {
            for (n, t) in o {
                let t = t
                    .as_str()
                    .ok_or_else(|| Error::bad_model(path, format!("chat_template {n:?} is not a string")))?;
                named.push((n.clone(), t.to_string()));
            }
        }
        _ => {
            return Err(Error::bad_model(
                path,
                "chat_template must be a string or a list of named templates",
            ))
        }
    }
    match named.iter().find(|(n, _)| n == "default") {
        Some((_, t)) => Ok((Some(t.clone()), format!("{file} (template \"default\")"))),
        None => {
            let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
            Ok((
                None,
                format!("{file} has chat templates {names:?} but none named \"default\""),
            ))
        }
    }
}

/// `eos_token_id`: absent/null, an int, or a list of ints.
fn id_list(v: Option<&serde_json::Value>, path: &Path) -> Result<Vec<u32>> {
    let bad = || Error::bad_model(path, "eos_token_id must be an integer or a list of integers");
    let one = |v: &serde_json::Value| v.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(bad);
    match v {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => {
            let mut out = Vec::new();
            for x in a {
                push_unique(&mut out, one(x)?);
            }
            Ok(out)
        }
        Some(x) => Ok(vec![one(x)?]),
    }
}

fn push_unique(v: &mut Vec<u32>, id: u32) {
    if !v.contains(&id) {
        v.push(id);
    }
}

/// transformers' `clean_up_tokenization` (applied only for non-BPE models, as transformers 5 does).
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

// ---------------------------------------------------------------------------------------------
// The chat-template environment: transformers' jinja2 environment in minijinja.

/// Instructions a chat template may run: transformers' templates take thousands per message, so
/// this only stops a template that does not end (about a second of rendering).
const TEMPLATE_FUEL: u64 = 50_000_000;

/// Bytes a rendered chat may hold beyond four times its messages: real templates add a few hundred
/// bytes per message.
const TEMPLATE_OUTPUT_BASE: usize = 16 << 20;
/// The stack of the thread a chat template renders on (reserved, touched only as deep as used).
const TEMPLATE_STACK: usize = 256 << 20;
/// The widest padding a template may ask of `indent`, `format` or `str.format` (a width of 10^11
/// would abort the process on the failed allocation), and the longest `tojson` indent.
const TEMPLATE_MAX_WIDTH: usize = 1 << 16;
const TOJSON_MAX_INDENT: usize = 64;
/// How deep `tojson` follows nested values, and how much it writes.
const TOJSON_MAX_DEPTH: usize = 512;
const TOJSON_MAX_BYTES: usize = 64 << 20;

/// A render's output, refusing to grow past `cap` (the render then fails with a write error).
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            return Err(std::io::Error::other("the chat template's output is over its cap"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn chat_environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    add_width_caps(&mut env);
    env.set_formatter(python_formatter);
    env.add_filter("tojson", tojson_filter);
    env.add_test("iterable", python_iterable);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

/// `str.format`, and the `format` and `indent` filters, as minijinja and its pycompat have them,
/// but refusing widths over TEMPLATE_MAX_WIDTH before they allocate.
fn add_width_caps(env: &mut minijinja::Environment<'static>) {
    env.set_unknown_method_callback(|state, value, method, args| {
        if method == "format" {
            if let Some(s) = value.as_str() {
                check_format_widths(s)?;
            }
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
    env.add_filter(
        "format",
        |state: &minijinja::State, fmt: &Value, args: minijinja::value::Rest<Value>| {
            if let Some(s) = fmt.as_str() {
                check_format_widths(s)?;
            }
            minijinja::filters::format(state, fmt, args)
        },
    );
    env.add_filter(
        "indent",
        |value: minijinja::value::StringInput<'_>,
         width: Option<usize>,
         first: Option<bool>,
         blank: Option<bool>,
         kwargs: Kwargs| {
            let w = match width {
                Some(w) => Some(w),
                None => kwargs.get::<Option<usize>>("width")?,
            };
            if w.is_some_and(|w| w > TEMPLATE_MAX_WIDTH) {
                return Err(too_wide("indent"));
            }
            minijinja::filters::indent(value, width, first, blank, kwargs)
        },
    );
}

fn too_wide(what: &str) -> minijinja::Error {
    minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("{what}: a width or precision over {TEMPLATE_MAX_WIDTH} is not supported"),
    )
}

/// Refuses a `%`-style or `{}`-style format string whose width or precision is over
/// TEMPLATE_MAX_WIDTH: a run of more digits than that number has, inside a `{...}` replacement
/// field or a `%` conversion spec.
fn check_format_widths(fmt: &str) -> std::result::Result<(), minijinja::Error> {
    let limit_digits = TEMPLATE_MAX_WIDTH.to_string().len();
    let b = fmt.as_bytes();
    let (mut i, mut in_field, mut in_percent) = (0, false, false);
    while i < b.len() {
        match b[i] {
            b'{' if !in_field => in_field = true,
            b'}' if in_field => in_field = false,
            b'%' if !in_field => in_percent = !in_percent,
            c if in_percent && c.is_ascii_alphabetic() => in_percent = false,
            c if c.is_ascii_digit() && (in_field || in_percent) => {
                let run = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                let n: usize = fmt[i..i + run].parse().unwrap_or(usize::MAX);
                if run > limit_digits || n > TEMPLATE_MAX_WIDTH {
                    return Err(too_wide("format"));
                }
                i += run;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Jinja2's `iterable`: `none` is not (minijinja iterates it as empty), so templates that guard
/// `tools | length` with `tools is iterable` render without tools, as in transformers.
fn python_iterable(v: &Value) -> bool {
    !v.is_none() && v.try_iter().is_ok()
}

/// transformers' `{% generation %}...{% endgeneration %}` (it marks the assistant's tokens for
/// training masks and renders its body unchanged) rewritten as `{% if true %}...{% endif %}`, which
/// minijinja knows, keeping each tag's whitespace-control marks.
fn without_generation_blocks(template: &str) -> std::borrow::Cow<'_, str> {
    if !template.contains("generation") {
        return template.into();
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        // From past the `{%`: in `{%}` the `%}` overlaps it.
        let Some(end) = tag[2..].find("%}").map(|e| e + 2) else {
            rest = tag;
            break;
        };
        let inner = &tag[2..end];
        let (open, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, close) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[b.len()..]),
            None => (body, ""),
        };
        let word = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match word {
            Some(w) => out.push_str(&format!("{{%{open} {w} {close}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out.into()
}

/// Prints `None`, `True`, `False` as Python does; everything else as minijinja does.
fn python_formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &Value,
) -> std::result::Result<(), minijinja::Error> {
    let s = match value.kind() {
        ValueKind::None => "None",
        ValueKind::Bool if value.is_true() => "True",
        ValueKind::Bool => "False",
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(s).map_err(minijinja::Error::from)
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("raise_exception: {message}"),
    ))
}

/// transformers' `tojson`: Python `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, no HTML escaping.
fn tojson_filter(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match &indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) if v.is_integer() => {
            let n = v.as_i64().unwrap_or(0).max(0) as usize;
            Some(" ".repeat(n.min(TOJSON_MAX_INDENT + 1)))
        }
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ))
            }
        },
    };
    if indent.as_ref().is_some_and(|i| i.len() > TOJSON_MAX_INDENT) {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("tojson: an indent of more than {TOJSON_MAX_INDENT} characters is not supported"),
        ));
    }
    let (item_sep, key_sep) = match &separators {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap_or(",").to_string(),
                    b.as_str().unwrap_or(":").to_string(),
                ),
                _ => {
                    return Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let opts = JsonOpts {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    py_json(value, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn py_json(v: &Value, o: &JsonOpts, depth: usize, out: &mut String) -> std::result::Result<(), minijinja::Error> {
    if depth > TOJSON_MAX_DEPTH || out.len() > TOJSON_MAX_BYTES {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!(
                "tojson: the value is nested deeper than {TOJSON_MAX_DEPTH} or longer than {} MiB",
                TOJSON_MAX_BYTES >> 20
            ),
        ));
    }
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                out.push_str(&py_float_repr(f64::try_from(v.clone())?));
            }
        }
        ValueKind::String => py_json_str(v.as_str().unwrap_or(""), o.ensure_ascii, out),
        ValueKind::Bytes => {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "tojson: bytes are not JSON serializable",
            ))
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(items.len(), '[', ']', o, depth, out, |i, out| {
                py_json(&items[i], o, depth + 1, out)
            })?;
        }
        _ => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for k in v.try_iter()? {
                let item = v.get_item(&k)?;
                let key = match k.kind() {
                    ValueKind::String => k.as_str().unwrap_or("").to_string(),
                    ValueKind::None => "null".to_string(),
                    ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).to_string(),
                    ValueKind::Number if !k.is_integer() => py_float_repr(f64::try_from(k.clone())?),
                    _ => k.to_string(),
                };
                entries.push((key, item));
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(entries.len(), '{', '}', o, depth, out, |i, out| {
                py_json_str(&entries[i].0, o.ensure_ascii, out);
                out.push_str(&o.key_sep);
                py_json(&entries[i].1, o, depth + 1, out)
            })?;
        }
    }
    Ok(())
}

fn write_container(
    n: usize,
    open: char,
    close: char,
    o: &JsonOpts,
    depth: usize,
    out: &mut String,
    mut item: impl FnMut(usize, &mut String) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    if n == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..n {
        if i > 0 {
            out.push_str(&o.item_sep);
        }
        if let Some(ind) = &o.indent {
            out.push('\n');
            out.push_str(&ind.repeat(depth + 1));
        }
        item(i, out)?;
    }
    if let Some(ind) = &o.indent {
        out.push('\n');
        out.push_str(&ind.repeat(depth));
    }
    out.push(close);
    Ok(())
}

fn py_json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation below 1e-4 and from
/// 1e16 on (`1e-05`, `1e+16`), `NaN`/`Infinity` as `json.dumps` writes them.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let s = format!("{f:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mant) = match mant.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let body = if (-4..16).contains(&exp) {
        if exp >= 0 {
            if n <= exp + 1 {
                format!("{digits}{}.0", "0".repeat((exp + 1 - n) as usize))
            } else {
                format!("{}.{}", &digits[..(exp + 1) as usize], &digits[(exp + 1) as usize..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let m = if n > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    };
    format!("{sign}{body}")
}

/// `strftime_now(format)`: the current time formatted like Python's `datetime.now().strftime`.
/// Uses UTC (no time-zone database here). Supports %Y %y %m %d %e %B %b %h %A %a %H %I %M %S %p
/// %j %F %T %D %%; other directives are kept literally.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, secs)
}

/// `unix_secs` (UTC) formatted like Python's `strftime`, with [`strftime_now`]'s directives
/// (benchmark records use it for their timestamps too).
pub(crate) fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (hour, minute, second) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let day = doy_mar - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday (index 3)
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let mname = MONTHS[(month - 1) as usize];
    let dname = DAYS[weekday];
    let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match d {
            'Y' => write!(out, "{year}"),
            'y' => write!(out, "{:02}", year.rem_euclid(100)),
            'm' => write!(out, "{month:02}"),
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:>2}"),
            'B' => write!(out, "{mname}"),
            'b' | 'h' => write!(out, "{}", &mname[..3]),
            'A' => write!(out, "{dname}"),
            'a' => write!(out, "{}", &dname[..3]),
            'H' => write!(out, "{hour:02}"),
            'I' => write!(out, "{h12:02}"),
            'M' => write!(out, "{minute:02}"),
            'S' => write!(out, "{second:02}"),
            'p' => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            'j' => write!(out, "{yday:03}"),
            'F' => write!(out, "{year}-{month:02}-{day:02}"),
            'T' => write!(out, "{hour:02}:{minute:02}:{second:02}"),
            'D' => write!(out, "{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

#[path = "tokenizer/template_guard.rs"]
mod template_guard;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1.5e300, "1.5e+300"),
            (-2.5, "-2.5"),
            (123.456, "123.456"),
            (3.0e-7, "3e-07"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday, day 60 of a leap year.
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %a %A %b %B %j %p %I %%", 1_709_211_909),
            "2024-02-29 13:05:09 Thu Thursday Feb February 060 PM 01 %"
        );
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
    }
}
