//! Synthetic models: random weights with a real model's shapes, made directly on the GPU (no
//! files, no multi-GB host buffers), so large shapes can be benchmarked without checkpoints
//! (DESIGN.md, *Benchmarks*). The shapes are `config.json` values parsed by
//! [`ModelConfig::from_value`], and the weights are assembled into the same [`ModelWeights`] the
//! checkpoint loader builds, so [`Model::new`] and the forward plan are the same code path as a
//! loaded model.
//!
//! Every tensor is first listed in an [`inventory`] (name, shape, chunk grouping, how much of it a
//! decode step reads); the footprint (GPU bytes, parameters, bytes read per generated token) and
//! the allocation both come from that one list, and assembly checks that every listed tensor is
//! used exactly once.

use super::config::{Attention, Ffn, ModelConfig, QkNorm};
use super::weights::{AttnWeights, FfnWeights, LayerWeights, Linear, MlaQueryB, ModelWeights, SharedWeights};
use super::Model;
use crate::error::{Error, Result};
use crate::gpu::{Context, DType, Tensor, Weight};
use serde_json::Value;
use std::collections::HashMap;

/// The synthetic shapes, in the order they are listed to users.
pub const SHAPES: &[&str] = &[
    "olmoe-1b-7b",
    "qwen3-30b-a3b",
    "deepseek-v2-lite",
    "gpt-oss-20b",
    "mixtral-8x7b",
    "tiny",
];

/// The shapes as transformers `config.json` values (the hub spelling). `scripts/hf_bench.py`
/// carries the same JSON; a test checks that the two agree.
pub const SHAPES_JSON: &str = r#"{
  "olmoe-1b-7b": {
    "model_type": "olmoe", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 16,
    "num_key_value_heads": 16, "intermediate_size": 1024, "num_experts": 64, "num_experts_per_tok": 8,
    "vocab_size": 50304, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 4096,
    "norm_topk_prob": false, "clip_qkv": null, "tie_word_embeddings": false
  },
  "qwen3-30b-a3b": {
    "model_type": "qwen3_moe", "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32,
    "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 6144, "moe_intermediate_size": 768,
    "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": true, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "vocab_size": 151936, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "max_position_embeddings": 40960, "use_sliding_window": false, "tie_word_embeddings": false
  },
  "deepseek-v2-lite": {
    "model_type": "deepseek_v2", "hidden_size": 2048, "num_hidden_layers": 27, "num_attention_heads": 16,
    "num_key_value_heads": 16, "kv_lora_rank": 512, "q_lora_rank": null, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 64, "num_experts_per_tok": 6,
    "moe_intermediate_size": 1408, "n_shared_experts": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1,
    "intermediate_size": 10944, "vocab_size": 102400, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "max_position_embeddings": 163840, "topk_method": "greedy", "routed_scaling_factor": 1.0,
    "norm_topk_prob": false, "attention_bias": false, "tie_word_embeddings": false,
    "rope_scaling": {
      "type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0,
      "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707
    }
  },
  "gpt-oss-20b": {
    "model_type": "gpt_oss", "hidden_size": 2880, "num_hidden_layers": 24, "num_attention_heads": 64,
    "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 2880, "num_local_experts": 32,
    "num_experts_per_tok": 4, "experts_per_token": 4, "vocab_size": 201088, "rms_norm_eps": 1e-05,
    "sliding_window": 128, "rope_theta": 150000.0, "max_position_embeddings": 131072,
    "swiglu_limit": 7.0, "attention_bias": true, "tie_word_embeddings": false,
    "layer_types": [
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention"
    ],
    "rope_scaling": {
      "rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0,
      "beta_slow": 1.0, "truncate": false
    }
  },
  "mixtral-8x7b": {
    "model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "intermediate_size": 14336, "num_local_experts": 8, "num_experts_per_tok": 2,
    "vocab_size": 32000, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
    "sliding_window": null, "tie_word_embeddings": false
  },
  "tiny": {
    "model_type": "qwen3_moe", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "moe_intermediate_size": 128,
    "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": true, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "vocab_size": 1024, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "max_position_embeddings": 2048, "use_sliding_window": false, "tie_word_embeddings": false
  }
}"#;

