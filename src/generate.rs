//! The decode loop: prefill the prompt, then one single-token step at a time, sampling on the GPU.
//! The sampled token is written straight into the ids buffer the next step's embedding reads, so
//! the CPU only reads it back to stream it and to check stop conditions.

use crate::error::{Error, Result};
use crate::kernels::sampling::{self, SampleSpec};
use crate::kernels::Dispatch;
use crate::model::plan::LogitRows;
use crate::model::Session;
use std::time::Instant;

/// Sampling and stopping.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// `<= 0`: greedy.
    pub temperature: f32,
    /// 0: off.
    pub top_k: usize,
    /// 1.0: off.
    pub top_p: f32,
    pub seed: u64,
    /// Token ids that end generation (not emitted).
    pub stop: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_new_tokens: 128, temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0, stop: Vec::new() }
    }
}

/// A model's default sampling (`generation_config.json`): `None` where it says nothing.
#[derive(Clone, Debug, Default)]
pub struct SamplingDefaults {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
}

/// Read `generation_config.json` beside a model (a folder; GGUF files carry none). `do_sample:
/// false` means greedy whatever the temperature says.
pub fn sampling_defaults(model: &std::path::Path) -> SamplingDefaults {
    let path = model.join("generation_config.json");
    let Some(v) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()) else {
        return SamplingDefaults::default();
    };
    if v.get("do_sample").and_then(|d| d.as_bool()) == Some(false) {
        return SamplingDefaults { temperature: Some(0.0), ..Default::default() };
    }
    SamplingDefaults {
        temperature: v.get("temperature").and_then(|x| x.as_f64()).map(|x| x as f32),
        top_k: v.get("top_k").and_then(|x| x.as_u64()).map(|x| x as usize),
        top_p: v.get("top_p").and_then(|x| x.as_f64()).map(|x| x as f32),
    }
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
    pub fn generate_tps(&self) -> f64 {
        self.generated as f64 / self.generate_secs.max(1e-9)
    }
}

impl Session<'_> {
    /// Run `prompt` (appended to what the cache already holds), then generate, calling `on_token`
    /// with each new token id as it is known. Returns the generated ids (stop token excluded).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<(Vec<u32>, GenerateStats)> {
        if prompt.is_empty() {
            return Err(Error::Invalid("the prompt has no tokens".into()));
        }
        if opts.temperature.is_nan() || !(opts.top_p > 0.0 && opts.top_p <= 1.0) {
            return Err(Error::Invalid(format!(
                "temperature must be a number and top-p in (0, 1]; got {} and {}",
                opts.temperature, opts.top_p
            )));
        }
        let mut stats = GenerateStats { prompt_tokens: prompt.len(), ..Default::default() };
        let start = Instant::now();
        let mut token = self.step_and_sample(prompt, opts)?;
        stats.prompt_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut out = Vec::new();
        stats.stopped_by = "max tokens";
        while out.len() < opts.max_new_tokens {
            if opts.stop.contains(&token) {
                stats.stopped_by = "stop token";
                break;
            }
            out.push(token);
            on_token(token)?;
            if out.len() == opts.max_new_tokens {
                break;
            }
            if self.position() + 1 > self.capacity() {
                stats.stopped_by = "context full";
                break;
            }
            token = self.step_and_sample(&[token], opts)?;
        }
        stats.generated = out.len();
        stats.generate_secs = start.elapsed().as_secs_f64();
        Ok((out, stats))
    }

    /// One forward pass over `tokens` whose last row is sampled on the GPU into the ids buffer;
    /// returns the sampled id.
    fn step_and_sample(&mut self, tokens: &[u32], opts: &GenerateOptions) -> Result<u32> {
        let vocab = self.model.config.vocab;
        let spec = SampleSpec {
            vocab,
            row: 0,
            temperature: opts.temperature,
            top_k: opts.top_k,
            top_p: opts.top_p,
            seed: opts.seed,
        };
        self.forward_with(tokens, LogitRows::Last, &format!("{spec:?}"), |ctx, logits, step, ids| -> Result<Dispatch> {
            sampling::sample(ctx, logits, spec, step, ids, 0)
        })?;
        let id = self.read_id(0)?;
        if id as usize >= vocab {
            return Err(Error::Gpu(format!("the sampler produced token {id}, outside the vocabulary")));
        }
        Ok(id)
    }
}
