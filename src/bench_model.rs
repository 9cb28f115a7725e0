//! `wgmoe bench`: end-to-end prompt and generation speed of a whole model, reported like
//! llama-bench (`pp512`, `tg128`, mean ± sd over repetitions after a warm-up; a markdown table or
//! JSON with llama-bench's field names) so numbers compare across projects. For generation it also
//! gives the bandwidth roofline: weight bytes one token reads over the adapter's measured copy
//! bandwidth. `--profile` splits one decode step's GPU time by kernel family with timestamp
//! queries between dispatches.
//!
//! The model is a checkpoint (`--model`) or random weights of a real model's shape made on the GPU
//! (`--synthetic`, see [`crate::model::synthetic`]); both run through the same [`Model`] and
//! [`Session`] code path. This module measures and renders the report (llama-bench's markdown
//! and JSON); the binary parses arguments and prints.

use crate::bench::{copy_bandwidth, mean, stddev};
use crate::error::{Error, Result};
use crate::generate::GenerateOptions;
use crate::gpu::{Context, DType, GpuTimer};
use crate::model::plan::LogitRows;
use crate::model::synthetic::{self, Footprint, SynthOptions};
use crate::model::{KvDtype, Model, Session};
use crate::record::{self, Machine};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Instant;

/// Which model `wgmoe bench` measures.
#[derive(Clone, Debug)]
pub enum ModelChoice {
    /// A Hugging Face model folder or a .gguf file, loaded with these options (packed by default).
    File {
        path: PathBuf,
        load: crate::model::LoadOptions,
    },
    /// Random weights with a real model's shape, made on the GPU (see [`synthetic::SHAPES`]).
    Synthetic { shape: String, opts: SynthOptions },
}

/// What [`measure`] runs: llama-bench's tests and their repetitions.
#[derive(Clone, Debug)]
pub struct BenchModelOptions {
    /// Prompt tokens of the prefill test (0: skip it).
    pub n_prompt: usize,
    /// Generated tokens of the decode test (0: skip it).
    pub n_gen: usize,
    /// Tokens already in the KV cache when each test starts (llama-bench's depth).
    pub n_depth: usize,
    /// Repetitions of each test (after one warm-up).
    pub reps: usize,
    /// Also time one decode step per kernel family (GPU timestamps between dispatches).
    pub profile: bool,
    /// Seed of the random prompt tokens.
    pub seed: u64,
    /// KV-cache precision of the sessions measured.
    pub kv_cache: KvDtype,
    /// Told what runs next ("pp512: repetition 2 of 5"), for a user watching a long run.
    pub progress: Option<fn(&str)>,
}

impl Default for BenchModelOptions {
    fn default() -> Self {
        Self {
            n_prompt: 512,
            n_gen: 128,
            n_depth: 0,
            reps: 5,
            profile: false,
            seed: 1234,
            kv_cache: KvDtype::F16,
            progress: None,
        }
    }
}

impl BenchModelOptions {
    /// Refuse, before any work, a benchmark that measures nothing or does not fit a model whose
    /// context is `max_position` tokens: the prefill test takes `n_depth + n_prompt` positions, the
    /// decode test `n_depth + 1 + n_gen` (a one-token prompt, then `n_gen` steps).
    pub fn check(&self, max_position: usize) -> Result<()> {
        let (p, n, d) = (self.n_prompt, self.n_gen, self.n_depth);
        if self.reps == 0 {
            return Err(Error::bad_input("-r (repetitions) is 0: give at least 1"));
        }
        if p == 0 && n == 0 {
            return Err(Error::bad_input("nothing to measure: -p and -n are both 0"));
        }
        let too_long = |test: &str, need: usize| {
            Error::bad_input(format!(
                "{test} needs {need} positions, more than the model's context of {max_position} \
                 tokens (max_position_embeddings): lower -d, -p or -n"
            ))
        };
        if p > 0 && d.saturating_add(p) > max_position {
            return Err(too_long(&format!("pp{p} at depth {d}"), d.saturating_add(p)));
        }
        let decode = d.saturating_add(n).saturating_add(1);
        if n > 0 && decode > max_position {
            return Err(too_long(&format!("tg{n} at depth {d}"), decode));
        }
        Ok(())
    }
}

/// A `--dtype` value of a synthetic model: any weight format (f16, bf16, f32, q4_k, q8_0, mxfp4,
/// ...; any case).
pub fn parse_dtype(s: &str) -> Result<DType> {
    DType::from_arg(s)
}

