//! The kernel benchmark behind `wgmoe bench-kernels` and `cargo bench`: every kernel at the real
//! shapes of the target models, timed on the GPU (timestamp queries; wall clock where absent), with
//! GB/s, GFLOP/s and the fraction of the adapter's measured copy bandwidth (the roofline for
//! decode), and checked: each case's kernel also runs at a reduced shape against an f64 CPU
//! reference ([`crate::bench_reference`]), as llama.cpp's test-backend-ops shares cases between
//! its perf and eval modes. This module measures and returns rows and their records
//! ([`records`]); the binary parses arguments and prints them.

use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::gpu::{Context, DType, GpuTimer, Tensor};
use crate::internals::bench_reference::{self as reference, Check, Probe};
use crate::kernels;
use serde_json::{json, Map, Value};

/// What [`measure`] times.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Model shapes (see [`shape`]): olmoe-1b-7b, qwen3-30b-a3b, deepseek-v2-lite, gpt-oss-20b,
    /// or tiny (a small shape for software adapters and CI).
    pub shapes: Vec<String>,
    /// Weight formats, one row per kernel, shape and format (f16, bf16, f32, q4_k, q8_0, mxfp4,
    /// ...); a matrix whose rows are not whole blocks takes [`DType::for_row`]'s fallback.
    pub dtypes: Vec<DType>,
    /// Minimum GPU time per sample, in milliseconds (a kernel is repeated to reach it).
    pub min_ms: f64,
    /// Timed samples per kernel (mean and sd over them).
    pub repetitions: usize,
    /// Only kernels whose name contains this.
    pub filter: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            shapes: vec!["tiny".into()],
            dtypes: vec![DType::F16],
            min_ms: 20.0,
            repetitions: 5,
            filter: None,
        }
    }
}

/// The dimensions a kernel benchmark needs from one model.
#[derive(Clone, Debug)]
pub struct Shape {
    pub name: String,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub experts: usize,
    pub top_k: usize,
    pub expert_inter: usize,
    pub vocab: usize,
    /// MLA latent rank (DeepSeek); 0 for GQA models.
    pub kv_lora: usize,
    pub rope_dims: usize,
}

/// A synthetic model shape (`model::synthetic`, the one table of real model configs), reduced to
/// what the kernel benchmark needs; the first MoE layer gives the expert dimensions.
pub fn shape(name: &str) -> Result<Shape> {
    use crate::model::config::{Attention, Ffn};
    let cfg = crate::model::synthetic::shape_config(name)?;
    let (experts, top_k, expert_inter) = cfg
        .layers
        .iter()
        .find_map(|l| match &l.ffn {
            Ffn::Moe {
                experts, top_k, inter, ..
            } => Some((*experts, *top_k, *inter)),
            Ffn::Dense { .. } => None,
        })
        .ok_or_else(|| crate::Error::bad_input(format!("shape {name:?} has no MoE layer to benchmark")))?;
    Ok(Shape {
        name: name.to_string(),
        hidden: cfg.hidden,
        heads: cfg.heads,
        kv_heads: cfg.kv_heads,
        head_dim: cfg.head_dim,
        experts,
        top_k,
        expert_inter,
        vocab: cfg.vocab,
        kv_lora: match cfg.attention {
            Attention::Mla { kv_lora_rank, .. } => kv_lora_rank,
            Attention::Gqa { .. } => 0,
        },
        rope_dims: cfg.rope.dims,
    })
}

/// One measured and checked kernel.
#[derive(Clone, Debug)]
pub struct Row {
    pub shape: String,
    /// The weight format asked for.
    pub dtype: DType,
    pub kernel: String,
    pub detail: String,
    /// GPU microseconds of one run, per timed sample.
    pub samples_us: Vec<f64>,
    pub bytes: f64,
    pub flops: f64,
    pub copy_gbs: f64,
    /// The same kernel at a reduced shape against the f64 reference.
    pub check: Check,
    /// The KV-cache precision an attention case reads (None for other kernels).
    pub kv_cache: Option<crate::kernels::attention::KvDtype>,
}

