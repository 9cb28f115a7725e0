//! The physical weight layout, described once. [`layout`] turns a model description into a tree
//! of [`Spec`]s shaped like [`ModelWeights`]: every GPU tensor a forward plan binds, with its shape,
//! chunk grouping, precision rule, how much of it a decode step reads, how a synthetic model fills
//! it, and which checkpoint tensors (transformers names) fill it and how (stacked q|k|v, stacked
//! gate|up, experts stacked `[E * 2I, D]` in groups of 2I, folded shared experts as more experts,
//! MLA's `[q | kv_a]` and per-head `uk_t` / `uv`, stacked biases in f32).
//!
//! [`Layout::make`] is the one walk over that tree: the checkpoint loader
//! ([`loader::load`](super::loader::load)) and the synthetic maker
//! ([`synthetic`](super::synthetic)) each supply a [`Make`] that turns one spec into a GPU tensor,
//! and the walk assembles their tensors into [`ModelWeights`]; [`Layout::for_each`] lists the specs
//! (footprints, progress totals). Scratch sizing reads its projection widths off the weights the
//! walk built. A new fused layout is a change here alone.

use super::config::{Attention, Ffn, ModelConfig, QkNorm};
use super::weights::{AttnWeights, FfnWeights, LayerWeights, Linear, MlaQueryB, ModelWeights, SharedWeights};
use crate::error::Result;
use crate::gpu::DType;

/// The layout of a model: [`ModelWeights`] with a [`Spec`] at every leaf.
pub type Layout = ModelWeights<Spec, Spec>;

/// One GPU tensor of a model.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The GPU label, named in errors (for a single checkpoint tensor, its name).
    pub label: String,
    pub rows: usize,
    pub cols: usize,
    /// Rows that stay together in one binding chunk (one expert).
    pub group_rows: usize,
    pub precision: Precision,
    /// How a synthetic model fills it.
    pub init: Init,
    /// How much of it one decode step reads.
    pub read: Read,
    /// Where a checkpoint keeps its values.
    pub source: Source,
}

/// A spec's element type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Precision {
    /// The weights' own: the checkpoint tensor's (the first part's, when stacked), or the one a
    /// synthetic model is made in.
    Weights,
    /// f32 whatever the weights are (stacked biases; activation-side vectors).
    F32,
}

/// How a synthetic model makes a tensor's values.
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

/// Where a checkpoint keeps a spec's values, by transformers' tensor names.
#[derive(Clone, Debug)]
pub enum Source {
    /// One tensor of this shape (`[n]` for a vector), as it is.
    Tensor { name: String, shape: Vec<usize> },
    /// Matrices `[rows_i, cols]` stacked by rows, converted to the first one's dtype.
    Stacked(Vec<(String, usize)>),
    /// Vectors stacked into one f32 row; a part without a name is zeros.
    Biases(Vec<(Option<String>, usize)>),
    /// One half of MLA's `kv_b_proj` `[H * (nope + v), rank]`, whose rows per head are
    /// `[W_UK_h (nope rows); W_UV_h (v rows)]`: `W_UK_h^T` stacked `[H * rank, nope]` (`uk`), or
    /// `W_UV_h` stacked `[H * v, rank]`.
    KvB {
        name: String,
        heads: usize,
        nope: usize,
        v: usize,
        rank: usize,
        uk: bool,
    },
    /// `experts` routed experts stacked in groups of `group_rows`, then `shared` folded in as more.
    Experts {
        experts: usize,
        routed: Routed,
        shared: Option<Folded>,
    },
}

/// How a checkpoint stores routed experts.
#[derive(Clone, Debug)]
pub enum Routed {
    /// One `[rows, cols]` tensor per expert and projection (`parts`, stacked in order), or, when
    /// the checkpoint has it, transformers 5's in-memory `fused` `[E, group_rows, cols]`.
    PerExpert { parts: Vec<(String, usize)>, fused: String },
    /// gpt-oss's `[E, cols, group_rows]` (`x @ W`; gate|up columns interleaved), each expert
    /// transposed to `[out, in]` rows.
    Transposed(String),
}

/// A shared MLP of `slots * inter` width folded in as experts `E..E + slots` (see
/// [`Ffn::shared_slots`]): shared expert `j` takes gate and up rows `j*I..(j+1)*I` and down
/// columns `j*I..(j+1)*I`.
#[derive(Clone, Debug)]
pub struct Folded {
    pub slots: usize,
    pub inter: usize,
    pub part: FoldedPart,
}

