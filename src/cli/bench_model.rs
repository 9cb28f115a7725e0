//! `wgmoe bench`: the arguments and the printed report of the end-to-end benchmark,
//! [`wgmoe::internals::bench_model`] (which also renders llama-bench's markdown and JSON).

use std::io::Write;
use std::path::PathBuf;
use wgmoe::internals::bench_model::{self, BenchModelOptions, ModelChoice};
use wgmoe::internals::gpu::{Context, DeviceOptions};
use wgmoe::internals::model::checkpoint;
use wgmoe::internals::model::synthetic::{self, SynthOptions};
use wgmoe::internals::model::KvDtype;
use wgmoe::internals::record::{self, Machine, Output};
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
    /// Prompt tokens of the prefill tests, a comma list (0: none).
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    pub n_prompt: Vec<usize>,
    /// Generated tokens of the decode tests, a comma list (0: none).
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    pub n_gen: Vec<usize>,
    /// Tokens already in the KV cache when each test starts (llama-bench's depth), a comma list:
    /// how speed holds up with context, e.g. `-d 0,8192`.
    #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_value = "0")]
    pub n_depth: Vec<usize>,
    /// Repetitions of each test (after one warm-up).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Weight formats of a synthetic model, a comma list (default f16): f16, bf16, f32, or
    /// block-quantised formats kept packed (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k,
    /// q6_k, iq4_nl, iq4_xs, mxfp4, fp8; rows that are not whole blocks take llama.cpp's fallback
    /// format, vectors f16).
    #[arg(long, value_delimiter = ',')]
    pub dtype: Vec<String>,
    /// With --model: expand block-quantised weights to f16 at load (the speed of the old path).
    #[arg(long)]
    pub dequantize: bool,
    /// With --model: quantise a 16/32-bit checkpoint's matrices at load: q8_0, q4_0, q5_0 or q4_k.
    #[arg(long)]
    pub quantize: Option<String>,
    /// Output format: md (a table for people), or records for files and tools: json, jsonl, csv,
    /// sql (llama-bench's fields and formats, with wgmoe's own fields added; `wgmoe report` merges
    /// them). Progress and the summary go to standard error.
    #[arg(short = 'o', long = "output", default_value = "md")]
    pub output: Output,
    /// The same as `-o json`.
    #[arg(long, conflicts_with = "output")]
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

/// Open the model (progress on stderr), measure every test, and print the summary and the table,
/// or the records on stdout with the summary on stderr.
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
    if args.model.is_some() && !args.dtype.is_empty() {
        return Err(Error::bad_input(
            "--dtype applies to --synthetic; a file's weights are what it stores (see --quantize, --dequantize)",
        ));
    }
    let output = if args.json { Output::Json } else { args.output };
    let budgets: Vec<Option<f64>> = if args.gpu_memory.is_empty() {
        vec![None]
    } else {
        args.gpu_memory.iter().copied().map(Some).collect()
    };
    // One model per weight format (a file has its own).
    let dtypes: Vec<Option<&str>> = if args.synthetic.is_some() && !args.dtype.is_empty() {
        args.dtype.iter().map(|d| Some(d.as_str())).collect()
    } else {
        vec![None]
    };
    let mut rows = Vec::new();
    let mut records = Vec::new();
    for budget in &budgets {
        for dtype in &dtypes {
            let memory = super::MemoryArgs {
                gpu_memory: *budget,
                expert_slots: args.expert_slots,
                cache_policy: args.cache_policy.clone(),
            };
            let (row, recs) = run_one(opts, args, *dtype, max_bytes, &memory, output)?;
            rows.push((*budget, row));
            records.extend(recs);
        }
    }
    if output != Output::Md {
        print!("{}", record::render(&records, output, "llama_bench"));
        return Ok(());
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

/// The tests in llama-bench's order: for each depth, the prefill tests, then the decode tests,
/// as (n_prompt, n_gen, n_depth).
fn tests(args: &BenchArgs) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for &d in &args.n_depth {
        out.extend(args.n_prompt.iter().filter(|&&p| p > 0).map(|&p| (p, 0, d)));
        out.extend(args.n_gen.iter().filter(|&&n| n > 0).map(|&n| (0, n, d)));
    }
    out
}

