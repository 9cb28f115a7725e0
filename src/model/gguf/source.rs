//! A GGUF file as a [`TensorSource`] under transformers names, so the one weight loader
//! (`loader::load`) reads it like a safetensors folder. F32 / F16 / BF16 tensors pass through;
//! the block-quantised types pass through as their blocks (kept packed on the GPU, see
//! `gpu::format`) wherever the transformers form is whole rows of the file's tensor, and are
//! dequantised on access otherwise, or for all tensors when the source is opened with
//! `packed = false` (to f16; MXFP4 to bf16, exact); where
//! llama.cpp's converter stores a tensor in another form than transformers (llama's permuted Q/K
//! rows, DeepSeek's split `attn_k_b` / `attn_v_b`, gpt-oss's separate `[out, in]` gate / up / down
//! experts), the transformers form is rebuilt. Other tensor types (the IQ* family, TQ*, Q8_K) are
//! an error naming the tensor and its type.

use super::format::{block_layout, ggml_type_name, GgufFile, TensorInfo, GGML_BF16, GGML_F16, GGML_F32, GGML_MXFP4};
use super::layout::{assemble_kv_b, interleave_gate_up, transpose_last2, unpermute_rows};
use super::names::{gguf_to_hf, split_layer};
use super::tokenizer::{tokenizer_parts, TokenizerParts};
use crate::error::{Error, Result};
use crate::gpu::DType;
use crate::model::dequant::{dequantize, quantized};
use crate::model::source::{f32_values, RawTensor, SrcDType, TensorSource};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// The most experts a stacked expert tensor may hold (real models have up to a few hundred).
const MAX_EXPERTS: usize = 1 << 16;

/// How a transformers tensor is made from the file's tensors.
#[derive(Clone, Debug)]
enum Form {
    /// One tensor as stored.
    Plain,
    /// Undo llama.cpp's Q/K permutation with this many heads.
    Unpermute(usize),
    /// `(expert, experts)`: one expert's slab of a stacked `[E, rows, cols]` tensor.
    Expert(usize, usize),
    /// DeepSeek `kv_b_proj [H·(dn+dv), r]` from newer converters' split `attn_k_b [H, r, dn]`
    /// (W_UK_h stored transposed) and `attn_v_b [H, dv, r]` (the tensor index of `attn_v_b`).
    KvB(usize),
    /// gpt-oss `gate_up_proj [E, D, 2I]` (x @ W, gate in even columns, up in odd) from llama.cpp's
    /// separate `ffn_gate_exps` / `ffn_up_exps [E, I, D]` (the tensor index of `ffn_up_exps`), or,
    /// for the biases, `gate_up_proj_bias [E, 2I]` from two `[E, I]` (no transposition).
    Interleave { up: usize, transpose: bool },
    /// gpt-oss `down_proj [E, I, D]` (x @ W) from llama.cpp's `ffn_down_exps [E, D, I]`.
    Transpose,
}

struct Mapped {
    tensor: usize,
    form: Form,
}

