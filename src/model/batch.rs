//! Continuous batching: several sequences in one KV cache, decoded together. The cache holds
//! `slots` sequences of `context` positions each (slot s owns rows s*context..); a decode step
//! feeds one token of every running sequence as one batch of rows, whose step buffer is a table
//! of (first row, position) per token (`shaders/step.wgsl`). So every weight is read once per
//! step for all sequences (the matrix-vector kernels take up to 8 columns), MoE layers route all
//! the step's tokens, and attention reads each token's own rows.
//!
//! A sequence joins by prefilling its prompt (all but the last token, in chunks) into its slot;
//! its last prompt token is then fed in the next decode step like any sampled one. Numbers do not
//! depend on the company: every row is computed the same way whatever the batch size (the
//! attention split is pinned to a single token's), so greedy output is the same alone or batched.

use super::plan::{KvCache, LogitRows, Plan};
use super::{check_ids, Model, KEPT_PLANS};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Tensor};
use crate::kernels::{self, attention::KvDtype, elementwise::Rows, sampling::SampleSpec, step};
use std::collections::HashMap;

/// One row of a decode step: feed `token` at `pos` of slot `slot`, then sample the next token.
pub struct Row<'a> {
    pub slot: usize,
    pub pos: usize,
    pub token: u32,
    pub sample: SampleSpec,
    /// Constrained decoding: the allowed tokens (bits; see `generate::TokenConstraint`).
    pub mask: Option<&'a [u32]>,
}

/// Plans by (rows, logit rows, table).
type PlanKey = (usize, LogitRows, bool);

/// The shared cache and the plans of a batch of sequences.
pub struct Batch {
    model: Model,
    cache: KvCache,
    context: usize,
    slots: usize,
    chunk: usize,
    step: Tensor,
    ids: Tensor,
    /// The sampled token of each row.
    out: Tensor,
    /// Each row's allowed-token bits (`words` per row).
    masks: Tensor,
    words: usize,
    readback: wgpu::Buffer,
    plans: HashMap<PlanKey, (Plan, u64)>,
    /// Per (rows, row): the sampler's spec and dispatch.
    samplers: HashMap<(usize, usize), (SampleSpec, Dispatch)>,
    maskers: HashMap<(usize, usize), Dispatch>,
    uses: u64,
}

