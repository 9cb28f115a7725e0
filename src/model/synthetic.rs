//! Synthetic models: random weights with a real model's shapes, made directly on the GPU (no
//! files, no multi-GB host buffers), so large shapes can be benchmarked without checkpoints
//! (DESIGN.md, *Benchmarks*). The shapes are `config.json` values parsed by
//! [`ModelConfig::from_value`], and the weights are assembled into the same [`ModelWeights`] the
//! checkpoint loader builds, so [`Model::new`] and the forward plan are the same code path as a
//! loaded model.
//!
//! Every tensor comes from the one physical [`layout`] the loader also walks (name, shape, chunk
//! grouping, how a synthetic model fills it, how much of it a decode step reads); the footprint
//! (GPU bytes, parameters, bytes read per generated token) and the weights both come from it.

use super::config::ModelConfig;
use super::layout::{layout, Init, Leaf, Make, Spec};
use super::weights::ModelWeights;
use super::Model;
use crate::error::{Error, Result};
use crate::gpu::{Context, DType, Tensor, Weight};
use serde_json::Value;

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
    let all: Value =
        serde_json::from_str(SHAPES_JSON).map_err(|e| Error::bad_model("synthetic shapes", e.to_string()))?;
    all.get(name).cloned().ok_or_else(|| {
        Error::bad_input(format!(
            "unknown synthetic shape {name:?}: use one of {}",
            SHAPES.join(", ")
        ))
    })
}

/// The model description of a synthetic shape.
pub fn shape_config(name: &str) -> Result<ModelConfig> {
    ModelConfig::from_value(&shape_json(name)?, &format!("synthetic shape {name}"))
}

/// What a model's weights take and what a decode step reads.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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

/// The footprint of a model described by `cfg` with weights in `dtype`, counted over its layout.
pub fn footprint(cfg: &ModelConfig, dtype: DType) -> Footprint {
    let mut fp = Footprint {
        gpu_bytes: 0,
        data_bytes: 0,
        params: 0,
        read_bytes_per_token: 0.0,
    };
    layout(cfg).for_each(|s, leaf| {
        fp.gpu_bytes += s.gpu_bytes(dtype, leaf);
        fp.data_bytes += s.data_bytes(dtype);
        fp.params += s.params();
        fp.read_bytes_per_token += s.read_bytes(dtype);
    });
    fp
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
    /// The GPU memory the model may take; routed experts beyond it are made in host memory with
    /// a GPU cache of them ([`super::experts`]).
    pub cache: super::experts::CacheOptions,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F16,
            seed: 1,
            max_bytes: None,
            cache: Default::default(),
        }
    }
}

/// The error for weights that do not fit: they need `needed` bytes, of which `limit` are allowed
/// where known.
fn too_big(what: &str, dtype: DType, needed: u64, limit: Option<u64>, detail: &str) -> Error {
    let allowed = limit.map_or(String::new(), |l| format!(", but only {} are allowed", human_bytes(l)));
    // Display already says to try a smaller model or a GPU with more memory.
    let hint = if dtype == DType::F32 {
        "; try --dtype f16 or bf16 (half the bytes)"
    } else {
        ""
    };
    Error::OutOfMemory {
        what: format!(
            "{what}'s weights alone in {}, {} ({:.1} GB){allowed}{detail}{hint}",
            dtype.name(),
            human_bytes(needed),
            needed as f64 * 1e-9
        ),
        needed: Some(needed),
        available: limit,
    }
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

/// Host values for `s` (norms in `[0.9, 1.1)`, random in `[-scale, scale)`).
fn host_values(s: &Spec, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..s.rows * s.cols)
        .map(|_| match s.init {
            Init::Norm => 0.9 + 0.2 * rng.unit(),
            Init::Random(scale) => (2.0 * rng.unit() - 1.0) * scale,
        })
        .collect()
}

/// Make one weight on the GPU: large ones filled there by a kernel, small ones (norms, biases,
/// rows that are not whole 16-byte groups) from host values.
fn make_weight(ctx: &Context, s: &Spec, dtype: DType, seed: u32) -> Result<Weight> {
    let host = !dtype.is_packed()
        && (matches!(s.init, Init::Norm)
            || !s.cols.is_multiple_of(dtype.elems_per_vec4())
            || s.rows * s.cols <= 1 << 16);
    match s.init {
        Init::Random(scale) if !host => {
            crate::kernels::bench::random_weight(ctx, &s.label, dtype, s.rows, s.cols, s.group_rows, seed, scale)
        }
        _ => {
            let bytes = dtype.encode(&host_values(s, seed as u64));
            Weight::upload(ctx, &s.label, dtype, s.rows, s.cols, s.group_rows, &bytes)
        }
    }
}

/// Random weights for every tensor `cfg` describes, made on the GPU and assembled by the same
/// layout walk as a loaded checkpoint's. `what` names the model in errors. Running out of GPU
/// memory is an error that says how much the weights need.
pub fn synthesize(ctx: &Context, cfg: &ModelConfig, what: &str, opts: &SynthOptions) -> Result<ModelWeights> {
    Ok(synthesize_offloaded(ctx, cfg, what, opts)?.0)
}

