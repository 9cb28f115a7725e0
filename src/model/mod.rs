//! Checkpoints to models: the config, the weights, the forward plan and the KV cache.

pub mod checkpoint;
pub mod config;
pub mod dequant;
pub mod experts;
pub mod gguf;
pub mod layout;
pub mod loader;
pub mod plan;
pub mod quant;
pub mod quantize;
pub mod safetensors;
pub mod source;
pub mod synthetic;
pub mod weights;

use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Tensor};
pub use crate::kernels::attention::KvDtype;
use crate::kernels::{self, step};
pub use checkpoint::{tokenizer_for, LoadOptions};
use config::ModelConfig;
use plan::{KvCache, LogitRows, Plan, PlanIo};
use source::TensorSource;
use std::collections::HashMap;
use std::path::Path;
use weights::ModelWeights;

/// A loaded model: its description, its weights on the GPU and its RoPE table.
pub struct Model {
    pub ctx: Context,
    pub config: ModelConfig,
    pub weights: ModelWeights,
    /// The bytes the checkpoint's tensors take in its file(s), when it came from one
    /// ([`source::TensorSource::stored_bytes`]): beside [`ModelWeights::gpu_bytes`], what loading cost.
    pub file_tensor_bytes: Option<u64>,
    /// What the loaded weights take and what a decode step reads of them, in the formats they
    /// were loaded in (a quantised file's mix of formats); `None` for weights made otherwise.
    pub footprint: Option<synthetic::Footprint>,
    /// Routed experts kept in host memory with a GPU cache of them, when the model does not fit
    /// the GPU memory it was given ([`experts`]).
    pub experts: Option<std::sync::Mutex<experts::ExpertCache>>,
    inv_freq: Tensor,
    attention_factor: f32,
}

impl Model {
    /// Load a Hugging Face model folder or a `.gguf` file: the one entry for both (see
    /// [`checkpoint::open`]).
    pub fn load(ctx: Context, path: &Path, progress: &dyn Fn(usize, usize)) -> Result<Self> {
        Self::load_with(ctx, path, &checkpoint::LoadOptions::default(), progress)
    }

