//! RMSNorm against an f64 reference: plain, fused residual add, in place, strided rows (MLA latent),
//! per-head (qk-norm), every weight precision, fast and portable adapters.

mod common;
use common::*;
use wgmoe::internals::gpu::{Tensor, Weight};
use wgmoe::internals::kernels::rmsnorm::{rmsnorm, NormOut, NormShape};

fn reference(x: &[f32], delta: Option<&[f32]>, w: &[f64], s: NormShape) -> (Vec<f64>, Vec<f64>) {
    let mut xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut y = vec![0.0; s.rows * s.y_stride];
    for r in 0..s.rows {
        let row = &mut xs[r * s.x_stride + s.x_offset..][..s.dim];
        if let Some(d) = delta {
            for i in 0..s.dim {
                row[i] += d[r * s.dim + i] as f64;
            }
        }
        let ms = row.iter().map(|v| v * v).sum::<f64>() / s.dim as f64;
        let scale = 1.0 / (ms + s.eps as f64).sqrt();
        for i in 0..s.dim {
            y[r * s.y_stride + i] = w[i] * row[i] * scale;
        }
    }
    (xs, y)
}

fn check(s: NormShape, with_delta: bool, in_place: bool, seed: u64) {
    for (name, ctx) in contexts() {
        for dtype in DTYPES {
            let mut rng = Rng::new(seed);
            let x = rng.vec((s.rows.max(1) - 1) * s.x_stride + s.x_offset + s.dim, 2.0);
            let delta = with_delta.then(|| rng.vec(s.rows * s.dim, 1.0));
            let wv: Vec<f32> = (0..s.dim).map(|_| 1.0 + rng.uniform(0.3)).collect();
            let w = Weight::from_f32(ctx, "w", dtype, 1, s.dim, &wv).unwrap();
            let xt = Tensor::from_f32(ctx, "x", &x);
            let dt = delta.as_ref().map(|d| Tensor::from_f32(ctx, "d", d));
            let yt = Tensor::zeros(ctx, "y", (s.rows.max(1) - 1) * s.y_stride + s.dim);
            let out = if in_place { NormOut::InPlace } else { NormOut::To(&yt) };
            let d = rmsnorm(ctx, s, &xt, dt.as_ref(), &w, out).unwrap();
            ctx.submit(&[&d]);
            let (want_x, want_y) = reference(&x, delta.as_deref(), &rounded(dtype, &wv), s);
            let what = format!("{name} {} {s:?} delta={with_delta} in_place={in_place}", dtype.name());
            let got = if in_place {
                xt.read_f32(ctx).unwrap()
            } else {
                yt.read_f32(ctx).unwrap()
            };
            // Compare only the rows' own elements (strided layouts leave gaps untouched).
            let (stride, offset) = if in_place {
                (s.x_stride, s.x_offset)
            } else {
                (s.y_stride, 0)
            };
            let pick = |v: &[f32]| -> Vec<f32> {
                (0..s.rows)
                    .flat_map(|r| v[r * stride + offset..][..s.dim].to_vec())
                    .collect()
            };
            let pick64 = |v: &[f64]| -> Vec<f64> {
                (0..s.rows)
                    .flat_map(|r| v[r * s.y_stride..][..s.dim].to_vec())
                    .collect()
            };
            assert_nmse(&what, &pick(&got), &pick64(&want_y), 1e-10);
            if with_delta {
                let gx = xt.read_f32(ctx).unwrap();
                assert_nmse(&format!("{what} residual"), &gx, &want_x, 1e-12);
            }
        }
    }
}

#[test]
fn plain_odd_shapes() {
    for (rows, dim) in [(1, 1), (1, 7), (3, 129), (5, 1000), (2, 2048)] {
        check(
            NormShape::new(rows, dim, 1e-6),
            false,
            false,
            rows as u64 * 31 + dim as u64,
        );
    }
}

#[test]
fn fused_residual_add() {
    for (rows, dim) in [(1, 64), (7, 2048), (4, 2880)] {
        check(NormShape::new(rows, dim, 1e-5), true, false, dim as u64);
    }
}

#[test]
fn in_place_per_head_qk_norm() {
    // Qwen3: rows = tokens * heads, dim = head_dim.
    check(NormShape::new(3 * 32, 128, 1e-6), false, true, 5);
}

#[test]
fn strided_rows_mla_latent() {
    // DeepSeek-V2-Lite: normalise the first 512 of each 576-wide kv_a row into a packed output.
    let s = NormShape {
        x_stride: 576,
        y_stride: 512,
        ..NormShape::new(5, 512, 1e-6)
    };
    check(s, false, false, 9);
    let s = NormShape {
        x_stride: 576,
        y_stride: 576,
        ..NormShape::new(3, 512, 1e-6)
    };
    check(s, false, true, 10);
    // OLMoE's k_norm: the k part of fused q|k|v rows, in place.
    let s = NormShape {
        x_stride: 3 * 256,
        y_stride: 3 * 256,
        x_offset: 256,
        ..NormShape::new(4, 256, 1e-5)
    };
    check(s, false, true, 10);
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = native();
    let w = Weight::from_f32(ctx, "w", wgmoe::internals::gpu::DType::F32, 1, 8, &[1.0; 8]).unwrap();
    let x = Tensor::zeros(ctx, "x", 8);
    assert!(rmsnorm(ctx, NormShape::new(2, 8, 1e-6), &x, None, &w, NormOut::InPlace).is_err());
    assert!(rmsnorm(ctx, NormShape::new(1, 16, 1e-6), &x, None, &w, NormOut::InPlace).is_err());
}
