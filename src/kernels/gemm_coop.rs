//! The prefill projection on cooperative matrices (f16 inputs, f32 accumulators, 16x16 or 8x8 as
//! the adapter has them): the same `y = x @ W^T (+ bias)` (or `+=`) as [`super::matmul::gemm`], for
//! 16-bit weights on adapters whose `Caps::coop_f16` is set. x is rounded to f16 on its way into
//! the tiles.
//!
//! `matmul` picks it wherever it is available unless `WGMOE_COOP_MATRIX=0`;
//! `kernels-tests/gemm_coop.rs` checks it against the f64 reference on any adapter that has it
//! (Mesa >= 25.1 lavapipe has 8x8: `scripts/coop_lavapipe.sh` runs the tests there).

use super::matmul::MatmulSpec;
use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, ConstDecl, HostStruct, Interface, Overrides, Value};
use crate::gpu::{grid, Context, DType, Dispatch, Tensor, Weight};

const BODY: &str = include_str!("../../shaders/gemm_coop.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        tokens: u32,
        rows: u32,
        k: u32,
        /// u32 words per weight row (16-bit weights: two per word; a multiple of 4).
        row_words: u32,
        x_stride: u32,
        y_stride: u32,
        first_row: u32,
        bias_dtype: u32,
        accumulate: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        NO_BIAS: u32 = u32::MAX,
    }
}

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        W_DTYPE: u32 = 1,
        /// NSG subgroups: NSG times the adapter's subgroup size.
        WG: u32 = 128,
    }
}

crate::wgsl_bindings! {
    pub(crate) mod bind {
        p: uniform Params,
        x: read "array<f32>",
        w: read "array<vec4<u32>>",
        bias: read "array<u32>",
        y: read_write "array<f32>",
    }
}

pub(crate) const INTERFACE: Interface = Interface {
    family: "gemm_coop",
    structs: &[Params::DECL],
    consts: CONSTS,
    overrides: Consts::DECLS,
    bindings: bind::ALL,
};

/// Subgroups per workgroup.
const NSG: usize = 4;

/// The source for tiles of side `cm`, with its block: 4 CM token rows by NSG * 4 CM outputs.
pub(crate) fn compose(cm: u32) -> Compose<'static> {
    let c = |name, v: u32| ConstDecl {
        name,
        value: Value::u32(v),
        doc: "",
    };
    Compose {
        family: "gemm_coop",
        variant: format!("coop{cm}"),
        interface: &INTERFACE,
        parts: vec![BODY],
        consts: vec![
            c("CM", cm),
            c("NSG", NSG as u32),
            c("BM", 4 * cm),
            c("BN", NSG as u32 * 4 * cm),
            c("BK", cm),
        ],
        coop_side: Some(cm),
    }
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
    let consts = Consts {
        W_DTYPE: w.dtype.code(),
        WG: NSG as u32 * ctx.caps.subgroup_max.max(1),
    };
    let pipeline = ctx.pipeline(&ctx.shader(&compose(cm)), op, &consts.constants());
    let mut out = Vec::with_capacity(w.chunks.len());
    for chunk in &w.chunks {
        let params = ctx.params(&Params {
            tokens: t as u32,
            rows: chunk.rows,
            k: k as u32,
            row_words: w.row_words as u32,
            x_stride: spec.x_stride as u32,
            y_stride: spec.y_stride as u32,
            first_row: chunk.first_row,
            bias_dtype: bias.map_or(NO_BIAS, |b| b.dtype.code()),
            accumulate: spec.accumulate as u32,
        });
        let res = [
            (bind::p, params.as_entire_binding()),
            (bind::x, x.binding()),
            (bind::w, chunk.buffer.as_entire_binding()),
            (
                bind::bias,
                bias.map_or(ctx.dummy.as_entire_binding(), |b| {
                    b.chunks[0].buffer.as_entire_binding()
                }),
            ),
            (bind::y, y.binding()),
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
