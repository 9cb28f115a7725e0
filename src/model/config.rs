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

/// Sizes larger than this are not plausible for any model, and products of a few of them must not
/// overflow.
const MAX_SIZE: usize = 1 << 24;
/// Positions larger than this are not plausible (the longest contexts are ~10M).
const MAX_POSITIONS: usize = 1 << 30;

/// Typed, range-checked access to one `config.json` (or the config a GGUF file's metadata maps
/// to), with errors that name the key as the file spells it, and the file. A key holding `null`
/// counts as absent; a value of the wrong type or outside its physical range is an error, never a
/// default.
struct Json<'a> {
    v: &'a Value,
    file: &'a str,
    /// Where `v` sits in the file (`"rope_parameters."`), for key names in errors.
    prefix: String,
    /// The key a config key was made from, where the file is not a `config.json` (a GGUF file's
    /// `qwen3moe.embedding_length` for `hidden_size`).
    names: &'a dyn Fn(&str) -> Option<String>,
}

impl Json<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }
    /// `key` as the file names it, quoted.
    fn name(&self, key: &str) -> String {
        let full = format!("{}{key}", self.prefix);
        format!("{:?}", (self.names)(&full).unwrap_or(full))
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| self.bad(key, "a non-negative integer")),
        }
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }
    /// A size that something is later divided by or counted to: a whole number in `1..=max`.
    fn positive_usize_opt(&self, key: &str, max: usize) -> Result<Option<usize>> {
        match self.usize_opt(key)? {
            Some(x) if x == 0 || x > max => Err(self.bad(key, &format!("a whole number from 1 to {max}"))),
            x => Ok(x),
        }
    }
    fn positive_usize(&self, key: &str, max: usize) -> Result<usize> {
        self.positive_usize_opt(key, max)?.ok_or_else(|| self.missing(key))
    }
    fn positive_usize_or(&self, key: &str, max: usize, default: usize) -> Result<usize> {
        Ok(self.positive_usize_opt(key, max)?.unwrap_or(default))
    }
    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad(key, "a number")),
        }
    }
    /// A number inside `range`, described in errors as `want`, and still finite and inside it
    /// when rounded to the f32 the kernels use (1e-300 is not an epsilon > 0).
    fn finite_f64_in(&self, key: &str, range: Range, want: &str) -> Result<Option<f64>> {
        match self.f64_opt(key)? {
            Some(x) if !(x.is_finite() && range.contains(x) && range.contains(x as f32 as f64)) => {
                Err(self.bad(key, want))
            }
            x => Ok(x),
        }
    }
    /// A finite number > 0 (a scale, a frequency base, a factor).
    fn positive_f64(&self, key: &str) -> Result<Option<f64>> {
        self.finite_f64_in(key, Range::Positive, "a finite number > 0")
    }
    fn positive_f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.positive_f64(key)?.unwrap_or(default))
    }
    /// A finite number >= 0 (0 meaning "off" or "the default", as in transformers).
    fn non_negative_f64(&self, key: &str) -> Result<Option<f64>> {
        self.finite_f64_in(key, Range::NonNegative, "a finite number >= 0")
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, "true or false")),
        }
    }
    fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.bad(key, "a string")),
        }
    }
    fn array_opt(&self, key: &str, want: &str) -> Result<Option<&Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_array().map(Some).ok_or_else(|| self.bad(key, want)),
        }
    }
    fn missing(&self, key: &str) -> Error {
        Error::bad_model(self.file, format!("required key {} is missing", self.name(key)))
    }
    fn bad(&self, key: &str, want: &str) -> Error {
        Error::bad_model(
            self.file,
            format!(
                "{} should be {want}, found {}",
                self.name(key),
                shown(self.v.get(key).unwrap_or(&Value::Null))
            ),
        )
    }
    /// An error about values that do not fit together: `what` names them (see [`Json::name`]).
    fn conflict(&self, what: String) -> Error {
        Error::bad_model(self.file, what)
    }
    /// `key <= limit`, the limit being the value of `limit_key`.
    fn at_most(&self, key: &str, value: usize, limit_key: &str, limit: usize) -> Result<()> {
        if value > limit {
            return Err(self.conflict(format!(
                "{} ({value}) should be at most {} ({limit})",
                self.name(key),
                self.name(limit_key)
            )));
        }
        Ok(())
    }
    /// The object under `key`, whose keys are named `key.inner` in errors.
    fn sub<'b>(&'b self, key: &str, v: &'b Value) -> Result<Json<'b>> {
        if !v.is_object() {
            return Err(self.bad(key, "an object"));
        }
        Ok(Json {
            v,
            file: self.file,
            prefix: format!("{}{key}.", self.prefix),
            names: self.names,
        })
    }
}