impl Row {
    /// Mean microseconds over the samples.
    pub fn avg_us(&self) -> f64 {
        mean(&self.samples_us)
    }
    /// Sample standard deviation (n - 1) of the microseconds; 0 for one sample.
    pub fn stddev_us(&self) -> f64 {
        stddev(&self.samples_us)
    }
    pub fn gbs(&self) -> f64 {
        self.bytes / self.avg_us() * 1e-3
    }
    pub fn gflops(&self) -> f64 {
        self.flops / self.avg_us() * 1e-3
    }
    /// GB/s as a fraction of the measured copy bandwidth.
    pub fn bw_fraction(&self) -> f64 {
        self.gbs() / self.copy_gbs
    }
}

/// The mean of `v` (0 when empty).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// The sample standard deviation of `v` (n - 1 in the denominator, as llama-bench's); 0 below two
/// values.
pub fn stddev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// A kernel to time: its dispatches, the bytes and FLOPs one run moves and computes, and what its
/// correctness check runs.
pub struct Case {
    pub kernel: &'static str,
    pub detail: String,
    pub dispatches: Vec<Dispatch>,
    pub bytes: f64,
    pub flops: f64,
    pub probe: Probe,
}

/// GPU seconds of one run of `dispatches`, per sample: a warm-up, then `samples` measurements, each
/// repeating the dispatches in one pass until `min_ms` is reached.
pub fn time_samples(
    ctx: &Context,
    timer: &GpuTimer,
    dispatches: &[Dispatch],
    min_ms: f64,
    samples: usize,
) -> Result<Vec<f64>> {
    let run = |reps: usize| {
        timer.time_pass(ctx, |pass| {
            for _ in 0..reps {
                for d in dispatches {
                    d.record(pass);
                }
            }
        })
    };
    run(1)?; // warm-up: pipeline first use, caches
    let once = run(1)?.max(1e-7);
    let reps = ((min_ms * 1e-3 / once).ceil() as usize).clamp(1, 10_000);
    (0..samples).map(|_| Ok(run(reps)? / reps as f64)).collect()
}

/// GPU seconds for one run of `dispatches`: the median of three [`time_samples`].
pub fn time_dispatches(ctx: &Context, timer: &GpuTimer, dispatches: &[Dispatch], min_ms: f64) -> Result<f64> {
    let mut samples = time_samples(ctx, timer, dispatches, min_ms, 3)?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[1])
}

/// Measured copy bandwidth in bytes/s (bytes read + bytes written), over a buffer as large as
/// one binding allows (at most 256 MiB).
pub fn copy_bandwidth(ctx: &Context, timer: &GpuTimer, min_ms: f64) -> Result<f64> {
    let bytes = ctx.caps.max_storage_binding.min(256 << 20) / 16 * 16;
    let src = ctx.storage("copy.src", bytes);
    let dst = ctx.storage("copy.dst", bytes);
    let d = kernels::bench::copy(ctx, &src, &dst, bytes)?;
    let s = time_dispatches(ctx, timer, std::slice::from_ref(&d), min_ms)?;
    Ok(2.0 * bytes as f64 / s)
}

/// GPU time per dispatch in a chain of dependent one-invocation dispatches, in seconds.
pub fn dispatch_overhead(ctx: &Context, timer: &GpuTimer) -> Result<f64> {
    let buf = ctx.storage("chain", 16);
    let chain: Vec<Dispatch> = (0..1000).map(|_| kernels::bench::chain(ctx, &buf)).collect();
    let s = timer.time_pass(ctx, |pass| chain.iter().for_each(|d| d.record(pass)))?;
    let s2 = timer.time_pass(ctx, |pass| chain.iter().for_each(|d| d.record(pass)))?;
    Ok(s.min(s2) / 1000.0)
}

/// A `--dtype` value: any weight format (f16, bf16, f32, q4_k, q8_0, mxfp4, ...).
pub fn parse_dtype(s: &str) -> Result<DType> {
    DType::from_arg(s)
}

/// Prefill rows in the prefill forms of the kernels (llama-bench's pp512).
const PREFILL: usize = 512;
/// Cache positions already filled when decode attention is measured.
const DECODE_CONTEXT: usize = 1024;
/// The position the per-token kernels (rope, sample) run at.
const STEP_POS: u32 = 100;

