//! SwiGLU (both gate/up layouts, plain SiLU and gpt-oss's clamped form) and the Qwen2-MoE sigmoid
//! gate against f64 references, with inputs large enough (|x| up to 10) to hit the clamps.
//!
//! Bound: NMSE <= 1e-7. The kernel's only inexact operation beyond rounding is `exp` in f32; WGSL
//! allows `3 + 2|x|` ULP for it, at most ~37 ULP (~2.2e-6 relative) for |alpha * g| <= 17, so the
//! squared relative error per element stays below ~5e-12, far inside the bound.

mod common;
use common::*;
use wgmoe::internals::gpu::Tensor;
use wgmoe::internals::kernels::swiglu::{sigmoid_gate, swiglu, Act, GateUpLayout, SigmoidGateSpec, SwigluSpec};

const GPT_OSS: Act = Act::Clamped {
    limit: 7.0,
    alpha: 1.702,
};

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn reference(spec: SwigluSpec, gu: &[f32]) -> Vec<f64> {
    let mut out = vec![0.0; spec.tokens * spec.out_stride];
    for t in 0..spec.tokens {
        let row = &gu[t * spec.in_stride..];
        for i in 0..spec.inter {
            let (g, u) = match spec.layout {
                GateUpLayout::Concatenated => (row[i] as f64, row[spec.inter + i] as f64),
                GateUpLayout::Interleaved => (row[2 * i] as f64, row[2 * i + 1] as f64),
            };
            out[t * spec.out_stride + i] = match spec.act {
                Act::Silu => g * sigmoid(g) * u,
                Act::Clamped { limit, alpha } => {
                    let (limit, alpha) = (limit as f64, alpha as f64);
                    let g = g.min(limit);
                    let u = u.clamp(-limit, limit);
                    (u + 1.0) * g * sigmoid(alpha * g)
                }
            };
        }
    }
    out
}

/// Run one SwiGLU on both adapters and compare the outputs' own elements (strided gaps must keep
/// their sentinel).
fn check(spec: SwigluSpec, seed: u64) {
    for (name, ctx) in contexts() {
        let mut rng = Rng::new(seed);
        let gu = rng.vec((spec.tokens - 1) * spec.in_stride + 2 * spec.inter, 10.0);
        let out_len = (spec.tokens - 1) * spec.out_stride + spec.inter;
        let sentinel = 123.0f32;
        let gut = Tensor::from_f32(ctx, "gu", &gu);
        let out = Tensor::from_f32(ctx, "out", &vec![sentinel; out_len]);
        let d = swiglu(ctx, spec, &gut, &out).unwrap();
        ctx.submit(&[&d]);
        let got = out.read_f32(ctx).unwrap();
        let want = reference(spec, &gu);
        let own = |i: usize| i % spec.out_stride < spec.inter;
        let got_own: Vec<f32> = (0..out_len).filter(|&i| own(i)).map(|i| got[i]).collect();
        let want_own: Vec<f64> = (0..out_len).filter(|&i| own(i)).map(|i| want[i]).collect();
        assert_nmse(&format!("{name} {spec:?}"), &got_own, &want_own, 1e-7);
        assert!(
            (0..out_len).filter(|&i| !own(i)).all(|i| got[i] == sentinel),
            "{name} {spec:?}: wrote into a stride gap"
        );
    }
}

#[test]
fn silu_concatenated() {
    for (tokens, inter) in [(1, 1), (1, 37), (9, 129), (9, 768)] {
        check(
            SwigluSpec::new(tokens, inter, GateUpLayout::Concatenated, Act::Silu),
            (tokens * inter) as u64,
        );
    }
}

#[test]
fn silu_interleaved() {
    for (tokens, inter) in [(1, 5), (9, 257)] {
        check(
            SwigluSpec::new(tokens, inter, GateUpLayout::Interleaved, Act::Silu),
            inter as u64,
        );
    }
}

#[test]
fn gpt_oss_clamped_interleaved() {
    for (tokens, inter) in [(1, 1), (1, 2880), (9, 333)] {
        check(
            SwigluSpec::new(tokens, inter, GateUpLayout::Interleaved, GPT_OSS),
            7 + inter as u64,
        );
    }
}

