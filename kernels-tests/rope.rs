//! RoPE against an f64 reference: both layouts, partial dims, strided rows (fused qkv, MLA q_pe and
//! the shared k_pe inside a kv_a row), default / yarn / llama3 tables, positions from the step
//! buffer (including replaying one recorded dispatch at new positions), bad shapes.
//!
//! The reference angle is the f32 product `f32(pos) * inv_f32`, as HF computes it (the frequency
//! table and the position-times-frequency product are f32 tensors there); only cos/sin and the
//! rotation are then done in f64. An f64 angle would differ from HF's own by up to half an ulp of
//! the angle (~1e-4 rad at position 3000), which is HF's error, not ours, and would blur what the
//! test can see.

mod common;
use common::*;
use wgmoe::internals::gpu::{Context, Tensor};
use wgmoe::internals::kernels::rope::{rope, rope_frequencies, RopeLayout, RopeScaling, RopeSpec};
use wgmoe::internals::kernels::step;

fn reference(x: &[f32], s: &RopeSpec, inv: &[f32], pos0: u32) -> Vec<f64> {
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let half = s.rot_dims / 2;
    let af = s.attention_factor as f64;
    for t in 0..s.tokens {
        let angle_pos = (pos0 as usize + t) as f32;
        for h in 0..s.heads {
            let base = t * s.row_stride + h * s.head_stride + s.rot_offset;
            for i in 0..half {
                let angle = (angle_pos * inv[i]) as f64;
                let (c, sn) = (angle.cos() * af, angle.sin() * af);
                let (a, b) = match s.layout {
                    RopeLayout::Half => (base + i, base + i + half),
                    RopeLayout::Interleaved => (base + 2 * i, base + 2 * i + 1),
                };
                let (xa, xb) = (x[a] as f64, x[b] as f64);
                out[a] = xa * c - xb * sn;
                out[b] = xb * c + xa * sn;
            }
        }
    }
    out
}

fn buffer_len(s: &RopeSpec) -> usize {
    // One spare float past the last row catches writes outside the layout.
    (s.tokens - 1) * s.row_stride + s.heads * s.head_stride + 1
}

fn run(ctx: &Context, s: RopeSpec, inv: &[f32], x: &[f32], pos0: u32) -> Vec<f32> {
    let xt = Tensor::from_f32(ctx, "x", x);
    let it = Tensor::from_f32(ctx, "inv", inv);
    let st = step::new(ctx, pos0, s.tokens as u32);
    let d = rope(ctx, &xt, s, &it, &st).unwrap();
    ctx.submit(&[&d]);
    xt.read_f32(ctx).unwrap()
}

fn check(what: &str, s: RopeSpec, inv: &[f32], pos0: u32, seed: u64) {
    assert_eq!(inv.len(), s.rot_dims / 2);
    for (name, ctx) in contexts() {
        let x = Rng::new(seed).vec(buffer_len(&s), 1.0);
        let got = run(ctx, s, inv, &x, pos0);
        let want = reference(&x, &s, inv, pos0);
        assert_nmse(&format!("{name} {what} pos0={pos0} {s:?}"), &got, &want, 1e-7);
        // Values outside the rotated dims are untouched, bit for bit.
        for t in 0..s.tokens {
            for h in 0..s.heads {
                let base = t * s.row_stride + h * s.head_stride;
                for j in (0..s.head_stride).filter(|j| *j < s.rot_offset || *j >= s.rot_offset + s.rot_dims) {
                    assert_eq!(
                        got[base + j],
                        x[base + j],
                        "{name} {what}: value {j} of head {h} token {t} changed"
                    );
                }
            }
        }
        let last = x.len() - 1;
        assert_eq!(got[last], x[last], "{name} {what}: wrote past the layout");
    }
}

#[test]
fn half_default_fused_qk_qwen3() {
    // Qwen3-30B-A3B: q (32 heads) and k (4 heads) of a fused qkv row, hd 128, theta 1e6.
    let (inv, af) = rope_frequencies(128, 1e6, &RopeScaling::Default, 40960);
    let s = RopeSpec {
        tokens: 5,
        heads: 36,
        head_stride: 128,
        row_stride: 40 * 128,
        rot_offset: 0,
        rot_dims: 128,
        layout: RopeLayout::Half,
        attention_factor: af,
    };
    check("qwen3 fused qk", s, &inv, 0, 1);
    check("qwen3 fused qk", RopeSpec { tokens: 1, ..s }, &inv, 2999, 2);
}

#[test]
fn half_yarn_gpt_oss() {
    let scaling = RopeScaling::Yarn {
        factor: Some(32.0),
        original_max_position: Some(4096),
        beta_fast: Some(32.0),
        beta_slow: Some(1.0),
        mscale: None,
        mscale_all_dim: None,
        attention_factor: None,
        truncate: false,
    };
    let (inv, af) = rope_frequencies(64, 150000.0, &scaling, 131072);
    assert!((af - 1.34657).abs() < 1e-5);
    let s = RopeSpec::heads(3, 8, 64, RopeLayout::Half, af);
    check("gpt-oss yarn", s, &inv, 4000, 3);
    check("gpt-oss yarn", s, &inv, 0, 4);
}

