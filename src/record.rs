//! Benchmark records that travel: what every `wgmoe bench` and `wgmoe bench-kernels` record says
//! about the build and the machine it ran on, and the formats they are written in (llama-bench's:
//! JSON, JSONL, CSV, SQL), so that files from many machines and runs can be merged
//! (`wgmoe report`) and read by llama.cpp's own tools (`scripts/compare-llama-bench.py`).
//!
//! A record is a flat JSON object. Its `record` key says what it is ([`BENCH`], [`KERNEL`]);
//! llama-bench's records have none.

use crate::error::{Error, Result};
use crate::gpu::{backend_name, Context};
use serde_json::{json, Map, Value};

/// The `record` value of a `wgmoe bench` test.
pub const BENCH: &str = "wgmoe.bench";
/// The `record` value of a `wgmoe bench-kernels` kernel.
pub const KERNEL: &str = "wgmoe.kernel";

/// The git commit wgmoe was built from (`git rev-parse --short HEAD`), "unknown" outside a checkout.
pub const BUILD_COMMIT: &str = env!("WGMOE_BUILD_COMMIT");
/// Commits up to [`BUILD_COMMIT`] (`git rev-list --count HEAD`), 0 outside a checkout.
pub const BUILD_NUMBER: &str = env!("WGMOE_BUILD_NUMBER");
/// The wgpu version Cargo.lock resolved.
pub const WGPU_VERSION: &str = env!("WGMOE_WGPU_VERSION");

/// The build, the host and the adapter a measurement ran on.
#[derive(Clone, Debug)]
pub struct Machine {
    pub adapter: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub device_type: String,
    pub backend: String,
    pub driver: String,
    pub driver_info: String,
    pub os: String,
    pub cpu_info: String,
    /// The subgroup sizes the adapter may use (0, 0 without subgroups).
    pub subgroup_min: u32,
    pub subgroup_max: u32,
    pub f16: bool,
    /// Side of the cooperative-matrix tile wgmoe uses, when it uses one.
    pub coop_matrix: Option<u32>,
    /// Opened with WebGPU's default limits and no optional features (`--portable`).
    pub portable: bool,
}

impl Machine {
    /// The machine behind an open device.
    pub fn of(ctx: &Context) -> Self {
        let (i, c) = (&ctx.info, &ctx.caps);
        Self {
            adapter: i.name.clone(),
            vendor_id: i.vendor,
            device_id: i.device,
            device_type: format!("{:?}", i.device_type),
            backend: backend_name(i.backend).to_string(),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            os: os(),
            cpu_info: cpu_info(),
            subgroup_min: if c.subgroups { c.subgroup_min } else { 0 },
            subgroup_max: if c.subgroups { c.subgroup_max } else { 0 },
            f16: c.f16,
            coop_matrix: c.coop_f16,
            portable: c.portable,
        }
    }

    /// The record fields, in the order records print them (a record that already has
    /// llama-bench's `build_number` and `cpu_info` keeps them where llama-bench puts them).
    pub fn fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("build_number".into(), json!(BUILD_NUMBER.parse::<u64>().unwrap_or(0)));
        m.insert("cpu_info".into(), json!(self.cpu_info));
        m.insert("adapter".into(), json!(self.adapter));
        m.insert("vendor_id".into(), json!(format!("0x{:04x}", self.vendor_id)));
        m.insert("device_id".into(), json!(format!("0x{:04x}", self.device_id)));
        m.insert("device_type".into(), json!(self.device_type));
        m.insert("backend".into(), json!(self.backend));
        m.insert("driver".into(), json!(self.driver));
        m.insert("driver_info".into(), json!(self.driver_info));
        m.insert("os".into(), json!(self.os));
        m.insert("wgpu_version".into(), json!(WGPU_VERSION));
        m.insert("wgmoe_version".into(), json!(env!("CARGO_PKG_VERSION")));
        m.insert("subgroup_min".into(), json!(self.subgroup_min));
        m.insert("subgroup_max".into(), json!(self.subgroup_max));
        m.insert("f16".into(), json!(self.f16));
        m.insert(
            "coop_matrix".into(),
            json!(self.coop_matrix.map_or("none".to_string(), |s| format!("{s}x{s}"))),
        );
        m.insert("portable".into(), json!(self.portable));
        m
    }
}

