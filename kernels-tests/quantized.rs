//! Quantised checkpoints laid out like the released ones, served dequantised by the safetensors
//! source: gpt-oss MXFP4 experts and DeepSeek-V3 FP8 (128x128 block scales). Fixtures from
//! `scripts/make_quantized_fixtures.py`, whose reference is transformers fp32 eager on the
//! dequantised values. Plus the errors for malformed quantised tensors (no GPU needed for those).

use safetensors::SafeTensors;
mod common;
use common::fixtures::*;
use std::path::{Path, PathBuf};
use wgmoe::internals::model::config::ModelConfig;
use wgmoe::internals::model::safetensors::Safetensors;
use wgmoe::internals::model::source::{SrcDType, TensorSource};
use wgmoe::internals::model::Model;

// The reference runs fp32 math on exactly the values the loader serves (bf16), so only f32
// summation order differs: the f32 bound of kernels-tests/models.rs holds.
const BOUND: f32 = 1e-3;

#[test]
fn gpt_oss_mxfp4() {
    parity("gpt_oss_mxfp4", BOUND);
}

#[test]
fn deepseek_v3_fp8() {
    parity("deepseek_v3_fp8", BOUND);
}

/// The experts of every MoE layer, as their weights' dtypes (gate|up, down).
pub fn expert_dtypes(model: &Model) -> Vec<(wgmoe::internals::gpu::DType, wgmoe::internals::gpu::DType)> {
    use wgmoe::internals::model::weights::FfnWeights;
    model
        .weights
        .layers
        .iter()
        .filter_map(|l| match &l.ffn {
            FfnWeights::Moe { gate_up, down, .. } => Some((gate_up.dtype, down.dtype)),
            _ => None,
        })
        .collect()
}

/// gpt-oss's MXFP4 experts stay packed on the GPU (repacked into GGUF's block layout, the same
/// bytes), and expand to bf16 only when asked.
#[test]
fn gpt_oss_mxfp4_experts_stay_packed() {
    use wgmoe::internals::gpu::DType;
    for (packed, want) in [(true, DType::MXFP4), (false, DType::BF16)] {
        let ctx = wgmoe::internals::gpu::Context::from_env().expect("needs a GPU adapter");
        let opts = wgmoe::internals::model::LoadOptions {
            packed,
            ..Default::default()
        };
        let model = Model::load_with(ctx, &fixture("gpt_oss_mxfp4"), &opts, &|_, _| {}).unwrap();
        let dtypes = expert_dtypes(&model);
        assert!(
            !dtypes.is_empty() && dtypes.iter().all(|&d| d == (want, want)),
            "packed {packed}: {dtypes:?}"
        );
        if packed {
            // Blocks and scales: the file's bytes for the experts, held as they are.
            let experts: u64 = model
                .weights
                .layers
                .iter()
                .filter_map(|l| match &l.ffn {
                    wgmoe::internals::model::weights::FfnWeights::Moe { gate_up, down, .. } => {
                        Some(gate_up.data_bytes() + down.data_bytes())
                    }
                    _ => None,
                })
                .sum();
            let src = Safetensors::open_dir(&fixture("gpt_oss_mxfp4")).unwrap();
            let file: u64 = ["gate_up_proj", "down_proj"]
                .iter()
                .flat_map(|t| (0..3).map(move |l| format!("model.layers.{l}.mlp.experts.{t}")))
                .map(|n| src.get_transposed(&n).unwrap().unwrap().bytes.len() as u64)
                .sum();
            assert_eq!(experts, file);
        }
    }
}

