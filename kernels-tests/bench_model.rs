//! `wgmoe bench` and synthetic models: every shape's footprint against the parameter counts
//! transformers gives the same configs, random-weight models of every architecture (shrunk to what
//! a software adapter affords) that run and give finite logits, the benchmark's rows, JSON and
//! profile on the tiny shape, and clear errors for unknown shapes and shapes that cannot fit.

use serde_json::Value;
use wgmoe::internals::bench_model::{self, BenchModelOptions, ModelChoice, Profile};
use wgmoe::internals::generate::GenerateOptions;
use wgmoe::internals::gpu::{Context, DType};
use wgmoe::internals::model::config::ModelConfig;
use wgmoe::internals::model::plan::LogitRows;
use wgmoe::internals::model::synthetic::{self, SynthOptions};

fn ctx() -> Context {
    Context::from_env().unwrap_or_else(|e| panic!("the benchmark tests need a GPU adapter: {e}"))
}

/// `wgmoe bench --synthetic SHAPE` with its default f16 weights and seed, and `max_bytes` as
/// `--max-weights-gib` gives it.
fn synthetic_choice(shape: &str, max_bytes: Option<u64>) -> ModelChoice {
    ModelChoice::Synthetic {
        shape: shape.into(),
        opts: SynthOptions {
            dtype: DType::F16,
            seed: 1234,
            max_bytes,
            ..Default::default()
        },
    }
}

/// Parameters transformers 5.23 counts for each shape (`from_config` on the meta device with the
/// configs in scripts/hf_bench.py) — the real models' sizes.
const HF_PARAMS: &[(&str, u64)] = &[
    ("olmoe-1b-7b", 6_919_161_856),
    ("qwen3-30b-a3b", 30_532_122_624),
    ("deepseek-v2-lite", 15_706_484_224),
    ("gpt-oss-20b", 20_914_757_184),
    ("mixtral-8x7b", 46_702_792_704),
    ("tiny", 2_496_000),
];

#[test]
fn footprints_match_transformers_and_the_issue() {
    for &(shape, params) in HF_PARAMS {
        let cfg = synthetic::shape_config(shape).unwrap();
        let fp = synthetic::footprint(&cfg, DType::F16);
        assert_eq!(fp.params, params, "{shape}");
        // f16 everywhere but a few f32 vectors (gpt-oss's sinks and stacked q|k|v biases).
        assert!(
            fp.data_bytes >= 2 * params && fp.data_bytes - 2 * params <= params / 10_000,
            "{shape}"
        );
        assert!(fp.gpu_bytes >= fp.data_bytes, "{shape}");
        assert!(
            fp.read_bytes_per_token > 0.0 && fp.read_bytes_per_token < fp.data_bytes as f64,
            "{shape}"
        );
    }
    // The issue's roofline: OLMoE reads 2.36 GB per token, Qwen3-30B-A3B about 6.1 GB (480 tok/s
    // at 2.93 TB/s).
    let olmoe = synthetic::footprint(&synthetic::shape_config("olmoe-1b-7b").unwrap(), DType::F16);
    assert!(
        (olmoe.read_bytes_per_token * 1e-9 - 2.36).abs() < 0.01,
        "{}",
        olmoe.read_bytes_per_token
    );
    let qwen = synthetic::footprint(&synthetic::shape_config("qwen3-30b-a3b").unwrap(), DType::F16);
    let roof = 2.93e12 / qwen.read_bytes_per_token;
    assert!((440.0..520.0).contains(&roof), "{roof}");
    // bf16 is the same size; f32 twice.
    let cfg = synthetic::shape_config("tiny").unwrap();
    assert_eq!(synthetic::footprint(&cfg, DType::BF16).data_bytes, 2 * 2_496_000);
    assert_eq!(synthetic::footprint(&cfg, DType::F32).data_bytes, 4 * 2_496_000);
}

