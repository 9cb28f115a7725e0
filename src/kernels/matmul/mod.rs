//! Dense projections `y[t, n] (+)= sum_k x[t, k] * W[n, k] (+ bias[n])`: f32 activations against a
//! weight in its checkpoint precision (f32/f16/bf16 packed in u32 words), with the bias and the
//! residual add (`accumulate`) fused into the epilogue (DESIGN.md principle 4).
//!
//! Two kernels, one semantics: [`matvec`] for decode (1..=8 token rows, bandwidth-bound: threads
//! stride along K in `vec4<u32>` weight words and reduce with `subgroupAdd` where usable, through
//! workgroup memory otherwise) and [`gemm`] for prefill: the GEMM bodies shared with the MoE
//! experts (portable 64x64 tiles, or cooperative matrices where the adapter has them), in their
//! dense mode. [`matmul`] picks one. A weight split into chunks gets one dispatch per chunk. Which
//! source a pipeline is built from is [`variant`]'s table.

pub mod variant;

use crate::error::{shape_err, Error, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::Format;
use crate::gpu::{grid, Context, Dispatch, Tensor, Weight, WeightChunk};
use std::sync::Arc;

/// matvec, and the GEMM hooks of the dense mode (shaders/gemm.wgsl, shaders/gemm_coop.wgsl).
const BODY: &str = include_str!("../../../shaders/matmul.wgsl");

pub use variant::{coop_available, coop_enabled, coop_side, Mode, Tiles, Variant};

crate::wgsl_struct! {
    pub(crate) struct Params {
        tokens: u32,
        /// Rows of W (output columns) in this chunk.
        rows: u32,
        k: u32,
        /// vec4<u32> words per weight row, and how many of them hold K-values only (no tail).
        kw: u32,
        kw_full: u32,
        x_stride: u32,
        y_stride: u32,
        first_row: u32,
        /// The epilogue's options are uniform values, not overrides: they cost nothing per output
        /// and would otherwise multiply the pipeline variants. bias_dtype is a DT_* code or NO_BIAS.
        bias_dtype: u32,
        accumulate: u32,
        /// matvec's RMSNorm prologue: the norm weight's DT_* code or NO_NORM, its epsilon, and
        /// whether workgroup 0 also writes the normalised rows to xn (for later readers of the
        /// same input).
        norm_dtype: u32,
        eps: f32,
        store_normed: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// `Params::bias_dtype` when there is no bias.
        NO_BIAS: u32 = u32::MAX,
        /// `Params::norm_dtype` without the RMSNorm prologue.
        NO_NORM: u32 = u32::MAX,
        /// matvec: the most token rows, output rows per workgroup, and accumulators per thread
        /// (ROWS * T).
        MAX_T: u32 = 8,
        MAX_ROWS: u32 = 4,
        MAX_ACC: u32 = 16,
    }
}

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        /// x rows start on 16-byte boundaries (x_stride % 4 == 0), so whole quads load as one vec4.
        X_VEC: bool = false,
        WG: u32 = 64,
        /// matvec: tokens (1..=8) and output rows per workgroup; ROWS * T <= MAX_ACC, ROWS <= MAX_ROWS.
        T: u32 = 1,
        ROWS: u32 = 4,
        /// Reduction scratch: WG * ROWS * T floats for the tree, (WG / 4) * ROWS * T for subgroups.
        RED: u32 = 256,
        /// gemm_coop's workgroup: NSG subgroups.
        CWG: u32 = 128,
    }
}

crate::wgsl_interface! {
    family: "matmul",
    structs: [Params],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        /// [T, K] at x_stride
        x: read "array<f32>",
        /// x again as vec4s (X_VEC)
        x4: read "array<vec4<f32>>",
        /// this chunk's rows of W [N, K]
        w: read "array<vec4<u32>>",
        /// [N]
        bias: read "array<u32>",
        /// [T, N] at y_stride
        y: read_write "array<f32>",
        /// [K] the prologue's RMSNorm weight
        norm_w: read "array<u32>",
        /// [T, K] the normalised rows (store_normed)
        xn: read_write "array<f32>",
    },
}