#[test]
fn configs_with_quantization_config_parse() {
    for name in ["gpt_oss_mxfp4", "deepseek_v3_fp8"] {
        let path = fixture(name).join("config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("quantization_config"));
        ModelConfig::from_json(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The source serves bf16 tensors under the bf16 checkpoint's names and hides the siblings.
#[test]
fn source_serves_dequantised_tensors_under_plain_names() {
    let src = Safetensors::open_dir(&fixture("gpt_oss_mxfp4")).unwrap();
    let names = src.names();
    let quant_sibling = |n: &String| n.ends_with("_blocks") || n.ends_with("_scales") || n.ends_with("_scale_inv");
    assert!(!names.iter().any(quant_sibling), "{names:?}");
    for l in 0..3 {
        for (t, shape) in [("gate_up_proj", [4, 64, 64]), ("down_proj", [4, 32, 64])] {
            let n = format!("model.layers.{l}.mlp.experts.{t}");
            assert!(names.contains(&n) && src.contains(&n), "{n}");
            let t = src.get(&n).unwrap();
            assert_eq!(
                (t.dtype.clone(), t.shape.clone()),
                (SrcDType::BF16, shape.to_vec()),
                "{n}"
            );
            // MXFP4 values: +-{0, .5, 1, 1.5, 2, 3, 4, 6} times a power of two.
            for v in t.to_f32().unwrap() {
                let m = v.abs() / 2f32.powi(v.abs().log2().floor() as i32);
                assert!(v == 0.0 || [1.0, 1.5].contains(&m), "{n}: {v}");
            }
        }
    }

    let src = Safetensors::open_dir(&fixture("deepseek_v3_fp8")).unwrap();
    let names = src.names();
    assert!(!names.iter().any(quant_sibling), "{names:?}");
    for (n, shape) in [
        ("model.layers.0.mlp.gate_proj.weight", [200, 64]),
        ("model.layers.0.mlp.down_proj.weight", [64, 200]),
        ("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", [24, 64]),
        ("model.layers.2.mlp.experts.7.up_proj.weight", [24, 64]),
    ] {
        assert!(names.iter().any(|x| x == n), "{n}");
        let t = src.get(n).unwrap();
        assert_eq!(
            (t.dtype.clone(), t.shape.clone()),
            (SrcDType::BF16, shape.to_vec()),
            "{n}"
        );
        assert!(t.to_f32().unwrap().iter().all(|v| v.is_finite()), "{n}");
    }
    // Not quantised: served as stored.
    assert_eq!(src.get("model.embed_tokens.weight").unwrap().dtype, SrcDType::BF16);
    assert_eq!(
        src.get("model.layers.1.mlp.gate.e_score_correction_bias")
            .unwrap()
            .dtype,
        SrcDType::F32
    );
}

/// FP8 dequantisation against values recomputed here from the raw file bytes, on the weight whose
/// scale grid is 2 x 1 (rows 128.. use the second scale).
#[test]
fn fp8_rows_use_their_tile_scale() {
    let dir = fixture("deepseek_v3_fp8");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("model.layers.0.mlp.gate_proj.weight").unwrap();
    let s: Vec<f32> = bytemuck::pod_collect_to_vec(
        st.tensor("model.layers.0.mlp.gate_proj.weight_scale_inv")
            .unwrap()
            .data(),
    );
    assert_eq!(s.len(), 2);
    let src = Safetensors::open_dir(&dir).unwrap();
    let got = src
        .get("model.layers.0.mlp.gate_proj.weight")
        .unwrap()
        .to_f32()
        .unwrap();
    for (k, (&q, &g)) in w.data().iter().zip(&got).enumerate() {
        let want = wgmoe::internals::model::quant::fp8_e4m3fn_to_f32(q) * s[(k / 64) / 128];
        assert_eq!(g, half::bf16::from_f32(want).to_f32(), "element {k}");
    }
}

// ---- malformed checkpoints ----------------------------------------------------------------------

/// A copy of a fixture's config.json and model.safetensors with the tensors edited by `edit`.
fn broken_copy(name: &str, tag: &str, edit: impl FnOnce(&mut Vec<FixtureTensor>)) -> PathBuf {
    edited_copy(name, &format!("quantized-{tag}"), &["config.json"], edit)
}

fn get_err(dir: &Path, name: &str) -> String {
    match Safetensors::open_dir(dir).unwrap().get(name) {
        Ok(_) => panic!("{name}: served from a malformed checkpoint"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(e: &str, parts: &[&str]) {
    eprintln!("error: {e}");
    for p in parts {
        assert!(e.contains(p), "error {e:?} does not mention {p:?}");
    }
}

#[test]
fn truncated_mxfp4_scales_are_an_error() {
    let t = "model.layers.1.mlp.experts.gate_up_proj_scales";
    let dir = broken_copy("gpt_oss_mxfp4", "truncated", |ts| {
        let s = ts.iter_mut().find(|x| x.0 == t).unwrap();
        s.2 = vec![4, 64, 1]; // [E, 2I, D/32] with D/32 = 2 cut to 1
        s.3.truncate(4 * 64);
    });
    let e = get_err(&dir, "model.layers.1.mlp.experts.gate_up_proj");
    assert_names(&e, &[t, "model.safetensors", "[4, 64, 1]", "[4, 64, 2]"]);
    // The same through the model loader (needs an adapter; lavapipe does).
    if let Ok(ctx) = wgmoe::internals::gpu::Context::from_env() {
        let e = Model::load(ctx, &dir, &|_, _| {})
            .err()
            .expect("loaded a malformed checkpoint")
            .to_string();
        assert_names(&e, &[t, "model.safetensors"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_mxfp4_scales_are_an_error() {
    let t = "model.layers.2.mlp.experts.down_proj_scales";
    let dir = broken_copy("gpt_oss_mxfp4", "missing", |ts| ts.retain(|x| x.0 != t));
    let e = get_err(&dir, "model.layers.2.mlp.experts.down_proj");
    assert_names(
        &e,
        &[
            t,
            "model.layers.2.mlp.experts.down_proj_blocks",
            "model.safetensors",
            "missing",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_mxfp4_blocks_are_an_error() {
    let t = "model.layers.0.mlp.experts.down_proj_blocks";
    let dir = broken_copy("gpt_oss_mxfp4", "blocks", |ts| {
        let s = ts.iter_mut().find(|x| x.0 == t).unwrap();
        s.2 = vec![4, 64, 2, 8]; // 8 bytes a block instead of 16
    });
    let e = get_err(&dir, "model.layers.0.mlp.experts.down_proj");
    assert_names(&e, &[t, "model.safetensors", "[4, 64, 2, 8]"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_fp8_scale_is_an_error() {
    let w = "model.layers.1.self_attn.kv_b_proj.weight";
    let dir = broken_copy("deepseek_v3_fp8", "missing", |ts| {
        ts.retain(|x| x.0 != format!("{w}_scale_inv"))
    });
    let e = get_err(&dir, w);
    assert_names(&e, &[w, "weight_scale_inv", "model.safetensors", "missing"]);
    if let Ok(ctx) = wgmoe::internals::gpu::Context::from_env() {
        let e = Model::load(ctx, &dir, &|_, _| {})
            .err()
            .expect("loaded a malformed checkpoint")
            .to_string();
        assert_names(&e, &[w, "weight_scale_inv"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn misshapen_fp8_scale_is_an_error() {
    let w = "model.layers.0.mlp.down_proj.weight";
    let dir = broken_copy("deepseek_v3_fp8", "shape", |ts| {
        let s = ts.iter_mut().find(|x| x.0 == format!("{w}_scale_inv")).unwrap();
        s.2 = vec![2, 1]; // [ceil(64/128), ceil(200/128)] = [1, 2] transposed
    });
    let e = get_err(&dir, w);
    assert_names(
        &e,
        &[&format!("{w}_scale_inv"), "[2, 1]", "[1, 2]", "model.safetensors"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// `--quantize`: 16/32-bit checkpoints quantised at load (src/model/quantize.rs)
// ---------------------------------------------------------------------------------------------

fn gguf_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("kernels-tests/gguf-data")
        .join(name)
}

/// Q8_0, Q4_0 and Q5_0 blocks bit for bit as gguf-py (ggml's reference) writes them, on normal and
/// heavy-tailed values, a zero block and values whose quotients are exact halves
/// (`scripts/quantize_reference.py`).
#[test]
fn q8_0_q4_0_q5_0_quantisers_match_gguf_py_bit_for_bit() {
    use wgmoe::internals::gpu::DType;
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gguf_data("quantize.json")).unwrap()).unwrap();
    let blob = std::fs::read(gguf_data("quantize.bin")).unwrap();
    let n = index["count"].as_u64().unwrap() as usize;
    let values: Vec<f32> = blob[..4 * n]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (name, dtype) in [("Q8_0", DType::Q8_0), ("Q4_0", DType::Q4_0), ("Q5_0", DType::Q5_0)] {
        let (o, l) = (
            index[name]["offset"].as_u64().unwrap() as usize,
            index[name]["length"].as_u64().unwrap() as usize,
        );
        let got = wgmoe::internals::model::quantize::quantize(dtype, &values).unwrap();
        assert_eq!(got.len(), l, "{name}");
        let bad = got.iter().zip(&blob[o..o + l]).position(|(a, b)| a != b);
        assert!(
            bad.is_none(),
            "{name}: first differing byte {bad:?} (block {})",
            bad.unwrap_or(0) / (l / (n / 32))
        );
    }
}

/// Q4_K's scale and min search (no independent quantiser exists: gguf-py does not write Q4_K)
/// must do what it is for: reconstruct normal and heavy-tailed values, through the bit-exact
/// dequantiser, better than Q4_0 does (4.5 bits against 4.5), within 1% NMSE.
#[test]
fn q4_k_quantiser_beats_q4_0() {
    use wgmoe::internals::gpu::DType;
    use wgmoe::internals::model::quantize::quantize;
    use wgmoe::internals::model::source::f32_values;
    let mut rng = common::Rng::new(7);
    for (what, values) in [
        (
            "normal",
            (0..256 * 64)
                .map(|_| (rng.unit() as f32 - 0.5) + (rng.unit() as f32 - 0.5))
                .collect::<Vec<f32>>(),
        ),
        (
            "heavy-tailed",
            (0..256 * 64).map(|_| (rng.unit() as f32 - 0.5).powi(3) * 8.0).collect(),
        ),
        ("one sign", (0..256 * 8).map(|_| rng.unit() as f32 + 0.1).collect()),
    ] {
        let nmse = |dtype: DType| {
            let back = f32_values(dtype, &quantize(dtype, &values).unwrap());
            let num: f64 = values.iter().zip(&back).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            num / values.iter().map(|a| (*a as f64).powi(2)).sum::<f64>()
        };
        let (k, q4) = (nmse(DType::Q4_K), nmse(DType::Q4_0));
        eprintln!("{what}: Q4_K NMSE {k:.2e}, Q4_0 {q4:.2e}");
        assert!(k < 1e-2 && k < q4, "{what}: Q4_K NMSE {k:.2e}, Q4_0 {q4:.2e}");
    }
}

/// The f32 values of a quantised source's tensors: the same model through the float kernels.
struct Values<'a>(&'a dyn TensorSource);

impl TensorSource for Values<'_> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn get(&self, name: &str) -> wgmoe::Result<wgmoe::internals::model::source::RawTensor<'_>> {
        let t = self.0.get(name)?;
        Ok(wgmoe::internals::model::source::RawTensor {
            dtype: SrcDType::F32,
            bytes: std::borrow::Cow::Owned(bytemuck::cast_slice(&t.to_f32()?).to_vec()),
            ..t
        })
    }
    fn names(&self) -> Vec<String> {
        self.0.names()
    }
}

/// Fixtures quantised at load: packed, their logits equal (to f32 summation, bound 1e-3 as for f32
/// weights; measured 0; on an adapter with cooperative matrices, decode only) those of the same
/// quantised values through the float kernels, with the same greedy tokens (the exact check); the matrices take under half the bytes. Against
/// transformers on the unquantised weights the logits' NMSE is the weights' quantisation error
/// (NMSE ~1e-5 for Q8_0, ~5e-3 for 4-5 bits, see `q4_k_quantiser_beats_q4_0`) amplified by these
/// random, untrained tiny models, ~80x for both (and routing flips in the MoE ones): bounds 5e-3
/// for Q8_0 and 0.6 for Q4_0 / Q4_K (Q5_0 on their 64-wide rows); measured on lavapipe 7.8e-4 and
/// 1.9e-3 (Q8_0), 0.22 and 0.31 (4-5 bits).
#[test]
fn fixtures_quantised_at_load() {
    use wgmoe::internals::gpu::DType;
    for (name, dtype, bound) in [
        ("qwen3_moe", DType::Q8_0, 5e-3),
        ("olmoe", DType::Q4_K, 0.6),
        ("llama", DType::Q4_0, 0.6),
        ("deepseek_v2_lite", DType::Q8_0, 5e-3),
    ] {
        let r = reference(name);
        let ctx = || wgmoe::internals::gpu::Context::from_env().expect("needs a GPU adapter");
        let opts = wgmoe::internals::model::LoadOptions {
            quantize: Some(dtype),
            ..Default::default()
        };
        let model = Model::load_with(ctx(), &fixture(name), &opts, &|_, _| {}).unwrap();
        let (config, src) = wgmoe::internals::model::checkpoint::open(&fixture(name)).unwrap();
        let q = wgmoe::internals::model::quantize::Quantized::new(src.as_ref(), dtype, &config);
        let values = Model::from_source(ctx(), config, &Values(&q), &|_, _| {}).unwrap();
        let (packed, decode, greedy) = prefill_decode_greedy(&model, &r.tokens, 6);
        let (exact, decode_exact, greedy_exact) = prefill_decode_greedy(&values, &r.tokens, 6);
        let err = max_abs_diff(&packed, &exact);
        // Prefill of packed weights runs on cooperative matrices where the adapter has them (f16
        // activations, where the f32 values take f32 tiles, and MoE routing flips on that): only
        // decode is compared there.
        let coop = wgmoe::internals::kernels::matmul::coop_enabled(&model.ctx, &model.weights.embed);
        let err_decode = max_abs_diff(&decode, &decode_exact);
        assert!(
            err_decode <= 1e-3,
            "{name} {}: decode, packed vs its values: {err_decode}",
            dtype.name()
        );
        let num: f64 = packed
            .iter()
            .zip(&r.logits)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let vs_reference = num / r.logits.iter().map(|b| (*b as f64).powi(2)).sum::<f64>();
        eprintln!(
            "{name} {}: packed vs its values {err:.2e}; logits NMSE vs transformers (unquantised) {vs_reference:.2e}; {}",
            dtype.name(),
            model.weights_line()
        );
        assert!(
            coop || err <= 1e-3,
            "{name} {}: packed vs its values: {err}",
            dtype.name()
        );
        assert_eq!(greedy, greedy_exact, "{name} {}", dtype.name());
        assert!(
            vs_reference <= bound,
            "{name} {}: logits NMSE {vs_reference} against transformers'",
            dtype.name()
        );
        assert!(
            model.weights.gpu_bytes() < values.weights.gpu_bytes() / 2,
            "{name}: {}",
            model.weights_line()
        );
    }
}

#[test]
fn quantize_to_a_format_without_a_quantiser_is_an_error() {
    let ctx = wgmoe::internals::gpu::Context::from_env().expect("needs a GPU adapter");
    let opts = wgmoe::internals::model::LoadOptions {
        quantize: Some(wgmoe::internals::gpu::DType::Q6_K),
        ..Default::default()
    };
    let e = Model::load_with(ctx, &fixture("llama"), &opts, &|_, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("q6_k") && e.contains("q4_k"), "{e}");
}

/// DeepSeek-V3's FP8 at the released tile size (128x128, widths multiples of 128): served packed
/// (the tile's scale and the 128 bytes of each row block, 132 bytes for 128 values), with exactly
/// the values the dequantising path gives (each product rounded once to bf16), and uploaded
/// weights computing with them; a width that is not whole 128-blocks falls back to bf16.
#[test]
fn fp8_served_packed_at_the_released_tile_size() {
    use wgmoe::internals::gpu::{DType, Tensor, Weight};
    let dir = std::env::temp_dir().join(format!("wgmoe-fp8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}}"#,
    )
    .unwrap();
    let mut rng = common::Rng::new(3);
    let (rows, cols) = (200, 256);
    // Every e4m3 code but NaN.
    let w: Vec<u8> = (0..rows * cols)
        .map(|_| rng.below(256) as u8)
        .map(|q| if q & 0x7F == 0x7F { q - 1 } else { q })
        .collect();
    let scale: Vec<f32> = (0..4).map(|_| 1e-3 * (1.0 + rng.unit() as f32)).collect();
    let narrow: Vec<u8> = w[..rows * 64].to_vec();
    let scale_bytes: Vec<u8> = bytemuck::cast_slice(&scale).to_vec();
    let one_scale: Vec<u8> = bytemuck::cast_slice(&scale[..2]).to_vec();
    let tensors = [
        (
            "w.weight".to_string(),
            safetensors::Dtype::F8_E4M3,
            vec![rows, cols],
            w.clone(),
        ),
        (
            "w.weight_scale_inv".to_string(),
            safetensors::Dtype::F32,
            vec![2, 2],
            scale_bytes,
        ),
        (
            "n.weight".to_string(),
            safetensors::Dtype::F8_E4M3,
            vec![rows, 64],
            narrow,
        ),
        (
            "n.weight_scale_inv".to_string(),
            safetensors::Dtype::F32,
            vec![2, 1],
            one_scale,
        ),
    ];
    write_safetensors(&dir.join("model.safetensors"), &tensors);

    let mut src = Safetensors::open_dir(&dir).unwrap();
    let packed = src.get("w.weight").unwrap();
    assert_eq!(
        (packed.dtype.clone(), packed.shape.clone()),
        (SrcDType::Packed(DType::FP8), vec![rows, cols])
    );
    assert_eq!(packed.bytes.len(), rows * cols / 128 * 132);
    assert_eq!(
        src.get("n.weight").unwrap().dtype,
        SrcDType::BF16,
        "64 wide: not whole 128-blocks"
    );
    let got = packed.to_f32().unwrap();
    let bytes = packed.bytes.to_vec();
    src.packed = false;
    let want = src.get("w.weight").unwrap().to_f32().unwrap();
    assert!(
        got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
        "packed values differ from the bf16 path"
    );

    // On the GPU: y = W x with the packed weight against the bf16 values.
    let ctx = common::native();
    let wt = Weight::upload(ctx, "w", DType::FP8, rows, cols, 1, &bytes).unwrap();
    let x = rng.vec(cols, 1.0);
    let (xt, yt) = (Tensor::from_f32(ctx, "x", &x), Tensor::zeros(ctx, "y", rows));
    let ds = wgmoe::internals::kernels::matmul::matmul(
        ctx,
        wgmoe::internals::kernels::matmul::MatmulSpec::packed(1, &wt),
        &xt,
        &wt,
        None,
        &yt,
    )
    .unwrap();
    ctx.submit(&ds.iter().collect::<Vec<_>>());
    let y = yt.read_f32(ctx).unwrap();
    let reference: Vec<f64> = (0..rows)
        .map(|r| (0..cols).map(|c| want[r * cols + c] as f64 * x[c] as f64).sum())
        .collect();
    common::assert_nmse("fp8 matvec", &y, &reference, 1e-9);
    std::fs::remove_dir_all(&dir).ok();
}
