//! The prefill expert GEMMs on cooperative matrices against the f64 reference of
//! kernels-tests/moe.rs, on adapters that have f16 cooperative matrices (16x16 or 8x8; lavapipe from
//! Mesa 25.1 on: `scripts/coop_lavapipe.sh`). Elsewhere the test only checks that prefill keeps the
//! tiled GEMMs.
//!
//! Cases aim at the tile edges: experts with more pairs than one tile (several token tiles), I and D
//! not multiples of the tile, odd D (the last weight word half used), idle experts, both gate/up
//! layouts, SwiGLU and gpt-oss's clamped SwiGLU with biases, accumulate, experts in several weight
//! chunks, and an OLMoE-sized expert. Bound: [`COOP_NMSE`] (f16 activations).

mod common;
use common::moe::*;
use common::*;
use wgmoe::gpu::DType;
use wgmoe::kernels::moe::{Act, GateUpLayout, MoeSpec};

/// Runs `s` on the native context; asserts it took the cooperative path and matches the reference.
fn check(s: MoeSpec, dtype: DType, bias: bool, idle: &[u32], chunked: bool, seed: u64) {
    let d = make_data(&s, dtype, bias, idle, seed);
    let (got, coop) = run_gpu(native(), &s, dtype, &d, chunked, Path::Prefill);
    let what = format!("{} {s:?} bias={bias} chunked={chunked}", dtype.name());
    assert!(coop, "{what}: prefill did not run on cooperative matrices");
    assert_nmse(&what, &got, &reference(&s, &d), COOP_NMSE);
}

fn has_coop() -> bool {
    let side = wgmoe::kernels::matmul::coop_side(native());
    eprintln!("{}: cooperative matrices {side:?}", native().info.name);
    if side.is_none() {
        // Prefill must then keep the tiled GEMMs.
        let s = spec(12, 4, 2, 16, 8);
        let d = make_data(&s, DType::F16, false, &[], 1);
        assert!(!run_gpu(native(), &s, DType::F16, &d, false, Path::Prefill).1);
    }
    side.is_some()
}

#[test]
fn layouts_acts_and_tile_edges() {
    if !has_coop() {
        return;
    }
    let mut seed = 1;
    // 300 tokens, 6 experts, top-2: ~100 pairs per expert, two or more token tiles at either side.
    // D = 300 and I = 200: every subgroup's outputs in use and a partial last workgroup (tiles of
    // 128 gate|up outputs and 256 down outputs at 16x16, half that at 8x8).
    for (t, d, i) in [(9, 72, 40), (300, 72, 40), (40, 33, 13), (40, 300, 200)] {
        for dtype in [DType::F16, DType::BF16] {
            for (gate_up, act) in [
                (GateUpLayout::Concatenated, Act::Silu),
                (GateUpLayout::Interleaved, GPT_OSS),
            ] {
                let s = MoeSpec {
                    gate_up,
                    act,
                    accumulate: seed % 2 == 0,
                    ..spec(t, 6, 2, d, i)
                };
                check(s, dtype, act != Act::Silu, &[], false, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn idle_experts_and_chunks() {
    if !has_coop() {
        return;
    }
    // Experts 1 and 4 get no token; then two experts per weight chunk.
    let s = MoeSpec {
        accumulate: true,
        ..spec(70, 7, 3, 72, 40)
    };
    check(s, DType::BF16, true, &[1, 4], false, 11);
    check(s, DType::F16, true, &[5], true, 12);
}

#[test]
fn olmoe_sized_experts() {
    if !has_coop() {
        return;
    }
    // OLMoE-1B-7B's D=2048, I=1024, k=8, with 10 of its 64 experts to keep software adapters fast.
    check(spec(24, 10, 8, 2048, 1024), DType::BF16, false, &[], false, 42);
}
