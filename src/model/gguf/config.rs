//! A GGUF file's metadata (`{arch}.*` keys, plus what its tensors show) as the transformers
//! `config.json` the same model would have, and from it the model description: which
//! architectures map to which transformers `model_type`, and their hyperparameters, router,
//! MLA, sliding-window and RoPE scaling (YaRN, Llama 3) settings.

use super::format::{Value, GGML_F32};
use super::source::GgufSource;
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::source::TensorSource;
use serde_json::{json, Map, Value as Json};

/// Architectures (`general.architecture`) this loader maps.
pub const SUPPORTED_ARCHS: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "qwen2moe",
    "qwen3moe",
    "olmoe",
    "deepseek2",
    "gpt-oss",
];

impl GgufSource {
    /// The transformers `model_type` this file's architecture maps to.
    pub fn model_type(&self) -> Result<String> {
        let experts = self.file.opt_u64(&format!("{}.expert_count", self.arch))?.unwrap_or(0);
        Ok(match self.arch.as_str() {
            "llama" if experts > 0 => "mixtral",
            "llama" => "llama",
            "qwen2" => "qwen2",
            "qwen3" => "qwen3",
            "qwen2moe" => "qwen2_moe",
            "qwen3moe" => "qwen3_moe",
            "olmoe" => "olmoe",
            // llama.cpp's expert_gating_func: 1 softmax (V2; also what older files without the key
            // mean), 2 sigmoid (V3, which also carries the selection bias exp_probs_b).
            "deepseek2" => {
                let key = "deepseek2.expert_gating_func";
                let gating = self.file.opt_u64(key)?;
                if gating.is_some_and(|g| g > 2) {
                    return Err(self.bad(key, "0 or 1 (softmax) or 2 (sigmoid)"));
                }
                let bias = self.file.tensors.iter().any(|t| t.name.contains(".exp_probs_b."));
                if gating == Some(2) || (gating.is_none() && bias) {
                    "deepseek_v3"
                } else {
                    "deepseek_v2"
                }
            }
            "gpt-oss" => "gpt_oss",
            other => {
                return Err(Error::unsupported(format!(
                    "{}: GGUF architecture {other:?} is not supported; supported: {}",
                    self.file.name(),
                    SUPPORTED_ARCHS.join(", ")
                )))
            }
        }
        .to_string())
    }