/// What the report says about the model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The table's model column, e.g. `olmoe-1b-7b F16`.
    pub name: String,
    /// The shape or the file.
    pub filename: String,
    pub model_type: String,
    /// The model as llama.cpp describes it (`llama_model_desc`, llama-bench's `model_type`), e.g.
    /// "qwen3moe 30B.A3B Q4_K - Medium", so that rows of both line up.
    pub llama_type: String,
    pub weight_format: DType,
    pub footprint: Footprint,
}

/// Open a checkpoint or build a synthetic model, saying on `log` what is about to be allocated.
pub fn open_model(ctx: Context, choice: &ModelChoice, log: &dyn Fn(&str)) -> Result<(Model, ModelInfo)> {
    match choice {
        ModelChoice::Synthetic { shape, opts } => {
            let dtype = opts.dtype;
            let cfg = synthetic::shape_config(shape)?;
            let fp = synthetic::footprint(&cfg, dtype);
            log(&format!(
                "synthetic {shape}: {} parameters, {} of {} weights to make on {} ({:.4} GB read per token)",
                params_cell(fp.params),
                size_cell(fp.gpu_bytes),
                dtype.name(),
                ctx.info.name,
                fp.read_bytes_per_token * 1e-9
            ));
            let start = Instant::now();
            let model_type = cfg.model_type.clone();
            let model = synthetic::model_from_config(ctx, cfg, &format!("synthetic shape {shape}"), opts)?;
            log(&format!("made in {:.1} s", start.elapsed().as_secs_f64()));
            let info = ModelInfo {
                name: format!("{shape} {}", dtype.name().to_uppercase()),
                filename: format!("synthetic:{shape}"),
                llama_type: record::llama_model_desc(&model.config, record::llama_ftype_of(dtype)),
                model_type,
                weight_format: dtype,
                footprint: fp,
            };
            Ok((model, info))
        }
        ModelChoice::File { path, load } => {
            let start = Instant::now();
            let model = Model::load_with(ctx, path, load, &|_, _| {})?;
            let dtype = model.weights.main_format();
            // The roofline counts the bytes of the formats the file has (packed where it is).
            let fp = model
                .footprint
                .unwrap_or_else(|| synthetic::footprint(&model.config, dtype));
            log(&format!(
                "loaded {} in {:.1} s",
                path.display(),
                start.elapsed().as_secs_f64()
            ));
            log(&model.weights_line());
            let stem = path
                .file_name()
                .map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned());
            let info = ModelInfo {
                name: format!("{stem} {}", dtype.name().to_uppercase()),
                filename: path.display().to_string(),
                llama_type: record::llama_model_desc(&model.config, &record::llama_ftype_of_file(path, dtype)),
                model_type: model.config.model_type.clone(),
                weight_format: dtype,
                footprint: fp,
            };
            Ok((model, info))
        }
    }
}

/// One llama-bench test: `pp{n_prompt}` or `tg{n_gen}`.
#[derive(Clone, Debug)]
pub struct TestResult {
    pub n_prompt: usize,
    pub n_gen: usize,
    pub n_depth: usize,
    pub samples_ns: Vec<f64>,
    pub samples_ts: Vec<f64>,
    /// Generation only: tokens/s the weight traffic allows at the measured copy bandwidth.
    pub roofline_ts: Option<f64>,
    /// Seconds since the Unix epoch when the test started (llama-bench's `test_time`).
    pub started: u64,
}

impl TestResult {
    pub fn name(&self) -> String {
        let test = if self.n_gen == 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        };
        if self.n_depth == 0 {
            test
        } else {
            format!("{test} @ d{}", self.n_depth)
        }
    }
    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts)
    }
    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts)
    }
    pub fn avg_ns(&self) -> f64 {
        mean(&self.samples_ns)
    }
    pub fn stddev_ns(&self) -> f64 {
        stddev(&self.samples_ns)
    }
    pub fn roofline_fraction(&self) -> Option<f64> {
        self.roofline_ts.map(|r| self.avg_ts() / r)
    }
}

/// GPU time of one kernel family in a decode step.
#[derive(Clone, Debug)]
pub struct FamilyTime {
    pub family: String,
    pub dispatches: usize,
    pub us: f64,
}

/// `--profile`'s result.
#[derive(Clone, Debug)]
pub enum Profile {
    /// Why there is no per-family time (no timestamp queries inside passes).
    Missing(String),
    Measured {
        /// Tokens in the cache when the step ran.
        context: usize,
        /// Dispatches in one step.
        dispatches: usize,
        /// GPU time from the first dispatch's start to the last one's end, per step.
        step_us: f64,
        /// The same step recorded without the timestamps between dispatches (pass-boundary
        /// timestamps only): what the inner timestamps cost shows as the difference.
        pass_us: f64,
        /// By time, largest first; sums to `step_us`.
        families: Vec<FamilyTime>,
    },
}

