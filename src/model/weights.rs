//! Checkpoint tensors to GPU weights, named as transformers saves them (MODELS.md §5-§9). Every
//! tensor's shape is checked against the model description before it is uploaded; fused forms
//! (gate|up stacked, MLA's per-head absorbed blocks, gpt-oss's `[E, in, out]` experts) are built
//! here, piece by piece, so host memory stays at one source tensor.

use super::config::{Attention, Ffn, ModelConfig, QkNorm};
use super::source::{RawTensor, TensorSource};
use crate::error::{Error, Result};
use crate::gpu::{Context, DType, Tensor, Weight};

/// A linear layer `y = x @ W^T (+ b)`.
pub struct Linear {
    pub w: Weight,
    pub bias: Option<Weight>,
}

/// A low-rank MLA query's second half: `q_a_layernorm` and `q_b_proj` `[H * (dn + dr), q_lora]`.
pub struct MlaQueryB {
    pub norm: Weight,
    pub b: Linear,
}

pub enum AttnWeights {
    Gqa {
        /// q, k and v projections stacked: `[(H + 2KV) * hd, D]` (one matmul per layer).
        qkv: Linear,
        o: Linear,
        q_norm: Option<Weight>,
        k_norm: Option<Weight>,
        sinks: Option<Tensor>,
    },
    Mla {
        /// The projections of the normed input, stacked into one matmul: `[q | kv_a]`, `[H * (dn +
        /// dr) + r + dr, D]`, or with a low-rank query `[q_a | kv_a]`, `[q_lora + r + dr, D]`.
        q_kv_a: Linear,
        /// The low-rank query's norm and up-projection.
        q_b: Option<MlaQueryB>,
        kv_norm: Weight,
        /// `W_UK_h^T` per head, stacked `[H * r, nope]`.
        uk_t: Weight,
        /// `W_UV_h` per head, stacked `[H * v, r]`.
        uv: Weight,
        o: Linear,
    },
}

/// A MoE block's shared experts.
pub enum SharedWeights {
    /// Folded into the routed experts ([`Ffn::shared_slots`]): experts `E..E + slots` of the
    /// block's `gate_up` / `down`, and with `gated` the router's last row is Qwen2-MoE's
    /// `shared_expert_gate`.
    Folded { slots: usize, gated: bool },
    /// An MLP of its own (its width is not a multiple of the experts').
    Separate {
        /// gate rows then up rows, `[2 * inter, D]`.
        gate_up: Linear,
        down: Linear,
        /// Qwen2-MoE `shared_expert_gate` `[1, D]`.
        gate: Option<Linear>,
    },
}

pub enum FfnWeights {
    Dense {
        /// gate rows then up rows, `[2I, D]`.
        gate_up: Linear,
        down: Linear,
    },
    Moe {
        router: Linear,
        selection_bias: Option<Tensor>,
        /// `[E * 2I, D]` in groups of 2I (gate|up concatenated, or interleaved for gpt-oss); with
        /// folded shared experts, `E + slots` groups.
        gate_up: Weight,
        /// `[E * D, I]` in groups of D (`E + slots` groups with folded shared experts).
        down: Weight,
        gate_up_bias: Option<Weight>,
        down_bias: Option<Weight>,
        shared: Option<SharedWeights>,
    },
}

pub struct LayerWeights {
    pub attn_norm: Weight,
    pub ffn_norm: Weight,
    pub attn: AttnWeights,
    pub ffn: FfnWeights,
}

pub struct ModelWeights {
    pub embed: Weight,
    pub norm: Weight,
    /// `None`: tied to the embedding.
    pub lm_head: Option<Weight>,
    pub layers: Vec<LayerWeights>,
}