/// Dense projections in the GEMM bodies: x's token rows times the chunk's rows into y.
pub const DENSE: Mode = Mode {
    name: "dense",
    interface: &INTERFACE,
    parts: &[BODY],
    paired: false,
};

/// The source for weights of `format` that matvec and the portable gemm use.
pub(crate) fn compose(format: &'static Format) -> Compose<'static> {
    Variant {
        format,
        mode: &DENSE,
        tiles: Tiles::Portable,
    }
    .compose()
}

/// The most token rows [`matvec`] takes; [`matmul`] switches to [`gemm`] above it.
pub const MATVEC_MAX_TOKENS: usize = MAX_T as usize;

/// The token-row layout of one projection. `x` holds `tokens` rows of `K = w.cols` values at
/// `x_stride`; `y` gets `tokens` rows of `N = w.rows` values at `y_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    pub tokens: usize,
    pub x_stride: usize,
    pub y_stride: usize,
    /// Add into `y` instead of overwriting it (the residual add fused into the epilogue).
    pub accumulate: bool,
}

impl MatmulSpec {
    /// Packed rows for `w`: `x_stride = w.cols`, `y_stride = w.rows`, overwrite.
    pub fn packed(tokens: usize, w: &Weight) -> Self {
        Self {
            tokens,
            x_stride: w.cols,
            y_stride: w.rows,
            accumulate: false,
        }
    }

    /// The same layout with explicit row strides (slices of wider rows).
    pub fn strided(tokens: usize, x_stride: usize, y_stride: usize) -> Self {
        Self {
            tokens,
            x_stride,
            y_stride,
            accumulate: false,
        }
    }

    /// The same layout, adding into `y`.
    pub fn accumulating(self) -> Self {
        Self {
            accumulate: true,
            ..self
        }
    }
}

/// An RMSNorm applied to x on the way in: `W (weight * x * rsqrt(mean(x²) + eps))`. `normed`
/// receives the normalised rows `[tokens, K]` (packed) for other readers of the same input.
#[derive(Clone, Copy)]
pub struct NormPrologue<'a> {
    pub weight: &'a Weight,
    pub eps: f32,
    pub normed: &'a Tensor,
    /// Whether `normed` must be written (another kernel reads it next).
    pub store: bool,
}

/// `matmul` of `RMSNorm(x)`: decode folds the norm into the projection's prologue (one dispatch;
/// `normed` written only when asked), prefill normalises into `normed` first, then multiplies.
pub fn matmul_normed(
    ctx: &Context,
    spec: MatmulSpec,
    x: &Tensor,
    norm: NormPrologue<'_>,
    w: &Weight,
    bias: Option<&Weight>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let k = w.cols;
    if norm.weight.rows != 1 || norm.weight.cols != k || norm.normed.len < spec.tokens * k {
        return Err(shape_err(
            "matmul_normed",
            format!(
                "norm weight [{}, {}] or normed rows ({}) do not fit K = {k}",
                norm.weight.rows, norm.weight.cols, norm.normed.len
            ),
        ));
    }
    if spec.tokens <= MATVEC_MAX_TOKENS {
        return matvec_impl(ctx, spec, x, Some(norm), w, bias, y);
    }
    let shape = super::rmsnorm::NormShape {
        x_stride: spec.x_stride,
        y_stride: k,
        ..super::rmsnorm::NormShape::new(spec.tokens, k, norm.eps)
    };
    let mut out = vec![super::rmsnorm::rmsnorm(
        ctx,
        shape,
        x,
        None,
        norm.weight,
        super::rmsnorm::NormOut::To(norm.normed),
    )?];
    out.extend(gemm(ctx, MatmulSpec { x_stride: k, ..spec }, norm.normed, w, bias, y)?);
    Ok(out)
}

