//! The forward-plan builder: one walk over the model description that turns a batch of `tokens`
//! rows into a list of recorded dispatches (embedding, every layer, the logits head). The same
//! builder serves every architecture (DESIGN.md principle 1) and both prefill (many rows) and
//! decode (one row against the KV cache); a plan is built once per batch size and replayed with
//! new positions written to the step buffer.

use super::config::{Attention, Ffn, ModelConfig, QkNorm};
use super::weights::{AttnWeights, FfnWeights, Linear, ModelWeights, SharedWeights};
use crate::error::Result;
use crate::gpu::Dispatch;
use crate::gpu::{Context, Tensor, Weight};
use crate::kernels;
use kernels::attention::{AttnSpec, KvDtype};
use kernels::elementwise::Rows;
use kernels::matmul::{MatmulSpec, NormPrologue};
use kernels::qkv::{prepare_qkv, QkNorms, QkvSpec};
use kernels::rope::RopeLayout;

/// DeepSeek builds `q_a_layernorm` / `kv_a_layernorm` with the default eps, not `rms_norm_eps`.
const MLA_NORM_EPS: f32 = 1e-6;

/// The per-layer KV cache: GQA keeps K and V `[max_seq, KV*hd]`; MLA one `[max_seq, r + dr]` of
/// normalised latents and roped shared keys (MODELS.md §6.5). Elements are f32, f16 or q8
/// (`dtype`); the tensors are sized in 32-bit words, so f16 halves both the memory and the bytes
/// attention reads per token of context, and q8 takes 9/32 of f32's.
pub struct KvCache {
    pub max_seq: usize,
    pub dtype: KvDtype,
    pub layers: Vec<(Tensor, Option<Tensor>)>,
    /// Elements per position and per written row of the keys (or MLA latents) and the values.
    k_shape: (usize, usize),
    v_shape: (usize, usize),
}

impl KvCache {
    pub fn new(ctx: &Context, cfg: &ModelConfig, max_seq: usize, dtype: KvDtype) -> Self {
        // Rows of `row` elements: a KV head, or MLA's latent row.
        let z = |name: String, row: usize, per_position: usize| {
            Tensor::zeros(ctx, &name, dtype.words(max_seq * per_position, row).max(1))
        };
        let (kv, hd, vd) = (cfg.kv_heads, cfg.head_dim, cfg.v_head_dim);
        let layers = (0..cfg.layers.len())
            .map(|i| match &cfg.attention {
                Attention::Gqa { .. } => (
                    z(format!("k_cache.{i}"), hd, kv * hd),
                    Some(z(format!("v_cache.{i}"), vd, kv * vd)),
                ),
                Attention::Mla {
                    kv_lora_rank, rope_dim, ..
                } => {
                    let row = kv_lora_rank + rope_dim;
                    (z(format!("latent_cache.{i}"), row, row), None)
                }
            })
            .collect();
        let (k_shape, v_shape) = match &cfg.attention {
            Attention::Gqa { .. } => ((kv * hd, hd), (kv * vd, vd)),
            Attention::Mla {
                kv_lora_rank, rope_dim, ..
            } => ((kv_lora_rank + rope_dim, kv_lora_rank + rope_dim), (0, 1)),
        };
        Self {
            max_seq,
            dtype,
            layers,
            k_shape,
            v_shape,
        }
    }

    /// Where the first `positions` positions live: (buffer, byte offset, bytes) for each layer's
    /// keys then values. Positions are the outer index; a q8 cache keeps its block scales after
    /// all of its bytes, so it has two ranges per tensor.
    pub fn prefix(&self, positions: usize) -> Vec<(&wgpu::Buffer, u64, u64)> {
        let positions = positions.min(self.max_seq);
        let mut tensors: Vec<(&Tensor, (usize, usize))> = Vec::new();
        for (k, v) in &self.layers {
            tensors.push((k, self.k_shape));
            tensors.extend(v.iter().map(|v| (v, self.v_shape)));
        }
        let mut out = Vec::new();
        for (t, (per_position, row)) in tensors {
            let (n, all) = (positions * per_position, self.max_seq * per_position);
            match self.dtype {
                KvDtype::Q8 => {
                    let block = KvDtype::q8_block(row);
                    out.push((&*t.buffer, 0, n.div_ceil(4) as u64 * 4));
                    out.push((&*t.buffer, all.div_ceil(4) as u64 * 4, n.div_ceil(block) as u64 * 4));
                }
                d => out.push((&*t.buffer, 0, d.words(n, row) as u64 * 4)),
            }
        }
        out
    }

