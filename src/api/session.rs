//! A session: one sequence's KV cache over a shared model, its tokens, and its saved states.

use super::{KvDtype, Model};
use crate::error::{Error, Result};
use crate::model;

/// A session's size. `SessionOptions::default()` takes the model's ([`crate::ModelOptions`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SessionOptions {
    /// Tokens the KV cache holds (prompts and replies together), capped at the model's maximum.
    pub context: Option<usize>,
    /// How the cache stores keys and values; `None`: the model's default.
    pub kv_cache: Option<KvDtype>,
}

/// A prompt: text (tokenized with the model's tokenizer; a fresh session's first text gets the
/// begin-of-sequence token where the model wants one) or token ids as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Text, tokenized by the model's tokenizer.
    Text(String),
    /// Token ids, as they are.
    Tokens(Vec<u32>),
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_string())
    }
}
impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Prompt::Text(s)
    }
}
impl From<&String> for Prompt {
    fn from(s: &String) -> Self {
        Prompt::Text(s.clone())
    }
}
impl From<&[u32]> for Prompt {
    fn from(t: &[u32]) -> Self {
        Prompt::Tokens(t.to_vec())
    }
}
impl From<Vec<u32>> for Prompt {
    fn from(t: Vec<u32>) -> Self {
        Prompt::Tokens(t)
    }
}
impl From<&Vec<u32>> for Prompt {
    fn from(t: &Vec<u32>) -> Self {
        Prompt::Tokens(t.clone())
    }
}

/// One conversation's state: a KV cache over the [`Model`]'s shared weights and the tokens in
/// it. Owned (`'static`) and `Send`: keep it in a struct, move it to a task or thread. Sessions of
/// one model run concurrently on several threads.
///
/// Its tokens are everything it was given and everything it emitted, in order; each generation
/// continues after them. A generation's stop token is not kept (the chat template writes the end
/// of a turn itself).
pub struct Session {
    model: Model,
    raw: model::Session,
    /// The tokens of the conversation; the cache holds the first `raw.position()` of them (all,
    /// or all but the last emitted one, which is fed with the next prompt).
    tokens: Vec<u32>,
}

/// What a saved state starts with, and its layout's version.
const STATE_MAGIC: &[u8; 8] = b"WGMOEKV1";

impl Session {
    pub(super) fn new(model: Model, options: &SessionOptions) -> Result<Session> {
        let defaults = model.options();
        let max = model.internals().config.max_position;
        let context = options.context.unwrap_or(defaults.context);
        if context == 0 {
            return Err(Error::bad_input(
                "a context of 0 tokens: the KV cache needs room for at least one",
            ));
        }
        let kv = options.kv_cache.unwrap_or(defaults.kv_cache);
        let raw = model.internals().try_session(context.min(max), kv)?;
        Ok(Session {
            model,
            raw,
            tokens: Vec::new(),
        })
    }

    /// The model the session runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Tokens in the session (prompts and emitted tokens).
    pub fn position(&self) -> usize {
        self.tokens.len()
    }

