//! Per-head latent products of absorbed MLA against an f64 reference.

mod common;
use common::*;
use wgmoe::gpu::{Tensor, Weight};
use wgmoe::kernels::mla::{head_matvec, HeadLayout, HeadMatvecSpec};

fn check(tokens: usize, heads: usize, in_dim: usize, out_dim: usize, x: HeadLayout, y: HeadLayout) {
    for (name, ctx) in contexts() {
        for dtype in DTYPES {
            let mut rng = Rng::new((in_dim * 7 + out_dim) as u64);
            let spec = HeadMatvecSpec {
                tokens,
                heads,
                in_dim,
                out_dim,
                x,
                y,
            };
            let xv = rng.vec(
                (tokens - 1) * x.row_stride + (heads - 1) * x.head_stride + x.offset + in_dim,
                1.0,
            );
            let wv = rng.vec(heads * out_dim * in_dim, 0.5);
            let ylen = (tokens - 1) * y.row_stride + (heads - 1) * y.head_stride + y.offset + out_dim;
            let w = Weight::from_f32(ctx, "w", dtype, heads * out_dim, in_dim, &wv).unwrap();
            let xt = Tensor::from_f32(ctx, "x", &xv);
            let yt = Tensor::zeros(ctx, "y", ylen);
            ctx.submit(&[&head_matvec(ctx, spec, &xt, &w, &yt).unwrap()]);
            let got = yt.read_f32(ctx).unwrap();
            let wr = rounded(dtype, &wv);
            let (mut g, mut want) = (Vec::new(), Vec::new());
            for t in 0..tokens {
                for h in 0..heads {
                    for o in 0..out_dim {
                        let mut acc = 0.0;
                        for i in 0..in_dim {
                            acc += wr[(h * out_dim + o) * in_dim + i]
                                * xv[t * x.row_stride + h * x.head_stride + x.offset + i] as f64;
                        }
                        want.push(acc);
                        g.push(got[t * y.row_stride + h * y.head_stride + y.offset + o]);
                    }
                }
            }
            assert_nmse(&format!("{name} {} {spec:?}", dtype.name()), &g, &want, 1e-10);
        }
    }
}

#[test]
fn absorbed_query_tiny() {
    // q_nope (first 16 of each 24-wide head) -> q_lat (first 16 of each 24-wide q_cat head).
    let x = HeadLayout {
        row_stride: 96,
        head_stride: 24,
        offset: 0,
    };
    let y = HeadLayout {
        row_stride: 96,
        head_stride: 24,
        offset: 0,
    };
    check(5, 4, 16, 16, x, y);
}

#[test]
fn v2_lite_shapes() {
    // W_UK^T: 128 -> 512 into a 576-wide q_cat head; W_UV: 512 -> 128 out of the latent output.
    let x = HeadLayout {
        row_stride: 16 * 192,
        head_stride: 192,
        offset: 0,
    };
    let y = HeadLayout {
        row_stride: 16 * 576,
        head_stride: 576,
        offset: 0,
    };
    check(2, 16, 128, 512, x, y);
    let x = HeadLayout {
        row_stride: 16 * 512,
        head_stride: 512,
        offset: 0,
    };
    let y = HeadLayout {
        row_stride: 16 * 128,
        head_stride: 128,
        offset: 0,
    };
    check(1, 16, 512, 128, x, y);
}

#[test]
fn odd_sizes() {
    let x = HeadLayout {
        row_stride: 3 * 13 + 2,
        head_stride: 13,
        offset: 1,
    };
    let y = HeadLayout {
        row_stride: 3 * 70,
        head_stride: 70,
        offset: 0,
    };
    check(3, 3, 13, 67, x, y);
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = native();
    let w = Weight::from_f32(ctx, "w", wgmoe::gpu::DType::F32, 8, 4, &[0.0; 32]).unwrap();
    let x = Tensor::zeros(ctx, "x", 8);
    let y = Tensor::zeros(ctx, "y", 16);
    let l = |s, h| HeadLayout {
        row_stride: s,
        head_stride: h,
        offset: 0,
    };
    let spec = HeadMatvecSpec {
        tokens: 1,
        heads: 2,
        in_dim: 4,
        out_dim: 4,
        x: l(8, 4),
        y: l(8, 4),
    };
    assert!(head_matvec(ctx, spec, &x, &w, &y).is_ok());
    assert!(head_matvec(ctx, HeadMatvecSpec { out_dim: 3, ..spec }, &x, &w, &y).is_err());
    assert!(head_matvec(ctx, HeadMatvecSpec { tokens: 2, ..spec }, &x, &w, &y).is_err());
}
