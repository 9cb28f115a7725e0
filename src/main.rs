//! The `wgmoe` command line: argument parsing and printing only.

mod cli;

use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wgmoe::internals::generate;
use wgmoe::internals::gpu::{self, DeviceOptions};
use wgmoe::internals::model::config::ModelConfig;
use wgmoe::internals::model::plan::LogitRows;
use wgmoe::internals::model::Model as RawModel;
use wgmoe::{
    CancelToken, Error, Event, GenerateOptions, KvDtype, Message, Model, ModelOptions, Result, Sampling,
    SessionOptions, Stats, StopReason,
};

#[derive(Parser)]
#[command(
    name = "wgmoe",
    version,
    about = "Portable Mixture-of-Experts inference on any GPU (WGSL through wgpu)"
)]
struct Cli {
    /// Adapter: an index from `wgmoe devices`, a backend (vulkan, metal, dx12, gl) or part of its name.
    #[arg(long, global = true, env = "WGMOE_DEVICE")]
    device: Option<String>,
    /// Use WebGPU default limits and no optional features (the weakest adapter wgmoe supports).
    #[arg(long, global = true)]
    portable: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter with the capabilities wgmoe uses.
    Devices,
    /// Benchmark every kernel at real model shapes.
    BenchKernels(cli::bench_kernels::BenchKernelsArgs),
    /// Prompt (pp) and generation (tg) tokens/s of a model or a synthetic shape, like llama-bench.
    Bench(cli::bench_model::BenchArgs),
    /// Generate text from a prompt, streaming it as it comes.
    Run(RunArgs),
    /// Chat interactively; the KV cache is kept between turns.
    Chat(ChatArgs),
    /// Write the logits of every position of a token sequence (f32 little-endian, [n_tokens, vocab]).
    Logits(LogitsArgs),
    /// Print the token ids of a text as a JSON array (needs only the tokenizer files).
    Tokenize(TokenizeArgs),
    /// Merge benchmark records (`bench -o json`, `bench-kernels -o json`, llama-bench's JSON) from
    /// any machines and runs into markdown tables and SVG charts.
    Report(cli::report::ReportArgs),
    /// Serve the model over HTTP: the OpenAI API (/v1/chat/completions, /v1/completions,
    /// /v1/models), /health, /metrics, and a chat page at /.
    Serve(ServeCmd),
}

#[derive(Args)]
struct ServeCmd {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    serve: cli::serve::ServeArgs,
    /// KV-cache precision of each sequence: f16, q8 or f32.
    #[arg(long = "kv-cache", default_value = "f16")]
    kv_cache: KvDtype,
}

#[derive(Args)]
struct ModelArg {
    /// A Hugging Face model folder (config.json, safetensors, tokenizer.json) or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// Tokens the KV cache holds (prompt + generation); capped at the model's maximum.
    #[arg(long, default_value_t = 4096)]
    context: usize,
    /// Expand block-quantised weights (GGUF Q4_K, Q8_0, MXFP4, ...) to f16 at load instead of
    /// keeping them packed as the file stores them: about 3.5x the GPU memory of a 4-bit file.
    /// For comparing against the packed kernels.
    #[arg(long)]
    dequantize: bool,
    /// Quantise a 16/32-bit checkpoint's matrices at load, kept packed on the GPU: q8_0, q4_0,
    /// q5_0 or q4_k (ggml's reference quantisers; routers and vectors stay as they are; q4_k rows
    /// that are not whole 256-blocks take q5_0, as llama.cpp's quantiser does).
    #[arg(long)]
    quantize: Option<String>,
    #[command(flatten)]
    memory: cli::MemoryArgs,
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// Sampling temperature; 0 is greedy. Default: generation_config.json's, else greedy.
    #[arg(long)]
    temperature: Option<f32>,
    /// Keep the k most likely tokens (0: off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep the smallest set of tokens holding this much probability (1: off).
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of the sampler's random numbers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArg,
    /// The prompt text; `-` reads it from standard input.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Wrap the prompt as one user message through the model's chat template.
    #[arg(long)]
    chat: bool,
    /// KV-cache precision: f16 (half the memory and bandwidth of f32), q8 (8-bit blocks, 56% of
    /// f16, for long contexts) or f32.
    #[arg(long = "kv-cache", default_value = "f16")]
    kv_cache: KvDtype,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArg,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
    /// Tokens to generate at most per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 1024)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// KV-cache precision: f16 (half the memory and bandwidth of f32), q8 (8-bit blocks, 56% of
    /// f16, for long contexts) or f32.
    #[arg(long = "kv-cache", default_value = "f16")]
    kv_cache: KvDtype,
}