impl ModelWeights {
    pub fn gpu_bytes(&self) -> u64 {
        let mut n = self.embed.gpu_bytes() + self.lm_head.as_ref().map_or(0, Weight::gpu_bytes);
        for l in &self.layers {
            n += l.attn_norm.gpu_bytes() + l.ffn_norm.gpu_bytes();
            let lin = |x: &Linear| x.w.gpu_bytes() + x.bias.as_ref().map_or(0, Weight::gpu_bytes);
            n += match &l.attn {
                AttnWeights::Gqa { qkv, o, .. } => lin(qkv) + lin(o),
                AttnWeights::Mla {
                    q_kv_a,
                    q_b,
                    uk_t,
                    uv,
                    o,
                    ..
                } => lin(q_kv_a) + q_b.as_ref().map_or(0, |q| lin(&q.b)) + uk_t.gpu_bytes() + uv.gpu_bytes() + lin(o),
            };
            n += match &l.ffn {
                FfnWeights::Dense { gate_up, down } => lin(gate_up) + lin(down),
                FfnWeights::Moe {
                    router,
                    gate_up,
                    down,
                    shared,
                    ..
                } => {
                    lin(router)
                        + gate_up.gpu_bytes()
                        + down.gpu_bytes()
                        + match shared {
                            Some(SharedWeights::Separate { gate_up, down, gate }) => {
                                lin(gate_up) + lin(down) + gate.as_ref().map_or(0, lin)
                            }
                            _ => 0,
                        }
                }
            };
        }
        n
    }
}

/// Loads tensors from one source, checking shapes and reporting progress.
pub struct Loader<'a> {
    pub ctx: &'a Context,
    pub src: &'a dyn TensorSource,
    /// Called with (tensors done, tensors total) after each tensor.
    pub progress: &'a dyn Fn(usize, usize),
    pub done: usize,
    pub total: usize,
}

/// A tensor's values in `dtype` (its own bytes when it already is; converted otherwise).
fn bytes_as<'a>(t: &'a RawTensor<'_>, dtype: DType) -> Result<std::borrow::Cow<'a, [u8]>> {
    if t.gpu_dtype()? == dtype {
        return Ok(std::borrow::Cow::Borrowed(&t.bytes));
    }
    Ok(std::borrow::Cow::Owned(dtype.encode(&t.to_f32()?)))
}

/// `[rows, cols]` row-major bytes transposed to `[cols, rows]`.
fn transpose(bytes: &[u8], rows: usize, cols: usize, elem: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let s = (r * cols + c) * elem;
            let d = (c * rows + r) * elem;
            out[d..d + elem].copy_from_slice(&bytes[s..s + elem]);
        }
    }
    out
}

