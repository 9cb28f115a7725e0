//! `config.json` (either the hub spelling or the one transformers 5 writes) to one model
//! description. Architectures are data (DESIGN.md principle 1): everything the forward-plan
//! builder needs to know about a model is in [`ModelConfig`]; the math behind each field is in
//! MODELS.md.

use crate::error::{Error, Result};
use serde_json::Value;

/// The `model_type`s wgmoe runs.
pub const SUPPORTED: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "deepseek_v2",
    "deepseek_v3",
    "gpt_oss",
];

pub use crate::kernels::rope::RopeScaling;

#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    pub theta: f32,
    /// Rotated dims per head (head_dim, or qk_rope_head_dim for MLA).
    pub dims: usize,
    /// Interleaved pairs (DeepSeek MLA) instead of half-split.
    pub interleaved: bool,
    pub scaling: RopeScaling,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// Qwen3: RMSNorm over each head's `head_dim` before RoPE.
    PerHead,
    /// OLMoE: RMSNorm over the whole q / k projection.
    Full,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Attention {
    /// Multi-head / grouped-query attention.
    Gqa {
        qkv_bias: bool,
        o_bias: bool,
        qk_norm: QkNorm,
        clip_qkv: Option<f32>,
        /// gpt-oss per-head sink logits.
        sinks: bool,
    },
    /// DeepSeek multi-head latent attention.
    Mla {
        q_lora_rank: Option<usize>,
        kv_lora_rank: usize,
        nope_dim: usize,
        rope_dim: usize,
        v_dim: usize,
        bias: bool,
    },
}

pub use crate::kernels::router::{GroupScore, Scoring};

#[derive(Clone, Debug, PartialEq)]
pub struct Router {
    pub scoring: Scoring,
    /// DeepSeek-V3 `e_score_correction_bias`, used only to choose experts.
    pub selection_bias: bool,
    /// `(n_group, topk_group, score)`.
    pub groups: Option<(usize, usize, GroupScore)>,
    pub renormalize: bool,
    pub scale: f32,
    /// gpt-oss: the router linear has a bias.
    pub linear_bias: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SharedExpert {
    pub inter: usize,
    /// Qwen2-MoE: scaled by `sigmoid(h @ shared_expert_gate^T)`.
    pub gated: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Ffn {
    Dense {
        inter: usize,
        bias: bool,
    },
    Moe {
        experts: usize,
        top_k: usize,
        inter: usize,
        router: Router,
        shared: Option<SharedExpert>,
        /// gpt-oss experts: biases, clamped SwiGLU, interleaved gate/up, `[E, in, out]` storage.
        gpt_oss: Option<GptOssExperts>,
    },
}

impl Ffn {
    /// How many extra routed experts the shared experts fold into: a shared SwiGLU MLP of width
    /// `n * inter` is `n` experts of width `inter` (SwiGLU acts per intermediate unit and the down
    /// projection sums over them), which the router then picks for every token with weight 1, or
    /// with Qwen2-MoE's `sigmoid(h @ shared_expert_gate^T)` (the gate becomes the router's last
    /// row). One expert kernel then serves routed and shared experts alike. `None` when there is no
    /// shared expert or its width is not a multiple of the experts'.
    pub fn shared_slots(&self) -> Option<usize> {
        match self {
            Ffn::Moe {
                inter,
                shared: Some(s),
                gpt_oss: None,
                router,
                ..
            } if !router.linear_bias && s.inter.is_multiple_of(*inter) => Some(s.inter / inter),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptOssExperts {
    pub limit: f32,
    pub alpha: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Sliding-window size: the last `window` positions are visible, the current one included.
    pub window: Option<usize>,
    pub ffn: Ffn,
}

/// Everything the forward plan needs to know about one model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub model_type: String,
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Query/key head size for GQA (MLA: nope + rope).
    pub head_dim: usize,
    /// Value head size (= head_dim except MLA).
    pub v_head_dim: usize,
    pub eps: f32,
    pub tie_embeddings: bool,
    pub max_position: usize,
    pub attention: Attention,
    pub rope: Rope,
    /// Softmax scale of attention logits.
    pub attn_scale: f32,
    pub layers: Vec<Layer>,
    /// `torch_dtype` / `dtype` as written, if any.
    pub dtype: Option<String>,
}

/// Typed access to one `config.json` with errors that name the key and the file.
struct Json<'a> {
    v: &'a Value,
    file: &'a str,
}

impl Json<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.bad(key, "a non-negative integer")),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| self.missing(key))
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }
    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad(key, "a number")),
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, "true or false")),
        }
    }
    fn str_opt(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    fn missing(&self, key: &str) -> Error {
        Error::Invalid(format!("{}: required key {key:?} is missing", self.file))
    }
    fn bad(&self, key: &str, want: &str) -> Error {
        Error::Invalid(format!(
            "{}: {key:?} should be {want}, found {}",
            self.file, self.v[key]
        ))
    }
    fn sub<'b>(&'b self, v: &'b Value) -> Json<'b> {
        Json { v, file: self.file }
    }
}