    /// Whether a cache of `max_seq` positions fits the adapter: each layer's tensors within one
    /// binding. Checked before anything is allocated.
    pub fn check(ctx: &Context, cfg: &ModelConfig, max_seq: usize, dtype: KvDtype) -> Result<()> {
        let (row, per_position) = match &cfg.attention {
            Attention::Gqa { .. } => {
                let hd = cfg.head_dim.max(cfg.v_head_dim);
                (hd, cfg.kv_heads * hd)
            }
            Attention::Mla {
                kv_lora_rank, rope_dim, ..
            } => (kv_lora_rank + rope_dim, kv_lora_rank + rope_dim),
        };
        let bytes = dtype.words(max_seq * per_position, row) as u64 * 4;
        check_binding(
            ctx,
            format!(
                "one layer's {} KV cache for a context of {max_seq} tokens (use a smaller --context)",
                dtype.name()
            ),
            bytes,
        )
    }

    pub fn bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|(k, v)| (k.len + v.as_ref().map_or(0, |v| v.len)) as u64 * 4)
            .sum()
    }
}

/// Which rows get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogitRows {
    All,
    Last,
}

/// What the plan reads and writes that outlives it: token ids in, positions, the cache.
pub struct PlanIo<'a> {
    pub ids: &'a Tensor,
    pub step: &'a Tensor,
    pub cache: &'a KvCache,
    pub inv_freq: &'a Tensor,
    pub attention_factor: f32,
    /// Layers whose routed experts are offloaded ([`super::experts`]): the plan stops after their
    /// routers ([`MoeSync`]).
    pub offloaded: &'a [bool],
    /// The step buffer holds a table: each row is one token of its own sequence (continuous
    /// batching). Attention then runs the rows kernel, split into as many key chunks as one
    /// token alone gets, so a sequence's numbers do not depend on what it is batched with.
    pub table: bool,
}

/// Where a forward pass waits for the CPU: after an offloaded layer's router, the CPU reads the
/// expert ids (`pairs` of them in `ids`), places the experts in the layer's pool and rewrites the
/// ids as slots, then the pass goes on at `at`. `experts` are the dispatches that read the pool
/// (a round runs them alone when the batch needs more experts than the pool holds); any
/// dispatches between their end and the next sync follow the last round.
#[derive(Clone)]
pub struct MoeSync {
    pub layer: usize,
    pub at: usize,
    pub experts: std::ops::Range<usize>,
    pub ids: Tensor,
    pub pairs: usize,
}

/// A recorded forward pass for a fixed number of token rows.
pub struct Plan {
    pub tokens: usize,
    pub dispatches: Vec<Dispatch>,
    /// `[rows, vocab]` with rows = tokens or 1.
    pub logits: Tensor,
    pub logit_rows: usize,
    /// The CPU round trips of offloaded expert layers, in order.
    pub syncs: Vec<MoeSync>,
    /// Where the syncs' expert ids are copied for the CPU to read (sized for the largest).
    pub ids_readback: Option<wgpu::Buffer>,
}

/// Scratch activations of one plan, sized for its row count.
struct Scratch {
    /// The residual stream `[T, D]`.
    x: Tensor,
    /// RMSNorm(x), for the readers after a projection that normalised it in its prologue.
    h: Tensor,
    /// The attention input projection: fused q|k|v rows (GQA), `[q | c | k_pe]` rows (MLA), or
    /// the query alone (MLA with a low-rank query).
    proj: Tensor,
    /// MLA: the absorbed query `[q_lat | q_pe]` per head.
    q_cat: Tensor,
    /// Attention output per head (GQA: `[T, H*dv]`; MLA: the latent `[T, H*r]`).
    attn_out: Tensor,
    gu: Tensor,
    act: Tensor,
    tmp: Tensor,
    small: Tensor,
    router_logits: Tensor,
    expert_ids: Tensor,
    expert_weights: Tensor,
}

