//! Generation: options, the events a generation streams, and cancellation.

use super::session::{Prompt, Session};
use crate::error::{Error, Result};
use crate::generate::Decode;
use crate::kernels::sampling::SampleSpec;
use crate::tokenizer::StreamDecoder;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How tokens are drawn from the model's distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 is greedy. Finite and >= 0.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens holding this much probability; in (0, 1], 1 keeps all.
    pub top_p: f32,
}

impl Sampling {
    /// Always the most likely token.
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };

    /// Refuse values that describe no distribution: a temperature that is negative, NaN or
    /// infinite, a top-p outside (0, 1]. Generation checks them; an app can check them earlier.
    pub fn validate(&self) -> Result<()> {
        crate::generate::check_sampling(self.temperature, self.top_p)
    }
}

/// What to generate and when to stop. `GenerateOptions::default()` samples as the model's files
/// ask, stops at the model's end-of-turn tokens, and otherwise runs until the context is full.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    /// Tokens to generate at most; `None`: until a stop or a full context.
    pub max_tokens: Option<usize>,
    /// `None`: the model's default ([`crate::Model::default_sampling`]).
    pub sampling: Option<Sampling>,
    /// Seed of the sampler's random numbers: the same seed, prompt and options give the same
    /// tokens.
    pub seed: u64,
    /// Texts that end the reply; the reply's text stops just before the first of them.
    pub stop: Vec<String>,
    /// Token ids that end the reply (not emitted). `None`: the model's end-of-sequence and
    /// end-of-turn tokens. `Some(vec![])` never stops on a token.
    pub stop_tokens: Option<Vec<u32>>,
    /// Stops the generation within one step ([`StopReason::Cancelled`]).
    pub cancel: Option<CancelToken>,
    /// Only replies that match it: a JSON schema, a grammar or a regular expression. The reply
    /// ends with an end-of-sequence token once the grammar is complete (keep the default
    /// `stop_tokens` for that); `max_tokens` can still cut it short.
    pub constraint: Option<super::Constraint>,
}

impl GenerateOptions {
    /// The defaults, with at most `n` tokens.
    pub fn max_tokens(n: usize) -> Self {
        Self {
            max_tokens: Some(n),
            ..Self::default()
        }
    }

    /// Greedy decoding (the most likely token every step).
    pub fn greedy(mut self) -> Self {
        self.sampling = Some(Sampling::GREEDY);
        self
    }
}

/// A flag that stops work in progress: a generation within one step, a load between two
/// tensors. Clones share the flag, so keep one and hand another to the work (or to a Ctrl-C
/// handler on another thread).
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A new flag, not set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Set the flag: work using it stops at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// Clear the flag, to use the token again.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Why a generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced one of the stop tokens (its end of turn, by default).
    StopToken(u32),
    /// The text reached one of the stop strings (given back here; not in the text).
    StopString(String),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The session's context has no room for another token.
    ContextFull,
    /// The [`CancelToken`] was set.
    Cancelled,
}

/// What a generation did and how fast.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Tokens run through the model before the first new one (the prompt, plus any earlier
    /// tokens the session's cache did not hold yet).
    pub prompt_tokens: usize,
    /// Seconds from the start to the first new token.
    pub prompt_seconds: f64,
    /// Tokens emitted.
    pub generated_tokens: usize,
    /// Seconds from the first token to the end.
    pub decode_seconds: f64,
}

impl Stats {
    /// Prompt tokens per second.
    pub fn prompt_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }
    /// Decode steps per second: the tokens after the first, which the prompt's pass samples.
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// One step of a streamed generation.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new token and the text it completes (empty while a character is incomplete or the text
    /// might begin a stop string).
    Token {
        /// The token's id.
        id: u32,
        /// The text it completes.
        text: String,
    },
    /// Text held back until the end (the start of a stop string that did not complete, or bytes
    /// of an unfinished character); comes at most once, just before `Done`.
    Text(String),
    /// The last event.
    Done {
        /// Why it ended.
        stop_reason: StopReason,
        /// What it did and how fast.
        stats: Stats,
    },
}

