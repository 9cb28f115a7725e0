//! Everything between the fused q|k|v projection and attention in one dispatch: q/k RMSNorm per
//! head (Qwen3) or over the whole q and k projections (OLMoE), clamping (OLMoE `clip_qkv`), RoPE,
//! and storing k and v into the KV cache at
//! the positions the step buffer gives (as f32 or f16, [`KvDtype`]). Replaces up to seven separate
//! dispatches per layer.

use super::attention::KvDtype;
use super::rope::RopeLayout;
use super::step;
use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::{grid, Context, Dispatch, Tensor, Weight};

const BODY: &str = include_str!("../../shaders/qkv.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        tokens: u32,
        heads: u32,
        kv_heads: u32,
        head_dim: u32,
        row_stride: u32,
        max_seq: u32,
        eps: f32,
        clip: f32,
        af: f32,
        /// Q8 caches: word index of the block scales, log2 of the block size.
        q8_scales: u32,
        q8_shift: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// Invocations per workgroup.
        WG: u32 = 64,
        /// The largest head this kernel holds in workgroup memory.
        MAX_HEAD: u32 = 256,
    }
}

/// Head sizes the kernel holds in workgroup memory.
pub const MAX_HEAD_DIM: usize = MAX_HEAD as usize;

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        QK_NORM: bool = false,
        /// Norms over whole sections (q_norm [H*hd], k_norm [KV*hd]); only with prepare_qkv_full.
        FULL_NORM: bool = false,
        CLIP: bool = false,
        INTERLEAVED: bool = false,
        NORM_DTYPE: u32 = 0,
        KV16: bool = false,
        KV8: bool = false,
    }
}

crate::wgsl_interface! {
    family: "qkv",
    structs: [Params],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        /// [T, (H + 2 KV) * hd], q rotated in place
        qkv: read_write "array<f32>",
        inv_freq: read "array<f32>",
        step: read "array<u32>",
        q_norm: read "array<u32>",
        k_norm: read "array<u32>",
        /// [max_seq, KV * hd] elements (f32, f16 or q8)
        k_cache: read_write "array<u32>",
        v_cache: read_write "array<u32>",
    },
}

pub(crate) fn compose() -> Compose<'static> {
    Compose::new(&INTERFACE, vec![super::step::WGSL, BODY])
}

/// The fused row `[q heads | k heads | v heads]` of `tokens` tokens and what to do to it.
#[derive(Clone, Copy, Debug)]
pub struct QkvSpec {
    pub tokens: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layout: RopeLayout,
    /// RoPE amplitude (yarn's attention factor).
    pub attention_factor: f32,
    /// Per-head RMSNorm epsilon (used with norm weights).
    pub eps: f32,
    /// Clamp q, k and v to `[-clip, clip]` after the norm.
    pub clip: Option<f32>,
    /// Rows the caches hold.
    pub max_seq: usize,
    /// How the caches store k and v.
    pub kv_dtype: KvDtype,
}

impl QkvSpec {
    pub fn row_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
}

/// q and k norm weights: per head (`[head_dim]` each), or with `full` over the whole q and k
/// projections (`[heads * head_dim]` and `[kv_heads * head_dim]`).
pub struct QkNorms<'a> {
    pub q: &'a Weight,
    pub k: &'a Weight,
    pub full: bool,
}

