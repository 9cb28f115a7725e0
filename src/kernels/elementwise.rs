//! Glue between the big kernels: row copies between strided layouts (MLA's query assembly, the
//! last prefill row into the logits head), the end-of-step bookkeeping of generation and the token
//! mask of constrained decoding.

use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, Slot};
use crate::gpu::{grid, Context, Dispatch, Tensor};

const BODY: &str = include_str!("../../shaders/elementwise.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        rows: u32,
        width: u32,
        src_stride: u32,
        src_offset: u32,
        dst_stride: u32,
        dst_offset: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        WG: u32 = 256,
    }
}

crate::wgsl_interface! {
    family: "elementwise",
    structs: [Params],
    consts: CONSTS,
    bindings: {
        p: uniform Params,
        src: read "array<f32>",
        dst: read_write "array<f32>",
        /// advance_step: the step buffer (src/kernels/mod.rs `step`).
        step_state: read_write "array<u32>",
        next_ids: read "array<u32>",
        token_log: read_write "array<u32>",
        /// mask_logits: one bit per token, 1 = allowed.
        token_mask: read "array<u32>",
    },
}

pub(crate) fn compose() -> Compose<'static> {
    Compose::new(&INTERFACE, vec![BODY])
}

/// `rows` rows of `width` values: row `r` of a layout starts at `r * stride + offset`.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    pub rows: usize,
    pub width: usize,
    pub stride: usize,
    pub offset: usize,
}

impl Rows {
    /// Packed rows: stride = width, offset 0.
    pub fn packed(rows: usize, width: usize) -> Self {
        Self {
            rows,
            width,
            stride: width,
            offset: 0,
        }
    }

    fn check(&self, op: &'static str, what: &str, t: &Tensor) -> Result<()> {
        if self.rows == 0 || self.width == 0 {
            return Err(shape_err(op, format!("{what}: empty layout {self:?}")));
        }
        let end = (self.rows - 1) * self.stride + self.offset + self.width;
        if self.stride < self.width && self.rows > 1 || end > t.len {
            return Err(shape_err(
                op,
                format!("{what}: layout {self:?} needs {end} values, tensor holds {}", t.len),
            ));
        }
        Ok(())
    }
}

fn build(ctx: &Context, entry: &'static str, p: Params, res: &[(Slot, wgpu::BindingResource<'_>)]) -> Dispatch {
    let params = ctx.params(&p);
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), entry, &[]);
    let mut all = vec![(bind::p, params.as_entire_binding())];
    all.extend(res.iter().cloned());
    let n = p.rows * p.width;
    Dispatch::new(ctx, entry, pipeline, &all, grid(n.div_ceil(WG)), vec![params.clone()])
}

/// Copy rows from the `from` layout of `src` to the `to` layout of `dst` (same rows and width).
pub fn copy_rows(ctx: &Context, src: &Tensor, from: Rows, dst: &Tensor, to: Rows) -> Result<Dispatch> {
    let op = "copy_rows";
    if from.rows != to.rows || from.width != to.width {
        return Err(shape_err(
            op,
            format!("source {from:?} and destination {to:?} differ in rows or width"),
        ));
    }
    from.check(op, "src", src)?;
    to.check(op, "dst", dst)?;
    if std::sync::Arc::ptr_eq(&src.buffer, &dst.buffer) {
        return Err(shape_err(op, "source and destination must be different buffers"));
    }
    let p = Params {
        rows: from.rows as u32,
        width: from.width as u32,
        src_stride: from.stride as u32,
        src_offset: from.offset as u32,
        dst_stride: to.stride as u32,
        dst_offset: to.offset as u32,
    };
    Ok(build(
        ctx,
        op,
        p,
        &[(bind::src, src.binding()), (bind::dst, dst.binding())],
    ))
}

/// End a generation step: `log[pos0 + n] = ids[0]` (the sampled token at the position it will
/// occupy), then `step = [pos0 + n, 1]`, so the next single-token step can be replayed as recorded.
pub fn advance_step(ctx: &Context, step_buf: &Tensor, ids: &Tensor, log: &Tensor) -> Result<Dispatch> {
    let op = "advance_step";
    if step_buf.len < super::step::LEN || ids.len == 0 || log.len == 0 {
        return Err(shape_err(op, "needs a step buffer, an ids buffer and a token log"));
    }
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), op, &[]);
    let res = [
        (bind::step_state, step_buf.binding()),
        (bind::next_ids, ids.binding()),
        (bind::token_log, log.binding()),
    ];
    Ok(Dispatch::new(ctx, op, pipeline, &res, [1, 1, 1], vec![]))
}

/// Constrained decoding: `logits[row * width + i] = -inf` wherever bit `i` of `mask` is clear (the
/// sampler never picks a -inf logit). `rows` = one row of `width` = vocabulary logits at `offset`;
/// the mask is the `width.div_ceil(32)` words of `mask` from word `at` (missing words mask their
/// tokens).
pub fn mask_logits(ctx: &Context, logits: &Tensor, row: Rows, mask: &Tensor, at: usize) -> Result<Dispatch> {
    let op = "mask_logits";
    row.check(op, "logits", logits)?;
    if row.rows != 1 || mask.len <= at {
        return Err(shape_err(op, "masks one row of logits with mask words from `at` on"));
    }
    let p = Params {
        rows: 1,
        width: row.width as u32,
        src_stride: (mask.len - at).min(row.width.div_ceil(32)) as u32,
        src_offset: at as u32,
        dst_stride: row.stride as u32,
        dst_offset: row.offset as u32,
    };
    Ok(build(
        ctx,
        op,
        p,
        &[(bind::dst, logits.binding()), (bind::token_mask, mask.binding())],
    ))
}