    /// A transformers-style `config.json` value built from the metadata.
    pub fn config_value(&self) -> Result<Json> {
        let f = &self.file;
        let a = &self.arch;
        let k = |s: &str| format!("{a}.{s}");
        let model_type = self.model_type()?;
        let hidden = f.req_u64(&k("embedding_length"))?;
        let heads = f.req_u64(&k("attention.head_count"))?;
        let kv_heads = f.opt_u64(&k("attention.head_count_kv"))?.unwrap_or(heads);
        let vocab = match f.get("tokenizer.ggml.tokens").and_then(Value::as_array) {
            Some(t) => t.len() as u64,
            None => match f.opt_u64(&k("vocab_size"))? {
                Some(v) => v,
                None => self
                    .file
                    .tensor("token_embd.weight")
                    .and_then(|t| t.dims.get(1).copied())
                    .ok_or_else(|| {
                        Error::bad_model(
                            &f.path,
                            format!(
                                "no vocabulary size (no tokenizer.ggml.tokens, {a}.vocab_size or token_embd.weight)"
                            ),
                        )
                    })?,
            },
        };
        let mut c = Map::new();
        c.insert("model_type".into(), json!(model_type));
        c.insert("architectures".into(), json!([a]));
        c.insert("hidden_size".into(), json!(hidden));
        let layers = f.req_u64(&k("block_count"))?;
        if layers == 0 || layers as usize > f.tensors.len() {
            return Err(Error::bad_model(
                &f.path,
                format!(
                    "{a}.block_count is {layers}, but the file has {} tensors",
                    f.tensors.len()
                ),
            ));
        }
        c.insert("num_hidden_layers".into(), json!(layers));
        c.insert("num_attention_heads".into(), json!(heads));
        c.insert("num_key_value_heads".into(), json!(kv_heads));
        c.insert("vocab_size".into(), json!(vocab));
        if let Some(hd) = f.opt_u64(&k("attention.key_length"))? {
            c.insert("head_dim".into(), json!(hd));
        }
        c.insert(
            "rms_norm_eps".into(),
            json!(self.finite(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6)),
        );
        let theta = self.finite(&k("rope.freq_base"))?.unwrap_or(10000.0);
        c.insert("rope_theta".into(), json!(theta));
        if let Some(ctx) = f.opt_u64(&k("context_length"))? {
            c.insert("max_position_embeddings".into(), json!(ctx));
        }
        c.insert(
            "tie_word_embeddings".into(),
            json!(self.file.tensor("output.weight").is_none()),
        );
        let ffn = f.opt_u64(&k("feed_forward_length"))?;
        if let Some(ffn) = ffn {
            c.insert("intermediate_size".into(), json!(ffn));
        }
        // A non-physical theta is reported by the config check, under its key.
        if theta > 0.0 {
            if let Some(rs) = self.rope_scaling(theta)? {
                c.insert("rope_scaling".into(), rs);
            }
        }
        if model_type.starts_with("deepseek") {
            self.deepseek_config(&mut c, &model_type, layers)?;
            return Ok(Json::Object(c));
        }
        if model_type == "gpt_oss" {
            self.gpt_oss_config(&mut c, layers)?;
            return Ok(Json::Object(c));
        }
        // Biases: qwen2 always has q/k/v biases; llama-family files say so by carrying them.
        if model_type == "llama" && self.contains("model.layers.0.self_attn.q_proj.bias") {
            c.insert("attention_bias".into(), json!(true));
        }
        if model_type == "qwen3" && self.contains("model.layers.0.self_attn.q_proj.bias") {
            c.insert("attention_bias".into(), json!(true));
        }
        if matches!(model_type.as_str(), "mixtral" | "qwen2_moe" | "qwen3_moe" | "olmoe") {
            let experts = f.req_u64(&k("expert_count"))?;
            let used = f.req_u64(&k("expert_used_count"))?;
            c.insert("num_local_experts".into(), json!(experts));
            c.insert("num_experts".into(), json!(experts));
            c.insert("num_experts_per_tok".into(), json!(used));
            let expert_ffn = f.opt_u64(&k("expert_feed_forward_length"))?.or(ffn);
            if let Some(e) = expert_ffn {
                c.insert("moe_intermediate_size".into(), json!(e));
                if model_type == "olmoe" || model_type == "mixtral" {
                    c.insert("intermediate_size".into(), json!(e));
                }
            }
            // Qwen3-MoE releases renormalise the top-k weights; Qwen1.5-MoE and OLMoE do not.
            let norm = self.bool_or(&k("expert_weights_norm"), model_type == "qwen3_moe")?;
            c.insert("norm_topk_prob".into(), json!(norm));
            // Layers without a router are dense (transformers' `mlp_only_layers`).
            if matches!(model_type.as_str(), "qwen2_moe" | "qwen3_moe") {
                let layers = f.req_u64(&k("block_count"))?;
                let dense: Vec<u64> = (0..layers)
                    .filter(|i| f.tensor(&format!("blk.{i}.ffn_gate_inp.weight")).is_none())
                    .collect();
                c.insert("mlp_only_layers".into(), json!(dense));
                c.insert("decoder_sparse_step".into(), json!(1));
            }
            if model_type == "qwen2_moe" {
                let shared = f.req_u64(&k("expert_shared_feed_forward_length"))?;
                c.insert("shared_expert_intermediate_size".into(), json!(shared));
            }
        }
        if model_type == "olmoe" {
            if let Some(clip) = self.finite(&k("attention.clamp_kqv"))? {
                c.insert("clip_qkv".into(), json!(clip));
            }
        }
        Ok(Json::Object(c))
    }