/// A GGUF file as a [`TensorSource`] with transformers tensor names, plus its config and tokenizer.
pub struct GgufSource {
    pub file: GgufFile,
    pub arch: String,
    names: HashMap<String, Mapped>,
    /// Serve block-quantised tensors as their blocks where the form allows (else always
    /// dequantised).
    pub packed: bool,
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_file(GgufFile::open(path)?)
    }

    pub fn from_file(file: GgufFile) -> Result<Self> {
        let arch = file
            .opt_str("general.architecture")
            .ok_or_else(|| Error::bad_model(&file.path, "metadata key \"general.architecture\" is missing"))?
            .to_string();
        let mut s = Self {
            file,
            arch,
            names: HashMap::new(),
            packed: true,
        };
        let model_type = s.model_type()?;
        // llama.cpp permutes q/k rows only for the llama family (convert_hf_to_gguf LlamaModel);
        // DeepSeek's MLA rope dims are interleaved in transformers already and left as they are.
        let permuted = s.arch == "llama";
        let heads = s
            .file
            .opt_u64(&format!("{}.attention.head_count", s.arch))?
            .unwrap_or(0) as usize;
        let kv_heads = s
            .file
            .opt_u64(&format!("{}.attention.head_count_kv", s.arch))?
            .map_or(heads, |v| v as usize);
        let f = &s.file;
        let bad = |t: &TensorInfo, what: &str| {
            Error::bad_model(
                &f.path,
                format!("tensor {} has dimensions {:?}: {what}", t.name, t.dims),
            )
        };
        let mut names = HashMap::new();
        for (ti, t) in f.tensors.iter().enumerate() {
            let Some((hf, mut form)) = map_tensor(f, t, &model_type) else {
                continue;
            };
            // Check the dimensions the reassembly relies on (ggml order: innermost first).
            match &form {
                Form::KvB(v) => {
                    let vt = &f.tensors[*v];
                    // k_b [dn, r, H], v_b [r, dv, H].
                    if t.dims.len() != 3 || vt.dims.len() != 3 || t.dims[1] != vt.dims[0] || t.dims[2] != vt.dims[2] {
                        return Err(bad(t, &format!("does not pair with {} {:?}", vt.name, vt.dims)));
                    }
                }
                Form::Interleave { up, transpose } => {
                    let ut = &f.tensors[*up];
                    let rank = if *transpose { 3 } else { 2 };
                    if t.dims.len() != rank || t.dims != ut.dims {
                        return Err(bad(t, &format!("does not pair with {} {:?}", ut.name, ut.dims)));
                    }
                }
                Form::Transpose if t.dims.len() != 3 => return Err(bad(t, "expected 3")),
                _ => {}
            }
            if hf.contains("{e}") {
                if t.dims.len() != 3 {
                    return Err(bad(t, "a stacked expert tensor needs 3"));
                }
                let e_count = t.dims[2] as usize;
                // Each expert becomes a name: a forged count must not make millions of them.
                if e_count > MAX_EXPERTS {
                    return Err(bad(t, &format!("more than {MAX_EXPERTS} experts")));
                }
                for e in 0..e_count {
                    names.insert(
                        hf.replace("{e}", &e.to_string()),
                        Mapped {
                            tensor: ti,
                            form: Form::Expert(e, e_count),
                        },
                    );
                }
                continue;
            }
            if permuted && heads > 0 {
                if hf.contains("self_attn.q_proj.") {
                    form = Form::Unpermute(heads);
                } else if hf.contains("self_attn.k_proj.") {
                    form = Form::Unpermute(kv_heads);
                }
            }
            names.insert(hf, Mapped { tensor: ti, form });
        }
        s.names = names;
        Ok(s)
    }

    /// The chat template carried in `tokenizer.chat_template`, if any.
    pub fn chat_template(&self) -> Option<String> {
        self.file.opt_str("tokenizer.chat_template").map(str::to_string)
    }

    /// The tokenizer from the GGUF vocabulary: `(tokenizer, chat template, bos, eos tokens, eos ids)`.
    pub fn tokenizer_parts(&self) -> Result<TokenizerParts> {
        tokenizer_parts(&self.file)
    }
}