/// Block-quantised synthetic weights: the bytes a token reads shrink with the format (Q4_K is 4.5
/// bits an element, Q8_0 8.5, MXFP4 4.25; vectors and rows that are not whole blocks stay f16),
/// the roofline counts those, and a packed tiny model runs to finite logits on the GPU.
#[test]
fn packed_synthetic_weights() {
    let olmoe = synthetic::shape_config("olmoe-1b-7b").unwrap();
    let qwen = synthetic::shape_config("qwen3-30b-a3b").unwrap();
    for (cfg, dtype, want_gb) in [
        (&olmoe, DType::Q4_K, 2.358 * 4.5 / 16.0),
        (&olmoe, DType::Q8_0, 2.358 * 8.5 / 16.0),
        (&qwen, DType::Q4_K, 6.08 * 4.5 / 16.0),
        (&qwen, DType::MXFP4, 6.08 * 4.25 / 16.0),
    ] {
        let fp = synthetic::footprint(cfg, dtype);
        let gb = fp.read_bytes_per_token * 1e-9;
        // Norms stay f16: a fraction of a percent more than the matrices' share alone.
        assert!(
            (gb / want_gb - 1.0).abs() < 0.02,
            "{} {}: {gb} GB a token, want ~{want_gb}",
            cfg.model_type,
            dtype.name()
        );
        assert!(fp.gpu_bytes as f64 <= 1.02 * fp.data_bytes as f64, "{}", dtype.name());
    }
    let cfg = synthetic::shape_config("tiny").unwrap();
    for dtype in [DType::Q4_K, DType::Q8_0, DType::MXFP4] {
        let fp = synthetic::footprint(&cfg, dtype);
        // Tiny's 128-wide expert rows are not whole K-quant super-blocks: those stay f16.
        let f16 = synthetic::footprint(&cfg, DType::F16).data_bytes;
        assert!(
            fp.data_bytes < f16 * 3 / 4,
            "{}: {} bytes, f16 {f16}",
            dtype.name(),
            fp.data_bytes
        );
        let opts = SynthOptions {
            dtype,
            ..SynthOptions::default()
        };
        let model = synthetic::model(ctx(), "tiny", &opts).unwrap();
        let got = model.weights.gpu_bytes();
        assert!(
            got <= fp.gpu_bytes && got as f64 >= 0.95 * fp.gpu_bytes as f64,
            "{}: {got} vs {}",
            dtype.name(),
            fp.gpu_bytes
        );
        assert_eq!(model.weights.embed.dtype, dtype, "the embedding is packed");
        let logits = model.session(16).forward(&[1, 2, 3], LogitRows::All).unwrap();
        assert!(logits.iter().all(|x| x.is_finite()), "{}", dtype.name());
        assert!(
            logits.iter().fold(0f32, |m, x| m.max(x.abs())) > 1e-3,
            "{}: logits all ~0",
            dtype.name()
        );
    }
}

#[test]
fn shapes_agree_with_the_transformers_script() {
    let script = include_str!("../scripts/hf_bench.py");
    let start = script
        .find("SHAPES = json.loads(r\"\"\"")
        .expect("SHAPES in hf_bench.py")
        + 24;
    let end = start + script[start..].find("\"\"\"").expect("end of SHAPES");
    let py: Value = serde_json::from_str(&script[start..end]).expect("hf_bench.py SHAPES is JSON");
    let rs: Value = serde_json::from_str(synthetic::SHAPES_JSON).unwrap();
    assert_eq!(
        py, rs,
        "scripts/hf_bench.py and src/model/synthetic.rs list different shapes"
    );
    for name in synthetic::SHAPES {
        assert!(rs.get(name).is_some(), "{name}");
    }
}

#[test]
fn synthetic_tiny_runs_and_generates_finite_logits() {
    let ctx = ctx();
    let cfg = synthetic::shape_config("tiny").unwrap();
    let fp = synthetic::footprint(&cfg, DType::F16);
    let model = synthetic::model(ctx, "tiny", &SynthOptions::default()).unwrap();
    // The same structure as a loaded model: ModelWeights counts all but the few small vectors.
    let got = model.weights.gpu_bytes();
    assert!(
        got <= fp.gpu_bytes && got as f64 >= 0.98 * fp.gpu_bytes as f64,
        "{got} vs {}",
        fp.gpu_bytes
    );
    let mut sess = model.session(32);
    let logits = sess.forward(&[1, 2, 3, 4, 5], LogitRows::All).unwrap();
    assert_eq!(logits.len(), 5 * cfg.vocab);
    assert!(logits.iter().all(|x| x.is_finite()));
    let spread = logits.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(spread > 1e-3, "logits are all ~0: {spread}");
    let opts = GenerateOptions {
        max_new_tokens: 6,
        ..Default::default()
    };
    let (ids, _) = sess.generate(&[7], &opts, |_| Ok(())).unwrap();
    assert_eq!(ids.len(), 6);
    assert!(ids.iter().all(|&t| (t as usize) < cfg.vocab));
}

