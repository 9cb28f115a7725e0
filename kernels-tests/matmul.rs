//! matmul kernels (matvec, gemm, and the matmul dispatcher) against an f64 CPU reference: every
//! weight precision, odd shapes, bias and fused accumulate, strided rows, chunked weights (a real
//! over-limit tensor and a forced small binding limit), real model shapes, fast and portable adapters.
//!
//! Bound: NMSE <= 1e-9 everywhere (tighter than the project's 1e-7 for f32 math, so that a small
//! systematic error, e.g. 1e-4 relative on a quarter of the outputs, still fails). The weights are
//! rounded to their dtype in the reference, so only f32 summation error remains: per-thread partial
//! sums then a tree (matvec) or 16-wide K-steps (gemm), relative error ~ eps_f32 * sqrt(K) ~ 1e-6 at
//! K = 10944, NMSE ~ 1e-12. Observed on lavapipe: at most 6.6e-13 (OLMoE q_proj, T=64, K=2048).
//!
//! Where the adapter has f16 cooperative matrices, the native context's gemm runs on them and x is
//! rounded to f16: that path is held to the cooperative bound, 1e-6 (see
//! `coop_gemm_matches_reference_where_available`; observed ~3.5e-8 on lavapipe 8x8), while the
//! portable context still checks the tiles at 1e-9.

mod common;
use common::*;
use wgmoe::internals::gpu::Dispatch;
use wgmoe::internals::gpu::{Context, DType, Tensor, Weight};
use wgmoe::internals::kernels::matmul::{
    coop_available, coop_enabled, coop_side, gemm, gemm_coop, matmul, matvec, MatmulSpec, MATVEC_MAX_TOKENS,
};

const BOUND: f64 = 1e-9;
const COOP_BOUND: f64 = 1e-6;

/// The bound for `kernel` on `t` rows of `w`: [`COOP_BOUND`] where it runs on cooperative matrices.
fn bound_for(kernel: Kernel, ctx: &Context, t: usize, w: &Weight) -> f64 {
    let gemm = match kernel {
        Kernel::Matvec => false,
        Kernel::Gemm => true,
        Kernel::Matmul => t > MATVEC_MAX_TOKENS,
    };
    if gemm && coop_enabled(ctx, w) {
        COOP_BOUND
    } else {
        BOUND
    }
}
/// What fills y's gaps (strided rows) and must survive every kernel.
const SENTINEL: f32 = 12345.0;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    Matvec,
    Gemm,
    Matmul,
}

/// One projection: T token rows, W [n, k], row strides, bias / accumulate.
#[derive(Clone, Copy, Debug)]
struct Case {
    t: usize,
    n: usize,
    k: usize,
    x_stride: usize,
    y_stride: usize,
    bias: bool,
    acc: bool,
}

impl Case {
    fn packed(t: usize, n: usize, k: usize) -> Self {
        Self {
            t,
            n,
            k,
            x_stride: k,
            y_stride: n,
            bias: false,
            acc: false,
        }
    }
    fn strided(self, dx: usize, dy: usize) -> Self {
        Self {
            x_stride: self.k + dx,
            y_stride: self.n + dy,
            ..self
        }
    }
    fn with(self, bias: bool, acc: bool) -> Self {
        Self { bias, acc, ..self }
    }
    fn x_len(&self) -> usize {
        (self.t - 1) * self.x_stride + self.k
    }
    fn y_len(&self) -> usize {
        (self.t - 1) * self.y_stride + self.n
    }
    fn spec(&self) -> MatmulSpec {
        let s = MatmulSpec::strided(self.t, self.x_stride, self.y_stride);
        if self.acc {
            s.accumulating()
        } else {
            s
        }
    }
}

/// `y0 (if acc) + x @ W^T + bias` in f64, packed [t, n].
fn reference(c: &Case, x: &[f32], w: &[f64], bias: Option<&[f64]>, y0: &[f32]) -> Vec<f64> {
    let mut out = vec![0.0; c.t * c.n];
    for t in 0..c.t {
        let xr = &x[t * c.x_stride..][..c.k];
        for n in 0..c.n {
            let wr = &w[n * c.k..][..c.k];
            let mut s: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b).sum();
            if let Some(b) = bias {
                s += b[n];
            }
            if c.acc {
                s += y0[t * c.y_stride + n] as f64;
            }
            out[t * c.n + n] = s;
        }
    }
    out
}

fn build(
    kernel: Kernel,
    ctx: &Context,
    c: &Case,
    x: &Tensor,
    w: &Weight,
    b: Option<&Weight>,
    y: &Tensor,
) -> Vec<Dispatch> {
    let f = match kernel {
        Kernel::Matvec => matvec,
        Kernel::Gemm => gemm,
        Kernel::Matmul => matmul,
    };
    f(ctx, c.spec(), x, w, b, y).unwrap_or_else(|e| panic!("{kernel:?} {c:?}: {e}"))
}

