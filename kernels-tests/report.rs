//! Benchmark records that travel: `wgmoe bench` writes every field llama-bench writes (and the
//! keys llama.cpp's compare script requires), in each of llama-bench's formats, with the build and
//! the machine; `wgmoe report` merges runs of several devices and llama-bench's own JSON into one
//! table per workload and SVG charts with a series per device.
//!
//! The runs here are lavapipe with and without `--portable`; `report_from_ci_devices` writes
//! target/report/ (report.md, tg.svg, pp.svg, kernels.svg), the report the README shows.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use wgmoe::internals::gpu::DType;
use wgmoe::internals::model::synthetic;
use wgmoe::internals::record;

type Record = Map<String, Value>;

fn wgmoe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgmoe"));
    c.env(
        "XDG_RUNTIME_DIR",
        std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
    );
    c
}

/// Run the binary; its stdout, or a panic with its stderr.
fn run(args: &[&str]) -> String {
    let out = wgmoe().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wgmoe {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn json_records(text: &str) -> Vec<Record> {
    serde_json::from_str::<Vec<Record>>(text).unwrap_or_else(|e| panic!("not a JSON array of records: {e}\n{text}"))
}

/// A tiny-model benchmark on lavapipe: pp16 and tg8, 3 repetitions.
fn bench_tiny(portable: bool, output: &str) -> String {
    bench_tiny_on(&[if portable { "--portable" } else { "" }], output)
}

/// [`bench_tiny`] with these global options (`--device gl`, `--portable`).
fn bench_tiny_on(options: &[&str], output: &str) -> String {
    let mut args: Vec<&str> = options.iter().copied().filter(|o| !o.is_empty()).collect();
    args.extend([
        "bench",
        "--synthetic",
        "tiny",
        "-p",
        "16",
        "-n",
        "8",
        "-r",
        "3",
        "-o",
        output,
    ]);
    run(&args)
}

/// The keys scripts/compare-llama-bench.py (llama.cpp, 2026) requires of every JSON, JSONL or
/// CSV row: its LLAMA_BENCH_KEY_PROPERTIES plus "build_commit", "test_time" and "avg_ts"
/// (LlamaBenchData.check_keys); it refuses a file that lacks any.
const COMPARE_LLAMA_BENCH_KEYS: &[&str] = &[
    "cpu_info",
    "gpu_info",
    "backends",
    "n_gpu_layers",
    "tensor_buft_overrides",
    "model_filename",
    "model_type",
    "n_batch",
    "n_ubatch",
    "embeddings",
    "cpu_mask",
    "cpu_strict",
    "poll",
    "n_threads",
    "type_k",
    "type_v",
    "use_mmap",
    "no_kv_offload",
    "split_mode",
    "main_gpu",
    "tensor_split",
    "flash_attn",
    "n_prompt",
    "n_gen",
    "n_depth",
    "build_commit",
    "test_time",
    "avg_ts",
];

/// llama-bench's fields in its output order (tools/llama-bench/llama-bench.cpp,
/// `test::get_fields()`, 2026), then the samples its JSON adds.
const LLAMA_BENCH_FIELDS: &[&str] = &[
    "build_commit",
    "build_number",
    "cpu_info",
    "gpu_info",
    "backends",
    "model_filename",
    "model_type",
    "model_size",
    "model_n_params",
    "n_batch",
    "n_ubatch",
    "n_threads",
    "cpu_mask",
    "cpu_strict",
    "poll",
    "type_k",
    "type_v",
    "n_gpu_layers",
    "n_cpu_moe",
    "split_mode",
    "main_gpu",
    "no_kv_offload",
    "flash_attn",
    "devices",
    "tensor_split",
    "tensor_buft_overrides",
    "load_mode",
    "embeddings",
    "no_op_offload",
    "no_host",
    "fit_target",
    "fit_min_ctx",
    "n_prompt",
    "n_gen",
    "n_depth",
    "test_time",
    "avg_ns",
    "stddev_ns",
    "avg_ts",
    "stddev_ts",
    "samples_ns",
    "samples_ts",
];

/// llama-bench's field types (`test::get_field_type`): these are JSON integers, these booleans,
/// avg_ts and stddev_ts numbers, the rest strings.
const LLAMA_BENCH_INTS: &[&str] = &[
    "build_number",
    "n_batch",
    "n_ubatch",
    "n_threads",
    "poll",
    "model_size",
    "model_n_params",
    "n_gpu_layers",
    "main_gpu",
    "n_prompt",
    "n_gen",
    "n_depth",
    "avg_ns",
    "stddev_ns",
    "no_op_offload",
    "n_cpu_moe",
    "fit_target",
    "fit_min_ctx",
    "flash_attn",
];
const LLAMA_BENCH_BOOLS: &[&str] = &["no_kv_offload", "cpu_strict", "embeddings", "no_host"];

fn git_head() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A record's `samples_ts`.
fn samples_ts(r: &Record) -> Vec<f64> {
    r["samples_ts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// `wgmoe bench -o json`: llama-bench's fields in its order with its types, the keys the compare
/// script requires, the git commit, llama.cpp's model name, samples that give the mean, and the
/// machine.
#[test]
fn bench_json_has_llama_bench_fields_and_the_machine() {
    let recs = json_records(&bench_tiny(false, "json"));
    assert_eq!(recs.len(), 2);
    for r in &recs {
        for k in COMPARE_LLAMA_BENCH_KEYS.iter().chain(LLAMA_BENCH_FIELDS) {
            assert!(r.contains_key(*k), "no {k:?} in {r:?}");
        }
        // llama-bench's fields come first, in its order.
        let keys: Vec<&str> = r
            .keys()
            .map(String::as_str)
            .filter(|k| LLAMA_BENCH_FIELDS.contains(k))
            .collect();
        assert_eq!(keys, LLAMA_BENCH_FIELDS, "llama-bench's fields out of order");
        for k in LLAMA_BENCH_INTS {
            assert!(r[*k].is_u64(), "{k} = {} is not an integer", r[*k]);
        }
        for k in LLAMA_BENCH_BOOLS.iter().chain(&["use_mmap"]) {
            assert!(r[*k].is_boolean(), "{k} = {} is not a boolean", r[*k]);
        }
        assert!(r["avg_ts"].is_f64() && r["stddev_ts"].is_f64());
        // avg_ts is the mean of the samples, which are 3 repetitions.
        let samples = samples_ts(r);
        assert_eq!(samples.len(), 3);
        assert!((mean(&samples) - r["avg_ts"].as_f64().unwrap()).abs() < 1e-9 * mean(&samples));
        // The tiny shape has no llama.cpp size: llama.cpp's own "?B".
        assert_eq!(r["model_type"], "qwen3moe ?B F16");
        assert_eq!(r["record"], record::BENCH);
        if let Some(head) = git_head() {
            assert_eq!(r["build_commit"], head.as_str(), "the binary's commit is not HEAD's");
        }
        let test_time = r["test_time"].as_str().unwrap();
        assert!(test_time.len() == 20 && test_time.ends_with('Z'), "{test_time}");
        // The machine: lavapipe's ids, backend, driver, wgpu, subgroups, f16, no --portable.
        assert_eq!(r["gpu_info"], r["adapter"]);
        for k in [
            "vendor_id",
            "device_id",
            "backend",
            "driver",
            "driver_info",
            "os",
            "wgpu_version",
        ] {
            assert!(!r[k].as_str().unwrap().is_empty(), "{k} is empty");
        }
        assert!(r["wgpu_version"].as_str().unwrap().starts_with("30."));
        assert_eq!(r["portable"], false);
        assert!(r["subgroup_max"].as_u64().unwrap() >= r["subgroup_min"].as_u64().unwrap());
        assert!(r["f16"].is_boolean() && r["coop_matrix"].is_string());
        assert_eq!(
            (r["weight_format"].as_str(), r["kv_cache"].as_str()),
            (Some("f16"), Some("f16"))
        );
    }
    assert_eq!(
        (recs[0]["n_prompt"].as_u64(), recs[0]["n_gen"].as_u64()),
        (Some(16), Some(0))
    );
    assert_eq!(
        (recs[1]["n_prompt"].as_u64(), recs[1]["n_gen"].as_u64()),
        (Some(0), Some(8))
    );
    assert!(recs[1]["roofline_fraction"].as_f64().unwrap() > 0.0);
}

/// llama.cpp's model description of the real shapes, as llama-bench prints it for those models
/// (llama.cpp's arch names, `load_hparams`' size by layer count, `llama_model_ftype_name`).
#[test]
fn model_types_are_spelled_as_llama_cpp_spells_them() {
    let cases = [
        ("qwen3-30b-a3b", DType::Q4_K, "qwen3moe 30B.A3B Q4_K - Medium"),
        ("olmoe-1b-7b", DType::F16, "olmoe A1.7B F16"),
        ("gpt-oss-20b", DType::MXFP4, "gpt-oss 20B MXFP4 MoE"),
        ("deepseek-v2-lite", DType::Q4_0, "deepseek2 16B Q4_0"),
        ("mixtral-8x7b", DType::Q8_0, "llama 8x7B Q8_0"),
        ("tiny", DType::BF16, "qwen3moe ?B BF16"),
    ];
    for (shape, dtype, want) in cases {
        let config = synthetic::shape_config(shape).unwrap();
        assert_eq!(record::llama_model_desc(&config, record::llama_ftype_of(dtype)), want);
    }
    // GGUF files say their type: llama_ftype numbers from include/llama.h.
    for (ftype, name) in [
        (15, "Q4_K - Medium"),
        (7, "Q8_0"),
        (38, "MXFP4 MoE"),
        (1, "F16"),
        (0, "all F32"),
    ] {
        assert_eq!(record::llama_ftype_name(ftype), Some(name));
    }
    assert_eq!(record::llama_ftype_name(99), None);
}

/// JSONL has the JSON's records a line each; CSV's header and rows and SQL's table and inserts
/// carry the same values (read back by Python's csv and sqlite3 modules, as llama.cpp's compare
/// script reads them).
#[test]
fn bench_writes_every_llama_bench_format() {
    let dir = out_dir("report-formats");
    let jsonl = bench_tiny(false, "jsonl");
    let lines: Vec<&str> = jsonl.lines().collect();
    assert_eq!(lines.len(), 2, "{jsonl}");
    for l in &lines {
        let r: Record = serde_json::from_str(l).unwrap();
        assert!(COMPARE_LLAMA_BENCH_KEYS.iter().all(|k| r.contains_key(*k)), "{l}");
    }
    let csv = bench_tiny(false, "csv");
    let sql = bench_tiny(false, "sql");
    std::fs::write(dir.join("bench.csv"), &csv).unwrap();
    std::fs::write(dir.join("bench.sql"), &sql).unwrap();
    let script = r#"
import csv, json, sqlite3, sys
keys = json.loads(sys.argv[3])
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 2, rows
assert all(k in rows[0] for k in keys), set(keys) - set(rows[0])
assert [r["n_prompt"] for r in rows] == ["16", "0"] and [r["n_gen"] for r in rows] == ["0", "8"]
assert all(float(r["avg_ts"]) > 0 for r in rows)
db = sqlite3.connect(":memory:")
db.executescript(open(sys.argv[2]).read())
got = db.execute("SELECT n_prompt, n_gen, avg_ts, use_mmap, portable FROM llama_bench").fetchall()
assert len(got) == 2 and got[0][:2] == (16, 0) and got[1][:2] == (0, 8), got
assert all(g[2] > 0 and g[3] == 1 and g[4] == 0 for g in got), got
# A value a test does not have is NULL (pp has no roofline), not '' that AVG would count as 0.
roof = [r[0] for r in db.execute("SELECT roofline_ts FROM llama_bench")]
assert roof[0] is None and roof[1] > 0, roof
cols = [c[1] for c in db.execute("PRAGMA table_info(llama_bench)")]
assert all(k in cols for k in keys), set(keys) - set(cols)
print("ok")
"#;
    let keys = serde_json::to_string(COMPARE_LLAMA_BENCH_KEYS).unwrap();
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("bench.csv"))
        .arg(dir.join("bench.sql"))
        .arg(keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n--- csv:\n{csv}\n--- sql:\n{sql}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One llama-bench JSON record as llama-bench prints it (its printer's layout: fields in
/// `get_fields` order, integers bare, booleans as true/false, avg_ts with six decimals, then the
/// samples), for a model and device of our choosing.
fn llama_bench_sample(model_type: &str, n_prompt: u64, n_gen: u64, samples_ns: &[u64]) -> String {
    let tokens = (n_prompt + n_gen) as f64;
    let ts: Vec<f64> = samples_ns.iter().map(|&ns| 1e9 * tokens / ns as f64).collect();
    let avg_ns = samples_ns.iter().sum::<u64>() / samples_ns.len() as u64;
    let avg_ts = mean(&ts);
    let sd_ts = (ts.iter().map(|t| (t - avg_ts).powi(2)).sum::<f64>() / (ts.len() - 1) as f64).sqrt();
    format!(
        r#"  {{
    "build_commit": "5e4a8b3c",
    "build_number": 7212,
    "cpu_info": "AMD EPYC 9654 96-Core Processor",
    "gpu_info": "NVIDIA H200",
    "backends": "CUDA",
    "model_filename": "/models/model.gguf",
    "model_type": "{model_type}",
    "model_size": 4992000,
    "model_n_params": 2496000,
    "n_batch": 2048,
    "n_ubatch": 512,
    "n_threads": 96,
    "cpu_mask": "0x0",
    "cpu_strict": false,
    "poll": 50,
    "type_k": "f16",
    "type_v": "f16",
    "n_gpu_layers": 99,
    "n_cpu_moe": 0,
    "split_mode": "layer",
    "main_gpu": 0,
    "no_kv_offload": false,
    "flash_attn": -1,
    "devices": "auto",
    "tensor_split": "0.00",
    "tensor_buft_overrides": "none",
    "load_mode": "mmap",
    "embeddings": false,
    "no_op_offload": 0,
    "no_host": false,
    "fit_target": 0,
    "fit_min_ctx": 0,
    "n_prompt": {n_prompt},
    "n_gen": {n_gen},
    "n_depth": 0,
    "test_time": "2026-11-30T12:00:00Z",
    "avg_ns": {avg_ns},
    "stddev_ns": 1000,
    "avg_ts": {avg_ts:.6},
    "stddev_ts": {sd_ts:.6},
    "samples_ns": [ {} ],
    "samples_ts": [ {} ]
  }}"#,
        samples_ns.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        ts.iter().map(|t| format!("{t:.6}")).collect::<Vec<_>>().join(", "),
    )
}

/// The cells of a markdown table under `## heading`: header cells, then each row's cells.
fn table(md: &str, heading: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let start = md
        .find(&format!("## {heading}\n"))
        .unwrap_or_else(|| panic!("no table {heading:?} in\n{md}"));
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = md[start..].lines().skip(1).skip_while(|l| !l.starts_with('|'));
    let header = cells(lines.next().unwrap());
    let rows = lines.skip(1).take_while(|l| l.starts_with('|')).map(cells).collect();
    (header, rows)
}

/// `wgmoe report FILES -o MD --svg DIR`, run in MD's folder with the files under it named relative
/// to it, as a user names them; the markdown.
fn report(files: &[PathBuf], md: &Path, svg: &Path) -> String {
    let _ = std::fs::remove_dir_all(svg);
    let here = md.parent().unwrap();
    let name = |p: &Path| p.strip_prefix(here).unwrap_or(p).display().to_string();
    let mut args: Vec<String> = vec!["report".into()];
    args.extend(files.iter().map(|f| name(f)));
    args.extend(["-o".into(), name(md), "--svg".into(), name(svg)]);
    let out = wgmoe().args(&args).current_dir(here).output().unwrap();
    assert!(
        out.status.success(),
        "wgmoe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(md).unwrap()
}

/// The chart's `<text>` labels and, per bar colour, how many bars have it; the chart must parse
/// as XML.
fn chart(path: &Path) -> (Vec<String>, std::collections::BTreeMap<String, usize>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: not XML: {e}", path.display()));
    let texts = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect();
    let mut by_fill = std::collections::BTreeMap::new();
    for n in doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("opacity") == Some("0.9"))
    {
        *by_fill.entry(n.attribute("fill").unwrap().to_string()).or_default() += 1;
    }
    (texts, by_fill)
}

/// A chart holds one series per device: each device's name once (its legend entry), and as many
/// colours as devices, each on one bar per category plus its legend swatch.
fn assert_series(path: &Path, devices: &[String], categories: usize) {
    let (texts, by_fill) = chart(path);
    for d in devices {
        assert_eq!(
            texts.iter().filter(|t| *t == d).count(),
            1,
            "{}: legend of {d:?} in {texts:?}",
            path.display()
        );
    }
    assert_eq!(by_fill.len(), devices.len(), "{}: {by_fill:?}", path.display());
    assert!(
        by_fill.values().all(|&n| n == categories + 1),
        "{}: {by_fill:?}",
        path.display()
    );
}

/// The report of the devices CI has (lavapipe, lavapipe with --portable, and llvmpipe through
/// wgpu's GL backend where EGL finds it), the one the README shows: target/report/report.md and
/// its charts. Its tables hold each run's numbers, a column per
/// device; the charts hold a series per device. Then round trip with llama.cpp: a llama-bench JSON
/// for the same model lands in the same table, in a column of its own, with its own numbers.
#[test]
fn report_from_ci_devices() {
    let dir = out_dir("report");
    let fast_text = bench_tiny(false, "json");
    let portable_text = bench_tiny(true, "json");
    let kernels_text = run(&[
        "bench-kernels",
        "--shapes",
        "tiny",
        "-r",
        "3",
        "--min-ms",
        "5",
        "-o",
        "json",
    ]);
    let gl_text = run(&["devices"])
        .contains("backend gl")
        .then(|| bench_tiny_on(&["--device", "gl"], "json"));
    let mut inputs = vec![
        ("lavapipe.json", &fast_text),
        ("lavapipe-portable.json", &portable_text),
    ];
    inputs.extend(gl_text.as_ref().map(|t| ("llvmpipe-gl.json", t)));
    inputs.push(("lavapipe-kernels.json", &kernels_text));
    let mut files = Vec::new();
    for (name, text) in inputs {
        files.push(dir.join(name));
        std::fs::write(dir.join(name), text).unwrap();
    }
    let md = report(&files, &dir.join("report.md"), &dir.join("svg"));

    let fast = json_records(&fast_text);
    let portable = json_records(&portable_text);
    let adapter = fast[0]["adapter"].as_str().unwrap();
    let gl = gl_text.as_deref().map(json_records);
    let mut devices = vec![
        format!("{adapter} (vulkan) · wgmoe"),
        format!("{adapter} (vulkan, portable) · wgmoe"),
    ];
    if let Some(gl) = &gl {
        devices.push(format!("{} (gl) · wgmoe", gl[0]["adapter"].as_str().unwrap()));
    }
    let runs: Vec<&Vec<Record>> = [&fast, &portable].into_iter().chain(gl.as_ref()).collect();
    let cell = |r: &Record| {
        format!(
            "{:.2} ± {:.2}",
            r["avg_ts"].as_f64().unwrap(),
            r["stddev_ts"].as_f64().unwrap()
        )
    };
    let check_model_table = |md: &str, extra: &[String]| {
        let (header, rows) = table(md, "qwen3moe ?B F16");
        let want: Vec<String> = ["test".to_string()]
            .into_iter()
            .chain(devices.iter().cloned())
            .chain(extra.iter().cloned())
            .collect();
        assert_eq!(header, want);
        assert_eq!(rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["pp16", "tg8"]);
        for (i, row) in rows.iter().enumerate() {
            assert!(row[1].starts_with(&cell(&fast[i])), "{row:?} vs {:?}", fast[i]);
            assert!(row[2].starts_with(&cell(&portable[i])), "{row:?} vs {:?}", portable[i]);
        }
        // wgmoe's decode cells give the share of the roofline.
        assert!(
            rows[1][1].contains("% of roofline)") && rows[1][2].contains("% of roofline)"),
            "{:?}",
            rows[1]
        );
        rows
    };
    check_model_table(&md, &[]);
    // The devices table says what each machine is.
    let (_, machines) = table(&md, "Devices");
    assert_eq!(machines.len(), devices.len(), "{machines:?}");
    assert!(
        machines.iter().all(|d| d[2].contains("wgpu_version: 30.")),
        "{machines:?}"
    );
    // The kernel table: a row per measured kernel, GB/s with the share of the copy bandwidth.
    let kernels = json_records(&kernels_text);
    assert!(kernels.len() >= 10, "{kernels:?}");
    let (_, krows) = table(&md, "Kernels: tiny, f16 weights");
    assert_eq!(krows.len(), kernels.len(), "{krows:?}");
    for (k, row) in kernels.iter().zip(&krows) {
        assert_eq!(row[0], k["kernel"].as_str().unwrap());
        assert!(
            row[2].starts_with(&format!("{:.1} (", k["gbs"].as_f64().unwrap())),
            "{row:?} vs {k:?}"
        );
    }
    assert_series(&dir.join("svg").join("tg.svg"), &devices, 1);
    assert_series(&dir.join("svg").join("pp.svg"), &devices, 1);
    assert_series(&dir.join("svg").join("kernels.svg"), &devices[..1], kernels.len());

    // Round trip with llama-bench's JSON for the same model name.
    let llama_text = format!(
        "[\n{},\n{}\n]\n",
        llama_bench_sample("qwen3moe ?B F16", 16, 0, &[2_000_000, 2_100_000, 1_950_000]),
        llama_bench_sample("qwen3moe ?B F16", 0, 8, &[30_000_000, 31_000_000, 29_500_000])
    );
    let trip = out_dir("report-roundtrip");
    std::fs::write(trip.join("llama-bench.json"), &llama_text).unwrap();
    files.push(trip.join("llama-bench.json"));
    let md = report(&files, &trip.join("report.md"), &trip.join("svg"));
    let llama_column = "NVIDIA H200 (CUDA) · llama.cpp".to_string();
    let rows = check_model_table(&md, std::slice::from_ref(&llama_column));
    let llama = json_records(&llama_text);
    for (row, r) in rows.iter().zip(&llama) {
        assert_eq!(row[1 + runs.len()], cell(r), "{row:?}");
    }
    let all: Vec<String> = devices.iter().cloned().chain([llama_column]).collect();
    assert_series(&trip.join("svg").join("tg.svg"), &all, 1);
    assert_series(&trip.join("svg").join("pp.svg"), &all, 1);

    // Two runs of one device and build pool their samples into one cell.
    let pool = out_dir("report-pooled");
    let twice = [dir.join("lavapipe.json"), dir.join("lavapipe.json")];
    let md = report(&twice, &pool.join("report.md"), &pool.join("svg"));
    let (header, rows) = table(&md, "qwen3moe ?B F16");
    assert_eq!(header.len(), 2, "{header:?}");
    for (row, r) in rows.iter().zip(&fast) {
        let samples = samples_ts(r);
        let both: Vec<f64> = samples.iter().chain(&samples).copied().collect();
        let m = mean(&both);
        let sd = (both.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (both.len() - 1) as f64).sqrt();
        assert!(row[1].starts_with(&format!("{m:.2} ± {sd:.2}")), "{row:?} vs {both:?}");
    }
}

/// Comma lists run every test in llama-bench's order (per depth: the prefills, then the decodes),
/// each record with its own numbers; a run with another KV precision gets a column of its own.
#[test]
fn comma_lists_run_every_test_in_llama_bench_order() {
    let text = run(&[
        "bench",
        "--synthetic",
        "tiny",
        "-p",
        "8,16",
        "-n",
        "4",
        "-d",
        "0,8",
        "-r",
        "1",
        "--kv-cache",
        "q8",
        "-o",
        "json",
    ]);
    let recs = json_records(&text);
    let tests: Vec<(u64, u64, u64)> = recs
        .iter()
        .map(|r| {
            (
                r["n_prompt"].as_u64().unwrap(),
                r["n_gen"].as_u64().unwrap(),
                r["n_depth"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tests,
        [(8, 0, 0), (16, 0, 0), (0, 4, 0), (8, 0, 8), (16, 0, 8), (0, 4, 8)]
    );
    assert!(recs.iter().all(|r| r["type_k"] == "q8_0" && r["kv_cache"] == "q8"));
    assert!(recs.iter().all(|r| r["avg_ts"].as_f64().unwrap() > 0.0));
    let dir = out_dir("report-kv");
    std::fs::write(dir.join("q8.json"), &text).unwrap();
    let md = report(&[dir.join("q8.json")], &dir.join("report.md"), &dir.join("svg"));
    let (header, rows) = table(&md, "qwen3moe ?B F16");
    assert!(header[1].ends_with(" · wgmoe, KV q8"), "{header:?}");
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["pp8", "pp16", "tg4", "pp8 @ d8", "pp16 @ d8", "tg4 @ d8"]);
}

/// `--parallel` records: llama-bench's decode fields with the total over the streams, every
/// repetition a sample.
#[test]
fn parallel_records_carry_every_repetition() {
    let recs = json_records(&run(&[
        "bench",
        "--synthetic",
        "tiny",
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "2",
        "--parallel",
        "1,2",
        "-o",
        "json",
    ]));
    assert_eq!(recs.len(), 2);
    for (r, streams) in recs.iter().zip([1u64, 2]) {
        assert_eq!(r["n_parallel"].as_u64(), Some(streams));
        assert_eq!((r["n_prompt"].as_u64(), r["n_gen"].as_u64()), (Some(0), Some(4)));
        assert_eq!(r["parallel_prompt"].as_u64(), Some(8));
        let samples = samples_ts(r);
        assert_eq!(samples.len(), 2);
        let avg = r["avg_ts"].as_f64().unwrap();
        assert!((mean(&samples) - avg).abs() <= 1e-9 * avg, "{r:?}");
        // avg_ns is the time of n_parallel x n_gen tokens at each sample's rate.
        let ns: Vec<f64> = samples.iter().map(|t| (streams * 4) as f64 / t * 1e9).collect();
        assert!(
            (mean(&ns) - r["avg_ns"].as_f64().unwrap()).abs() <= 1.0 + 1e-6 * mean(&ns),
            "{r:?}"
        );
        assert_eq!(r["test"], format!("tg4 x{streams}").as_str());
    }
}

/// Files that are not records are clear errors that name the file.
#[test]
fn report_refuses_what_is_not_records() {
    let dir = out_dir("report-errors");
    let bad = dir.join("notes.json");
    std::fs::write(&bad, "{\"hello\": 1}\n").unwrap();
    let out = wgmoe().args(["report"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no benchmark records") && err.contains("notes.json"),
        "{err}"
    );
    std::fs::write(&bad, "[1, 2]").unwrap();
    let out = wgmoe().args(["report"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("notes.json") && err.contains("not an object"),
        "{err}"
    );
    let out = wgmoe().args(["report"]).arg(dir.join("missing.json")).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}