/// The operating system: its name, the distribution where /etc/os-release says, and the kernel
/// release on Linux ("linux x86_64, Debian GNU/Linux 12 (bookworm), kernel 6.1.0-18-amd64").
pub fn os() -> String {
    let mut s = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
    let pretty = std::fs::read_to_string("/etc/os-release").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
    });
    if let Some(p) = pretty {
        s += &format!(", {p}");
    }
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        s += &format!(", kernel {}", k.trim());
    }
    s
}

/// The host CPU's brand string (llama-bench's `cpu_info`): /proc/cpuinfo's `model name` on Linux,
/// else the architecture.
pub fn cpu_info() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (llama-bench's `test_time`, RFC 3339).
pub fn iso8601(secs: u64) -> String {
    crate::tokenizer::strftime("%Y-%m-%dT%H:%M:%SZ", secs as i64)
}

/// How records are printed: llama-bench's `-o` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A markdown table for people (each command has its own).
    Md,
    /// A JSON array of records.
    Json,
    /// One JSON record per line.
    Jsonl,
    /// A header of field names, then one row of quoted values per record.
    Csv,
    /// `CREATE TABLE IF NOT EXISTS`, then one `INSERT` per record (`| sqlite3 file.sqlite`).
    Sql,
}

impl std::str::FromStr for Output {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Output::Md,
            "json" => Output::Json,
            "jsonl" => Output::Jsonl,
            "csv" => Output::Csv,
            "sql" => Output::Sql,
            other => {
                return Err(Error::bad_input(format!(
                    "output format {other:?} is not one of md, json, jsonl, csv, sql"
                )))
            }
        })
    }
}

/// Records as JSON, JSONL, CSV or SQL (`table` names the SQL table; llama-bench's is
/// `llama_bench`); `Md` gives the JSON array too (each command prints its own table instead). CSV and SQL take the first record's fields as columns and leave out arrays
/// (the samples), as llama-bench does; booleans there are 0 and 1.
pub fn render(records: &[Map<String, Value>], output: Output, table: &str) -> String {
    let columns: Vec<&String> = records
        .first()
        .map(|r| r.iter().filter(|(_, v)| !v.is_array()).map(|(k, _)| k).collect())
        .unwrap_or_default();
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => u8::from(*b).to_string(),
        Some(other) => other.to_string(),
    };
    match output {
        Output::Md | Output::Json => {
            let array = Value::Array(records.iter().cloned().map(Value::Object).collect());
            serde_json::to_string_pretty(&array).unwrap_or_default() + "\n"
        }
        Output::Jsonl => records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect(),
        Output::Csv => {
            let quote = |s: String| format!("\"{}\"", s.replace('"', "\"\""));
            let mut s = columns.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",") + "\n";
            for r in records {
                let row: Vec<String> = columns.iter().map(|c| quote(cell(r.get(*c)))).collect();
                s += &(row.join(",") + "\n");
            }
            s
        }
        Output::Sql => {
            let sql_type = |v: Option<&Value>| match v {
                Some(Value::Bool(_)) => "INTEGER",
                Some(Value::Number(n)) if n.is_f64() => "REAL",
                Some(Value::Number(_)) => "INTEGER",
                _ => "TEXT",
            };
            // A column's type is its first non-null value's.
            let typed = |c: &str| records.iter().filter_map(|r| r.get(c)).find(|v| !v.is_null());
            let defs: Vec<String> = columns
                .iter()
                .map(|c| format!("  {c} {}", sql_type(typed(c))))
                .collect();
            let mut s = format!("CREATE TABLE IF NOT EXISTS {table} (\n{}\n);\n\n", defs.join(",\n"));
            let names = columns.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
            for r in records {
                // A missing value is NULL, not '' (which SQLite's AVG would count as 0).
                let values: Vec<String> = columns
                    .iter()
                    .map(|c| match r.get(*c) {
                        None | Some(Value::Null) => "NULL".to_string(),
                        v => format!("'{}'", cell(v).replace('\'', "''")),
                    })
                    .collect();
                s += &format!("INSERT INTO {table} ({names}) VALUES ({});\n", values.join(", "));
            }
            s
        }
    }
}

