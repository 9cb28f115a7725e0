//! Benchmark helpers: a vec4 copy (the bandwidth roofline), a dependent one-invocation dispatch
//! (the per-dispatch overhead), and random weights filled on the GPU (synthetic shapes without
//! multi-GB host buffers).

use crate::error::{Error, Result};
use crate::gpu::shader::Compose;
use crate::gpu::{grid, Context, DType, Dispatch, Weight};

const BODY: &str = include_str!("../../shaders/bench.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        /// vec4s to copy or fill.
        words: u32,
        seed: u32,
        scale: f32,
        /// fill_random: the DT_* code of the weights made.
        dtype: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// copy and fill_random: one vec4 per invocation.
        WG: u32 = 256,
    }
}

crate::wgsl_interface! {
    family: "bench",
    structs: [Params],
    consts: CONSTS,
    bindings: {
        p: uniform Params,
        src: read "array<vec4<u32>>",
        dst: read_write "array<vec4<u32>>",
    },
}

pub(crate) fn compose() -> Compose<'static> {
    Compose::new(&INTERFACE, vec![BODY])
}

fn params(ctx: &Context, words: u32, seed: u32, scale: f32, dtype: DType) -> wgpu::Buffer {
    ctx.params(&Params {
        words,
        seed,
        scale,
        dtype: dtype.code(),
    })
}

/// `dst[..bytes] = src[..bytes]` (bytes a multiple of 16).
pub fn copy(ctx: &Context, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) -> Result<Dispatch> {
    let vec4s = bytes / 16;
    if !bytes.is_multiple_of(16) || bytes > src.size() || bytes > dst.size() || vec4s > u32::MAX as u64 {
        return Err(Error::bad_input(format!(
            "copy of {bytes} bytes does not fit the buffers"
        )));
    }
    let p = params(ctx, vec4s as u32, 0, 0.0, DType::F32);
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), "copy", &[]);
    let res = [
        (bind::p, p.as_entire_binding()),
        (bind::src, src.as_entire_binding()),
        (bind::dst, dst.as_entire_binding()),
    ];
    Ok(Dispatch::new(
        ctx,
        "copy",
        pipeline,
        &res,
        grid((vec4s as u32).div_ceil(WG)),
        vec![p.clone()],
    ))
}

/// One invocation incrementing `dst[0]`: consecutive copies form a dependent chain.
pub fn chain(ctx: &Context, dst: &wgpu::Buffer) -> Dispatch {
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), "chain", &[]);
    Dispatch::new(
        ctx,
        "chain",
        pipeline,
        &[(bind::dst, dst.as_entire_binding())],
        [1, 1, 1],
        vec![],
    )
}

/// A weight `[rows, cols]` of uniform random values in `[-scale, scale)`, made on the GPU; block
/// formats take random blocks of values about `scale` ([`fill_blocks`]). `cols` must fill whole
/// 16-byte groups (whole blocks), so the padding that real shapes never have cannot hold random
/// values a kernel might read.
#[allow(clippy::too_many_arguments)]
pub fn random_weight(
    ctx: &Context,
    label: &str,
    dtype: DType,
    rows: usize,
    cols: usize,
    group_rows: usize,
    seed: u32,
    scale: f32,
) -> Result<Weight> {
    if !dtype.is_packed() && !cols.is_multiple_of(dtype.elems_per_vec4()) {
        return Err(Error::bad_input(format!(
            "{label}: random weights need cols ({cols}) a multiple of {}",
            dtype.elems_per_vec4()
        )));
    }
    // Checks the row groups and, for block formats, whole blocks.
    let w = Weight::alloc(ctx, label, dtype, rows, cols, group_rows, ctx.caps.max_storage_binding)?;
    if dtype.is_packed() {
        fill_blocks(ctx, &w, seed, scale)?;
        ctx.wait()?;
        return Ok(w);
    }
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), "fill_random", &[]);
    for chunk in &w.chunks {
        let vec4s = (chunk.buffer.size() / 16) as u32;
        let p = params(
            ctx,
            vec4s,
            seed.wrapping_add(chunk.first_row.wrapping_mul(0x9E37_79B9)),
            scale,
            dtype,
        );
        let d = Dispatch::new(
            ctx,
            "fill_random",
            pipeline.clone(),
            &[
                (bind::p, p.as_entire_binding()),
                (bind::dst, chunk.buffer.as_entire_binding()),
            ],
            grid(vec4s.div_ceil(WG)),
            vec![p.clone()],
        );
        ctx.submit(&[&d]);
    }
    ctx.wait()?;
    Ok(w)
}

/// Fill a block-quantised weight with random blocks ([`crate::gpu::Format::random_rows`]: values
/// about `scale`), made on the host a slab of rows at a time (a GPU fill would have to know every
/// format's scale fields).
fn fill_blocks(ctx: &Context, w: &Weight, seed: u32, scale: f32) -> Result<()> {
    let f = w.format();
    let slab = ((64 << 20) / w.row_bytes().max(1)).max(1);
    for first in (0..w.rows).step_by(slab) {
        let n = slab.min(w.rows - first);
        let bytes = f
            .random_rows(n, w.cols, (seed as u64) << 32 | first as u64, scale)
            .ok_or_else(|| Error::unsupported(format!("{} is not whole {} blocks", w.cols, f.name)))?;
        w.write_rows(ctx, first, &bytes)?;
    }
    Ok(())
}