/// A shape's config with every dimension cut to what a software adapter runs in a moment, keeping
/// its architecture (attention kind, router, shared experts, sliding windows, YaRN, biases).
fn shrunk(shape: &str) -> ModelConfig {
    let mut v = synthetic::shape_json(shape).unwrap();
    let o = v.as_object_mut().unwrap();
    let set = |o: &mut serde_json::Map<String, Value>, k: &str, x: u64| {
        if o.contains_key(k) {
            o.insert(k.into(), x.into());
        }
    };
    o.insert("num_hidden_layers".into(), 2.into());
    o.insert("hidden_size".into(), 128.into());
    o.insert("num_attention_heads".into(), 4.into());
    o.insert("vocab_size".into(), 512.into());
    o.insert("intermediate_size".into(), 192.into());
    let mla = o.contains_key("kv_lora_rank");
    set(o, "num_key_value_heads", if mla { 4 } else { 2 });
    set(o, "head_dim", 32);
    set(o, "moe_intermediate_size", 64);
    for k in ["num_experts", "num_local_experts", "n_routed_experts"] {
        set(o, k, 16);
    }
    set(o, "kv_lora_rank", 64);
    set(o, "qk_nope_head_dim", 32);
    set(o, "qk_rope_head_dim", 16);
    set(o, "v_head_dim", 32);
    set(o, "sliding_window", 4);
    ModelConfig::from_value(&v, &format!("shrunk {shape}")).unwrap()
}

#[test]
fn every_architecture_synthesizes_and_runs() {
    let dtypes = [DType::F16, DType::BF16, DType::F32];
    for (i, shape) in synthetic::SHAPES.iter().enumerate() {
        let cfg = shrunk(shape);
        let dtype = dtypes[i % dtypes.len()];
        let fp = synthetic::footprint(&cfg, dtype);
        let opts = SynthOptions {
            dtype,
            seed: 7 + i as u32,
            max_bytes: None,
            ..Default::default()
        };
        let model =
            synthetic::model_from_config(ctx(), cfg.clone(), shape, &opts).unwrap_or_else(|e| panic!("{shape}: {e}"));
        assert!(model.weights.gpu_bytes() <= fp.gpu_bytes, "{shape}");
        let mut sess = model.session(16);
        // Past gpt-oss's window of 4, so the sliding layers mask something.
        let tokens: Vec<u32> = (0..7).map(|t| (t * 37 + i as u32) % 512).collect();
        let logits = sess
            .forward(&tokens, LogitRows::All)
            .unwrap_or_else(|e| panic!("{shape}: {e}"));
        assert!(
            logits.iter().all(|x| x.is_finite()),
            "{shape} ({}): non-finite logits",
            dtype.name()
        );
        let step = sess.forward(&[3], LogitRows::Last).unwrap();
        assert!(step.iter().all(|x| x.is_finite()), "{shape}: non-finite decode logits");
    }
}