#[test]
fn clamped_concatenated_and_strided() {
    check(SwigluSpec::new(9, 101, GateUpLayout::Concatenated, GPT_OSS), 3);
    // Rows read from a wider buffer and written into a wider one.
    let spec = SwigluSpec {
        in_stride: 2 * 45 + 6,
        out_stride: 50,
        ..SwigluSpec::new(9, 45, GateUpLayout::Interleaved, GPT_OSS)
    };
    check(spec, 4);
    let spec = SwigluSpec {
        in_stride: 100,
        out_stride: 47,
        ..SwigluSpec::new(1, 45, GateUpLayout::Concatenated, Act::Silu)
    };
    check(spec, 5);
}

#[test]
fn clamps_are_hit() {
    // Guard the test itself: the random inputs must reach both sides of the clamps.
    let mut rng = Rng::new(7 + 2880);
    let gu = rng.vec(2 * 2880, 10.0);
    assert!(gu.iter().step_by(2).any(|&g| g > 7.0), "no gate above the limit");
    assert!(gu.iter().skip(1).step_by(2).any(|&u| u > 7.0) && gu.iter().skip(1).step_by(2).any(|&u| u < -7.0));
}

#[test]
fn sigmoid_gate_accumulates_shared_expert() {
    for (name, ctx) in contexts() {
        for (tokens, dim) in [(1, 1), (1, 2048), (9, 129)] {
            let mut rng = Rng::new(dim as u64);
            let logit = rng.vec(tokens, 10.0);
            let s = rng.vec(tokens * dim, 2.0);
            let y0 = rng.vec(tokens * dim, 2.0);
            let (lt, st, yt) = (
                Tensor::from_f32(ctx, "l", &logit),
                Tensor::from_f32(ctx, "s", &s),
                Tensor::from_f32(ctx, "y", &y0),
            );
            let d = sigmoid_gate(ctx, SigmoidGateSpec::new(tokens, dim), &lt, &st, &yt).unwrap();
            ctx.submit(&[&d]);
            let want: Vec<f64> = (0..tokens * dim)
                .map(|n| y0[n] as f64 + sigmoid(logit[n / dim] as f64) * s[n] as f64)
                .collect();
            assert_nmse(
                &format!("{name} sigmoid_gate T={tokens} D={dim}"),
                &yt.read_f32(ctx).unwrap(),
                &want,
                1e-7,
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = native();
    let gu = Tensor::zeros(ctx, "gu", 2 * 2 * 8);
    let out = Tensor::zeros(ctx, "out", 2 * 8);
    let ok = SwigluSpec::new(2, 8, GateUpLayout::Concatenated, Act::Silu);
    assert!(swiglu(ctx, ok, &gu, &out).is_ok());
    assert!(swiglu(
        ctx,
        SwigluSpec::new(3, 8, GateUpLayout::Concatenated, Act::Silu),
        &gu,
        &out
    )
    .is_err());
    assert!(swiglu(
        ctx,
        SwigluSpec::new(2, 9, GateUpLayout::Interleaved, Act::Silu),
        &gu,
        &out
    )
    .is_err());
    assert!(swiglu(
        ctx,
        SwigluSpec::new(0, 8, GateUpLayout::Concatenated, Act::Silu),
        &gu,
        &out
    )
    .is_err());
    assert!(swiglu(ctx, SwigluSpec { in_stride: 15, ..ok }, &gu, &out).is_err());
    assert!(swiglu(ctx, SwigluSpec { out_stride: 9, ..ok }, &gu, &out).is_err());
    let bad_act = Act::Clamped {
        limit: f32::NAN,
        alpha: 1.0,
    };
    assert!(swiglu(ctx, SwigluSpec { act: bad_act, ..ok }, &gu, &out).is_err());
    let l = Tensor::zeros(ctx, "l", 1);
    assert!(
        sigmoid_gate(ctx, SigmoidGateSpec::new(2, 8), &l, &out, &out).is_err(),
        "one logit for two tokens"
    );
    assert!(sigmoid_gate(ctx, SigmoidGateSpec::new(1, 17), &l, &out, &out).is_err());
}