/// Records read back from text in any of [`render`]'s JSON forms (an array, one object, or one
/// object per line), or llama-bench's; `name` is for errors.
pub fn parse(text: &str, name: &str) -> Result<Vec<Map<String, Value>>> {
    let bad = |what: String| Error::bad_input(format!("{name}: {what}"));
    let values: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(one) => vec![one],
        // Not one JSON document: JSON lines, numbered as the file numbers them.
        Err(whole) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    bad(format!(
                        "neither one JSON document ({whole}) nor JSON lines (line {}: {e})",
                        i + 1
                    ))
                })
            })
            .collect::<Result<_>>()?,
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok(m),
            other => Err(bad(format!("record {} is {other}, not an object", i + 1))),
        })
        .collect()
}

/// llama.cpp's architecture name (`LLM_ARCH_NAMES`) of a transformers `model_type`.
pub fn llama_arch(model_type: &str) -> &str {
    match model_type {
        "mixtral" => "llama",
        "qwen2_moe" => "qwen2moe",
        "qwen3_moe" => "qwen3moe",
        "deepseek_v2" | "deepseek_v3" => "deepseek2",
        "gpt_oss" => "gpt-oss",
        other => other,
    }
}

/// llama.cpp's size name (`llm_type_name`) for a model of this architecture and shape, as its
/// `load_hparams` picks it (src/llama-model.cpp, 2026); "?B" where llama.cpp has no case (its own
/// fallback).
pub fn llama_size(config: &crate::model::config::ModelConfig, experts: usize) -> &'static str {
    let (layers, hidden, heads) = (config.layers.len(), config.hidden, config.heads);
    // Mixtral is llama.cpp's llama arch: without its two 8-expert cases, the dense table.
    let arch = match config.model_type.as_str() {
        "mixtral" if !(experts == 8 && matches!(layers, 32 | 56)) => "llama",
        other => other,
    };
    match (arch, layers) {
        ("mixtral", 32) => "8x7B",
        ("mixtral", 56) => "8x22B",
        ("llama", 16 | 22) => "1B",
        ("llama", 26 | 28) => "3B",
        ("llama", 30) => "256M",
        ("llama", 32) if config.vocab == 49152 => "3B",
        ("llama", 32) if config.vocab < 40000 => "7B",
        ("llama", 32 | 36) => "8B",
        ("llama", 40) => "13B",
        ("llama", 48) => "34B",
        ("llama", 60) => "30B",
        ("llama", 80) if heads == config.kv_heads => "65B",
        ("llama", 80) => "70B",
        ("qwen2", 24) if hidden == 1024 => "0.5B",
        ("qwen2", 24) => "1B",
        ("qwen2", 28) if hidden == 1536 => "1.5B",
        ("qwen2", 28 | 32) => "7B",
        ("qwen2", 36) => "3B",
        ("qwen2", 40) if heads == 20 => "4B",
        ("qwen2", 40) => "13B",
        ("qwen2", 48) => "14B",
        ("qwen2", 64) => "32B",
        ("qwen2", 80) => "70B",
        ("qwen3", 28) if hidden == 1024 => "0.6B",
        ("qwen3", 28) => "1.7B",
        ("qwen3", 36) if hidden == 2560 => "4B",
        ("qwen3", 36) => "8B",
        ("qwen3", 40) => "14B",
        ("qwen3", 64) => "32B",
        ("qwen2_moe", 24) => "A2.7B",
        ("qwen2_moe", 28) => "57B.A14B",
        ("qwen3_moe", 48) => "30B.A3B",
        ("qwen3_moe", 94) => "235B.A22B",
        ("olmoe", 16) => "A1.7B",
        ("deepseek_v2" | "deepseek_v3", 27) => "16B",
        ("deepseek_v2" | "deepseek_v3", 47) => "30B.A3B",
        ("deepseek_v2" | "deepseek_v3", 60) => "236B",
        ("deepseek_v2" | "deepseek_v3", 61) => "671B",
        ("gpt_oss", 24) => "20B",
        ("gpt_oss", 36) => "120B",
        _ => "?B",
    }
}