/// A value as JSON, cut short if long (a list of a thousand layers).
fn shown(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

/// The ranges [`Json::finite_f64_in`] checks.
#[derive(Clone, Copy)]
enum Range {
    Positive,
    NonNegative,
    /// `(0, 1]`.
    UnitInterval,
}

impl Range {
    fn contains(self, x: f64) -> bool {
        match self {
            Range::Positive => x > 0.0,
            Range::NonNegative => x >= 0.0,
            Range::UnitInterval => x > 0.0 && x <= 1.0,
        }
    }
}

impl ModelConfig {
    /// Parse the text of a `config.json`; `file` names it in errors.
    pub fn from_json(text: &str, file: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::bad_model(file, format!("not valid JSON: {e}")))?;
        Self::from_value(&v, file)
    }

    pub fn from_value(v: &Value, file: &str) -> Result<Self> {
        Self::from_value_named(v, file, &|_| None)
    }

    /// [`ModelConfig::from_value`] for a config made from another format: `names` gives the key a
    /// config key (`hidden_size`, or `rope_scaling.factor` inside an object) was made from, so that
    /// errors name what the file holds (a GGUF file's `qwen3moe.embedding_length`).
    pub fn from_value_named(v: &Value, file: &str, names: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        if !v.is_object() {
            return Err(Error::bad_model(
                file,
                format!("should be a JSON object, found {}", shown(v)),
            ));
        }
        let j = Json {
            v,
            file,
            prefix: String::new(),
            names,
        };
        let model_type = j
            .str_opt("model_type")?
            .ok_or_else(|| j.missing("model_type"))?
            .to_string();
        if !SUPPORTED.contains(&model_type.as_str()) {
            return Err(Error::unsupported(format!(
                "{file}: model_type {model_type:?} is not supported; supported: {}",
                SUPPORTED.join(", ")
            )));
        }
        let mt = model_type.as_str();
        // Far above any real model; a corrupt file must not turn into a huge allocation or loop.
        let hidden = j.positive_usize("hidden_size", 1 << 20)?;
        let heads = j.positive_usize("num_attention_heads", 1 << 14)?;
        let n_layers = j.positive_usize("num_hidden_layers", 4096)?;
        let vocab = j.positive_usize("vocab_size", 1 << 26)?;
        let is_mla = mt.starts_with("deepseek");
        let kv_heads = if is_mla {
            heads
        } else {
            j.positive_usize_or("num_key_value_heads", 1 << 14, heads)?
        };
        if !heads.is_multiple_of(kv_heads) {
            return Err(j.conflict(format!(
                "{} ({heads}) should be a multiple of {} ({kv_heads})",
                j.name("num_attention_heads"),
                j.name("num_key_value_heads")
            )));
        }
        let max_position = j.positive_usize_or("max_position_embeddings", MAX_POSITIONS, 4096)?;
        let eps = j
            .finite_f64_in("rms_norm_eps", Range::UnitInterval, "a finite number in (0, 1]")?
            .unwrap_or(1e-6) as f32;

        // RoPE: rope_parameters (transformers 5) or rope_scaling + rope_theta (hub).
        let rope_key = ["rope_parameters", "rope_scaling"]
            .into_iter()
            .find(|k| j.get(k).is_some());
        let rope_params = match rope_key {
            Some(k) => Some(j.sub(k, &v[k])?),
            None => None,
        };
        let default_theta = match mt {
            "mixtral" => 1e6,
            "gpt_oss" => 150000.0,
            _ => 10000.0,
        };
        let theta = match rope_params.as_ref().map(|p| p.positive_f64("rope_theta")).transpose()? {
            Some(Some(t)) => t,
            _ => j.positive_f64_or("rope_theta", default_theta)?,
        } as f32;
        for p in [Some(&j), rope_params.as_ref()].into_iter().flatten() {
            let key = "partial_rotary_factor";
            let f = p.finite_f64_in(key, Range::UnitInterval, "a finite number in (0, 1]")?;
            if f.is_some_and(|f| f != 1.0) {
                return Err(p.bad(key, "1 (partial rotary embeddings are not supported)"));
            }
        }
        let scaling = match &rope_params {
            Some(p) => parse_rope_scaling(p)?,
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
            let nope = j.positive_usize("qk_nope_head_dim", MAX_SIZE)?;
            let rope = j.positive_usize("qk_rope_head_dim", MAX_SIZE)?;
            if !rope.is_multiple_of(2) {
                return Err(j.bad("qk_rope_head_dim", "even (RoPE rotates pairs)"));
            }
            let v = j.positive_usize("v_head_dim", MAX_SIZE)?;
            attention = Attention::Mla {
                q_lora_rank: j.positive_usize_opt("q_lora_rank", MAX_SIZE)?,
                kv_lora_rank: j.positive_usize("kv_lora_rank", MAX_SIZE)?,
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
            head_dim = match j.positive_usize_opt("head_dim", MAX_SIZE)? {
                Some(h) => h,
                None if hidden / heads == 0 => {
                    return Err(j.conflict(format!(
                        "{} ({hidden}) is smaller than {} ({heads}) and there is no {}",
                        j.name("hidden_size"),
                        j.name("num_attention_heads"),
                        j.name("head_dim")
                    )))
                }
                None => hidden / heads,
            };
            if !head_dim.is_multiple_of(2) {
                return Err(j.conflict(format!(
                    "the head size {head_dim} ({} or {} / {}) should be even: RoPE rotates pairs",
                    j.name("head_dim"),
                    j.name("hidden_size"),
                    j.name("num_attention_heads")
                )));
            }
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
                return Err(j.conflict(format!(
                    "olmoe needs {} ({head_dim}) * {} ({heads}) == {} ({hidden})",
                    j.name("head_dim"),
                    j.name("num_attention_heads"),
                    j.name("hidden_size")
                )));
            }
            attention = Attention::Gqa {
                qkv_bias,
                o_bias,
                qk_norm,
                clip_qkv: if mt == "olmoe" {
                    j.positive_f64("clip_qkv")?.map(|c| c as f32)
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
            dtype: j
                .get("dtype")
                .or(j.get("torch_dtype"))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// `rope_parameters` / `rope_scaling`: its `rope_type` (or the hub's `type`) and the fields that
/// type needs, each checked; an unknown type, or fields without a type, is an error.
fn parse_rope_scaling(p: &Json<'_>) -> Result<RopeScaling> {
    let kind = match (p.str_opt("rope_type")?, p.str_opt("type")?) {
        (Some(a), Some(b)) if a != b => {
            return Err(p.conflict(format!(
                "{} ({a:?}) and {} ({b:?}) disagree",
                p.name("rope_type"),
                p.name("type")
            )))
        }
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => {
            // Only the frequency base (transformers 5 writes it here): default RoPE.
            let plain = ["rope_theta", "partial_rotary_factor"];
            if let Some(other) =
                p.v.as_object()
                    .and_then(|o| o.keys().find(|k| !plain.contains(&k.as_str())))
            {
                return Err(p.conflict(format!(
                    "{} is missing, but {} is set: which RoPE scaling is meant?",
                    p.name("rope_type"),
                    p.name(other)
                )));
            }
            "default"
        }
    };
    let positive_f32 = |k: &str| -> Result<Option<f32>> { Ok(p.positive_f64(k)?.map(|v| v as f32)) };
    let non_negative_f32 = |k: &str| -> Result<Option<f32>> { Ok(p.non_negative_f64(k)?.map(|v| v as f32)) };
    let original = "original_max_position_embeddings";
    Ok(match kind {
        "default" | "linear_default" => RopeScaling::Default,
        "yarn" => {
            let factor = positive_f32("factor")?;
            let original_max_position = p.positive_usize_opt(original, MAX_POSITIONS)?;
            if factor.is_none() && original_max_position.is_none() {
                return Err(p.missing("factor"));
            }
            RopeScaling::Yarn {
                factor,
                original_max_position,
                // 0 means the default here, as transformers' `or` reads them.
                beta_fast: non_negative_f32("beta_fast")?,
                beta_slow: non_negative_f32("beta_slow")?,
                mscale: non_negative_f32("mscale")?,
                mscale_all_dim: non_negative_f32("mscale_all_dim")?,
                attention_factor: positive_f32("attention_factor")?,
                truncate: p.bool_or("truncate", true)?,
            }
        }
        "llama3" => {
            let required = |k: &str| positive_f32(k)?.ok_or_else(|| p.missing(k));
            let (low, high) = (required("low_freq_factor")?, required("high_freq_factor")?);
            if high <= low {
                return Err(p.conflict(format!(
                    "{} ({high}) should be larger than {} ({low})",
                    p.name("high_freq_factor"),
                    p.name("low_freq_factor")
                )));
            }
            RopeScaling::Llama3 {
                factor: required("factor")?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position: p.positive_usize(original, MAX_POSITIONS)?,
            }
        }
        other => {
            return Err(p.conflict(format!(
                "{} is {other:?}, which is not supported (default, yarn, llama3)",
                p.name(if p.get("rope_type").is_some() {
                    "rope_type"
                } else {
                    "type"
                })
            )))
        }
    })
}

/// Sliding window per layer (MODELS.md §1, §5.2, §7, §8).
fn layer_windows(j: &Json<'_>, mt: &str, n: usize) -> Result<Vec<Option<usize>>> {
    let window = j.usize_opt("sliding_window")?;
    let windows: Vec<Option<usize>> = if let Some(types) = j.array_opt("layer_types", "a list of layer types")? {
        if types.len() < n {
            return Err(j.bad("layer_types", &format!("a list of {n} layer types")));
        }
        types[..n]
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => window.map(Some).ok_or_else(|| j.missing("sliding_window")),
                Some("full_attention") => Ok(None),
                _ => Err(j.bad("layer_types", "\"sliding_attention\" or \"full_attention\" entries")),
            })
            .collect::<Result<_>>()?
    } else {
        match mt {
            "mixtral" => vec![window; n],
            "gpt_oss" => (0..n).map(|i| window.filter(|_| i % 2 == 0)).collect(),
            "qwen2" | "qwen3" => {
                let max_window_layers = j.usize_or("max_window_layers", n)?;
                let on = j.bool_or("use_sliding_window", false)?;
                (0..n)
                    .map(|i| window.filter(|_| on && i >= max_window_layers))
                    .collect()
            }
            "qwen2_moe" | "qwen3_moe" => {
                let max_window_layers = j.usize_or("max_window_layers", n)?;
                let on = j.bool_or("use_sliding_window", false)?;
                (0..n)
                    .map(|i| window.filter(|_| on && (i + 1) % 2 == 1 && i < max_window_layers))
                    .collect()
            }
            _ => vec![None; n],
        }
    };
    // A window of 0 would show a token nothing, not even itself.
    if windows.contains(&Some(0)) {
        return Err(j.bad("sliding_window", "at least 1 where layers slide"));
    }
    Ok(windows)
}

/// The FFN of layer `i` (MODELS.md §4.1).
fn layer_ffn(j: &Json<'_>, mt: &str, i: usize) -> Result<Ffn> {
    let dense = |key: &str| -> Result<Ffn> {
        Ok(Ffn::Dense {
            inter: j.positive_usize(key, MAX_SIZE)?,
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
    // The first of `keys` present: (its key, its value).
    let expert_count = |keys: &[&'static str]| -> Result<(&'static str, usize)> {
        for &k in keys {
            if let Some(n) = j.positive_usize_opt(k, 1 << 16)? {
                return Ok((k, n));
            }
        }
        Err(j.missing(keys[0]))
    };
    // num_experts_per_tok: at least 1 and at most the experts.
    let top_k = |(experts_key, experts): (&str, usize)| -> Result<usize> {
        let top_k = j.positive_usize("num_experts_per_tok", 1 << 16)?;
        j.at_most("num_experts_per_tok", top_k, experts_key, experts)?;
        Ok(top_k)
    };
    match mt {
        "llama" | "qwen2" | "qwen3" => dense("intermediate_size"),
        "mixtral" | "olmoe" => {
            let experts = if mt == "mixtral" {
                expert_count(&["num_local_experts", "num_experts"])?
            } else {
                expert_count(&["num_experts", "num_local_experts"])?
            };
            Ok(Ffn::Moe {
                experts: experts.1,
                top_k: top_k(experts)?,
                inter: j.positive_usize("intermediate_size", MAX_SIZE)?,
                // Mixtral always renormalises the top-k weights.
                router: softmax_router(mt == "mixtral" || j.bool_or("norm_topk_prob", false)?),
                shared: None,
                gpt_oss: None,
            })
        }
        "qwen2_moe" | "qwen3_moe" => {
            // 0 experts is a dense model, as in transformers.
            let experts_key = ["num_experts", "num_local_experts"]
                .into_iter()
                .find(|k| j.get(k).is_some())
                .ok_or_else(|| j.missing("num_experts"))?;
            let experts = j.usize_opt(experts_key)?.unwrap_or(0);
            if experts > 1 << 16 {
                return Err(j.bad(experts_key, "a whole number from 0 to 65536"));
            }
            let mlp_only = j.array_opt("mlp_only_layers", "a list of layer indices")?;
            let mut dense_layer = false;
            for l in mlp_only.into_iter().flatten() {
                let l = l
                    .as_u64()
                    .ok_or_else(|| j.bad("mlp_only_layers", "a list of layer indices"))?;
                dense_layer |= l == i as u64;
            }
            let step = j.positive_usize_or("decoder_sparse_step", MAX_SIZE, 1)?;
            let is_moe = !dense_layer && experts > 0 && (i + 1).is_multiple_of(step);
            if !is_moe {
                return dense("intermediate_size");
            }
            let shared = if mt == "qwen2_moe" {
                j.usize_opt("shared_expert_intermediate_size")?
                    .filter(|&n| n > 0)
                    .map(|inter| {
                        if inter > MAX_SIZE {
                            return Err(j.bad("shared_expert_intermediate_size", &format!("at most {MAX_SIZE}")));
                        }
                        Ok(SharedExpert { inter, gated: true })
                    })
                    .transpose()?
            } else {
                None
            };
            Ok(Ffn::Moe {
                experts,
                top_k: top_k((experts_key, experts))?,
                inter: j.positive_usize("moe_intermediate_size", MAX_SIZE)?,
                router: softmax_router(j.bool_or("norm_topk_prob", false)?),
                shared,
                gpt_oss: None,
            })
        }
        "deepseek_v2" | "deepseek_v3" => {
            let first_dense = j.usize_or("first_k_dense_replace", 0)?;
            let experts = j.positive_usize_opt("n_routed_experts", 1 << 16)?;
            let Some(experts) = experts.filter(|_| i >= first_dense) else {
                return dense("intermediate_size");
            };
            let top_k = top_k(("n_routed_experts", experts))?;
            let moe_inter = j.positive_usize("moe_intermediate_size", MAX_SIZE)?;
            let shared = j
                .usize_opt("n_shared_experts")?
                .filter(|&n| n > 0)
                .map(|n| {
                    if n > 1 << 10 {
                        return Err(j.bad("n_shared_experts", "at most 1024"));
                    }
                    Ok(SharedExpert {
                        inter: n * moe_inter,
                        gated: false,
                    })
                })
                .transpose()?;
            let scale = j.positive_f64_or("routed_scaling_factor", 1.0)? as f32;
            let v3 = mt == "deepseek_v3";
            let groups = if v3 {
                Some((
                    j.positive_usize_or("n_group", 1 << 16, 1)?,
                    j.positive_usize_or("topk_group", 1 << 16, 1)?,
                    GroupScore::Top2Sum,
                ))
            } else if j.str_opt("topk_method")? == Some("group_limited_greedy") {
                Some((
                    j.positive_usize("n_group", 1 << 16)?,
                    j.positive_usize("topk_group", 1 << 16)?,
                    GroupScore::Max,
                ))
            } else {
                None
            };
            if let Some((g, tg, _)) = groups {
                if !experts.is_multiple_of(g) {
                    return Err(j.conflict(format!(
                        "{} ({experts}) should split evenly into {} ({g}) groups",
                        j.name("n_routed_experts"),
                        j.name("n_group")
                    )));
                }
                j.at_most("topk_group", tg, "n_group", g)?;
                // Experts outside the chosen groups cannot be picked.
                if top_k > tg * (experts / g) {
                    return Err(j.conflict(format!(
                        "{} ({top_k}) should be at most the experts of {} ({tg}) groups of {}",
                        j.name("num_experts_per_tok"),
                        j.name("topk_group"),
                        experts / g
                    )));
                }
            }
            Ok(Ffn::Moe {
                experts,
                top_k,
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
        "gpt_oss" => {
            let experts = expert_count(&["num_local_experts", "num_experts"])?;
            Ok(Ffn::Moe {
                experts: experts.1,
                top_k: top_k(experts)?,
                inter: j.positive_usize("intermediate_size", MAX_SIZE)?,
                router: Router {
                    linear_bias: true,
                    ..softmax_router(true)
                },
                shared: None,
                gpt_oss: Some(GptOssExperts {
                    limit: j.positive_f64_or("swiglu_limit", 7.0)? as f32,
                    alpha: j.positive_f64_or("swiglu_alpha", 1.702)? as f32,
                }),
            })
        }
        _ => unreachable!("model_type checked against SUPPORTED"),
    }
}
