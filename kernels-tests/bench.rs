//! The kernel benchmark runs end to end on the tiny shape (what CI's software adapter can afford):
//! a finite time and traffic for every kernel, one record per kernel x shape x format with the
//! documented keys, samples whose mean and sd the record states, and a correctness check per kernel
//! that passes, and fails when the GPU's output is perturbed (the check is real).

mod common;
use serde_json::Value;
use wgmoe::internals::bench::{self, BenchOptions};
use wgmoe::internals::bench_reference::{self as reference, Probe};
use wgmoe::internals::gpu::DType;
use wgmoe::internals::record::Machine;

const KERNELS: [&str; 11] = [
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
];

/// The keys of a kernel record, in order, around the machine's fields.
const HEAD: [&str; 3] = ["record", "build_commit", "test_time"];
const TAIL: [&str; 16] = [
    "shape",
    "weight_format",
    "kv_cache",
    "kernel",
    "detail",
    "avg_us",
    "stddev_us",
    "samples_us",
    "gbs",
    "gflops",
    "copy_gbs",
    "bw_fraction",
    "dispatch_us",
    "nmse",
    "nmse_detail",
    "passed",
];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn bench_tiny_records_every_kernel_checked() {
    let ctx = common::native();
    let reps = 3;
    let args = BenchOptions {
        min_ms: 0.5,
        repetitions: reps,
        ..Default::default()
    };
    let report = bench::report(ctx, &args).unwrap();
    let kernels: std::collections::BTreeSet<&str> = report.rows.iter().map(|r| r.kernel.as_str()).collect();
    for k in KERNELS {
        assert!(kernels.contains(k), "no benchmark row for {k}");
    }
    for r in &report.rows {
        assert!(r.avg_us().is_finite() && r.avg_us() > 0.0, "{r:?}");
        assert!(r.copy_gbs > 0.0 && r.gbs().is_finite(), "{r:?}");
    }
    let records = bench::records(&report, &Machine::of(ctx));
    assert_eq!(records.len(), report.rows.len());
    let machine: Vec<String> = Machine::of(ctx).fields().keys().cloned().collect();
    let want_keys: Vec<&str> = HEAD
        .iter()
        .copied()
        .chain(machine.iter().map(|s| s.as_str()))
        .chain(TAIL.iter().copied())
        .collect();
    for rec in &records {
        let keys: Vec<&str> = rec.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, want_keys, "record keys");
        assert_eq!(rec["record"], "wgmoe.kernel");
        let samples: Vec<f64> = rec["samples_us"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(samples.len(), reps, "{rec:?}");
        let mean = samples.iter().sum::<f64>() / reps as f64;
        let sd = (samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (reps - 1) as f64).sqrt();
        let num = |k: &str| {
            rec[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{k} is not a number: {rec:?}"))
        };
        assert!(close(num("avg_us"), mean), "mean {rec:?}");
        assert!(close(num("stddev_us"), sd), "sd {rec:?}");
        assert!(close(num("bw_fraction"), num("gbs") / num("copy_gbs")), "{rec:?}");
        let kernel = rec["kernel"].as_str().unwrap();
        // Exact checks (a token) carry no NMSE; every other kernel a finite one.
        match &rec["nmse"] {
            Value::Null => assert!(matches!(kernel, "argmax" | "sample"), "{kernel}: null nmse"),
            v => {
                let e = v.as_f64().unwrap();
                assert!(e.is_finite() && e >= 0.0, "{kernel}: nmse {e}");
            }
        }
        assert!(!rec["nmse_detail"].as_str().unwrap().is_empty());
        assert_eq!(rec["passed"], true, "{rec:?}");
    }
    // The rounding floor, not a constant: the products' NMSE are positive, far under their bound
    // (f32 sums; f16 inputs on cooperative matrices), and not all equal.
    let products = report
        .rows
        .iter()
        .filter(|r| matches!(r.kernel.as_str(), "matvec" | "gemm" | "moe" | "attention"));
    for r in products.clone() {
        let e = r.check.nmse.unwrap();
        assert!(e > 0.0 && e < 0.1 * r.check.tolerance, "{} {}: {e}", r.kernel, r.detail);
    }
    let nmses: Vec<f64> = products.map(|r| r.check.nmse.unwrap()).collect();
    assert!(nmses.iter().any(|&e| e != nmses[0]), "{nmses:?}");
}

/// Every case's check fails when its GPU output is scaled by 1.01 (NMSE 1e-4) or its token moved.
#[test]
fn perturbed_outputs_fail_their_checks() {
    let ctx = common::native();
    let shape = bench::shape("tiny").unwrap();
    for dtype in [DType::F16, DType::Q4_K] {
        for case in bench::cases(ctx, &shape, dtype).unwrap() {
            let what = format!("{} {} {}", dtype.name(), case.kernel, case.detail);
            let good = reference::check(ctx, &case.probe, dtype, None).unwrap();
            assert!(good.passed, "{what}: {good:?}");
            let bad = reference::check(ctx, &case.probe, dtype, Some(1e-2)).unwrap();
            assert!(!bad.passed, "{what}: a perturbed output passed: {bad:?}");
            if let Some(e) = bad.nmse {
                assert!((0.5e-4..2e-4).contains(&e), "{what}: perturbed nmse {e}");
            }
        }
    }
}

#[test]
fn unknown_shape_is_an_error() {
    let args = BenchOptions {
        shapes: vec!["gpt-5".into()],
        ..Default::default()
    };
    let e = bench::measure(common::native(), &args).unwrap_err().to_string();
    assert!(e.contains("gpt-5") && e.contains("olmoe-1b-7b"), "{e}");
}

/// One row per kernel that reads weights and per format, each counting the format's bytes: the
/// experts' decode traffic in Q4_K is about 4.5/16 of f16's (tiny's 128-wide down rows take Q5_0),
/// each checked against the dequantised weights.
#[test]
fn bench_rows_per_packed_format() {
    let args = BenchOptions {
        min_ms: 0.5,
        repetitions: 1,
        dtypes: vec![DType::F16, DType::Q4_K, DType::Q8_0, DType::MXFP4],
        filter: Some("m".into()),
        ..Default::default()
    };
    let rows = bench::measure(common::native(), &args).unwrap();
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
        assert!(r.avg_us().is_finite() && r.avg_us() > 0.0, "{r:?}");
        assert_eq!(r.samples_us.len(), 1);
        assert_eq!(r.stddev_us(), 0.0);
        let exact = matches!(r.kernel.as_str(), "argmax" | "sample");
        assert!(r.check.passed && r.check.nmse.is_some() != exact, "{r:?}");
        // The check runs the row's format (or its fallback), which its detail names.
        if r.kernel == "matvec" || r.kernel == "gemm" {
            assert!(r.check.detail.starts_with(r.dtype.name()), "{r:?}");
        }
    }
}

