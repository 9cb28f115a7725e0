//! The gating activations of feed-forward blocks: SwiGLU over a fused gate/up projection (dense
//! layers and experts, MODELS.md §1; gpt-oss's clamped variant with interleaved gate/up columns,
//! §7) and the sigmoid gate that scales Qwen2-MoE's shared expert before it joins the output.

use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::{grid, Context, Dispatch, Tensor};

const BODY: &str = include_str!("../../shaders/swiglu.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        tokens: u32,
        inter: u32,
        in_stride: u32,
        out_stride: u32,
        limit: f32,
        alpha: f32,
    }
}

crate::wgsl_struct! {
    pub(crate) struct GateParams {
        tokens: u32,
        dim: u32,
        s_stride: u32,
        y_stride: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// Invocations per workgroup.
        WG: u32 = 256,
    }
}

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        INTERLEAVED: bool = false,
        CLAMPED: bool = false,
    }
}

crate::wgsl_interface! {
    family: "swiglu",
    structs: [Params, GateParams],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        /// [T, 2I] at in_stride
        gu: read "array<f32>",
        /// [T, I] at out_stride
        out: read_write "array<f32>",
        q: uniform GateParams,
        /// [T]
        gate_logit: read "array<f32>",
        /// [T, D] at s_stride
        shared_out: read "array<f32>",
        /// [T, D] at y_stride
        y: read_write "array<f32>",
    },
}

pub(crate) fn compose() -> Compose<'static> {
    Compose::new(&INTERFACE, vec![BODY])
}

/// Where gate and up sit in a row of the fused projection `[T, 2I]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateUpLayout {
    /// `g = gu[t, i]`, `u = gu[t, I + i]` (gate rows then up rows stacked in one weight).
    Concatenated,
    /// `g = gu[t, 2i]`, `u = gu[t, 2i + 1]` (gpt-oss `gate_up_proj`).
    Interleaved,
}

/// The activation applied to a (gate, up) pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    /// `silu(g) * u`, `silu(z) = z * sigmoid(z)`.
    Silu,
    /// gpt-oss: `g = min(g, limit)`, `u = clamp(u, -limit, limit)`,
    /// `(u + 1) * g * sigmoid(alpha * g)` (`swiglu_limit` 7.0, alpha 1.702).
    Clamped { limit: f32, alpha: f32 },
}

/// One SwiGLU: `tokens` rows of `2 * inter` gate/up values read at `in_stride`, `inter` outputs
/// per row written at `out_stride`.
#[derive(Clone, Copy, Debug)]
pub struct SwigluSpec {
    pub tokens: usize,
    pub inter: usize,
    pub layout: GateUpLayout,
    pub act: Act,
    pub in_stride: usize,
    pub out_stride: usize,
}

impl SwigluSpec {
    /// Packed rows: `in_stride = 2 * inter`, `out_stride = inter`.
    pub fn new(tokens: usize, inter: usize, layout: GateUpLayout, act: Act) -> Self {
        Self {
            tokens,
            inter,
            layout,
            act,
            in_stride: 2 * inter,
            out_stride: inter,
        }
    }
}

fn check_rows(op: &'static str, what: &str, t: &Tensor, rows: usize, width: usize, stride: usize) -> Result<()> {
    if stride < width {
        return Err(shape_err(
            op,
            format!("{what} stride {stride} is below its row width {width}"),
        ));
    }
    if rows > 0 && (rows - 1) * stride + width > t.len {
        return Err(shape_err(
            op,
            format!(
                "{what} holds {} values, too few for {rows} rows of {width} at stride {stride}",
                t.len
            ),
        ));
    }
    if rows * stride > u32::MAX as usize {
        return Err(shape_err(op, format!("{what} exceeds 32-bit indexing")));
    }
    Ok(())
}

fn flat_groups(op: &'static str, elems: usize) -> Result<[u32; 3]> {
    let groups = elems.div_ceil(WG as usize);
    if groups > 65535 * 65535 {
        return Err(shape_err(op, format!("{elems} outputs are too many workgroups")));
    }
    Ok(grid(groups as u32))
}

