//! A model's GPU weights. The structure is generic over its leaves: [`ModelWeights`] holds GPU
//! tensors, and with [`Spec`](super::layout::Spec) leaves it is the physical layout
//! ([`super::layout`]), which says what each tensor is made of; the checkpoint loader
//! ([`super::loader`]) and the synthetic maker ([`super::synthetic`]) turn the one into the other.

use crate::gpu::{Tensor, Weight};

/// A linear layer `y = x @ W^T (+ b)`.
pub struct Linear<W = Weight> {
    pub w: W,
    pub bias: Option<W>,
}

/// A low-rank MLA query's second half: `q_a_layernorm` and `q_b_proj` `[H * (dn + dr), q_lora]`.
pub struct MlaQueryB<W = Weight> {
    pub norm: W,
    pub b: Linear<W>,
}

/// `W`: a weight's leaf; `T`: an activation-side f32 vector's.
pub enum AttnWeights<W = Weight, T = Tensor> {
    Gqa {
        /// q, k and v projections stacked: `[(H + 2KV) * hd, D]` (one matmul per layer).
        qkv: Linear<W>,
        o: Linear<W>,
        q_norm: Option<W>,
        k_norm: Option<W>,
        sinks: Option<T>,
    },
    Mla {
        /// The projections of the normed input, stacked into one matmul: `[q | kv_a]`, `[H * (dn +
        /// dr) + r + dr, D]`, or with a low-rank query `[q_a | kv_a]`, `[q_lora + r + dr, D]`.
        q_kv_a: Linear<W>,
        /// The low-rank query's norm and up-projection.
        q_b: Option<MlaQueryB<W>>,
        kv_norm: W,
        /// `W_UK_h^T` per head, stacked `[H * r, nope]`.
        uk_t: W,
        /// `W_UV_h` per head, stacked `[H * v, r]`.
        uv: W,
        o: Linear<W>,
    },
}

/// A MoE block's shared experts.
pub enum SharedWeights<W = Weight> {
    /// Folded into the routed experts ([`Ffn::shared_slots`](super::config::Ffn::shared_slots)):
    /// experts `E..E + slots` of the block's `gate_up` / `down`, and with `gated` the router's last
    /// row is Qwen2-MoE's `shared_expert_gate`.
    Folded { slots: usize, gated: bool },
    /// An MLP of its own (its width is not a multiple of the experts').
    Separate {
        /// gate rows then up rows, `[2 * inter, D]`.
        gate_up: Linear<W>,
        down: Linear<W>,
        /// Qwen2-MoE `shared_expert_gate` `[1, D]`.
        gate: Option<Linear<W>>,
    },
}

pub enum FfnWeights<W = Weight, T = Tensor> {
    Dense {
        /// gate rows then up rows, `[2I, D]`.
        gate_up: Linear<W>,
        down: Linear<W>,
    },
    Moe {
        /// `[E, D]`, or `[E + 1, D]` with Qwen2-MoE's gate of folded shared experts as its last row.
        router: Linear<W>,
        selection_bias: Option<T>,
        /// `[E * 2I, D]` in groups of 2I (gate|up concatenated, or interleaved for gpt-oss); with
        /// folded shared experts, `E + slots` groups.
        gate_up: W,
        /// `[E * D, I]` in groups of D (`E + slots` groups with folded shared experts).
        down: W,
        gate_up_bias: Option<W>,
        down_bias: Option<W>,
        shared: Option<SharedWeights<W>>,
    },
}

pub struct LayerWeights<W = Weight, T = Tensor> {
    pub attn_norm: W,
    pub ffn_norm: W,
    pub attn: AttnWeights<W, T>,
    pub ffn: FfnWeights<W, T>,
}

pub struct ModelWeights<W = Weight, T = Tensor> {
    pub embed: W,
    pub norm: W,
    /// `None`: tied to the embedding.
    pub lm_head: Option<W>,
    pub layers: Vec<LayerWeights<W, T>>,
}

impl ModelWeights {
    /// Every weight matrix and vector of the model (not the activation-side f32 tensors).
    pub fn for_each_weight(&self, mut f: impl FnMut(&Weight)) {
        let lin = |x: &Linear, f: &mut dyn FnMut(&Weight)| {
            f(&x.w);
            if let Some(b) = &x.bias {
                f(b);
            }
        };
        f(&self.embed);
        f(&self.norm);
        if let Some(h) = &self.lm_head {
            f(h);
        }
        for l in &self.layers {
            f(&l.attn_norm);
            f(&l.ffn_norm);
            match &l.attn {
                AttnWeights::Gqa {
                    qkv, o, q_norm, k_norm, ..
                } => {
                    lin(qkv, &mut f);
                    lin(o, &mut f);
                    q_norm.iter().chain(k_norm).for_each(&mut f);
                }
                AttnWeights::Mla {
                    q_kv_a,
                    q_b,
                    kv_norm,
                    uk_t,
                    uv,
                    o,
                    ..
                } => {
                    lin(q_kv_a, &mut f);
                    if let Some(q) = q_b {
                        f(&q.norm);
                        lin(&q.b, &mut f);
                    }
                    f(kv_norm);
                    f(uk_t);
                    f(uv);
                    lin(o, &mut f);
                }
            }
            match &l.ffn {
                FfnWeights::Dense { gate_up, down } => {
                    lin(gate_up, &mut f);
                    lin(down, &mut f);
                }
                FfnWeights::Moe {
                    router,
                    gate_up,
                    down,
                    gate_up_bias,
                    down_bias,
                    shared,
                    ..
                } => {
                    lin(router, &mut f);
                    f(gate_up);
                    f(down);
                    gate_up_bias.iter().chain(down_bias).for_each(&mut f);
                    if let Some(SharedWeights::Separate { gate_up, down, gate }) = shared {
                        lin(gate_up, &mut f);
                        lin(down, &mut f);
                        if let Some(g) = gate {
                            lin(g, &mut f);
                        }
                    }
                }
            }
        }
    }

    /// Bytes the weights take on the GPU.
    pub fn gpu_bytes(&self) -> u64 {
        let mut n = 0;
        self.for_each_weight(|w| n += w.gpu_bytes());
        n
    }

    /// The format holding most of the weights' bytes (a quantised file's headline format: Q4_K for
    /// a Q4_K_M file, whose embedding may be Q6_K).
    pub fn main_format(&self) -> crate::gpu::DType {
        let mut by: Vec<(crate::gpu::DType, u64)> = Vec::new();
        self.for_each_weight(|w| {
            for c in &w.chunks {
                let bytes = c.rows as u64 * c.format().row_bytes(w.cols).unwrap_or(0) as u64;
                match by.iter_mut().find(|(d, _)| *d == c.dtype) {
                    Some((_, n)) => *n += bytes,
                    None => by.push((c.dtype, bytes)),
                }
            }
        });
        by.into_iter()
            .max_by_key(|&(_, n)| n)
            .map_or(self.embed.dtype, |(d, _)| d)
    }
}