    /// DeepSeek V2 / V3 (llama.cpp `deepseek2`, convert_hf_to_gguf `DeepseekV2Model`).
    fn deepseek_config(&self, c: &mut Map<String, Json>, model_type: &str, block_count: u64) -> Result<()> {
        let f = &self.file;
        let a = &self.arch;
        let k = |s: &str| format!("{a}.{s}");
        let heads = f.req_u64(&k("attention.head_count"))?;
        // Newer files describe MLA as MQA over the latent (head_count_kv 1, key_length r + dr,
        // value_length r) and put the per-head sizes in *_mla keys; older ones have head_count_kv
        // = head_count, key_length = dn + dr and value_length = dv.
        c.insert("num_key_value_heads".into(), json!(heads));
        c.remove("head_dim");
        // MTP layers, if a converter kept them, come after the decoder layers.
        let nextn = f.opt_u64(&k("nextn_predict_layers"))?.unwrap_or(0);
        if nextn > 0 && nextn < block_count {
            c.insert("num_hidden_layers".into(), json!(block_count - nextn));
        }
        let rope = f.req_u64(&k("rope.dimension_count"))?;
        let qk = match f.opt_u64(&k("attention.key_length_mla"))? {
            Some(v) => v,
            None => f.req_u64(&k("attention.key_length"))?,
        };
        let v = match f.opt_u64(&k("attention.value_length_mla"))? {
            Some(v) => v,
            None => f.req_u64(&k("attention.value_length"))?,
        };
        if qk <= rope {
            return Err(Error::bad_model(
                &f.path,
                format!("MLA key length {qk} is not larger than the rope dimension count {rope}"),
            ));
        }
        c.insert("qk_rope_head_dim".into(), json!(rope));
        c.insert("qk_nope_head_dim".into(), json!(qk - rope));
        c.insert("v_head_dim".into(), json!(v));
        c.insert("kv_lora_rank".into(), json!(f.req_u64(&k("attention.kv_lora_rank"))?));
        c.insert("q_lora_rank".into(), json!(f.opt_u64(&k("attention.q_lora_rank"))?));
        c.insert("rope_interleave".into(), json!(true));
        let bias = self.contains("model.layers.0.self_attn.kv_a_proj_with_mqa.bias");
        c.insert("attention_bias".into(), json!(bias));
        c.insert(
            "first_k_dense_replace".into(),
            json!(f.opt_u64(&k("leading_dense_block_count"))?.unwrap_or(0)),
        );
        let experts = f.opt_u64(&k("expert_count"))?.unwrap_or(0);
        if experts > 0 {
            c.insert("n_routed_experts".into(), json!(experts));
            c.insert("num_experts_per_tok".into(), json!(f.req_u64(&k("expert_used_count"))?));
            c.insert(
                "moe_intermediate_size".into(),
                json!(f.req_u64(&k("expert_feed_forward_length"))?),
            );
            c.insert(
                "n_shared_experts".into(),
                json!(f.opt_u64(&k("expert_shared_count"))?.unwrap_or(0)),
            );
            c.insert(
                "routed_scaling_factor".into(),
                json!(self.finite(&k("expert_weights_scale"))?.unwrap_or(1.0)),
            );
            // llama.cpp's default when the key is absent is false (as V2's config).
            let norm = self.bool_or(&k("expert_weights_norm"), false)?;
            c.insert("norm_topk_prob".into(), json!(norm));
            let groups = f.opt_u64(&k("expert_group_count"))?.unwrap_or(1).max(1);
            let used = f.opt_u64(&k("expert_group_used_count"))?.unwrap_or(groups);
            c.insert("n_group".into(), json!(groups));
            c.insert("topk_group".into(), json!(used));
            if model_type == "deepseek_v2" {
                // Group limits in a V2 file are transformers' group_limited_greedy (group score =
                // the group's best expert); without them, greedy (V2-Lite).
                let method = if groups > 1 { "group_limited_greedy" } else { "greedy" };
                c.insert("topk_method".into(), json!(method));
            }
        } else {
            c.insert("first_k_dense_replace".into(), json!(block_count));
        }
        Ok(())
    }

