//! RMSNorm with an optional fused residual add (MODELS.md §1): `x += delta; y = w * x * rsqrt(mean(x²) + eps)`.

use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::{grid, Context, Dispatch, Tensor, Weight};

const BODY: &str = include_str!("../../shaders/rmsnorm.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        rows: u32,
        dim: u32,
        x_stride: u32,
        y_stride: u32,
        add_stride: u32,
        eps: f32,
        x_offset: u32,
    }
}

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        WG: u32 = 128,
        W_DTYPE: u32 = 0,
        ADD: bool = false,
    }
}

crate::wgsl_interface! {
    family: "rmsnorm",
    structs: [Params],
    overrides: Consts,
    bindings: {
        p: uniform Params,
        /// [rows, x_stride] (the residual stream with ADD)
        x: read_write "array<f32>",
        /// [rows, dim]
        delta: read "array<f32>",
        /// [dim]
        w: read "array<u32>",
        /// [rows, y_stride]
        y: read_write "array<f32>",
    },
}

/// The family's only source variant.
pub(crate) fn compose() -> Compose<'static> {
    Compose::new(&INTERFACE, vec![BODY])
}

/// Row layout of one RMSNorm: `rows` rows of `dim` values, row `r` read at `r * x_stride +
/// x_offset` and written at `r * y_stride` (or in place); strides default to `dim`, the offset to 0.
#[derive(Clone, Copy, Debug)]
pub struct NormShape {
    pub rows: usize,
    pub dim: usize,
    pub x_stride: usize,
    pub y_stride: usize,
    pub x_offset: usize,
    pub eps: f32,
}

impl NormShape {
    pub fn new(rows: usize, dim: usize, eps: f32) -> Self {
        Self {
            rows,
            dim,
            x_stride: dim,
            y_stride: dim,
            x_offset: 0,
            eps,
        }
    }
}

/// Where the normalised rows go.
pub enum NormOut<'a> {
    /// Overwrite `x` (the residual-add form cannot be in place: the sum is the residual stream).
    InPlace,
    To(&'a Tensor),
}

/// Build one RMSNorm dispatch. With `delta`, `x += delta` first and the sum stays in `x`.
pub fn rmsnorm(
    ctx: &Context,
    shape: NormShape,
    x: &Tensor,
    delta: Option<&Tensor>,
    w: &Weight,
    out: NormOut<'_>,
) -> Result<Dispatch> {
    let NormShape {
        rows,
        dim,
        x_stride,
        y_stride,
        x_offset,
        eps,
    } = shape;
    let op = "rmsnorm";
    if w.cols != dim || w.rows != 1 {
        return Err(shape_err(
            op,
            format!("weight is [{}, {}], expected [1, {dim}]", w.rows, w.cols),
        ));
    }
    if x_stride < dim || rows > 0 && (rows - 1) * x_stride + x_offset + dim > x.len {
        return Err(shape_err(
            op,
            format!("x holds {} values, too few for {rows} rows at stride {x_stride}", x.len),
        ));
    }
    if let Some(d) = delta {
        if d.len < rows * dim {
            return Err(shape_err(
                op,
                format!("delta holds {} values, need {}", d.len, rows * dim),
            ));
        }
    }
    let y = match out {
        NormOut::InPlace => {
            if delta.is_some() {
                return Err(shape_err(op, "a fused residual add needs a separate output"));
            }
            None
        }
        NormOut::To(y) => {
            if y_stride < dim || rows > 0 && (rows - 1) * y_stride + dim > y.len {
                return Err(shape_err(
                    op,
                    format!("y holds {} values, too few for {rows} rows at stride {y_stride}", y.len),
                ));
            }
            Some(y)
        }
    };
    let params = ctx.params(&Params {
        rows: rows as u32,
        dim: dim as u32,
        x_stride: x_stride as u32,
        y_stride: y_stride as u32,
        add_stride: dim as u32,
        eps,
        x_offset: x_offset as u32,
    });
    let consts = Consts {
        WG: if dim >= 1024 { 256 } else { 64 },
        W_DTYPE: w.dtype.code(),
        ADD: delta.is_some(),
    };
    let entry = if y.is_some() { "rmsnorm" } else { "rmsnorm_inplace" };
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), entry, &consts.constants());
    let mut res = vec![
        (bind::p, params.as_entire_binding()),
        (bind::x, x.binding()),
        (bind::w, w.chunks[0].buffer.as_entire_binding()),
    ];
    res.push((
        bind::delta,
        delta.map_or(ctx.dummy.as_entire_binding(), |d| d.binding()),
    ));
    if let Some(y) = y {
        res.push((bind::y, y.binding()));
    }
    Ok(Dispatch::new(
        ctx,
        entry,
        pipeline,
        &res,
        grid(rows as u32),
        vec![params.clone()],
    ))
}
