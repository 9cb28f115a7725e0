//! The prefill projection on cooperative matrices (f16 inputs, f32 accumulators, 16x16 or 8x8 as
//! the adapter has them): the same `y = x @ W^T (+ bias)` (or `+=`) as [`super::matmul::gemm`], for
//! 16-bit weights on adapters whose `Caps::coop_f16` is set. x is rounded to f16 on its way into
//! the tiles.
//!
//! `matmul` picks it wherever it is available unless `WGMOE_COOP_MATRIX=0`;
//! `kernels-tests/gemm_coop.rs` checks it against the f64 reference on any adapter that has it
//! (Mesa >= 25.1 lavapipe has 8x8: `scripts/coop_lavapipe.sh` runs the tests there).

use super::matmul::MatmulSpec;
use super::{grid, Dispatch};
use crate::error::{shape_err, Result};
use crate::gpu::{Context, DType, Tensor, Weight};

pub const SHADER: &str = include_str!("../../shaders/gemm_coop.wgsl");

/// Subgroups per workgroup (shaders/gemm_coop.wgsl NSG).
const NSG: usize = 4;

const NO_BIAS: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tokens: u32,
    rows: u32,
    k: u32,
    row_words: u32,
    x_stride: u32,
    y_stride: u32,
    first_row: u32,
    bias_dtype: u32,
    accumulate: u32,
    _pad: [u32; 3],
}

/// Workgroup memory the cooperative kernels take at 16x16 (moe_coop's, the larger: 18.3 KB).
const WORKGROUP_BYTES: u32 = 20 * 1024;

/// The cooperative-matrix side this adapter offers to 16-bit weights, if any.
pub fn side(ctx: &Context) -> Option<u32> {
    let c = &ctx.caps;
    c.coop_f16
        .filter(|_| c.f16 && c.subgroups && c.max_workgroup_storage >= WORKGROUP_BYTES)
}

/// Whether this adapter and weight can take the cooperative-matrix path.
pub fn available(ctx: &Context, w: &Weight) -> bool {
    side(ctx).is_some() && w.dtype != DType::F32
}

/// Whether prefill should use cooperative matrices: available and not turned off with
/// `WGMOE_COOP_MATRIX=0` (for comparing against the portable tiles).
pub fn enabled(ctx: &Context, w: &Weight) -> bool {
    available(ctx, w) && std::env::var("WGMOE_COOP_MATRIX").map_or(true, |v| v != "0")
}

pub fn gemm_coop(
    ctx: &Context,
    spec: MatmulSpec,
    x: &Tensor,
    w: &Weight,
    bias: Option<&Weight>,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let op = "gemm_coop";
    if !available(ctx, w) {
        return Err(shape_err(
            op,
            "needs cooperative matrices, f16, subgroups and 16-bit weights",
        ));
    }
    let (t, n, k) = (spec.tokens, w.rows, w.cols);
    if t == 0 || spec.x_stride < k || (t - 1) * spec.x_stride + k > x.len {
        return Err(shape_err(
            op,
            format!("x holds {} values, too few for {t} rows of {k}", x.len),
        ));
    }
    if spec.y_stride < n || (t - 1) * spec.y_stride + n > y.len {
        return Err(shape_err(
            op,
            format!("y holds {} values, too few for {t} rows of {n}", y.len),
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
    let cm = side(ctx).unwrap_or(16);
    // A workgroup of NSG subgroups owns 4 CM token rows by NSG * 4 CM outputs (shaders/gemm_coop.wgsl).
    let (bm, bn) = (4 * cm as usize, NSG * 4 * cm as usize);
    let wg = NSG as u32 * ctx.caps.subgroup_max.max(1);
    let family = if cm == 16 { "gemm_coop" } else { "gemm_coop8" };
    let pipeline = ctx.pipeline(
        family,
        &super::coop_source(SHADER, cm),
        op,
        &[("W_DTYPE", w.dtype.code()), ("WG", wg as f64)],
    );
    let mut out = Vec::with_capacity(w.chunks.len());
    for chunk in &w.chunks {
        let params = ctx.uniform(
            "gemm_coop.params",
            &Params {
                tokens: t as u32,
                rows: chunk.rows,
                k: k as u32,
                row_words: w.row_words as u32,
                x_stride: spec.x_stride as u32,
                y_stride: spec.y_stride as u32,
                first_row: chunk.first_row,
                bias_dtype: bias.map_or(NO_BIAS, |b| b.dtype.code() as u32),
                accumulate: spec.accumulate as u32,
                _pad: [0; 3],
            },
        );
        let res = [
            (0, params.as_entire_binding()),
            (1, x.binding()),
            (2, chunk.buffer.as_entire_binding()),
            (
                3,
                bias.map_or(ctx.dummy.as_entire_binding(), |b| {
                    b.chunks[0].buffer.as_entire_binding()
                }),
            ),
            (4, y.binding()),
        ];
        let groups = t.div_ceil(bm) * (chunk.rows as usize).div_ceil(bn);
        out.push(Dispatch::new(
            ctx,
            format!("{op}[{}..{}]", chunk.first_row, chunk.first_row + chunk.rows),
            pipeline.clone(),
            &res,
            grid(groups as u32),
            vec![params.clone()],
        ));
    }
    Ok(out)
}