/// The kernels of one model shape, in decode (T = 1) and prefill (T = 512) forms, each with the
/// probe its correctness check runs.
pub fn cases(ctx: &Context, s: &Shape, dtype: DType) -> Result<Vec<Case>> {
    use kernels::attention::{attention, AttnSpec, KvDtype};
    use kernels::matmul::{matmul, MatmulSpec};
    let mut out = Vec::new();
    let (d, h, kv, hd, e, k, inter, vocab) = (
        s.hidden,
        s.heads,
        s.kv_heads,
        s.head_dim,
        s.experts,
        s.top_k,
        s.expert_inter,
        s.vocab,
    );
    // Matrices take `dtype` (or llama.cpp's fallback for rows that are not whole blocks), vectors
    // a float type, as in a quantised file.
    let rnd = |label: &str, rows: usize, cols: usize, group: usize, seed: u32| {
        kernels::bench::random_weight(ctx, label, dtype.for_row(cols), rows, cols, group, seed, 0.05)
    };
    let vector_dtype = if dtype.is_packed() { DType::F16 } else { dtype };
    let act = |n: usize| Tensor::zeros(ctx, "act", n);
    let x = act(PREFILL * d.max(2 * inter).max(h * hd));
    let y = act(PREFILL * d.max(2 * inter).max(h * hd).max(e));

    let norm_w = kernels::bench::random_weight(ctx, "norm", vector_dtype, 1, d, 1, 1, 0.05)?;
    for t in [1usize, PREFILL] {
        let shape = kernels::rmsnorm::NormShape::new(t, d, 1e-6);
        let n = kernels::rmsnorm::rmsnorm(ctx, shape, &x, None, &norm_w, kernels::rmsnorm::NormOut::To(&y))?;
        out.push(Case {
            kernel: "rmsnorm",
            detail: format!("T={t} D={d}"),
            dispatches: vec![n],
            bytes: (t * d * 8) as f64 + norm_w.data_bytes() as f64,
            flops: (t * d * 4) as f64,
            probe: Probe::Rmsnorm {
                tokens: t,
                dim: d,
                eps: 1e-6,
                gain: vector_dtype,
            },
        });
    }

    // Projections: the attention query (decode and prefill) and the logits head.
    let q_rows = h * hd;
    let wq = rnd("q_proj", q_rows, d, 1, 2)?;
    for t in [1usize, PREFILL] {
        let dispatches = matmul(ctx, MatmulSpec::packed(t, &wq), &x, &wq, None, &y)?;
        out.push(Case {
            kernel: if t == 1 { "matvec" } else { "gemm" },
            detail: format!("q_proj [{q_rows}, {d}] T={t}{}", coop_tag(&dispatches)),
            dispatches,
            bytes: wq.data_bytes() as f64 + (t * (d + q_rows) * 4) as f64,
            flops: (2 * t * q_rows * d) as f64,
            probe: Probe::Matmul {
                rows: q_rows,
                cols: d,
                tokens: t,
            },
        });
    }
    let head = rnd("lm_head", vocab, d, 1, 3)?;
    let logits = act(vocab);
    out.push(Case {
        kernel: "matvec",
        detail: format!("lm_head [{vocab}, {d}] T=1"),
        dispatches: matmul(ctx, MatmulSpec::packed(1, &head), &x, &head, None, &logits)?,
        bytes: head.data_bytes() as f64 + ((d + vocab) * 4) as f64,
        flops: (2 * vocab * d) as f64,
        probe: Probe::Matmul {
            rows: vocab,
            cols: d,
            tokens: 1,
        },
    });

    // Router tail and experts.
    let ids = Tensor::zeros(ctx, "ids", PREFILL * k);
    let weights = Tensor::from_f32(ctx, "weights", &vec![1.0 / k as f32; PREFILL * k]);
    let router_logits = Tensor::from_f32(
        ctx,
        "router_logits",
        &(0..PREFILL * e)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect::<Vec<_>>(),
    );
    for t in [1usize, PREFILL] {
        let spec = kernels::router::RouterSpec {
            tokens: t,
            experts: e,
            top_k: k,
            scoring: kernels::router::Scoring::Softmax,
            groups: None,
            renormalize: true,
            scale: 1.0,
            shared: None,
        };
        out.push(Case {
            kernel: "router",
            detail: format!("E={e} k={k} T={t}"),
            dispatches: vec![kernels::router::router(
                ctx,
                &spec,
                &router_logits,
                None,
                &ids,
                &weights,
            )?],
            bytes: (t * (e + 2 * k) * 4) as f64,
            flops: (t * e * 4) as f64,
            probe: Probe::Router(spec),
        });
    }
    let gate_up = rnd("experts.gate_up", e * 2 * inter, d, 2 * inter, 4)?;
    let down = rnd("experts.down", e * d, inter, d, 5)?;
    ctx.submit(&[&kernels::router::router(
        ctx,
        &kernels::router::RouterSpec {
            tokens: PREFILL,
            experts: e,
            top_k: k,
            scoring: kernels::router::Scoring::Softmax,
            groups: None,
            renormalize: true,
            scale: 1.0,
            shared: None,
        },
        &router_logits,
        None,
        &ids,
        &weights,
    )?]);
    for t in [1usize, PREFILL] {
        let spec = kernels::moe::MoeSpec {
            tokens: t,
            experts: e,
            top_k: k,
            hidden: d,
            inter,
            gate_up: kernels::moe::GateUpLayout::Concatenated,
            act: kernels::moe::Act::Silu,
            accumulate: true,
        };
        let used = (t * k).min(e) as f64;
        let per_expert = (gate_up.data_bytes() + down.data_bytes()) as f64 / e as f64;
        let experts = kernels::moe::Experts {
            gate_up: &gate_up,
            down: &down,
            gate_up_bias: None,
            down_bias: None,
        };
        let dispatches = kernels::moe::moe(ctx, spec, experts, &x, &ids, &weights, &y)?;
        out.push(Case {
            kernel: "moe",
            detail: format!(
                "E={e} k={k} D={d} I={inter} T={t}{}{}",
                if down.dtype != gate_up.dtype {
                    format!(" down {}", down.dtype.name())
                } else {
                    String::new()
                },
                coop_tag(&dispatches)
            ),
            dispatches,
            bytes: used * per_expert + (t * d * 8) as f64,
            flops: (t * k * 6 * inter * d) as f64,
            probe: Probe::Moe(spec),
        });
    }

    // Attention against a filled cache: decode at DECODE_CONTEXT positions, prefill of 512.
    let (kv_row, spec_for): (usize, Box<dyn Fn(usize) -> AttnSpec>) = if s.kv_lora > 0 {
        let (r, dr) = (s.kv_lora, s.rope_dims);
        let scale = (hd as f32).powf(-0.5);
        (
            r + dr,
            Box::new(move |t| AttnSpec::mla(t, h, r, dr, scale, DECODE_CONTEXT + PREFILL)),
        )
    } else {
        (
            kv * hd,
            Box::new(move |t| AttnSpec::gqa(t, h, kv, hd, DECODE_CONTEXT + PREFILL)),
        )
    };
    let q = act(PREFILL * h * kv_row.max(hd));
    let o = act(PREFILL * h * kv_row.max(hd));
    // GQA reads keys and values, MLA one latent row per position.
    let rows_read = if s.kv_lora > 0 { 1 } else { 2 };
    // The cache writer's rows: one KV head, or MLA's latent row (a q8 cache's blocks follow them).
    let writer_row = if s.kv_lora > 0 { kv_row } else { hd };
    for kv_dtype in [KvDtype::F16, KvDtype::F32, KvDtype::Q8] {
        let cache = act(kv_dtype.words((DECODE_CONTEXT + PREFILL) * kv_row, writer_row));
        for (t, pos0) in [(1usize, DECODE_CONTEXT - 1), (PREFILL, 0)] {
            let spec = AttnSpec {
                kv_dtype,
                ..spec_for(t)
            };
            let step = kernels::step::new(ctx, pos0 as u32, t as u32);
            // Query-key pairs visible under the causal mask.
            let pairs = if t == 1 {
                DECODE_CONTEXT
            } else {
                PREFILL * (PREFILL + 1) / 2
            };
            out.push(Case {
                kernel: "attention",
                detail: format!(
                    "{} H={h} T={t} ctx={} {} cache",
                    if s.kv_lora > 0 { "mla" } else { "gqa" },
                    pos0 + t,
                    kv_dtype.name()
                ),
                dispatches: vec![attention(ctx, spec, &q, &cache, &cache, None, &step, &o)?],
                // The cache read once, the ideal a kernel could reach.
                bytes: (pos0 + t) as f64 * (kv_row * rows_read) as f64 * kv_dtype.bits_per_elem(writer_row) / 8.0,
                flops: (2 * h * pairs * (spec.k_dim + spec.v_dim)) as f64,
                probe: Probe::Attention {
                    spec,
                    pos0,
                    shared: s.kv_lora > 0,
                },
            });
        }
    }

    // Small per-token kernels.
    let inv = Tensor::from_f32(ctx, "inv_freq", &vec![1e-2; s.rope_dims / 2]);
    let step = kernels::step::new(ctx, STEP_POS, 1);
    let rope = kernels::rope::RopeSpec::heads(1, h, hd, kernels::rope::RopeLayout::Half, 1.0);
    if s.kv_lora == 0 {
        out.push(Case {
            kernel: "rope",
            detail: format!("H={h} hd={hd} T=1"),
            dispatches: vec![kernels::rope::rope(ctx, &q, rope, &inv, &step)?],
            bytes: (2 * h * hd * 4) as f64,
            flops: (3 * h * hd) as f64,
            probe: Probe::Rope {
                spec: rope,
                pos0: STEP_POS,
            },
        });
    }
    let embed = rnd("embed", vocab, d, 1, 6)?;
    out.push(Case {
        kernel: "embedding",
        detail: format!("V={vocab} D={d} T=1"),
        dispatches: kernels::embedding::embedding(ctx, &embed, &ids, 1, &y)?,
        bytes: (embed.data_bytes() / vocab as u64) as f64 + d as f64 * 4.0,
        flops: 0.0,
        probe: Probe::Embedding { vocab, dim: d },
    });
    let sw = kernels::swiglu::SwigluSpec::new(
        1,
        inter,
        kernels::swiglu::GateUpLayout::Concatenated,
        kernels::swiglu::Act::Silu,
    );
    out.push(Case {
        kernel: "swiglu",
        detail: format!("I={inter} T=1"),
        dispatches: vec![kernels::swiglu::swiglu(ctx, sw, &x, &y)?],
        bytes: (3 * inter * 4) as f64,
        flops: (6 * inter) as f64,
        probe: Probe::Swiglu(sw),
    });
    let token = Tensor::zeros(ctx, "token", 4);
    let am = kernels::sampling::ArgmaxSpec { vocab, row: 0 };
    out.push(Case {
        kernel: "argmax",
        detail: format!("V={vocab}"),
        dispatches: vec![kernels::sampling::argmax(ctx, &logits, am, &token, 0)?],
        bytes: (vocab * 4) as f64,
        flops: vocab as f64,
        probe: Probe::Argmax { vocab },
    });
    let sp = kernels::sampling::SampleSpec {
        vocab,
        row: 0,
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        seed: 1,
    };
    out.push(Case {
        kernel: "sample",
        detail: format!("V={vocab} top-k 40 top-p 0.95"),
        dispatches: vec![kernels::sampling::sample(ctx, &logits, sp, &step, &token, 0)?],
        bytes: (vocab * 4) as f64,
        flops: vocab as f64,
        probe: Probe::Sample {
            spec: sp,
            pos0: STEP_POS,
        },
    });
    Ok(out)
}

