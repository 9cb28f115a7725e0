//! The per-head products of absorbed multi-head latent attention (MODELS.md §6.5): the query's
//! nope part into the latent space (`q_lat = W_UK_h^T q_nope`) and the attention output back out
//! of it (`o = W_UV_h o_lat`). Both are `y[t,h] = W_h x[t,h]` with one weight block per head.

use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::Format;
use crate::gpu::{grid, Context, Dispatch, Tensor, Weight};

const BODY: &str = include_str!("../../shaders/mla.wgsl");

crate::wgsl_struct! {
    /// head_matvec's shapes.
    pub(crate) struct Params {
        tokens: u32,
        heads: u32,
        in_dim: u32,
        out_dim: u32,
        x_row_stride: u32,
        x_head_stride: u32,
        x_offset: u32,
        y_row_stride: u32,
        y_head_stride: u32,
        y_offset: u32,
        w_words: u32,
        blocks: u32,
    }
}

crate::wgsl_struct! {
    /// prepare_mla's shapes.
    pub(crate) struct MlaPrep {
        tokens: u32,
        heads: u32,
        nope: u32,
        rope: u32,
        rank: u32,
        max_seq: u32,
        eps: f32,
        af: f32,
        /// vec4<u32> words per uk_t row, and workgroups per (token, head) of the absorbed product.
        uk_words: u32,
        uk_blocks: u32,
        /// Token rows: the query's at t * q_stride, the latent's at t * latent_stride + latent_offset.
        q_stride: u32,
        latent_stride: u32,
        latent_offset: u32,
        /// Q8 caches: word index of the block scales, log2 of the block size.
        q8_scales: u32,
        q8_shift: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// Invocations per workgroup.
        WG: u32 = 64,
        /// Output rows per workgroup of the per-head products.
        HM_ROWS: u32 = 4,
        /// The widest latent row [c | k_pe] held in workgroup memory.
        MAX_LATENT: u32 = 1024,
    }
}

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        INTERLEAVED: bool = true,
        NORM_DTYPE: u32 = 0,
        KV16: bool = false,
        KV8: bool = false,
    }
}

crate::wgsl_interface! {
    family: "mla",
    structs: [Params, MlaPrep],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        x: read "array<f32>",
        /// [heads * out, in] (head_matvec), uk_t [H * r, nope] (prepare_mla)
        w: read "array<vec4<u32>>",
        y: read_write "array<f32>",
        mp: uniform MlaPrep,
        /// [T, q_stride]: the query projection (q or q_b's output)
        proj: read "array<f32>",
        /// [T, latent_stride]: kv_a's [c | k_pe] at latent_offset
        latent: read "array<f32>",
        kv_norm: read "array<u32>",
        inv_freq: read "array<f32>",
        step: read "array<u32>",
        /// [T, H, r + dr]
        q_cat: read_write "array<f32>",
        /// [max_seq, r + dr] elements (f32, f16 or q8)
        cache: read_write "array<u32>",
    },
}