/// Dispatches per decode step, counted from the recorded step of each shape (shrunk, 2 layers):
/// besides the layers, the embedding, the normed lm_head, the sampler and the step advance (4).
/// A GQA MoE layer is 8 (normed q|k|v, prepare_qkv, attention, o; normed router, router tail,
/// gate|up, down). An MLA layer's attention is 5 (normed q|kv_a, prepare_mla with the absorbed
/// query, attention, uv, o) and its MoE FFN 4, shared experts included (folded into the routed
/// ones); V2-Lite's first layer is dense (normed gate|up, SwiGLU, down: 3).
#[test]
fn decode_dispatches_per_layer() {
    for (shape, layers) in [
        ("olmoe-1b-7b", 8 + 8),
        ("qwen3-30b-a3b", 8 + 8),
        ("gpt-oss-20b", 8 + 8),
        ("mixtral-8x7b", 8 + 8),
        ("deepseek-v2-lite", (5 + 3) + (5 + 4)),
    ] {
        let opts = SynthOptions {
            dtype: DType::F16,
            seed: 1,
            max_bytes: None,
            ..Default::default()
        };
        let model = synthetic::model_from_config(ctx(), shrunk(shape), shape, &opts).unwrap();
        let mut sess = model.session(8);
        let opts = GenerateOptions {
            max_new_tokens: 2,
            ..Default::default()
        };
        sess.generate(&[1, 2], &opts, |_| Ok(())).unwrap();
        let step = sess.step_dispatches(1).expect("generation recorded the decode step");
        let labels: Vec<&str> = step.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(step.len(), layers + 4, "{shape}: {labels:?}");
    }
}

#[test]
fn bench_tiny_reports_pp_tg_json_and_profile() {
    let args = BenchModelOptions {
        n_prompt: 24,
        n_gen: 6,
        reps: 2,
        profile: true,
        ..Default::default()
    };
    let (model, info) = bench_model::open_model(ctx(), &synthetic_choice("tiny", None), &|_| {}).unwrap();
    let report = bench_model::measure(&model, info, &args).unwrap();
    let names: Vec<String> = report.results.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["pp24", "tg6"]);
    for t in &report.results {
        assert_eq!(t.samples_ts.len(), 2);
        assert!(t.avg_ts() > 0.0 && t.avg_ts().is_finite(), "{t:?}");
        assert!(t.stddev_ts() >= 0.0);
    }
    let tg = &report.results[1];
    let frac = tg.roofline_fraction().unwrap();
    assert!(frac > 0.0 && frac.is_finite(), "{frac}");

    let md = bench_model::markdown(&report);
    assert!(md.contains("| model | size | params | backend | test | t/s |"), "{md}");
    assert!(
        md.contains("| tiny F16 | 4.76 MiB | 2.50 M | ") && md.contains(" (wgmoe) | pp24 | "),
        "{md}"
    );
    assert!(md.contains("tg6") && md.contains(" ± "), "{md}");
    let summary = bench_model::summary(&report).join("\n");
    for k in ["adapter:", "backend:", "driver:", "weight format: f16", "roofline:"] {
        assert!(summary.contains(k), "{summary}");
    }

    let rows = bench_model::records(&report);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for k in [
            "model_type",
            "model_size",
            "model_n_params",
            "n_prompt",
            "n_gen",
            "avg_ns",
            "stddev_ns",
            "avg_ts",
            "stddev_ts",
            "samples_ns",
            "samples_ts",
            "backends",
            "gpu_info",
            "adapter",
            "driver",
            "weight_format",
        ] {
            assert!(r.get(k).is_some(), "JSON row lacks {k}: {r:?}");
        }
        assert_eq!(r["model_n_params"], 2_496_000);
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        (rows[0]["n_prompt"].as_u64(), rows[0]["n_gen"].as_u64()),
        (Some(24), Some(0))
    );
    assert_eq!(
        (rows[1]["n_prompt"].as_u64(), rows[1]["n_gen"].as_u64()),
        (Some(0), Some(6))
    );
    assert!(rows[0]["roofline_fraction"].is_null());
    assert!(rows[1]["roofline_fraction"].as_f64().unwrap() > 0.0);

    match report.profile.as_ref().unwrap() {
        Profile::Missing(why) => {
            assert!(!model.ctx.caps.timestamps_in_passes);
            assert!(why.contains("timestamp"), "{why}");
        }
        Profile::Measured {
            dispatches,
            step_us,
            pass_us,
            families,
            ..
        } => {
            let sum: f64 = families.iter().map(|f| f.us).sum();
            let count: usize = families.iter().map(|f| f.dispatches).sum();
            assert_eq!(count, *dispatches);
            assert!((sum - step_us).abs() <= 1e-6 * step_us.max(1.0), "{sum} vs {step_us}");
            assert!(*step_us > 0.0 && *pass_us > 0.0);
            // The timestamps between dispatches cost little: the step takes about as long
            // without them (loose: lavapipe shares 2 cores with the build).
            assert!(
                step_us / pass_us > 0.4 && step_us / pass_us < 2.5,
                "{step_us} vs {pass_us}"
            );
            let fams: Vec<&str> = families.iter().map(|f| f.family.as_str()).collect();
            for f in ["matvec", "attention", "moe", "router"] {
                assert!(fams.contains(&f), "no {f} in {fams:?}");
            }
            let table = bench_model::profile_table(report.profile.as_ref().unwrap());
            assert!(table.contains("| family | dispatches | us/token | share |"), "{table}");
        }
    }
}