impl Loader<'_> {
    fn tick(&mut self) {
        self.done += 1;
        (self.progress)(self.done, self.total);
    }

    fn raw(&self, name: &str, shape: &[usize]) -> Result<RawTensor<'_>> {
        let t = self.src.get(name)?;
        t.expect_shape(shape)?;
        t.gpu_dtype()?;
        Ok(t)
    }

    /// A matrix `[rows, cols]` (a vector is `[1, n]`).
    pub fn matrix(&mut self, name: &str, shape: &[usize]) -> Result<Weight> {
        let t = self.raw(name, shape)?;
        let dtype = t.gpu_dtype()?;
        let (rows, cols) = match shape {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => return Err(Error::Invalid(format!("{name}: unexpected rank {}", shape.len()))),
        };
        let w = Weight::upload(self.ctx, name, dtype, rows, cols, 1, &t.bytes)?;
        self.tick();
        Ok(w)
    }

    /// An f32 activation-side vector (sinks, selection bias).
    pub fn vector_f32(&mut self, name: &str, len: usize) -> Result<Tensor> {
        let t = self.raw(name, &[len])?;
        let v = Tensor::from_f32(self.ctx, name, &t.to_f32()?);
        self.tick();
        Ok(v)
    }

    pub fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let w = self.matrix(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = if bias {
            Some(self.matrix(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear { w, bias })
    }

    /// Several `[rows_i, cols]` tensors stacked into one weight (in the first one's dtype), each
    /// uploaded as it is read. `group_rows` marks indivisible groups (one expert).
    pub fn stacked(
        &mut self,
        label: &str,
        parts: &[(String, usize)],
        cols: usize,
        group_rows: usize,
    ) -> Result<Weight> {
        self.stacked_with_room(label, parts, cols, group_rows, 0)
    }

    /// [`Loader::stacked`] with `room` more zeroed rows after the parts, for the caller to fill.
    fn stacked_with_room(
        &mut self,
        label: &str,
        parts: &[(String, usize)],
        cols: usize,
        group_rows: usize,
        room: usize,
    ) -> Result<Weight> {
        let first = self.raw(&parts[0].0, &[parts[0].1, cols])?;
        let dtype = first.gpu_dtype()?;
        drop(first);
        let rows: usize = parts.iter().map(|p| p.1).sum::<usize>() + room;
        let w = Weight::alloc(
            self.ctx,
            label,
            dtype,
            rows,
            cols,
            group_rows,
            self.ctx.caps.max_storage_binding,
        )?;
        let mut row = 0;
        for (name, r) in parts {
            let t = self.raw(name, &[*r, cols])?;
            w.write_rows(self.ctx, row, &bytes_as(&t, dtype)?)?;
            row += r;
            self.tick();
        }
        Ok(w)
    }

    /// Biases of several linears stacked into one `[1, sum]` vector.
    fn stacked_bias(&mut self, label: &str, parts: &[(String, usize)]) -> Result<Weight> {
        let mut values = Vec::new();
        for (name, n) in parts {
            values.extend(self.raw(name, &[*n])?.to_f32()?);
            self.tick();
        }
        Weight::from_f32(self.ctx, label, DType::F32, 1, values.len(), &values)
    }
}

fn layer_tensor_count(cfg: &ModelConfig) -> usize {
    // Only for the progress bar: roughly the number of tensors read.
    cfg.layers
        .iter()
        .map(|l| match &l.ffn {
            Ffn::Dense { .. } => 12,
            Ffn::Moe { experts, shared, .. } => 12 + 3 * experts + shared.as_ref().map_or(0, |_| 4),
        })
        .sum::<usize>()
        + 3
}

/// Load every weight `cfg` describes from `src`.
pub fn load(
    ctx: &Context,
    cfg: &ModelConfig,
    src: &dyn TensorSource,
    progress: &dyn Fn(usize, usize),
) -> Result<ModelWeights> {
    let mut l = Loader {
        ctx,
        src,
        progress,
        done: 0,
        total: layer_tensor_count(cfg),
    };
    let d = cfg.hidden;
    let embed = l.matrix("model.embed_tokens.weight", &[cfg.vocab, d])?;
    let mut layers = Vec::with_capacity(cfg.layers.len());
    for (i, layer) in cfg.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let attn_norm = l.matrix(&format!("{p}.input_layernorm.weight"), &[d])?;
        let ffn_norm = l.matrix(&format!("{p}.post_attention_layernorm.weight"), &[d])?;
        let attn = load_attention(&mut l, cfg, &p)?;
        let ffn = load_ffn(&mut l, cfg, &layer.ffn, &p)?;
        layers.push(LayerWeights {
            attn_norm,
            ffn_norm,
            attn,
            ffn,
        });
    }
    let norm = l.matrix("model.norm.weight", &[d])?;
    let lm_head = if cfg.tie_embeddings || !src.contains("lm_head.weight") {
        None
    } else {
        Some(l.matrix("lm_head.weight", &[cfg.vocab, d])?)
    };
    Ok(ModelWeights {
        embed,
        norm,
        lm_head,
        layers,
    })
}