/// Every kernel's row, with the adapter and what the rows are measured against.
#[derive(Clone, Debug)]
pub struct Report {
    pub adapter: String,
    pub backend: String,
    /// The driver's name and version.
    pub driver: String,
    /// Whether the times come from GPU timestamps (else the wall clock).
    pub gpu_timestamps: bool,
    /// Measured copy bandwidth, GB/s (0 when nothing was measured).
    pub copy_gbs: f64,
    /// GPU time of one dependent dispatch, in microseconds.
    pub dispatch_us: f64,
    /// When the measurement began (seconds since the epoch).
    pub started: u64,
    pub rows: Vec<Row>,
}

impl Report {
    /// How the times were taken.
    pub fn clock(&self) -> &'static str {
        if self.gpu_timestamps {
            "GPU timestamps"
        } else {
            "wall clock (no timestamp queries)"
        }
    }

    /// The rows whose correctness check failed.
    pub fn failed(&self) -> Vec<&Row> {
        self.rows.iter().filter(|r| !r.check.passed).collect()
    }
}

/// [`measure`], then the dependent-dispatch overhead, with the adapter's description.
pub fn report(ctx: &Context, opts: &BenchOptions) -> Result<Report> {
    let started = crate::record::now();
    let rows = measure(ctx, opts)?;
    let timer = GpuTimer::new(ctx);
    let overhead = dispatch_overhead(ctx, &timer)?;
    Ok(Report {
        adapter: ctx.info.name.clone(),
        backend: ctx.backend_name().to_string(),
        driver: format!("{} {}", ctx.info.driver, ctx.info.driver_info),
        gpu_timestamps: timer.is_gpu(),
        copy_gbs: rows.first().map_or(0.0, |r| r.copy_gbs),
        dispatch_us: overhead * 1e6,
        started,
        rows,
    })
}