/// `y = x @ W^T (+ bias)` (or `+=` with `spec.accumulate`): [`matvec`] for up to
/// [`MATVEC_MAX_TOKENS`] rows, [`gemm`] beyond. One dispatch per weight chunk.
pub fn matmul(
    ctx: &Context,
    spec: MatmulSpec,
    x: &Tensor,
    w: &Weight,
    bias: Option<&Weight>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    if spec.tokens <= MATVEC_MAX_TOKENS {
        matvec(ctx, spec, x, w, bias, y)
    } else {
        gemm(ctx, spec, x, w, bias, y)
    }
}

/// The decode projection, for 1..=[`MATVEC_MAX_TOKENS`] token rows.
pub fn matvec(
    ctx: &Context,
    spec: MatmulSpec,
    x: &Tensor,
    w: &Weight,
    bias: Option<&Weight>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    matvec_impl(ctx, spec, x, None, w, bias, y)
}

fn matvec_impl(
    ctx: &Context,
    spec: MatmulSpec,
    x: &Tensor,
    norm: Option<NormPrologue<'_>>,
    w: &Weight,
    bias: Option<&Weight>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let op = "matvec";
    validate(ctx, op, spec, x, w, bias, y)?;
    if spec.tokens > MATVEC_MAX_TOKENS {
        return Err(shape_err(
            op,
            format!("{} token rows, at most {MATVEC_MAX_TOKENS} (use gemm)", spec.tokens),
        ));
    }
    let t = spec.tokens;
    let rows = matvec_rows(t);
    let subgroups = ctx.caps.subgroups_usable();
    let entry = if subgroups { "matvec_sg" } else { "matvec" };
    // Per chunk: a stack of parts in different formats has a pipeline per format.
    let pipeline = |chunk: &WeightChunk| {
        let wg = matvec_workgroup(chunk);
        // Subgroups leave one partial per subgroup, and subgroups_usable() promises >= 4 lanes each.
        let red = if subgroups { wg / 4 } else { wg } * rows * t;
        let consts = Consts {
            WG: wg as u32,
            T: t as u32,
            ROWS: rows as u32,
            RED: red as u32,
            ..common_constants(spec, x)
        };
        ctx.pipeline(&ctx.shader(&compose(chunk.format())), entry, &consts.constants())
    };
    Ok(w.chunks
        .iter()
        .map(|chunk| {
            let groups = grid((chunk.rows as usize).div_ceil(rows) as u32);
            let norm = norm.map(|n| NormPrologue {
                store: n.store && chunk.first_row == 0,
                ..n
            });
            dispatch(
                ctx,
                Entry::Matvec(entry),
                &pipeline(chunk),
                spec,
                x,
                w,
                chunk,
                bias,
                norm,
                y,
                groups,
            )
        })
        .collect())
}

/// The prefill projection, for any number of token rows: on cooperative matrices where the adapter
/// and the weight allow ([`coop_enabled`]), else on portable tiles (edges masked).
pub fn gemm(
    ctx: &Context,
    spec: MatmulSpec,
    x: &Tensor,
    w: &Weight,
    bias: Option<&Weight>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    gemm_on(ctx, variant::tiles_for(ctx, w), spec, x, w, bias, y)
}

/// [`gemm`] on cooperative matrices (f16 inputs: x is rounded to f16 on its way into the tiles); an
/// error where the adapter has none or the weight format cannot feed them.
pub fn gemm_coop(
    ctx: &Context,
    spec: MatmulSpec,
    x: &Tensor,
    w: &Weight,
    bias: Option<&Weight>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    match coop_side(ctx) {
        Some(cm) if coop_available(ctx, w) => gemm_on(ctx, Tiles::Coop(cm), spec, x, w, bias, y),
        _ => Err(shape_err(
            "gemm_coop",
            "needs cooperative matrices, f16, subgroups and 16-bit weights",
        )),
    }
}

