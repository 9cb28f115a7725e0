//! The per-head products of absorbed multi-head latent attention (MODELS.md §6.5): the query's
//! nope part into the latent space (`q_lat = W_UK_h^T q_nope`) and the attention output back out
//! of it (`o = W_UV_h o_lat`). Both are `y[t,h] = W_h x[t,h]` with one weight block per head.

use super::{grid, Dispatch};
use crate::error::{shape_err, Result};
use crate::gpu::{Context, Tensor, Weight};

pub const SHADER: &str = include_str!("../../shaders/mla.wgsl");

const WG: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
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
    w_row_words: u32,
    blocks: u32,
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
    let blocks = out_dim.div_ceil(WG);
    let params = ctx.uniform(
        "mla.params",
        &Params {
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
            w_row_words: w.row_words as u32,
            blocks: blocks as u32,
        },
    );
    let pipeline = ctx.pipeline(
        "mla",
        SHADER,
        "head_matvec",
        &[("WG", WG as f64), ("W_DTYPE", w.dtype.code())],
    );
    let res = [
        (0, params.as_entire_binding()),
        (1, x.binding()),
        (2, w.chunks[0].buffer.as_entire_binding()),
        (3, y.binding()),
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