    /// The session's tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Tokens the context holds at most.
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// Forget everything: the next prompt starts a new sequence.
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Keep the first `len` tokens and forget the rest (an edited conversation, a retried reply).
    pub fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
        self.raw.truncate(len);
    }

    /// Keep the longest start of the session that `tokens` begins with, and return its length:
    /// what a prompt of `tokens` need not run again (prompt caching). Generate with
    /// `tokens[kept..]` to continue.
    pub fn keep_prefix(&mut self, tokens: &[u32]) -> usize {
        let shared = self.tokens.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        self.truncate(shared);
        shared
    }

    /// Run `prompt` into the cache without generating (a system prompt to save or fork from).
    pub fn prefill(&mut self, prompt: impl Into<Prompt>) -> Result<()> {
        let tokens = self.tokens_of(prompt.into())?;
        let feed = self.admit(&tokens, 0)?;
        self.prefill_raw(&feed)
    }

    /// A second session that continues from this one's state (its own copy of the KV cache, made
    /// on the GPU): fork after a shared system prompt or document, then let each branch go on.
    pub fn fork(&self) -> Result<Session> {
        let mut other = Session {
            model: self.model.clone(),
            raw: self
                .model
                .internals()
                .try_session(self.capacity(), self.raw.cache.dtype)?,
            tokens: self.tokens.clone(),
        };
        self.raw.copy_cache_to(&mut other.raw)?;
        Ok(other)
    }

    /// The session's tokens and its KV cache as bytes, for [`Session::restore_state`] in a session
    /// of the same model and KV precision (now, or in a later run of the same wgmoe).
    pub fn save_state(&self) -> Result<Vec<u8>> {
        let cache = self.raw.save_cache()?;
        let mut out = Vec::with_capacity(cache.len() + 4 * self.tokens.len() + 64);
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&self.fingerprint().to_le_bytes());
        out.extend_from_slice(&(self.tokens.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.raw.position() as u64).to_le_bytes());
        for t in &self.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(&cache);
        Ok(out)
    }

    /// Put back a state [`Session::save_state`] wrote: this session's tokens and cache become
    /// those. A state of another model, precision or a longer context is refused.
    pub fn restore_state(&mut self, state: &[u8]) -> Result<()> {
        let bad = |why: &str| Error::bad_input(format!("not a saved wgmoe session state for this model: {why}"));
        let (head, rest) = state.split_at_checked(32).ok_or_else(|| bad("too short"))?;
        if &head[..8] != STATE_MAGIC {
            return Err(bad("it does not start as one"));
        }
        let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
        if word(8) != self.fingerprint() {
            return Err(bad("it was saved from another model or KV-cache precision"));
        }
        let (n, cached) = (word(16) as usize, word(24) as usize);
        if cached > n || n > self.capacity() {
            return Err(Error::ContextFull {
                needed: n,
                free: self.capacity(),
                capacity: self.capacity(),
            });
        }
        let (ids, cache) = rest.split_at_checked(4 * n).ok_or_else(|| bad("truncated"))?;
        let tokens: Vec<u32> = ids
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.raw.restore_cache(cached, cache)?;
        self.tokens = tokens;
        Ok(())
    }

    /// What a state must match: the model's description and the cache's precision.
    fn fingerprint(&self) -> u64 {
        let text = format!("{:?}|{}", self.model.internals().config, self.raw.cache.dtype);
        // FNV-1a: stable across runs, unlike std's hasher.
        text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
    }

    pub(super) fn tokens_of(&self, prompt: Prompt) -> Result<Vec<u32>> {
        let tokens = match prompt {
            Prompt::Text(text) => self.model.tokenize(&text, self.tokens.is_empty())?,
            Prompt::Tokens(t) => t,
        };
        crate::model::check_ids(&tokens, self.model.internals().config.vocab)?;
        Ok(tokens)
    }

    /// Append `prompt` to the session's tokens and return what the cache must run: the tokens it
    /// lacks, the prompt's included. `sampled` more positions must fit (1 when a token will be
    /// sampled after it, whose logits need the last one run).
    pub(super) fn admit(&mut self, prompt: &[u32], sampled: usize) -> Result<Vec<u32>> {
        let total = self.tokens.len() + prompt.len();
        if total > self.capacity() {
            return Err(Error::ContextFull {
                needed: prompt.len(),
                free: self.capacity() - self.tokens.len(),
                capacity: self.capacity(),
            });
        }
        let mut from = self.raw.position();
        if total == from && sampled > 0 {
            if total == 0 {
                return Err(Error::bad_input("the prompt has no tokens and the session is empty"));
            }
            // Everything is cached, but sampling needs the last token's logits: run it again.
            from -= 1;
            self.raw.truncate(from);
        }
        self.tokens.extend_from_slice(prompt);
        Ok(self.tokens[from..].to_vec())
    }

    pub(super) fn raw(&mut self) -> &mut model::Session {
        &mut self.raw
    }

    pub(super) fn prefill_raw(&mut self, feed: &[u32]) -> Result<()> {
        let chunk = self.prefill_chunk();
        self.raw.prefill(feed, chunk)?;
        self.model.internals().ctx.check()
    }

    pub(super) fn prefill_chunk(&self) -> usize {
        self.model.options().prefill_chunk.max(1)
    }

    pub(super) fn push_emitted(&mut self, id: u32) {
        self.tokens.push(id);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("position", &self.position())
            .field("capacity", &self.capacity())
            .finish()
    }
}