/// Floats per token row of each scratch buffer, by name. The projections' widths are read off the
/// weights, as the physical layout ([`super::layout`]) made them: the attention input projection
/// (fused q|k|v, MLA's `[q | c | k_pe]` or low-rank `[q_a | c | k_pe]` and the query after
/// `q_b`), the gate|up rows of a dense or separate shared MLP, the router's rows (the experts and
/// Qwen2-MoE's folded shared-expert gate); the expert slots per token count folded shared experts.
fn scratch_widths<W: Dims, T>(cfg: &ModelConfig, w: &ModelWeights<W, T>) -> [(&'static str, usize); 12] {
    let d = cfg.hidden;
    // (proj, small, the low-rank query's width)
    let (mut proj, mut small, mut q_lora) = (0, 0, 0);
    let (mut gate_up, mut logits, mut slots) = (2, 1, 1);
    for (layer, lw) in cfg.layers.iter().zip(&w.layers) {
        match &lw.attn {
            AttnWeights::Gqa { qkv, .. } => proj = proj.max(qkv.w.rows()),
            AttnWeights::Mla { q_kv_a, q_b: None, .. } => proj = proj.max(q_kv_a.w.rows()),
            AttnWeights::Mla {
                q_kv_a, q_b: Some(qb), ..
            } => {
                proj = proj.max(qb.b.w.rows());
                small = small.max(q_kv_a.w.rows());
                q_lora = q_lora.max(qb.b.w.cols());
            }
        }
        match &lw.ffn {
            FfnWeights::Dense { gate_up: gu, .. } => gate_up = gate_up.max(gu.w.rows()),
            FfnWeights::Moe { router, shared, .. } => {
                logits = logits.max(router.w.rows());
                if let Some(SharedWeights::Separate { gate_up: gu, .. }) = shared {
                    gate_up = gate_up.max(gu.w.rows());
                }
                if let Ffn::Moe { top_k, .. } = &layer.ffn {
                    slots = slots.max(top_k + layer.ffn.shared_slots().unwrap_or(0));
                }
            }
        }
    }
    // Attention's own buffers: MLA's absorbed query and latent output, and the output per head.
    let (q_cat, attn_out) = match &cfg.attention {
        Attention::Gqa { .. } => (0, cfg.heads * cfg.v_head_dim),
        Attention::Mla {
            kv_lora_rank: r,
            rope_dim: dr,
            ..
        } => (cfg.heads * (r + dr), cfg.heads * r),
    };
    [
        ("x", d),
        ("h", d),
        ("proj", proj),
        ("q_cat", q_cat),
        ("attn_out", attn_out),
        ("gate_up", gate_up),
        ("act", gate_up / 2),
        // MLA's per-head values (H*dv) pass through here on their way to o_proj; prefill's normed
        // q_a rows too.
        ("tmp", d.max(cfg.heads * cfg.v_head_dim).max(q_lora)),
        ("small", small),
        ("router_logits", logits),
        ("expert_ids", slots),
        ("expert_weights", slots),
    ]
}

/// What the session side needs on the GPU besides the weights, reserved when the cache is sized:
/// a KV cache for `context` tokens of `kv` and the activations of a batch of `batch` tokens with
/// logits for `logit_rows` of them (and of single-token decode).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionNeeds {
    pub context: usize,
    pub batch: usize,
    pub logit_rows: usize,
    pub kv: crate::kernels::attention::KvDtype,
}

impl Default for SessionNeeds {
    fn default() -> Self {
        Self {
            context: 4096,
            batch: 512,
            logit_rows: 1,
            kv: crate::kernels::attention::KvDtype::F16,
        }
    }
}

/// The shape of a weight leaf: a GPU [`Weight`] or its [`Spec`](super::layout::Spec), so scratch
/// can be sized before the weights exist.
pub trait Dims {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
}

impl Dims for Weight {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
}

impl Dims for super::layout::Spec {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
}