/// Everything `wgmoe bench` reports.
#[derive(Clone, Debug)]
pub struct Report {
    /// The build, host and adapter, for the records.
    pub machine: Machine,
    pub model: ModelInfo,
    /// Measured copy bandwidth (bytes read + written per second), when generation was measured.
    pub copy_bytes_per_s: Option<f64>,
    pub results: Vec<TestResult>,
    pub profile: Option<Profile>,
    /// KV-cache precision of the sessions measured.
    pub kv_cache: KvDtype,
}

impl Report {
    /// Add the tests of another run of the same model (the next of a list of tests); the copy
    /// bandwidth and the profile are the first measured.
    pub fn merge(&mut self, other: Report) {
        self.results.extend(other.results);
        self.copy_bytes_per_s = self.copy_bytes_per_s.or(other.copy_bytes_per_s);
        self.profile = self.profile.take().or(other.profile);
    }
}

/// Whether the adapter does no GPU work (wgpu's noop backend, the `noop` feature).
fn host_only(ctx: &Context) -> bool {
    ctx.info.backend == wgpu::Backend::Noop
}

/// xorshift64*: the random prompt.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) % n as u64) as u32
    }
}

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
    }
}

/// An empty cache, then `depth` (untimed) context tokens in it, 512 at a time so a deep context
/// needs no giant prefill scratch.
fn fill(sess: &mut Session, depth: &[u32]) -> Result<()> {
    sess.reset();
    for part in depth.chunks(512) {
        sess.forward(part, LogitRows::Last)?;
    }
    Ok(())
}

/// `n` decode steps after a one-token prompt on top of `depth` context tokens; returns their seconds.
fn decode(sess: &mut Session, depth: &[u32], first: u32, n: usize) -> Result<f64> {
    fill(sess, depth)?;
    let (_, stats) = sess.generate(&[first], &greedy(n + 1), |_| Ok(()))?;
    if stats.generated != n + 1 {
        return Err(Error::bad_input(format!(
            "generation stopped after {} of {} tokens ({})",
            stats.generated,
            n + 1,
            stats.stopped_by
        )));
    }
    Ok(stats.generate_secs)
}