/// A finished generation, as [`Session::complete`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The reply's text (stop strings left out).
    pub text: String,
    /// The reply's token ids (stop tokens left out).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// How long it took.
    pub stats: Stats,
}

impl Default for Completion {
    fn default() -> Self {
        Completion {
            text: String::new(),
            tokens: Vec::new(),
            stop_reason: StopReason::MaxTokens,
            stats: Stats::default(),
        }
    }
}

impl Completion {
    /// Collect `events` (stopping at the first error).
    pub fn collect(
        events: impl Iterator<Item = Result<Event>>,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Completion> {
        let mut c = Completion::default();
        for e in events {
            let e = e?;
            on_event(&e);
            c.add(e);
        }
        Ok(c)
    }

    /// Add one event: a token and its text, held text, or the end (a [`crate::Batch`]'s events
    /// are collected per generation this way).
    pub fn add(&mut self, event: Event) {
        match event {
            Event::Token { id, text } => {
                self.tokens.push(id);
                self.text.push_str(&text);
            }
            Event::Text(text) => self.text.push_str(&text),
            Event::Done { stop_reason, stats } => {
                self.stop_reason = stop_reason;
                self.stats = stats;
            }
        }
    }
}

// Generation is what a session does; its methods live here so that sessions need not know
// generations.
impl Session {
    /// Generate after `prompt`: an iterator of [`Event`]s ending with [`Event::Done`].
    ///
    /// ```no_run
    /// # fn run(session: &mut wgmoe::Session) -> wgmoe::Result<()> {
    /// use std::io::Write;
    /// for event in session.generate("Once upon a time", &wgmoe::GenerateOptions::max_tokens(64))? {
    ///     if let wgmoe::Event::Token { text, .. } | wgmoe::Event::Text(text) = event? {
    ///         print!("{text}");
    ///         std::io::stdout().flush().ok();
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn generate(&mut self, prompt: impl Into<Prompt>, options: &GenerateOptions) -> Result<Generation<'_>> {
        let tokens = self.tokens_of(prompt.into())?;
        let before = self.position();
        let feed = self.admit(&tokens, 1)?;
        // A generation that cannot start leaves the session as it was.
        match Generation::prepare(self, &feed, options) {
            Ok(state) => Ok(Generation::new(self, state)),
            Err(e) => {
                self.truncate(before);
                Err(e)
            }
        }
    }

    /// Go on generating after the session's tokens, with no new prompt (after `max_tokens`, a
    /// cancel or a stop the app chose to ignore).
    pub fn resume(&mut self, options: &GenerateOptions) -> Result<Generation<'_>> {
        self.generate(Prompt::Tokens(Vec::new()), options)
    }

    /// [`Session::generate`] with a callback for each event; returns the whole reply.
    pub fn generate_with(
        &mut self,
        prompt: impl Into<Prompt>,
        options: &GenerateOptions,
        on_event: impl FnMut(&Event),
    ) -> Result<Completion> {
        Completion::collect(self.generate(prompt, options)?, on_event)
    }

    /// Generate after `prompt` and return the whole reply.
    pub fn complete(&mut self, prompt: impl Into<Prompt>, options: &GenerateOptions) -> Result<Completion> {
        self.generate_with(prompt, options, |_| {})
    }
}

/// A generation in progress: an iterator of [`Event`]s ending with [`Event::Done`] (or an error).
/// Dropping it early leaves the session holding the tokens emitted so far, as if it had been
/// cancelled.
pub struct Generation<'s> {
    session: &'s mut Session,
    state: State,
}

/// A generation's state, apart from its session.
pub(super) struct State {
    decode: Option<Decode>,
    reply: Reply,
    stats: Stats,
    finished: bool,
}