#[derive(Args)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Token ids: comma-separated (1,2,3) or the JSON array `wgmoe tokenize` prints ([1, 2, 3]).
    #[arg(long, required = true, value_parser = parse_tokens)]
    tokens: TokenList,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Prefill the first token, then feed every later one through the single-token decode path.
    #[arg(long)]
    decode: bool,
    /// KV-cache precision. f32 by default here: `logits` is the parity interface, compared with
    /// an f32 reference (f16 rounds every cached k and v, ~5e-4 relative).
    #[arg(long = "kv-cache", default_value = "f32")]
    kv_cache: KvDtype,
}

#[derive(Args)]
struct TokenizeArgs {
    /// A model folder (tokenizer.json, tokenizer_config.json) or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    text: Option<String>,
    /// Read the text from this file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Wrap the text as one user message through the chat template, with the generation prompt.
    #[arg(long)]
    chat: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let opts = DeviceOptions {
        selector: cli.device,
        portable: cli.portable,
    };
    let result = match cli.command {
        Command::Devices => devices(&opts),
        Command::BenchKernels(args) => cli::bench_kernels::run(&opts, &args),
        Command::Bench(args) => cli::bench_model::run(&opts, &args),
        Command::Run(args) => run(&opts, &args),
        Command::Chat(args) => chat(&opts, &args),
        Command::Logits(args) => logits(&opts, &args),
        Command::Tokenize(args) => tokenize(&args),
        Command::Serve(args) => serve(&opts, &args),
        Command::Report(args) => cli::report::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Load a model with a progress bar on a terminal, then say what it took. `session` is what the
/// command's session will need on the GPU (kept free when experts are offloaded).
fn load_model(
    opts: &DeviceOptions,
    arg: &ModelArg,
    session: wgmoe::internals::model::experts::SessionNeeds,
) -> Result<RawModel> {
    let path = arg.model.as_path();
    let ctx = gpu::Context::new(opts)?;
    let adapter = format!("{} ({})", ctx.info.name, ctx.backend_name());
    let bar = progress_bar();
    let start = std::time::Instant::now();
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let load = wgmoe::internals::model::LoadOptions {
        packed: !arg.dequantize,
        quantize: arg.quantize.as_deref().map(gpu::DType::from_arg).transpose()?,
        cache: arg.memory.cache(session)?,
    };
    let model = RawModel::load_with(ctx, path, &load, &progress)?;
    bar.finish_and_clear();
    eprintln!(
        "loaded {} ({}) in {:.1} s on {adapter}",
        path.display(),
        model.config.model_type,
        start.elapsed().as_secs_f64(),
    );
    eprintln!("{}", model.weights_line());
    if let Some(c) = model.expert_cache() {
        eprintln!("{}", c.resident_line());
    }
    Ok(model)
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("loading {bar:40} {pos}/{len} tensors {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Open a model through the library's API with a progress bar on a terminal, then say what it
/// took. `batch`: the longest prompt chunk the command runs at once.
fn serve(opts: &DeviceOptions, args: &ServeCmd) -> Result<()> {
    let model = open_model_for(opts, &args.model, args.kv_cache, args.serve.parallel)?;
    let context = args.model.context.min(model.info().max_context.max(1));
    cli::serve::run(model, context, &args.serve)
}

fn open_model(opts: &DeviceOptions, arg: &ModelArg, kv_cache: KvDtype) -> Result<Model> {
    open_model_for(opts, arg, kv_cache, 1)
}

/// [`open_model`] for `sequences` sequences of `--context` tokens at once (a server's batch).
fn open_model_for(opts: &DeviceOptions, arg: &ModelArg, kv_cache: KvDtype, sequences: usize) -> Result<Model> {
    let bar = progress_bar();
    let shown = bar.clone();
    let start = std::time::Instant::now();
    let options = ModelOptions {
        device: opts.selector.clone(),
        portable: opts.portable,
        gpu_memory: arg
            .memory
            .gpu_memory
            .map(|g| cli::gib_bytes("--gpu-memory", g))
            .transpose()?,
        expert_slots: arg.memory.expert_slots,
        cache_policy: wgmoe::CachePolicy::parse(&arg.memory.cache_policy)?,
        dequantize: arg.dequantize,
        quantize: arg.quantize.clone(),
        context: arg.context,
        kv_cache,
        sequences,
        progress: Some(std::sync::Arc::new(move |done, total| {
            shown.set_length(total as u64);
            shown.set_position(done as u64);
        })),
        ..Default::default()
    };
    let model = Model::open(&arg.model, &options)?;
    bar.finish_and_clear();
    let info = model.info();
    eprintln!(
        "loaded {} ({}) in {:.1} s on {}",
        arg.model.display(),
        info.architecture,
        start.elapsed().as_secs_f64(),
        info.adapter,
    );
    for line in model.memory_report() {
        eprintln!("{line}");
    }
    Ok(model)
}

/// The session needs of a command: `batch` tokens at once, with logits for `logit_rows` of them.
fn needs(
    arg: &ModelArg,
    batch: usize,
    logit_rows: usize,
    kv: KvDtype,
) -> wgmoe::internals::model::experts::SessionNeeds {
    wgmoe::internals::model::experts::SessionNeeds {
        context: arg.context,
        batch: batch.max(1),
        logit_rows,
        kv,
    }
}

/// The model's description (without loading it) and the context a command gets: `--context`,
/// capped at the model's maximum.
fn context(arg: &ModelArg) -> Result<(ModelConfig, usize)> {
    if arg.context == 0 {
        return Err(Error::bad_input(
            "--context is 0: the KV cache needs room for at least 1 token",
        ));
    }
    let config = wgmoe::internals::model::checkpoint::config(&arg.model)?;
    let context = arg.context.min(config.max_position);
    Ok((config, context))
}

/// Refuse, before the model is loaded, `n` generated tokens after `prompt` that do not fit the
/// context, saying where its size comes from.
fn check_fits(arg: &ModelArg, prompt: usize, n: usize) -> Result<()> {
    let (config, context) = context(arg)?;
    generate::check_fits(prompt, n, context, context).map_err(|e| {
        Error::bad_input(format!(
            "{e} (--context {} capped at the model's maximum of {})",
            arg.context, config.max_position
        ))
    })
}

/// The sampling: the flags over the model's defaults (generation_config.json, GGUF
/// general.sampling.*), checked before anything is loaded.
fn sampling(args: &SamplingArgs, model: &Path) -> Result<Sampling> {
    let d = generate::sampling_defaults(model)?;
    let s = Sampling {
        temperature: args.temperature.or(d.temperature).unwrap_or(0.0),
        top_k: args.top_k.or(d.top_k).unwrap_or(0),
        top_p: args.top_p.or(d.top_p).unwrap_or(1.0),
    };
    s.validate()?;
    Ok(s)
}

fn print_stats(s: &Stats, reason: &StopReason) {
    let why = match reason {
        StopReason::StopToken(_) => "stop token".to_string(),
        StopReason::StopString(s) => format!("stop string {s:?}"),
        StopReason::MaxTokens => "max tokens".into(),
        StopReason::ContextFull => "context full".into(),
        StopReason::Cancelled => "stopped".into(),
    };
    eprintln!(
        "\nprompt: {} tokens, {:.1} tok/s; generated: {} tokens, {:.1} tok/s ({why})",
        s.prompt_tokens,
        s.prompt_tokens_per_second(),
        s.generated_tokens,
        s.decode_tokens_per_second(),
    );
}

/// A spinner on a terminal (nothing when standard error is not one) while `what` runs.
fn spinner(what: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(what);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Print a generation's events to stdout as they come, with a spinner until the first one (the
/// prompt's pass, and the shaders' first compilation); returns how it ended.
fn stream(events: impl Iterator<Item = Result<Event>>, prompt_tokens: usize) -> Result<(Stats, StopReason)> {
    let mut out = std::io::stdout();
    let what = match prompt_tokens {
        0 => "reading the conversation".to_string(),
        n => format!("reading the prompt ({n} tokens)"),
    };
    let mut waiting = Some(spinner(what));
    for e in events {
        if let Some(bar) = waiting.take() {
            bar.finish_and_clear();
        }
        match e? {
            Event::Token { text, .. } | Event::Text(text) => {
                out.write_all(text.as_bytes())
                    .and_then(|_| out.flush())
                    .map_err(|e| Error::io("standard output", e))?;
            }
            Event::Done { stop_reason, stats } => return Ok((stats, stop_reason)),
        }
    }
    Err(Error::Device("the generation ended without saying why".into()))
}

/// Ctrl-C: stops the reply in progress (through `cancel`); with no reply running (`busy` false)
/// it quits, as a terminal user expects.
fn interrupts(cancel: &CancelToken, busy: &Arc<AtomicBool>) {
    let (cancel, busy) = (cancel.clone(), busy.clone());
    let _ = ctrlc::set_handler(move || {
        if busy.load(Ordering::SeqCst) {
            cancel.cancel();
        } else {
            eprintln!();
            std::process::exit(130);
        }
    });
}

/// The prompt of `run`: --prompt, --prompt - (standard input) or --file.
fn prompt_text(args: &RunArgs) -> Result<String> {
    match (&args.prompt, &args.file) {
        (Some(p), _) if p == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| Error::io("standard input", e))?;
            Ok(text)
        }
        (Some(p), _) => Ok(p.clone()),
        (None, Some(f)) => wgmoe::internals::input::read_text(f, wgmoe::internals::input::PROMPT_CAP, "prompt file"),
        (None, None) => Err(Error::bad_input("give --prompt or --file")),
    }
}

fn run(opts: &DeviceOptions, args: &RunArgs) -> Result<()> {
    let text = prompt_text(args)?;
    let tok = wgmoe::internals::model::tokenizer_for(&args.model.model)?;
    let prompt = if args.chat {
        tok.encode_chat(&[Message::user(text.as_str())], true)?
    } else {
        tok.encode(&text, true)?
    };
    let sampling = sampling(&args.sampling, &args.model.model)?;
    check_fits(&args.model, prompt.len(), args.n)?;
    let model = open_model(opts, &args.model, args.kv_cache)?;
    let mut session = model.session(&SessionOptions::default())?;
    let cancel = CancelToken::new();
    let busy = Arc::new(AtomicBool::new(true));
    interrupts(&cancel, &busy);
    let gen = GenerateOptions {
        max_tokens: Some(args.n),
        sampling: Some(sampling),
        seed: args.sampling.seed,
        cancel: Some(cancel),
        ..Default::default()
    };
    let n = prompt.len();
    let (stats, reason) = stream(session.generate(prompt, &gen)?, n)?;
    print_stats(&stats, &reason);
    report_cache(&model);
    Ok(())
}

/// After a command that ran the model: the expert cache's line, when experts were offloaded.
fn report_cache(model: &Model) {
    if let Some(line) = model.expert_cache_report() {
        eprintln!("{line}");
    }
}

const CHAT_HELP: &str = "/exit (or Ctrl-D) quits, /reset forgets the conversation, /system TEXT sets the \
                         system message, /help shows this; Ctrl-C stops a reply";

fn chat(opts: &DeviceOptions, args: &ChatArgs) -> Result<()> {
    let tok = wgmoe::internals::model::tokenizer_for(&args.model.model)?;
    if !tok.has_chat_template() {
        return Err(Error::unsupported(format!(
            "{} has no chat template; use `wgmoe run` with a plain prompt",
            args.model.model.display()
        )));
    }
    let sampling = sampling(&args.sampling, &args.model.model)?;
    // A reply of -n tokens must fit after a prompt of at least one token.
    check_fits(&args.model, 1, args.n)?;
    let model = open_model(opts, &args.model, args.kv_cache)?;
    let mut chat = model.chat(&SessionOptions::default())?;
    if let Some(system) = &args.system {
        chat.set_system(system.as_str());
    }
    let cancel = CancelToken::new();
    let busy = Arc::new(AtomicBool::new(false));
    interrupts(&cancel, &busy);
    let gen = GenerateOptions {
        max_tokens: Some(args.n),
        sampling: Some(sampling),
        seed: args.sampling.seed,
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    eprintln!("chatting with {}: {CHAT_HELP}", args.model.model.display());
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.read_line(&mut line).map_err(|e| Error::io("standard input", e))? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.split_once(' ').map_or((line, ""), |(c, rest)| (c, rest.trim())) {
            ("", _) => continue,
            ("/exit" | "/quit", _) => return Ok(()),
            ("/help", _) => {
                eprintln!("{CHAT_HELP}");
                continue;
            }
            ("/reset", _) => {
                chat.reset();
                eprintln!("(conversation forgotten)");
                continue;
            }
            ("/system", text) => {
                chat.set_system(text);
                chat.reset();
                eprintln!("(system message set; conversation restarted)");
                continue;
            }
            _ => {}
        }
        let dropped = chat.dropped();
        cancel.reset();
        busy.store(true, Ordering::SeqCst);
        let result = chat.send(line, &gen).and_then(|turn| stream(turn, 0));
        busy.store(false, Ordering::SeqCst);
        match result {
            Ok((stats, reason)) => {
                println!();
                print_stats(&stats, &reason);
            }
            // A conversation that no longer fits is not the end of the chat.
            Err(e @ Error::ContextFull { .. }) => eprintln!("{e}\n(/reset starts over)"),
            Err(e) => return Err(e),
        }
        if chat.dropped() > dropped {
            eprintln!(
                "(dropped the {} oldest messages to fit the context of {} tokens)",
                chat.dropped() - dropped,
                chat.session().capacity()
            );
        }
        report_cache(&model);
    }
}

fn logits(opts: &DeviceOptions, args: &LogitsArgs) -> Result<()> {
    check_fits(&args.model, args.tokens.0.len(), 0)?;
    let n = args.tokens.0.len();
    let model = load_model(opts, &args.model, needs(&args.model, n, n, args.kv_cache))?;
    let mut sess = model.try_session(args.model.context.min(model.config.max_position), args.kv_cache)?;
    let t = &args.tokens.0;
    let values = if args.decode {
        let mut v = sess.forward(&t[..1], LogitRows::All)?;
        for &tok in &t[1..] {
            v.extend(sess.forward(&[tok], LogitRows::Last)?);
        }
        v
    } else {
        sess.forward(t, LogitRows::All)?
    };
    std::fs::write(&args.out, bytemuck::cast_slice(&values)).map_err(|e| Error::io(&args.out, e))?;
    eprintln!(
        "wrote [{}, {}] f32 logits to {}",
        t.len(),
        model.config.vocab,
        args.out.display()
    );
    if let Some(c) = model.expert_cache() {
        eprintln!("{}", c.line());
    }
    Ok(())
}

/// `logits --tokens`: ids as `1,2,3` or `[1, 2, 3]`.
#[derive(Clone, Debug)]
struct TokenList(Vec<u32>);

fn parse_tokens(s: &str) -> std::result::Result<TokenList, String> {
    let inner = s.trim();
    let inner = inner
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(inner);
    let ids: std::result::Result<Vec<u32>, _> = inner
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().map_err(|_| format!("{t:?} is not a token id")))
        .collect();
    match ids? {
        ids if ids.is_empty() => Err("no token ids".into()),
        ids => Ok(TokenList(ids)),
    }
}

fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let tok = wgmoe::internals::model::tokenizer_for(&args.model)?;
    let text = match (&args.text, &args.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => wgmoe::internals::input::read_text(f, wgmoe::internals::input::PROMPT_CAP, "prompt file")?,
        (None, None) => return Err(Error::bad_input("give --text or --file")),
    };
    let ids = if args.chat {
        tok.encode_chat(&[Message::user(text)], true)?
    } else {
        tok.encode(&text, true)?
    };
    println!("{}", serde_json::to_string(&ids).unwrap_or_default());
    Ok(())
}

fn devices(opts: &DeviceOptions) -> Result<()> {
    let entries = gpu::list_adapters()?;
    let chosen = gpu::Context::new(opts)
        .ok()
        .map(|c| (c.info.name.clone(), c.info.backend));
    for e in &entries {
        let i = &e.info;
        let c = &e.caps;
        let mark = if chosen.as_ref() == Some(&(i.name.clone(), i.backend)) {
            " (default)"
        } else {
            ""
        };
        println!("[{}] {}{}", e.index, i.name, mark);
        println!(
            "    vendor 0x{:04x}, device 0x{:04x}, {:?}, backend {}",
            i.vendor,
            i.device,
            i.device_type,
            gpu::backend_name(i.backend)
        );
        println!("    driver: {} {}", i.driver, i.driver_info);
        println!(
            "    f16: {}, subgroups: {}, timestamps: {}, cooperative matrix f16: {}, immediates: {} B",
            yn(c.f16),
            if c.subgroups {
                format!("yes ({}-{})", c.subgroup_min, c.subgroup_max)
            } else {
                "no".into()
            },
            yn(c.timestamps),
            c.coop_f16.map_or("no".to_string(), |s| format!("{s}x{s}")),
            c.immediate_bytes
        );
        println!(
            "    max storage binding {}, max buffer {}, workgroup storage {} B, invocations per workgroup {}, storage buffers per stage {}",
            bytes(c.max_storage_binding),
            bytes(c.max_buffer),
            c.max_workgroup_storage,
            c.max_invocations,
            c.max_storage_buffers_per_stage
        );
        for why in &e.unmet {
            println!("    cannot run wgmoe: {why}");
        }
    }
    Ok(())
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", b >> 20)
    }
}
