//! The prefill expert GEMMs on cooperative matrices: `moe_gate_up_coop` and `moe_down_coop`, drop-in
//! replacements for the tiled `moe_gate_up_gemm` / `moe_down_gemm` of [`super::moe`] (same
//! bindings, parameters, pair lists and scratch), for 16-bit experts on adapters with f16
//! cooperative matrices. Activations are rounded to f16 on their way into the tiles.
//!
//! [`super::moe::moe_prefill`] picks them wherever [`super::gemm_coop::enabled`] says so (turned
//! off by `WGMOE_COOP_MATRIX=0`); `kernels-tests/moe_coop.rs` checks them against an f64 reference
//! and the tiled path.

use super::moe::Experts;
use crate::gpu::shader::{Compose, ConstDecl, Value};
use crate::gpu::Context;

const BODY: &str = include_str!("../../shaders/moe_coop.wgsl");

/// Whether prefill runs these experts on cooperative matrices.
pub fn enabled(ctx: &Context, experts: &Experts<'_>) -> bool {
    super::gemm_coop::enabled(ctx, experts.gate_up) && super::gemm_coop::enabled(ctx, experts.down)
}

/// Subgroups per workgroup (shaders/moe_coop.wgsl NSG).
const NSG: usize = 4;

/// How this adapter runs the kernels: the source (moe.wgsl with these kernels appended: they share
/// its bindings and helpers), the workgroup size, and the tile: pairs per workgroup, and outputs
/// per workgroup of gate_up and of down.
pub(super) struct Variant {
    pub compose: Compose<'static>,
    pub workgroup: u32,
    pub pairs: usize,
    pub gate_up_outputs: usize,
    pub down_outputs: usize,
}

/// The source for tiles of side `cm`.
pub(crate) fn compose(cm: u32) -> Compose<'static> {
    let c = |name, v: u32| ConstDecl {
        name,
        value: Value::u32(v),
        doc: "",
    };
    let mut compose = super::moe::compose();
    compose.variant = format!("coop{cm}");
    compose.parts.push(BODY);
    compose.consts = vec![
        c("CM", cm),
        c("NSG", NSG as u32),
        c("CBM", 4 * cm),
        c("CBK", cm),
        c("CBN", NSG as u32 * 4 * cm),
    ];
    compose.coop_side = Some(cm);
    compose
}

pub(super) fn variant(ctx: &Context) -> Variant {
    let cm = super::gemm_coop::side(ctx).unwrap_or(16);
    let c = cm as usize;
    Variant {
        compose: compose(cm),
        workgroup: NSG as u32 * ctx.caps.subgroup_max.max(1),
        pairs: 4 * c,
        gate_up_outputs: NSG * 2 * c,
        down_outputs: NSG * 4 * c,
    }
}