/// The `config.json` values of a synthetic shape.
pub fn shape_json(name: &str) -> Result<Value> {
    let all: Value = serde_json::from_str(SHAPES_JSON).map_err(|e| Error::Invalid(format!("synthetic shapes: {e}")))?;
    all.get(name).cloned().ok_or_else(|| {
        Error::Invalid(format!(
            "unknown synthetic shape {name:?}: use one of {}",
            SHAPES.join(", ")
        ))
    })
}

/// The model description of a synthetic shape.
pub fn shape_config(name: &str) -> Result<ModelConfig> {
    ModelConfig::from_value(&shape_json(name)?, &format!("synthetic shape {name}"))
}

/// How a tensor's values are made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform in `[-scale, scale)`.
    Random(f32),
    /// Uniform in `[0.9, 1.1)`: RMSNorm gains.
    Norm,
}

/// How much of a tensor one decode step reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Read {
    /// All of it.
    All,
    /// One row (an untied embedding table).
    Row,
    /// `top_k` of `experts` equal groups (stacked routed experts).
    Experts { top_k: usize, experts: usize },
}

/// One tensor of a synthetic model.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// Rows that stay together in one chunk (one expert).
    pub group_rows: usize,
    pub dtype: DType,
    /// An f32 activation-side [`Tensor`] (sinks, selection bias) rather than a [`Weight`].
    pub tensor: bool,
    pub init: Init,
    pub read: Read,
}

impl Entry {
    pub fn params(&self) -> u64 {
        (self.rows * self.cols) as u64
    }

    /// Bytes of real data (unpadded).
    pub fn data_bytes(&self) -> u64 {
        self.params() * self.dtype.bytes() as u64
    }

    /// Bytes on the GPU, row padding included (what [`Weight::gpu_bytes`] reports).
    pub fn gpu_bytes(&self) -> u64 {
        if self.tensor {
            ((self.rows * self.cols) as u64 * 4).max(16).next_multiple_of(16)
        } else {
            (self.rows * Weight::row_words(self.dtype, self.cols) * 4) as u64
        }
    }

    /// Bytes one decode step reads from this tensor.
    pub fn read_bytes(&self) -> f64 {
        let all = self.data_bytes() as f64;
        match self.read {
            Read::All => all,
            Read::Row => (self.cols * self.dtype.bytes()) as f64,
            Read::Experts { top_k, experts } => all * top_k.min(experts) as f64 / experts as f64,
        }
    }
}

