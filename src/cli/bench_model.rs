//! `wgmoe bench`: the arguments and the printed report of the end-to-end benchmark,
//! [`wgmoe::internals::bench_model`] (which also renders llama-bench's markdown and JSON).

use std::io::Write;
use std::path::PathBuf;
use wgmoe::internals::bench_model::{self, BenchModelOptions, ModelChoice};
use wgmoe::internals::gpu::{Context, DeviceOptions};
use wgmoe::internals::model::checkpoint;
use wgmoe::internals::model::synthetic::{self, SynthOptions};
use wgmoe::internals::model::KvDtype;
use wgmoe::{Error, Result};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// A Hugging Face model folder or a .gguf file.
    #[arg(long, conflicts_with = "synthetic", required_unless_present = "synthetic")]
    pub model: Option<PathBuf>,
    /// Random weights with a real model's shape, made on the GPU: olmoe-1b-7b, qwen3-30b-a3b,
    /// deepseek-v2-lite, gpt-oss-20b, mixtral-8x7b, or tiny (for software adapters and CI).
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Prompt tokens of the prefill test (0: skip it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens of the decode test (0: skip it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Tokens already in the KV cache when each test starts (llama-bench's depth): how speed holds
    /// up with context, e.g. `-d 8192` against the default 0.
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    pub n_depth: usize,
    /// Repetitions of each test (after one warm-up).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Weight format of a synthetic model: f16, bf16, f32, or a block-quantised format kept packed
    /// (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, mxfp4, fp8; rows
    /// that are not whole blocks take llama.cpp's fallback format, vectors f16).
    #[arg(long, default_value = "f16")]
    pub dtype: String,
    /// With --model: expand block-quantised weights to f16 at load (the speed of the old path).
    #[arg(long)]
    pub dequantize: bool,
    /// With --model: quantise a 16/32-bit checkpoint's matrices at load: q8_0, q4_0, q5_0 or q4_k.
    #[arg(long)]
    pub quantize: Option<String>,
    /// Print a JSON array (llama-bench's fields) instead of the markdown table.
    #[arg(long)]
    pub json: bool,
    /// Also time one decode step per kernel family (GPU timestamps between dispatches).
    #[arg(long)]
    pub profile: bool,
    /// Refuse synthetic weights larger than this (GiB) before allocating them.
    #[arg(long)]
    pub max_weights_gib: Option<f64>,
    /// Seed of the random prompt tokens and synthetic weights.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// KV-cache precision: f16, q8 or f32.
    #[arg(long = "kv-cache", default_value = "f16")]
    pub kv_cache: KvDtype,
    /// GiB wgmoe may allocate on the adapter, or a comma list of budgets to measure in turn
    /// (fractions allowed): routed experts beyond it stay in host memory with a GPU cache of them.
    #[arg(long = "gpu-memory", value_name = "GIB", value_delimiter = ',')]
    pub gpu_memory: Vec<f64>,
    /// Cache exactly this many routed experts per MoE layer (top-k at least), whatever the memory.
    #[arg(long = "expert-slots", value_name = "N")]
    pub expert_slots: Option<usize>,
    /// Which cached expert gives way to a missing one: lfu (the default) or lru.
    #[arg(long = "cache-policy", default_value = "lfu")]
    pub cache_policy: String,
    /// Continuous batching instead of the pp/tg tests: for each count (e.g. 1,2,4,8), that many
    /// -p-token prompts arrive at once and decode -n tokens together; prints time to first token,
    /// per-stream and total tokens/s.
    #[arg(long, value_delimiter = ',')]
    pub parallel: Vec<usize>,
}

/// Open the model (progress on stderr), measure, and print the summary and the table, or the
/// JSON on stdout with the summary on stderr.
pub fn run(opts: &DeviceOptions, args: &BenchArgs) -> Result<()> {
    let max_bytes = args
        .max_weights_gib
        .map(|g| super::gib_bytes("--max-weights-gib", g))
        .transpose()?;
    if args.synthetic.is_some() && (args.dequantize || args.quantize.is_some()) {
        return Err(Error::bad_input(
            "--quantize and --dequantize apply to --model; a synthetic model takes --dtype",
        ));
    }
    let budgets: Vec<Option<f64>> = if args.gpu_memory.is_empty() {
        vec![None]
    } else {
        args.gpu_memory.iter().copied().map(Some).collect()
    };
    let mut rows = Vec::new();
    for budget in &budgets {
        let memory = super::MemoryArgs {
            gpu_memory: *budget,
            expert_slots: args.expert_slots,
            cache_policy: args.cache_policy.clone(),
        };
        rows.push((*budget, run_one(opts, args, max_bytes, &memory)?));
    }
    if budgets.len() > 1 {
        println!();
        println!("| GPU memory | experts resident | hit rate | uploaded/token | test | t/s |");
        println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
        for (budget, (cache, tests)) in &rows {
            for (name, tps) in tests {
                println!(
                    "| {} GiB | {} | {} | {} | {name} | {tps:.2} |",
                    budget.map_or("-".into(), |b| format!("{b}")),
                    cache.0,
                    cache.1,
                    cache.2
                );
            }
        }
    }
    Ok(())
}

/// What the benchmark does next, on a terminal's standard error (overwritten by the next line and
/// cleared at the end); nothing when it is not a terminal.
fn progress(what: &str) {
    use std::io::IsTerminal;
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[2K{what}");
        let _ = err.flush();
    }
}

/// A budget's row of the table: the expert cache's (resident, hit rate, uploaded per token)
/// cells (`all`, `-`, `-` when nothing was offloaded) and (test, t/s) per test.
type BudgetRow = ((String, String, String), Vec<(String, f64)>);

/// One benchmark run under `memory`'s budget.
fn run_one(
    opts: &DeviceOptions,
    args: &BenchArgs,
    max_bytes: Option<u64>,
    memory: &super::MemoryArgs,
) -> Result<BudgetRow> {
    let streams = args.parallel.iter().copied().max().unwrap_or(1);
    let session = wgmoe::internals::model::experts::SessionNeeds {
        context: streams * (args.n_depth + args.n_prompt.max(1) + args.n_gen + 1),
        batch: args.n_prompt.max(streams),
        logit_rows: 1,
        kv: args.kv_cache,
    };
    let cache = memory.cache(session)?;
    let choice = match (&args.model, &args.synthetic) {
        (None, Some(shape)) => ModelChoice::Synthetic {
            shape: shape.clone(),
            opts: SynthOptions {
                dtype: bench_model::parse_dtype(&args.dtype)?,
                seed: args.seed as u32,
                max_bytes,
                cache,
            },
        },
        (Some(path), None) => ModelChoice::File {
            path: path.clone(),
            load: wgmoe::internals::model::LoadOptions {
                packed: !args.dequantize,
                quantize: args
                    .quantize
                    .as_deref()
                    .map(wgmoe::internals::gpu::DType::from_arg)
                    .transpose()?,
                cache,
            },
        },
        _ => {
            return Err(Error::bad_input(
                "give exactly one of --model PATH or --synthetic SHAPE",
            ))
        }
    };
    let options = BenchModelOptions {
        n_prompt: args.n_prompt,
        n_gen: args.n_gen,
        n_depth: args.n_depth,
        reps: args.reps,
        profile: args.profile,
        seed: args.seed,
        kv_cache: args.kv_cache,
        progress: Some(progress),
    };
    // Refuse what does not fit the model's context before loading it.
    let config = match &choice {
        ModelChoice::File { path, .. } => checkpoint::config(path)?,
        ModelChoice::Synthetic { shape, .. } => synthetic::shape_config(shape)?,
    };
    options.check(config.max_position)?;
    let ctx = Context::new(opts)?;
    let (model, info) = bench_model::open_model(ctx, &choice, &|line| eprintln!("{line}"))?;
    if let Some(mut c) = model.expert_cache() {
        c.record_trace(true);
    }
    if !args.parallel.is_empty() {
        if args.n_depth > 0 || args.profile {
            return Err(Error::bad_input("--parallel runs without --n-depth and --profile"));
        }
        let rows = bench_model::measure_parallel(&model, &args.parallel, &options)?;
        progress("");
        let backend = format!("{} ({})", model.ctx.info.name, model.ctx.info.backend);
        print!("{}", bench_model::parallel_table(&info.name, &backend, &rows, &options));
        let tests = rows
            .iter()
            .map(|r| (format!("{} streams", r.streams), r.total_tps))
            .collect();
        return Ok((("all".into(), "-".into(), "-".into()), tests));
    }
    let report = bench_model::measure(&model, info, &options)?;
    progress("");
    if args.json {
        for line in bench_model::summary(&report) {
            eprintln!("{line}");
        }
        if let Some(p) = &report.profile {
            eprint!("{}", bench_model::profile_table(p));
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&bench_model::to_json(&report)).unwrap_or_default()
        );
    } else {
        for line in bench_model::summary(&report) {
            println!("{line}");
        }
        println!();
        print!("{}", bench_model::markdown(&report));
    }
    let tests = report.results.iter().map(|t| (t.name(), t.avg_ts())).collect();
    let Some(mut c) = model.expert_cache() else {
        return Ok((("all".into(), "-".into(), "-".into()), tests));
    };
    eprintln!("{}", c.line());
    // What each policy would have hit on this run's routing, beside the optimum.
    let trace = c.take_trace();
    let (e, k) = c.shape();
    eprintln!(
        "hit rates on this run's routing by policy:\n{}",
        wgmoe::internals::model::experts::policy_table(&trace, e, k)
    );
    let (s, e) = c.resident_of();
    let cells = (
        format!("{s} of {e}"),
        format!("{:.1}%", 100.0 * c.stats.hit_rate()),
        format!("{:.2} MiB", c.stats.mib_per_token()),
    );
    Ok((cells, tests))
}
