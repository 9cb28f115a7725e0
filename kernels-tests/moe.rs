//! Routed experts against an f64 reference: decode GEMVs (1/3/8 tokens) and prefill grouped GEMMs
//! (9/40 tokens), every weight precision, concatenated and interleaved gate/up, SwiGLU and gpt-oss's
//! clamped SwiGLU with biases, idle experts, tokens sharing an expert pattern, odd D/I, an OLMoE-sized
//! expert, accumulate on/off, experts split over several weight chunks, bad shapes, and router ->
//! experts end to end with the ids never leaving the GPU.
//!
//! Ids and routing weights are fed in as GPU tensors so routing is not under test (except end to
//! end). The reference uses the weights rounded to their dtype and f64 math; the GPU computes in f32
//! (dot products of up to 2048 terms, exp in the activation), whose relative error is ~1e-6 at worst,
//! an NMSE ~1e-12; the bound 1e-9 leaves margin across adapters while any indexing or formula error
//! (a wrong row, a missed slot or bias) shows up as NMSE >= 1e-4.
//!
//! On adapters with cooperative matrices the native context's prefill runs on them (activations
//! rounded to f16) and is held to the cooperative bound (the `coop_*` tests at the end); the
//! portable context still checks the tiled GEMMs at 1e-9.

mod common;
use common::moe::*;
use common::*;
use wgmoe::internals::gpu::{DType, Tensor, Weight};
use wgmoe::internals::kernels::moe::{moe, moe_decode, moe_prefill, Act, Experts, GateUpLayout, MoeSpec};
use wgmoe::internals::kernels::router::{router, RouterSpec, Scoring};

const NMSE: f64 = 1e-9;
#[allow(clippy::too_many_arguments)]
fn check(s: MoeSpec, dtype: DType, bias: bool, idle: &[u32], chunked: bool, path: Path, seed: u64) {
    let d = make_data(&s, dtype, bias, idle, seed);
    let want = reference(&s, &d);
    for (name, ctx) in contexts() {
        let (got, coop) = run_gpu(ctx, &s, dtype, &d, chunked, path);
        let what = format!("{name} {} {s:?} bias={bias} chunked={chunked}", dtype.name());
        assert_nmse(&what, &got, &want, if coop { COOP_NMSE } else { NMSE });
    }
}

