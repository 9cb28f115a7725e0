//! The decode loop: prefill the prompt, then one single-token step at a time, sampling on the GPU.
//! The sampled token is written straight into the ids buffer the next step's embedding reads, so
//! the CPU only reads it back to stream it and to check stop conditions.

use crate::error::{Error, Result};
use crate::kernels::sampling::SampleSpec;
use crate::model::{PendingToken, Session, LOOKAHEAD};
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Instant;

/// Sampling and stopping.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0: greedy. Must be finite and >= 0.
    pub temperature: f32,
    /// 0: off.
    pub top_k: usize,
    /// 1.0: off. Must be in (0, 1].
    pub top_p: f32,
    pub seed: u64,
    /// Token ids that end generation (not emitted).
    pub stop: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// A model's default sampling (`generation_config.json`): `None` where it says nothing.
#[derive(Clone, Debug, Default)]
pub struct SamplingDefaults {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
}

impl GenerateOptions {
    /// Refuse sampling values that describe no distribution: a temperature that is negative, NaN
    /// or infinite, a top-p outside (0, 1]. [`Session::generate`] checks them; an app can check
    /// them earlier, before loading a model, as the CLI does.
    pub fn validate(&self) -> Result<()> {
        check_sampling(self.temperature, self.top_p)
    }
}

/// Refuse a temperature and top-p that describe no distribution ([`GenerateOptions::validate`],
/// and the API's `Sampling::validate`).
pub fn check_sampling(temperature: f32, top_p: f32) -> Result<()> {
    match sampling_problem(Some(temperature as f64), Some(top_p as f64)) {
        Some(why) => Err(Error::bad_input(why)),
        None => Ok(()),
    }
}

/// The sampling checks of [`GenerateOptions::validate`]: what is wrong, if anything.
fn sampling_problem(temperature: Option<f64>, top_p: Option<f64>) -> Option<String> {
    if let Some(t) = temperature.filter(|t| !(t.is_finite() && *t >= 0.0)) {
        return Some(format!(
            "temperature {t} is not allowed: it should be a finite number >= 0 (0 is greedy)"
        ));
    }
    top_p
        .filter(|p| !(*p > 0.0 && *p <= 1.0))
        .map(|p| format!("top-p {p} is not allowed: it should be in (0, 1] (1 keeps every token)"))
}

/// Refuse, before any work, a generation of `max_new_tokens` after a prompt of `prompt` tokens
/// that does not fit the `free` positions left of a KV cache holding `capacity`: the prompt and
/// every generated token but the last (which is sampled, never fed back) take a position.
pub fn check_fits(prompt: usize, max_new_tokens: usize, free: usize, capacity: usize) -> Result<()> {
    let need = prompt.saturating_add(max_new_tokens.saturating_sub(1));
    if need <= free {
        return Ok(());
    }
    Err(Error::ContextFull {
        needed: need,
        free,
        capacity,
    })
}

/// Read `generation_config.json` beside a model (a folder; GGUF files carry none). `do_sample:
/// false` means greedy whatever the temperature says. A value of the wrong type or out of range
/// is an error naming the file.
pub fn sampling_defaults(model: &std::path::Path) -> Result<SamplingDefaults> {
    if model.is_file() {
        return gguf_sampling_defaults(model);
    }
    let path = model.join("generation_config.json");
    let Some(text) = crate::input::read_text_opt(&path, crate::input::CONFIG_CAP, "generation config")? else {
        return Ok(SamplingDefaults::default());
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::bad_model(&path, format!("not valid JSON: {e}")))?;
    // A present value of the wrong type is an error, never the default.
    let typed = |key: &str, want: &str, ok: fn(&Value) -> bool| -> Result<Option<&Value>> {
        Ok(match v.get(key).filter(|x| !x.is_null()) {
            Some(x) if !ok(x) => return Err(Error::bad_model(&path, format!("{key:?} should be {want}, found {x}"))),
            x => x,
        })
    };
    if typed("do_sample", "true or false", Value::is_boolean)?.and_then(Value::as_bool) == Some(false) {
        return Ok(SamplingDefaults {
            temperature: Some(0.0),
            ..Default::default()
        });
    }
    let temperature = typed("temperature", "a number", Value::is_number)?.and_then(Value::as_f64);
    let top_p = typed("top_p", "a number", Value::is_number)?.and_then(Value::as_f64);
    let top_k = typed("top_k", "a non-negative integer", Value::is_u64)?.and_then(Value::as_u64);
    if let Some(why) = sampling_problem(temperature, top_p) {
        return Err(Error::bad_model(&path, why));
    }
    Ok(SamplingDefaults {
        temperature: temperature.map(|x| x as f32),
        top_k: top_k.map(|x| usize::try_from(x).unwrap_or(usize::MAX)),
        top_p: top_p.map(|x| x as f32),
    })
}