#[derive(Clone, Debug)]
pub enum FoldedPart {
    /// Into the gate|up experts: the shared gate and up projections, `[slots * I, D]` each.
    GateUp { gate: String, up: String },
    /// Into the down experts: the shared down projection `[D, slots * I]`.
    Down(String),
}

/// Which kind of leaf a spec is in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// A [`Weight`](crate::gpu::Weight): rows padded for vector loads, split into binding-sized chunks.
    Weight,
    /// An activation-side f32 [`Tensor`](crate::gpu::Tensor) (sinks, selection bias).
    Tensor,
}

impl Spec {
    /// `rows x cols` from `source`, one row per group, in the weights' precision, filled like a
    /// projection (`1/sqrt(cols)`) and read whole: the common case, adjusted by the setters below.
    fn new(label: impl Into<String>, rows: usize, cols: usize, source: Source) -> Self {
        Self {
            label: label.into(),
            rows,
            cols,
            group_rows: 1,
            precision: Precision::Weights,
            init: Init::Random(1.0 / (cols as f32).sqrt()),
            read: Read::All,
            source,
        }
    }
    fn group(self, group_rows: usize) -> Self {
        Self { group_rows, ..self }
    }
    fn init(self, init: Init) -> Self {
        Self { init, ..self }
    }
    fn read(self, read: Read) -> Self {
        Self { read, ..self }
    }

    /// The element type when the weights are `weights`. Block-quantised weights are for
    /// matrices: rows that are not whole blocks take llama.cpp's fallback type
    /// ([`DType::for_row`]), and vectors (norm gains, biases) f16, as a quantised file has them.
    pub fn dtype(&self, weights: DType) -> DType {
        match self.precision {
            Precision::Weights if weights.is_packed() && self.is_vector() => DType::F16,
            Precision::Weights => weights.for_row(self.cols),
            Precision::F32 => DType::F32,
        }
    }

    /// Norm gains, biases and other vectors (which quantised files keep in float).
    fn is_vector(&self) -> bool {
        matches!(&self.source, Source::Tensor { shape, .. } if shape.len() == 1)
            || matches!(self.source, Source::Biases(_))
            || matches!(self.init, Init::Norm)
    }

    pub fn params(&self) -> u64 {
        (self.rows * self.cols) as u64
    }

    /// Bytes of real data (unpadded) when the weights are `weights`.
    pub fn data_bytes(&self, weights: DType) -> u64 {
        (self.rows * self.row_bytes(weights)) as u64
    }

    /// Bytes of one checkpoint row when the weights are `weights`.
    fn row_bytes(&self, weights: DType) -> usize {
        self.dtype(weights).row_bytes(self.cols).unwrap_or(0)
    }

    /// Bytes on the GPU, row padding included (what [`Weight::gpu_bytes`](crate::gpu::Weight::gpu_bytes) reports).
    pub fn gpu_bytes(&self, weights: DType, leaf: Leaf) -> u64 {
        match leaf {
            Leaf::Tensor => (self.params() * 4).max(16).next_multiple_of(16),
            Leaf::Weight => {
                let f = crate::gpu::Format::of(self.dtype(weights));
                let rows = (self.rows * f.row_stride(self.cols)) as u64;
                // Block formats keep a zero word past each chunk's rows (one chunk, mostly).
                if f.is_blocked() {
                    (rows + 16).next_multiple_of(16)
                } else {
                    rows
                }
            }
        }
    }

    /// Bytes one decode step reads from this tensor.
    pub fn read_bytes(&self, weights: DType) -> f64 {
        self.data_bytes(weights) as f64 * self.read_fraction()
    }

    /// The fraction of this tensor one decode step reads: all of it, one row, or `top_k` of the
    /// experts.
    pub fn read_fraction(&self) -> f64 {
        match self.read {
            Read::All => 1.0,
            Read::Row => 1.0 / self.rows as f64,
            Read::Experts { top_k, experts } => top_k.min(experts) as f64 / experts as f64,
        }
    }
}

/// The values of small tensors: biases and the activation-side vectors.
const BIAS: Init = Init::Random(0.02);

/// One checkpoint tensor `[rows, cols]`.
fn matrix(name: String, rows: usize, cols: usize) -> Spec {
    let source = Source::Tensor {
        name: name.clone(),
        shape: vec![rows, cols],
    };
    Spec::new(name, rows, cols, source)
}