#[test]
fn family_names() {
    assert_eq!(bench_model::family("moe.gate_up_decode"), "moe");
    assert_eq!(bench_model::family("matvec_sg"), "matvec");
    assert_eq!(bench_model::family("rmsnorm_inplace"), "rmsnorm");
    assert_eq!(bench_model::family("attention"), "attention");
}

#[test]
fn unknown_shape_is_a_clear_error() {
    let e = synthetic::shape_config("gpt-5").unwrap_err().to_string();
    assert!(
        e.contains("gpt-5") && e.contains("olmoe-1b-7b") && e.contains("tiny"),
        "{e}"
    );
    let e = bench_model::open_model(ctx(), &synthetic_choice("gpt-5", None), &|_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("gpt-5"), "{e}");
    let e = bench_model::parse_dtype("q4").unwrap_err().to_string();
    assert!(e.contains("q4") && e.contains("f16"), "{e}");
}

#[test]
fn shapes_that_cannot_fit_are_clear_errors() {
    // Mixtral-8x7B in f16 is ~93 GB: more than an 80 GB H100.
    let cfg = synthetic::shape_config("mixtral-8x7b").unwrap();
    let fp = synthetic::footprint(&cfg, DType::F16);
    assert!(
        fp.gpu_bytes as f64 > 92e9 && (fp.gpu_bytes as f64) < 95e9,
        "{}",
        fp.gpu_bytes
    );
    let h100 = 80 * (1u64 << 30);
    let e = synthetic::check_fits("synthetic shape mixtral-8x7b", DType::F16, fp.gpu_bytes, Some(h100))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mixtral-8x7b") && e.contains("86.") && e.contains("GiB") && e.contains("80.00 GiB"),
        "{e}"
    );
    assert!(synthetic::check_fits("olmoe", DType::F16, 14 << 30, Some(h100)).is_ok());
    // Refused before anything is allocated, through the real entry points.
    let opts = SynthOptions {
        max_bytes: Some(1 << 20),
        ..Default::default()
    };
    let e = synthetic::model(ctx(), "tiny", &opts).err().unwrap().to_string();
    assert!(e.contains("tiny") && e.contains("MiB") && e.contains("1.00 MiB"), "{e}");
    let e = bench_model::open_model(ctx(), &synthetic_choice("mixtral-8x7b", Some(h100)), &|_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("mixtral-8x7b") && e.contains("80.00 GiB"), "{e}");
}

