//! `wgmoe bench-kernels` (and `cargo bench`, which includes this file): the arguments and the
//! printed table or records of the kernel benchmark, [`wgmoe::internals::bench`].

use wgmoe::internals::bench::{self, BenchOptions, Report};
use wgmoe::internals::gpu::{Context, DeviceOptions};
use wgmoe::internals::record::{self, Machine, Output};
use wgmoe::{Error, Result};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchKernelsArgs {
    /// Output format: md (a table for people), or one record per kernel, shape and format for
    /// files and tools: json, jsonl, csv, sql (`wgmoe report` merges them).
    #[arg(short = 'o', long = "output", default_value = "md")]
    pub output: Output,
    /// The same as `-o json`.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    /// Model shapes to benchmark (comma separated): olmoe-1b-7b, qwen3-30b-a3b, deepseek-v2-lite,
    /// gpt-oss-20b, or tiny (a small shape for software adapters and CI).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "olmoe-1b-7b,qwen3-30b-a3b,deepseek-v2-lite,gpt-oss-20b"
    )]
    pub shapes: Vec<String>,
    /// Weight formats, comma-separated, a row per kernel and format: f16, bf16, f32, q8_0, q4_0,
    /// q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, mxfp4 (rows that are not whole blocks take
    /// llama.cpp's fallback format, named in the row).
    #[arg(long, value_delimiter = ',', default_value = "f16")]
    pub dtype: Vec<String>,
    /// Minimum GPU time per sample, in milliseconds (a kernel is repeated to reach it).
    #[arg(long, default_value_t = 20.0)]
    pub min_ms: f64,
    /// Timed samples per kernel: the records carry them, their mean and standard deviation.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,
    /// Only kernels whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
}

/// Measure on the adapter `opts` selects and print the table or the records; an error (after
/// printing) when a kernel failed its correctness check.
pub fn run(opts: &DeviceOptions, args: &BenchKernelsArgs) -> Result<()> {
    let ctx = Context::new(opts)?;
    let options = BenchOptions {
        shapes: args.shapes.clone(),
        dtypes: args
            .dtype
            .iter()
            .map(|d| bench::parse_dtype(d))
            .collect::<Result<_>>()?,
        min_ms: args.min_ms,
        repetitions: args.repetitions,
        filter: args.filter.clone(),
    };
    let report = bench::report(&ctx, &options)?;
    let output = if args.json { Output::Json } else { args.output };
    if output == Output::Md {
        print!("{}", table(&report));
    } else {
        let records = bench::records(&report, &Machine::of(&ctx));
        print!("{}", record::render(&records, output, "wgmoe_kernel"));
    }
    let failed = report.failed();
    if failed.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = failed
        .iter()
        .map(|r| format!("{} {} {} ({})", r.shape, r.dtype.name(), r.kernel, r.check.detail))
        .collect();
    Err(Error::bad_input(format!(
        "{} kernel(s) failed the correctness check against the f64 reference: {}",
        failed.len(),
        names.join("; ")
    )))
}

/// The adapter, the clock and bandwidths, then one markdown row per kernel.
fn table(r: &Report) -> String {
    let mut s = format!("adapter: {} ({}, {})\n", r.adapter, r.backend, r.driver);
    s += &format!(
        "timing: {}; copy bandwidth {:.1} GB/s; dependent dispatch {:.2} us\n\n",
        r.clock(),
        r.copy_gbs,
        r.dispatch_us
    );
    s += "| shape | weights | kernel | detail | us | sd | GB/s | GFLOP/s | of copy BW | NMSE | check |\n";
    s += "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|\n";
    for k in &r.rows {
        let nmse = match (k.check.nmse, k.check.tolerance > 0.0) {
            (Some(e), _) => format!("{e:.1e}"),
            (None, false) => "exact".to_string(),
            (None, true) => "not finite".to_string(),
        };
        s += &format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% | {nmse} | {} |\n",
            k.shape,
            k.dtype.name(),
            k.kernel,
            k.detail,
            k.avg_us(),
            k.stddev_us(),
            k.gbs(),
            k.gflops(),
            100.0 * k.bw_fraction(),
            if k.check.passed { "ok" } else { "FAIL" }
        );
    }
    s
}
