//! GGUF files (llama.cpp's single-file format) as a model description, a tensor source and a
//! tokenizer; `Model::load` turns those into a model like it does a safetensors folder.
//!
//! - `format`: the reader: header, metadata, tensor table, data section, ggml's type table.
//! - `model::dequant` (beside this module): ggml's dequantisers: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, the K-quants Q2_K, Q3_K, Q4_K,
//!   Q5_K, Q6_K (the tensors of Q4_K_M / Q5_K_M / Q3_K_M / ... files), computed in f32 in ggml's
//!   order of operations; the source rounds them once to f16, and MXFP4 to bf16 (exact).
//! - `names`: llama.cpp's tensor names and transformers', both ways, from one table.
//! - `layout`: llama.cpp's layouts back to transformers': the Q/K row permutation of llama-family
//!   models (for its interleaved RoPE), DeepSeek's split `attn_k_b` / `attn_v_b` (`kv_b_proj`),
//!   gpt-oss's separate, `[out, in]` gate / up / down experts (the interleaved `x @ W`
//!   `gate_up_proj` / `down_proj` and their biases).
//! - `source`: [`GgufSource`], the file's tensors under transformers names (a `TensorSource`).
//! - `config`: the metadata as a transformers-style `config.json` value and a `ModelConfig`.
//! - `tokenizer`: the tokenizer rebuilt from the vocabulary the file carries.
//!
//! Architectures: llama (and Mixtral), qwen2, qwen3, qwen2moe, qwen3moe, olmoe, `deepseek2`
//! (DeepSeek V2 / V2-Lite / V3: softmax gating → deepseek_v2, sigmoid → deepseek_v3) and
//! `gpt-oss`.
//!
//! Every malformed input (bad magic, unsupported version, truncated header, counts the file cannot
//! hold, duplicate keys or tensors, misaligned, overlapping or out-of-file tensors, sizes that do not
//! match the tensor table) is an `Error::BadModel` naming the file and the key or tensor, and a
//! tensor type wgmoe does not decode an `Error::Unsupported` naming the file, the tensor and the
//! type, never a panic; the file is checked when it is opened, before any tensor is read.

mod config;
mod format;
mod layout;
mod names;
mod source;
mod tokenizer;

pub use super::dequant::{
    dequant_iq4_nl, dequant_iq4_xs, dequant_mxfp4, dequant_q2_k, dequant_q3_k, dequant_q4_0, dequant_q4_1,
    dequant_q4_k, dequant_q5_0, dequant_q5_1, dequant_q5_k, dequant_q6_k, dequant_q8_0, dequantize, e8m0_to_f32_half,
    quantized,
};
pub use config::SUPPORTED_ARCHS;
pub use format::{
    ggml_type_name, GgufFile, TensorInfo, Value, GGML_BF16, GGML_F16, GGML_F32, GGML_MXFP4, GGML_Q2_K, GGML_Q3_K,
    GGML_Q4_0, GGML_Q4_1, GGML_Q4_K, GGML_Q5_0, GGML_Q5_1, GGML_Q5_K, GGML_Q6_K, GGML_Q8_0,
};
pub use layout::{assemble_kv_b, interleave_gate_up, permute_rows, unpermute_rows};
pub use names::{gguf_to_hf, hf_to_gguf};
pub use source::GgufSource;
pub use tokenizer::{tokenizer_parts, TokenizerParts};

use super::config::ModelConfig;
use crate::error::Result;
use std::path::Path;

/// Open a GGUF file as the model description its metadata gives and its tensors under
/// transformers names (dequantised where needed, on access).
pub fn open(path: &Path) -> Result<(ModelConfig, GgufSource)> {
    let src = GgufSource::open(path)?;
    let config = src.config()?;
    Ok((config, src))
}