/// Every tensor of a model described by `cfg` with weights in `dtype`, in the structure
/// [`weights::load`](super::weights::load) builds (gate|up stacked, MLA's absorbed `uk_t`/`uv`,
/// experts stacked `[E * rows, cols]`).
pub fn inventory(cfg: &ModelConfig, dtype: DType) -> Vec<Entry> {
    let mut v = Inv { v: Vec::new(), dtype };
    let d = cfg.hidden;
    let (h, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
    let embed_read = if cfg.tie_embeddings { Read::All } else { Read::Row };
    v.add("embed".into(), cfg.vocab, d, 1, Init::Random(1.0), embed_read);
    for (i, layer) in cfg.layers.iter().enumerate() {
        let p = format!("layers.{i}");
        v.norm(format!("{p}.attn_norm"), d);
        v.norm(format!("{p}.ffn_norm"), d);
        match &cfg.attention {
            Attention::Gqa {
                qkv_bias,
                o_bias,
                qk_norm,
                sinks,
                ..
            } => {
                // q, k and v stacked `[(H + 2KV) * hd, D]`, their biases stacked in f32 (as loaded).
                v.add(format!("{p}.qkv.weight"), (h + 2 * kv) * hd, d, 1, scaled(d), Read::All);
                if *qkv_bias {
                    v.f32_bias(format!("{p}.qkv.bias"), (h + 2 * kv) * hd);
                }
                v.lin(format!("{p}.o"), d, h * hd, *o_bias);
                let norms = match qk_norm {
                    QkNorm::None => None,
                    QkNorm::PerHead => Some((hd, hd)),
                    QkNorm::Full => Some((h * hd, kv * hd)),
                };
                if let Some((qn, kn)) = norms {
                    v.norm(format!("{p}.q_norm"), qn);
                    v.norm(format!("{p}.k_norm"), kn);
                }
                if *sinks {
                    v.tensor(format!("{p}.sinks"), h, 0.5);
                }
            }
            Attention::Mla {
                q_lora_rank,
                kv_lora_rank: r,
                nope_dim: dn,
                rope_dim: dr,
                v_dim: dv,
                bias: b,
            } => {
                // [q | kv_a] or [q_a | kv_a] stacked, as loaded (the bias in f32).
                let q_rows = q_lora_rank.unwrap_or(h * (dn + dr));
                v.add(
                    format!("{p}.q_kv_a.weight"),
                    q_rows + r + dr,
                    d,
                    1,
                    scaled(d),
                    Read::All,
                );
                if *b {
                    v.f32_bias(format!("{p}.q_kv_a.bias"), q_rows + r + dr);
                }
                if let Some(qr) = q_lora_rank {
                    v.norm(format!("{p}.q_a_norm"), *qr);
                    v.lin(format!("{p}.q_b"), h * (dn + dr), *qr, false);
                }
                v.norm(format!("{p}.kv_norm"), *r);
                v.add(format!("{p}.uk_t"), h * r, *dn, *r, scaled(*dn), Read::All);
                v.add(format!("{p}.uv"), h * dv, *r, 1, scaled(*r), Read::All);
                v.lin(format!("{p}.o"), d, h * dv, *b);
            }
        }
        match &layer.ffn {
            Ffn::Dense { inter, bias: b } => {
                v.add(format!("{p}.gate_up.weight"), 2 * inter, d, 1, scaled(d), Read::All);
                if *b {
                    v.f32_bias(format!("{p}.gate_up.bias"), 2 * inter);
                }
                v.lin(format!("{p}.down"), d, *inter, *b);
            }
            Ffn::Moe {
                experts,
                top_k,
                inter,
                router,
                shared,
                gpt_oss,
            } => {
                let (e, k, i_) = (*experts, *top_k, *inter);
                // Folded shared experts (as the loader folds them): more experts, each read by
                // every token, and Qwen2-MoE's gate as one more router row.
                let folded = layer.ffn.shared_slots();
                let n = folded.unwrap_or(0);
                let gate = folded.is_some() && shared.as_ref().is_some_and(|s| s.gated);
                let ex = Read::Experts {
                    top_k: k + n,
                    experts: e + n,
                };
                v.lin(format!("{p}.router"), e + gate as usize, d, router.linear_bias);
                if router.selection_bias {
                    v.tensor(format!("{p}.selection_bias"), e, 0.01);
                }
                v.add(
                    format!("{p}.experts.gate_up"),
                    (e + n) * 2 * i_,
                    d,
                    2 * i_,
                    scaled(d),
                    ex,
                );
                v.add(format!("{p}.experts.down"), (e + n) * d, i_, d, scaled(i_), ex);
                if gpt_oss.is_some() {
                    v.add(format!("{p}.experts.gate_up_bias"), e, 2 * i_, 1, BIAS, ex);
                    v.add(format!("{p}.experts.down_bias"), e, d, 1, BIAS, ex);
                }
                if let (Some(s), None) = (shared, folded) {
                    v.lin(format!("{p}.shared.gate_up"), 2 * s.inter, d, false);
                    v.lin(format!("{p}.shared.down"), d, s.inter, false);
                    if s.gated {
                        v.lin(format!("{p}.shared.gate"), 1, d, false);
                    }
                }
            }
        }
    }
    v.norm("norm".into(), d);
    if !cfg.tie_embeddings {
        v.add("lm_head".into(), cfg.vocab, d, 1, scaled(d), Read::All);
    }
    v.v
}

const BIAS: Init = Init::Random(0.02);

/// Uniform weights whose products keep activations of order one: `1/sqrt(fan_in)`.
fn scaled(cols: usize) -> Init {
    Init::Random(1.0 / (cols as f32).sqrt())
}

/// The inventory being listed.
struct Inv {
    v: Vec<Entry>,
    dtype: DType,
}

impl Inv {
    fn add(&mut self, name: String, rows: usize, cols: usize, group_rows: usize, init: Init, read: Read) {
        self.v.push(Entry {
            name,
            rows,
            cols,
            group_rows,
            dtype: self.dtype,
            tensor: false,
            init,
            read,
        });
    }
    fn norm(&mut self, name: String, n: usize) {
        self.add(name, 1, n, 1, Init::Norm, Read::All);
    }
    /// An f32 vector on the activation side (sinks, selection bias).
    fn tensor(&mut self, name: String, n: usize, scale: f32) {
        let init = Init::Random(scale);
        self.v.push(Entry {
            name,
            rows: 1,
            cols: n,
            group_rows: 1,
            dtype: DType::F32,
            tensor: true,
            init,
            read: Read::All,
        });
    }
    /// Biases of stacked projections, which the loader stacks in f32.
    fn f32_bias(&mut self, name: String, n: usize) {
        self.v.push(Entry {
            name,
            rows: 1,
            cols: n,
            group_rows: 1,
            dtype: DType::F32,
            tensor: false,
            init: BIAS,
            read: Read::All,
        });
    }
    /// A linear layer `[out, inp]` (`{name}.weight`) and its bias `[1, out]` (`{name}.bias`).
    fn lin(&mut self, name: String, out: usize, inp: usize, bias: bool) {
        self.add(format!("{name}.weight"), out, inp, 1, scaled(inp), Read::All);
        if bias {
            self.add(format!("{name}.bias"), 1, out, 1, BIAS, Read::All);
        }
    }
}

/// What a model's weights take and what a decode step reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Footprint {
    /// Bytes on the GPU, row padding included.
    pub gpu_bytes: u64,
    /// Bytes of real data (a checkpoint's size).
    pub data_bytes: u64,
    pub params: u64,
    /// Weight bytes one generated token reads: every non-expert weight, `top_k` experts per MoE
    /// layer, the shared experts, one embedding row and the logits head.
    pub read_bytes_per_token: f64,
}

