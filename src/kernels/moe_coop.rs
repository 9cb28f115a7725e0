//! The prefill expert GEMMs on cooperative matrices: `moe_gate_up_coop` and `moe_down_coop`, drop-in
//! replacements for the tiled `moe_gate_up_gemm` / `moe_down_gemm` of [`super::moe`] (same
//! bindings, parameters, pair lists and scratch), for 16-bit experts on adapters with f16
//! cooperative matrices. Activations are rounded to f16 on their way into the tiles.
//!
//! [`super::moe::moe_prefill`] picks them wherever [`super::gemm_coop::enabled`] says so (turned
//! off by `WGMOE_COOP_MATRIX=0`); `kernels-tests/moe_coop.rs` checks them against an f64 reference
//! and the tiled path.

use super::moe::Experts;
use crate::gpu::Context;

/// moe.wgsl with the cooperative kernels appended: they share its bindings and helpers.
pub const SHADER: &str = concat!(
    include_str!("../../shaders/moe.wgsl"),
    "\n",
    include_str!("../../shaders/moe_coop.wgsl")
);

/// Whether prefill runs these experts on cooperative matrices.
pub fn enabled(ctx: &Context, experts: &Experts<'_>) -> bool {
    super::gemm_coop::enabled(ctx, experts.gate_up) && super::gemm_coop::enabled(ctx, experts.down)
}

/// The pipeline cache family, the tile side and the source for this adapter.
pub(super) fn variant(ctx: &Context) -> (&'static str, u32, String) {
    let cm = super::gemm_coop::side(ctx).unwrap_or(16);
    let family = if cm == 16 { "moe_coop" } else { "moe_coop8" };
    (family, cm, super::coop_source(SHADER, cm))
}