/// Time and check every kernel of every requested shape.
pub fn measure(ctx: &Context, opts: &BenchOptions) -> Result<Vec<Row>> {
    if opts.repetitions == 0 {
        return Err(Error::bad_input("--repetitions must be at least 1"));
    }
    let shapes = opts.shapes.iter().map(|name| shape(name)).collect::<Result<Vec<_>>>()?;
    let timer = GpuTimer::new(ctx);
    let copy_gbs = copy_bandwidth(ctx, &timer, opts.min_ms)? * 1e-9;
    let mut rows = Vec::new();
    for s in &shapes {
        for &dtype in &opts.dtypes {
            for case in cases(ctx, s, dtype)? {
                if opts.filter.as_deref().is_some_and(|f| !case.kernel.contains(f)) {
                    continue;
                }
                // Kernels that read no matrix weights are the same in every format: once.
                let reads_weights = matches!(case.kernel, "matvec" | "gemm" | "moe" | "embedding");
                if dtype != opts.dtypes[0] && !reads_weights {
                    continue;
                }
                let secs = time_samples(ctx, &timer, &case.dispatches, opts.min_ms, opts.repetitions)?;
                let check = reference::check(ctx, &case.probe, dtype, None)?;
                let kv_cache = match &case.probe {
                    Probe::Attention { spec, .. } => Some(spec.kv_dtype),
                    _ => None,
                };
                rows.push(Row {
                    kv_cache,
                    shape: s.name.to_string(),
                    dtype,
                    kernel: case.kernel.to_string(),
                    detail: case.detail,
                    samples_us: secs.iter().map(|s| s * 1e6).collect(),
                    bytes: case.bytes,
                    flops: case.flops,
                    copy_gbs,
                    check,
                });
            }
        }
    }
    Ok(rows)
}