pub fn footprint(cfg: &ModelConfig, dtype: DType) -> Footprint {
    let inv = inventory(cfg, dtype);
    Footprint {
        gpu_bytes: inv.iter().map(Entry::gpu_bytes).sum(),
        data_bytes: inv.iter().map(Entry::data_bytes).sum(),
        params: inv.iter().map(Entry::params).sum(),
        read_bytes_per_token: inv.iter().map(Entry::read_bytes).sum(),
    }
}

pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Options of [`synthesize`].
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub dtype: DType,
    pub seed: u32,
    /// Refuse, before allocating anything, weights larger than this many bytes.
    pub max_bytes: Option<u64>,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F16,
            seed: 1,
            max_bytes: None,
        }
    }
}

/// The error for weights that do not fit.
fn too_big(what: &str, dtype: DType, needed: u64, limit: Option<u64>, detail: &str) -> Error {
    let limit = limit.map_or(String::new(), |l| format!(" but only {} are allowed", human_bytes(l)));
    let hint = if dtype == DType::F32 {
        "--dtype f16 or bf16 (half the bytes)"
    } else {
        "a smaller shape"
    };
    Error::Invalid(format!(
        "{what} in {} needs {} ({:.1} GB) of GPU memory for its weights alone{limit}{detail}; \
         try {hint} or a GPU with more memory",
        dtype.name(),
        human_bytes(needed),
        needed as f64 * 1e-9
    ))
}

/// `bytes` in GiB (MiB below one GiB).
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1 << 30 {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.2} GiB", gib(bytes))
    }
}

/// Check that `needed` weight bytes fit `limit`, before anything is allocated.
pub fn check_fits(what: &str, dtype: DType, needed: u64, limit: Option<u64>) -> Result<()> {
    match limit {
        Some(l) if needed > l => Err(too_big(what, dtype, needed, limit, "")),
        _ => Ok(()),
    }
}

