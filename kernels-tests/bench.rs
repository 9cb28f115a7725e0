//! The kernel benchmark runs end to end on the tiny shape (what CI's software adapter can afford)
//! and reports a finite time and traffic for every kernel.

mod common;

#[test]
fn bench_tiny_reports_every_kernel() {
    let args = wgmoe::internals::bench::BenchOptions {
        min_ms: 0.5,
        ..Default::default()
    };
    let rows = wgmoe::internals::bench::measure(common::native(), &args).unwrap();
    let kernels: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.kernel.as_str()).collect();
    for k in [
        "rmsnorm",
        "matvec",
        "gemm",
        "router",
        "moe",
        "attention",
        "rope",
        "embedding",
        "swiglu",
        "argmax",
        "sample",
    ] {
        assert!(kernels.contains(k), "no benchmark row for {k}");
    }
    for r in &rows {
        assert!(r.us.is_finite() && r.us > 0.0, "{r:?}");
        assert!(r.copy_gbs > 0.0 && r.gbs().is_finite(), "{r:?}");
    }
}

#[test]
fn unknown_shape_is_an_error() {
    let args = wgmoe::internals::bench::BenchOptions {
        shapes: vec!["gpt-5".into()],
        ..Default::default()
    };
    let e = wgmoe::internals::bench::measure(common::native(), &args)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gpt-5") && e.contains("olmoe-1b-7b"), "{e}");
}

/// One row per kernel that reads weights and per format, each counting the format's bytes: the
/// experts' decode traffic in Q4_K is about 4.5/16 of f16's (tiny's 128-wide down rows take Q5_0).
#[test]
fn bench_rows_per_packed_format() {
    use wgmoe::internals::gpu::DType;
    let args = wgmoe::internals::bench::BenchOptions {
        min_ms: 0.5,
        dtypes: vec![DType::F16, DType::Q4_K, DType::Q8_0, DType::MXFP4],
        filter: Some("m".into()),
        ..Default::default()
    };
    let rows = wgmoe::internals::bench::measure(common::native(), &args).unwrap();
    let bytes = |dtype: DType, kernel: &str, t: &str| {
        rows.iter()
            .find(|r| r.dtype == dtype && r.kernel == kernel && r.detail.contains(t))
            .unwrap_or_else(|| panic!("no {kernel} {t} row for {}", dtype.name()))
            .bytes
    };
    for dtype in [DType::Q4_K, DType::Q8_0, DType::MXFP4] {
        // Decode moves weights; prefill's traffic is mostly activations at tiny's sizes.
        for (kernel, t, most) in [
            ("matvec", "T=1", 0.6),
            ("moe", "T=1", 0.6),
            ("gemm", "T=512", 1.0),
            ("moe", "T=512", 1.0),
        ] {
            let ratio = bytes(dtype, kernel, t) / bytes(DType::F16, kernel, t);
            assert!(ratio < most, "{} {kernel} {t}: {ratio} of f16's bytes", dtype.name());
        }
    }
    assert!(
        rows.iter()
            .filter(|r| r.kernel == "rmsnorm")
            .all(|r| r.dtype == DType::F16),
        "vectors once"
    );
    for r in &rows {
        assert!(r.us.is_finite() && r.us > 0.0, "{r:?}");
    }
}