/// Run `c` through `kernel` with a weight of `dtype` (bias in `bias_dtype`), uploaded with
/// `limit` bytes per chunk if given; compare with the reference and check y's gaps are untouched.
/// Returns the number of weight chunks.
#[allow(clippy::too_many_arguments)]
fn check_on(
    kernel: Kernel,
    name: &str,
    ctx: &Context,
    c: Case,
    dtype: DType,
    bias_dtype: DType,
    limit: Option<u64>,
    seed: u64,
) -> usize {
    let mut rng = Rng::new(seed);
    let x = rng.vec(c.x_len(), 1.0);
    let wv = rng.vec(c.n * c.k, 0.5);
    let bv = rng.vec(c.n, 1.0);
    let mut y0 = vec![SENTINEL; c.y_len()];
    for t in 0..c.t {
        for v in &mut y0[t * c.y_stride..][..c.n] {
            *v = rng.uniform(2.0);
        }
    }
    let bytes = dtype.encode(&wv);
    let w = match limit {
        Some(l) => Weight::upload_with_binding_limit(ctx, "w", dtype, c.n, c.k, 1, &bytes, l),
        None => Weight::upload(ctx, "w", dtype, c.n, c.k, 1, &bytes),
    }
    .unwrap();
    drop(bytes);
    let b = c
        .bias
        .then(|| Weight::from_f32(ctx, "b", bias_dtype, 1, c.n, &bv).unwrap());
    let xt = Tensor::from_f32(ctx, "x", &x);
    let yt = Tensor::from_f32(ctx, "y", &y0);
    let ds = build(kernel, ctx, &c, &xt, &w, b.as_ref(), &yt);
    assert_eq!(ds.len(), w.chunks.len(), "one dispatch per chunk");
    ctx.submit(&ds.iter().collect::<Vec<_>>());
    let got = yt.read_f32(ctx).unwrap();

    let wr = rounded(dtype, &wv);
    drop(wv);
    let br = rounded(bias_dtype, &bv);
    let want = reference(&c, &x, &wr, c.bias.then_some(&br[..]), &y0);
    let what = format!(
        "{kernel:?} {name} w={} b={} {c:?} chunks={}",
        dtype.name(),
        bias_dtype.name(),
        w.chunks.len()
    );
    let rows: Vec<f32> = (0..c.t).flat_map(|t| got[t * c.y_stride..][..c.n].to_vec()).collect();
    assert_nmse(&what, &rows, &want, bound_for(kernel, ctx, c.t, &w));
    for t in 0..c.t.saturating_sub(1) {
        let gap = &got[t * c.y_stride + c.n..(t + 1) * c.y_stride];
        assert!(gap.iter().all(|&v| v == SENTINEL), "{what}: wrote into y's row gap");
    }
    w.chunks.len()
}

/// `c` on both adapters, every weight dtype (the bias in another dtype, to cover mixed pairs).
fn check(kernel: Kernel, c: Case, seed: u64) {
    for (name, ctx) in contexts() {
        for (i, dtype) in DTYPES.into_iter().enumerate() {
            let bias_dtype = DTYPES[(i + 1) % DTYPES.len()];
            check_on(kernel, name, ctx, c, dtype, bias_dtype, None, seed + i as u64);
        }
    }
}

#[test]
fn matvec_odd_shapes() {
    let shapes = [
        (1, 7),
        (7, 1),
        (7, 7),
        (1, 1000),
        (33, 1000),
        (4097, 129),
        (129, 4097),
        (5, 8),
        (6, 16),
    ];
    for (i, (n, k)) in shapes.into_iter().enumerate() {
        for t in [1, 2, 3, 8] {
            check(Kernel::Matvec, Case::packed(t, n, k), (i * 10 + t) as u64);
        }
    }
}

#[test]
fn matvec_bias_accumulate_strided() {
    let cases = [
        Case::packed(1, 7, 7).with(true, false),
        Case::packed(2, 33, 1000).with(false, true).strided(3, 5),
        Case::packed(3, 201, 129).with(true, true).strided(4, 1),
        Case::packed(8, 65, 36).with(true, true).strided(8, 0),
        Case::packed(5, 1, 17).with(true, true).strided(1, 2),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(Kernel::Matvec, c, 100 + i as u64);
    }
}

#[test]
fn gemm_odd_shapes() {
    let cases = [
        Case::packed(9, 67, 33),
        Case::packed(37, 130, 7).with(true, false),
        Case::packed(130, 1, 129).with(false, true),
        Case::packed(130, 65, 100).with(true, true).strided(3, 5),
        Case::packed(37, 64, 64).with(true, true).strided(4, 0),
        // gemm takes any T, decode-sized too.
        Case::packed(1, 70, 17).with(true, true),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        check(Kernel::Gemm, c, 200 + i as u64);
    }
}