fn gemm_on(
    ctx: &Context,
    tiles: Tiles,
    spec: MatmulSpec,
    x: &Tensor,
    w: &Weight,
    bias: Option<&Weight>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let (op, entry) = match tiles {
        Tiles::Portable => ("gemm", Entry::Gemm),
        Tiles::Coop(_) => ("gemm_coop", Entry::GemmCoop),
    };
    validate(ctx, op, spec, x, w, bias, y)?;
    let m_tiles = spec.tokens.div_ceil(tiles.block().rows as usize);
    let consts = Consts {
        CWG: tiles.workgroup(ctx),
        ..common_constants(spec, x)
    };
    let mut out = Vec::with_capacity(w.chunks.len());
    for chunk in &w.chunks {
        let v = Variant {
            format: chunk.format(),
            mode: &DENSE,
            tiles,
        };
        let pipeline = ctx.pipeline(&ctx.shader(&v.compose()), v.entry(), &consts.constants());
        let n_tiles = (chunk.rows as usize).div_ceil(tiles.outputs(false));
        let groups = m_tiles * n_tiles;
        let limit = ctx.caps.max_workgroups_per_dim as usize;
        if groups > limit * limit {
            return Err(shape_err(
                op,
                format!("{groups} workgroups exceed a {limit}x{limit} grid"),
            ));
        }
        out.push(dispatch(
            ctx,
            entry,
            &pipeline,
            spec,
            x,
            w,
            chunk,
            bias,
            None,
            y,
            grid(groups as u32),
        ));
    }
    Ok(out)
}

/// Output rows per matvec workgroup: as many as the accumulator budget allows.
fn matvec_rows(tokens: usize) -> usize {
    (MAX_ACC as usize / tokens).clamp(1, MAX_ROWS as usize)
}

/// Threads per matvec workgroup: a power of two (the portable tree needs one); the smaller size
/// for short rows so fewer threads idle (two sizes only, to keep pipeline variants few).
fn matvec_workgroup(chunk: &WeightChunk) -> usize {
    if chunk.words_per_row >= 128 {
        128
    } else {
        64
    }
}

/// Whether x can be read as `vec4<f32>`: rows start 16-byte aligned and the buffer is whole vec4s.
fn x_vec4(spec: MatmulSpec, x: &Tensor) -> bool {
    spec.x_stride.is_multiple_of(4) && x.buffer.size().is_multiple_of(16)
}

/// The specialisation both kernels share: what shapes their inner loops.
fn common_constants(spec: MatmulSpec, x: &Tensor) -> Consts {
    Consts {
        X_VEC: x_vec4(spec, x),
        ..Consts::default()
    }
}

