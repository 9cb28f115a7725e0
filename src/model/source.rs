//! Where weights come from: one interface over safetensors folders and GGUF files.

use crate::error::{Error, Result};
use crate::gpu::DType;
use std::borrow::Cow;

/// A tensor's element type as stored in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SrcDType {
    F32,
    F16,
    BF16,
    /// Blocks of a quantised type, served as the file stores them (kept packed on the GPU).
    Packed(DType),
    Other(String),
}

/// One tensor's bytes (borrowed from a memory map, or owned after dequantisation).
pub struct RawTensor<'a> {
    pub name: String,
    pub file: String,
    pub dtype: SrcDType,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

impl RawTensor<'_> {
    /// The GPU precision of this tensor, or an error naming it.
    pub fn gpu_dtype(&self) -> Result<DType> {
        match &self.dtype {
            SrcDType::F32 => Ok(DType::F32),
            SrcDType::F16 => Ok(DType::F16),
            SrcDType::BF16 => Ok(DType::BF16),
            SrcDType::Packed(d) => Ok(*d),
            SrcDType::Other(t) => Err(Error::unsupported(format!(
                "{}: tensor {} has type {t}; supported: F32, F16, BF16",
                self.file, self.name
            ))),
        }
    }

    /// Check the shape against what the model description expects.
    pub fn expect_shape(&self, want: &[usize]) -> Result<()> {
        if self.shape != want {
            return Err(Error::bad_model(
                &self.file,
                format!("tensor {} has shape {:?}, expected {:?}", self.name, self.shape, want),
            ));
        }
        Ok(())
    }

    /// Values widened to f32 (small tensors the host needs, e.g. biases for checks).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(f32_values(self.gpu_dtype()?, &self.bytes))
    }

    /// This tensor with block-quantised values dequantised to a float type ([`DType::widened`]:
    /// what a form that is not whole rows of blocks needs, a transposition, a column slice); float
    /// tensors as they are.
    pub fn widened(self) -> Result<Self> {
        let dtype = self.gpu_dtype()?;
        if !dtype.is_packed() {
            return Ok(self);
        }
        let values = self.to_f32()?;
        let wide = dtype.widened();
        Ok(Self {
            dtype: match wide {
                DType::BF16 => SrcDType::BF16,
                _ => SrcDType::F16,
            },
            bytes: Cow::Owned(wide.encode(&values)),
            ..self
        })
    }
}

/// Little-endian values of `dtype` widened to f32.
pub fn f32_values(dtype: DType, b: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F32 => bytemuck::pod_collect_to_vec(b),
        DType::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::FP8 => super::quant::fp8_blocks_to_f32(b),
        packed => crate::gpu::Format::of(packed)
            .ggml_type
            .and_then(|t| super::dequant::dequantize(t, b))
            .expect("packed bytes are whole blocks of a type with a dequantiser"),
    }
}

pub trait TensorSource {
    fn contains(&self, name: &str) -> bool;
    /// The tensor, or an error naming it and the file(s) searched.
    fn get(&self, name: &str) -> Result<RawTensor<'_>>;
    fn names(&self) -> Vec<String>;
    /// The GPU dtype `get(name)` would serve, for choosing a weight's format before its parts are
    /// written. Sources whose `get` converts (quantises, repacks) answer without converting.
    fn gpu_dtype_of(&self, name: &str) -> Result<DType> {
        self.get(name)?.gpu_dtype()
    }
    /// `name`, a `[.., in, out]` tensor stored for `x @ W` (gpt-oss's experts), as `[.., out, in]`
    /// rows when the file holds it that way (llama.cpp's GGUF; gpt-oss's MXFP4 blocks), kept in
    /// its block-quantised type: what the loader would otherwise make by dequantising `get(name)`
    /// and transposing it back. `None`: no such form here, use `get`.
    fn get_transposed(&self, _name: &str) -> Option<Result<RawTensor<'_>>> {
        None
    }
    /// The loader is done with `name`: a memory-mapped source lets the process's copy of its pages
    /// go (they stay in the OS's page cache), so host memory during a load holds what was made of
    /// the file, not the file as well (offloaded experts are a copy of their tensors).
    fn release(&self, _name: &str) {}
    /// The bytes every tensor takes in the file(s), as stored (quantised blocks, scales): what a
    /// runtime that kept them as they are would hold. `None` for sources that are no file.
    fn stored_bytes(&self) -> Option<u64> {
        None
    }
}