/// A reply's text as its tokens arrive: stop tokens and strings, text held back while it may be
/// the start of a stop string, the token budget and the cancel token. A session's [`Generation`]
/// and a [`crate::Batch`]'s sequences share it.
pub(super) struct Reply {
    decoder: StreamDecoder,
    stop_tokens: Vec<u32>,
    stop: Vec<String>,
    /// Decoded text not yet emitted because it may be the start of a stop string.
    held: String,
    pub(super) emitted: usize,
    pub(super) max_tokens: usize,
    cancel: Option<CancelToken>,
    /// The reason, once the end is known; `Done` follows the held text.
    pub(super) ending: Option<StopReason>,
}

impl Reply {
    /// Check the stop strings of `opts`.
    pub(super) fn new(model: &crate::Model, opts: &GenerateOptions) -> Result<Reply> {
        if opts.stop.iter().any(String::is_empty) {
            return Err(Error::bad_input("a stop string is empty"));
        }
        Ok(Reply {
            decoder: model.tokenizer().stream_decoder(true),
            stop_tokens: opts.stop_tokens.clone().unwrap_or_else(|| model.eos_tokens().to_vec()),
            stop: opts.stop.clone(),
            held: String::new(),
            emitted: 0,
            max_tokens: opts.max_tokens.unwrap_or(usize::MAX),
            cancel: opts.cancel.clone(),
            ending: None,
        })
    }

    /// Why the reply must end before another token, if it must: a cancel, the token budget.
    pub(super) fn must_end(&self) -> Option<StopReason> {
        if self.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            return Some(StopReason::Cancelled);
        }
        (self.emitted >= self.max_tokens).then_some(StopReason::MaxTokens)
    }

    /// Take the next sampled token: its event, or the reason the reply ends there (a stop
    /// token, not emitted). A stop string ends it after this event (`ending` is set).
    pub(super) fn push(&mut self, id: u32) -> Result<std::result::Result<Event, StopReason>> {
        if self.stop_tokens.contains(&id) {
            return Ok(Err(StopReason::StopToken(id)));
        }
        self.emitted += 1;
        self.held.push_str(&self.decoder.push(id)?);
        if let Some((at, s)) = first_stop(&self.held, &self.stop) {
            let text = self.held[..at].to_string();
            self.held.clear();
            self.ending = Some(StopReason::StopString(s));
            return Ok(Ok(Event::Token { id, text }));
        }
        let keep = self.held.len() - longest_stop_prefix(&self.held, &self.stop);
        let text = self.held[..keep].to_string();
        self.held.drain(..keep);
        Ok(Ok(Event::Token { id, text }))
    }

    /// At the end: the text held back (unless a stop string ended the reply), if any.
    pub(super) fn tail(&mut self) -> Result<Option<String>> {
        let tail = self.decoder.finish()?;
        self.held.push_str(&tail);
        if self.held.is_empty() || matches!(self.ending, Some(StopReason::StopString(_))) {
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.held)))
    }
}

impl<'s> Generation<'s> {
    /// Check `opts`, then submit `feed` (what the session's cache lacks of its tokens, the
    /// prompt's included; `session.tokens()` already holds the prompt) and the first sampling
    /// step.
    pub(super) fn prepare(session: &mut Session, feed: &[u32], opts: &GenerateOptions) -> Result<State> {
        let model = session.model().clone();
        let sampling = opts.sampling.unwrap_or(model.default_sampling());
        sampling.validate()?;
        let reply = Reply::new(&model, opts)?;
        let spec = SampleSpec {
            vocab: model.internals().config.vocab,
            row: 0,
            temperature: sampling.temperature,
            top_k: sampling.top_k,
            top_p: sampling.top_p,
            seed: opts.seed,
        };
        let max_tokens = opts.max_tokens.unwrap_or(usize::MAX);
        let mut state = State {
            decode: None,
            reply,
            stats: Stats {
                prompt_tokens: feed.len(),
                ..Default::default()
            },
            finished: false,
        };
        if max_tokens == 0 {
            // Only the prompt goes in; nothing is sampled.
            let start = std::time::Instant::now();
            session.prefill_raw(feed)?;
            state.stats.prompt_seconds = start.elapsed().as_secs_f64();
            state.reply.ending = Some(StopReason::MaxTokens);
            return Ok(state);
        }
        let chunk = session.prefill_chunk();
        let constraint = opts.constraint.as_ref().map(|c| model.constraint(c)).transpose()?;
        state.decode = Some(Decode::start(session.raw(), feed, spec, max_tokens, chunk, constraint)?);
        Ok(state)
    }