/// What a session of `needs` takes on the GPU besides the weights: its KV cache, and a plan for a
/// batch of `needs.batch` tokens and one for single-token decode (scratch, the MoE blocks' own
/// scratch and the logits), as [`KvCache::new`], [`build`] and [`kernels::moe`] allocate them.
pub fn session_bytes(cfg: &ModelConfig, layout: &super::layout::Layout, needs: &SessionNeeds) -> u64 {
    let max_seq = needs.context.max(1);
    let kv = needs.kv;
    let (hd, vd) = (cfg.head_dim, cfg.v_head_dim);
    let words: usize = match &cfg.attention {
        Attention::Gqa { .. } => kv.words(max_seq * cfg.kv_heads * hd, hd) + kv.words(max_seq * cfg.kv_heads * vd, vd),
        Attention::Mla {
            kv_lora_rank, rope_dim, ..
        } => {
            let row = kv_lora_rank + rope_dim;
            kv.words(max_seq * row, row)
        }
    };
    let per_token: usize = scratch_widths(cfg, layout).iter().map(|(_, w)| w).sum();
    let plan = |t: usize| -> u64 {
        let mut floats = t * per_token + needs.logit_rows.min(t) * cfg.vocab;
        for l in &cfg.layers {
            if let Ffn::Moe {
                experts, top_k, inter, ..
            } = &l.ffn
            {
                let k = top_k + l.ffn.shared_slots().unwrap_or(0);
                let e = experts + l.ffn.shared_slots().unwrap_or(0);
                floats += t * k * inter.next_multiple_of(8);
                if t > kernels::moe::DECODE_MAX_TOKENS {
                    floats += t * k * cfg.hidden + e * (t + 1);
                }
            }
        }
        floats as u64 * 4
    };
    // Uniform parameters, step and id buffers and the 16-byte rounding of small ones.
    let small = 64 << 10;
    (words * cfg.layers.len()) as u64 * 4 + plan(needs.batch.max(1)) + plan(1) + small
}

/// A buffer of `bytes` must fit one storage binding (DESIGN.md principle 6).
fn check_binding(ctx: &Context, what: String, bytes: u64) -> Result<()> {
    let limit = ctx.caps.max_storage_binding.min(ctx.caps.max_buffer);
    if bytes > limit {
        return Err(crate::Error::Limit {
            what,
            needed: bytes,
            limit,
            limit_name: "max_storage_buffer_binding_size",
        });
    }
    Ok(())
}

/// Whether a forward pass of `tokens` rows fits the adapter: every scratch buffer and the logits
/// within one binding. `build` checks this before allocating anything.
pub fn check_plan(ctx: &Context, cfg: &ModelConfig, w: &ModelWeights, tokens: usize, rows: LogitRows) -> Result<()> {
    for (name, width) in scratch_widths(cfg, w) {
        check_binding(
            ctx,
            format!("the {name} activations of {tokens} tokens"),
            (tokens * width) as u64 * 4,
        )?;
    }
    let logit_rows = if rows == LogitRows::All { tokens } else { 1 };
    check_binding(
        ctx,
        format!(
            "the logits of {logit_rows} rows x {} tokens (process fewer tokens at once)",
            cfg.vocab
        ),
        (logit_rows * cfg.vocab) as u64 * 4,
    )
}

impl Scratch {
    fn new(ctx: &Context, cfg: &ModelConfig, w: &ModelWeights, t: usize) -> Self {
        let [x, h, proj, q_cat, attn_out, gu, act, tmp, small, router_logits, expert_ids, expert_weights] =
            scratch_widths(cfg, w).map(|(name, width)| Tensor::zeros(ctx, name, (t * width).max(1)));
        Self {
            x,
            h,
            proj,
            q_cat,
            attn_out,
            gu,
            act,
            tmp,
            small,
            router_logits,
            expert_ids,
            expert_weights,
        }
    }
}

struct Builder<'a> {
    ctx: &'a Context,
    cfg: &'a ModelConfig,
    t: usize,
    s: Scratch,
    out: Vec<Dispatch>,
    offloaded: &'a [bool],
    syncs: Vec<MoeSync>,
}