/// xorshift64*: host-side values for the small tensors (norms, biases).
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Host values for `e` (norms in `[0.9, 1.1)`, random in `[-scale, scale)`).
fn host_values(e: &Entry, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..e.rows * e.cols)
        .map(|_| match e.init {
            Init::Norm => 0.9 + 0.2 * rng.unit(),
            Init::Random(s) => (2.0 * rng.unit() - 1.0) * s,
        })
        .collect()
}

enum Made {
    W(Weight),
    T(Tensor),
}

/// Make one tensor on the GPU: large ones filled there by a kernel, small ones (norms, biases,
/// rows that are not whole 16-byte groups) from host values.
fn make(ctx: &Context, e: &Entry, seed: u32) -> Result<Made> {
    if e.tensor {
        return Ok(Made::T(Tensor::from_f32(ctx, &e.name, &host_values(e, seed as u64))));
    }
    let host =
        matches!(e.init, Init::Norm) || !e.cols.is_multiple_of(e.dtype.elems_per_vec4()) || e.rows * e.cols <= 1 << 16;
    match e.init {
        Init::Random(scale) if !host => Ok(Made::W(crate::kernels::bench::random_weight(
            ctx,
            &e.name,
            e.dtype,
            e.rows,
            e.cols,
            e.group_rows,
            seed,
            scale,
        )?)),
        _ => {
            let bytes = e.dtype.encode(&host_values(e, seed as u64));
            Ok(Made::W(Weight::upload(
                ctx,
                &e.name,
                e.dtype,
                e.rows,
                e.cols,
                e.group_rows,
                &bytes,
            )?))
        }
    }
}

/// Random weights for every tensor `cfg` describes, made on the GPU and assembled as
/// [`weights::load`](super::weights::load) assembles a checkpoint. `what` names the model in
/// errors. Running out of GPU memory is an error that says how much the weights need.
pub fn synthesize(ctx: &Context, cfg: &ModelConfig, what: &str, opts: &SynthOptions) -> Result<ModelWeights> {
    let inv = inventory(cfg, opts.dtype);
    let needed: u64 = inv.iter().map(Entry::gpu_bytes).sum();
    check_fits(what, opts.dtype, needed, opts.max_bytes)?;
    let mut made = HashMap::with_capacity(inv.len());
    let mut done = 0u64;
    for (i, e) in inv.iter().enumerate() {
        let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = make(ctx, e, opts.seed.wrapping_mul(0x0100_0193).wrapping_add(i as u32));
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(err) = oom {
            let detail = format!(
                " (the GPU ran out of memory at {} after {:.1} GiB: {err})",
                e.name,
                gib(done)
            );
            return Err(too_big(what, opts.dtype, needed, None, &detail));
        }
        if let Some(err) = invalid {
            return Err(Error::Gpu(format!(
                "{what}: making {} failed after {:.1} GiB of weights: {err}",
                e.name,
                gib(done)
            )));
        }
        made.insert(e.name.clone(), r?);
        done += e.gpu_bytes();
    }
    ctx.wait()?;
    assemble(cfg, made)
}

/// The pieces of [`ModelWeights`] by name, each taken exactly once.
struct Parts(HashMap<String, Made>);

impl Parts {
    fn w(&mut self, name: &str) -> Result<Weight> {
        match self.0.remove(name) {
            Some(Made::W(w)) => Ok(w),
            _ => Err(Error::Invalid(format!("synthetic weights: no weight {name}"))),
        }
    }
    fn t(&mut self, name: &str) -> Result<Tensor> {
        match self.0.remove(name) {
            Some(Made::T(t)) => Ok(t),
            _ => Err(Error::Invalid(format!("synthetic weights: no tensor {name}"))),
        }
    }
    fn opt_w(&mut self, name: &str) -> Option<Weight> {
        self.w(name).ok()
    }
    fn lin(&mut self, name: &str) -> Result<Linear> {
        Ok(Linear {
            w: self.w(&format!("{name}.weight"))?,
            bias: self.opt_w(&format!("{name}.bias")),
        })
    }
}