/// The records of a report (`wgmoe report` reads them; `record::render` prints them): one flat
/// object per kernel, shape and format, with the build and the machine it ran on.
pub fn records(r: &Report, machine: &crate::record::Machine) -> Vec<Map<String, Value>> {
    use crate::record;
    let test_time = record::iso8601(r.started);
    r.rows
        .iter()
        .map(|k| {
            let mut o = Map::new();
            o.insert("record".into(), json!(record::KERNEL));
            o.insert("build_commit".into(), json!(record::BUILD_COMMIT));
            o.insert("test_time".into(), json!(test_time));
            o.extend(machine.fields());
            o.insert("shape".into(), json!(k.shape));
            o.insert("weight_format".into(), json!(k.dtype.name()));
            o.insert("kv_cache".into(), json!(k.kv_cache.map(|kv| kv.name())));
            o.insert("kernel".into(), json!(k.kernel));
            o.insert("detail".into(), json!(k.detail));
            o.insert("avg_us".into(), json!(k.avg_us()));
            o.insert("stddev_us".into(), json!(k.stddev_us()));
            o.insert("samples_us".into(), json!(k.samples_us));
            o.insert("gbs".into(), json!(k.gbs()));
            o.insert("gflops".into(), json!(k.gflops()));
            o.insert("copy_gbs".into(), json!(k.copy_gbs));
            o.insert("bw_fraction".into(), json!(k.bw_fraction()));
            o.insert("dispatch_us".into(), json!(r.dispatch_us));
            o.insert("nmse".into(), json!(k.check.nmse));
            o.insert("nmse_detail".into(), json!(k.check.detail));
            o.insert("passed".into(), json!(k.check.passed));
            o
        })
        .collect()
}

/// " (coop)" when the dispatches run on cooperative matrices (`WGMOE_COOP_MATRIX=0` turns them off).
fn coop_tag(dispatches: &[Dispatch]) -> &'static str {
    if reference::coop(dispatches) {
        " (coop)"
    } else {
        ""
    }
}