    /// gpt-oss (llama.cpp `gpt-oss`, convert_hf_to_gguf `GptOssModel`).
    fn gpt_oss_config(&self, c: &mut Map<String, Json>, layers: u64) -> Result<()> {
        let f = &self.file;
        let k = |s: &str| format!("{}.{s}", self.arch);
        c.insert("num_local_experts".into(), json!(f.req_u64(&k("expert_count"))?));
        c.insert("num_experts_per_tok".into(), json!(f.req_u64(&k("expert_used_count"))?));
        if let Some(e) = f.opt_u64(&k("expert_feed_forward_length"))? {
            c.insert("intermediate_size".into(), json!(e));
        }
        let bias = self.contains("model.layers.0.self_attn.q_proj.bias");
        c.insert("attention_bias".into(), json!(bias));
        // llama.cpp hard-codes gpt-oss's pattern: even layers slide, odd layers attend to all
        // (a `sliding_window_pattern` key, where present, says the same per layer).
        let window = f.opt_u64(&k("attention.sliding_window"))?.filter(|&w| w > 0);
        let Some(w) = window else {
            c.insert("layer_types".into(), json!(vec!["full_attention"; layers as usize]));
            return Ok(());
        };
        let pattern_key = k("attention.sliding_window_pattern");
        let want = "a list of one bool per layer, or a period of at least 1";
        let pattern: Vec<bool> = match f.get(&pattern_key) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_bool().ok_or_else(|| self.bad(&pattern_key, want)))
                .collect::<Result<_>>()?,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => (0..layers).map(|i| i % n < n - 1).collect(),
                _ => return Err(self.bad(&pattern_key, want)),
            },
            None => (0..layers).map(|i| i % 2 == 0).collect(),
        };
        if (pattern.len() as u64) < layers {
            return Err(self.bad(&pattern_key, want));
        }
        c.insert("sliding_window".into(), json!(w));
        let types: Vec<&str> = pattern[..layers as usize]
            .iter()
            .map(|&s| if s { "sliding_attention" } else { "full_attention" })
            .collect();
        c.insert("layer_types".into(), json!(types));
        Ok(())
    }

    /// `rope_scaling` from `{arch}.rope.scaling.*`, or Llama 3's from the `rope_freqs.weight` tensor.
    fn rope_scaling(&self, theta: f64) -> Result<Option<Json>> {
        let f = &self.file;
        let a = &self.arch;
        match self.string(&format!("{a}.rope.scaling.type"))? {
            None | Some("none") => {}
            Some("yarn") => {
                let mut m = Map::new();
                m.insert("rope_type".into(), json!("yarn"));
                m.insert(
                    "factor".into(),
                    json!(self.finite(&format!("{a}.rope.scaling.factor"))?.unwrap_or(1.0)),
                );
                if let Some(o) = f.opt_u64(&format!("{a}.rope.scaling.original_context_length"))? {
                    m.insert("original_max_position_embeddings".into(), json!(o));
                }
                // llama.cpp's defaults (32, 1) are transformers' too.
                for (key, hf, default) in [
                    ("yarn_beta_fast", "beta_fast", 32.0),
                    ("yarn_beta_slow", "beta_slow", 1.0),
                ] {
                    let v = self.finite(&format!("{a}.rope.scaling.{key}"))?.unwrap_or(default);
                    m.insert(hf.into(), json!(v));
                }
                if a == "deepseek2" {
                    // The converter writes yarn_log_multiplier = 0.1 * mscale_all_dim; released
                    // DeepSeek configs have mscale == mscale_all_dim (cos/sin amplitude 1, the
                    // softmax scale times m^2; MODELS.md §6.3), which llama.cpp assumes too.
                    if let Some(mul) = self.finite(&format!("{a}.rope.scaling.yarn_log_multiplier"))? {
                        let m_all = (mul as f32 / 0.1f32) as f64;
                        m.insert("mscale".into(), json!(m_all));
                        m.insert("mscale_all_dim".into(), json!(m_all));
                    }
                }
                if a == "gpt-oss" {
                    // gpt-oss's reference implementation and config do not round YaRN's
                    // correction range to whole dims (transformers `truncate: false`).
                    m.insert("truncate".into(), json!(false));
                }
                return Ok(Some(Json::Object(m)));
            }
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "{}: \"{a}.rope.scaling.type\" is {other:?}, which is not supported (none, yarn; Llama 3 scaling comes as rope_freqs.weight)",
                    f.name()
                )))
            }
        }
        let Some(t) = f.tensor("rope_freqs.weight") else {
            return Ok(None);
        };
        // Llama 3.x: per-dimension frequency divisors. Recover the llama3 parameters and check
        // that they reproduce the tensor.
        let got: Vec<f32> = match t.ggml_type {
            GGML_F32 => bytemuck::pod_collect_to_vec(f.tensor_bytes(t)?),
            _ => {
                return Err(Error::bad_model(
                    &f.path,
                    format!("rope_freqs.weight has type {}, expected F32", t.type_name()),
                ))
            }
        };
        let factor = got.iter().cloned().fold(1.0f32, f32::max) as f64;
        let (low, high) = (1.0f64, 4.0f64);
        let orig = f
            .opt_u64(&format!("{a}.rope.scaling.original_context_length"))?
            .unwrap_or(8192);
        let dims = got.len() * 2;
        let low_wl = orig as f64 / low;
        let high_wl = orig as f64 / high;
        let mut ok = true;
        for (i, &g) in got.iter().enumerate() {
            let freq = 1.0 / theta.powf((2 * i) as f64 / dims as f64);
            let wl = 2.0 * std::f64::consts::PI / freq;
            let want = if wl < high_wl {
                1.0
            } else if wl > low_wl {
                factor
            } else {
                let smooth = (orig as f64 / wl - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            if ((g as f64) - want).abs() > 1e-3 * want {
                ok = false;
            }
        }
        if !ok {
            return Err(Error::bad_model(
                &f.path,
                format!(
                    "rope_freqs.weight does not match Llama 3 rope scaling (factor {factor}, low 1, high 4, original context {orig})"
                ),
            ));
        }
        Ok(Some(json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": orig,
        })))
    }

    /// The model description from the metadata; errors name the metadata keys.
    pub fn config(&self) -> Result<ModelConfig> {
        let model_type = self.model_type()?;
        ModelConfig::from_value_named(&self.config_value()?, &self.file.name(), &|key| {
            self.metadata_key(&model_type, key)
        })
    }

    /// The metadata key (or tensor) a `config.json` key of [`GgufSource::config_value`] is made
    /// from, so that config errors name what the file holds.
    fn metadata_key(&self, model_type: &str, key: &str) -> Option<String> {
        let a = &self.arch;
        let k = |s: &str| format!("{a}.{s}");
        // The first of two keys the file has (the first when neither).
        let either = |first: &str, second: &str| {
            if self.file.get(&k(first)).is_none() && self.file.get(&k(second)).is_some() {
                k(second)
            } else {
                k(first)
            }
        };
        let expert_ffn = || either("expert_feed_forward_length", "feed_forward_length");
        Some(match key {
            "hidden_size" => k("embedding_length"),
            "num_attention_heads" => k("attention.head_count"),
            "num_key_value_heads" => k("attention.head_count_kv"),
            "num_hidden_layers" => k("block_count"),
            "vocab_size" if self.file.get("tokenizer.ggml.tokens").is_some() => "tokenizer.ggml.tokens".into(),
            "vocab_size" if self.file.get(&k("vocab_size")).is_some() => k("vocab_size"),
            "vocab_size" => "token_embd.weight".into(),
            "head_dim" => k("attention.key_length"),
            "rms_norm_eps" => k("attention.layer_norm_rms_epsilon"),
            "rope_theta" => k("rope.freq_base"),
            "max_position_embeddings" => k("context_length"),
            "intermediate_size" if matches!(model_type, "mixtral" | "olmoe" | "gpt_oss") => expert_ffn(),
            "intermediate_size" => k("feed_forward_length"),
            "moe_intermediate_size" => expert_ffn(),
            "num_local_experts" | "num_experts" | "n_routed_experts" => k("expert_count"),
            "num_experts_per_tok" => k("expert_used_count"),
            "shared_expert_intermediate_size" => k("expert_shared_feed_forward_length"),
            "qk_rope_head_dim" => k("rope.dimension_count"),
            "qk_nope_head_dim" => either("attention.key_length_mla", "attention.key_length"),
            "v_head_dim" => either("attention.value_length_mla", "attention.value_length"),
            "kv_lora_rank" => k("attention.kv_lora_rank"),
            "q_lora_rank" => k("attention.q_lora_rank"),
            "first_k_dense_replace" => k("leading_dense_block_count"),
            "n_shared_experts" => k("expert_shared_count"),
            "routed_scaling_factor" => k("expert_weights_scale"),
            "norm_topk_prob" => k("expert_weights_norm"),
            "n_group" => k("expert_group_count"),
            "topk_group" => k("expert_group_used_count"),
            "sliding_window" => k("attention.sliding_window"),
            "layer_types" => k("attention.sliding_window_pattern"),
            "clip_qkv" => k("attention.clamp_kqv"),
            "rope_scaling" | "rope_scaling.rope_type" => k("rope.scaling.type"),
            "rope_scaling.factor" if self.file.tensor("rope_freqs.weight").is_some() => "rope_freqs.weight".into(),
            "rope_scaling.factor" => k("rope.scaling.factor"),
            "rope_scaling.original_max_position_embeddings" => k("rope.scaling.original_context_length"),
            "rope_scaling.beta_fast" => k("rope.scaling.yarn_beta_fast"),
            "rope_scaling.beta_slow" => k("rope.scaling.yarn_beta_slow"),
            "rope_scaling.mscale" | "rope_scaling.mscale_all_dim" => k("rope.scaling.yarn_log_multiplier"),
            "rope_scaling.low_freq_factor" | "rope_scaling.high_freq_factor" => "rope_freqs.weight".into(),
            _ => return None,
        })
    }

    fn bad(&self, key: &str, want: &str) -> Error {
        Error::bad_model(
            &self.file.path,
            format!(
                "{key:?} should be {want}, found {}",
                self.file.get(key).map_or("nothing".into(), |v| format!("{v:?}"))
            ),
        )
    }

    /// A number metadata value, which must be finite (a NaN would vanish in the JSON config).
    fn finite(&self, key: &str) -> Result<Option<f64>> {
        match self.file.opt_f64(key)? {
            Some(x) if !x.is_finite() => Err(self.bad(key, "a finite number")),
            x => Ok(x),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.file.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, "a bool")),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.bad(key, "a string")),
        }
    }
}