impl Builder<'_> {
    fn push(&mut self, d: Dispatch) {
        self.out.push(d);
    }

    fn extend(&mut self, d: Vec<Dispatch>) {
        self.out.extend(d);
    }

    fn linear(&mut self, lin: &Linear, x: &Tensor, y: &Tensor, accumulate: bool) -> Result<()> {
        let mut spec = MatmulSpec::packed(self.t, &lin.w);
        spec.accumulate = accumulate;
        let d = kernels::matmul::matmul(self.ctx, spec, x, &lin.w, lin.bias.as_ref(), y)?;
        self.extend(d);
        Ok(())
    }

    /// `y = lin(RMSNorm(x; norm))` in one dispatch where the norm fits the projection's prologue
    /// (decode); `store` also leaves `RMSNorm(x)` in `h` for the layer's other readers.
    fn normed_linear(&mut self, norm: &Weight, lin: &Linear, x: &Tensor, y: &Tensor, store: bool) -> Result<()> {
        let h = self.s.h.clone();
        let prologue = NormPrologue {
            weight: norm,
            eps: self.cfg.eps,
            normed: &h,
            store,
        };
        let d = kernels::matmul::matmul_normed(
            self.ctx,
            MatmulSpec::packed(self.t, &lin.w),
            x,
            prologue,
            &lin.w,
            lin.bias.as_ref(),
            y,
        )?;
        self.extend(d);
        Ok(())
    }

    fn attention_gqa(&mut self, layer: usize, w: &AttnWeights, norm: &Weight, io: &PlanIo<'_>) -> Result<()> {
        let AttnWeights::Gqa {
            qkv,
            o,
            q_norm,
            k_norm,
            sinks,
        } = w
        else {
            unreachable!()
        };
        let cfg = self.cfg;
        let Attention::Gqa { qk_norm, clip_qkv, .. } = &cfg.attention else {
            unreachable!()
        };
        let (t, h, kv, hd) = (self.t, cfg.heads, cfg.kv_heads, cfg.head_dim);
        let (sq, so, x) = (self.s.proj.clone(), self.s.attn_out.clone(), self.s.x.clone());
        // One projection of the normed input into fused rows [q heads | k heads | v heads].
        self.normed_linear(norm, qkv, &x, &sq, false)?;
        let spec = QkvSpec {
            tokens: t,
            heads: h,
            kv_heads: kv,
            head_dim: hd,
            layout: RopeLayout::Half,
            attention_factor: io.attention_factor,
            eps: cfg.eps,
            clip: *clip_qkv,
            max_seq: io.cache.max_seq,
            kv_dtype: io.cache.dtype,
        };
        let row = spec.row_width();
        // Per-head norms (Qwen3) and OLMoE's norms over the whole q and k projections both run
        // inside prepare_qkv.
        let norms = match (q_norm, k_norm) {
            (Some(q), Some(k)) => Some(QkNorms {
                q,
                k,
                full: *qk_norm == QkNorm::Full,
            }),
            _ => None,
        };
        let (kc, vc) = &io.cache.layers[layer];
        let Some(vc) = vc.as_ref() else {
            return Err(crate::error::shape_err(
                "attention",
                "a GQA layer's KV cache has no values",
            ));
        };
        self.push(prepare_qkv(self.ctx, spec, &sq, norms, io.inv_freq, io.step, kc, vc)?);
        let mut spec = AttnSpec::gqa(t, h, kv, hd, io.cache.max_seq);
        spec.q_row_stride = row;
        spec.scale = cfg.attn_scale;
        spec.window = cfg.layers[layer].window.map(|w| w as u32);
        spec.sinks = sinks.is_some();
        spec.kv_dtype = io.cache.dtype;
        if io.table {
            pin_for_table(self.ctx, &mut spec)?;
        }
        self.push(kernels::attention::attention(
            self.ctx,
            spec,
            &sq,
            kc,
            vc,
            sinks.as_ref(),
            io.step,
            &so,
        )?);
        self.linear(o, &so, &x, true)
    }

    fn attention_mla(&mut self, layer: usize, w: &AttnWeights, norm: &Weight, io: &PlanIo<'_>) -> Result<()> {
        let AttnWeights::Mla {
            q_kv_a,
            q_b,
            kv_norm,
            uk_t,
            uv,
            o,
        } = w
        else {
            unreachable!()
        };
        let Attention::Mla {
            kv_lora_rank: r,
            nope_dim: dn,
            rope_dim: dr,
            v_dim: dv,
            ..
        } = self.cfg.attention
        else {
            unreachable!()
        };
        let (t, h) = (self.t, self.cfg.heads);
        let s = &self.s;
        let (x, sproj, qcat, olat, tmp, small) = (
            s.x.clone(),
            s.proj.clone(),
            s.q_cat.clone(),
            s.attn_out.clone(),
            s.tmp.clone(),
            s.small.clone(),
        );
        // One projection of the normed input into [q | c | k_pe] rows, or [q_a | c | k_pe] rows
        // (in `small`) whose q_a the normed q_b projection (`tmp` takes its normed rows in prefill)
        // turns into the query.
        let stacked = q_kv_a.w.rows;
        let q_part = stacked - (r + dr);
        let (query, q_stride, latent) = match q_b {
            None => {
                self.normed_linear(norm, q_kv_a, &x, &sproj, false)?;
                (sproj.clone(), stacked, sproj.clone())
            }
            Some(qb) => {
                self.normed_linear(norm, q_kv_a, &x, &small, false)?;
                let prologue = NormPrologue {
                    weight: &qb.norm,
                    eps: MLA_NORM_EPS,
                    normed: &tmp,
                    store: false,
                };
                let spec = MatmulSpec {
                    x_stride: stacked,
                    ..MatmulSpec::packed(t, &qb.b.w)
                };
                let d = kernels::matmul::matmul_normed(self.ctx, spec, &small, prologue, &qb.b.w, None, &sproj)?;
                self.extend(d);
                (sproj.clone(), h * (dn + dr), small.clone())
            }
        };
        // The latent norm, both rotations, the cache store and the absorbed query in one dispatch:
        // q_cat[t, h] = (W_UK_h^T q_nope | rotated q_pe).
        let (cache, _) = &io.cache.layers[layer];
        let ms = io.cache.max_seq;
        let prep = kernels::mla::MlaPrepSpec {
            tokens: t,
            heads: h,
            nope: dn,
            rope: dr,
            rank: r,
            max_seq: ms,
            layout: if self.cfg.rope.interleaved {
                RopeLayout::Interleaved
            } else {
                RopeLayout::Half
            },
            attention_factor: io.attention_factor,
            eps: MLA_NORM_EPS,
            kv_dtype: io.cache.dtype,
            q_stride,
            latent_stride: stacked,
            latent_offset: q_part,
        };
        self.push(kernels::mla::prepare_mla(
            self.ctx,
            prep,
            &query,
            &latent,
            kv_norm,
            uk_t,
            io.inv_freq,
            io.step,
            &qcat,
            cache,
        )?);
        let mut spec = AttnSpec::mla(t, h, r, dr, self.cfg.attn_scale, ms);
        spec.window = self.cfg.layers[layer].window.map(|w| w as u32);
        spec.kv_dtype = io.cache.dtype;
        if io.table {
            pin_for_table(self.ctx, &mut spec)?;
        }
        self.push(kernels::attention::attention(
            self.ctx, spec, &qcat, cache, cache, None, io.step, &olat,
        )?);
        use kernels::mla::{head_matvec, HeadLayout, HeadMatvecSpec};
        let out = HeadMatvecSpec {
            tokens: t,
            heads: h,
            in_dim: r,
            out_dim: dv,
            x: HeadLayout {
                row_stride: h * r,
                head_stride: r,
                offset: 0,
            },
            y: HeadLayout {
                row_stride: h * dv,
                head_stride: dv,
                offset: 0,
            },
        };
        self.push(head_matvec(self.ctx, out, &olat, uv, &tmp)?);
        self.linear(o, &tmp, &x, true)
    }

    /// SwiGLU MLP on `h` (gate|up stacked), added into `x` — or, with `gate`, scaled by
    /// `sigmoid(h @ gate^T)` first (Qwen2-MoE's shared expert). With `norm`, `h = RMSNorm(x)` is
    /// folded into the gate|up projection.
    fn gated_mlp(
        &mut self,
        norm: Option<&Weight>,
        gate_up: &Linear,
        down: &Linear,
        gate: Option<&Linear>,
    ) -> Result<()> {
        use kernels::swiglu::{swiglu, Act, GateUpLayout, SwigluSpec};
        let inter = down.w.cols;
        let (sh, gu, act, x, tmp, small) = (
            self.s.h.clone(),
            self.s.gu.clone(),
            self.s.act.clone(),
            self.s.x.clone(),
            self.s.tmp.clone(),
            self.s.router_logits.clone(),
        );
        match norm {
            Some(n) => self.normed_linear(n, gate_up, &x, &gu, gate.is_some())?,
            None => self.linear(gate_up, &sh, &gu, false)?,
        }
        let spec = SwigluSpec::new(self.t, inter, GateUpLayout::Concatenated, Act::Silu);
        self.push(swiglu(self.ctx, spec, &gu, &act)?);
        match gate {
            None => self.linear(down, &act, &x, true),
            Some(g) => {
                self.linear(down, &act, &tmp, false)?;
                self.linear(g, &sh, &small, false)?;
                let spec = kernels::swiglu::SigmoidGateSpec::new(self.t, self.cfg.hidden);
                self.push(kernels::swiglu::sigmoid_gate(self.ctx, spec, &small, &tmp, &x)?);
                Ok(())
            }
        }
    }

    fn ffn(&mut self, layer: usize, w: &FfnWeights, norm: &Weight) -> Result<()> {
        match (w, &self.cfg.layers[layer].ffn) {
            (FfnWeights::Dense { gate_up, down }, _) => self.gated_mlp(Some(norm), gate_up, down, None),
            (
                FfnWeights::Moe {
                    router,
                    selection_bias,
                    gate_up,
                    down,
                    gate_up_bias,
                    down_bias,
                    shared,
                },
                Ffn::Moe {
                    experts,
                    top_k,
                    inter,
                    router: rc,
                    gpt_oss,
                    ..
                },
            ) => {
                use kernels::moe::{moe, Act, Experts, GateUpLayout, MoeSpec};
                use kernels::router::{Groups, RouterSpec, SharedSlots};
                let (sh, rl, ids, ws, x) = (
                    self.s.h.clone(),
                    self.s.router_logits.clone(),
                    self.s.expert_ids.clone(),
                    self.s.expert_weights.clone(),
                    self.s.x.clone(),
                );
                // The router's projection normalises x and leaves h for the experts.
                self.normed_linear(norm, router, &x, &rl, true)?;
                let spec = RouterSpec {
                    tokens: self.t,
                    experts: *experts,
                    top_k: *top_k,
                    scoring: rc.scoring,
                    groups: rc.groups.map(|(n_group, topk_group, score)| Groups {
                        n_group,
                        topk_group,
                        score,
                    }),
                    renormalize: rc.renormalize,
                    scale: rc.scale,
                    shared: match shared {
                        Some(SharedWeights::Folded { slots, gated }) => Some(SharedSlots {
                            count: *slots,
                            gated: *gated,
                        }),
                        _ => None,
                    },
                };
                self.push(kernels::router::router(
                    self.ctx,
                    &spec,
                    &rl,
                    selection_bias.as_ref(),
                    &ids,
                    &ws,
                )?);
                let at = self.out.len();
                // Folded shared experts are more experts, and more slots per token. An offloaded
                // layer's pool holds fewer routed experts than the router chooses from.
                let folded = spec.slots() - *top_k;
                let pool = gate_up.rows / gate_up.group_rows;
                let spec = MoeSpec {
                    tokens: self.t,
                    experts: pool,
                    top_k: *top_k + folded,
                    hidden: self.cfg.hidden,
                    inter: *inter,
                    gate_up: if gpt_oss.is_some() {
                        GateUpLayout::Interleaved
                    } else {
                        GateUpLayout::Concatenated
                    },
                    act: match gpt_oss {
                        Some(g) => Act::Clamped {
                            limit: g.limit,
                            alpha: g.alpha,
                        },
                        None => Act::Silu,
                    },
                    accumulate: true,
                };
                let experts = Experts {
                    gate_up,
                    down,
                    gate_up_bias: gate_up_bias.as_ref(),
                    down_bias: down_bias.as_ref(),
                };
                let d = moe(self.ctx, spec, experts, &sh, &ids, &ws, &x)?;
                // The prefill path ends with the reduction over the slots, which runs once.
                let reduce = usize::from(self.t > kernels::moe::DECODE_MAX_TOKENS);
                let end = at + d.len() - reduce;
                self.extend(d);
                if self.offloaded.get(layer).copied().unwrap_or(false) {
                    self.syncs.push(MoeSync {
                        layer,
                        at,
                        experts: at..end,
                        ids: ids.clone(),
                        pairs: self.t * spec.top_k,
                    });
                }
                if let Some(SharedWeights::Separate { gate_up, down, gate }) = shared {
                    self.gated_mlp(None, gate_up, down, gate.as_ref())?;
                }
                Ok(())
            }
            _ => Err(crate::Error::unsupported(format!(
                "layer {layer}: weights do not match the FFN description"
            ))),
        }
    }
}