    pub(super) fn new(session: &'s mut Session, state: State) -> Self {
        Generation { session, state }
    }

    /// The next token's event, or the reason the generation ends.
    fn step(&mut self) -> Result<std::result::Result<Event, StopReason>> {
        if let Some(reason) = self.state.reply.must_end() {
            return Ok(Err(reason));
        }
        let Some(decode) = self.state.decode.as_mut() else {
            return Ok(Err(StopReason::MaxTokens));
        };
        let Some(id) = decode.next(self.session.raw())? else {
            return Ok(Err(if decode.context_full() {
                StopReason::ContextFull
            } else {
                StopReason::MaxTokens
            }));
        };
        let event = self.state.reply.push(id)?;
        if event.is_ok() {
            self.session.push_emitted(id);
        }
        Ok(event)
    }

    /// Wait for the steps queued past the end and settle the session on the emitted tokens.
    fn finish(&mut self) -> Result<()> {
        if let Some(decode) = self.state.decode.take() {
            (self.state.stats.prompt_seconds, self.state.stats.decode_seconds) = decode.times();
            let kept = self.state.reply.emitted;
            decode.finish(self.session.raw(), kept)?;
        }
        self.state.stats.generated_tokens = self.state.reply.emitted;
        Ok(())
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        if self.state.finished {
            return None;
        }
        if self.state.reply.ending.is_none() {
            match self.step() {
                Ok(Ok(event)) => return Some(Ok(event)),
                Ok(Err(reason)) => self.state.reply.ending = Some(reason),
                Err(e) => {
                    self.state.finished = true;
                    let _ = self.finish();
                    return Some(Err(e));
                }
            }
        }
        // The end: first any held text, then Done.
        match self.state.reply.tail() {
            Ok(Some(text)) => return Some(Ok(Event::Text(text))),
            Ok(None) => {}
            Err(e) => {
                self.state.finished = true;
                return Some(Err(e));
            }
        }
        self.state.finished = true;
        if let Err(e) = self.finish() {
            return Some(Err(e));
        }
        let stop_reason = self.state.reply.ending.take().unwrap_or(StopReason::MaxTokens);
        Some(Ok(Event::Done {
            stop_reason,
            stats: self.state.stats.clone(),
        }))
    }
}

impl Drop for Generation<'_> {
    fn drop(&mut self) {
        // Errors cannot leave a drop; the session is consistent either way (it holds the emitted
        // tokens, and whatever its cache lacks of them is fed with the next prompt).
        let _ = self.finish();
    }
}

/// The earliest complete stop string in `text`: its byte offset and the string.
fn first_stop(text: &str, stop: &[String]) -> Option<(usize, String)> {
    stop.iter()
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s.clone())))
        .min_by_key(|(at, _)| *at)
}

/// Bytes at the end of `text` that could be the start of a stop string (held back until the
/// next token says whether it completes).
fn longest_stop_prefix(text: &str, stop: &[String]) -> usize {
    let mut best = 0;
    for s in stop {
        for (i, _) in s.char_indices().skip(1) {
            if i > best && text.ends_with(&s[..i]) {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_are_found_and_their_starts_held() {
        let stop = vec!["\nUser:".to_string(), "###".to_string()];
        assert_eq!(first_stop("a\nUser: b ### c", &stop), Some((1, "\nUser:".into())));
        assert_eq!(first_stop("a ## b", &stop), None);
        assert_eq!(longest_stop_prefix("hello\nUs", &stop), 3);
        assert_eq!(longest_stop_prefix("hello ##", &stop), 2);
        assert_eq!(longest_stop_prefix("hello", &stop), 0);
        // A multi-byte stop string is held at character boundaries only.
        let stop = vec!["é!".to_string()];
        assert_eq!(longest_stop_prefix("café", &stop), 2);
    }
}