/// Which entry point a dispatch runs: what it binds and how it is labelled.
#[derive(Clone, Copy)]
enum Entry {
    Matvec(&'static str),
    Gemm,
    GemmCoop,
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    ctx: &Context,
    entry: Entry,
    pipeline: &Arc<wgpu::ComputePipeline>,
    spec: MatmulSpec,
    x: &Tensor,
    w: &Weight,
    chunk: &WeightChunk,
    bias: Option<&Weight>,
    norm: Option<NormPrologue<'_>>,
    y: &Tensor,
    groups: [u32; 3],
) -> Dispatch {
    let params = Params {
        tokens: spec.tokens as u32,
        rows: chunk.rows,
        k: w.cols as u32,
        kw: chunk.words_per_row as u32,
        kw_full: (w.cols / chunk.format().elems_per_word) as u32,
        x_stride: spec.x_stride as u32,
        y_stride: spec.y_stride as u32,
        first_row: chunk.first_row,
        bias_dtype: bias.map_or(NO_BIAS, |b| b.dtype.code()),
        accumulate: spec.accumulate as u32,
        norm_dtype: norm.map_or(NO_NORM, |n| n.weight.dtype.code()),
        eps: norm.map_or(0.0, |n| n.eps),
        store_normed: norm.is_some_and(|n| n.store) as u32,
    };
    let params = ctx.params(&params);
    let x4 = if x_vec4(spec, x) {
        x.binding()
    } else {
        ctx.dummy.as_entire_binding()
    };
    let bias = bias.map_or(ctx.dummy.as_entire_binding(), |b| {
        b.chunks[0].buffer.as_entire_binding()
    });
    let (norm_w, normed) = match norm {
        Some(n) => (n.weight.chunks[0].buffer.as_entire_binding(), n.normed.binding()),
        // The prologue is off (a uniform flag): any buffer of the right kind will do.
        None => (ctx.dummy.as_entire_binding(), ctx.scratch.as_entire_binding()),
    };
    let mut res = vec![
        (bind::p, params.as_entire_binding()),
        (bind::x, x.binding()),
        (bind::w, chunk.buffer.as_entire_binding()),
        (bind::bias, bias),
        (bind::y, y.binding()),
    ];
    // Only the portable kernels read x as vec4s and the prologue's weights, only matvec writes the
    // normalised rows.
    let label = match entry {
        Entry::Matvec(name) => {
            res.extend([(bind::x4, x4), (bind::norm_w, norm_w), (bind::xn, normed)]);
            name
        }
        Entry::Gemm => {
            res.extend([(bind::x4, x4), (bind::norm_w, norm_w)]);
            "gemm"
        }
        Entry::GemmCoop => "gemm_coop",
    };
    let label = format!("{label}[{}..{}]", chunk.first_row, chunk.first_row + chunk.rows);
    Dispatch::new(ctx, label, pipeline.clone(), &res, groups, vec![params.clone()])
}

/// Shapes, strides, buffer sizes and limits, so that a bad call is an `Err` and never a GPU fault.
fn validate(
    ctx: &Context,
    op: &'static str,
    spec: MatmulSpec,
    x: &Tensor,
    w: &Weight,
    bias: Option<&Weight>,
    y: &Tensor,
) -> Result<()> {
    let MatmulSpec {
        tokens: t,
        x_stride,
        y_stride,
        ..
    } = spec;
    let (n, k) = (w.rows, w.cols);
    if t == 0 {
        return Err(shape_err(op, "zero token rows"));
    }
    if n == 0 || k == 0 || w.chunks.is_empty() {
        return Err(shape_err(op, format!("weight is [{n}, {k}]")));
    }
    if x_stride < k || (t - 1) * x_stride + k > x.len {
        return Err(shape_err(
            op,
            format!(
                "x holds {} values, too few for {t} rows of {k} at stride {x_stride}",
                x.len
            ),
        ));
    }
    if y_stride < n || (t - 1) * y_stride + n > y.len {
        return Err(shape_err(
            op,
            format!(
                "y holds {} values, too few for {t} rows of {n} at stride {y_stride}",
                y.len
            ),
        ));
    }
    if let Some(b) = bias {
        if b.rows != 1 || b.cols != n || b.chunks.len() != 1 {
            return Err(shape_err(
                op,
                format!("bias is [{}, {}], expected [1, {n}]", b.rows, b.cols),
            ));
        }
    }
    if Arc::ptr_eq(&x.buffer, &y.buffer) {
        return Err(shape_err(
            op,
            "x and y are the same buffer (the output cannot alias the input)",
        ));
    }
    // Indices are u32 in the shader.
    if x.len > u32::MAX as usize || y.len > u32::MAX as usize {
        return Err(shape_err(op, "activation buffers beyond 2^32 elements"));
    }
    for (what, buf) in [("x", &x.buffer), ("y", &y.buffer)] {
        if buf.size() > ctx.caps.max_storage_binding {
            return Err(Error::Limit {
                what: format!("{op} {what} binding"),
                needed: buf.size(),
                limit: ctx.caps.max_storage_binding,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
    }
    Ok(())
}