/// Run the benchmark on a model.
pub fn measure(model: &Model, info: ModelInfo, opts: &BenchModelOptions) -> Result<Report> {
    let ctx = &model.ctx;
    let started = record::now();
    opts.check(model.config.max_position)?;
    let (p, n, reps) = (opts.n_prompt, opts.n_gen, opts.reps);
    let vocab = model.config.vocab;
    let mut rng = Rng(opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let prompt: Vec<u32> = (0..p).map(|_| rng.below(vocab)).collect();
    let first = rng.below(vocab);
    let depth: Vec<u32> = (0..opts.n_depth).map(|_| rng.below(vocab)).collect();
    let d = depth.len();
    let mut sess = model.try_session(d + p.max(1) + n + 2, opts.kv_cache)?;
    let say = |what: String| {
        if let Some(f) = opts.progress {
            f(&what);
        }
    };
    let mut results = Vec::new();
    if p > 0 {
        // Warm-up: pipelines, the plan for p rows, caches.
        say(format!("pp{p}: warm-up (shaders, the plan for {p} rows)"));
        fill(&mut sess, &depth)?;
        let logits = sess.forward(&prompt, LogitRows::Last)?;
        if logits.iter().any(|x| !x.is_finite()) {
            return Err(Error::Device(format!(
                "the prefill of {p} tokens produced non-finite logits"
            )));
        }
        let mut samples = Vec::with_capacity(reps);
        for i in 0..reps {
            say(format!("pp{p}: repetition {} of {reps}", i + 1));
            // The same cache each time, like a fresh session (the plan is kept).
            fill(&mut sess, &depth)?;
            let start = Instant::now();
            sess.forward(&prompt, LogitRows::Last)?;
            samples.push(start.elapsed().as_secs_f64());
        }
        results.push(TestResult {
            n_prompt: p,
            n_gen: 0,
            n_depth: d,
            samples_ns: samples.iter().map(|s| s * 1e9).collect(),
            samples_ts: samples.iter().map(|s| p as f64 / s).collect(),
            roofline_ts: None,
            started,
        });
    }
    let mut copy_bytes_per_s = None;
    if n > 0 {
        say(format!("tg{n}: warm-up"));
        decode(&mut sess, &depth, first, n.min(8))?;
        let mut samples = Vec::with_capacity(reps);
        for i in 0..reps {
            say(format!("tg{n}: repetition {} of {reps}", i + 1));
            samples.push(decode(&mut sess, &depth, first, n)?);
        }
        // The noop adapter does no GPU work: there is no bandwidth to measure, and a step's time is
        // what the host spends on it.
        if !host_only(ctx) {
            say("measuring the adapter's copy bandwidth (for the roofline)".into());
            let timer = GpuTimer::new(ctx);
            copy_bytes_per_s = Some(copy_bandwidth(ctx, &timer, 20.0)?);
        }
        results.push(TestResult {
            n_prompt: 0,
            n_gen: n,
            n_depth: d,
            samples_ns: samples.iter().map(|s| s * 1e9).collect(),
            samples_ts: samples.iter().map(|s| n as f64 / s).collect(),
            roofline_ts: copy_bytes_per_s.map(|copy| copy / info.footprint.read_bytes_per_token),
            started,
        });
    }
    let profile = if opts.profile {
        say("profiling a decode step per kernel family".into());
        Some(profile_decode(model, &prompt, reps, opts.kv_cache)?)
    } else {
        None
    };
    Ok(Report {
        machine: Machine::of(ctx),
        model: info,
        copy_bytes_per_s,
        results,
        profile,
        kv_cache: opts.kv_cache,
    })
}

/// The family of a dispatch: its label up to the first `.`, `:` or `[`, without a variant suffix
/// (`moe.gate_up_decode` is `moe`, `matvec_sg` is `matvec`, `rmsnorm_inplace` is `rmsnorm`).
pub fn family(label: &str) -> &str {
    let mut f = label.split(['.', ':', '[']).next().unwrap_or(label);
    for suffix in ["_sg", "_subgroup", "_portable", "_inplace", "_vec4"] {
        f = f.strip_suffix(suffix).unwrap_or(f);
    }
    f
}

/// GPU time per kernel family of one decode step at the context `prompt` leaves (a prompt of one
/// token when it is empty), from timestamps written after every dispatch of the step the session
/// replays; the mean over `reps` steps after a warm-up.
pub fn profile_decode(model: &Model, prompt: &[u32], reps: usize, kv_cache: KvDtype) -> Result<Profile> {
    let ctx = &model.ctx;
    if !ctx.caps.timestamps_in_passes {
        return Ok(Profile::Missing(format!(
            "{} offers no timestamp queries inside compute passes (TIMESTAMP_QUERY_INSIDE_PASSES{}): no per-kernel times",
            ctx.info.name,
            if ctx.caps.timestamps { "; pass-level timestamps only" } else { "" }
        )));
    }
    if model.experts.is_some() {
        // Replaying a step's dispatches in one pass skips the cache's round trips: timings of
        // the wrong experts.
        return Ok(Profile::Missing(
            "routed experts are offloaded (--gpu-memory / --expert-slots): a decode step waits for the CPU after every MoE router, so there is no one-pass step to time".into(),
        ));
    }
    let reps = reps.max(1);
    let prompt: &[u32] = if prompt.is_empty() { &[0] } else { prompt };
    // Each replayed step advances the GPU's position by one: leave room for all of them.
    let mut sess = model.try_session(prompt.len() + 2 * reps + 8, kv_cache)?;
    sess.generate(prompt, &greedy(2), |_| Ok(()))?;
    let context = sess.position();
    let steps = sess
        .step_dispatches(1)
        .ok_or_else(|| Error::Device("the session recorded no decode step to profile".into()))?;
    let count = steps.len() + 1;
    let max = wgpu::QUERY_SET_MAX_QUERIES as usize;
    let sets: Vec<wgpu::QuerySet> = (0..count.div_ceil(max))
        .map(|i| {
            ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: (count - i * max).min(max) as u32,
            })
        })
        .collect();
    let resolve_bytes = (count * 8).next_multiple_of(256) as u64 + 256 * sets.len() as u64;
    let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("profile-resolve"),
        size: resolve_bytes,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let stamp = |pass: &mut wgpu::ComputePass<'_>, k: usize| pass.write_timestamp(&sets[k / max], (k % max) as u32);
    let period = ctx.queue.get_timestamp_period() as f64;
    let mut per_dispatch = vec![0.0f64; steps.len()];
    for rep in 0..=reps {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("profile"),
                timestamp_writes: None,
            });
            stamp(&mut pass, 0);
            for (k, d) in steps.iter().enumerate() {
                d.record(&mut pass);
                stamp(&mut pass, k + 1);
            }
        }
        // Each set resolves at its own 256-byte-aligned offset.
        let mut offsets = Vec::with_capacity(sets.len());
        let mut offset = 0u64;
        for (i, set) in sets.iter().enumerate() {
            let n = (count - i * max).min(max) as u32;
            enc.resolve_query_set(set, 0..n, &resolve, offset);
            offsets.push((offset, n as usize));
            offset = (offset + n as u64 * 8).next_multiple_of(256);
        }
        ctx.queue.submit([enc.finish()]);
        ctx.wait()?;
        if rep == 0 {
            continue; // warm-up
        }
        let mut ts = Vec::with_capacity(count);
        for (off, n) in offsets {
            let bytes = ctx.read_bytes(&resolve, off, n as u64 * 8)?;
            ts.extend(
                bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            );
        }
        for (k, t) in per_dispatch.iter_mut().enumerate() {
            *t += ts[k + 1].saturating_sub(ts[k]) as f64 * period * 1e-3 / reps as f64;
        }
    }
    let timer = GpuTimer::new(ctx);
    let mut pass_us = 0.0;
    for _ in 0..reps {
        pass_us += timer.time_pass(ctx, |pass| steps.iter().for_each(|d| d.record(pass)))? * 1e6 / reps as f64;
    }
    let mut families: Vec<FamilyTime> = Vec::new();
    for (d, us) in steps.iter().zip(&per_dispatch) {
        let f = family(&d.label);
        match families.iter_mut().find(|x| x.family == f) {
            Some(x) => {
                x.dispatches += 1;
                x.us += us;
            }
            None => families.push(FamilyTime {
                family: f.to_string(),
                dispatches: 1,
                us: *us,
            }),
        }
    }
    families.sort_by(|a, b| b.us.total_cmp(&a.us));
    Ok(Profile::Measured {
        context,
        dispatches: steps.len(),
        step_us: per_dispatch.iter().sum(),
        pass_us,
        families,
    })
}