/// The source for per-head weights of `format`.
pub(crate) fn compose(format: &'static Format) -> Compose<'static> {
    let mut c = Compose::new(&INTERFACE, vec![super::step::WGSL, BODY]);
    format.apply(&mut c);
    c
}

/// Where each (token, head) vector sits: `t * row_stride + h * head_stride + offset`.
#[derive(Clone, Copy, Debug)]
pub struct HeadLayout {
    pub row_stride: usize,
    pub head_stride: usize,
    pub offset: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct HeadMatvecSpec {
    pub tokens: usize,
    pub heads: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    pub x: HeadLayout,
    pub y: HeadLayout,
}

fn end(l: HeadLayout, tokens: usize, heads: usize, dim: usize) -> usize {
    (tokens - 1) * l.row_stride + (heads - 1) * l.head_stride + l.offset + dim
}

/// `y[t, h, :] = W[h*out .. (h+1)*out, :] @ x[t, h, :]` for a weight stacked `[heads*out, in]`.
pub fn head_matvec(ctx: &Context, spec: HeadMatvecSpec, x: &Tensor, w: &Weight, y: &Tensor) -> Result<Dispatch> {
    let op = "head_matvec";
    w.require_uniform(op)?;
    let HeadMatvecSpec {
        tokens,
        heads,
        in_dim,
        out_dim,
        x: xl,
        y: yl,
    } = spec;
    if tokens == 0 || heads == 0 || in_dim == 0 || out_dim == 0 {
        return Err(shape_err(op, format!("empty shape {spec:?}")));
    }
    if w.rows != heads * out_dim || w.cols != in_dim {
        return Err(shape_err(
            op,
            format!(
                "weight is [{}, {}], expected [{}, {in_dim}]",
                w.rows,
                w.cols,
                heads * out_dim
            ),
        ));
    }
    if w.chunks.len() != 1 {
        return Err(shape_err(op, "per-head weights must fit one binding"));
    }
    if end(xl, tokens, heads, in_dim) > x.len || end(yl, tokens, heads, out_dim) > y.len {
        return Err(shape_err(
            op,
            format!("x ({}) or y ({}) too small for {spec:?}", x.len, y.len),
        ));
    }
    let blocks = out_dim.div_ceil(HM_ROWS as usize);
    let params = ctx.params(&Params {
        tokens: tokens as u32,
        heads: heads as u32,
        in_dim: in_dim as u32,
        out_dim: out_dim as u32,
        x_row_stride: xl.row_stride as u32,
        x_head_stride: xl.head_stride as u32,
        x_offset: xl.offset as u32,
        y_row_stride: yl.row_stride as u32,
        y_head_stride: yl.head_stride as u32,
        y_offset: yl.offset as u32,
        w_words: w.words_per_row() as u32,
        blocks: blocks as u32,
    });
    let pipeline = ctx.pipeline(
        &ctx.shader(&compose(w.format())),
        "head_matvec",
        &Consts::default().constants(),
    );
    let res = [
        (bind::p, params.as_entire_binding()),
        (bind::x, x.binding()),
        (bind::w, w.chunks[0].buffer.as_entire_binding()),
        (bind::y, y.binding()),
    ];
    Ok(Dispatch::new(
        ctx,
        op,
        pipeline,
        &res,
        grid((tokens * heads * blocks) as u32),
        vec![params.clone()],
    ))
}

/// The shapes `prepare_mla` works on.
#[derive(Clone, Copy, Debug)]
pub struct MlaPrepSpec {
    pub tokens: usize,
    pub heads: usize,
    /// qk_nope_head_dim, qk_rope_head_dim, kv_lora_rank.
    pub nope: usize,
    pub rope: usize,
    pub rank: usize,
    pub max_seq: usize,
    pub layout: super::rope::RopeLayout,
    pub attention_factor: f32,
    /// kv_a_layernorm's epsilon.
    pub eps: f32,
    pub kv_dtype: super::attention::KvDtype,
    /// Floats from one token's query row to the next (`heads * (nope + rope)` when packed).
    pub q_stride: usize,
    /// Where each token's latent row `[c | k_pe]` sits: `t * latent_stride + latent_offset`.
    pub latent_stride: usize,
    pub latent_offset: usize,
}

/// Everything between MLA's projections and attention, in one dispatch: each head's q_pe rotated
/// into its `q_cat [T, H, r + dr]` row after the latent part, the absorbed query `uk_t[h] @ q_nope`
/// (`uk_t` stacked `[H * r, dn]`) into the latent part, and the latent row `[c | k_pe]` of `kv_a`
/// (rows at `spec.latent_*`) normalised (c), rotated (k_pe) and stored in the cache `[max_seq, r +
/// dr]` at the step buffer's positions. `proj` holds the query `[H, dn + dr]` of each token at
/// `t * spec.q_stride` (`proj` and `kv_a` may be one buffer).
#[allow(clippy::too_many_arguments)]
pub fn prepare_mla(
    ctx: &Context,
    spec: MlaPrepSpec,
    proj: &Tensor,
    kv_a: &Tensor,
    kv_norm: &Weight,
    uk_t: &Weight,
    inv_freq: &Tensor,
    step_buf: &Tensor,
    q_cat: &Tensor,
    cache: &Tensor,
) -> Result<Dispatch> {
    let op = "prepare_mla";
    uk_t.require_uniform(op)?;
    let MlaPrepSpec {
        tokens: t,
        heads: h,
        nope,
        rope,
        rank,
        max_seq,
        ..
    } = spec;
    let width = rank + rope;
    if t == 0 || h == 0 || rank == 0 || rope == 0 || rope % 2 != 0 || rank % 2 != 0 || width > MAX_LATENT as usize {
        return Err(shape_err(
            op,
            format!("unsupported shape {spec:?} (even rank and rope, r + dr <= {MAX_LATENT})"),
        ));
    }
    let q_end = (t - 1) * spec.q_stride + h * (nope + rope);
    let latent_end = (t - 1) * spec.latent_stride + spec.latent_offset + width;
    if spec.q_stride < h * (nope + rope) || spec.latent_stride < width {
        return Err(shape_err(op, format!("query or latent rows overlap in {spec:?}")));
    }
    if proj.len < q_end || kv_a.len < latent_end || q_cat.len < t * h * width {
        return Err(shape_err(
            op,
            format!(
                "proj ({}), kv_a ({}) or q_cat ({}) too small for {spec:?}",
                proj.len, kv_a.len, q_cat.len
            ),
        ));
    }
    let q8 = spec.kv_dtype == super::attention::KvDtype::Q8;
    if q8 && width % 4 != 0 {
        return Err(shape_err(
            op,
            format!("a q8 cache needs rows of a multiple of 4, got {width}"),
        ));
    }
    if cache.len < spec.kv_dtype.words(max_seq * width, width) {
        return Err(shape_err(
            op,
            format!(
                "the cache holds {} words, needs {}",
                cache.len,
                spec.kv_dtype.words(max_seq * width, width)
            ),
        ));
    }
    if kv_norm.rows != 1 || kv_norm.cols != rank || inv_freq.len < rope / 2 || step_buf.len < super::step::LEN {
        return Err(shape_err(
            op,
            "kv_a_layernorm, inv_freq or the step buffer has the wrong size",
        ));
    }
    if uk_t.rows != h * rank || uk_t.cols != nope || uk_t.chunks.len() != 1 {
        return Err(shape_err(
            op,
            format!(
                "uk_t is [{}, {}] in {} chunks, expected [{}, {nope}] in one",
                uk_t.rows,
                uk_t.cols,
                uk_t.chunks.len(),
                h * rank
            ),
        ));
    }
    let uk_blocks = rank.div_ceil(HM_ROWS as usize);
    let params = ctx.params(&MlaPrep {
        tokens: t as u32,
        heads: h as u32,
        nope: nope as u32,
        rope: rope as u32,
        rank: rank as u32,
        max_seq: max_seq as u32,
        eps: spec.eps,
        af: spec.attention_factor,
        uk_words: uk_t.words_per_row() as u32,
        uk_blocks: uk_blocks as u32,
        q_stride: spec.q_stride as u32,
        latent_stride: spec.latent_stride as u32,
        latent_offset: spec.latent_offset as u32,
        q8_scales: (max_seq * width).div_ceil(4) as u32,
        q8_shift: super::attention::KvDtype::q8_block(width).trailing_zeros(),
    });
    let consts = Consts {
        INTERLEAVED: spec.layout == super::rope::RopeLayout::Interleaved,
        NORM_DTYPE: kv_norm.dtype.code(),
        KV16: spec.kv_dtype == super::attention::KvDtype::F16,
        KV8: q8,
    };
    let pipeline = ctx.pipeline(&ctx.shader(&compose(uk_t.format())), op, &consts.constants());
    let res = [
        (bind::w, uk_t.chunks[0].buffer.as_entire_binding()),
        (bind::mp, params.as_entire_binding()),
        (bind::proj, proj.binding()),
        (bind::latent, kv_a.binding()),
        (bind::kv_norm, kv_norm.chunks[0].buffer.as_entire_binding()),
        (bind::inv_freq, inv_freq.binding()),
        (bind::step, step_buf.binding()),
        (bind::q_cat, q_cat.binding()),
        (bind::cache, cache.binding()),
    ];
    Ok(Dispatch::new(
        ctx,
        op,
        pipeline,
        &res,
        grid((t * (h + 1) + t * h * uk_blocks) as u32),
        vec![params.clone()],
    ))
}