fn assemble(cfg: &ModelConfig, made: HashMap<String, Made>) -> Result<ModelWeights> {
    let mut m = Parts(made);
    let embed = m.w("embed")?;
    let mut layers = Vec::with_capacity(cfg.layers.len());
    for (i, layer) in cfg.layers.iter().enumerate() {
        let p = format!("layers.{i}");
        let attn_norm = m.w(&format!("{p}.attn_norm"))?;
        let ffn_norm = m.w(&format!("{p}.ffn_norm"))?;
        let attn = match &cfg.attention {
            Attention::Gqa { sinks, .. } => AttnWeights::Gqa {
                qkv: m.lin(&format!("{p}.qkv"))?,
                o: m.lin(&format!("{p}.o"))?,
                q_norm: m.opt_w(&format!("{p}.q_norm")),
                k_norm: m.opt_w(&format!("{p}.k_norm")),
                sinks: if *sinks {
                    Some(m.t(&format!("{p}.sinks"))?)
                } else {
                    None
                },
            },
            Attention::Mla { q_lora_rank, .. } => AttnWeights::Mla {
                q_kv_a: m.lin(&format!("{p}.q_kv_a"))?,
                q_b: match q_lora_rank {
                    None => None,
                    Some(_) => Some(MlaQueryB {
                        norm: m.w(&format!("{p}.q_a_norm"))?,
                        b: m.lin(&format!("{p}.q_b"))?,
                    }),
                },
                kv_norm: m.w(&format!("{p}.kv_norm"))?,
                uk_t: m.w(&format!("{p}.uk_t"))?,
                uv: m.w(&format!("{p}.uv"))?,
                o: m.lin(&format!("{p}.o"))?,
            },
        };
        let ffn = match &layer.ffn {
            Ffn::Dense { .. } => FfnWeights::Dense {
                gate_up: m.lin(&format!("{p}.gate_up"))?,
                down: m.lin(&format!("{p}.down"))?,
            },
            ffn @ Ffn::Moe { router, shared, .. } => FfnWeights::Moe {
                router: m.lin(&format!("{p}.router"))?,
                selection_bias: if router.selection_bias {
                    Some(m.t(&format!("{p}.selection_bias"))?)
                } else {
                    None
                },
                gate_up: m.w(&format!("{p}.experts.gate_up"))?,
                down: m.w(&format!("{p}.experts.down"))?,
                gate_up_bias: m.opt_w(&format!("{p}.experts.gate_up_bias")),
                down_bias: m.opt_w(&format!("{p}.experts.down_bias")),
                shared: match (shared, ffn.shared_slots()) {
                    (None, _) => None,
                    (Some(s), Some(slots)) => Some(SharedWeights::Folded { slots, gated: s.gated }),
                    (Some(s), None) => Some(SharedWeights::Separate {
                        gate_up: m.lin(&format!("{p}.shared.gate_up"))?,
                        down: m.lin(&format!("{p}.shared.down"))?,
                        gate: if s.gated {
                            Some(m.lin(&format!("{p}.shared.gate"))?)
                        } else {
                            None
                        },
                    }),
                },
            },
        };
        layers.push(LayerWeights {
            attn_norm,
            ffn_norm,
            attn,
            ffn,
        });
    }
    let norm = m.w("norm")?;
    let lm_head = if cfg.tie_embeddings {
        None
    } else {
        Some(m.w("lm_head")?)
    };
    if !m.0.is_empty() {
        let mut left: Vec<&String> = m.0.keys().collect();
        left.sort();
        return Err(Error::Invalid(format!(
            "synthetic weights: tensors made but not used: {left:?}"
        )));
    }
    Ok(ModelWeights {
        embed,
        norm,
        lm_head,
        layers,
    })
}

/// A model of random weights with the shape `cfg`, through [`Model::new`] like a loaded one.
pub fn model_from_config(ctx: Context, cfg: ModelConfig, what: &str, opts: &SynthOptions) -> Result<Model> {
    let weights = synthesize(&ctx, &cfg, what, opts)?;
    Ok(Model::new(ctx, cfg, weights))
}

/// A model of random weights with the named synthetic shape (see [`SHAPES`]).
pub fn model(ctx: Context, shape: &str, opts: &SynthOptions) -> Result<Model> {
    let cfg = shape_config(shape)?;
    model_from_config(ctx, cfg, &format!("synthetic shape {shape}"), opts)
}