/// Every dtype x gate/up layout x activation (gpt-oss's with biases) at the given token counts.
fn sweep(tokens: &[usize], path: Path) {
    let mut seed = 1;
    for &t in tokens {
        for dtype in DTYPES {
            for (gate_up, act) in [
                (GateUpLayout::Concatenated, Act::Silu),
                (GateUpLayout::Interleaved, GPT_OSS),
                (GateUpLayout::Concatenated, GPT_OSS),
                (GateUpLayout::Interleaved, Act::Silu),
            ] {
                let bias = act != Act::Silu;
                let s = MoeSpec {
                    gate_up,
                    act,
                    accumulate: seed % 2 == 0,
                    ..spec(t, 6, 2, 72, 40)
                };
                check(s, dtype, bias, &[], false, path, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn decode_all_dtypes_layouts_acts() {
    sweep(&[1, 3, 8], Path::Decode);
}

#[test]
fn prefill_all_dtypes_layouts_acts() {
    sweep(&[9, 40], Path::Prefill);
}

#[test]
fn odd_sizes_idle_experts_accumulate() {
    for (path, t) in [(Path::Auto, 1), (Path::Auto, 5), (Path::Auto, 37), (Path::Prefill, 3)] {
        for accumulate in [false, true] {
            // D and I not multiples of 4 or 8; experts 1, 4 and 9 get no token.
            let s = MoeSpec {
                accumulate,
                ..spec(t, 12, 3, 70, 37)
            };
            check(
                s,
                DType::BF16,
                true,
                &[1, 4, 9],
                false,
                path,
                t as u64 + accumulate as u64,
            );
            let s = MoeSpec {
                accumulate,
                gate_up: GateUpLayout::Interleaved,
                act: GPT_OSS,
                ..spec(t, 5, 1, 33, 13)
            };
            check(s, DType::F16, false, &[0], false, path, 7 * t as u64);
        }
    }
}

#[test]
fn chunked_experts() {
    // Two experts per chunk: 4 chunks of gate_up and of down.
    for (t, path) in [(1, Path::Decode), (4, Path::Decode), (20, Path::Prefill)] {
        for dtype in DTYPES {
            let s = MoeSpec {
                accumulate: t == 4,
                ..spec(t, 7, 3, 72, 40)
            };
            check(s, dtype, true, &[], true, path, 100 + t as u64);
            let s = MoeSpec {
                gate_up: GateUpLayout::Interleaved,
                act: GPT_OSS,
                ..s
            };
            check(s, dtype, true, &[5], true, path, 200 + t as u64);
        }
    }
}

#[test]
fn olmoe_sized_experts_bf16() {
    // OLMoE-1B-7B's D=2048, I=1024, k=8, with 10 of its 64 experts to keep lavapipe fast.
    check(
        spec(1, 10, 8, 2048, 1024),
        DType::BF16,
        false,
        &[],
        false,
        Path::Auto,
        42,
    );
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = native();
    let s = spec(2, 4, 2, 16, 8);
    let f = |n| Tensor::zeros(ctx, "t", n);
    let zeros = |r: usize, c: usize, g: usize| upload(ctx, DType::F32, r, c, g, &vec![0u8; r * c * 4], false);
    let (gu, dn) = (zeros(4 * 16, 16, 16), zeros(4 * 16, 8, 16));
    let (x, ids, w, y) = (f(32), f(4), f(4), f(32));
    let call = |s: MoeSpec, gu: &Weight, dn: &Weight, x: &Tensor| {
        moe(
            ctx,
            s,
            Experts {
                gate_up: gu,
                down: dn,
                gate_up_bias: None,
                down_bias: None,
            },
            x,
            &ids,
            &w,
            &y,
        )
        .is_err()
    };
    assert!(!call(s, &gu, &dn, &x), "a good shape");
    assert!(moe_prefill(
        ctx,
        s,
        Experts {
            gate_up: &gu,
            down: &dn,
            gate_up_bias: None,
            down_bias: None
        },
        &x,
        &ids,
        &w,
        &y
    )
    .is_ok());
    assert!(call(MoeSpec { top_k: 5, ..s }, &gu, &dn, &x), "k > E");
    assert!(call(MoeSpec { inter: 9, ..s }, &gu, &dn, &x), "gate_up rows != E*2I");
    assert!(call(MoeSpec { hidden: 8, ..s }, &gu, &dn, &x), "gate_up cols != D");
    assert!(call(MoeSpec { experts: 3, ..s }, &gu, &dn, &x), "expert count mismatch");
    assert!(call(s, &dn, &gu, &x), "weights swapped");
    assert!(call(s, &gu, &dn, &f(16)), "x too short");
    assert!(call(MoeSpec { tokens: 3, ..s }, &gu, &dn, &x), "ids too short");
    assert!(call(MoeSpec { tokens: 0, ..s }, &gu, &dn, &x), "no tokens");
    let ungrouped = zeros(4 * 16, 16, 1);
    assert!(call(s, &ungrouped, &dn, &x), "gate_up not grouped by expert");
    let bad_bias = zeros(4, 8, 1);
    assert!(
        moe(
            ctx,
            s,
            Experts {
                gate_up: &gu,
                down: &dn,
                gate_up_bias: Some(&bad_bias),
                down_bias: None
            },
            &x,
            &ids,
            &w,
            &y
        )
        .is_err(),
        "gate_up bias [E, I]"
    );
    let big = f(9 * 16);
    let (ids9, w9) = (f(18), f(18));
    let s9 = MoeSpec { tokens: 9, ..s };
    assert!(
        moe_decode(
            ctx,
            s9,
            Experts {
                gate_up: &gu,
                down: &dn,
                gate_up_bias: None,
                down_bias: None
            },
            &big,
            &ids9,
            &w9,
            &big
        )
        .is_err(),
        "decode beyond 8 tokens"
    );
}

/// Softmax + top-k + renormalise in f64; `None` when a choice is within 1e-4 of a tie.
fn route(logits: &[f32], k: usize) -> Option<(Vec<u32>, Vec<f32>)> {
    let m = logits.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
    let p: Vec<f64> = logits.iter().map(|&l| (l as f64 - m).exp()).collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let z: f64 = p.iter().sum();
    if order[..k + 1].windows(2).any(|w| (p[w[0]] - p[w[1]]) / z < 1e-4) {
        return None;
    }
    let sum: f64 = order[..k].iter().map(|&i| p[i]).sum();
    Some((
        order[..k].iter().map(|&i| i as u32).collect(),
        order[..k].iter().map(|&i| (p[i] / sum) as f32).collect(),
    ))
}

#[test]
fn router_to_experts_end_to_end() {
    for tokens in [3, 20] {
        let s = MoeSpec {
            accumulate: true,
            ..spec(tokens, 16, 4, 72, 40)
        };
        let mut rng = Rng::new(tokens as u64);
        let mut logits = vec![];
        let (mut ids, mut w) = (vec![], vec![]);
        while ids.len() < tokens * s.top_k {
            let l = rng.vec(s.experts, 3.0);
            if let Some((i, ww)) = route(&l, s.top_k) {
                logits.extend(l);
                ids.extend(i);
                w.extend(ww);
            }
        }
        let mut d = make_data(&s, DType::BF16, false, &[], 9 + tokens as u64);
        d.ids = ids;
        d.w = w;
        // The routing weights are rounded to f32 in `w`; its error (1e-7 relative) is far below NMSE.
        let want = reference(&s, &d);
        for (name, ctx) in contexts() {
            let (e, dim, i) = (s.experts, s.hidden, s.inter);
            let gu = upload(ctx, DType::BF16, e * 2 * i, dim, 2 * i, &d.gate_up_bytes, false);
            let dn = upload(ctx, DType::BF16, e * dim, i, dim, &d.down_bytes, false);
            let lt = Tensor::from_f32(ctx, "logits", &logits);
            let ids = Tensor::zeros(ctx, "ids", tokens * s.top_k);
            let wt = Tensor::zeros(ctx, "w", tokens * s.top_k);
            let x = Tensor::from_f32(ctx, "x", &d.x);
            let y = Tensor::from_f32(ctx, "y", &d.y0);
            let rs = RouterSpec {
                tokens,
                experts: e,
                top_k: s.top_k,
                scoring: Scoring::Softmax,
                groups: None,
                renormalize: true,
                scale: 1.0,
                shared: None,
            };
            let r = router(ctx, &rs, &lt, None, &ids, &wt).unwrap();
            let m = moe(
                ctx,
                s,
                Experts {
                    gate_up: &gu,
                    down: &dn,
                    gate_up_bias: None,
                    down_bias: None,
                },
                &x,
                &ids,
                &wt,
                &y,
            )
            .unwrap();
            let coop = m.iter().any(|d| d.label.contains("coop"));
            let mut all = vec![&r];
            all.extend(m.iter());
            ctx.submit(&all);
            assert_nmse(
                &format!("{name} router->moe T={tokens}"),
                &y.read_f32(ctx).unwrap(),
                &want,
                if coop { COOP_NMSE } else { NMSE },
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The prefill expert GEMMs on cooperative matrices: on adapters that have f16 cooperative matrices
// (16x16 or 8x8; lavapipe from Mesa 25.1 on: `scripts/coop_lavapipe.sh`); elsewhere the tests only
// check that prefill keeps the tiled GEMMs.
//
// Cases aim at the tile edges: experts with more pairs than one tile (several token tiles), I and D
// not multiples of the tile, odd D (the last weight word half used), idle experts, both gate/up
// layouts, SwiGLU and gpt-oss's clamped SwiGLU with biases, accumulate, experts in several weight
// chunks, and an OLMoE-sized expert. Bound: `COOP_NMSE` (f16 activations).

/// Runs `s` on the native context; asserts it took the cooperative path and matches the reference.
fn check_coop(s: MoeSpec, dtype: DType, bias: bool, idle: &[u32], chunked: bool, seed: u64) {
    let d = make_data(&s, dtype, bias, idle, seed);
    let (got, coop) = run_gpu(native(), &s, dtype, &d, chunked, Path::Prefill);
    let what = format!("{} {s:?} bias={bias} chunked={chunked}", dtype.name());
    assert!(coop, "{what}: prefill did not run on cooperative matrices");
    assert_nmse(&what, &got, &reference(&s, &d), COOP_NMSE);
}

fn has_coop() -> bool {
    let side = wgmoe::internals::kernels::matmul::coop_side(native());
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
fn coop_layouts_acts_and_tile_edges() {
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
                check_coop(s, dtype, act != Act::Silu, &[], false, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn coop_idle_experts_and_chunks() {
    if !has_coop() {
        return;
    }
    // Experts 1 and 4 get no token; then two experts per weight chunk.
    let s = MoeSpec {
        accumulate: true,
        ..spec(70, 7, 3, 72, 40)
    };
    check_coop(s, DType::BF16, true, &[1, 4], false, 11);
    check_coop(s, DType::F16, true, &[5], true, 12);
}

#[test]
fn coop_olmoe_sized_experts() {
    if !has_coop() {
        return;
    }
    // OLMoE-1B-7B's D=2048, I=1024, k=8, with 10 of its 64 experts to keep software adapters fast.
    check_coop(spec(24, 10, 8, 2048, 1024), DType::BF16, false, &[], false, 42);
}