fn backend_label(backend: &str) -> String {
    let b = match backend {
        "vulkan" => "Vulkan",
        "metal" => "Metal",
        "dx12" => "DX12",
        "gl" => "GL",
        "webgpu" => "WebGPU",
        other => other,
    };
    format!("{b} (wgmoe)")
}

/// The header lines: adapter, backend, driver, weight format, bandwidth roofline.
pub fn summary(r: &Report) -> Vec<String> {
    let m = &r.machine;
    let driver = format!("{} {}", m.driver, m.driver_info);
    let mut out = vec![
        format!("adapter: {}", m.adapter),
        format!("backend: {}", backend_label(&m.backend)),
        format!("driver: {}", driver.trim()),
        format!("weight format: {}", r.model.weight_format.name()),
        format!("KV cache: {}", r.kv_cache),
    ];
    if m.backend == "noop" {
        if let Some(tg) = r.results.iter().find(|t| t.n_gen > 0) {
            out.push(format!(
                "no GPU work (wgpu's noop adapter): a decode step costs the host {:.1} us",
                tg.avg_ns() / tg.n_gen as f64 * 1e-3
            ));
        }
    }
    if let Some(c) = r.copy_bytes_per_s {
        let per_token = r.model.footprint.read_bytes_per_token;
        out.push(format!(
            "roofline: {:.3} GB of weights read per token / {:.1} GB/s copy bandwidth = {:.1} tok/s",
            per_token * 1e-9,
            c * 1e-9,
            c / per_token
        ));
    }
    out
}

/// llama-bench's markdown table, one row per test, and (for generation) the roofline fraction.
pub fn markdown(r: &Report) -> String {
    let m = &r.model;
    let mut s = String::new();
    s.push_str("| model | size | params | backend | test | t/s |\n");
    s.push_str("| --- | ---: | ---: | --- | ---: | ---: |\n");
    for t in &r.results {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} ± {:.2} |\n",
            m.name,
            size_cell(m.footprint.data_bytes),
            params_cell(m.footprint.params),
            backend_label(&r.machine.backend),
            t.name(),
            t.avg_ts(),
            t.stddev_ts()
        ));
    }
    for t in &r.results {
        if let (Some(roof), Some(f)) = (t.roofline_ts, t.roofline_fraction()) {
            s.push_str(&format!(
                "\n{}: {:.1} of a {:.1} tok/s roofline ({:.1}%)\n",
                t.name(),
                t.avg_ts(),
                roof,
                100.0 * f
            ));
        }
    }
    if let Some(p) = &r.profile {
        s.push('\n');
        s.push_str(&profile_table(p));
    }
    s
}