/// The transformers name a file tensor is served under and how it is made; `None` for a tensor
/// that is only read as part of another one, or that no transformers tensor needs.
fn map_tensor(f: &GgufFile, t: &TensorInfo, model_type: &str) -> Option<(String, Form)> {
    let plain = |hf: String| (hf, Form::Plain);
    let Some((layer, suffix)) = split_layer(&t.name) else {
        return gguf_to_hf(&t.name, model_type).map(plain);
    };
    let p = format!("model.layers.{layer}");
    let sibling = |name: &str| f.tensor_position(&format!("blk.{layer}.{name}"));
    if model_type == "gpt_oss" {
        // Experts are stored transposed and de-interleaved (gate and up apart).
        let (hf, form) = match suffix {
            "ffn_gate_exps.weight" => (
                "gate_up_proj",
                Form::Interleave {
                    up: sibling("ffn_up_exps.weight")?,
                    transpose: true,
                },
            ),
            "ffn_gate_exps.bias" => (
                "gate_up_proj_bias",
                Form::Interleave {
                    up: sibling("ffn_up_exps.bias")?,
                    transpose: false,
                },
            ),
            "ffn_down_exps.weight" => ("down_proj", Form::Transpose),
            "ffn_down_exps.bias" => ("down_proj_bias", Form::Plain),
            "ffn_up_exps.weight" | "ffn_up_exps.bias" => return None,
            _ => return gguf_to_hf(&t.name, model_type).map(plain),
        };
        return Some((format!("{p}.mlp.experts.{hf}"), form));
    }
    match suffix {
        // Newer converters split kv_b; older files (and some newer ones) keep it whole.
        "attn_k_b.weight" if sibling("attn_kv_b.weight").is_some() => None,
        "attn_k_b.weight" => Some((
            format!("{p}.self_attn.kv_b_proj.weight"),
            Form::KvB(sibling("attn_v_b.weight")?),
        )),
        "attn_v_b.weight" => None,
        _ => gguf_to_hf(&t.name, model_type).map(plain),
    }
}

impl GgufSource {
    /// A tensor's values (or a byte range of them) as F32 / F16 / BF16: stored types pass through;
    /// Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 and the K-quants Q2_K .. Q6_K are dequantised to f16 (f32
    /// arithmetic, one rounding), MXFP4 to bf16 (exact).
    fn decode<'a>(
        &'a self,
        t: &TensorInfo,
        label: &str,
        range: Option<(usize, usize)>,
        rows_kept: bool,
    ) -> Result<(SrcDType, Cow<'a, [u8]>)> {
        let f = &self.file;
        let supported = matches!(t.ggml_type, GGML_F32 | GGML_F16 | GGML_BF16) || quantized().any(|q| q == t.ggml_type);
        if !supported {
            return Err(Error::unsupported(format!(
                "{}: tensor {label} has type {}; supported: F32, F16, BF16, {}",
                f.name(),
                t.type_name(),
                quantized().map(ggml_type_name).collect::<Vec<_>>().join(", ")
            )));
        }
        let mut bytes = f.tensor_bytes(t)?;
        if let Some((e, n)) = range {
            let per = bytes.len() / n.max(1);
            bytes = &bytes[e * per..(e + 1) * per];
        }
        // The reader sized the tensor from its dimensions; a slice of it must still be whole blocks.
        if let Some((_, bb)) = block_layout(t.ggml_type) {
            if !bytes.len().is_multiple_of(bb) {
                return Err(Error::bad_model(
                    &f.path,
                    format!(
                        "tensor {label} ({}): {} bytes is not a whole number of {bb}-byte blocks",
                        t.type_name(),
                        bytes.len()
                    ),
                ));
            }
        }
        let packed = (self.packed && rows_kept)
            .then(|| crate::gpu::Format::of_ggml(t.ggml_type))
            .flatten()
            .filter(|f| f.is_blocked());
        if let Some(f) = packed {
            return Ok((SrcDType::Packed(f.dtype), Cow::Borrowed(bytes)));
        }
        Ok(match t.ggml_type {
            GGML_F32 => (SrcDType::F32, Cow::Borrowed(bytes)),
            GGML_F16 => (SrcDType::F16, Cow::Borrowed(bytes)),
            GGML_BF16 => (SrcDType::BF16, Cow::Borrowed(bytes)),
            q => {
                let v = dequantize(q, bytes)
                    .ok_or_else(|| Error::unsupported(format!("{}: tensor {label}: no dequantiser", f.name())))?;
                if q == GGML_MXFP4 {
                    let h: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
                    (SrcDType::BF16, Cow::Owned(bytemuck::cast_slice(&h).to_vec()))
                } else {
                    let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
                    (SrcDType::F16, Cow::Owned(bytemuck::cast_slice(&h).to_vec()))
                }
            }
        })
    }

    /// Two tensors decoded to one dtype (f32 when they differ), each checked to hold `elements`.
    fn decode_pair<'a>(&'a self, a: &TensorInfo, b: &TensorInfo, label: &str) -> Result<DecodedPair<'a>> {
        let (da, xa) = self.decode(a, label, None, false)?;
        let (db, xb) = self.decode(b, label, None, false)?;
        let (dtype, xa, xb) = if da == db {
            (da, xa, xb)
        } else {
            (SrcDType::F32, Cow::Owned(widen(&da, &xa)), Cow::Owned(widen(&db, &xb)))
        };
        let es = if dtype == SrcDType::F32 { 4 } else { 2 };
        for (t, x) in [(a, &xa), (b, &xb)] {
            if x.len() != t.elements() * es {
                return Err(Error::bad_model(
                    &self.file.path,
                    format!(
                        "tensor {label}: {} holds {} bytes, expected {}",
                        t.name,
                        x.len(),
                        t.elements() * es
                    ),
                ));
            }
        }
        Ok((dtype, es, xa, xb))
    }
}