/// A table step's attention: the rows kernel (tiles serve one sequence) with the key chunks of a
/// single token.
fn pin_for_table(ctx: &Context, spec: &mut AttnSpec) -> Result<()> {
    use kernels::attention::{plan, AttnKernel, AttnPlan};
    spec.tuning.kernel = AttnKernel::Rows;
    if let AttnPlan::Rows { chunks, .. } = plan(ctx, &AttnSpec { tokens: 1, ..*spec })? {
        spec.tuning.max_chunks = chunks;
    }
    Ok(())
}

/// Build the forward pass for `tokens` rows reading ids from `io.ids` at positions from the step
/// buffer.
pub fn build(
    ctx: &Context,
    cfg: &ModelConfig,
    w: &ModelWeights,
    io: &PlanIo<'_>,
    tokens: usize,
    rows: LogitRows,
) -> Result<Plan> {
    check_plan(ctx, cfg, w, tokens, rows)?;
    let mut b = Builder {
        ctx,
        cfg,
        t: tokens,
        s: Scratch::new(ctx, cfg, w, tokens),
        out: Vec::new(),
        offloaded: io.offloaded,
        syncs: Vec::new(),
    };
    let (x, h) = (b.s.x.clone(), b.s.h.clone());
    b.extend(kernels::embedding::embedding(ctx, &w.embed, io.ids, tokens, &x)?);
    for (i, lw) in w.layers.iter().enumerate() {
        match &lw.attn {
            AttnWeights::Gqa { .. } => b.attention_gqa(i, &lw.attn, &lw.attn_norm, io)?,
            AttnWeights::Mla { .. } => b.attention_mla(i, &lw.attn, &lw.attn_norm, io)?,
        }
        b.ffn(i, &lw.ffn, &lw.ffn_norm)?;
    }
    let logit_rows = if rows == LogitRows::All { tokens } else { 1 };
    let head_in = if rows == LogitRows::Last && tokens > 1 {
        let last = Rows {
            rows: 1,
            width: cfg.hidden,
            stride: cfg.hidden,
            offset: (tokens - 1) * cfg.hidden,
        };
        let tmp = b.s.tmp.clone();
        b.push(kernels::elementwise::copy_rows(
            ctx,
            &x,
            last,
            &tmp,
            Rows::packed(1, cfg.hidden),
        )?);
        tmp
    } else {
        x.clone()
    };
    let head = w.lm_head.as_ref().unwrap_or(&w.embed);
    let logits = Tensor::zeros(ctx, "logits", logit_rows * cfg.vocab);
    let spec = MatmulSpec::packed(logit_rows, head);
    let norm = NormPrologue {
        weight: &w.norm,
        eps: cfg.eps,
        normed: &h,
        store: false,
    };
    b.extend(kernels::matmul::matmul_normed(
        ctx, spec, &head_in, norm, head, None, &logits,
    )?);
    Ok(Plan {
        tokens,
        dispatches: b.out,
        logits,
        logit_rows,
        ids_readback: b.syncs.iter().map(|s| s.pairs).max().map(|pairs| {
            ctx.buffer(&wgpu::BufferDescriptor {
                label: Some("expert ids read-back"),
                size: (pairs as u64 * 4).max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        }),
        syncs: b.syncs,
    })
}