/// One checkpoint vector `[n]` as a `[1, n]` weight.
fn vector(name: String, n: usize) -> Spec {
    let source = Source::Tensor {
        name: name.clone(),
        shape: vec![n],
    };
    Spec::new(name, 1, n, source)
}

/// An RMSNorm gain `[n]`.
fn norm(name: String, n: usize) -> Spec {
    vector(name, n).init(Init::Norm)
}

/// An activation-side f32 vector `[n]` (sinks, selection bias).
fn f32_vector(name: String, n: usize, scale: f32) -> Spec {
    Spec {
        precision: Precision::F32,
        ..vector(name, n).init(Init::Random(scale))
    }
}

/// `{prefix}.weight` `[out, inp]` and, with `bias`, `{prefix}.bias` `[out]`.
fn linear(prefix: &str, out: usize, inp: usize, bias: bool) -> Linear<Spec> {
    Linear {
        w: matrix(format!("{prefix}.weight"), out, inp),
        bias: bias.then(|| vector(format!("{prefix}.bias"), out).init(BIAS)),
    }
}

/// Matrices `[rows_i, cols]` stacked into one, labelled `label`.
fn stacked(label: String, parts: Vec<(String, usize)>, cols: usize) -> Spec {
    let rows = parts.iter().map(|p| p.1).sum();
    Spec::new(label, rows, cols, Source::Stacked(parts))
}

/// Vectors stacked into one f32 row, labelled `label`.
fn biases(label: String, parts: Vec<(Option<String>, usize)>) -> Spec {
    let n = parts.iter().map(|p| p.1).sum();
    Spec {
        precision: Precision::F32,
        ..Spec::new(label, 1, n, Source::Biases(parts)).init(BIAS)
    }
}

/// A projection whose weights are the same-named projections `names` of `m` stacked by rows
/// (`rows` each), with their biases stacked in f32.
fn stacked_linear(m: &str, label: &str, names: &[(&str, usize)], cols: usize, bias: bool) -> Linear<Spec> {
    let part = |kind: &str| -> Vec<(String, usize)> {
        names
            .iter()
            .map(|(n, rows)| (format!("{m}.{n}.{kind}"), *rows))
            .collect()
    };
    Linear {
        w: stacked(format!("{m}.{label}"), part("weight"), cols),
        bias: bias.then(|| {
            let parts = part("bias").into_iter().map(|(n, r)| (Some(n), r)).collect();
            biases(format!("{m}.{label}.bias"), parts)
        }),
    }
}

/// A gated MLP at `m`: gate and up stacked `[2I, D]` (`{m}.gate_up`), and down `[D, I]`.
fn gated_mlp(m: &str, names: [&str; 3], inter: usize, d: usize, bias: bool) -> (Linear<Spec>, Linear<Spec>) {
    let gate_up = stacked_linear(m, "gate_up", &[(names[0], inter), (names[1], inter)], d, bias);
    (gate_up, linear(&format!("{m}.{}", names[2]), d, inter, bias))
}

/// The layout of every weight `cfg` describes, named as transformers saves them (MODELS.md §5-§9).
pub fn layout(cfg: &ModelConfig) -> Layout {
    let d = cfg.hidden;
    let embed_read = if cfg.tie_embeddings { Read::All } else { Read::Row };
    let embed = matrix("model.embed_tokens.weight".into(), cfg.vocab, d)
        .init(Init::Random(1.0))
        .read(embed_read);
    let layers = cfg
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let p = format!("model.layers.{i}");
            LayerWeights {
                attn_norm: norm(format!("{p}.input_layernorm.weight"), d),
                ffn_norm: norm(format!("{p}.post_attention_layernorm.weight"), d),
                attn: attention(cfg, &p),
                ffn: ffn(cfg, &layer.ffn, &p),
            }
        })
        .collect();
    ModelWeights {
        embed,
        norm: norm("model.norm.weight".into(), d),
        lm_head: (!cfg.tie_embeddings).then(|| matrix("lm_head.weight".into(), cfg.vocab, d)),
        layers,
    }
}