/// Build the dispatch: `qkv` holds `tokens` fused rows; `k_cache`/`v_cache` are `[max_seq, KV*hd]`
/// elements of `spec.kv_dtype`.
#[allow(clippy::too_many_arguments)]
pub fn prepare_qkv(
    ctx: &Context,
    spec: QkvSpec,
    qkv: &Tensor,
    norms: Option<QkNorms<'_>>,
    inv_freq: &Tensor,
    step_buf: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
) -> Result<Dispatch> {
    let op = "prepare_qkv";
    let QkvSpec {
        tokens,
        heads,
        kv_heads,
        head_dim: hd,
        ..
    } = spec;
    if tokens == 0 || heads == 0 || kv_heads == 0 || hd == 0 || hd % 2 != 0 || hd > MAX_HEAD_DIM {
        return Err(shape_err(
            op,
            format!("unsupported shape {spec:?} (even head_dim up to {MAX_HEAD_DIM})"),
        ));
    }
    if qkv.len < tokens * spec.row_width() {
        return Err(shape_err(
            op,
            format!("qkv holds {}, needs {}", qkv.len, tokens * spec.row_width()),
        ));
    }
    if spec.kv_dtype == KvDtype::Q8 && hd % 4 != 0 {
        return Err(shape_err(
            op,
            format!("a q8 cache needs head_dim a multiple of 4, got {hd}"),
        ));
    }
    let elems = spec.max_seq * kv_heads * hd;
    let cache = spec.kv_dtype.words(elems, hd);
    if k_cache.len < cache || v_cache.len < cache {
        return Err(shape_err(
            op,
            format!(
                "caches hold {} and {} words, need {cache} ({} cache)",
                k_cache.len, v_cache.len, spec.kv_dtype
            ),
        ));
    }
    if inv_freq.len < hd / 2 || step_buf.len < step::LEN {
        return Err(shape_err(op, "inv_freq or the step buffer is too short"));
    }
    let full = norms.as_ref().is_some_and(|n| n.full);
    let norm_dtype = match &norms {
        Some(n) => {
            let (qw, kw) = if full { (heads * hd, kv_heads * hd) } else { (hd, hd) };
            if n.q.cols != qw || n.k.cols != kw || n.q.rows != 1 || n.k.rows != 1 || n.q.dtype != n.k.dtype {
                return Err(shape_err(
                    op,
                    format!("q/k norms must be [{qw}] and [{kw}] of one dtype"),
                ));
            }
            n.q.dtype.code()
        }
        None => 0,
    };
    let clip = spec.clip.unwrap_or(0.0);
    if spec.clip.is_some() && !(clip > 0.0 && clip.is_finite()) {
        return Err(shape_err(op, format!("clip must be positive, got {clip}")));
    }
    let params = ctx.params(&Params {
        tokens: tokens as u32,
        heads: heads as u32,
        kv_heads: kv_heads as u32,
        head_dim: hd as u32,
        row_stride: spec.row_width() as u32,
        max_seq: spec.max_seq as u32,
        eps: spec.eps,
        clip,
        af: spec.attention_factor,
        q8_scales: elems.div_ceil(4) as u32,
        q8_shift: KvDtype::q8_block(hd).trailing_zeros(),
    });
    let consts = Consts {
        QK_NORM: norms.is_some() && !full,
        FULL_NORM: full,
        CLIP: spec.clip.is_some(),
        INTERLEAVED: spec.layout == RopeLayout::Interleaved,
        NORM_DTYPE: norm_dtype,
        KV16: spec.kv_dtype == KvDtype::F16,
        KV8: spec.kv_dtype == KvDtype::Q8,
    };
    let entry = if full { "prepare_qkv_full" } else { op };
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), entry, &consts.constants());
    let dummy = || ctx.dummy.as_entire_binding();
    let (qn, kn) = match &norms {
        Some(n) => (
            n.q.chunks[0].buffer.as_entire_binding(),
            n.k.chunks[0].buffer.as_entire_binding(),
        ),
        None => (dummy(), dummy()),
    };
    let res = [
        (bind::p, params.as_entire_binding()),
        (bind::qkv, qkv.binding()),
        (bind::inv_freq, inv_freq.binding()),
        (bind::step, step_buf.binding()),
        (bind::q_norm, qn),
        (bind::k_norm, kn),
        (bind::k_cache, k_cache.binding()),
        (bind::v_cache, v_cache.binding()),
    ];
    // Per head, or per q / k / v section with whole-projection norms.
    let per_token = if full { 3 } else { heads + 2 * kv_heads };
    let groups = grid((tokens * per_token) as u32);
    Ok(Dispatch::new(ctx, op, pipeline, &res, groups, vec![params.clone()]))
}