#[test]
fn interleaved_yarn_mla_q_pe_and_k_pe() {
    // DeepSeek-V2-Lite: rope over the last 64 of each 192-wide q head, and the shared k_pe at
    // offset 512 of each 576-wide kv_a row (one head whose stride is the whole row).
    let scaling = RopeScaling::Yarn {
        factor: Some(40.0),
        original_max_position: Some(4096),
        beta_fast: Some(32.0),
        beta_slow: Some(1.0),
        mscale: Some(0.707),
        mscale_all_dim: Some(0.707),
        attention_factor: None,
        truncate: true,
    };
    let (inv, af) = rope_frequencies(64, 10000.0, &scaling, 163840);
    let q = RopeSpec {
        tokens: 5,
        heads: 16,
        head_stride: 192,
        row_stride: 16 * 192,
        rot_offset: 128,
        rot_dims: 64,
        layout: RopeLayout::Interleaved,
        attention_factor: af,
    };
    check("mla q_pe", q, &inv, 1000, 5);
    let k = RopeSpec {
        tokens: 7,
        heads: 1,
        head_stride: 576,
        row_stride: 576,
        rot_offset: 512,
        rot_dims: 64,
        layout: RopeLayout::Interleaved,
        attention_factor: af,
    };
    check("mla k_pe", k, &inv, 3, 6);
}

#[test]
fn partial_dims_llama3_odd_shapes() {
    let scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position: 8192,
    };
    // 20 of 36 dims rotated from offset 6, heads padded to 40 floats, rows padded too.
    let (inv, af) = rope_frequencies(20, 500000.0, &scaling, 131072);
    for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
        let s = RopeSpec {
            tokens: 13,
            heads: 3,
            head_stride: 40,
            row_stride: 130,
            rot_offset: 6,
            rot_dims: 20,
            layout,
            attention_factor: af,
        };
        check("llama3 partial", s, &inv, 17, 7);
    }
    let (inv, af) = rope_frequencies(2, 10000.0, &RopeScaling::Default, 4096);
    check(
        "single pair",
        RopeSpec::heads(1, 1, 2, RopeLayout::Half, af),
        &inv,
        1234,
        8,
    );
}

#[test]
fn replay_reads_positions_from_step_buffer() {
    // One recorded dispatch, replayed after the step buffer moves on: each run must use the new pos0.
    let (inv, af) = rope_frequencies(64, 10000.0, &RopeScaling::Default, 4096);
    let s = RopeSpec::heads(2, 4, 64, RopeLayout::Half, af);
    for (name, ctx) in contexts() {
        let x = Rng::new(9).vec(s.tokens * s.row_stride, 1.0);
        let xt = Tensor::from_f32(ctx, "x", &x);
        let it = Tensor::from_f32(ctx, "inv", &inv);
        let st = step::new(ctx, 0, 2);
        let d = rope(ctx, &xt, s, &it, &st).unwrap();
        for pos0 in [0u32, 5, 300, 2047] {
            xt.write_f32(ctx, &x);
            ctx.queue
                .write_buffer(&st.buffer, 0, bytemuck::cast_slice(&[pos0, 2u32]));
            ctx.submit(&[&d]);
            let got = xt.read_f32(ctx).unwrap();
            assert_nmse(
                &format!("{name} replay pos0={pos0}"),
                &got,
                &reference(&x, &s, &inv, pos0),
                1e-7,
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = native();
    let (inv, af) = rope_frequencies(8, 10000.0, &RopeScaling::Default, 4096);
    let it = Tensor::from_f32(ctx, "inv", &inv);
    let st = step::new(ctx, 0, 1);
    let x = Tensor::zeros(ctx, "x", 2 * 8);
    let ok = RopeSpec::heads(1, 2, 8, RopeLayout::Half, af);
    assert!(rope(ctx, &x, ok, &it, &st).is_ok());
    assert!(
        rope(ctx, &x, RopeSpec { tokens: 2, ..ok }, &it, &st).is_err(),
        "x too small"
    );
    assert!(
        rope(ctx, &x, RopeSpec { rot_dims: 7, ..ok }, &it, &st).is_err(),
        "odd rot_dims"
    );
    assert!(
        rope(ctx, &x, RopeSpec { rot_offset: 2, ..ok }, &it, &st).is_err(),
        "rotation past the head"
    );
    assert!(
        rope(ctx, &x, RopeSpec { row_stride: 12, ..ok }, &it, &st).is_err(),
        "heads wider than a row"
    );
    let short = Tensor::from_f32(ctx, "inv", &inv[..2]);
    assert!(rope(ctx, &x, ok, &short, &st).is_err(), "inv_freq too short");
    let tiny_step = Tensor::from_u32(ctx, "step", &[0]);
    assert!(rope(ctx, &x, ok, &it, &tiny_step).is_err(), "step buffer too short");
}
