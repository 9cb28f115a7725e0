//! The cooperative-matrix prefill projection against an f64 reference, on adapters that have
//! f16 cooperative matrices (16x16 or 8x8; lavapipe from Mesa 25.1 on: `scripts/coop_lavapipe.sh`).
//! Elsewhere the test only checks that the path refuses.
//!
//! Bound: x is rounded to f16 in the tiles (relative error 2^-11 per element) while the reference
//! uses f32 x, so NMSE ~ (2^-11)^2 / 3 ~ 8e-8 per product, averaged: <= 1e-6 with margin.

mod common;
use common::*;
use wgmoe::gpu::{DType, Tensor, Weight};
use wgmoe::kernels::matmul::{coop_available as available, coop_side, gemm_coop, MatmulSpec};

#[test]
fn coop_gemm_matches_reference_where_available() {
    let ctx = native();
    let probe = Weight::from_f32(ctx, "probe", DType::F16, 1, 8, &[0.0; 8]).unwrap();
    if !available(ctx, &probe) {
        eprintln!(
            "{}: no f16 cooperative matrices; checking that the path refuses",
            ctx.info.name
        );
        let x = Tensor::zeros(ctx, "x", 8);
        let y = Tensor::zeros(ctx, "y", 1);
        assert!(gemm_coop(ctx, MatmulSpec::packed(1, &probe), &x, &probe, None, &y).is_err());
        return;
    }
    eprintln!("{}: cooperative matrices {:?}", ctx.info.name, coop_side(ctx));
    for (t, n, k, acc) in [
        (9, 33, 40, false),
        (64, 64, 64, true),
        (130, 200, 520, false),
        (512, 2048, 2048, false),
    ] {
        for dtype in [DType::F16, DType::BF16] {
            let mut rng = Rng::new((t * 7 + n + k) as u64);
            let x = rng.vec(t * k, 1.0);
            let wv = rng.vec(n * k, 0.5);
            let bv = rng.vec(n, 0.5);
            let y0 = rng.vec(t * n, 1.0);
            let w = Weight::from_f32(ctx, "w", dtype, n, k, &wv).unwrap();
            let b = Weight::from_f32(ctx, "b", DType::F32, 1, n, &bv).unwrap();
            let (xt, yt) = (Tensor::from_f32(ctx, "x", &x), Tensor::from_f32(ctx, "y", &y0));
            let spec = MatmulSpec {
                accumulate: acc,
                ..MatmulSpec::packed(t, &w)
            };
            let ds = gemm_coop(ctx, spec, &xt, &w, Some(&b), &yt).unwrap();
            ctx.submit(&ds.iter().collect::<Vec<_>>());
            let wr = rounded(dtype, &wv);
            let want: Vec<f64> = (0..t * n)
                .map(|i| {
                    let (r, o) = (i / n, i % n);
                    let dot: f64 = (0..k).map(|j| wr[o * k + j] * x[r * k + j] as f64).sum();
                    dot + bv[o] as f64 + if acc { y0[i] as f64 } else { 0.0 }
                })
                .collect();
            assert_nmse(
                &format!("{} t={t} n={n} k={k}", dtype.name()),
                &yt.read_f32(ctx).unwrap(),
                &want,
                1e-6,
            );
        }
    }
}