/// [`synthesize`] within `opts.cache`'s GPU memory: the weights and, when routed experts had to be
/// offloaded, their cache.
pub fn synthesize_offloaded(
    ctx: &Context,
    cfg: &ModelConfig,
    what: &str,
    opts: &SynthOptions,
) -> Result<(ModelWeights, Option<super::experts::ExpertCache>)> {
    let layout = layout(cfg);
    let mut needed = 0;
    layout.for_each(|s, leaf| needed += s.gpu_bytes(opts.dtype, leaf));
    check_fits(what, opts.dtype, needed, opts.max_bytes)?;
    if let Some(host) = ctx.memory_limit().filter(|&l| needed > l) {
        return Err(too_big(
            what,
            opts.dtype,
            needed,
            Some(host),
            ": the adapter runs on the CPU, and that is the host memory available",
        ));
    }
    let offload = super::experts::plan_for(ctx, cfg, &layout, &|s| s.dtype(opts.dtype), &opts.cache)?;
    let mut maker = Maker {
        ctx,
        cfg,
        what,
        opts,
        needed,
        made: 0,
        done: 0,
        offload: offload.as_ref(),
        host: Vec::new(),
    };
    let weights = layout.make(&mut maker)?;
    ctx.wait()?;
    let host = std::mem::take(&mut maker.host);
    let cache = offload.map(|o| super::experts::ExpertCache::new(cfg, &o, host));
    Ok((weights, cache))
}

/// Makes each spec of the layout in turn, the `i`th from seed `i` of the model's seed.
struct Maker<'a> {
    ctx: &'a Context,
    cfg: &'a ModelConfig,
    what: &'a str,
    opts: &'a SynthOptions,
    /// GPU bytes of all the weights.
    needed: u64,
    /// Specs made so far.
    made: u32,
    /// GPU bytes made so far.
    done: u64,
    offload: Option<&'a super::experts::Offload>,
    /// The offloaded experts' host parts, by layer.
    host: Vec<(usize, super::experts::HostPart)>,
}

impl Maker<'_> {
    /// `make(seed)` for the next spec, `s`, with an out-of-memory or validation error turned into
    /// one that names the model, the tensor and what was made before it.
    fn scoped<R>(&mut self, s: &Spec, leaf: Leaf, make: impl FnOnce(u32) -> Result<R>) -> Result<R> {
        let (ctx, what, dtype) = (self.ctx, self.what, self.opts.dtype);
        let seed = self.opts.seed.wrapping_mul(0x0100_0193).wrapping_add(self.made);
        let r = ctx.scoped(&s.label, || make(seed)).map_err(|e| match e {
            Error::OutOfMemory { what: detail, .. } => {
                let detail = format!(
                    ": out of memory at {} after {:.1} GiB ({detail})",
                    s.label,
                    gib(self.done)
                );
                too_big(what, dtype, self.needed, None, &detail)
            }
            Error::Device(err) => Error::Device(format!(
                "{what}: making {} failed after {:.1} GiB of weights: {err}",
                s.label,
                gib(self.done)
            )),
            e => e,
        })?;
        self.made += 1;
        self.done += s.gpu_bytes(dtype, leaf);
        Ok(r)
    }
}

impl Make for Maker<'_> {
    type W = Weight;
    type T = Tensor;

    fn weight(&mut self, s: &Spec) -> Result<Weight> {
        let (ctx, dtype) = (self.ctx, s.dtype(self.opts.dtype));
        self.scoped(s, Leaf::Weight, |seed| make_weight(ctx, s, dtype, seed))
    }

    /// Offloaded experts are made in host memory (values from the host generator, so they differ
    /// from a resident synthetic model's).
    fn experts(&mut self, layer: usize, s: &Spec) -> Result<Weight> {
        use super::config::Ffn;
        use super::experts::{offload, HostRows, RowSink};
        let (Some(slots), Ffn::Moe { experts, .. }) =
            (self.offload.and_then(|o| o.slots(layer)), &self.cfg.layers[layer].ffn)
        else {
            return self.weight(s);
        };
        let (ctx, dtype, e) = (self.ctx, s.dtype(self.opts.dtype), *experts);
        let (pool, part) = self.scoped(s, Leaf::Weight, |seed| {
            let host = HostRows::new(&s.label, &[(s.rows, dtype)], s.cols, s.group_rows)?;
            let bytes = match s.init {
                Init::Random(scale) if dtype.is_packed() => crate::gpu::Format::of(dtype)
                    .random_rows(s.rows, s.cols, (seed as u64) << 32, scale)
                    .ok_or_else(|| Error::unsupported(format!("{}: not whole {} blocks", s.label, dtype.name())))?,
                _ => dtype.encode(&host_values(s, seed as u64)),
            };
            host.write_rows(ctx, 0, &bytes)?;
            offload(ctx, s, host, e, slots)
        })?;
        self.host.push((layer, part));
        Ok(pool)
    }

    fn tensor(&mut self, s: &Spec) -> Result<Tensor> {
        let ctx = self.ctx;
        self.scoped(s, Leaf::Tensor, |seed| {
            Ok(Tensor::from_f32(ctx, &s.label, &host_values(s, seed as u64)))
        })
    }
}

/// A model of random weights with the shape `cfg`, through [`Model::new`] like a loaded one.
pub fn model_from_config(ctx: Context, cfg: ModelConfig, what: &str, opts: &SynthOptions) -> Result<Model> {
    let (weights, cache) = synthesize_offloaded(&ctx, &cfg, what, opts)?;
    let mut model = Model::new(ctx, cfg, weights);
    model.experts = cache.map(|c| std::sync::Arc::new(std::sync::Mutex::new(c)));
    Ok(model)
}

/// A model of random weights with the named synthetic shape (see [`SHAPES`]).
pub fn model(ctx: Context, shape: &str, opts: &SynthOptions) -> Result<Model> {
    let cfg = shape_config(shape)?;
    model_from_config(ctx, cfg, &format!("synthetic shape {shape}"), opts)
}