/// llama-bench's size column: MiB below 1 GiB, GiB above.
pub fn size_cell(bytes: u64) -> String {
    synthetic::human_bytes(bytes)
}

/// llama-bench's params column: M below a billion, B above.
pub fn params_cell(params: u64) -> String {
    if params < 1_000_000_000 {
        format!("{:.2} M", params as f64 * 1e-6)
    } else {
        format!("{:.2} B", params as f64 * 1e-9)
    }
}

/// The `--profile` table: family | dispatches | us/token | share.
pub fn profile_table(p: &Profile) -> String {
    match p {
        Profile::Missing(why) => format!("profile: {why}\n"),
        Profile::Measured {
            context,
            dispatches,
            step_us,
            pass_us,
            families,
        } => {
            let mut s = format!(
                "decode step at context {context}: {dispatches} dispatches, {step_us:.1} us of GPU time with a timestamp \
                 after each dispatch ({pass_us:.1} us without)\n\n"
            );
            s.push_str("| family | dispatches | us/token | share |\n| --- | ---: | ---: | ---: |\n");
            for f in families {
                s.push_str(&format!(
                    "| {} | {} | {:.1} | {:.1}% |\n",
                    f.family,
                    f.dispatches,
                    f.us,
                    100.0 * f.us / step_us.max(1e-12)
                ));
            }
            s
        }
    }
}

/// llama-bench's fields (tools/llama-bench/llama-bench.cpp, `test::get_fields`, 2026) with the
/// values that describe how wgmoe ran, for one test: the prompt in one batch (`n_batch`), one
/// host thread, every layer on the GPU (`n_gpu_layers` 99), fused attention (`flash_attn` 1);
/// options wgmoe has no counterpart of (CPU masks, polling, splits, overrides, fitting) take
/// llama-bench's defaults. `use_mmap` is the older name of `load_mode` that
/// scripts/compare-llama-bench.py still requires.
fn llama_bench_fields(m: &ModelInfo, machine: &Machine, kv: KvDtype, started: u64) -> Map<String, Value> {
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_string(), v);
    };
    let kv_type = match kv {
        KvDtype::Q8 => "q8_0",
        other => other.name(),
    };
    put("build_commit", json!(record::BUILD_COMMIT));
    put("build_number", json!(record::BUILD_NUMBER.parse::<u64>().unwrap_or(0)));
    put("cpu_info", json!(machine.cpu_info));
    put("gpu_info", json!(machine.adapter));
    put("backends", json!(backend_label(&machine.backend)));
    put("model_filename", json!(m.filename));
    put("model_type", json!(m.llama_type));
    put("model_size", json!(m.footprint.data_bytes));
    put("model_n_params", json!(m.footprint.params));
    put("n_batch", json!(0));
    put("n_ubatch", json!(0));
    // wgmoe drives the GPU from one host thread.
    put("n_threads", json!(1));
    put("cpu_mask", json!("0x0"));
    put("cpu_strict", json!(false));
    put("poll", json!(50));
    put("type_k", json!(kv_type));
    put("type_v", json!(kv_type));
    // Every layer runs on the GPU (offloaded experts are cached there).
    put("n_gpu_layers", json!(99));
    put("n_cpu_moe", json!(0));
    put("split_mode", json!("layer"));
    put("main_gpu", json!(0));
    put("no_kv_offload", json!(false));
    // Attention is one fused kernel (online softmax), llama.cpp's flash attention.
    put("flash_attn", json!(1));
    put("devices", json!("auto"));
    put("tensor_split", json!("0.00"));
    put("tensor_buft_overrides", json!("none"));
    put("load_mode", json!("mmap"));
    put("use_mmap", json!(true));
    put("embeddings", json!(false));
    put("no_op_offload", json!(0));
    put("no_host", json!(false));
    put("fit_target", json!(0));
    put("fit_min_ctx", json!(0));
    put("test_time", json!(record::iso8601(started)));
    o
}