impl ModelConfig {
    /// Parse the text of a `config.json`; `file` names it in errors.
    pub fn from_json(text: &str, file: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::Invalid(format!("{file}: not valid JSON: {e}")))?;
        Self::from_value(&v, file)
    }

    pub fn from_value(v: &Value, file: &str) -> Result<Self> {
        let j = Json { v, file };
        let model_type = j
            .str_opt("model_type")
            .ok_or_else(|| j.missing("model_type"))?
            .to_string();
        if !SUPPORTED.contains(&model_type.as_str()) {
            return Err(Error::Invalid(format!(
                "{file}: model_type {model_type:?} is not supported; supported: {}",
                SUPPORTED.join(", ")
            )));
        }
        let mt = model_type.as_str();
        let hidden = j.usize("hidden_size")?;
        let heads = j.usize("num_attention_heads")?;
        let n_layers = j.usize("num_hidden_layers")?;
        let vocab = j.usize("vocab_size")?;
        let is_mla = mt.starts_with("deepseek");
        let kv_heads = if is_mla {
            heads
        } else {
            j.usize_or("num_key_value_heads", heads)?
        };
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error::Invalid(format!(
                "{file}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
            )));
        }
        let max_position = j.usize_or("max_position_embeddings", 4096)?;
        // Far above any real model; a corrupt file must not turn into a huge allocation or loop.
        for (key, value, limit) in [
            ("num_hidden_layers", n_layers, 4096),
            ("hidden_size", hidden, 1 << 20),
            ("num_attention_heads", heads, 1 << 14),
            ("vocab_size", vocab, 1 << 26),
        ] {
            if value == 0 || value > limit {
                return Err(Error::Invalid(format!(
                    "{file}: {key} = {value} is not a plausible model size"
                )));
            }
        }
        let eps = j.f64_or("rms_norm_eps", 1e-6)? as f32;

        // RoPE: rope_parameters (transformers 5) or rope_scaling + rope_theta (hub).
        let rope_params = j.get("rope_parameters").or_else(|| j.get("rope_scaling"));
        let default_theta = match mt {
            "mixtral" => 1e6,
            "gpt_oss" => 150000.0,
            _ => 10000.0,
        };
        let theta = rope_params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or(j.f64_opt("rope_theta")?)
            .unwrap_or(default_theta) as f32;
        let scaling = match rope_params {
            Some(p) => parse_rope_scaling(&j.sub(p))?,
            None if mt == "gpt_oss" => RopeScaling::Yarn {
                factor: Some(32.0),
                original_max_position: Some(4096),
                beta_fast: Some(32.0),
                beta_slow: Some(1.0),
                mscale: None,
                mscale_all_dim: None,
                attention_factor: None,
                truncate: false,
            },
            None => RopeScaling::Default,
        };

        let attention;
        let head_dim;
        let v_head_dim;
        let rope_dims;
        let mut attn_scale;
        if is_mla {
            let nope = j.usize("qk_nope_head_dim")?;
            let rope = j.usize("qk_rope_head_dim")?;
            let v = j.usize("v_head_dim")?;
            attention = Attention::Mla {
                q_lora_rank: j.usize_opt("q_lora_rank")?,
                kv_lora_rank: j.usize("kv_lora_rank")?,
                nope_dim: nope,
                rope_dim: rope,
                v_dim: v,
                bias: j.bool_or("attention_bias", false)?,
            };
            // transformers 5 writes head_dim = qk_rope_head_dim for DeepSeek: never the head size.
            head_dim = nope + rope;
            v_head_dim = v;
            rope_dims = rope;
            attn_scale = (head_dim as f64).powf(-0.5);
            if let RopeScaling::Yarn {
                factor,
                original_max_position,
                mscale_all_dim: Some(m),
                ..
            } = &scaling
            {
                if *m != 0.0 {
                    let original = original_max_position.unwrap_or(max_position);
                    let factor = factor.map_or(max_position as f64 / original as f64, f64::from);
                    let ms = 0.1 * *m as f64 * factor.ln() + 1.0;
                    attn_scale *= ms * ms;
                }
            }
        } else {
            head_dim = match j.usize_opt("head_dim")? {
                Some(h) => h,
                None => hidden / heads,
            };
            v_head_dim = head_dim;
            rope_dims = head_dim;
            attn_scale = (head_dim as f64).powf(-0.5);
            let attention_bias = j.bool_or("attention_bias", false)?;
            let (qkv_bias, o_bias) = match mt {
                "qwen2" => (true, false),
                "qwen2_moe" => (j.bool_or("qkv_bias", true)?, false),
                "mixtral" => (false, false),
                "gpt_oss" => (j.bool_or("attention_bias", true)?, j.bool_or("attention_bias", true)?),
                _ => (attention_bias, attention_bias),
            };
            let qk_norm = match mt {
                "qwen3" | "qwen3_moe" => QkNorm::PerHead,
                "olmoe" => QkNorm::Full,
                _ => QkNorm::None,
            };
            if qk_norm == QkNorm::Full && head_dim * heads != hidden {
                return Err(Error::Invalid(format!(
                    "{file}: olmoe needs head_dim ({head_dim}) * heads ({heads}) == hidden_size ({hidden})"
                )));
            }
            attention = Attention::Gqa {
                qkv_bias,
                o_bias,
                qk_norm,
                clip_qkv: if mt == "olmoe" {
                    j.f64_opt("clip_qkv")?.map(|c| c as f32)
                } else {
                    None
                },
                sinks: mt == "gpt_oss",
            };
        }
        let interleaved = is_mla && j.bool_or("rope_interleave", true)?;
        let rope = Rope {
            theta,
            dims: rope_dims,
            interleaved,
            scaling,
        };

        let windows = layer_windows(&j, mt, n_layers)?;
        let mut layers = Vec::with_capacity(n_layers);
        for (i, window) in windows.into_iter().enumerate() {
            layers.push(Layer {
                window,
                ffn: layer_ffn(&j, mt, i)?,
            });
        }

        let tie_default = false;
        Ok(Self {
            model_type,
            vocab,
            hidden,
            heads,
            kv_heads,
            head_dim,
            v_head_dim,
            eps,
            tie_embeddings: j.bool_or("tie_word_embeddings", tie_default)?,
            max_position,
            attention,
            rope,
            attn_scale: attn_scale as f32,
            layers,
            dtype: j.str_opt("dtype").or(j.str_opt("torch_dtype")).map(str::to_string),
        })
    }
}

