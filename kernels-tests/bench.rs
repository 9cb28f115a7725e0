//! The kernel benchmark runs end to end on the tiny shape (what CI's software adapter can afford)
//! and reports a finite time and traffic for every kernel.

mod common;

#[test]
fn bench_tiny_reports_every_kernel() {
    let args = wgmoe::bench::BenchOptions {
        min_ms: 0.5,
        ..Default::default()
    };
    let rows = wgmoe::bench::measure(common::native(), &args).unwrap();
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
    let args = wgmoe::bench::BenchOptions {
        shapes: vec!["gpt-5".into()],
        ..Default::default()
    };
    let e = wgmoe::bench::measure(common::native(), &args).unwrap_err().to_string();
    assert!(e.contains("gpt-5") && e.contains("olmoe-1b-7b"), "{e}");
}
