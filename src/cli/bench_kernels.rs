//! `wgmoe bench-kernels` (and `cargo bench`, which includes this file): the arguments and the
//! printed table or JSON of the kernel benchmark, [`wgmoe::internals::bench`].

use wgmoe::internals::bench::{self, BenchOptions, Report};
use wgmoe::internals::gpu::{Context, DeviceOptions};
use wgmoe::Result;

#[derive(clap::Args, Clone, Debug)]
pub struct BenchKernelsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
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
    /// Minimum GPU time per measurement, in milliseconds (a kernel is repeated to reach it).
    #[arg(long, default_value_t = 20.0)]
    pub min_ms: f64,
    /// Only kernels whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
}

/// Measure on the adapter `opts` selects and print the report.
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
        filter: args.filter.clone(),
    };
    let report = bench::report(&ctx, &options)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&report)).unwrap_or_default()
        );
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn to_json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "adapter": r.adapter,
        "backend": r.backend,
        "driver": r.driver,
        "clock": r.clock(),
        "copy_gbs": r.copy_gbs,
        "dispatch_us": r.dispatch_us,
        "kernels": r.rows.iter().map(|r| serde_json::json!({
            "shape": r.shape, "dtype": r.dtype.name(), "kernel": r.kernel, "detail": r.detail, "us": r.us,
            "gbs": r.gbs(), "gflops": r.gflops(), "roofline": r.roofline(),
        })).collect::<Vec<_>>(),
    })
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
    s += "| shape | weights | kernel | detail | us | GB/s | GFLOP/s | of copy BW |\n";
    s += "|---|---|---|---|---:|---:|---:|---:|\n";
    for k in &r.rows {
        s += &format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0}% |\n",
            k.shape,
            k.dtype.name(),
            k.kernel,
            k.detail,
            k.us,
            k.gbs(),
            k.gflops(),
            100.0 * k.roofline()
        );
    }
    s
}