/// One record per test: llama-bench's fields, its samples, then wgmoe's own (`record`, the
/// machine, the weight format, KV precision, and for generation the roofline).
pub fn records(r: &Report) -> Vec<Map<String, Value>> {
    let m = &r.model;
    r.results
        .iter()
        .map(|t| {
            let mut o = llama_bench_fields(m, &r.machine, r.kv_cache, t.started);
            let test_time = o.remove("test_time").unwrap_or_default();
            // llama-bench's batch: the prompt goes through in one batch.
            o["n_batch"] = json!(t.n_prompt.max(1));
            o["n_ubatch"] = json!(t.n_prompt.max(1));
            o.insert("n_prompt".into(), json!(t.n_prompt));
            o.insert("n_gen".into(), json!(t.n_gen));
            o.insert("n_depth".into(), json!(t.n_depth));
            o.insert("test_time".into(), test_time);
            o.insert("avg_ns".into(), json!(t.avg_ns().round() as u64));
            o.insert("stddev_ns".into(), json!(t.stddev_ns().round() as u64));
            o.insert("avg_ts".into(), json!(t.avg_ts()));
            o.insert("stddev_ts".into(), json!(t.stddev_ts()));
            o.insert(
                "samples_ns".into(),
                json!(t.samples_ns.iter().map(|x| x.round() as u64).collect::<Vec<_>>()),
            );
            o.insert("samples_ts".into(), json!(t.samples_ts));
            wgmoe_fields(&mut o, m, &r.machine, r.kv_cache);
            o.insert("test".into(), json!(t.name()));
            o.insert("roofline_ts".into(), json!(t.roofline_ts));
            o.insert("roofline_fraction".into(), json!(t.roofline_fraction()));
            o.insert("weight_bytes_per_token".into(), json!(m.footprint.read_bytes_per_token));
            o.insert("copy_bandwidth_gbs".into(), json!(r.copy_bytes_per_s.map(|c| c * 1e-9)));
            o
        })
        .collect()
}

/// wgmoe's fields after llama-bench's: what the record is, the model as wgmoe names it, the
/// machine, weight format and KV precision.
fn wgmoe_fields(o: &mut Map<String, Value>, m: &ModelInfo, machine: &Machine, kv: KvDtype) {
    o.insert("record".into(), json!(record::BENCH));
    o.insert("model".into(), json!(m.name));
    o.extend(machine.fields());
    o.insert("weight_format".into(), json!(m.weight_format.name()));
    o.insert("kv_cache".into(), json!(kv.name()));
}

/// One row of the continuous-batching table: `streams` generations decoded together.
#[derive(Clone, Debug)]
pub struct ParallelResult {
    pub streams: usize,
    /// Mean seconds from the start until a stream's first token (all prompts arrive at once and
    /// are prefilled one after another).
    pub ttft: f64,
    /// Decode tokens per second of one stream, and of all together.
    pub stream_tps: f64,
    pub total_tps: f64,
    /// The total tokens/s of every repetition (the fields above are the best one's).
    pub samples_total_tps: Vec<f64>,
}

/// Continuous batching: for each stream count, that many `n_prompt`-token prompts arrive at
/// once, are prefilled into their slots, then decode `n_gen` tokens together (one batch of rows
/// per step, greedy). Best of `reps` repetitions after a warm-up.
pub fn measure_parallel(model: &Model, streams: &[usize], opts: &BenchModelOptions) -> Result<Vec<ParallelResult>> {
    use crate::kernels::sampling::SampleSpec;
    use crate::model::batch::{Batch, Row};
    let vocab = model.config.vocab;
    let mut rng = Rng(opts.seed | 1);
    let mut out = Vec::new();
    for &n in streams {
        if n == 0 {
            return Err(Error::bad_input("--parallel takes stream counts of at least 1"));
        }
        let context = opts.n_prompt.max(1) + opts.n_gen + 1;
        let mut batch = Batch::new(model, n, context, opts.kv_cache, 512)?;
        let sample = SampleSpec {
            vocab,
            row: 0,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        };
        let mut best: Option<ParallelResult> = None;
        let mut samples = Vec::new();
        for rep in 0..=opts.reps.max(1) {
            if let Some(p) = opts.progress {
                p(&format!("{n} streams: repetition {rep} of {}", opts.reps.max(1)));
            }
            let prompts: Vec<Vec<u32>> = (0..n)
                .map(|_| (0..opts.n_prompt.max(1)).map(|_| rng.below(vocab)).collect())
                .collect();
            let start = Instant::now();
            let mut firsts = Vec::with_capacity(n);
            for (slot, p) in prompts.iter().enumerate() {
                batch.prefill(slot, 0, &p[..p.len() - 1])?;
            }
            let mut next: Vec<u32> = prompts.iter().map(|p| p[p.len() - 1]).collect();
            let mut pos = prompts[0].len() - 1;
            let mut decode_start = start;
            for step in 0..=opts.n_gen {
                if step == 1 {
                    // The first step samples every stream's first token.
                    decode_start = Instant::now();
                    firsts.extend(std::iter::repeat_n((decode_start - start).as_secs_f64(), n));
                }
                let rows: Vec<Row> = (0..n)
                    .map(|slot| Row {
                        slot,
                        pos,
                        token: next[slot],
                        sample,
                        mask: None,
                    })
                    .collect();
                next = batch.step(&rows)?.into_iter().collect::<Result<_>>()?;
                pos += 1;
            }
            if opts.n_gen == 0 {
                firsts = vec![start.elapsed().as_secs_f64(); n];
            }
            let secs = decode_start.elapsed().as_secs_f64().max(1e-9);
            let r = ParallelResult {
                streams: n,
                ttft: firsts.iter().sum::<f64>() / n as f64,
                stream_tps: opts.n_gen as f64 / secs,
                total_tps: (n * opts.n_gen) as f64 / secs,
                samples_total_tps: vec![],
            };
            // Repetition 0 warms up (pipelines, plans).
            if rep > 0 {
                samples.push(r.total_tps);
            }
            if rep > 0 && best.as_ref().is_none_or(|b| r.total_tps > b.total_tps) {
                best = Some(r);
            }
        }
        out.extend(best.map(|b| ParallelResult {
            samples_total_tps: samples,
            ..b
        }));
    }
    Ok(out)
}

