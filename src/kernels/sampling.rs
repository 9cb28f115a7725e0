//! Next-token selection on the GPU (DESIGN.md principle 2): greedy argmax and temperature / top-k /
//! top-p sampling of one row of logits into a u32 token buffer, with the random number drawn from a
//! counter-based hash of (seed, step position), so a recorded step replays with fresh randomness.

use super::step;
use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::{Context, Dispatch, Tensor};

const BODY: &str = include_str!("../../shaders/sampling.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        vocab: u32,
        row: u32,
        out_index: u32,
        /// 0 = off.
        top_k: u32,
        inv_temp: f32,
        /// >= 1 = off.
        top_p: f32,
        seed_lo: u32,
        seed_hi: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// The step buffer's word holding the batch's first position.
        POS0: u32 = step::POS0 as u32,
        /// The token written for a row of logits holding a NaN or +infinity.
        NONFINITE: u32 = u32::MAX - 1,
    }
}

/// What [`argmax`] and [`sample`] write instead of a token when the row holds a NaN or +infinity
/// (a corrupt model; -infinity is a masked token): the reader turns it into an error.
pub const NONFINITE_TOKEN: u32 = NONFINITE;

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        WG: u32 = 256,
    }
}

crate::wgsl_interface! {
    family: "sampling",
    structs: [Params],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        /// [rows, vocab]
        logits: read "array<f32>",
        step_buf: read "array<u32>",
        out: read_write "array<u32>",
    },
}

pub(crate) fn compose() -> Compose<'static> {
    Compose::new(&INTERFACE, vec![BODY])
}

/// Which logits to reduce: row `row` of a `[rows, vocab]` tensor.
#[derive(Clone, Copy, Debug)]
pub struct ArgmaxSpec {
    pub vocab: usize,
    pub row: usize,
}

/// A sampler over row `row` of `[rows, vocab]` logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleSpec {
    pub vocab: usize,
    pub row: usize,
    /// `<= 0` is greedy (argmax); NaN is an error.
    pub temperature: f32,
    /// Keep the logits `>=` the k-th largest (ties kept); 0 (or `>= vocab`) is off.
    pub top_k: usize,
    /// Keep the smallest set of highest logits holding `>= top_p` of the top-k mass; in (0, 1], 1 is off.
    pub top_p: f32,
    pub seed: u64,
}