#[cfg(feature = "cli")]
#[test]
fn cli_bench_json() {
    use std::process::Command;
    let out = Command::new(env!("CARGO_BIN_EXE_wgmoe"))
        .args([
            "bench",
            "--synthetic",
            "tiny",
            "-p",
            "8",
            "-n",
            "3",
            "-r",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{stderr}"));
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert!(
        stderr.contains("adapter:") && stderr.contains("weight format: f16"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_wgmoe"))
        .args(["bench", "--synthetic", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown synthetic shape \"nope\""));
}

/// `-d`: both tests start from a filled KV cache and say so in their names and JSON.
#[test]
fn depth_runs_on_a_filled_cache() {
    let args = BenchModelOptions {
        n_prompt: 8,
        n_gen: 4,
        n_depth: 530,
        reps: 1,
        ..Default::default()
    };
    let (model, info) = bench_model::open_model(ctx(), &synthetic_choice("tiny", None), &|_| {}).unwrap();
    let report = bench_model::measure(&model, info, &args).unwrap();
    let names: Vec<String> = report.results.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["pp8 @ d530", "tg4 @ d530"]);
    let rows = bench_model::records(&report);
    assert!(rows.iter().all(|r| r["n_depth"] == 530), "{rows:?}");
    assert!(report.results.iter().all(|t| t.avg_ts() > 0.0));
}

/// On an adapter that runs on the CPU (lavapipe here), weights are host memory, which the OS
/// overcommits and then takes back by killing the process: a model that needs more than the host
/// has available is an error before anything is allocated.
#[test]
fn cpu_adapters_are_limited_to_host_memory() {
    let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
    assert_eq!(
        wgmoe::internals::gpu::host_available_memory(meminfo),
        Some(20_000_000 * 1024)
    );
    assert_eq!(wgmoe::internals::gpu::host_available_memory("MemTotal: 5 kB\n"), None);

    let ctx = ctx();
    if ctx.info.device_type != wgpu::DeviceType::Cpu {
        // A GPU's own memory size is not reported through wgpu.
        assert_eq!(ctx.memory_limit(), None);
        return;
    }
    let limit = ctx.memory_limit().expect("a CPU adapter on Linux has a limit");
    let total: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap()
        * 1024;
    assert!(limit > 0 && limit <= total, "{limit} of {total}");
    // Mixtral-8x7B in f32 needs about 186 GB.
    let opts = SynthOptions {
        dtype: DType::F32,
        ..Default::default()
    };
    let needed = synthetic::footprint(&synthetic::shape_config("mixtral-8x7b").unwrap(), DType::F32).gpu_bytes;
    assert!(
        needed > limit,
        "this test needs a host with less than {needed} bytes available"
    );
    let e = synthetic::model(ctx, "mixtral-8x7b", &opts).err().unwrap().to_string();
    assert!(e.contains("mixtral-8x7b") && e.contains("host memory"), "{e}");
}

/// A quantised file's roofline counts the bytes of the formats it loads in (packed), not f16's:
/// SmolLM2-135M's Q4_1 GGUF reads its 92 MiB a token, not the 257 MiB of f16.
#[test]
fn file_roofline_counts_packed_bytes() {
    let gguf =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        gguf.exists(),
        "{} is missing: run scripts/fetch_smollm2.sh",
        gguf.display()
    );
    let (model, info) = bench_model::open_model(
        ctx(),
        &ModelChoice::File {
            path: gguf,
            load: Default::default(),
        },
        &|_| {},
    )
    .unwrap();
    let file = model.file_tensor_bytes.unwrap() as f64;
    let f16 = synthetic::footprint(&model.config, DType::F16);
    let read = info.footprint.read_bytes_per_token;
    assert!(
        (read / file - 1.0).abs() < 0.01,
        "{read} bytes a token for a {file}-byte file"
    );
    assert!(
        read < f16.read_bytes_per_token / 2.5,
        "{read} vs f16's {}",
        f16.read_bytes_per_token
    );
}

#[cfg(feature = "cli")]
#[test]
fn cli_bench_parallel_reports_every_stream_count() {
    use std::process::Command;
    let out = Command::new(env!("CARGO_BIN_EXE_wgmoe"))
        .args([
            "bench",
            "--synthetic",
            "tiny",
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "1",
            "--parallel",
            "1,3",
        ])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| tiny"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for (row, streams) in rows.iter().zip(["1", "3"]) {
        assert_eq!(row[3], streams, "{stdout}");
        // TTFT, per-stream and total tokens/s are positive, and total = streams x per stream.
        let num = |i: usize| row[i].parse::<f64>().unwrap_or_else(|_| panic!("{stdout}"));
        assert!(num(6) > 0.0 && num(7) > 0.0 && num(8) > 0.0, "{stdout}");
        let n: f64 = streams.parse().unwrap();
        assert!((num(8) - n * num(7)).abs() <= 0.02 * num(8) + 0.01, "{stdout}");
    }
}