/// One record per stream count of a continuous-batching run: llama-bench's fields for a decode
/// test of `n_gen` tokens per stream (`n_prompt` 0: the prompts, `parallel_prompt` tokens each,
/// are prefilled before the timed steps), with `avg_ts` and the samples the total over all
/// `n_parallel` streams, so `avg_ts` is `n_parallel x n_gen` tokens over `avg_ns`; and
/// `ttft_ms` and `stream_ts` of the best repetition.
pub fn parallel_records(
    m: &ModelInfo,
    machine: &Machine,
    rows: &[ParallelResult],
    opts: &BenchModelOptions,
) -> Vec<Map<String, Value>> {
    let started = record::now();
    rows.iter()
        .map(|r| {
            let mut o = llama_bench_fields(m, machine, opts.kv_cache, started);
            let test_time = o.remove("test_time").unwrap_or_default();
            let tokens = (r.streams * opts.n_gen) as f64;
            let samples_ns: Vec<f64> = r
                .samples_total_tps
                .iter()
                .map(|t| tokens / t.max(1e-12) * 1e9)
                .collect();
            o["n_batch"] = json!(r.streams);
            o["n_ubatch"] = json!(r.streams);
            o.insert("n_prompt".into(), json!(0));
            o.insert("n_gen".into(), json!(opts.n_gen));
            o.insert("n_depth".into(), json!(0));
            o.insert("test_time".into(), test_time);
            o.insert("avg_ns".into(), json!(mean(&samples_ns).round() as u64));
            o.insert("stddev_ns".into(), json!(stddev(&samples_ns).round() as u64));
            o.insert("avg_ts".into(), json!(mean(&r.samples_total_tps)));
            o.insert("stddev_ts".into(), json!(stddev(&r.samples_total_tps)));
            o.insert(
                "samples_ns".into(),
                json!(samples_ns.iter().map(|x| x.round() as u64).collect::<Vec<_>>()),
            );
            o.insert("samples_ts".into(), json!(r.samples_total_tps));
            wgmoe_fields(&mut o, m, machine, opts.kv_cache);
            o.insert("test".into(), json!(format!("tg{} x{}", opts.n_gen, r.streams)));
            o.insert("n_parallel".into(), json!(r.streams));
            o.insert("parallel_prompt".into(), json!(opts.n_prompt));
            o.insert("ttft_ms".into(), json!(r.ttft * 1e3));
            o.insert("stream_ts".into(), json!(r.stream_tps));
            o
        })
        .collect()
}

/// The continuous-batching table in markdown.
pub fn parallel_table(model_name: &str, backend: &str, rows: &[ParallelResult], opts: &BenchModelOptions) -> String {
    let mut s = format!(
        "| model | backend | streams | pp | tg | TTFT ms | t/s per stream | t/s total | x one stream |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    let one = rows.iter().find(|r| r.streams == 1).map(|r| r.total_tps);
    for r in rows {
        s.push_str(&format!(
            "| {model_name} | {backend} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {} |\n",
            r.streams,
            opts.n_prompt,
            opts.n_gen,
            r.ttft * 1e3,
            r.stream_tps,
            r.total_tps,
            one.map_or("-".into(), |o| format!("{:.2}", r.total_tps / o.max(1e-9))),
        ));
    }
    s
}