fn parse_rope_scaling(p: &Json<'_>) -> Result<RopeScaling> {
    let kind = p.str_opt("rope_type").or(p.str_opt("type")).unwrap_or("default");
    Ok(match kind {
        "default" | "linear_default" => RopeScaling::Default,
        "yarn" => {
            let f = |k: &str| -> Result<Option<f32>> { Ok(p.f64_opt(k)?.map(|v| v as f32)) };
            RopeScaling::Yarn {
                factor: f("factor")?,
                original_max_position: p.usize_opt("original_max_position_embeddings")?,
                beta_fast: f("beta_fast")?,
                beta_slow: f("beta_slow")?,
                mscale: f("mscale")?,
                mscale_all_dim: f("mscale_all_dim")?,
                attention_factor: f("attention_factor")?,
                truncate: p.bool_or("truncate", true)?,
            }
        }
        "llama3" => RopeScaling::Llama3 {
            factor: p.f64_or("factor", 8.0)? as f32,
            low_freq_factor: p.f64_or("low_freq_factor", 1.0)? as f32,
            high_freq_factor: p.f64_or("high_freq_factor", 4.0)? as f32,
            original_max_position: p.usize_or("original_max_position_embeddings", 8192)?,
        },
        other => {
            return Err(Error::Invalid(format!(
                "{}: rope type {other:?} is not supported (default, yarn, llama3)",
                p.file
            )))
        }
    })
}