/// Real projections, one checkpoint precision each to keep lavapipe's time small.
#[test]
fn matmul_real_shapes() {
    // (what, T, N, K, dtype)
    let shapes = [
        ("OLMoE q_proj decode", 1, 2048, 2048, DType::BF16),
        ("OLMoE q_proj prefill", 64, 2048, 2048, DType::BF16),
        ("Qwen3 q_proj decode", 1, 4096, 2048, DType::F16),
        ("DeepSeek dense up decode", 1, 10944, 2048, DType::BF16),
        ("DeepSeek dense down decode (K=10944)", 1, 2048, 10944, DType::BF16),
        ("gpt-oss o_proj decode (K=4096, bias)", 2, 2880, 4096, DType::F32),
    ];
    for (i, (what, t, n, k, dtype)) in shapes.into_iter().enumerate() {
        let c = Case::packed(t, n, k).with(what.contains("bias"), t == 1);
        for (name, ctx) in contexts() {
            check_on(
                Kernel::Matmul,
                &format!("{name} {what}"),
                ctx,
                c,
                dtype,
                DType::BF16,
                None,
                300 + i as u64,
            );
        }
    }
}

/// An f32 weight over lavapipe's real 128 MiB binding limit, split by `Weight::upload` itself.
#[test]
fn chunked_over_binding_limit() {
    let ctx = native();
    let (n, k) = (8200, 4096);
    let bytes = (n * k * 4) as u64;
    if ctx.caps.max_storage_binding >= bytes {
        eprintln!(
            "skipped: the adapter binds {} bytes, the tensor is {bytes}",
            ctx.caps.max_storage_binding
        );
        return;
    }
    let chunks = check_on(
        Kernel::Matmul,
        "native",
        ctx,
        Case::packed(1, n, k),
        DType::F32,
        DType::F32,
        None,
        400,
    );
    assert!(chunks > 1, "a {bytes}-byte weight must be split, got {chunks} chunk");
}