fn attention(cfg: &ModelConfig, p: &str) -> AttnWeights<Spec, Spec> {
    let d = cfg.hidden;
    let (h, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
    let a = format!("{p}.self_attn");
    match &cfg.attention {
        Attention::Gqa {
            qkv_bias,
            o_bias,
            qk_norm,
            sinks,
            ..
        } => {
            // q, k and v stacked `[(H + 2KV) * hd, D]`: one matmul per layer.
            let names = [("q_proj", h * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)];
            let norms = match qk_norm {
                QkNorm::None => None,
                QkNorm::PerHead => Some((hd, hd)),
                QkNorm::Full => Some((h * hd, kv * hd)),
            };
            AttnWeights::Gqa {
                qkv: stacked_linear(&a, "qkv", &names, d, *qkv_bias),
                o: linear(&format!("{a}.o_proj"), d, h * hd, *o_bias),
                q_norm: norms.map(|(q, _)| norm(format!("{a}.q_norm.weight"), q)),
                k_norm: norms.map(|(_, k)| norm(format!("{a}.k_norm.weight"), k)),
                sinks: sinks.then(|| f32_vector(format!("{a}.sinks"), h, 0.5)),
            }
        }
        Attention::Mla {
            q_lora_rank,
            kv_lora_rank: r,
            nope_dim: dn,
            rope_dim: dr,
            v_dim: dv,
            bias,
        } => {
            let (r, dn, dr, dv) = (*r, *dn, *dr, *dv);
            // The query (or its low-rank first half) and kv_a both read the normed input: one
            // matmul, `[q | kv_a]` or `[q_a | kv_a]`. q_proj has no bias (zeros in the stacked
            // one); q_a_proj and kv_a do with attention_bias.
            let (q, q_rows) = match q_lora_rank {
                None => (format!("{a}.q_proj"), h * (dn + dr)),
                Some(qr) => (format!("{a}.q_a_proj"), *qr),
            };
            let kv_a = format!("{a}.kv_a_proj_with_mqa");
            let q_bias = q_lora_rank.map(|_| format!("{q}.bias"));
            let q_kv_a = Linear {
                w: stacked(
                    format!("{a}.q_kv_a"),
                    vec![(format!("{q}.weight"), q_rows), (format!("{kv_a}.weight"), r + dr)],
                    d,
                ),
                bias: bias.then(|| {
                    let parts = vec![(q_bias, q_rows), (Some(format!("{kv_a}.bias")), r + dr)];
                    biases(format!("{a}.q_kv_a.bias"), parts)
                }),
            };
            // kv_b split per head into the absorbed `W_UK_h^T` `[H * r, dn]` and `W_UV_h`.
            let kv_b = format!("{a}.kv_b_proj.weight");
            let half = |uk: bool| Source::KvB {
                name: kv_b.clone(),
                heads: h,
                nope: dn,
                v: dv,
                rank: r,
                uk,
            };
            AttnWeights::Mla {
                q_kv_a,
                q_b: q_lora_rank.map(|qr| MlaQueryB {
                    norm: norm(format!("{a}.q_a_layernorm.weight"), qr),
                    b: linear(&format!("{a}.q_b_proj"), h * (dn + dr), qr, false),
                }),
                kv_norm: norm(format!("{a}.kv_a_layernorm.weight"), r),
                uk_t: Spec::new(format!("{kv_b}:uk_t"), h * r, dn, half(true)).group(r),
                uv: Spec::new(format!("{kv_b}:uv"), h * dv, r, half(false)),
                o: linear(&format!("{a}.o_proj"), d, h * dv, *bias),
            }
        }
    }
}

fn ffn(cfg: &ModelConfig, ffn: &Ffn, p: &str) -> FfnWeights<Spec, Spec> {
    let d = cfg.hidden;
    const MLP: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];
    match ffn {
        Ffn::Dense { inter, bias } => {
            let (gate_up, down) = gated_mlp(&format!("{p}.mlp"), MLP, *inter, d, *bias);
            FfnWeights::Dense { gate_up, down }
        }
        Ffn::Moe {
            experts,
            top_k,
            inter,
            router,
            shared,
            gpt_oss,
        } => {
            let (e, i_) = (*experts, *inter);
            let mixtral = cfg.model_type == "mixtral";
            let m = if mixtral {
                format!("{p}.block_sparse_moe")
            } else {
                format!("{p}.mlp")
            };
            let router_name = if gpt_oss.is_some() {
                format!("{m}.router")
            } else {
                format!("{m}.gate")
            };
            let shared_prefix = if cfg.model_type == "qwen2_moe" {
                format!("{m}.shared_expert")
            } else {
                format!("{m}.shared_experts")
            };
            let gate_name = format!("{m}.shared_expert_gate");
            let gated = shared.as_ref().is_some_and(|s| s.gated);
            // Folded shared experts: more experts, each read by every token, and Qwen2-MoE's gate
            // as one more router row (its logit comes out of the router projection).
            let slots = ffn.shared_slots();
            let n = slots.unwrap_or(0);
            let read = Read::Experts {
                top_k: top_k + n,
                experts: e + n,
            };
            let router_lin = if slots.is_some() && gated {
                let parts = vec![(format!("{router_name}.weight"), e), (format!("{gate_name}.weight"), 1)];
                Linear {
                    w: stacked(router_name.clone(), parts, d),
                    bias: None,
                }
            } else {
                linear(&router_name, e, d, router.linear_bias)
            };
            let experts_spec = |what: &str, group: usize, cols: usize, routed: Routed, shared: Option<FoldedPart>| {
                let source = Source::Experts {
                    experts: e,
                    routed,
                    shared: slots.zip(shared).map(|(slots, part)| Folded { slots, inter: i_, part }),
                };
                Spec::new(format!("{m}.experts.{what}"), (e + n) * group, cols, source)
                    .group(group)
                    .read(read)
            };
            let (gate_up, down, gate_up_bias, down_bias) = if gpt_oss.is_some() {
                let t = |name: &str| Routed::Transposed(format!("{m}.experts.{name}"));
                let bias =
                    |name: &str, cols: usize| matrix(format!("{m}.experts.{name}"), e, cols).init(BIAS).read(read);
                (
                    experts_spec("gate_up", 2 * i_, d, t("gate_up_proj"), None),
                    experts_spec("down", d, i_, t("down_proj"), None),
                    Some(bias("gate_up_proj_bias", 2 * i_)),
                    Some(bias("down_proj_bias", d)),
                )
            } else {
                let names = if mixtral { ["w1", "w3", "w2"] } else { MLP };
                let ex = |x: usize, n: &str| format!("{m}.experts.{x}.{n}.weight");
                let gate_up = Routed::PerExpert {
                    parts: (0..e)
                        .flat_map(|x| [(ex(x, names[0]), i_), (ex(x, names[1]), i_)])
                        .collect(),
                    fused: format!("{m}.experts.gate_up_proj"),
                };
                let down = Routed::PerExpert {
                    parts: (0..e).map(|x| (ex(x, names[2]), d)).collect(),
                    fused: format!("{m}.experts.down_proj"),
                };
                let shared_gate_up = FoldedPart::GateUp {
                    gate: format!("{shared_prefix}.gate_proj.weight"),
                    up: format!("{shared_prefix}.up_proj.weight"),
                };
                let shared_down = FoldedPart::Down(format!("{shared_prefix}.down_proj.weight"));
                (
                    experts_spec("gate_up", 2 * i_, d, gate_up, Some(shared_gate_up)),
                    experts_spec("down", d, i_, down, Some(shared_down)),
                    None,
                    None,
                )
            };
            let shared = match (shared, slots) {
                (None, _) => None,
                (Some(_), Some(slots)) => Some(SharedWeights::Folded { slots, gated }),
                (Some(s), None) => {
                    let (gate_up, down) = gated_mlp(&shared_prefix, MLP, s.inter, d, false);
                    let gate = s.gated.then(|| linear(&gate_name, 1, d, false));
                    Some(SharedWeights::Separate { gate_up, down, gate })
                }
            };
            FfnWeights::Moe {
                router: router_lin,
                selection_bias: router
                    .selection_bias
                    .then(|| f32_vector(format!("{m}.gate.e_score_correction_bias"), e, 0.01)),
                gate_up,
                down,
                gate_up_bias,
                down_bias,
                shared,
            }
        }
    }
}