/// Sliding window per layer (MODELS.md §1, §5.2, §7, §8).
fn layer_windows(j: &Json<'_>, mt: &str, n: usize) -> Result<Vec<Option<usize>>> {
    let window = j.usize_opt("sliding_window")?;
    if let Some(types) = j.get("layer_types").and_then(Value::as_array) {
        if types.len() < n {
            return Err(j.bad("layer_types", &format!("a list of {n} layer types")));
        }
        return types[..n]
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => window.map(Some).ok_or_else(|| j.missing("sliding_window")),
                Some("full_attention") => Ok(None),
                _ => Err(j.bad("layer_types", "\"sliding_attention\" or \"full_attention\" entries")),
            })
            .collect();
    }
    Ok((0..n)
        .map(|i| match mt {
            "mixtral" => window,
            "gpt_oss" => window.filter(|_| i % 2 == 0),
            "qwen2" | "qwen3" => {
                let max_window_layers = j.usize_or("max_window_layers", n).unwrap_or(n);
                window.filter(|_| j.bool_or("use_sliding_window", false).unwrap_or(false) && i >= max_window_layers)
            }
            "qwen2_moe" | "qwen3_moe" => {
                let max_window_layers = j.usize_or("max_window_layers", n).unwrap_or(n);
                let on = j.bool_or("use_sliding_window", false).unwrap_or(false);
                window.filter(|_| on && (i + 1) % 2 == 1 && i < max_window_layers)
            }
            _ => None,
        })
        .collect())
}