    /// [`Model::load`] with explicit [`checkpoint::LoadOptions`] (e.g. block-quantised weights
    /// expanded at load instead of kept packed).
    pub fn load_with(
        ctx: Context,
        path: &Path,
        opts: &checkpoint::LoadOptions,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Self> {
        crate::error::guard(&format!("loading {}", path.display()), || {
            let (config, src) = checkpoint::open_with(path, opts)?;
            match opts.quantize {
                Some(q) => {
                    let src = quantize::Quantized::new(src.as_ref(), q, &config);
                    Self::from_source_with(ctx, config, &src, opts, progress)
                }
                None => Self::from_source_with(ctx, config, src.as_ref(), opts, progress),
            }
        })
    }

    /// Upload the weights `config` describes from `src` (a checkpoint, or any other source).
    pub fn from_source(
        ctx: Context,
        config: ModelConfig,
        src: &dyn TensorSource,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Self> {
        Self::from_source_with(ctx, config, src, &checkpoint::LoadOptions::default(), progress)
    }

    /// [`Model::from_source`] within `opts`' GPU memory: routed experts that do not fit are
    /// offloaded to host memory with a GPU cache of them ([`experts`]), decided before anything
    /// is allocated.
    pub fn from_source_with(
        ctx: Context,
        config: ModelConfig,
        src: &dyn TensorSource,
        opts: &checkpoint::LoadOptions,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Self> {
        crate::error::guard("loading the model's weights", || {
            let layout = loader::source_layout(&config, src);
            let offload = experts::plan_for(&ctx, &config, &layout, &|s| loader::spec_dtype(src, s), &opts.cache)?;
            let (weights, footprint, host) = loader::load_offloaded(&ctx, &config, src, offload.as_ref(), progress)?;
            let cache = offload.map(|o| experts::ExpertCache::new(&config, &o, host));
            let mut model = Self::new(ctx, config, weights);
            model.file_tensor_bytes = src.stored_bytes();
            model.footprint = Some(footprint);
            model.experts = cache.map(std::sync::Mutex::new);
            Ok(model)
        })
    }

    /// The expert cache, when the model's experts are offloaded.
    pub fn expert_cache(&self) -> Option<std::sync::MutexGuard<'_, experts::ExpertCache>> {
        Some(self.experts.as_ref()?.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `GPU weights: N MiB (file tensors: M MiB)`: what the weights take on the adapter beside
    /// what they take in the file, so the cost of widening quantised weights at load is visible
    /// (the CLI prints it after every load).
    pub fn weights_line(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
        let gpu = mib(self.weights.gpu_bytes());
        match self.file_tensor_bytes {
            Some(file) => format!("GPU weights: {gpu} (file tensors: {})", mib(file)),
            None => format!("GPU weights: {gpu}"),
        }
    }

    pub fn new(ctx: Context, config: ModelConfig, weights: ModelWeights) -> Self {
        let r = &config.rope;
        let (inv, attention_factor) = kernels::rope::rope_frequencies(r.dims, r.theta, &r.scaling, config.max_position);
        let inv_freq = Tensor::from_f32(&ctx, "inv_freq", &inv);
        Self {
            ctx,
            config,
            weights,
            file_tensor_bytes: None,
            footprint: None,
            experts: None,
            inv_freq,
            attention_factor,
        }
    }

    /// Like [`Model::session_with`], first checking that the KV cache fits the adapter: an error
    /// naming the limit instead of a failed allocation.
    pub fn try_session(&self, max_seq: usize, kv_dtype: KvDtype) -> Result<Session<'_>> {
        KvCache::check(&self.ctx, &self.config, max_seq.max(1), kv_dtype)?;
        let what = format!("a {kv_dtype} KV cache of {max_seq} positions");
        self.ctx.scoped(&what, || Ok(self.session_with(max_seq, kv_dtype)))
    }

    /// A fresh generation state with room for `max_seq` tokens and an f32 KV cache (exact parity
    /// with an f32 reference; what the library's parity tests assume). Generation wants
    /// [`Model::session_with`] and [`KvDtype::F16`], as `wgmoe run`, `chat` and `bench` do.
    pub fn session(&self, max_seq: usize) -> Session<'_> {
        self.session_with(max_seq, KvDtype::F32)
    }

    /// A fresh generation state with room for `max_seq` tokens and a KV cache of `kv_dtype`:
    /// [`KvDtype::F16`] halves the cache's memory and the bytes attention reads per token of
    /// context (the decode cost that grows with the context), rounding each cached k and v to f16;
    /// [`KvDtype::F32`] keeps them exact.
    pub fn session_with(&self, max_seq: usize, kv_dtype: KvDtype) -> Session<'_> {
        let max_seq = max_seq.max(1);
        let step = step::new(&self.ctx, 0, 0);
        let ids = Tensor::zeros(&self.ctx, "ids", max_seq);
        let log = Tensor::zeros(&self.ctx, "token_log", max_seq + 1);
        let advance = kernels::elementwise::advance_step(&self.ctx, &step, &ids, &log)
            .expect("the step, ids and log buffers are sized for advance_step");
        let readback = (0..=LOOKAHEAD)
            .map(|_| {
                self.ctx.buffer(&wgpu::BufferDescriptor {
                    label: Some("token readback"),
                    size: 4,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        Session {
            model: self,
            cache: KvCache::new(&self.ctx, &self.config, max_seq, kv_dtype),
            step,
            ids,
            log,
            advance,
            readback,
            slot_busy: vec![false; LOOKAHEAD + 1],
            next_slot: 0,
            pos: 0,
            plans: HashMap::new(),
            tails: HashMap::new(),
        }
    }
}

/// Generation steps the CPU lets the GPU run ahead of the token it is reading back.
pub const LOOKAHEAD: usize = 3;

/// A sampled token on its way back to the host.
pub struct PendingToken {
    slot: usize,
    position: usize,
    submission: wgpu::SubmissionIndex,
    done: std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

/// One sequence being processed: the KV cache, the position, and the plans built so far.
pub struct Session<'m> {
    pub model: &'m Model,
    pub cache: KvCache,
    step: Tensor,
    ids: Tensor,
    /// `log[p]`: the sampled token that will sit at position `p`.
    log: Tensor,
    /// Logs the sampled token and advances the step buffer on the GPU.
    advance: Dispatch,
    /// Mappable copies of logged tokens, one per generation step in flight.
    readback: Vec<wgpu::Buffer>,
    /// A slot is busy from its map request until its token is read and the buffer unmapped.
    slot_busy: Vec<bool>,
    next_slot: usize,
    pos: usize,
    plans: HashMap<(usize, LogitRows), Plan>,
    tails: HashMap<(usize, LogitRows), (String, Dispatch)>,
}

impl Session<'_> {
    /// Tokens already in the cache.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Forget everything past `pos` (tokens computed ahead of a stop, or an edited conversation).
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Submit one generation step without waiting: `prompt` (written from the host) or, with
    /// `None`, the token the previous step sampled (already in the ids buffer, at the position the
    /// GPU's step buffer holds); the last row is sampled by `sample` and logged. At most
    /// [`LOOKAHEAD`] + 1 steps may be pending.
    pub fn submit_generation_step(
        &mut self,
        prompt: Option<&[u32]>,
        sample: kernels::sampling::SampleSpec,
    ) -> Result<PendingToken> {
        let n = prompt.map_or(1, <[u32]>::len);
        let rows = LogitRows::Last;
        if let Some(p) = prompt {
            self.stage(p)?;
        } else if self.pos + 1 > self.cache.max_seq {
            return Err(Error::Invalid(format!(
                "the context of {} tokens is full",
                self.cache.max_seq
            )));
        }
        let key = (n, rows);
        self.ensure_plan(key)?;
        let tail_key = format!("{sample:?}");
        if self.tails.get(&key).is_none_or(|(k, _)| *k != tail_key) {
            let d = kernels::sampling::sample(
                &self.model.ctx,
                &self.plans[&key].logits,
                sample,
                &self.step,
                &self.ids,
                0,
            )?;
            self.tails.insert(key, (tail_key, d));
        }
        self.pos += n;
        let position = self.pos;
        let slot = self.next_slot;
        self.next_slot = (slot + 1) % self.readback.len();
        let ctx = &self.model.ctx;
        if self.slot_busy[slot] {
            // A step abandoned by an error still holds this slot: let it finish and release it.
            ctx.wait()?;
            self.readback[slot].unmap();
        }
        self.slot_busy[slot] = true;
        let from = self.run_syncs(key)?;
        let ctx = &self.model.ctx;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in &self.plans[&key].dispatches[from..] {
                d.record(&mut pass);
            }
            self.tails[&key].1.record(&mut pass);
            self.advance.record(&mut pass);
        }
        enc.copy_buffer_to_buffer(&self.log.buffer, position as u64 * 4, &self.readback[slot], 0, 4);
        let submission = ctx.queue.submit([enc.finish()]);
        let (tx, done) = std::sync::mpsc::channel();
        self.readback[slot].slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        Ok(PendingToken {
            slot,
            position,
            submission,
            done,
        })
    }

    /// Wait for a submitted step's token.
    pub fn wait_token(&mut self, t: PendingToken) -> Result<u32> {
        let ctx = &self.model.ctx;
        let status = loop {
            if let Ok(r) = t.done.try_recv() {
                break r;
            }
            ctx.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(t.submission.clone()),
                    timeout: None,
                })
                .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        };
        status.map_err(|e| Error::Gpu(format!("reading back the token at {} failed: {e}", t.position)))?;
        let buf = &self.readback[t.slot];
        let id = {
            let view = buf
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("{e:?}")))?;
            u32::from_le_bytes([view[0], view[1], view[2], view[3]])
        };
        buf.unmap();
        self.slot_busy[t.slot] = false;
        if id == kernels::sampling::NONFINITE_TOKEN {
            return Err(Error::NonFinite {
                position: t.position - 1,
            });
        }
        Ok(id)
    }

    /// Tokens the cache can hold.
    pub fn capacity(&self) -> usize {
        self.cache.max_seq
    }

    /// Run `tokens` through the model at the current position in one batch and return the logits
    /// of every row (`rows == All`, `[T, vocab]`) or of the last one (`[vocab]`).
    pub fn forward(&mut self, tokens: &[u32], rows: LogitRows) -> Result<Vec<f32>> {
        let model = self.model;
        let start = self.pos;
        self.run(tokens, rows)?;
        let logits = self.plans[&(tokens.len(), rows)].logits.read_f32(&model.ctx)?;
        if let Some(bad) = logits.iter().position(|x| !x.is_finite()) {
            let row = bad / model.config.vocab;
            let position = match rows {
                LogitRows::All => start + row,
                LogitRows::Last => start + tokens.len() - 1,
            };
            return Err(Error::NonFinite { position });
        }
        Ok(logits)
    }

    fn check(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.model.config.vocab;
        if tokens.is_empty() {
            return Err(Error::Invalid("no tokens to process".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Invalid(format!(
                "token id {bad} is out of range: the vocabulary has {vocab} tokens"
            )));
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
            let offloaded = m.expert_cache().map_or(Vec::new(), |c| c.offloaded_layers());
            let io = PlanIo {
                ids: &self.ids,
                step: &self.step,
                cache: &self.cache,
                inv_freq: &m.inv_freq,
                attention_factor: m.attention_factor,
                offloaded: &offloaded,
            };
            // Pipelines are built here: a driver or wgpu-core that chokes is an error, not a panic.
            let what = format!("the forward pass of {} tokens", key.0);
            let plan = crate::error::guard(&what, || {
                m.ctx
                    .scoped(&what, || plan::build(&m.ctx, &m.config, &m.weights, &io, key.0, key.1))
            })?;
            self.plans.insert(key, plan);
        }
        Ok(())
    }

    /// Check `tokens` and write them and their position for the next recorded pass to read.
    fn stage(&mut self, tokens: &[u32]) -> Result<()> {
        self.check(tokens)?;
        let ctx = &self.model.ctx;
        ctx.queue
            .write_buffer(&self.ids.buffer, 0, bytemuck::cast_slice(tokens));
        let step = [self.pos as u32, tokens.len() as u32];
        ctx.queue
            .write_buffer(&self.step.buffer, 0, bytemuck::cast_slice(&step));
        Ok(())
    }

    fn run(&mut self, tokens: &[u32], rows: LogitRows) -> Result<()> {
        self.stage(tokens)?;
        self.ensure_plan((tokens.len(), rows))?;
        let key = (tokens.len(), rows);
        let from = self.run_syncs(key)?;
        let refs: Vec<&Dispatch> = self.plans[&key].dispatches[from..].iter().collect();
        self.model.ctx.submit(&refs);
        self.pos += tokens.len();
        Ok(())
    }

    /// Run plan `key` up to its last expert-cache round trip ([`plan::MoeSync`]): each segment up
    /// to an offloaded layer's router is submitted, the router's expert ids read back, the experts
    /// placed in the layer's pool (rounds of the expert kernels where the batch needs more than
    /// it holds) and the ids rewritten as slots. Returns the index of the first dispatch left to
    /// run; 0 for a plan without round trips (then nothing was submitted).
    fn run_syncs(&self, key: (usize, LogitRows)) -> Result<usize> {
        let plan = &self.plans[&key];
        let (Some(mut cache), Some(readback)) = (self.model.expert_cache(), &plan.ids_readback) else {
            return Ok(0);
        };
        let m = self.model;
        let ctx = &m.ctx;
        cache.stats.tokens += plan.tokens as u64;
        let dispatches = |range: std::ops::Range<usize>| -> Vec<&Dispatch> { plan.dispatches[range].iter().collect() };
        let mut from = 0;
        for sync in &plan.syncs {
            // The segment up to the router and the copy of its choices: one submission.
            let bytes = ctx.submit_and_read(
                &dispatches(from..sync.at),
                &sync.ids.buffer,
                0,
                readback,
                sync.pairs as u64 * 4,
            )?;
            let rounds = cache.route(sync.layer, &bytemuck::pod_collect_to_vec::<u8, u32>(&bytes))?;
            for (i, round) in rounds.iter().enumerate() {
                cache.upload(ctx, &m.weights, sync.layer, &round.uploads)?;
                ctx.queue
                    .write_buffer(&sync.ids.buffer, 0, bytemuck::cast_slice(&round.ids));
                // The last round runs with what follows it.
                if i + 1 < rounds.len() {
                    ctx.submit(&dispatches(sync.experts.clone()));
                }
            }
            from = sync.at;
        }
        ctx.check()?;
        Ok(from)
    }
}

impl Session<'_> {
    /// The dispatches one generation step of `tokens` rows replays, in order (the plan, its
    /// sampler tail, the step advance), for `wgmoe bench --profile`; `None` until such a step has
    /// been submitted. Recording them advances the GPU's step buffer like a real step.
    pub fn step_dispatches(&self, tokens: usize) -> Option<Vec<&Dispatch>> {
        let key = (tokens, LogitRows::Last);
        let mut v: Vec<&Dispatch> = self.plans.get(&key)?.dispatches.iter().collect();
        v.push(&self.tails.get(&key)?.1);
        v.push(&self.advance);
        Some(v)
    }
}