impl Batch {
    /// Room for `slots` sequences of `context` positions; prompts run in chunks of `chunk`.
    pub fn new(model: &Model, slots: usize, context: usize, kv: KvDtype, chunk: usize) -> Result<Batch> {
        if slots == 0 || context == 0 {
            return Err(Error::bad_input("a batch needs at least one sequence of one position"));
        }
        let rows = slots * context;
        KvCache::check(&model.ctx, &model.config, rows, kv)?;
        let ctx = &model.ctx;
        let chunk = chunk.max(1);
        let words = model.config.vocab.div_ceil(32);
        let what = format!("a {kv} KV cache of {slots} x {context} positions");
        let (cache, step, ids, out, masks, readback) = ctx.scoped(&what, || {
            Ok((
                KvCache::new(ctx, &model.config, rows, kv),
                step::with_table(ctx, slots.max(chunk)),
                Tensor::zeros(ctx, "batch ids", slots.max(chunk)),
                Tensor::zeros(ctx, "batch sampled ids", slots),
                Tensor::zeros(ctx, "batch token masks", slots * words),
                ctx.buffer(&wgpu::BufferDescriptor {
                    label: Some("batch token readback"),
                    size: slots as u64 * 4,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            ))
        })?;
        Ok(Batch {
            model: model.clone(),
            cache,
            context,
            slots,
            chunk,
            step,
            ids,
            out,
            masks,
            words,
            readback,
            plans: HashMap::new(),
            samplers: HashMap::new(),
            maskers: HashMap::new(),
            uses: 0,
        })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Positions each sequence holds.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Bytes of the shared KV cache.
    pub fn cache_bytes(&self) -> u64 {
        self.cache.bytes()
    }

    /// Run `tokens` into slot `slot` from position `pos` (its earlier positions stay), in chunks,
    /// sampling nothing.
    pub fn prefill(&mut self, slot: usize, pos: usize, tokens: &[u32]) -> Result<()> {
        self.check_place(slot, pos + tokens.len())?;
        if tokens.is_empty() {
            return Ok(());
        }
        check_ids(tokens, self.model.config.vocab)?;
        let mut at = pos;
        for part in tokens.chunks(self.chunk) {
            let ctx = &self.model.ctx;
            ctx.queue.write_buffer(&self.ids.buffer, 0, bytemuck::cast_slice(part));
            let words = step::contiguous(at, part.len(), slot * self.context);
            ctx.queue
                .write_buffer(&self.step.buffer, 0, bytemuck::cast_slice(&words));
            let key = (part.len(), LogitRows::Last, false);
            self.ensure_plan(key)?;
            let plan = &self.plans[&key].0;
            let (from, _experts) = self.model.run_syncs(plan)?;
            let refs: Vec<&Dispatch> = plan.dispatches[from..].iter().collect();
            self.model.ctx.submit(&refs);
            at += part.len();
        }
        Ok(())
    }

    /// One decode step of up to `slots` rows (at most one per slot): the sampled token of each,
    /// or that row's own error (non-finite logits, a mask that allowed nothing); the outer error
    /// is the step's (bad rows, the device).
    pub fn step(&mut self, rows: &[Row<'_>]) -> Result<Vec<Result<u32>>> {
        let n = rows.len();
        if n == 0 || n > self.slots {
            return Err(Error::bad_input(format!(
                "a step of {n} rows in a batch of {} slots",
                self.slots
            )));
        }
        for r in rows {
            self.check_place(r.slot, r.pos + 1)?;
        }
        let tokens: Vec<u32> = rows.iter().map(|r| r.token).collect();
        check_ids(&tokens, self.model.config.vocab)?;
        let places: Vec<(usize, usize)> = rows.iter().map(|r| (r.slot * self.context, r.pos)).collect();
        let key = (n, LogitRows::All, true);
        self.ensure_plan(key)?;
        let vocab = self.model.config.vocab;
        for (i, r) in rows.iter().enumerate() {
            let logits = &self.plans[&key].0.logits;
            if self.samplers.get(&(n, i)).is_none_or(|(s, _)| *s != r.sample) {
                let spec = SampleSpec { row: i, ..r.sample };
                let d = kernels::sampling::sample(&self.model.ctx, logits, spec, &self.step, &self.out, i)?;
                self.samplers.insert((n, i), (r.sample, d));
            }
            if r.mask.is_some() && !self.maskers.contains_key(&(n, i)) {
                let row = Rows {
                    rows: 1,
                    width: vocab,
                    stride: vocab,
                    offset: i * vocab,
                };
                let d = kernels::elementwise::mask_logits(&self.model.ctx, logits, row, &self.masks, i * self.words)?;
                self.maskers.insert((n, i), d);
            }
        }
        let ctx = &self.model.ctx;
        ctx.queue
            .write_buffer(&self.ids.buffer, 0, bytemuck::cast_slice(&tokens));
        ctx.queue
            .write_buffer(&self.step.buffer, 0, bytemuck::cast_slice(&step::table(&places)));
        for (i, r) in rows.iter().enumerate() {
            if let Some(bits) = r.mask {
                let mut staged = bits[..bits.len().min(self.words)].to_vec();
                staged.resize(self.words, 0);
                let at = (i * self.words * 4) as u64;
                ctx.queue
                    .write_buffer(&self.masks.buffer, at, bytemuck::cast_slice(&staged));
            }
        }
        let plan = &self.plans[&key].0;
        // Held until the step is submitted: the experts this step routed stay in their slots.
        let (from, _experts) = self.model.run_syncs(plan)?;
        let mut refs: Vec<&Dispatch> = plan.dispatches[from..].iter().collect();
        for (i, r) in rows.iter().enumerate() {
            if r.mask.is_some() {
                refs.push(&self.maskers[&(n, i)]);
            }
            refs.push(&self.samplers[&(n, i)].1);
        }
        let bytes = ctx.submit_and_read(&refs, &self.out.buffer, 0, &self.readback, n as u64 * 4)?;
        let ids: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        Ok(rows
            .iter()
            .zip(ids)
            .map(|(r, id)| {
                if id == kernels::sampling::NONFINITE_TOKEN {
                    Err(Error::NonFinite { position: r.pos })
                } else if id as usize >= vocab {
                    Err(Error::Device(format!(
                        "the sampler produced token {id} at position {}, outside the vocabulary (did the mask allow nothing?)",
                        r.pos
                    )))
                } else {
                    Ok(id)
                }
            })
            .collect())
    }

    fn check_place(&self, slot: usize, end: usize) -> Result<()> {
        if slot >= self.slots {
            return Err(Error::bad_input(format!("slot {slot} of a batch of {}", self.slots)));
        }
        if end > self.context {
            return Err(Error::ContextFull {
                needed: end,
                free: self.context,
                capacity: self.context,
            });
        }
        Ok(())
    }

    /// Build plan `key` unless it exists; prompt plans beyond [`KEPT_PLANS`] give way, least
    /// recently used first (decode plans, one per row count, stay).
    fn ensure_plan(&mut self, key: PlanKey) -> Result<()> {
        self.uses += 1;
        if let Some((_, used)) = self.plans.get_mut(&key) {
            *used = self.uses;
            return Ok(());
        }
        if !key.2 {
            while self.plans.keys().filter(|k| !k.2).count() >= KEPT_PLANS {
                let oldest = self
                    .plans
                    .iter()
                    .filter(|(k, _)| !k.2)
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.plans.remove(&k);
                }
            }
        }
        let plan = self
            .model
            .build_plan(&self.ids, &self.step, &self.cache, key.0, key.1, key.2)?;
        if key.2 {
            // The samplers and maskers of a rebuilt decode plan read its new logits.
            self.samplers.retain(|k, _| k.0 != key.0);
            self.maskers.retain(|k, _| k.0 != key.0);
        }
        self.plans.insert(key, (plan, self.uses));
        Ok(())
    }
}
