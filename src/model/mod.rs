//! Checkpoints to models: the config, the weights, the forward plan and the KV cache.

pub mod config;
pub mod gguf;
pub mod plan;
pub mod safetensors;
pub mod source;
pub mod weights;

use crate::error::{Error, Result};
use crate::gpu::{Context, Tensor};
use crate::kernels::{self, step};
use config::ModelConfig;
use plan::{KvCache, LogitRows, Plan, PlanIo};
use std::collections::HashMap;
use std::path::Path;
use weights::ModelWeights;

/// A loaded model: its description, its weights on the GPU and its RoPE table.
pub struct Model {
    pub ctx: Context,
    pub config: ModelConfig,
    pub weights: ModelWeights,
    inv_freq: Tensor,
    attention_factor: f32,
}

/// The tokenizer of a model folder (`tokenizer.json` & co.) or of a `.gguf` file's vocabulary;
/// the weights are not read.
pub fn tokenizer_for(path: &Path) -> Result<crate::tokenizer::Tokenizer> {
    if path.is_dir() {
        return crate::tokenizer::Tokenizer::from_dir(path);
    }
    let file = gguf::GgufFile::open(path)?;
    let (inner, template, bos, eos, eos_ids) = gguf::tokenizer_parts(&file)?;
    Ok(crate::tokenizer::Tokenizer::from_parts(inner, template, bos, eos, eos_ids))
}

impl Model {
    /// Load a Hugging Face model folder or a `.gguf` file.
    pub fn load(ctx: Context, path: &Path, progress: &dyn Fn(usize, usize)) -> Result<Self> {
        if path.is_dir() {
            Self::load_dir(ctx, path, progress)
        } else if path.is_file() {
            gguf::load_gguf(ctx, path, progress)
        } else {
            Err(Error::Invalid(format!("{}: no such model folder or .gguf file", path.display())))
        }
    }

    /// Load a Hugging Face model folder (`config.json` + safetensors).
    pub fn load_dir(ctx: Context, dir: &Path, progress: &dyn Fn(usize, usize)) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| Error::Invalid(format!("{}: {e}", cfg_path.display())))?;
        let config = ModelConfig::from_json(&text, &cfg_path.display().to_string())?;
        let src = safetensors::Safetensors::open_dir(dir)?;
        let weights = weights::load(&ctx, &config, &src, progress)?;
        Ok(Self::new(ctx, config, weights))
    }

    pub fn new(ctx: Context, config: ModelConfig, weights: ModelWeights) -> Self {
        let r = &config.rope;
        let (inv, attention_factor) = kernels::rope::rope_frequencies(r.dims, r.theta, &r.scaling, config.max_position);
        let inv_freq = Tensor::from_f32(&ctx, "inv_freq", &inv);
        Self { ctx, config, weights, inv_freq, attention_factor }
    }

    /// A fresh generation state with room for `max_seq` tokens.
    pub fn session(&self, max_seq: usize) -> Session<'_> {
        let max_seq = max_seq.max(1);
        Session {
            model: self,
            cache: KvCache::new(&self.ctx, &self.config, max_seq),
            step: step::new(&self.ctx, 0, 0),
            ids: Tensor::zeros(&self.ctx, "ids", max_seq),
            pos: 0,
            plans: HashMap::new(),
            tails: HashMap::new(),
        }
    }
}

/// One sequence being processed: the KV cache, the position, and the plans built so far.
pub struct Session<'m> {
    pub model: &'m Model,
    pub cache: KvCache,
    step: Tensor,
    ids: Tensor,
    pos: usize,
    plans: HashMap<(usize, LogitRows), Plan>,
    tails: HashMap<(usize, LogitRows), (String, kernels::Dispatch)>,
}

impl Session<'_> {
    /// Tokens already in the cache.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Tokens the cache can hold.
    pub fn capacity(&self) -> usize {
        self.cache.max_seq
    }

    /// Run `tokens` through the model at the current position in one batch and return the logits
    /// of every row (`rows == All`, `[T, vocab]`) or of the last one (`[vocab]`).
    pub fn forward(&mut self, tokens: &[u32], rows: LogitRows) -> Result<Vec<f32>> {
        let model = self.model;
        self.run(tokens, rows, None)?;
        self.plans[&(tokens.len(), rows)].logits.read_f32(&model.ctx)
    }

    /// Run `tokens` and, in the same submit, the dispatch `tail` builds from the plan's logits, the
    /// step buffer and the ids buffer (a sampler writing the next token into `ids[0]`). The tail is
    /// built once per plan and `tail_key` (a description of its spec), then replayed.
    pub fn forward_with(
        &mut self,
        tokens: &[u32],
        rows: LogitRows,
        tail_key: &str,
        tail: impl Fn(&Context, &Tensor, &Tensor, &Tensor) -> Result<kernels::Dispatch>,
    ) -> Result<()> {
        let key = (tokens.len(), rows);
        self.ensure_plan(key)?;
        let fresh = self.tails.get(&key).is_none_or(|(k, _)| k != tail_key);
        if fresh {
            let d = tail(&self.model.ctx, &self.plans[&key].logits, &self.step, &self.ids)?;
            self.tails.insert(key, (tail_key.to_string(), d));
        }
        let tail = self.tails.remove(&key);
        let r = self.run(tokens, rows, tail.as_ref().map(|t| &t.1));
        if let Some(t) = tail {
            self.tails.insert(key, t);
        }
        r
    }

    /// Read `ids[i]` (the token a sampler wrote) back to the host.
    pub fn read_id(&self, i: usize) -> Result<u32> {
        Ok(self.model.ctx.read_u32(&self.ids.buffer, i as u64, 1)?[0])
    }

    fn check(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.model.config.vocab;
        if tokens.is_empty() {
            return Err(Error::Invalid("no tokens to process".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Invalid(format!("token id {bad} is out of range: the vocabulary has {vocab} tokens")));
        }
        if self.pos + tokens.len() > self.cache.max_seq {
            return Err(Error::Invalid(format!(
                "{} tokens after {} would exceed the context of {} tokens",
                tokens.len(),
                self.pos,
                self.cache.max_seq
            )));
        }
        Ok(())
    }

    fn ensure_plan(&mut self, key: (usize, LogitRows)) -> Result<()> {
        if !self.plans.contains_key(&key) {
            let m = self.model;
            let io = PlanIo {
                ids: &self.ids,
                step: &self.step,
                cache: &self.cache,
                inv_freq: &m.inv_freq,
                attention_factor: m.attention_factor,
            };
            let plan = plan::build(&m.ctx, &m.config, &m.weights, &io, key.0, key.1)?;
            self.plans.insert(key, plan);
        }
        Ok(())
    }

    fn run(&mut self, tokens: &[u32], rows: LogitRows, tail: Option<&kernels::Dispatch>) -> Result<()> {
        self.check(tokens)?;
        let pos = self.pos;
        let ctx = &self.model.ctx;
        ctx.queue.write_buffer(&self.ids.buffer, 0, bytemuck::cast_slice(tokens));
        ctx.queue.write_buffer(&self.step.buffer, 0, bytemuck::cast_slice(&[pos as u32, tokens.len() as u32]));
        self.ensure_plan((tokens.len(), rows))?;
        let plan = &self.plans[&(tokens.len(), rows)];
        let mut refs: Vec<&kernels::Dispatch> = plan.dispatches.iter().collect();
        refs.extend(tail);
        self.model.ctx.submit(&refs);
        self.pos += tokens.len();
        Ok(())
    }
}