/// Reduced shapes keep the timed row's format and path: k-quant rows stay whole 256-blocks, the
/// fallback rows stay fallback rows, prefill stays above the decode paths' token limits.
#[test]
fn reduced_shapes_keep_format_and_path() {
    for (dtype, cols) in [
        (DType::Q4_K, 2048),
        (DType::Q4_K, 2880),
        (DType::Q6_K, 1408),
        (DType::MXFP4, 2880),
        (DType::F16, 2880),
    ] {
        let c = reference::reduce_cols(dtype, cols);
        assert!(c <= 512, "{cols} -> {c}");
        assert_eq!(dtype.for_row(c), dtype.for_row(cols), "{} {cols} -> {c}", dtype.name());
    }
    assert_eq!(reference::reduce_tokens(1), 1);
    assert!(reference::reduce_tokens(512) > wgmoe::internals::kernels::matmul::MATVEC_MAX_TOKENS);
    assert!(reference::reduce_tokens(512) > wgmoe::internals::kernels::moe::DECODE_MAX_TOKENS);
    assert!(reference::reduce_tokens(512) >= wgmoe::internals::kernels::attention::TILE_MIN_TOKENS);
    // A probe at a real shape (gpt-oss's q_proj, whose 2880 columns take q5_0 under q4_k) runs
    // reduced, in the fallback format.
    let probe = Probe::Matmul {
        rows: 4096,
        cols: 2880,
        tokens: 512,
    };
    let c = reference::check(common::native(), &probe, DType::Q4_K, None).unwrap();
    assert!(c.passed && c.detail.starts_with("q5_0 [75, 288] T=16"), "{c:?}");
}

fn wgmoe(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgmoe"))
        .args(args)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
        )
        .output()
        .expect("run wgmoe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wgmoe {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// `-o jsonl`, `-o csv` and `--json` print records that parse, with the same fields.
#[test]
fn cli_prints_parseable_records() {
    let base = [
        "bench-kernels",
        "--shapes",
        "tiny",
        "--min-ms",
        "0.2",
        "-r",
        "2",
        "--filter",
        "r",
    ];
    let run = |extra: &[&str]| wgmoe(&[&base[..], extra].concat());
    let jsonl = run(&["-o", "jsonl"]);
    let recs: Vec<serde_json::Map<String, Value>> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // rmsnorm x2, router x2, rope, argmax.
    assert_eq!(recs.len(), 6, "{jsonl}");
    for r in &recs {
        assert_eq!(r["record"], "wgmoe.kernel");
        assert_eq!(r["samples_us"].as_array().unwrap().len(), 2);
        assert_eq!(r["passed"], true);
    }
    let csv = run(&["-o", "csv"]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    // CSV leaves out arrays (the samples), as llama-bench does.
    let want: Vec<&str> = recs[0]
        .keys()
        .filter(|k| *k != "samples_us")
        .map(|k| k.as_str())
        .collect();
    assert_eq!(header, want);
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), recs.len());
    for row in rows {
        assert!(row.starts_with("\"wgmoe.kernel\","), "{row}");
        assert!(row.ends_with(",\"1\""), "passed is the last column: {row}");
    }
    let json: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), recs.len());
    let md = run(&[]);
    assert!(md.contains("| NMSE | check |") && md.contains("| ok |"), "{md}");
}