/// Turns specs into GPU tensors: the checkpoint loader, the synthetic maker, or a visitor.
pub trait Make {
    type W;
    type T;
    fn weight(&mut self, spec: &Spec) -> Result<Self::W>;
    fn tensor(&mut self, spec: &Spec) -> Result<Self::T>;
    /// A weight of layer `layer`'s routed experts (gate|up, down or a bias): where experts are
    /// offloaded ([`super::experts`]), the maker keeps them in host memory and returns the GPU
    /// pool the layer binds instead.
    fn experts(&mut self, layer: usize, spec: &Spec) -> Result<Self::W> {
        let _ = layer;
        self.weight(spec)
    }
}

impl Layout {
    /// Every spec made by `m`, in order (the embedding; per layer its norms, attention and FFN in
    /// field order, a linear's weight before its bias; the final norm; the logits head) and
    /// assembled into weights of the same structure.
    pub fn make<M: Make>(&self, m: &mut M) -> Result<ModelWeights<M::W, M::T>> {
        let embed = m.weight(&self.embed)?;
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(LayerWeights {
                    attn_norm: m.weight(&l.attn_norm)?,
                    ffn_norm: m.weight(&l.ffn_norm)?,
                    attn: make_attention(&l.attn, m)?,
                    ffn: make_ffn(i, &l.ffn, m)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelWeights {
            embed,
            layers,
            norm: m.weight(&self.norm)?,
            lm_head: opt(&self.lm_head, |s| m.weight(s))?,
        })
    }

    /// `f` on every spec, in [`Layout::make`]'s order.
    pub fn for_each(&self, f: impl FnMut(&Spec, Leaf)) {
        struct Visit<F>(F);
        impl<F: FnMut(&Spec, Leaf)> Make for Visit<F> {
            type W = ();
            type T = ();
            fn weight(&mut self, spec: &Spec) -> Result<()> {
                (self.0)(spec, Leaf::Weight);
                Ok(())
            }
            fn tensor(&mut self, spec: &Spec) -> Result<()> {
                (self.0)(spec, Leaf::Tensor);
                Ok(())
            }
        }
        // A visit cannot fail.
        let _ = self.make(&mut Visit(f));
    }
}

fn opt<A, B>(x: &Option<A>, f: impl FnOnce(&A) -> Result<B>) -> Result<Option<B>> {
    x.as_ref().map(f).transpose()
}

fn make_linear<M: Make>(l: &Linear<Spec>, m: &mut M) -> Result<Linear<M::W>> {
    Ok(Linear {
        w: m.weight(&l.w)?,
        bias: opt(&l.bias, |s| m.weight(s))?,
    })
}

fn make_attention<M: Make>(a: &AttnWeights<Spec, Spec>, m: &mut M) -> Result<AttnWeights<M::W, M::T>> {
    Ok(match a {
        AttnWeights::Gqa {
            qkv,
            o,
            q_norm,
            k_norm,
            sinks,
        } => AttnWeights::Gqa {
            qkv: make_linear(qkv, m)?,
            o: make_linear(o, m)?,
            q_norm: opt(q_norm, |s| m.weight(s))?,
            k_norm: opt(k_norm, |s| m.weight(s))?,
            sinks: opt(sinks, |s| m.tensor(s))?,
        },
        AttnWeights::Mla {
            q_kv_a,
            q_b,
            kv_norm,
            uk_t,
            uv,
            o,
        } => AttnWeights::Mla {
            q_kv_a: make_linear(q_kv_a, m)?,
            q_b: opt(q_b, |q| {
                Ok(MlaQueryB {
                    norm: m.weight(&q.norm)?,
                    b: make_linear(&q.b, m)?,
                })
            })?,
            kv_norm: m.weight(kv_norm)?,
            uk_t: m.weight(uk_t)?,
            uv: m.weight(uv)?,
            o: make_linear(o, m)?,
        },
    })
}

fn make_ffn<M: Make>(layer: usize, f: &FfnWeights<Spec, Spec>, m: &mut M) -> Result<FfnWeights<M::W, M::T>> {
    Ok(match f {
        FfnWeights::Dense { gate_up, down } => FfnWeights::Dense {
            gate_up: make_linear(gate_up, m)?,
            down: make_linear(down, m)?,
        },
        FfnWeights::Moe {
            router,
            selection_bias,
            gate_up,
            down,
            gate_up_bias,
            down_bias,
            shared,
        } => FfnWeights::Moe {
            router: make_linear(router, m)?,
            selection_bias: opt(selection_bias, |s| m.tensor(s))?,
            gate_up: m.experts(layer, gate_up)?,
            down: m.experts(layer, down)?,
            gate_up_bias: opt(gate_up_bias, |s| m.experts(layer, s))?,
            down_bias: opt(down_bias, |s| m.experts(layer, s))?,
            shared: opt(shared, |s| {
                Ok(match s {
                    SharedWeights::Folded { slots, gated } => SharedWeights::Folded {
                        slots: *slots,
                        gated: *gated,
                    },
                    SharedWeights::Separate { gate_up, down, gate } => SharedWeights::Separate {
                        gate_up: make_linear(gate_up, m)?,
                        down: make_linear(down, m)?,
                        gate: opt(gate, |g| make_linear(g, m))?,
                    },
                })
            })?,
        },
    })
}