/// Build one SwiGLU dispatch `out[t, i] = act(gate, up)` from the fused projection `gu`.
/// `gu` and `out` must be different buffers.
pub fn swiglu(ctx: &Context, spec: SwigluSpec, gu: &Tensor, out: &Tensor) -> Result<Dispatch> {
    let op = "swiglu";
    let SwigluSpec {
        tokens,
        inter,
        layout,
        act,
        in_stride,
        out_stride,
    } = spec;
    if tokens == 0 || inter == 0 {
        return Err(shape_err(op, format!("empty shape: {tokens} tokens x {inter}")));
    }
    check_rows(op, "gu", gu, tokens, 2 * inter, in_stride)?;
    check_rows(op, "out", out, tokens, inter, out_stride)?;
    let (limit, alpha) = match act {
        Act::Silu => (0.0, 0.0),
        Act::Clamped { limit, alpha } => {
            if !(limit.is_finite() && limit > 0.0 && alpha.is_finite()) {
                return Err(shape_err(
                    op,
                    format!("clamped SwiGLU needs a positive finite limit and a finite alpha, got {limit}, {alpha}"),
                ));
            }
            (limit, alpha)
        }
    };
    let groups = flat_groups(op, tokens * inter)?;
    let params = ctx.params(&Params {
        tokens: tokens as u32,
        inter: inter as u32,
        in_stride: in_stride as u32,
        out_stride: out_stride as u32,
        limit,
        alpha,
    });
    let consts = Consts {
        INTERLEAVED: layout == GateUpLayout::Interleaved,
        CLAMPED: matches!(act, Act::Clamped { .. }),
    };
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), "swiglu", &consts.constants());
    let res = [
        (bind::p, params.as_entire_binding()),
        (bind::gu, gu.binding()),
        (bind::out, out.binding()),
    ];
    Ok(Dispatch::new(ctx, op, pipeline, &res, groups, vec![params.clone()]))
}

/// Shape of one [`sigmoid_gate`]: `tokens` rows of `dim`; `s` and `y` rows at their own strides.
#[derive(Clone, Copy, Debug)]
pub struct SigmoidGateSpec {
    pub tokens: usize,
    pub dim: usize,
    pub s_stride: usize,
    pub y_stride: usize,
}

impl SigmoidGateSpec {
    /// Packed rows of `dim`.
    pub fn new(tokens: usize, dim: usize) -> Self {
        Self {
            tokens,
            dim,
            s_stride: dim,
            y_stride: dim,
        }
    }
}

/// Qwen2-MoE's shared-expert gate (MODELS.md §5.2), accumulated into the block output:
/// `y[t, :] += sigmoid(gate_logit[t]) * s[t, :]`, where `gate_logit` is the `[T, 1]` output of
/// `shared_expert_gate` (a matmul) and `s` the shared expert's `[T, D]` output.
pub fn sigmoid_gate(
    ctx: &Context,
    spec: SigmoidGateSpec,
    gate_logit: &Tensor,
    s: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    let op = "sigmoid_gate";
    let SigmoidGateSpec {
        tokens,
        dim,
        s_stride,
        y_stride,
    } = spec;
    if tokens == 0 || dim == 0 {
        return Err(shape_err(op, format!("empty shape: {tokens} tokens x {dim}")));
    }
    if gate_logit.len < tokens {
        return Err(shape_err(
            op,
            format!("gate_logit holds {} values, need {tokens}", gate_logit.len),
        ));
    }
    check_rows(op, "s", s, tokens, dim, s_stride)?;
    check_rows(op, "y", y, tokens, dim, y_stride)?;
    let groups = flat_groups(op, tokens * dim)?;
    let params = ctx.params(&GateParams {
        tokens: tokens as u32,
        dim: dim as u32,
        s_stride: s_stride as u32,
        y_stride: y_stride as u32,
    });
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), "sigmoid_gate", &Consts::default().constants());
    let res = [
        (bind::q, params.as_entire_binding()),
        (bind::gate_logit, gate_logit.binding()),
        (bind::shared_out, s.binding()),
        (bind::y, y.binding()),
    ];
    Ok(Dispatch::new(ctx, op, pipeline, &res, groups, vec![params.clone()]))
}
