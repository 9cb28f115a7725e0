//! Checkpoints to models: the config, the weights, the forward plan and the KV cache.

pub mod batch;
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
use std::sync::Arc;
use weights::ModelWeights;

/// A loaded model: its description, its weights on the GPU and its RoPE table. Clones are cheap
/// and share the weights (sessions hold one).
#[derive(Clone)]
pub struct Model {
    pub ctx: Context,
    pub config: Arc<ModelConfig>,
    pub weights: Arc<ModelWeights>,
    /// The bytes the checkpoint's tensors take in its file(s), when it came from one
    /// ([`source::TensorSource::stored_bytes`]): beside [`ModelWeights::gpu_bytes`], what loading cost.
    pub file_tensor_bytes: Option<u64>,
    /// What the loaded weights take and what a decode step reads of them, in the formats they
    /// were loaded in (a quantised file's mix of formats); `None` for weights made otherwise.
    pub footprint: Option<synthetic::Footprint>,
    /// Routed experts kept in host memory with a GPU cache of them, when the model does not fit
    /// the GPU memory it was given ([`experts`]).
    pub experts: Option<Arc<std::sync::Mutex<experts::ExpertCache>>>,
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
        Self::load_cancellable(ctx, path, opts, progress, &|| false)
    }

    /// [`Model::load_with`], stopped with [`Error::Cancelled`] between two tensors once
    /// `cancelled` says so.
    pub fn load_cancellable(
        ctx: Context,
        path: &Path,
        opts: &checkpoint::LoadOptions,
        progress: &dyn Fn(usize, usize),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Self> {
        crate::error::guard(&format!("loading {}", path.display()), || {
            let (config, src) = checkpoint::open_with(path, opts)?;
            let quantized;
            let inner: &dyn TensorSource = match opts.quantize {
                Some(q) => {
                    quantized = quantize::Quantized::new(src.as_ref(), q, &config);
                    &quantized
                }
                None => src.as_ref(),
            };
            let src = Cancellable { inner, cancelled };
            Self::from_source_with(ctx, config, &src, opts, progress)
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
            let mut model = ctx
                .clone()
                .scoped("the RoPE table", || Ok(Self::new(ctx, config, weights)))?;
            model.file_tensor_bytes = src.stored_bytes();
            model.footprint = Some(footprint);
            model.experts = cache.map(|c| Arc::new(std::sync::Mutex::new(c)));
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
            config: Arc::new(config),
            weights: Arc::new(weights),
            file_tensor_bytes: None,
            footprint: None,
            experts: None,
            inv_freq,
            attention_factor,
        }
    }

    /// Run `plan` up to its last expert-cache round trip ([`plan::MoeSync`]): each segment up
    /// to an offloaded layer's router is submitted, the router's expert ids read back, the experts
    /// placed in the layer's pool (rounds of the expert kernels where the batch needs more than
    /// it holds) and the ids rewritten as slots. Returns the index of the first dispatch left to
    /// run; 0 for a plan without round trips (then nothing was submitted). The cache's lock comes
    /// back with it, for the caller to hold until the rest is submitted.
    pub fn run_syncs<'m>(
        &'m self,
        plan: &Plan,
    ) -> Result<(usize, Option<std::sync::MutexGuard<'m, experts::ExpertCache>>)> {
        let (Some(mut cache), Some(readback)) = (self.expert_cache(), &plan.ids_readback) else {
            return Ok((0, None));
        };
        let m = self;
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
        Ok((from, Some(cache)))
    }

    /// Record the forward pass of `tokens` rows reading ids from `ids` and places from `step`,
    /// into `cache`. `table`: the step buffer places each row itself (a batch of sequences).
    pub fn build_plan(
        &self,
        ids: &Tensor,
        step: &Tensor,
        cache: &KvCache,
        tokens: usize,
        rows: LogitRows,
        table: bool,
    ) -> Result<Plan> {
        let offloaded = self.expert_cache().map_or(Vec::new(), |c| c.offloaded_layers());
        let io = PlanIo {
            ids,
            step,
            cache,
            inv_freq: &self.inv_freq,
            attention_factor: self.attention_factor,
            offloaded: &offloaded,
            table,
        };
        // Pipelines are built here: a driver or wgpu-core that chokes is an error, not a panic.
        let what = format!("the forward pass of {tokens} tokens");
        crate::error::guard(&what, || {
            self.ctx.scoped(&what, || {
                plan::build(&self.ctx, &self.config, &self.weights, &io, tokens, rows)
            })
        })
    }

    /// Like [`Model::session_with`], first checking that the KV cache fits the adapter: an error
    /// naming the limit instead of a failed allocation.
    pub fn try_session(&self, max_seq: usize, kv_dtype: KvDtype) -> Result<Session> {
        KvCache::check(&self.ctx, &self.config, max_seq.max(1), kv_dtype)?;
        let what = format!("a {kv_dtype} KV cache of {max_seq} positions");
        self.ctx.scoped(&what, || self.new_session(max_seq, kv_dtype))
    }

    /// A fresh generation state with room for `max_seq` tokens and an f32 KV cache (exact parity
    /// with an f32 reference; what the library's parity tests assume). Generation wants
    /// [`Model::session_with`] and [`KvDtype::F16`], as `wgmoe run`, `chat` and `bench` do.
    pub fn session(&self, max_seq: usize) -> Session {
        self.session_with(max_seq, KvDtype::F32)
    }

    /// A fresh generation state with room for `max_seq` tokens and a KV cache of `kv_dtype`:
    /// [`KvDtype::F16`] halves the cache's memory and the bytes attention reads per token of
    /// context (the decode cost that grows with the context), rounding each cached k and v to f16;
    /// [`KvDtype::F32`] keeps them exact.
    /// Panics where [`Model::try_session`] returns an error: for tests and tools that size their
    /// own caches.
    pub fn session_with(&self, max_seq: usize, kv_dtype: KvDtype) -> Session {
        match self.new_session(max_seq, kv_dtype) {
            Ok(s) => s,
            Err(e) => panic!("a session of {max_seq} positions: {e}"),
        }
    }

    fn new_session(&self, max_seq: usize, kv_dtype: KvDtype) -> Result<Session> {
        let max_seq = max_seq.max(1);
        let step = step::new(&self.ctx, 0, 0);
        let ids = Tensor::zeros(&self.ctx, "ids", max_seq);
        let log = Tensor::zeros(&self.ctx, "token_log", max_seq + 1);
        let advance = kernels::elementwise::advance_step(&self.ctx, &step, &ids, &log)?;
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
        Ok(Session {
            model: self.clone(),
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
            mask: None,
            mask_tails: HashMap::new(),
            uses: 0,
        })
    }
}