/// The FFN of layer `i` (MODELS.md §4.1).
fn layer_ffn(j: &Json<'_>, mt: &str, i: usize) -> Result<Ffn> {
    let dense = |key: &str| -> Result<Ffn> {
        Ok(Ffn::Dense {
            inter: j.usize(key)?,
            bias: mt == "llama" && j.bool_or("mlp_bias", false)?,
        })
    };
    let softmax_router = |renormalize: bool| Router {
        scoring: Scoring::Softmax,
        selection_bias: false,
        groups: None,
        renormalize,
        scale: 1.0,
        linear_bias: false,
    };
    let expert_count = |keys: &[&str]| -> Result<usize> {
        for k in keys {
            if let Some(n) = j.usize_opt(k)? {
                return Ok(n);
            }
        }
        Err(j.missing(keys[0]))
    };
    match mt {
        "llama" | "qwen2" | "qwen3" => dense("intermediate_size"),
        "mixtral" => Ok(Ffn::Moe {
            experts: expert_count(&["num_local_experts", "num_experts"])?,
            top_k: j.usize("num_experts_per_tok")?,
            inter: j.usize("intermediate_size")?,
            router: softmax_router(true),
            shared: None,
            gpt_oss: None,
        }),
        "olmoe" => Ok(Ffn::Moe {
            experts: expert_count(&["num_experts", "num_local_experts"])?,
            top_k: j.usize("num_experts_per_tok")?,
            inter: j.usize("intermediate_size")?,
            router: softmax_router(j.bool_or("norm_topk_prob", false)?),
            shared: None,
            gpt_oss: None,
        }),
        "qwen2_moe" | "qwen3_moe" => {
            let experts = expert_count(&["num_experts", "num_local_experts"])?;
            let mlp_only: Vec<u64> = j
                .get("mlp_only_layers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let step = j.usize_or("decoder_sparse_step", 1)?.max(1);
            let is_moe = !mlp_only.contains(&(i as u64)) && experts > 0 && (i + 1).is_multiple_of(step);
            if !is_moe {
                return dense("intermediate_size");
            }
            let shared = if mt == "qwen2_moe" {
                j.usize_opt("shared_expert_intermediate_size")?
                    .filter(|&n| n > 0)
                    .map(|inter| SharedExpert { inter, gated: true })
            } else {
                None
            };
            Ok(Ffn::Moe {
                experts,
                top_k: j.usize("num_experts_per_tok")?,
                inter: j.usize("moe_intermediate_size")?,
                router: softmax_router(j.bool_or("norm_topk_prob", false)?),
                shared,
                gpt_oss: None,
            })
        }
        "deepseek_v2" | "deepseek_v3" => {
            let first_dense = j.usize_or("first_k_dense_replace", 0)?;
            let experts = j.usize_opt("n_routed_experts")?;
            let Some(experts) = experts.filter(|_| i >= first_dense) else {
                return dense("intermediate_size");
            };
            let moe_inter = j.usize("moe_intermediate_size")?;
            let shared = j
                .usize_opt("n_shared_experts")?
                .filter(|&n| n > 0)
                .map(|n| SharedExpert {
                    inter: n * moe_inter,
                    gated: false,
                });
            let scale = j.f64_or("routed_scaling_factor", 1.0)? as f32;
            let v3 = mt == "deepseek_v3";
            let groups = if v3 {
                Some((
                    j.usize_or("n_group", 1)?,
                    j.usize_or("topk_group", 1)?,
                    GroupScore::Top2Sum,
                ))
            } else if j.str_opt("topk_method") == Some("group_limited_greedy") {
                Some((j.usize("n_group")?, j.usize("topk_group")?, GroupScore::Max))
            } else {
                None
            };
            if let Some((g, tg, _)) = groups {
                if g == 0 || experts % g != 0 || tg > g {
                    return Err(Error::Invalid(format!(
                        "{}: n_routed_experts ({experts}) must split into n_group ({g}) groups and topk_group ({tg}) <= n_group",
                        j.file
                    )));
                }
            }
            Ok(Ffn::Moe {
                experts,
                top_k: j.usize("num_experts_per_tok")?,
                inter: moe_inter,
                router: Router {
                    scoring: if v3 { Scoring::Sigmoid } else { Scoring::Softmax },
                    selection_bias: v3,
                    groups,
                    // HF ignores norm_topk_prob for V2; V3 defaults it to true.
                    renormalize: v3 && j.bool_or("norm_topk_prob", true)?,
                    scale,
                    linear_bias: false,
                },
                shared,
                gpt_oss: None,
            })
        }
        "gpt_oss" => Ok(Ffn::Moe {
            experts: expert_count(&["num_local_experts", "num_experts"])?,
            top_k: j.usize("num_experts_per_tok")?,
            inter: j.usize("intermediate_size")?,
            router: Router {
                linear_bias: true,
                ..softmax_router(true)
            },
            shared: None,
            gpt_oss: Some(GptOssExperts {
                limit: j.f64_or("swiglu_limit", 7.0)? as f32,
                alpha: j.f64_or("swiglu_alpha", 1.702)? as f32,
            }),
        }),
        _ => unreachable!("model_type checked against SUPPORTED"),
    }
}