/// Many small chunks with odd row counts, both kernels, both adapters.
#[test]
fn chunked_small_binding_limit() {
    let cases = [
        (
            Kernel::Matvec,
            Case::packed(3, 1000, 129).with(true, true).strided(2, 3),
        ),
        (Kernel::Matvec, Case::packed(1, 517, 300).with(true, false)),
        (Kernel::Gemm, Case::packed(70, 1000, 129).with(true, true).strided(1, 0)),
    ];
    for (name, ctx) in contexts() {
        for (i, (kernel, c)) in cases.into_iter().enumerate() {
            for dtype in DTYPES {
                let chunks = check_on(kernel, name, ctx, c, dtype, dtype, Some(60_000), 500 + i as u64);
                assert!(chunks > 2, "{kernel:?} {c:?}: expected several chunks, got {chunks}");
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    for (_, ctx) in contexts() {
        let (n, k) = (16, 8);
        let w = Weight::from_f32(ctx, "w", DType::F16, n, k, &vec![0.5; n * k]).unwrap();
        let good_b = Weight::from_f32(ctx, "b", DType::F32, 1, n, &vec![1.0; n]).unwrap();
        let bad_b = Weight::from_f32(ctx, "b", DType::F32, 1, n - 1, &vec![1.0; n - 1]).unwrap();
        let x = Tensor::zeros(ctx, "x", 2 * k);
        let y = Tensor::zeros(ctx, "y", 2 * n);
        let ok = MatmulSpec::packed(2, &w);
        for f in [matvec, gemm, matmul] {
            assert!(f(ctx, ok, &x, &w, Some(&good_b), &y).is_ok());
            // x too short, y too short, stride shorter than a row, no rows, wrong bias, aliasing.
            assert!(f(ctx, MatmulSpec::packed(3, &w), &x, &w, None, &y).is_err());
            assert!(f(ctx, MatmulSpec { y_stride: n + 1, ..ok }, &x, &w, None, &y).is_err());
            assert!(f(ctx, MatmulSpec { x_stride: k - 1, ..ok }, &x, &w, None, &y).is_err());
            assert!(f(ctx, MatmulSpec { y_stride: n - 1, ..ok }, &x, &w, None, &y).is_err());
            assert!(f(ctx, MatmulSpec::packed(0, &w), &x, &w, None, &y).is_err());
            assert!(f(ctx, ok, &x, &w, Some(&bad_b), &y).is_err());
            assert!(f(ctx, ok, &x, &w, Some(&w), &y).is_err());
            assert!(f(ctx, MatmulSpec::packed(1, &w), &y, &w, None, &y).is_err());
        }
        // matvec is for decode only.
        let x9 = Tensor::zeros(ctx, "x", 9 * k);
        let y9 = Tensor::zeros(ctx, "y", 9 * n);
        assert!(matvec(ctx, MatmulSpec::packed(9, &w), &x9, &w, None, &y9).is_err());
        let picked = |t| {
            matmul(ctx, MatmulSpec::packed(t, &w), &x9, &w, None, &y9).unwrap()[0]
                .label
                .clone()
        };
        assert!(picked(8).starts_with("matvec"), "T=8 ran {}", picked(8));
        assert!(picked(9).starts_with("gemm"), "T=9 ran {}", picked(9));
    }
}

/// `matmul_normed`: RMSNorm folded into the matvec prologue (decode) or a norm dispatch before
/// the gemm (prefill), against `W (g * x * rsqrt(mean(x²) + eps)) + b`; the normalised rows it
/// stores for other readers against the reference norm.
#[test]
fn norm_prologue_matches_norm_then_matmul() {
    use wgmoe::internals::kernels::matmul::{matmul_normed, NormPrologue};
    for (name, ctx) in contexts() {
        for (t, n, k, dx, chunk_limit) in [
            (1, 37, 64, 0, None),
            (3, 130, 200, 4, None),
            (8, 64, 72, 0, Some(4096u64)),
            (20, 50, 96, 0, None),
        ] {
            for dtype in DTYPES {
                let mut rng = Rng::new((t * 1000 + n + k) as u64);
                let xs = k + dx;
                let x = rng.vec((t - 1) * xs + k, 2.0);
                let g: Vec<f32> = (0..k).map(|_| 1.0 + rng.uniform(0.3)).collect();
                let wv = rng.vec(n * k, 0.5);
                let bv = rng.vec(n, 0.5);
                let eps = 1e-5;
                let w = match chunk_limit {
                    Some(l) => {
                        Weight::upload_with_binding_limit(ctx, "w", dtype, n, k, 1, &dtype.encode(&wv), l).unwrap()
                    }
                    None => Weight::from_f32(ctx, "w", dtype, n, k, &wv).unwrap(),
                };
                if chunk_limit.is_some() {
                    assert!(w.chunks.len() > 1);
                }
                let gw = Weight::from_f32(ctx, "g", dtype, 1, k, &g).unwrap();
                let b = Weight::from_f32(ctx, "b", DType::F32, 1, n, &bv).unwrap();
                let xt = Tensor::from_f32(ctx, "x", &x);
                let normed = Tensor::zeros(ctx, "normed", t * k);
                let y = Tensor::zeros(ctx, "y", t * n);
                let spec = MatmulSpec::strided(t, xs, n);
                let norm = NormPrologue {
                    weight: &gw,
                    eps,
                    normed: &normed,
                    store: true,
                };
                let ds = matmul_normed(ctx, spec, &xt, norm, &w, Some(&b), &y).unwrap();
                ctx.submit(&ds.iter().collect::<Vec<_>>());
                let (gr, wr) = (rounded(dtype, &g), rounded(dtype, &wv));
                let mut want_h = vec![0.0; t * k];
                let mut want_y = vec![0.0; t * n];
                for r in 0..t {
                    let row = &x[r * xs..][..k];
                    let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / k as f64;
                    let s = 1.0 / (ms + eps as f64).sqrt();
                    for i in 0..k {
                        want_h[r * k + i] = gr[i] * row[i] as f64 * s;
                    }
                    for o in 0..n {
                        let dot: f64 = (0..k).map(|i| wr[o * k + i] * want_h[r * k + i]).sum();
                        want_y[r * n + o] = dot + bv[o] as f64;
                    }
                }
                let what = format!("{name} {} t={t} n={n} k={k}", dtype.name());
                let bound = bound_for(Kernel::Matmul, ctx, t, &w);
                assert_nmse(&what, &y.read_f32(ctx).unwrap(), &want_y, bound);
                assert_nmse(
                    &format!("{what} normed"),
                    &normed.read_f32(ctx).unwrap(),
                    &want_h,
                    BOUND,
                );
            }
        }
    }
}

/// The cooperative-matrix prefill projection against an f64 reference, on adapters that have f16
/// cooperative matrices (16x16 or 8x8; lavapipe from Mesa 25.1 on: `scripts/coop_lavapipe.sh`).
/// Elsewhere the test only checks that the path refuses.
///
/// Bound: x is rounded to f16 in the tiles (relative error 2^-11 per element) while the reference
/// uses f32 x, so NMSE ~ (2^-11)^2 / 3 ~ 8e-8 per product, averaged: <= [`COOP_BOUND`] with margin.
#[test]
fn coop_gemm_matches_reference_where_available() {
    let ctx = native();
    let probe = Weight::from_f32(ctx, "probe", DType::F16, 1, 8, &[0.0; 8]).unwrap();
    if !coop_available(ctx, &probe) {
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
                COOP_BOUND,
            );
        }
    }
}