/// The PCG hash (O'Neill's PCG-RXS-M-XS output over one LCG step), as in the shader.
pub fn pcg_hash(x: u32) -> u32 {
    let state = x.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// The uniform number in `[0, 1)` that [`sample`] draws for `seed` at position `pos0` (of the
/// batch's last token: `step[POS0] + step[N_TOKENS] - 1`, or a table row's own), bit-identical to
/// the shader's: 24 random bits scaled by 2^-24.
pub fn sample_uniform(seed: u64, pos0: u32) -> f32 {
    let h = pcg_hash(pcg_hash(pcg_hash(pos0) ^ seed as u32) ^ (seed >> 32) as u32);
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Bytes of workgroup memory the shader declares for a workgroup of `wg` invocations.
fn workgroup_bytes(wg: u32) -> u32 {
    // red_v, red_i, prefix: 4 B each; acc_a, acc_b: 16 B each; a few scalars.
    wg * (3 * 4 + 2 * 16) + 32
}

/// The widest workgroup the adapter runs: one workgroup walks a whole vocabulary.
fn workgroup_size(ctx: &Context) -> u32 {
    [1024, 512, 256]
        .into_iter()
        .find(|&wg| wg <= ctx.caps.max_invocations && workgroup_bytes(wg) <= ctx.caps.max_workgroup_storage)
        .unwrap_or(256)
}

fn check_row(
    op: &'static str,
    logits: &Tensor,
    vocab: usize,
    row: usize,
    out: &Tensor,
    out_index: usize,
) -> Result<()> {
    if vocab == 0 {
        return Err(shape_err(op, "vocab is 0"));
    }
    let rows = logits.len / vocab;
    if row >= rows {
        return Err(shape_err(
            op,
            format!("row {row} is out of range: logits hold {rows} rows of {vocab}"),
        ));
    }
    if logits.len > u32::MAX as usize {
        return Err(shape_err(op, "logits exceed 32-bit indexing"));
    }
    if out_index >= out.len {
        return Err(shape_err(
            op,
            format!("out_index {out_index} is past the {} entries of out", out.len),
        ));
    }
    Ok(())
}

/// The pipeline for `entry` (its subgroup twin `entry_sg` when the adapter has usable subgroups).
fn pipeline(
    ctx: &Context,
    entry: &'static str,
    entry_sg: &'static str,
) -> (std::sync::Arc<wgpu::ComputePipeline>, &'static str) {
    let constants = Consts {
        WG: workgroup_size(ctx),
    }
    .constants();
    let shader = ctx.shader(&compose());
    let entry = if ctx.caps.subgroups_usable() { entry_sg } else { entry };
    (ctx.pipeline(&shader, entry, &constants), entry)
}

fn params(vocab: usize, row: usize, out_index: usize, top_k: u32, inv_temp: f32, top_p: f32, seed: u64) -> Params {
    Params {
        vocab: vocab as u32,
        row: row as u32,
        out_index: out_index as u32,
        top_k,
        inv_temp,
        top_p,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
    }
}

/// Write the index of the largest logit of row `spec.row` (lowest index on ties) to
/// `out[out_index]` (`out` a u32 buffer). One workgroup.
pub fn argmax(ctx: &Context, logits: &Tensor, spec: ArgmaxSpec, out: &Tensor, out_index: usize) -> Result<Dispatch> {
    check_row("argmax", logits, spec.vocab, spec.row, out, out_index)?;
    let params = ctx.params(&params(spec.vocab, spec.row, out_index, 0, 0.0, 1.0, 0));
    let (pipeline, entry) = pipeline(ctx, "argmax", "argmax_sg");
    let res = [
        (bind::p, params.as_entire_binding()),
        (bind::logits, logits.binding()),
        (bind::out, out.binding()),
    ];
    Ok(Dispatch::new(
        ctx,
        entry,
        pipeline,
        &res,
        [1, 1, 1],
        vec![params.clone()],
    ))
}

/// Sample a token from row `spec.row` into `out[out_index]`: `p_i ∝ exp((l_i - max) / T)` over the
/// top-k then top-p survivors, drawn with [`sample_uniform`]`(seed, step[POS0])` (`step` is the step
/// buffer of [`crate::kernels::step`]). `temperature <= 0` builds an [`argmax`] instead. One workgroup.
pub fn sample(
    ctx: &Context,
    logits: &Tensor,
    spec: SampleSpec,
    step: &Tensor,
    out: &Tensor,
    out_index: usize,
) -> Result<Dispatch> {
    let op = "sample";
    let SampleSpec {
        vocab,
        row,
        temperature,
        top_k,
        top_p,
        seed,
    } = spec;
    check_row(op, logits, vocab, row, out, out_index)?;
    if temperature.is_nan() {
        return Err(shape_err(op, "temperature is NaN"));
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(shape_err(op, format!("top_p {top_p} is outside (0, 1]")));
    }
    if temperature <= 0.0 {
        return argmax(ctx, logits, ArgmaxSpec { vocab, row }, out, out_index);
    }
    let inv_temp = 1.0 / temperature;
    if !inv_temp.is_finite() {
        return Err(shape_err(
            op,
            format!("temperature {temperature} is too small to divide by"),
        ));
    }
    if step.len < step::LEN {
        return Err(shape_err(op, format!("the step buffer holds {} words", step.len)));
    }
    let top_k = if top_k >= vocab { 0 } else { top_k as u32 };
    let params = ctx.params(&params(vocab, row, out_index, top_k, inv_temp, top_p, seed));
    let (pipeline, entry) = pipeline(ctx, "sample", "sample_sg");
    let res = [
        (bind::p, params.as_entire_binding()),
        (bind::logits, logits.binding()),
        (bind::step_buf, step.binding()),
        (bind::out, out.binding()),
    ];
    Ok(Dispatch::new(
        ctx,
        entry,
        pipeline,
        &res,
        [1, 1, 1],
        vec![params.clone()],
    ))
}