/// One benchmark run of one model under `memory`'s budget: its table row, and its records.
fn run_one(
    opts: &DeviceOptions,
    args: &BenchArgs,
    dtype: Option<&str>,
    max_bytes: Option<u64>,
    memory: &super::MemoryArgs,
    output: Output,
) -> Result<(BudgetRow, Vec<serde_json::Map<String, serde_json::Value>>)> {
    let streams = args.parallel.iter().copied().max().unwrap_or(1);
    let max = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    let session = wgmoe::internals::model::experts::SessionNeeds {
        context: streams * (max(&args.n_depth) + max(&args.n_prompt).max(1) + max(&args.n_gen) + 1),
        batch: max(&args.n_prompt).max(streams),
        logit_rows: 1,
        kv: args.kv_cache,
    };
    let cache = memory.cache(session)?;
    let choice = match (&args.model, &args.synthetic) {
        (None, Some(shape)) => ModelChoice::Synthetic {
            shape: shape.clone(),
            opts: SynthOptions {
                dtype: bench_model::parse_dtype(dtype.unwrap_or("f16"))?,
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
    let tests = tests(args);
    // `--parallel` runs one test; its flags are refused before anything loads.
    let parallel = (!args.parallel.is_empty()).then(|| parallel_test(args)).transpose()?;
    // Refuse what does not fit the model's context before loading it.
    let config = match &choice {
        ModelChoice::File { path, .. } => checkpoint::config(path)?,
        ModelChoice::Synthetic { shape, .. } => synthetic::shape_config(shape)?,
    };
    if tests.is_empty() {
        return Err(Error::bad_input("nothing to measure: every -p and -n is 0"));
    }
    for &t in &tests {
        options(args, t, false).check(config.max_position)?;
    }
    let ctx = Context::new(opts)?;
    let machine = Machine::of(&ctx);
    let (model, info) = bench_model::open_model(ctx, &choice, &|line| eprintln!("{line}"))?;
    if let Some(mut c) = model.expert_cache() {
        c.record_trace(true);
    }
    if let Some(test) = parallel {
        let (row, records) = run_parallel(args, &options(args, test, false), &model, &info, &machine, output)?;
        return Ok((row, with_settings(records, args, memory)));
    }
    // The profile runs once, after the last test.
    let mut report: Option<bench_model::Report> = None;
    for (i, &t) in tests.iter().enumerate() {
        let r = bench_model::measure(
            &model,
            info.clone(),
            &options(args, t, args.profile && i + 1 == tests.len()),
        )?;
        match &mut report {
            None => report = Some(r),
            Some(all) => all.merge(r),
        }
    }
    let report = report.ok_or_else(|| Error::bad_input("nothing to measure"))?;
    progress("");
    if output == Output::Md {
        for line in bench_model::summary(&report) {
            println!("{line}");
        }
        println!();
        print!("{}", bench_model::markdown(&report));
    } else {
        for line in bench_model::summary(&report) {
            eprintln!("{line}");
        }
        if let Some(p) = &report.profile {
            eprint!("{}", bench_model::profile_table(p));
        }
    }
    let records = with_settings(bench_model::records(&report), args, memory);
    let tests = report.results.iter().map(|t| (t.name(), t.avg_ts())).collect();
    let Some(mut c) = model.expert_cache() else {
        return Ok(((("all".into(), "-".into(), "-".into()), tests), records));
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
    Ok(((cells, tests), records))
}

/// The run's settings that records must carry to tell runs apart (`wgmoe report` keeps runs that
/// differ in them in columns of their own): the memory budget and expert cache, and how a file's
/// weights were loaded.
fn with_settings(
    mut records: Vec<serde_json::Map<String, serde_json::Value>>,
    args: &BenchArgs,
    memory: &super::MemoryArgs,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    use serde_json::json;
    for r in &mut records {
        r.insert("gpu_memory_gib".into(), json!(memory.gpu_memory));
        r.insert("expert_slots".into(), json!(memory.expert_slots));
        r.insert("cache_policy".into(), json!(memory.cache_policy));
        r.insert("dequantize".into(), json!(args.dequantize));
        r.insert("quantize".into(), json!(args.quantize));
    }
    records
}

/// The options of one test (n_prompt, n_gen, n_depth).
fn options(args: &BenchArgs, (n_prompt, n_gen, n_depth): (usize, usize, usize), profile: bool) -> BenchModelOptions {
    BenchModelOptions {
        n_prompt,
        n_gen,
        n_depth,
        reps: args.reps,
        profile,
        seed: args.seed,
        kv_cache: args.kv_cache,
        progress: Some(progress),
    }
}

/// `--parallel`'s one test: a single -p and -n, no depth, no profile.
fn parallel_test(args: &BenchArgs) -> Result<(usize, usize, usize)> {
    let (p, n) = match (args.n_prompt.as_slice(), args.n_gen.as_slice()) {
        ([p], [n]) => (*p, *n),
        _ => return Err(Error::bad_input("--parallel takes one -p and one -n")),
    };
    if args.n_depth.iter().any(|&d| d > 0) || args.profile {
        return Err(Error::bad_input("--parallel runs without --n-depth and --profile"));
    }
    Ok((p, n, 0))
}

/// `--parallel`: the continuous-batching table (or its records) for one -p and one -n.
fn run_parallel(
    args: &BenchArgs,
    options: &BenchModelOptions,
    model: &wgmoe::internals::model::Model,
    info: &bench_model::ModelInfo,
    machine: &Machine,
    output: Output,
) -> Result<(BudgetRow, Vec<serde_json::Map<String, serde_json::Value>>)> {
    let rows = bench_model::measure_parallel(model, &args.parallel, options)?;
    progress("");
    let backend = format!("{} ({})", model.ctx.info.name, model.ctx.info.backend);
    if output == Output::Md {
        print!("{}", bench_model::parallel_table(&info.name, &backend, &rows, options));
    }
    let records = bench_model::parallel_records(info, machine, &rows, options);
    let tests = rows
        .iter()
        .map(|r| (format!("{} streams", r.streams), r.total_tps))
        .collect();
    Ok(((("all".into(), "-".into(), "-".into()), tests), records))
}