/// llama.cpp's name of a model file type (`llama_model_ftype_name`) for a model whose weights
/// are all `dtype` (wgmoe's synthetic models): the k-quants take the Medium mix's name, the
/// usual file of that format.
pub fn llama_ftype_of(dtype: crate::gpu::DType) -> &'static str {
    match dtype.name() {
        "f32" => "all F32",
        "f16" => "F16",
        "bf16" => "BF16",
        "q4_0" => "Q4_0",
        "q4_1" => "Q4_1",
        "q5_0" => "Q5_0",
        "q5_1" => "Q5_1",
        "q8_0" => "Q8_0",
        "q2_k" => "Q2_K - Medium",
        "q3_k" => "Q3_K - Medium",
        "q4_k" => "Q4_K - Medium",
        "q5_k" => "Q5_K - Medium",
        "q6_k" => "Q6_K",
        "iq4_nl" => "IQ4_NL - 4.5 bpw",
        "iq4_xs" => "IQ4_XS - 4.25 bpw",
        "mxfp4" => "MXFP4 MoE",
        _ => "unknown",
    }
}

/// llama.cpp's name of a file's type: a GGUF file's `general.file_type`, else (safetensors) the
/// name of the format most of its weights have.
pub fn llama_ftype_of_file(path: &std::path::Path, main: crate::gpu::DType) -> String {
    let gguf = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let file_type = gguf
        .then(|| crate::model::gguf::GgufFile::open(path).ok())
        .flatten()
        .and_then(|f| f.get("general.file_type").and_then(|v| v.as_u64()));
    match file_type.and_then(llama_ftype_name) {
        Some(name) => name.to_string(),
        None => llama_ftype_of(main).to_string(),
    }
}

/// `llama_model_ftype_name` of a `llama_ftype` number (include/llama.h).
pub fn llama_ftype_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
        0 => "all F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K - Medium",
        11 => "Q3_K - Small",
        12 => "Q3_K - Medium",
        13 => "Q3_K - Large",
        14 => "Q4_K - Small",
        15 => "Q4_K - Medium",
        16 => "Q5_K - Small",
        17 => "Q5_K - Medium",
        18 => "Q6_K",
        21 => "Q2_K - Small",
        25 => "IQ4_NL - 4.5 bpw",
        30 => "IQ4_XS - 4.25 bpw",
        32 => "BF16",
        38 => "MXFP4 MoE",
        _ => return None,
    })
}

/// The whole description, llama.cpp's `llama_model_desc`: "qwen3moe 30B.A3B Q4_K - Medium".
pub fn llama_model_desc(config: &crate::model::config::ModelConfig, ftype: &str) -> String {
    use crate::model::config::Ffn;
    let experts = config
        .layers
        .iter()
        .find_map(|l| match &l.ffn {
            Ffn::Moe { experts, .. } => Some(*experts),
            Ffn::Dense { .. } => None,
        })
        .unwrap_or(0);
    format!(
        "{} {} {ftype}",
        llama_arch(&config.model_type),
        llama_size(config, experts)
    )
}