/// A GGUF file's `general.sampling.*` keys (llama.cpp writes them from generation_config.json).
fn gguf_sampling_defaults(path: &std::path::Path) -> Result<SamplingDefaults> {
    let file = crate::model::gguf::GgufFile::open(path)?;
    let number = |key: &str| file.get(key).and_then(|v| v.as_f64());
    let temperature = number("general.sampling.temp");
    let top_p = number("general.sampling.top_p");
    if let Some(why) = sampling_problem(temperature, top_p) {
        return Err(Error::bad_model(path, format!("general.sampling: {why}")));
    }
    Ok(SamplingDefaults {
        temperature: temperature.map(|x| x as f32),
        top_k: file
            .get("general.sampling.top_k")
            .and_then(|v| v.as_u64())
            .map(|x| usize::try_from(x).unwrap_or(usize::MAX)),
        top_p: top_p.map(|x| x as f32),
    })
}

/// What one generation did, for the tokens/s line.
#[derive(Clone, Debug, Default)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub prompt_secs: f64,
    pub generated: usize,
    pub generate_secs: f64,
    /// Why it stopped: "stop token", "max tokens" or "context full".
    pub stopped_by: &'static str,
}

impl GenerateStats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_secs.max(1e-9)
    }
    /// Decode steps per second: the tokens after the first, which the prompt's pass samples.
    pub fn generate_tps(&self) -> f64 {
        self.generated.saturating_sub(1) as f64 / self.generate_secs.max(1e-9)
    }
}

/// A grammar that decides before each step which tokens may come next (constrained decoding: JSON
/// schemas, tool calls). A constrained generation runs one step at a time, since each mask
/// depends on the token before.
pub trait TokenConstraint: Send {
    /// The tokens allowed next, one bit each (1 = allowed), bit `i % 32` of word `i / 32`. A
    /// grammar that is complete allows only its end-of-sequence tokens.
    fn mask(&mut self) -> Result<Vec<u32>>;
    /// Take the token that was sampled.
    fn accept(&mut self, token: u32) -> Result<()>;
}

/// The decode loop as a state machine, for the callback form below and the event iterator of the
/// public API alike. Each step is one submit whose sampler writes the next token where the
/// following step's embedding reads it, so the GPU never waits for the CPU: [`Decode::next`] keeps
/// up to [`LOOKAHEAD`] steps queued and reads tokens back behind them.
pub struct Decode {
    spec: SampleSpec,
    pending: VecDeque<PendingToken>,
    /// The session's position once the prompt is in.
    prompt_end: usize,
    /// Tokens handed out so far.
    returned: usize,
    max_new_tokens: usize,
    start: Instant,
    /// When the first token arrived: the prompt's time ends and decoding's begins.
    first_at: Option<Instant>,
    constraint: Option<Box<dyn TokenConstraint>>,
}

impl Decode {
    /// Run `prompt` (appended to what the cache holds) in batches of at most `chunk` tokens and
    /// submit the step that samples the first new token. `max_new_tokens` must be at least 1.
    /// With a `constraint`, every sampled token is one it allows.
    pub fn start(
        sess: &mut Session,
        prompt: &[u32],
        spec: SampleSpec,
        max_new_tokens: usize,
        chunk: usize,
        mut constraint: Option<Box<dyn TokenConstraint>>,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::bad_input("the prompt has no tokens"));
        }
        let start = Instant::now();
        let mask = constraint.as_mut().map(|c| c.mask()).transpose()?;
        let split = prompt.len() - (prompt.len() - 1) % chunk.max(1) - 1;
        sess.prefill(&prompt[..split], chunk)?;
        let first = sess.submit_generation_step(Some(&prompt[split..]), spec, mask.as_deref())?;
        Ok(Self {
            spec,
            pending: VecDeque::from([first]),
            prompt_end: sess.position(),
            returned: 0,
            max_new_tokens: max_new_tokens.max(1),
            start,
            first_at: None,
            constraint,
        })
    }

    /// The next sampled token; `None` once `max_new_tokens` were returned or the context is full
    /// (see [`Decode::context_full`]).
    pub fn next(&mut self, sess: &mut Session) -> Result<Option<u32>> {
        let Some(next) = self.pending.pop_front() else {
            return Ok(None);
        };
        // Queue the steps after this one before waiting for it. Step i samples token i; the last
        // useful step samples token max_new_tokens - 1.
        let submitted = self.returned + 1 + self.pending.len();
        let room = sess.capacity().saturating_sub(sess.position());
        let wanted = self.max_new_tokens.saturating_sub(submitted).min(room);
        if self.constraint.is_none() {
            for _ in 0..wanted.min(LOOKAHEAD.saturating_sub(self.pending.len())) {
                self.pending
                    .push_back(sess.submit_generation_step(None, self.spec, None)?);
            }
        }
        let token = sess.wait_token(next)?;
        self.first_at.get_or_insert_with(Instant::now);
        if token as usize >= self.spec.vocab {
            return Err(Error::Device(format!(
                "the sampler produced token {token}, outside the vocabulary"
            )));
        }
        self.returned += 1;
        // A constrained step waits for its token: the next mask depends on it.
        if let Some(c) = self.constraint.as_mut() {
            c.accept(token)?;
            if wanted > 0 {
                let mask = c.mask()?;
                self.pending
                    .push_back(sess.submit_generation_step(None, self.spec, Some(&mask))?);
            }
        }
        Ok(Some(token))
    }

    /// Whether decoding ended for want of positions rather than at `max_new_tokens`.
    pub fn context_full(&self) -> bool {
        self.pending.is_empty() && self.returned < self.max_new_tokens
    }

    /// Seconds spent on the prompt (until its first token came back) and on decoding since.
    pub fn times(&self) -> (f64, f64) {
        match self.first_at {
            Some(f) => ((f - self.start).as_secs_f64(), f.elapsed().as_secs_f64()),
            None => (self.start.elapsed().as_secs_f64(), 0.0),
        }
    }

    /// Wait for the steps queued past the end and leave the session holding the prompt and the
    /// first `kept` returned tokens (or as many of them as were fed back: the last one sampled
    /// never is).
    pub fn finish(mut self, sess: &mut Session, kept: usize) -> Result<()> {
        let mut first_err = None;
        for p in self.pending.drain(..) {
            if let Err(e) = sess.wait_token(p) {
                first_err.get_or_insert(e);
            }
        }
        sess.truncate(self.prompt_end + kept);
        first_err.map_or(Ok(()), Err)
    }
}