/// Two tensors' values in one dtype: (dtype, bytes per element, first, second).
type DecodedPair<'a> = (SrcDType, usize, Cow<'a, [u8]>, Cow<'a, [u8]>);

/// F16 / BF16 / F32 bytes as f32 bytes.
fn widen(dtype: &SrcDType, bytes: &[u8]) -> Vec<u8> {
    let dtype = match dtype {
        SrcDType::F16 => DType::F16,
        SrcDType::BF16 => DType::BF16,
        _ => return bytes.to_vec(),
    };
    bytemuck::cast_slice(&f32_values(dtype, bytes)).to_vec()
}

impl TensorSource for GgufSource {
    fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<RawTensor<'_>> {
        let f = &self.file;
        let m = self
            .names
            .get(name)
            .ok_or_else(|| Error::bad_model(&f.path, format!("tensor {name} is missing")))?;
        let t = &f.tensors[m.tensor];
        let label = match &m.form {
            Form::KvB(o) | Form::Interleave { up: o, .. } => format!("{} + {} ({name})", t.name, f.tensors[*o].name),
            _ if t.name == name => name.to_string(),
            _ => format!("{} ({name})", t.name),
        };
        let mut shape = t.shape();
        let (dtype, data): (SrcDType, Cow<'_, [u8]>) = match &m.form {
            Form::Plain => self.decode(t, &label, None, true)?,
            Form::Expert(e, n) => {
                shape.remove(0);
                self.decode(t, &label, Some((*e, *n)), true)?
            }
            Form::Unpermute(n_head) => {
                let (dtype, data) = self.decode(t, &label, None, true)?;
                let n_head = *n_head;
                let rows = shape.first().copied().unwrap_or(1);
                let row_bytes = data.len() / rows.max(1);
                if n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0 {
                    return Err(Error::bad_model(
                        &f.path,
                        format!("tensor {label} has {rows} rows, which do not split into {n_head} heads of even size"),
                    ));
                }
                (dtype, Cow::Owned(unpermute_rows(&data, rows, row_bytes, n_head)))
            }
            Form::KvB(v) => {
                let vt = &f.tensors[*v];
                let (dtype, es, k_b, v_b) = self.decode_pair(t, vt, &label)?;
                let (dn, r, heads) = (t.dims[0] as usize, t.dims[1] as usize, t.dims[2] as usize);
                let dv = vt.dims[1] as usize;
                shape = vec![heads * (dn + dv), r];
                (dtype, Cow::Owned(assemble_kv_b(&k_b, &v_b, heads, r, dn, dv, es)))
            }
            Form::Interleave { up, transpose } => {
                let (dtype, es, g, u) = self.decode_pair(t, &f.tensors[*up], &label)?;
                let (e, i_, d) = if *transpose {
                    (shape[0], shape[1], shape[2])
                } else {
                    (shape[0], shape[1], 1)
                };
                shape = if *transpose {
                    vec![e, d, 2 * i_]
                } else {
                    vec![e, 2 * i_]
                };
                (dtype, Cow::Owned(interleave_gate_up(&g, &u, e, i_, d, es, *transpose)))
            }
            Form::Transpose => {
                let (dtype, data) = self.decode(t, &label, None, false)?;
                let es = if dtype == SrcDType::F32 { 4 } else { 2 };
                let (e, rows, cols) = (shape[0], shape[1], shape[2]);
                if data.len() != e * rows * cols * es {
                    return Err(Error::bad_model(&f.path, format!("tensor {label}: size mismatch")));
                }
                shape = vec![e, cols, rows];
                (dtype, Cow::Owned(transpose_last2(&data, e, rows, cols, es)))
            }
        };
        // llama.cpp stores Qwen2-MoE's shared-expert gate as a vector; transformers as `[1, D]`.
        if name.ends_with("shared_expert_gate.weight") && shape.len() == 1 {
            shape.insert(0, 1);
        }
        Ok(RawTensor {
            name: name.to_string(),
            file: f.name(),
            dtype,
            shape,
            bytes: data,
        })
    }

    fn names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    /// gpt-oss's experts as llama.cpp stores them, `[out, in]` rows: `down_proj` is
    /// `ffn_down_exps [E, D, I]` as it is, `gate_up_proj` the rows of `ffn_gate_exps` and
    /// `ffn_up_exps [E, I, D]` interleaved (gate row i, then up row i). Only for block-quantised
    /// tensors served packed; float ones take the transposing path of `get`.
    fn get_transposed<'a>(&'a self, name: &str) -> Option<Result<RawTensor<'a>>> {
        let m = self.names.get(name).filter(|_| self.packed)?;
        let f = &self.file;
        let t = &f.tensors[m.tensor];
        let blocked = |t: &TensorInfo| crate::gpu::Format::of_ggml(t.ggml_type).filter(|x| x.is_blocked());
        let format = blocked(t)?;
        let label = format!("{} ({name})", t.name);
        let packed = |shape: Vec<usize>, bytes: Cow<'a, [u8]>| RawTensor {
            name: name.to_string(),
            file: f.name(),
            dtype: SrcDType::Packed(format.dtype),
            shape,
            bytes,
        };
        match &m.form {
            Form::Transpose => Some(self.decode(t, &label, None, true).map(|(_, b)| packed(t.shape(), b))),
            Form::Interleave { up, transpose: true } => {
                let u = &f.tensors[*up];
                if u.ggml_type != t.ggml_type || u.dims != t.dims {
                    return None;
                }
                let shape = t.shape();
                let [e, i_, d] = shape[..] else {
                    return None;
                };
                Some((|| {
                    let (_, g) = self.decode(t, &label, None, true)?;
                    let (_, up) = self.decode(u, &label, None, true)?;
                    let row = g.len() / (e * i_).max(1);
                    if row == 0 || g.len() != row * e * i_ || up.len() != g.len() {
                        return Err(Error::bad_model(
                            &f.path,
                            format!(
                                "tensor {label}: {} and {} bytes are not {e} x {i_} rows",
                                g.len(),
                                up.len()
                            ),
                        ));
                    }
                    let mut out = Vec::with_capacity(2 * g.len());
                    for (gr, ur) in g.chunks_exact(row).zip(up.chunks_exact(row)) {
                        out.extend_from_slice(gr);
                        out.extend_from_slice(ur);
                    }
                    Ok(packed(vec![e, 2 * i_, d], Cow::Owned(out)))
                })())
            }
            _ => None,
        }
    }

    fn stored_bytes(&self) -> Option<u64> {
        Some(self.file.tensors.iter().map(|t| t.size as u64).sum())
    }
}