/// Every id of `tokens` is a row of the model's `vocab` logits (sessions, batches and the API
/// check prompts with it).
pub fn check_ids(tokens: &[u32], vocab: usize) -> Result<()> {
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(bad) => Err(Error::bad_input(format!(
            "token id {bad} is out of range: the vocabulary has {vocab} tokens"
        ))),
        None => Ok(()),
    }
}

/// A source whose reads fail with [`Error::Cancelled`] once `cancelled` says so: a load stops at
/// the next tensor.
struct Cancellable<'a> {
    inner: &'a dyn TensorSource,
    cancelled: &'a dyn Fn() -> bool,
}

impl TensorSource for Cancellable<'_> {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
    fn get(&self, name: &str) -> Result<source::RawTensor<'_>> {
        if (self.cancelled)() {
            return Err(Error::Cancelled);
        }
        self.inner.get(name)
    }
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }
    fn gpu_dtype_of(&self, name: &str) -> Result<crate::gpu::DType> {
        self.inner.gpu_dtype_of(name)
    }
    fn get_transposed(&self, name: &str) -> Option<Result<source::RawTensor<'_>>> {
        if (self.cancelled)() {
            return Some(Err(Error::Cancelled));
        }
        self.inner.get_transposed(name)
    }
    fn release(&self, name: &str) {
        self.inner.release(name)
    }
    fn stored_bytes(&self) -> Option<u64> {
        self.inner.stored_bytes()
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

/// Plans a session keeps besides its single-token one: prompts of other lengths rebuild theirs,
/// so a long conversation's GPU memory stays flat instead of growing with every new length.
pub const KEPT_PLANS: usize = 4;

/// One sequence being processed: the KV cache, the position, and the plans built so far.
pub struct Session {
    pub model: Model,
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
    /// Plans by (tokens, rows), each with the use count of its last use (for eviction).
    plans: HashMap<(usize, LogitRows), (Plan, u64)>,
    tails: HashMap<(usize, LogitRows), (String, Dispatch)>,
    /// Constrained decoding: the allowed-token bits of the next step, and per plan the dispatch
    /// that masks its logits with them (both made on first use).
    mask: Option<Tensor>,
    mask_tails: HashMap<(usize, LogitRows), Dispatch>,
    uses: u64,
}

impl Session {
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
    /// GPU's step buffer holds); the last row is sampled by `sample` and logged. With `mask`
    /// (one bit per token, 1 = allowed), the sampler only sees the allowed tokens. At most
    /// [`LOOKAHEAD`] + 1 steps may be pending.
    pub fn submit_generation_step(
        &mut self,
        prompt: Option<&[u32]>,
        sample: kernels::sampling::SampleSpec,
        mask: Option<&[u32]>,
    ) -> Result<PendingToken> {
        let n = prompt.map_or(1, <[u32]>::len);
        let rows = LogitRows::Last;
        if let Some(p) = prompt {
            self.stage(p)?;
        } else if self.pos + 1 > self.cache.max_seq {
            return Err(Error::ContextFull {
                needed: 1,
                free: 0,
                capacity: self.cache.max_seq,
            });
        }
        let key = (n, rows);
        self.ensure_plan(key)?;
        let tail_key = format!("{sample:?}");
        if self.tails.get(&key).is_none_or(|(k, _)| *k != tail_key) {
            let d = kernels::sampling::sample(
                &self.model.ctx,
                &self.plans[&key].0.logits,
                sample,
                &self.step,
                &self.ids,
                0,
            )?;
            self.tails.insert(key, (tail_key, d));
        }
        if let Some(bits) = mask {
            self.stage_mask(key, bits)?;
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
        // Held until the step is submitted: another session's uploads must not take the slots
        // this one's experts were placed in before its expert kernels are queued.
        let (from, _experts) = self.model.run_syncs(&self.plans[&key].0)?;
        let ctx = &self.model.ctx;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in &self.plans[&key].0.dispatches[from..] {
                d.record(&mut pass);
            }
            if mask.is_some() {
                self.mask_tails[&key].record(&mut pass);
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

    /// Write the next step's allowed-token bits (missing words mask their tokens) and make the
    /// masking dispatch of plan `key`.
    fn stage_mask(&mut self, key: (usize, LogitRows), bits: &[u32]) -> Result<()> {
        let vocab = self.model.config.vocab;
        let words = vocab.div_ceil(32);
        let ctx = &self.model.ctx;
        let mask = self
            .mask
            .get_or_insert_with(|| Tensor::zeros(ctx, "token mask", words))
            .clone();
        if !self.mask_tails.contains_key(&key) {
            let logits = &self.plans[&key].0.logits;
            let row = kernels::elementwise::Rows::packed(1, vocab);
            let d = kernels::elementwise::mask_logits(ctx, logits, row, &mask, 0)?;
            self.mask_tails.insert(key, d);
        }
        let mut staged = bits[..bits.len().min(words)].to_vec();
        staged.resize(words, 0);
        ctx.queue.write_buffer(&mask.buffer, 0, bytemuck::cast_slice(&staged));
        Ok(())
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
                .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))?;
        };
        status.map_err(|e| Error::Device(format!("reading back the token at {} failed: {e}", t.position)))?;
        let buf = &self.readback[t.slot];
        let id = {
            let view = buf
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Device(format!("{e:?}")))?;
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
        let start = self.pos;
        self.run(tokens, rows)?;
        let model = &self.model;
        let logits = self.plans[&(tokens.len(), rows)].0.logits.read_f32(&model.ctx)?;
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
        if tokens.is_empty() {
            return Err(Error::bad_input("no tokens to process"));
        }
        check_ids(tokens, self.model.config.vocab)?;
        if self.pos + tokens.len() > self.cache.max_seq {
            return Err(Error::ContextFull {
                needed: tokens.len(),
                free: self.cache.max_seq - self.pos,
                capacity: self.cache.max_seq,
            });
        }
        Ok(())
    }

    /// Build the plan of `key` unless the session has it, evicting the least recently used of
    /// the others past [`KEPT_PLANS`] (the single-token plan decode uses stays).
    fn ensure_plan(&mut self, key: (usize, LogitRows)) -> Result<()> {
        self.uses += 1;
        if let Some((_, used)) = self.plans.get_mut(&key) {
            *used = self.uses;
            return Ok(());
        }
        let decode = (1, LogitRows::Last);
        while self.plans.keys().filter(|k| **k != decode).count() >= KEPT_PLANS {
            let oldest = self
                .plans
                .iter()
                .filter(|(k, _)| **k != decode)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.plans.remove(&k);
                self.tails.remove(&k);
                self.mask_tails.remove(&k);
            }
        }
        let plan = self
            .model
            .build_plan(&self.ids, &self.step, &self.cache, key.0, key.1, false)?;
        self.plans.insert(key, (plan, self.uses));
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
        {
            let (from, _experts) = self.model.run_syncs(&self.plans[&key].0)?;
            let refs: Vec<&Dispatch> = self.plans[&key].0.dispatches[from..].iter().collect();
            self.model.ctx.submit(&refs);
        }
        self.pos += tokens.len();
        Ok(())
    }

    /// Run `tokens` into the cache in batches of at most `chunk`, reading nothing back: a long
    /// prompt's pass without a plan (and its activations) the size of the whole prompt.
    pub fn prefill(&mut self, tokens: &[u32], chunk: usize) -> Result<()> {
        for part in tokens.chunks(chunk.max(1)) {
            self.run(part, LogitRows::Last)?;
        }
        Ok(())
    }

    /// The cache's first `self.position()` positions, as bytes (for [`Session::restore_cache`]).
    pub fn save_cache(&self) -> Result<Vec<u8>> {
        let ctx = &self.model.ctx;
        let mut out = Vec::new();
        for (buffer, offset, len) in self.cache.prefix(self.pos) {
            if len > 0 {
                out.extend(ctx.read_bytes(buffer, offset, len)?);
            }
        }
        Ok(out)
    }

    /// Put back a cache [`Session::save_cache`] wrote at `position`, as this session's first
    /// positions. `bytes` must come from a session of the same model and KV precision.
    pub fn restore_cache(&mut self, position: usize, bytes: &[u8]) -> Result<()> {
        if position > self.cache.max_seq {
            return Err(Error::ContextFull {
                needed: position,
                free: self.cache.max_seq,
                capacity: self.cache.max_seq,
            });
        }
        let ranges = self.cache.prefix(position);
        let total: u64 = ranges.iter().map(|r| r.2).sum();
        if total != bytes.len() as u64 {
            return Err(Error::bad_input(format!(
                "a saved cache of {position} positions for this model takes {total} bytes, not {}: \
                 it was saved from another model or KV precision",
                bytes.len()
            )));
        }
        let ctx = &self.model.ctx;
        let mut at = 0usize;
        for (buffer, offset, len) in ranges {
            ctx.upload(buffer, offset, &bytes[at..at + len as usize])?;
            at += len as usize;
        }
        ctx.queue.submit([]);
        self.pos = position;
        Ok(())
    }

    /// Copy this session's cache into `other` (a session of the same model and size) on the GPU,
    /// and its position: the two then continue independently.
    pub fn copy_cache_to(&self, other: &mut Session) -> Result<()> {
        if other.cache.max_seq != self.cache.max_seq || other.cache.dtype != self.cache.dtype {
            return Err(Error::bad_input(
                "a cache can only be copied to a session of the same size and precision",
            ));
        }
        let ctx = &self.model.ctx;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        for ((src, offset, len), (dst, _, _)) in self
            .cache
            .prefix(self.pos)
            .into_iter()
            .zip(other.cache.prefix(self.pos))
        {
            if len > 0 {
                enc.copy_buffer_to_buffer(src, offset, dst, offset, len);
            }
        }
        ctx.queue.submit([enc.finish()]);
        other.pos = self.pos;
        Ok(())
    }
}

impl Session {
    /// The dispatches one generation step of `tokens` rows replays, in order (the plan, its
    /// sampler tail, the step advance), for `wgmoe bench --profile`; `None` until such a step has
    /// been submitted. Recording them advances the GPU's step buffer like a real step.
    pub fn step_dispatches(&self, tokens: usize) -> Option<Vec<&Dispatch>> {
        let key = (tokens, LogitRows::Last);
        let mut v: Vec<&Dispatch> = self.plans.get(&key)?.0.dispatches.iter().collect();
        v.push(&self.tails.get(&key)?.1);
        v.push(&self.advance);
        Some(v)
    }
}