impl Session {
    /// Run `prompt` (appended to what the cache already holds), then generate, calling `on_token`
    /// with each new token id as it is known. Returns the generated ids (stop token excluded).
    ///
    /// On return the session holds the prompt and every generated token that was fed back (all
    /// of them but the last when `max_new_tokens` ends it; all of them when a stop token does).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<(Vec<u32>, GenerateStats)> {
        if prompt.is_empty() {
            return Err(Error::bad_input("the prompt has no tokens"));
        }
        opts.validate()?;
        check_fits(
            prompt.len(),
            opts.max_new_tokens,
            self.capacity().saturating_sub(self.position()),
            self.capacity(),
        )?;
        let spec = SampleSpec {
            vocab: self.model.config.vocab,
            row: 0,
            temperature: opts.temperature,
            top_k: opts.top_k,
            top_p: opts.top_p,
            seed: opts.seed,
        };
        let mut stats = GenerateStats {
            prompt_tokens: prompt.len(),
            stopped_by: "max tokens",
            ..Default::default()
        };
        if opts.max_new_tokens == 0 {
            // Only the prompt: into the cache, nothing sampled.
            let start = Instant::now();
            self.forward(prompt, crate::model::plan::LogitRows::Last)?;
            stats.prompt_secs = start.elapsed().as_secs_f64();
            return Ok((Vec::new(), stats));
        }
        let mut decode = Decode::start(self, prompt, spec, opts.max_new_tokens, usize::MAX, None)?;
        let mut out = Vec::new();
        let run = (|| {
            while let Some(token) = decode.next(self)? {
                if opts.stop.contains(&token) {
                    stats.stopped_by = "stop token";
                    return Ok(());
                }
                out.push(token);
                on_token(token)?;
            }
            if decode.context_full() {
                stats.stopped_by = "context full";
            }
            Ok(())
        })();
        (stats.prompt_secs, stats.generate_secs) = decode.times();
        let fed = if stats.stopped_by == "stop token" {
            out.len()
        } else {
            out.len().saturating_sub(1)
        };
        let finished = decode.finish(self, fed);
        run?;
        finished?;
        stats.generated = out.len();
        Ok((out, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF (version 3, no tensors) holding `kvs`: (key, GGUF value type, value bytes).
    fn gguf_with(kvs: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        for (key, ty, value) in kvs {
            b.extend((key.len() as u64).to_le_bytes());
            b.extend(key.as_bytes());
            b.extend(ty.to_le_bytes());
            b.extend(value);
        }
        b.resize(b.len().next_multiple_of(32), 0);
        b
    }

    #[test]
    fn gguf_sampling_keys_are_the_defaults() {
        // llama.cpp's keys and GGUF's type ids: 4 = UINT32, 6 = FLOAT32.
        let dir = std::env::temp_dir().join(format!("wgmoe-sampling-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        let kvs = [
            ("general.sampling.temp", 6, 0.7f32.to_le_bytes().to_vec()),
            ("general.sampling.top_k", 4, 40u32.to_le_bytes().to_vec()),
            ("general.sampling.top_p", 6, 0.9f32.to_le_bytes().to_vec()),
        ];
        std::fs::write(&path, gguf_with(&kvs)).unwrap();
        let d = sampling_defaults(&path).unwrap();
        assert_eq!((d.temperature, d.top_k, d.top_p), (Some(0.7), Some(40), Some(0.9)));
        // None of them: greedy by the caller's default.
        std::fs::write(&path, gguf_with(&[])).unwrap();
        let d = sampling_defaults(&path).unwrap();
        assert_eq!((d.temperature, d.top_k, d.top_p), (None, None, None));
        // Out of range: an error naming the file and the key.
        std::fs::write(
            &path,
            gguf_with(&[("general.sampling.temp", 6, (-1f32).to_le_bytes().to_vec())]),
        )
        .unwrap();
        let e = sampling_defaults(&path).unwrap_err();
        assert!(matches!(e, Error::BadModel { .. }), "{e}");
        assert!(e.to_string().contains("general.sampling: temperature -1"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