fn load_attention(l: &mut Loader<'_>, cfg: &ModelConfig, p: &str) -> Result<AttnWeights> {
    let d = cfg.hidden;
    let (h, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
    match &cfg.attention {
        Attention::Gqa {
            qkv_bias,
            o_bias,
            qk_norm,
            sinks,
            ..
        } => {
            let a = format!("{p}.self_attn");
            let part = |n: &str, rows: usize| (format!("{a}.{n}_proj.weight"), rows);
            let parts = [part("q", h * hd), part("k", kv * hd), part("v", kv * hd)];
            let w = l.stacked(&format!("{a}.qkv"), &parts, d, 1)?;
            let bias = if *qkv_bias {
                let part = |n: &str, rows: usize| (format!("{a}.{n}_proj.bias"), rows);
                Some(l.stacked_bias(
                    &format!("{a}.qkv.bias"),
                    &[part("q", h * hd), part("k", kv * hd), part("v", kv * hd)],
                )?)
            } else {
                None
            };
            let qkv = Linear { w, bias };
            let o = l.linear(&format!("{a}.o_proj"), d, h * hd, *o_bias)?;
            let (qn, kn) = match qk_norm {
                QkNorm::None => (None, None),
                QkNorm::PerHead => (
                    Some(l.matrix(&format!("{a}.q_norm.weight"), &[hd])?),
                    Some(l.matrix(&format!("{a}.k_norm.weight"), &[hd])?),
                ),
                QkNorm::Full => (
                    Some(l.matrix(&format!("{a}.q_norm.weight"), &[h * hd])?),
                    Some(l.matrix(&format!("{a}.k_norm.weight"), &[kv * hd])?),
                ),
            };
            let sinks = if *sinks {
                Some(l.vector_f32(&format!("{a}.sinks"), h)?)
            } else {
                None
            };
            Ok(AttnWeights::Gqa {
                qkv,
                o,
                q_norm: qn,
                k_norm: kn,
                sinks,
            })
        }
        Attention::Mla {
            q_lora_rank,
            kv_lora_rank: r,
            nope_dim: dn,
            rope_dim: dr,
            v_dim: dv,
            bias,
        } => {
            let a = format!("{p}.self_attn");
            // The query (or its low-rank first half) and kv_a both read the normed input: one
            // matmul. q_proj has no bias; q_a_proj and kv_a do with attention_bias.
            let (q_name, q_rows) = match q_lora_rank {
                None => ("q_proj", h * (dn + dr)),
                Some(qr) => ("q_a_proj", *qr),
            };
            let kv_a_name = format!("{a}.kv_a_proj_with_mqa");
            let parts = [
                (format!("{a}.{q_name}.weight"), q_rows),
                (format!("{kv_a_name}.weight"), r + dr),
            ];
            let w = l.stacked(&format!("{a}.q_kv_a"), &parts, d, 1)?;
            let stacked_bias = if *bias {
                let mut v = match q_lora_rank {
                    None => vec![0.0; q_rows],
                    Some(_) => l.raw(&format!("{a}.{q_name}.bias"), &[q_rows])?.to_f32()?,
                };
                v.extend(l.raw(&format!("{kv_a_name}.bias"), &[r + dr])?.to_f32()?);
                Some(Weight::from_f32(l.ctx, "q_kv_a.bias", DType::F32, 1, v.len(), &v)?)
            } else {
                None
            };
            let q_kv_a = Linear { w, bias: stacked_bias };
            let q_b = match q_lora_rank {
                None => None,
                Some(qr) => Some(MlaQueryB {
                    norm: l.matrix(&format!("{a}.q_a_layernorm.weight"), &[*qr])?,
                    b: l.linear(&format!("{a}.q_b_proj"), h * (dn + dr), *qr, false)?,
                }),
            };
            let kv_norm = l.matrix(&format!("{a}.kv_a_layernorm.weight"), &[*r])?;
            // kv_b rows per head: [W_UK_h (dn rows) ; W_UV_h (dv rows)], each row r wide.
            let name = format!("{a}.kv_b_proj.weight");
            let kvb = l.raw(&name, &[h * (dn + dv), *r])?;
            let dtype = kvb.gpu_dtype()?;
            let e = dtype.bytes();
            let (mut uk_t, mut uv) = (Vec::new(), Vec::new());
            for head in 0..h {
                let base = head * (dn + dv) * r * e;
                uk_t.extend(transpose(&kvb.bytes[base..base + dn * r * e], *dn, *r, e));
                uv.extend_from_slice(&kvb.bytes[base + dn * r * e..base + (dn + dv) * r * e]);
            }
            drop(kvb);
            let uk_t = Weight::upload(l.ctx, &format!("{name}:uk_t"), dtype, h * r, *dn, *r, &uk_t)?;
            let uv = Weight::upload(l.ctx, &format!("{name}:uv"), dtype, h * dv, *r, 1, &uv)?;
            l.tick();
            let o = l.linear(&format!("{a}.o_proj"), d, h * dv, *bias)?;
            Ok(AttnWeights::Mla {
                q_kv_a,
                q_b,
                kv_norm,
                uk_t,
                uv,
                o,
            })
        }
    }
}

fn load_ffn(l: &mut Loader<'_>, cfg: &ModelConfig, ffn: &Ffn, p: &str) -> Result<FfnWeights> {
    let d = cfg.hidden;
    match ffn {
        Ffn::Dense { inter, bias } => {
            let m = format!("{p}.mlp");
            let (gate_up, down) = gated_mlp(l, &m, ["gate_proj", "up_proj", "down_proj"], *inter, d, *bias)?;
            Ok(FfnWeights::Dense { gate_up, down })
        }
        Ffn::Moe {
            experts,
            top_k: _,
            inter,
            router,
            shared,
            gpt_oss,
        } => {
            let i_ = *inter;
            let e = *experts;
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
            let slots = ffn.shared_slots();
            let room = slots.unwrap_or(0);
            let shared_prefix = if cfg.model_type == "qwen2_moe" {
                format!("{m}.shared_expert")
            } else {
                format!("{m}.shared_experts")
            };
            let gate_name = format!("{m}.shared_expert_gate");
            let gated = shared.as_ref().is_some_and(|s| s.gated);
            let router_lin = if slots.is_some() && gated {
                // The shared gate's logit comes out of the router projection as its last row.
                let parts = [(format!("{router_name}.weight"), e), (format!("{gate_name}.weight"), 1)];
                Linear {
                    w: l.stacked(&router_name, &parts, d, 1)?,
                    bias: None,
                }
            } else {
                l.linear(&router_name, e, d, router.linear_bias)?
            };
            let selection_bias = if router.selection_bias {
                Some(l.vector_f32(&format!("{m}.gate.e_score_correction_bias"), e)?)
            } else {
                None
            };
            let (gate_up, down, gate_up_bias, down_bias) = if gpt_oss.is_some() {
                gpt_oss_experts(l, &m, e, i_, d)?
            } else {
                let names = if mixtral {
                    ["w1", "w3", "w2"]
                } else {
                    ["gate_proj", "up_proj", "down_proj"]
                };
                let ex = |x: usize, n: &str| format!("{m}.experts.{x}.{n}.weight");
                if l.src.contains(&format!("{m}.experts.gate_up_proj")) {
                    fused_experts(l, &m, e, i_, d, room)?
                } else {
                    let gu: Vec<(String, usize)> = (0..e)
                        .flat_map(|x| [(ex(x, names[0]), i_), (ex(x, names[1]), i_)])
                        .collect();
                    let dn: Vec<(String, usize)> = (0..e).map(|x| (ex(x, names[2]), d)).collect();
                    let gate_up =
                        l.stacked_with_room(&format!("{m}.experts.gate_up"), &gu, d, 2 * i_, room * 2 * i_)?;
                    let down = l.stacked_with_room(&format!("{m}.experts.down"), &dn, i_, d, room * d)?;
                    (gate_up, down, None, None)
                }
            };
            let shared = match (shared, slots) {
                (None, _) => None,
                (Some(_), Some(n)) => {
                    write_shared_experts(l, &shared_prefix, &gate_up, &down, e, i_, d, n)?;
                    Some(SharedWeights::Folded { slots: n, gated })
                }
                (Some(s), None) => {
                    let names = ["gate_proj", "up_proj", "down_proj"];
                    let (gate_up, down) = gated_mlp(l, &shared_prefix, names, s.inter, d, false)?;
                    let gate = if s.gated {
                        Some(l.linear(&gate_name, 1, d, false)?)
                    } else {
                        None
                    };
                    Some(SharedWeights::Separate { gate_up, down, gate })
                }
            };
            Ok(FfnWeights::Moe {
                router: router_lin,
                selection_bias,
                gate_up,
                down,
                gate_up_bias,
                down_bias,
                shared,
            })
        }
    }
}

/// gate and up stacked `[2I, D]`, and down `[D, I]`.
fn gated_mlp(
    l: &mut Loader<'_>,
    m: &str,
    names: [&str; 3],
    inter: usize,
    d: usize,
    bias: bool,
) -> Result<(Linear, Linear)> {
    let parts = [
        (format!("{m}.{}.weight", names[0]), inter),
        (format!("{m}.{}.weight", names[1]), inter),
    ];
    let w = l.stacked(&format!("{m}.gate_up"), &parts, d, 1)?;
    let b = if bias {
        let bp = [
            (format!("{m}.{}.bias", names[0]), inter),
            (format!("{m}.{}.bias", names[1]), inter),
        ];
        Some(l.stacked_bias(&format!("{m}.gate_up.bias"), &bp)?)
    } else {
        None
    };
    let down = l.linear(&format!("{m}.{}", names[2]), d, inter, bias)?;
    Ok((Linear { w, bias: b }, down))
}

type ExpertWeights = (Weight, Weight, Option<Weight>, Option<Weight>);

/// transformers 5 in-memory names: `experts.gate_up_proj [E, 2I, D]`, `experts.down_proj [E, D, I]`;
/// `room` more (zeroed) experts after them, for folded shared experts.
fn fused_experts(l: &mut Loader<'_>, m: &str, e: usize, i_: usize, d: usize, room: usize) -> Result<ExpertWeights> {
    let limit = l.ctx.caps.max_storage_binding;
    let gu = l.raw(&format!("{m}.experts.gate_up_proj"), &[e, 2 * i_, d])?;
    let gate_up = Weight::alloc(
        l.ctx,
        "experts.gate_up",
        gu.gpu_dtype()?,
        (e + room) * 2 * i_,
        d,
        2 * i_,
        limit,
    )?;
    gate_up.write_rows(l.ctx, 0, &gu.bytes)?;
    drop(gu);
    l.tick();
    let dn = l.raw(&format!("{m}.experts.down_proj"), &[e, d, i_])?;
    let down = Weight::alloc(l.ctx, "experts.down", dn.gpu_dtype()?, (e + room) * d, i_, d, limit)?;
    down.write_rows(l.ctx, 0, &dn.bytes)?;
    l.tick();
    Ok((gate_up, down, None, None))
}

/// The shared MLP at `prefix` (width `slots * I`) written as experts `E..E + slots` of the routed
/// experts' weights (see [`Ffn::shared_slots`]), converted to their dtype: shared expert `j` takes
/// gate and up rows `j*I..(j+1)*I` and down columns `j*I..(j+1)*I`.
#[allow(clippy::too_many_arguments)]
fn write_shared_experts(
    l: &mut Loader<'_>,
    prefix: &str,
    gate_up: &Weight,
    down: &Weight,
    e: usize,
    i_: usize,
    d: usize,
    slots: usize,
) -> Result<()> {
    let el = gate_up.dtype.bytes();
    for (half, name) in ["gate_proj", "up_proj"].into_iter().enumerate() {
        let t = l.raw(&format!("{prefix}.{name}.weight"), &[slots * i_, d])?;
        let bytes = bytes_as(&t, gate_up.dtype)?;
        for j in 0..slots {
            let rows = &bytes[j * i_ * d * el..][..i_ * d * el];
            gate_up.write_rows(l.ctx, (e + j) * 2 * i_ + half * i_, rows)?;
        }
        l.tick();
    }
    let t = l.raw(&format!("{prefix}.down_proj.weight"), &[d, slots * i_])?;
    let el = down.dtype.bytes();
    let bytes = bytes_as(&t, down.dtype)?;
    let mut block = vec![0u8; d * i_ * el];
    for j in 0..slots {
        for r in 0..d {
            let src = &bytes[(r * slots * i_ + j * i_) * el..][..i_ * el];
            block[r * i_ * el..][..i_ * el].copy_from_slice(src);
        }
        down.write_rows(l.ctx, (e + j) * d, &block)?;
    }
    l.tick();
    Ok(())
}

/// gpt-oss stores experts as `x @ W`: `gate_up_proj [E, D, 2I]` (interleaved columns) and
/// `down_proj [E, I, D]`; transpose each expert to `[out, in]` rows, keeping the interleave.
fn gpt_oss_experts(l: &mut Loader<'_>, m: &str, e: usize, i_: usize, d: usize) -> Result<ExpertWeights> {
    let mut load = |name: &str, inp: usize, out: usize| -> Result<Weight> {
        let t = l.raw(&format!("{m}.experts.{name}"), &[e, inp, out])?;
        let dtype = t.gpu_dtype()?;
        let el = dtype.bytes();
        let w = Weight::alloc(l.ctx, name, dtype, e * out, inp, out, l.ctx.caps.max_storage_binding)?;
        for x in 0..e {
            let block = &t.bytes[x * inp * out * el..(x + 1) * inp * out * el];
            w.write_rows(l.ctx, x * out, &transpose(block, inp, out, el))?;
        }
        l.tick();
        Ok(w)
    };
    let gate_up = load("gate_up_proj", d, 2 * i_)?;
    let down = load("down_proj", i_, d)?;
    let gub = l.matrix(&format!("{m}.experts.gate_up_proj_bias"), &[e, 2 * i_])?;
    let db = l.matrix(&format!("{m}.experts.down_proj_bias"), &[e, d])?;
    Ok((gate_up, down, Some(gub), Some(db)))
}
