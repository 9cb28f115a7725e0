//! Per-head latent products of absorbed MLA against an f64 reference.

mod common;
use common::*;
use wgmoe::internals::gpu::{Tensor, Weight};
use wgmoe::internals::kernels::mla::{head_matvec, HeadLayout, HeadMatvecSpec};

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
    let w = Weight::from_f32(ctx, "w", wgmoe::internals::gpu::DType::F32, 8, 4, &[0.0; 32]).unwrap();
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

/// `prepare_mla` against an f64 reference: q_pe rotated into q_cat, the absorbed query
/// `uk_t[h] @ q_nope` in front of it (every uk_t precision), the latent normalised and rotated
/// into the cache at the step buffer's positions, both layouts and cache precisions.
#[test]
fn prepare_mla_matches_reference() {
    use wgmoe::internals::kernels::attention::KvDtype;
    use wgmoe::internals::kernels::mla::{prepare_mla, MlaPrepSpec};
    use wgmoe::internals::kernels::rope::RopeLayout;
    for (name, ctx) in contexts() {
        for (i, (t, h, nope, rope, rank, layout, kv)) in [
            (3, 4, 16, 8, 16, RopeLayout::Interleaved, KvDtype::F32),
            (1, 16, 128, 64, 512, RopeLayout::Interleaved, KvDtype::F16),
            (2, 3, 6, 4, 10, RopeLayout::Half, KvDtype::F32),
            (2, 4, 16, 8, 24, RopeLayout::Interleaved, KvDtype::Q8),
            (1, 16, 128, 64, 512, RopeLayout::Interleaved, KvDtype::Q8),
        ]
        .into_iter()
        .enumerate()
        {
            let uk_dtype = DTYPES[i % DTYPES.len()];
            let (pos0, max_seq, eps, af) = (5usize, 16usize, 1e-6f32, 1.2f32);
            let width = rank + rope;
            let mut rng = Rng::new((h * 100 + rank) as u64);
            let proj = rng.vec(t * h * (nope + rope), 2.0);
            let kv_a = rng.vec(t * width, 2.0);
            let g: Vec<f32> = (0..rank).map(|_| 1.0 + rng.uniform(0.3)).collect();
            let inv: Vec<f32> = (0..rope / 2)
                .map(|i| 10000f32.powf(-2.0 * i as f32 / rope as f32))
                .collect();
            let spec = MlaPrepSpec {
                tokens: t,
                heads: h,
                nope,
                rope,
                rank,
                max_seq,
                layout,
                attention_factor: af,
                eps,
                kv_dtype: kv,
                q_stride: h * (nope + rope),
                latent_stride: width,
                latent_offset: 0,
            };
            let uk = rng.vec(h * rank * nope, 0.5);
            let norm = Weight::from_f32(ctx, "kv_norm", wgmoe::internals::gpu::DType::BF16, 1, rank, &g).unwrap();
            let uk_t = Weight::from_f32(ctx, "uk_t", uk_dtype, h * rank, nope, &uk).unwrap();
            let (tp, tk) = (
                Tensor::from_f32(ctx, "proj", &proj),
                Tensor::from_f32(ctx, "kv_a", &kv_a),
            );
            let (ti, st) = (
                Tensor::from_f32(ctx, "inv", &inv),
                wgmoe::internals::kernels::step::new(ctx, pos0 as u32, t as u32),
            );
            let q_cat = Tensor::zeros(ctx, "q_cat", t * h * width);
            let cache = Tensor::zeros(ctx, "cache", kv.words(max_seq * width, width));
            let d = prepare_mla(ctx, spec, &tp, &tk, &norm, &uk_t, &ti, &st, &q_cat, &cache).unwrap();
            ctx.submit(&[&d]);
            let gr = rounded(wgmoe::internals::gpu::DType::BF16, &g);
            let rotate = |x: &mut [f64], pos: usize| {
                for i in 0..rope / 2 {
                    let angle = (pos as f32 * inv[i]) as f64;
                    let (sn, cs) = angle.sin_cos();
                    let (cs, sn) = (cs * af as f64, sn * af as f64);
                    let (a, b) = match layout {
                        RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                        RopeLayout::Half => (i, i + rope / 2),
                    };
                    let (xa, xb) = (x[a], x[b]);
                    x[a] = xa * cs - xb * sn;
                    x[b] = xb * cs + xa * sn;
                }
            };
            let (got_q, got_c) = (q_cat.read_f32(ctx).unwrap(), cache.read_u32(ctx).unwrap());
            let (mut gq, mut wq, mut gc, mut wc) = (vec![], vec![], vec![], vec![]);
            let (mut gl, mut wl) = (vec![], vec![]);
            let ukr = rounded(uk_dtype, &uk);
            for tt in 0..t {
                let pos = pos0 + tt;
                for hh in 0..h {
                    let q_nope = &proj[(tt * h + hh) * (nope + rope)..][..nope];
                    for o in 0..rank {
                        let row = &ukr[(hh * rank + o) * nope..][..nope];
                        wl.push(row.iter().zip(q_nope).map(|(&w, &x)| w * x as f64).sum::<f64>());
                    }
                    gl.extend_from_slice(&got_q[(tt * h + hh) * width..][..rank]);
                    let src = (tt * h + hh) * (nope + rope) + nope;
                    let mut x: Vec<f64> = proj[src..src + rope].iter().map(|&v| v as f64).collect();
                    rotate(&mut x, pos);
                    wq.extend(x);
                    gq.extend_from_slice(&got_q[(tt * h + hh) * width + rank..][..rope]);
                }
                let row = &kv_a[tt * width..][..width];
                let ms = row[..rank].iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / rank as f64;
                let s = 1.0 / (ms + eps as f64).sqrt();
                let mut want: Vec<f64> = (0..rank).map(|i| gr[i] * row[i] as f64 * s).collect();
                let mut pe: Vec<f64> = row[rank..].iter().map(|&v| v as f64).collect();
                rotate(&mut pe, pos);
                want.extend(pe);
                let held = kv.decode(&got_c, max_seq * width, width);
                for (i, w) in want.into_iter().enumerate() {
                    gc.push(held[pos * width + i]);
                    // The reference sees what an f16 cache can hold.
                    wc.push(if kv == KvDtype::F16 {
                        half::f16::from_f64(w).to_f64()
                    } else {
                        w
                    });
                }
            }
            let what = format!("{name} h={h} rank={rank} {layout:?} {kv:?}");
            assert_nmse(&format!("{what} q_pe"), &gq, &wq, 1e-10);
            assert_nmse(&format!("{what} uk_t {} absorbed q", uk_dtype.name()), &gl, &wl, 1e-10);
            // f16: the reference is rounded too, but a value near a rounding boundary may round
            // the other way after f32 arithmetic: one f16 ulp (~1e-3 relative) on a few values.
            // q8: each element within half a step (scale / 254) of its value, an NMSE of about
            // (1/254)^2 / 3 of the block's largest square: ~1e-5 for these rows.
            let bound = match kv {
                KvDtype::F32 => 1e-10,
                KvDtype::F16 => 1e-7,
                KvDtype::Q8 => 1e-4,
            };
            assert_nmse(&format!("{what} latent"), &gc, &wc, bound);
        }
    }
}
