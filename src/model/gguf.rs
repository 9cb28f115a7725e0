//! GGUF files (llama.cpp's single-file format), read by hand from a memory map: the header, the
//! metadata key/values, the tensor table and the data section; tensors exposed under transformers
//! names so the one weight loader (`weights::load`) reads them like a safetensors folder; the
//! metadata turned into a transformers-style `config.json` value; and the tokenizer rebuilt from the
//! vocabulary it carries.
//!
//! Tensor types: F32 / F16 / BF16 pass through; Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants
//! Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (the tensors of Q4_K_M / Q5_K_M / Q3_K_M / ... files) are
//! dequantised to f16 at load with ggml's formulas (computed in f32 in ggml's order of operations,
//! rounded once to f16); MXFP4 to bf16 (exact). Other types (the IQ* family, TQ*, Q8_K) are an
//! error naming the tensor and its type. llama.cpp
//! permutes the rows of `q_proj` / `k_proj` of llama-family models for its interleaved RoPE; that is
//! undone here.
//!
//! Architectures: llama (and Mixtral), qwen2, qwen3, qwen2moe, qwen3moe, olmoe, `deepseek2`
//! (DeepSeek V2 / V2-Lite / V3: softmax gating → deepseek_v2, sigmoid → deepseek_v3) and
//! `gpt-oss`. Where llama.cpp's converter stores a tensor in another form than transformers, the
//! transformers form is rebuilt on access: DeepSeek's split `attn_k_b` / `attn_v_b` become
//! `kv_b_proj`, gpt-oss's separate, `[out, in]` gate / up / down experts become the interleaved
//! `x @ W` `gate_up_proj` / `down_proj` (and their biases).
//!
//! Every malformed input (bad magic, unsupported version, truncated header, a tensor running past the
//! end of the file, an unsupported tensor type) is an `Error::Invalid` naming the file, never a panic.

use super::config::ModelConfig;
use super::source::{RawTensor, SrcDType, TensorSource};
use super::{weights, Model};
use crate::error::{Error, Result};
use crate::gpu::Context;
use serde_json::{json, Map, Value as Json};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// The reader
// ---------------------------------------------------------------------------------------------

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// Any integer type (and bool) as u64 when non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            Value::Bool(b) => Some(b as u64),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    /// Any numeric type as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types this reader knows: (id, name, elements per block, bytes per block).
/// Sizes are only listed for the types whose layout is checked here; the rest are named in errors.
const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 0, 0),
    (17, "IQ2_XS", 0, 0),
    (18, "IQ3_XXS", 0, 0),
    (19, "IQ1_S", 0, 0),
    (20, "IQ4_NL", 0, 0),
    (21, "IQ3_S", 0, 0),
    (22, "IQ2_S", 0, 0),
    (23, "IQ4_XS", 0, 0),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 0, 0),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 0, 0),
    (35, "TQ2_0", 0, 0),
    (39, "MXFP4", 32, 17),
];

pub const GGML_F32: u32 = 0;
pub const GGML_F16: u32 = 1;
pub const GGML_Q4_0: u32 = 2;
pub const GGML_Q4_1: u32 = 3;
pub const GGML_Q5_0: u32 = 6;
pub const GGML_Q5_1: u32 = 7;
pub const GGML_Q8_0: u32 = 8;
pub const GGML_Q2_K: u32 = 10;
pub const GGML_Q3_K: u32 = 11;
pub const GGML_Q4_K: u32 = 12;
pub const GGML_Q5_K: u32 = 13;
pub const GGML_Q6_K: u32 = 14;
pub const GGML_BF16: u32 = 30;
pub const GGML_MXFP4: u32 = 39;

/// The block-quantised types [`dequantize`] reads: MXFP4 to bf16 (exact), the rest to f16.
pub const QUANTIZED: [u32; 11] = [
    GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0, GGML_Q2_K, GGML_Q3_K, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K,
    GGML_MXFP4,
];

/// The ggml name of a tensor type ("Q4_K", or "type 99" when unknown).
pub fn ggml_type_name(t: u32) -> String {
    GGML_TYPES
        .iter()
        .find(|e| e.0 == t)
        .map_or_else(|| format!("type {t}"), |e| e.1.to_string())
}

fn block_layout(t: u32) -> Option<(usize, usize)> {
    GGML_TYPES.iter().find(|e| e.0 == t && e.2 > 0).map(|e| (e.2, e.3))
}

/// One entry of the tensor table.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Absolute byte offset in the file.
    pub start: usize,
    /// Byte size, when the type's layout is known.
    pub size: Option<usize>,
}

impl TensorInfo {
    /// Row-major shape (`dims` reversed): a linear weight is `[out, in]`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    pub fn elements(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
    pub fn type_name(&self) -> String {
        ggml_type_name(self.ggml_type)
    }
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    map: memmap2::Mmap,
    pub version: u32,
    pub alignment: usize,
    /// Absolute offset of the data section.
    pub data_start: usize,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    meta_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

const MAGIC: &[u8; 4] = b"GGUF";

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> Error {
        Error::Invalid(format!("{}: not a valid GGUF file: {what}", self.file))
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: truncated GGUF file: {what} needs {n} bytes at offset {} but the file has {} bytes \
                 (incomplete download?)",
                self.file,
                self.pos,
                self.b.len()
            ))
        })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let n = usize::try_from(n).map_err(|_| self.err(&format!("{what}: string length {n}")))?;
        let s = self.take(n, what)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }
    /// A value of GGUF type `t` (`depth` guards against nested arrays without end).
    fn value(&mut self, t: u32, what: &str, depth: usize) -> Result<Value> {
        Ok(match t {
            0 => Value::U8(self.arr::<1>(what)?[0]),
            1 => Value::I8(self.arr::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => Value::Bool(self.arr::<1>(what)?[0] != 0),
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth > 8 {
                    return Err(self.err(&format!("{what}: arrays nested too deeply")));
                }
                let et = self.u32(what)?;
                let n = self.u64(what)?;
                // Never trust a count for an allocation: each element takes at least one byte.
                let remaining = (self.b.len() - self.pos) as u64;
                if n > remaining {
                    return Err(Error::Invalid(format!(
                        "{}: truncated GGUF file: {what} claims {n} array elements but only {remaining} bytes remain",
                        self.file
                    )));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, what, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            other => return Err(self.err(&format!("{what} has unknown value type {other}"))),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| Error::Invalid(format!("{name}: {e}")))?
            .len();
        if len < 24 {
            return Err(Error::Invalid(format!(
                "{name}: truncated GGUF file: {len} bytes, shorter than the 24-byte header (incomplete download?)"
            )));
        }
        // SAFETY: the file is only read; a file modified while it is being loaded is a user error
        // that can at worst produce wrong weights.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        Self::parse(path.to_path_buf(), map)
    }

    fn parse(path: PathBuf, map: memmap2::Mmap) -> Result<Self> {
        let name = path.display().to_string();
        let bytes: &[u8] = &map;
        let mut c = Cursor {
            b: bytes,
            pos: 0,
            file: &name,
        };
        let magic = c.take(4, "the magic")?;
        if magic != MAGIC {
            return Err(Error::Invalid(format!(
                "{name}: not a GGUF file (starts with {magic:02x?}, expected \"GGUF\")"
            )));
        }
        let version = c.u32("the version")?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                " (a big-endian GGUF; only little-endian files are supported)"
            } else {
                ""
            };
            return Err(Error::Invalid(format!(
                "{name}: GGUF version {version} is not supported (versions 2 and 3 are){hint}"
            )));
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        let mut metadata = Vec::new();
        let mut meta_index = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}"))?;
            let what = format!("metadata {key:?}");
            let t = c.u32(&what)?;
            let v = c.value(t, &what, 0)?;
            meta_index.insert(key.clone(), metadata.len());
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => 32,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return Err(c.err(&format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut infos = Vec::new();
        for i in 0..n_tensors {
            let tname = c.string(&format!("tensor info {i}"))?;
            let what = format!("tensor info {tname:?}");
            let n_dims = c.u32(&what)?;
            if n_dims > 8 {
                return Err(c.err(&format!("tensor {tname} has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let ggml_type = c.u32(&what)?;
            let offset = c.u64(&what)?;
            infos.push((tname, dims, ggml_type, offset));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut tensor_index = HashMap::new();
        for (tname, dims, ggml_type, offset) in infos {
            let elements = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let elements = elements
                .and_then(|e| usize::try_from(e).ok())
                .ok_or_else(|| c.err(&format!("tensor {tname} has dimensions {dims:?} too large")))?;
            let size = match block_layout(ggml_type) {
                None => None,
                Some((be, bb)) => {
                    let row = dims.first().copied().unwrap_or(1) as usize;
                    if !row.is_multiple_of(be) {
                        return Err(Error::Invalid(format!(
                            "{name}: tensor {tname} ({}) has rows of {row} elements, not a multiple of its block size {be}",
                            ggml_type_name(ggml_type)
                        )));
                    }
                    Some(
                        (elements / be)
                            .checked_mul(bb)
                            .ok_or_else(|| c.err(&format!("tensor {tname} is too large")))?,
                    )
                }
            };
            let start = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(data_start))
                .ok_or_else(|| c.err(&format!("tensor {tname} has offset {offset}")))?;
            let end = start.checked_add(size.unwrap_or(0));
            if end.is_none_or(|e| e > bytes.len()) {
                return Err(Error::Invalid(format!(
                    "{name}: tensor {tname} ({}) runs past the end of the file (offset {start}, {} bytes, file {} bytes): truncated?",
                    ggml_type_name(ggml_type),
                    size.unwrap_or(0),
                    bytes.len()
                )));
            }
            if tensor_index.insert(tname.clone(), tensors.len()).is_some() {
                return Err(c.err(&format!("tensor {tname} appears twice")));
            }
            tensors.push(TensorInfo {
                name: tname,
                dims,
                ggml_type,
                start,
                size,
            });
        }
        Ok(Self {
            path,
            map,
            version,
            alignment,
            data_start,
            metadata,
            meta_index,
            tensors,
            tensor_index,
        })
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (error for a type whose size this reader does not know).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> Result<&[u8]> {
        let size = t.size.ok_or_else(|| {
            Error::Invalid(format!(
                "{}: tensor {} has type {}, which is not supported",
                self.name(),
                t.name,
                t.type_name()
            ))
        })?;
        Ok(&self.map[t.start..t.start + size])
    }

    fn req(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| Error::Invalid(format!("{}: metadata key {key:?} is missing", self.name())))
    }
    fn req_u64(&self, key: &str) -> Result<u64> {
        let v = self.req(key)?;
        v.as_u64()
            .ok_or_else(|| Error::Invalid(format!("{}: {key:?} should be an integer, found {v:?}", self.name())))
    }
    fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.req_u64(key).map(Some),
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::Invalid(format!("{}: {key:?} should be a number, found {v:?}", self.name()))),
        }
    }
    fn opt_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantisation (ggml's reference formulas) and llama.cpp's Q/K permutation
// ---------------------------------------------------------------------------------------------

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q8_0: blocks of 32 = f16 `d` + 32 × i8 `q`; `x = d * q`.
pub fn dequant_q8_0(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(34) {
        let d = f16_at(b, 0);
        out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
    }
}

/// Q4_0: blocks of 32 = f16 `d` + 16 bytes; low nibbles are elements 0..16, high nibbles 16..32;
/// `x = d * (q - 8)`.
pub fn dequant_q4_0(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(18) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        out.extend(qs.iter().map(|&q| d * ((q & 0xF) as i32 - 8) as f32));
        out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
    }
}

/// Q4_1: blocks of 32 = f16 `d`, f16 `m` + 16 bytes (nibbles as Q4_0); `x = d * q + m`.
pub fn dequant_q4_1(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(20) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qs = &b[4..20];
        out.extend(qs.iter().map(|&q| d * (q & 0xF) as f32 + m));
        out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
    }
}

/// Q5_0: blocks of 32 = f16 `d`, u32 `qh` (bit j = 5th bit of element j) + 16 bytes (nibbles as
/// Q4_0); `x = d * (q - 16)` (ggml's `dequantize_row_q5_0`).
pub fn dequant_q5_0(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(22) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        let q = |j: usize, lo: u8| (lo as i32 | ((((qh >> j) & 1) as i32) << 4)) - 16;
        out.extend(qs.iter().enumerate().map(|(j, &x)| q(j, x & 0xF) as f32 * d));
        out.extend(qs.iter().enumerate().map(|(j, &x)| q(j + 16, x >> 4) as f32 * d));
    }
}

/// Q5_1: blocks of 32 = f16 `d`, f16 `m`, u32 `qh` + 16 bytes (as Q5_0); `x = d * q + m`.
pub fn dequant_q5_1(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(24) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        let q = |j: usize, lo: u8| (lo as u32 | (((qh >> j) & 1) << 4)) as f32;
        out.extend(qs.iter().enumerate().map(|(j, &x)| d * q(j, x & 0xF) + m));
        out.extend(qs.iter().enumerate().map(|(j, &x)| d * q(j + 16, x >> 4) + m));
    }
}

/// Q2_K: super-blocks of 256 = 16 scale bytes (low nibble: scale, high nibble: min, one pair per
/// 16 elements), 64 bytes of 2-bit quants, f16 `d`, f16 `dmin`. Element `128n + 32j + 16h + l`
/// is bits `2j..2j+2` of `qs[32n + 16h + l]` with scale byte `8n + 2j + h`;
/// `x = (d * sc) * q - dmin * m` (ggml's `dequantize_row_q2_K`).
pub fn dequant_q2_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(84) {
        let (scales, qs) = (&b[0..16], &b[16..80]);
        let d = f16_at(b, 80);
        let dmin = f16_at(b, 82);
        for n in 0..2 {
            for j in 0..4 {
                for h in 0..2 {
                    let sc = scales[8 * n + 2 * j + h];
                    let dl = d * (sc & 0xF) as f32;
                    let ml = dmin * (sc >> 4) as f32;
                    let q = &qs[32 * n + 16 * h..32 * n + 16 * h + 16];
                    out.extend(q.iter().map(|&x| dl * ((x >> (2 * j)) & 3) as f32 - ml));
                }
            }
        }
    }
}

/// Q3_K: super-blocks of 256 = 32 bytes `hmask`, 64 bytes of 2-bit low quants, 12 bytes of 6-bit
/// scales, f16 `d`. Element `128n + 32j + 16h + l`: low bits `2j..2j+2` of `qs[32n + 16h + l]`,
/// high bit `4n + j` of `hmask[16h + l]` (set: +0, clear: -4), scale `s = 8n + 2j + h` (low 4 bits
/// from the nibbles of bytes 0..8, high 2 from bytes 8..12, minus 32); `x = (d * sc) * q`
/// (ggml's `dequantize_row_q3_K`).
pub fn dequant_q3_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(110) {
        let (hmask, qs, sb) = (&b[0..32], &b[32..96], &b[96..108]);
        let d = f16_at(b, 108);
        let scale = |s: usize| {
            let lo = if s < 8 { sb[s] & 0xF } else { sb[s - 8] >> 4 };
            let hi = (sb[8 + s % 4] >> (2 * (s / 4))) & 3;
            (lo | (hi << 4)) as i32 - 32
        };
        for n in 0..2 {
            for j in 0..4 {
                for h in 0..2 {
                    let dl = d * scale(8 * n + 2 * j + h) as f32;
                    for l in 0..16 {
                        let low = ((qs[32 * n + 16 * h + l] >> (2 * j)) & 3) as i32;
                        let high = if hmask[16 * h + l] & (1 << (4 * n + j)) != 0 {
                            0
                        } else {
                            4
                        };
                        out.push(dl * (low - high) as f32);
                    }
                }
            }
        }
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K
/// super-block from its 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: super-blocks of 256 = f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales / mins, 128 bytes of
/// nibbles. Sub-block `s` (32 elements) of chunk `c = s / 2` is the low (s even) or high (s odd)
/// nibbles of `qs[32c..32c + 32]`; `x = (d * sc) * q - dmin * m` (ggml's `dequantize_row_q4_K`).
pub fn dequant_q4_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(144) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (scales, qs) = (&b[4..16], &b[16..144]);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let shift = 4 * (s % 2);
            let q = &qs[32 * (s / 2)..32 * (s / 2) + 32];
            out.extend(q.iter().map(|&x| dl * ((x >> shift) & 0xF) as f32 - ml));
        }
    }
}

/// Q5_K: super-blocks of 256 = f16 `d`, f16 `dmin`, 12 bytes of scales / mins (as Q4_K), 32 bytes
/// `qh`, 128 bytes of nibbles (as Q4_K); bit `s` of `qh[l]` is the fifth bit of element `l` of
/// sub-block `s`; `x = (d * sc) * q - dmin * m` (ggml's `dequantize_row_q5_K`).
pub fn dequant_q5_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(176) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let shift = 4 * (s % 2);
            let q = &qs[32 * (s / 2)..32 * (s / 2) + 32];
            out.extend(
                q.iter()
                    .zip(qh)
                    .map(|(&x, &h)| dl * (((x >> shift) & 0xF) | (((h >> s) & 1) << 4)) as f32 - ml),
            );
        }
    }
}

/// Q6_K: super-blocks of 256 = 128 bytes `ql` (low nibbles), 64 bytes `qh` (2 high bits each),
/// 16 i8 scales, f16 `d`. Element `128n + 32k + l`: low nibble of `ql[64n + 32(k % 2) + l]`
/// (k < 2) or its high nibble (k ≥ 2), high bits `2k..2k+2` of `qh[32n + l]`, scale
/// `8n + l / 16 + 2k`; `x = (d * sc) * (q - 32)` (ggml's `dequantize_row_q6_K`).
pub fn dequant_q6_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(210) {
        let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
        let d = f16_at(b, 208);
        for n in 0..2 {
            for k in 0..4 {
                for l in 0..32 {
                    let lo = (ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xF;
                    let hi = (qh[32 * n + l] >> (2 * k)) & 3;
                    let q = (lo | (hi << 4)) as i32 - 32;
                    let s = sc[8 * n + l / 16 + 2 * k] as i8;
                    out.push(d * s as f32 * q as f32);
                }
            }
        }
    }
}

/// E2M1 values doubled (ggml's `kvalues_mxfp4`), to be multiplied by half the E8M0 scale.
const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(e - 128)`, built from its bits (e = 0 and 1 are f32
/// subnormals; e = 255 is 2^127, not NaN, as in ggml).
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

/// MXFP4: blocks of 32 = one E8M0 scale byte `e` + 16 bytes of E2M1 nibbles; like Q4_0, the low
/// nibble of byte j is element j and the high nibble element j + 16 (ggml's `dequantize_row_mxfp4`;
/// llama.cpp's converter reorders the pairs of transformers' layout into this one).
/// `x = kvalues[q] * 2^(e - 128)`, i.e. E2M1 value times `2^(e - 127)`; every value is exact in
/// bf16 (two significant bits).
pub fn dequant_mxfp4(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(17) {
        let d = e8m0_to_f32_half(b[0]);
        let qs = &b[1..17];
        out.extend(qs.iter().map(|&q| KVALUES_MXFP4[(q & 0xF) as usize] as f32 * d));
        out.extend(qs.iter().map(|&q| KVALUES_MXFP4[(q >> 4) as usize] as f32 * d));
    }
}

/// Dequantise a buffer of whole blocks of one of the [`QUANTIZED`] types to f32, in ggml's
/// formulas and order of operations (f32 throughout, as ggml's `dequantize_row_*` and gguf-py's
/// `gguf.quants`). `None` for other types and for a buffer that is not a whole number of blocks.
pub fn dequantize(ggml_type: u32, src: &[u8]) -> Option<Vec<f32>> {
    if !QUANTIZED.contains(&ggml_type) {
        return None;
    }
    let (be, bb) = block_layout(ggml_type)?;
    if !src.len().is_multiple_of(bb) {
        return None;
    }
    // Blocks are independent: large tensors are split over the CPU's threads (a big model's
    // experts are gigabytes of blocks), small ones stay on this one.
    const PARALLEL_BYTES: usize = 4 << 20;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if src.len() < PARALLEL_BYTES || threads < 2 {
        return dequantize_blocks(ggml_type, src, be, bb);
    }
    let per = (src.len() / bb).div_ceil(threads) * bb;
    let parts: Vec<Option<Vec<f32>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = src
            .chunks(per)
            .map(|piece| scope.spawn(move || dequantize_blocks(ggml_type, piece, be, bb)))
            .collect();
        handles.into_iter().map(|h| h.join().ok().flatten()).collect()
    });
    let mut out = Vec::with_capacity(src.len() / bb * be);
    for part in parts {
        out.extend(part?);
    }
    Some(out)
}

/// Dequantise whole blocks of `ggml_type` (`be` values in `bb` bytes each).
fn dequantize_blocks(ggml_type: u32, src: &[u8], be: usize, bb: usize) -> Option<Vec<f32>> {
    let mut out = Vec::with_capacity(src.len() / bb * be);
    match ggml_type {
        GGML_Q8_0 => dequant_q8_0(src, &mut out),
        GGML_Q4_0 => dequant_q4_0(src, &mut out),
        GGML_Q4_1 => dequant_q4_1(src, &mut out),
        GGML_Q5_0 => dequant_q5_0(src, &mut out),
        GGML_Q5_1 => dequant_q5_1(src, &mut out),
        GGML_Q2_K => dequant_q2_k(src, &mut out),
        GGML_Q3_K => dequant_q3_k(src, &mut out),
        GGML_Q4_K => dequant_q4_k(src, &mut out),
        GGML_Q5_K => dequant_q5_k(src, &mut out),
        GGML_Q6_K => dequant_q6_k(src, &mut out),
        GGML_MXFP4 => dequant_mxfp4(src, &mut out),
        _ => return None,
    }
    Some(out)
}

/// llama.cpp's `permute` (convert_hf_to_gguf): rows of each head reordered from halves
/// `[x0 .. x_{h/2}, y0 .. y_{h/2}]` to interleaved pairs. `rows` rows of `row_bytes` bytes each.
pub fn permute_rows(bytes: &[u8], rows: usize, row_bytes: usize, n_head: usize) -> Vec<u8> {
    reorder_rows(bytes, rows, row_bytes, n_head, false)
}

/// The inverse of [`permute_rows`]: back to transformers' half-split order.
pub fn unpermute_rows(bytes: &[u8], rows: usize, row_bytes: usize, n_head: usize) -> Vec<u8> {
    reorder_rows(bytes, rows, row_bytes, n_head, true)
}

fn reorder_rows(bytes: &[u8], rows: usize, row_bytes: usize, n_head: usize, inverse: bool) -> Vec<u8> {
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let hf = h * hd + i * half + j; // transformers row
                let gg = h * hd + 2 * j + i; // llama.cpp row
                let (dst, src) = if inverse { (hf, gg) } else { (gg, hf) };
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tensors under transformers names
// ---------------------------------------------------------------------------------------------

/// Architectures (`general.architecture`) this loader maps.
pub const SUPPORTED_ARCHS: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "qwen2moe",
    "qwen3moe",
    "olmoe",
    "deepseek2",
    "gpt-oss",
];

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
}

/// transformers name of a per-layer GGUF tensor suffix (`attn_q.weight`), for a model type.
fn layer_name(suffix: &str, model_type: &str) -> Option<String> {
    let (base, kind) = suffix.rsplit_once('.')?; // kind: weight / bias
    let moe_prefix = if model_type == "mixtral" {
        "block_sparse_moe"
    } else {
        "mlp"
    };
    let experts_names = if model_type == "mixtral" {
        ["w1", "w3", "w2"]
    } else {
        ["gate_proj", "up_proj", "down_proj"]
    };
    let deepseek = model_type.starts_with("deepseek");
    let shared = if deepseek {
        "mlp.shared_experts"
    } else {
        "mlp.shared_expert"
    };
    let n = match base {
        "attn_q" => "self_attn.q_proj".to_string(),
        "attn_k" => "self_attn.k_proj".to_string(),
        "attn_v" => "self_attn.v_proj".to_string(),
        "attn_output" => "self_attn.o_proj".to_string(),
        "attn_q_norm" => "self_attn.q_norm".to_string(),
        "attn_k_norm" => "self_attn.k_norm".to_string(),
        "attn_norm" => "input_layernorm".to_string(),
        "ffn_norm" => "post_attention_layernorm".to_string(),
        // gpt-oss (and gemma2-style models) call the pre-FFN norm `post_attention_norm`.
        "post_attention_norm" => "post_attention_layernorm".to_string(),
        "ffn_gate" => "mlp.gate_proj".to_string(),
        "ffn_up" => "mlp.up_proj".to_string(),
        "ffn_down" => "mlp.down_proj".to_string(),
        "ffn_gate_inp" if model_type == "gpt_oss" => "mlp.router".to_string(),
        "ffn_gate_inp" => format!("{moe_prefix}.gate"),
        "ffn_gate_shexp" => format!("{shared}.gate_proj"),
        "ffn_up_shexp" => format!("{shared}.up_proj"),
        "ffn_down_shexp" => format!("{shared}.down_proj"),
        "ffn_gate_inp_shexp" => "mlp.shared_expert_gate".to_string(),
        // DeepSeek MLA.
        "attn_q_a" => "self_attn.q_a_proj".to_string(),
        "attn_q_a_norm" => "self_attn.q_a_layernorm".to_string(),
        "attn_q_b" => "self_attn.q_b_proj".to_string(),
        "attn_kv_a_mqa" => "self_attn.kv_a_proj_with_mqa".to_string(),
        "attn_kv_a_norm" => "self_attn.kv_a_layernorm".to_string(),
        "attn_kv_b" => "self_attn.kv_b_proj".to_string(),
        // Names transformers spells without a `.weight` / `.bias` suffix.
        "exp_probs_b" => return Some("mlp.gate.e_score_correction_bias".to_string()),
        "attn_sinks" => return Some("self_attn.sinks".to_string()),
        // Stacked experts: the expert index is filled in by the caller.
        "ffn_gate_exps" => format!("{moe_prefix}.experts.{{e}}.{}", experts_names[0]),
        "ffn_up_exps" => format!("{moe_prefix}.experts.{{e}}.{}", experts_names[1]),
        "ffn_down_exps" => format!("{moe_prefix}.experts.{{e}}.{}", experts_names[2]),
        _ => {
            // Older per-expert tensors: ffn_gate.E / ffn_up.E / ffn_down.E.
            let (b, e) = base.rsplit_once('.')?;
            let e: usize = e.parse().ok()?;
            let idx = ["ffn_gate", "ffn_up", "ffn_down"].iter().position(|&x| x == b)?;
            format!("{moe_prefix}.experts.{e}.{}", experts_names[idx])
        }
    };
    Some(format!("{n}.{kind}"))
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_file(GgufFile::open(path)?)
    }

    pub fn from_file(file: GgufFile) -> Result<Self> {
        let arch = file
            .opt_str("general.architecture")
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: metadata key \"general.architecture\" is missing",
                    file.name()
                ))
            })?
            .to_string();
        let mut s = Self {
            file,
            arch,
            names: HashMap::new(),
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
            Error::Invalid(format!(
                "{}: tensor {} has dimensions {:?}: {what}",
                f.name(),
                t.name,
                t.dims
            ))
        };
        let mut names = HashMap::new();
        for (ti, t) in f.tensors.iter().enumerate() {
            let mut form = Form::Plain;
            let mapped = match t.name.as_str() {
                "token_embd.weight" => Some("model.embed_tokens.weight".to_string()),
                "output_norm.weight" => Some("model.norm.weight".to_string()),
                "output.weight" => Some("lm_head.weight".to_string()),
                n => n.strip_prefix("blk.").and_then(|rest| {
                    let (layer, suffix) = rest.split_once('.')?;
                    let layer: usize = layer.parse().ok()?;
                    let p = format!("model.layers.{layer}");
                    let sibling = |name: &str| f.tensor_index.get(&format!("blk.{layer}.{name}")).copied();
                    if suffix == "attn_sinks" {
                        // The converter names it `attn_sinks.weight`; accept it without the suffix.
                        return Some(format!("{p}.self_attn.sinks"));
                    }
                    if model_type == "gpt_oss" {
                        // Experts are stored transposed and de-interleaved (gate and up apart).
                        let (hf, fm) = match suffix {
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
                            _ => return layer_name(suffix, &model_type).map(|x| format!("{p}.{x}")),
                        };
                        form = fm;
                        return Some(format!("{p}.mlp.experts.{hf}"));
                    }
                    if suffix == "attn_k_b.weight" {
                        // Newer converters split kv_b; older files (and some newer ones) keep it whole.
                        if sibling("attn_kv_b.weight").is_some() {
                            return None;
                        }
                        form = Form::KvB(sibling("attn_v_b.weight")?);
                        return Some(format!("{p}.self_attn.kv_b_proj.weight"));
                    }
                    if suffix == "attn_v_b.weight" {
                        return None;
                    }
                    layer_name(suffix, &model_type).map(|x| format!("{p}.{x}"))
                }),
            };
            let Some(hf) = mapped else { continue };
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

    /// The transformers `model_type` this file's architecture maps to.
    pub fn model_type(&self) -> Result<String> {
        let experts = self.file.opt_u64(&format!("{}.expert_count", self.arch))?.unwrap_or(0);
        Ok(match self.arch.as_str() {
            "llama" if experts > 0 => "mixtral",
            "llama" => "llama",
            "qwen2" => "qwen2",
            "qwen3" => "qwen3",
            "qwen2moe" => "qwen2_moe",
            "qwen3moe" => "qwen3_moe",
            "olmoe" => "olmoe",
            // llama.cpp's expert_gating_func: 1 softmax (V2; also what older files without the key
            // mean), 2 sigmoid (V3, which also carries the selection bias exp_probs_b).
            "deepseek2" => {
                let gating = self.file.opt_u64("deepseek2.expert_gating_func")?;
                let bias = self.file.tensors.iter().any(|t| t.name.contains(".exp_probs_b."));
                if gating == Some(2) || (gating.is_none() && bias) {
                    "deepseek_v3"
                } else {
                    "deepseek_v2"
                }
            }
            "gpt-oss" => "gpt_oss",
            other => {
                return Err(Error::Invalid(format!(
                    "{}: GGUF architecture {other:?} is not supported; supported: {}",
                    self.file.name(),
                    SUPPORTED_ARCHS.join(", ")
                )))
            }
        }
        .to_string())
    }

    /// A transformers-style `config.json` value built from the metadata.
    pub fn config_value(&self) -> Result<Json> {
        let f = &self.file;
        let a = &self.arch;
        let k = |s: &str| format!("{a}.{s}");
        let model_type = self.model_type()?;
        let hidden = f.req_u64(&k("embedding_length"))?;
        let heads = f.req_u64(&k("attention.head_count"))?;
        let kv_heads = f.opt_u64(&k("attention.head_count_kv"))?.unwrap_or(heads);
        let vocab = match f.get("tokenizer.ggml.tokens").and_then(Value::as_array) {
            Some(t) => t.len() as u64,
            None => match f.opt_u64(&k("vocab_size"))? {
                Some(v) => v,
                None => self
                    .file
                    .tensor("token_embd.weight")
                    .and_then(|t| t.dims.get(1).copied())
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "{}: no vocabulary size (no tokenizer.ggml.tokens, {a}.vocab_size or token_embd.weight)",
                            f.name()
                        ))
                    })?,
            },
        };
        let mut c = Map::new();
        c.insert("model_type".into(), json!(model_type));
        c.insert("architectures".into(), json!([a]));
        c.insert("hidden_size".into(), json!(hidden));
        let layers = f.req_u64(&k("block_count"))?;
        if layers == 0 || layers as usize > f.tensors.len() {
            return Err(Error::Invalid(format!(
                "{}: {a}.block_count is {layers}, but the file has {} tensors",
                f.name(),
                f.tensors.len()
            )));
        }
        c.insert("num_hidden_layers".into(), json!(layers));
        c.insert("num_attention_heads".into(), json!(heads));
        c.insert("num_key_value_heads".into(), json!(kv_heads));
        c.insert("vocab_size".into(), json!(vocab));
        if let Some(hd) = f.opt_u64(&k("attention.key_length"))? {
            c.insert("head_dim".into(), json!(hd));
        }
        c.insert(
            "rms_norm_eps".into(),
            json!(f.opt_f64(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6)),
        );
        let theta = f.opt_f64(&k("rope.freq_base"))?.unwrap_or(10000.0);
        c.insert("rope_theta".into(), json!(theta));
        if let Some(ctx) = f.opt_u64(&k("context_length"))? {
            c.insert("max_position_embeddings".into(), json!(ctx));
        }
        c.insert(
            "tie_word_embeddings".into(),
            json!(self.file.tensor("output.weight").is_none()),
        );
        let ffn = f.opt_u64(&k("feed_forward_length"))?;
        if let Some(ffn) = ffn {
            c.insert("intermediate_size".into(), json!(ffn));
        }
        if let Some(rs) = self.rope_scaling(theta)? {
            c.insert("rope_scaling".into(), rs);
        }
        if model_type.starts_with("deepseek") {
            self.deepseek_config(&mut c, &model_type, layers)?;
            return Ok(Json::Object(c));
        }
        if model_type == "gpt_oss" {
            self.gpt_oss_config(&mut c, layers)?;
            return Ok(Json::Object(c));
        }
        // Biases: qwen2 always has q/k/v biases; llama-family files say so by carrying them.
        if model_type == "llama" && self.names.contains_key("model.layers.0.self_attn.q_proj.bias") {
            c.insert("attention_bias".into(), json!(true));
        }
        if model_type == "qwen3" && self.names.contains_key("model.layers.0.self_attn.q_proj.bias") {
            c.insert("attention_bias".into(), json!(true));
        }
        if matches!(model_type.as_str(), "mixtral" | "qwen2_moe" | "qwen3_moe" | "olmoe") {
            let experts = f.req_u64(&k("expert_count"))?;
            let used = f.req_u64(&k("expert_used_count"))?;
            c.insert("num_local_experts".into(), json!(experts));
            c.insert("num_experts".into(), json!(experts));
            c.insert("num_experts_per_tok".into(), json!(used));
            let expert_ffn = f.opt_u64(&k("expert_feed_forward_length"))?.or(ffn);
            if let Some(e) = expert_ffn {
                c.insert("moe_intermediate_size".into(), json!(e));
                if model_type == "olmoe" || model_type == "mixtral" {
                    c.insert("intermediate_size".into(), json!(e));
                }
            }
            // Qwen3-MoE releases renormalise the top-k weights; Qwen1.5-MoE and OLMoE do not.
            let norm = f
                .get(&k("expert_weights_norm"))
                .and_then(Value::as_bool)
                .unwrap_or(model_type == "qwen3_moe");
            c.insert("norm_topk_prob".into(), json!(norm));
            // Layers without a router are dense (transformers' `mlp_only_layers`).
            if matches!(model_type.as_str(), "qwen2_moe" | "qwen3_moe") {
                let layers = f.req_u64(&k("block_count"))?;
                let dense: Vec<u64> = (0..layers)
                    .filter(|i| f.tensor(&format!("blk.{i}.ffn_gate_inp.weight")).is_none())
                    .collect();
                c.insert("mlp_only_layers".into(), json!(dense));
                c.insert("decoder_sparse_step".into(), json!(1));
            }
            if model_type == "qwen2_moe" {
                let shared = f.req_u64(&k("expert_shared_feed_forward_length"))?;
                c.insert("shared_expert_intermediate_size".into(), json!(shared));
            }
        }
        if model_type == "olmoe" {
            if let Some(clip) = f.opt_f64(&k("attention.clamp_kqv"))? {
                c.insert("clip_qkv".into(), json!(clip));
            }
        }
        Ok(Json::Object(c))
    }

    /// DeepSeek V2 / V3 (llama.cpp `deepseek2`, convert_hf_to_gguf `DeepseekV2Model`).
    fn deepseek_config(&self, c: &mut Map<String, Json>, model_type: &str, block_count: u64) -> Result<()> {
        let f = &self.file;
        let a = &self.arch;
        let k = |s: &str| format!("{a}.{s}");
        let heads = f.req_u64(&k("attention.head_count"))?;
        // Newer files describe MLA as MQA over the latent (head_count_kv 1, key_length r + dr,
        // value_length r) and put the per-head sizes in *_mla keys; older ones have head_count_kv
        // = head_count, key_length = dn + dr and value_length = dv.
        c.insert("num_key_value_heads".into(), json!(heads));
        c.remove("head_dim");
        // MTP layers, if a converter kept them, come after the decoder layers.
        let nextn = f.opt_u64(&k("nextn_predict_layers"))?.unwrap_or(0);
        if nextn > 0 && nextn < block_count {
            c.insert("num_hidden_layers".into(), json!(block_count - nextn));
        }
        let rope = f.req_u64(&k("rope.dimension_count"))?;
        let qk = match f.opt_u64(&k("attention.key_length_mla"))? {
            Some(v) => v,
            None => f.req_u64(&k("attention.key_length"))?,
        };
        let v = match f.opt_u64(&k("attention.value_length_mla"))? {
            Some(v) => v,
            None => f.req_u64(&k("attention.value_length"))?,
        };
        if qk <= rope {
            return Err(Error::Invalid(format!(
                "{}: MLA key length {qk} is not larger than the rope dimension count {rope}",
                f.name()
            )));
        }
        c.insert("qk_rope_head_dim".into(), json!(rope));
        c.insert("qk_nope_head_dim".into(), json!(qk - rope));
        c.insert("v_head_dim".into(), json!(v));
        c.insert("kv_lora_rank".into(), json!(f.req_u64(&k("attention.kv_lora_rank"))?));
        c.insert("q_lora_rank".into(), json!(f.opt_u64(&k("attention.q_lora_rank"))?));
        c.insert("rope_interleave".into(), json!(true));
        let bias = self
            .names
            .contains_key("model.layers.0.self_attn.kv_a_proj_with_mqa.bias");
        c.insert("attention_bias".into(), json!(bias));
        c.insert(
            "first_k_dense_replace".into(),
            json!(f.opt_u64(&k("leading_dense_block_count"))?.unwrap_or(0)),
        );
        let experts = f.opt_u64(&k("expert_count"))?.unwrap_or(0);
        if experts > 0 {
            c.insert("n_routed_experts".into(), json!(experts));
            c.insert("num_experts_per_tok".into(), json!(f.req_u64(&k("expert_used_count"))?));
            c.insert(
                "moe_intermediate_size".into(),
                json!(f.req_u64(&k("expert_feed_forward_length"))?),
            );
            c.insert(
                "n_shared_experts".into(),
                json!(f.opt_u64(&k("expert_shared_count"))?.unwrap_or(0)),
            );
            c.insert(
                "routed_scaling_factor".into(),
                json!(f.opt_f64(&k("expert_weights_scale"))?.unwrap_or(1.0)),
            );
            // llama.cpp's default when the key is absent is false (as V2's config).
            let norm = f
                .get(&k("expert_weights_norm"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            c.insert("norm_topk_prob".into(), json!(norm));
            let groups = f.opt_u64(&k("expert_group_count"))?.unwrap_or(1).max(1);
            let used = f.opt_u64(&k("expert_group_used_count"))?.unwrap_or(groups);
            c.insert("n_group".into(), json!(groups));
            c.insert("topk_group".into(), json!(used));
            if model_type == "deepseek_v2" {
                // Group limits in a V2 file are transformers' group_limited_greedy (group score =
                // the group's best expert); without them, greedy (V2-Lite).
                let method = if groups > 1 { "group_limited_greedy" } else { "greedy" };
                c.insert("topk_method".into(), json!(method));
            }
        } else {
            c.insert("first_k_dense_replace".into(), json!(block_count));
        }
        Ok(())
    }

    /// gpt-oss (llama.cpp `gpt-oss`, convert_hf_to_gguf `GptOssModel`).
    fn gpt_oss_config(&self, c: &mut Map<String, Json>, layers: u64) -> Result<()> {
        let f = &self.file;
        let k = |s: &str| format!("{}.{s}", self.arch);
        c.insert("num_local_experts".into(), json!(f.req_u64(&k("expert_count"))?));
        c.insert("num_experts_per_tok".into(), json!(f.req_u64(&k("expert_used_count"))?));
        if let Some(e) = f.opt_u64(&k("expert_feed_forward_length"))? {
            c.insert("intermediate_size".into(), json!(e));
        }
        let bias = self.names.contains_key("model.layers.0.self_attn.q_proj.bias");
        c.insert("attention_bias".into(), json!(bias));
        // llama.cpp hard-codes gpt-oss's pattern: even layers slide, odd layers attend to all
        // (a `sliding_window_pattern` key, where present, says the same per layer).
        let window = f.opt_u64(&k("attention.sliding_window"))?.filter(|&w| w > 0);
        let pattern: Option<Vec<bool>> = match f.get(&k("attention.sliding_window_pattern")) {
            Some(Value::Array(a)) => Some(a.iter().map(|v| v.as_bool().unwrap_or(false)).collect()),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| (0..layers).map(|i| i % n < n - 1).collect()),
            None => Some((0..layers).map(|i| i % 2 == 0).collect()),
        };
        match (window, pattern) {
            (Some(w), Some(p)) if p.len() as u64 >= layers => {
                c.insert("sliding_window".into(), json!(w));
                let types: Vec<&str> = p[..layers as usize]
                    .iter()
                    .map(|&s| if s { "sliding_attention" } else { "full_attention" })
                    .collect();
                c.insert("layer_types".into(), json!(types));
            }
            _ => {
                c.insert("layer_types".into(), json!(vec!["full_attention"; layers as usize]));
            }
        }
        Ok(())
    }

    /// `rope_scaling` from `{arch}.rope.scaling.*`, or Llama 3's from the `rope_freqs.weight` tensor.
    fn rope_scaling(&self, theta: f64) -> Result<Option<Json>> {
        let f = &self.file;
        let a = &self.arch;
        match f.opt_str(&format!("{a}.rope.scaling.type")) {
            None | Some("none") => {}
            Some("yarn") => {
                let mut m = Map::new();
                m.insert("rope_type".into(), json!("yarn"));
                m.insert(
                    "factor".into(),
                    json!(f.opt_f64(&format!("{a}.rope.scaling.factor"))?.unwrap_or(1.0)),
                );
                if let Some(o) = f.opt_u64(&format!("{a}.rope.scaling.original_context_length"))? {
                    m.insert("original_max_position_embeddings".into(), json!(o));
                }
                // llama.cpp's defaults (32, 1) are transformers' too.
                for (key, hf, default) in [
                    ("yarn_beta_fast", "beta_fast", 32.0),
                    ("yarn_beta_slow", "beta_slow", 1.0),
                ] {
                    let v = f.opt_f64(&format!("{a}.rope.scaling.{key}"))?.unwrap_or(default);
                    m.insert(hf.into(), json!(v));
                }
                if a == "deepseek2" {
                    // The converter writes yarn_log_multiplier = 0.1 * mscale_all_dim; released
                    // DeepSeek configs have mscale == mscale_all_dim (cos/sin amplitude 1, the
                    // softmax scale times m^2; MODELS.md §6.3), which llama.cpp assumes too.
                    if let Some(mul) = f.opt_f64(&format!("{a}.rope.scaling.yarn_log_multiplier"))? {
                        let m_all = (mul as f32 / 0.1f32) as f64;
                        m.insert("mscale".into(), json!(m_all));
                        m.insert("mscale_all_dim".into(), json!(m_all));
                    }
                }
                if a == "gpt-oss" {
                    // gpt-oss's reference implementation and config do not round YaRN's
                    // correction range to whole dims (transformers `truncate: false`).
                    m.insert("truncate".into(), json!(false));
                }
                return Ok(Some(Json::Object(m)));
            }
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "{}: rope scaling {other:?} is not supported (none, yarn, llama3)",
                    f.name()
                )))
            }
        }
        let Some(t) = f.tensor("rope_freqs.weight") else {
            return Ok(None);
        };
        // Llama 3.x: per-dimension frequency divisors. Recover the llama3 parameters and check
        // that they reproduce the tensor.
        let got: Vec<f32> = match t.ggml_type {
            GGML_F32 => bytemuck::pod_collect_to_vec(f.tensor_bytes(t)?),
            _ => {
                return Err(Error::Invalid(format!(
                    "{}: rope_freqs.weight has type {}, expected F32",
                    f.name(),
                    t.type_name()
                )))
            }
        };
        let factor = got.iter().cloned().fold(1.0f32, f32::max) as f64;
        let (low, high) = (1.0f64, 4.0f64);
        let orig = f
            .opt_u64(&format!("{a}.rope.scaling.original_context_length"))?
            .unwrap_or(8192);
        let dims = got.len() * 2;
        let low_wl = orig as f64 / low;
        let high_wl = orig as f64 / high;
        let mut ok = true;
        for (i, &g) in got.iter().enumerate() {
            let freq = 1.0 / theta.powf((2 * i) as f64 / dims as f64);
            let wl = 2.0 * std::f64::consts::PI / freq;
            let want = if wl < high_wl {
                1.0
            } else if wl > low_wl {
                factor
            } else {
                let smooth = (orig as f64 / wl - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            if ((g as f64) - want).abs() > 1e-3 * want {
                ok = false;
            }
        }
        if !ok {
            return Err(Error::Invalid(format!(
                "{}: rope_freqs.weight does not match Llama 3 rope scaling (factor {factor}, low 1, high 4, original context {orig})",
                f.name()
            )));
        }
        Ok(Some(json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": orig,
        })))
    }

    /// The model description from the metadata.
    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_value(&self.config_value()?, &self.file.name())
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

impl GgufSource {
    /// A tensor's values (or a byte range of them) as F32 / F16 / BF16: stored types pass through;
    /// Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 and the K-quants Q2_K .. Q6_K are dequantised to f16 (f32
    /// arithmetic, one rounding), MXFP4 to bf16 (exact).
    fn decode<'a>(
        &'a self,
        t: &TensorInfo,
        label: &str,
        range: Option<(usize, usize)>,
    ) -> Result<(SrcDType, Cow<'a, [u8]>)> {
        let f = &self.file;
        let supported = matches!(t.ggml_type, GGML_F32 | GGML_F16 | GGML_BF16) || QUANTIZED.contains(&t.ggml_type);
        if !supported {
            return Err(Error::Invalid(format!(
                "{}: tensor {label} has type {}; supported: F32, F16, BF16, {}",
                f.name(),
                t.type_name(),
                QUANTIZED.map(ggml_type_name).join(", ")
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
                return Err(Error::Invalid(format!(
                    "{}: tensor {label} ({}): {} bytes is not a whole number of {bb}-byte blocks",
                    f.name(),
                    t.type_name(),
                    bytes.len()
                )));
            }
        }
        Ok(match t.ggml_type {
            GGML_F32 => (SrcDType::F32, Cow::Borrowed(bytes)),
            GGML_F16 => (SrcDType::F16, Cow::Borrowed(bytes)),
            GGML_BF16 => (SrcDType::BF16, Cow::Borrowed(bytes)),
            q => {
                let v = dequantize(q, bytes)
                    .ok_or_else(|| Error::Invalid(format!("{}: tensor {label}: no dequantiser", f.name())))?;
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
        let (da, xa) = self.decode(a, label, None)?;
        let (db, xb) = self.decode(b, label, None)?;
        let (dtype, xa, xb) = if da == db {
            (da, xa, xb)
        } else {
            (SrcDType::F32, Cow::Owned(widen(&da, &xa)), Cow::Owned(widen(&db, &xb)))
        };
        let es = if dtype == SrcDType::F32 { 4 } else { 2 };
        for (t, x) in [(a, &xa), (b, &xb)] {
            if x.len() != t.elements() * es {
                return Err(Error::Invalid(format!(
                    "{}: tensor {label}: {} holds {} bytes, expected {}",
                    self.file.name(),
                    t.name,
                    x.len(),
                    t.elements() * es
                )));
            }
        }
        Ok((dtype, es, xa, xb))
    }
}

/// Two tensors' values in one dtype: (dtype, bytes per element, first, second).
type DecodedPair<'a> = (SrcDType, usize, Cow<'a, [u8]>, Cow<'a, [u8]>);

/// F16 / BF16 / F32 bytes as f32 bytes.
fn widen(dtype: &SrcDType, bytes: &[u8]) -> Vec<u8> {
    let v: Vec<f32> = match dtype {
        SrcDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        SrcDType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return bytes.to_vec(),
    };
    bytemuck::cast_slice(&v).to_vec()
}

/// `[batch, rows, cols]` elements of `es` bytes to `[batch, cols, rows]`.
fn transpose_last2(x: &[u8], batch: usize, rows: usize, cols: usize, es: usize) -> Vec<u8> {
    let mut out = vec![0u8; x.len()];
    for b in 0..batch {
        let base = b * rows * cols;
        for r in 0..rows {
            for c in 0..cols {
                let s = (base + r * cols + c) * es;
                let d = (base + c * rows + r) * es;
                out[d..d + es].copy_from_slice(&x[s..s + es]);
            }
        }
    }
    out
}

/// gpt-oss: llama.cpp's gate and up experts `[E, I, D]` back to transformers' `gate_up_proj
/// [E, D, 2I]` (x @ W; column 2i = gate row i, column 2i + 1 = up row i). With `transpose` false,
/// the biases: `[E, I]` twice to `[E, 2I]` interleaved the same way (`d` = 1).
pub fn interleave_gate_up(
    gate: &[u8],
    up: &[u8],
    e: usize,
    i_: usize,
    d: usize,
    es: usize,
    transpose: bool,
) -> Vec<u8> {
    let mut out = vec![0u8; gate.len() * 2];
    for x in 0..e {
        for i in 0..i_ {
            for c in 0..d {
                let s = ((x * i_ + i) * d + c) * es;
                for (k, part) in [gate, up].into_iter().enumerate() {
                    let col = 2 * i + k;
                    let dst = if transpose {
                        ((x * d + c) * 2 * i_ + col) * es
                    } else {
                        ((x * 2 * i_ + col) * d + c) * es
                    };
                    out[dst..dst + es].copy_from_slice(&part[s..s + es]);
                }
            }
        }
    }
    out
}

/// DeepSeek: newer converters' `attn_k_b [H, r, dn]` (W_UK_h transposed) and `attn_v_b [H, dv, r]`
/// (W_UV_h) back to transformers' `kv_b_proj [H·(dn+dv), r]` (per head: W_UK_h rows, W_UV_h rows).
pub fn assemble_kv_b(k_b: &[u8], v_b: &[u8], heads: usize, r: usize, dn: usize, dv: usize, es: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(k_b.len() + v_b.len());
    for h in 0..heads {
        let k = &k_b[h * r * dn * es..(h + 1) * r * dn * es];
        out.extend(transpose_last2(k, 1, r, dn, es));
        out.extend_from_slice(&v_b[h * dv * r * es..(h + 1) * dv * r * es]);
    }
    out
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
            .ok_or_else(|| Error::Invalid(format!("tensor {name} is missing from {}", f.name())))?;
        let t = &f.tensors[m.tensor];
        let label = match &m.form {
            Form::KvB(o) | Form::Interleave { up: o, .. } => format!("{} + {} ({name})", t.name, f.tensors[*o].name),
            _ if t.name == name => name.to_string(),
            _ => format!("{} ({name})", t.name),
        };
        let mut shape = t.shape();
        let (dtype, data): (SrcDType, Cow<'_, [u8]>) = match &m.form {
            Form::Plain => self.decode(t, &label, None)?,
            Form::Expert(e, n) => {
                shape.remove(0);
                self.decode(t, &label, Some((*e, *n)))?
            }
            Form::Unpermute(n_head) => {
                let (dtype, data) = self.decode(t, &label, None)?;
                let n_head = *n_head;
                let rows = shape.first().copied().unwrap_or(1);
                let row_bytes = data.len() / rows.max(1);
                if n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0 {
                    return Err(Error::Invalid(format!(
                        "{}: tensor {label} has {rows} rows, which do not split into {n_head} heads of even size",
                        f.name()
                    )));
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
                let (dtype, data) = self.decode(t, &label, None)?;
                let es = if dtype == SrcDType::F32 { 4 } else { 2 };
                let (e, rows, cols) = (shape[0], shape[1], shape[2]);
                if data.len() != e * rows * cols * es {
                    return Err(Error::Invalid(format!("{}: tensor {label}: size mismatch", f.name())));
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
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/// GPT-2's byte-to-unicode table (`bytes_to_unicode`): printable bytes map to themselves, the rest
/// to U+0100 onwards.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer for `tokenizer.ggml.pre` (llama.cpp's `llama_vocab_pre_type` regexes).
fn pre_tokenizer(pre: Option<&str>) -> Json {
    let split = |re: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]})
    };
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    match pre.unwrap_or("default") {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "dbrx"
        | "smaug-bpe" => split(LLAMA3_SPLIT),
        "tekken" => split(TEKKEN_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "megrez" => split(QWEN2_SPLIT),
        "gpt-4o" | "llama4" | "minimax-m2" => split(GPT4O_SPLIT),
        // llama.cpp splits digits one by one before the GPT-2 regex for these (SmolLM2's own
        // tokenizer.json does the same with `Digits(individual_digits)` + `ByteLevel`).
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva-7b" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level],
        }),
        _ => byte_level,
    }
}

/// `(tokenizer, chat template, bos token, eos tokens, eos ids)`.
pub type TokenizerParts = (
    tokenizers::Tokenizer,
    Option<String>,
    Option<String>,
    Vec<String>,
    Vec<u32>,
);

/// Build the tokenizer a GGUF's metadata describes (byte-level BPE, `tokenizer.ggml.model == "gpt2"`).
pub fn tokenizer_parts(f: &GgufFile) -> Result<TokenizerParts> {
    let name = f.name();
    let model = f.opt_str("tokenizer.ggml.model").unwrap_or("(none)");
    if model != "gpt2" {
        return Err(Error::Invalid(format!(
            "{name}: tokenizer.ggml.model {model:?} is not supported; supported: gpt2 (byte-level BPE)"
        )));
    }
    let tokens: Vec<&str> = f
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Invalid(format!("{name}: tokenizer.ggml.tokens is missing")))?
        .iter()
        .map(|v| v.as_str().unwrap_or(""))
        .collect();
    let types: Vec<i64> = f
        .get("tokenizer.ggml.token_type")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.as_i64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let merges = f
        .get("tokenizer.ggml.merges")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{name}: tokenizer.ggml.merges is missing (needed for a gpt2 tokenizer)"
            ))
        })?;

    let table = bytes_to_unicode();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        let spelled = if in_alphabet(t) {
            t.to_string()
        } else {
            t.bytes().map(|b| table[b as usize]).collect()
        };
        vocab.insert(spelled, json!(i));
    }
    let merges: Vec<Json> = merges
        .iter()
        .filter_map(|m| m.as_str())
        .filter_map(|m| m.split_once(' ').map(|(a, b)| json!([a, b])))
        .collect();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        match types.get(i) {
            // CONTROL: special; a non-byte-level spelling is a llama.cpp mislabel (transformers skips it).
            Some(3) if in_alphabet(t) => added.push(json!({"id": i, "content": t, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})),
            // USER_DEFINED: matched whole in text, not special.
            Some(4) => added.push(json!({"id": i, "content": t, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": false})),
            _ => {}
        }
    }
    let token_of = |key: &str| -> Option<(u32, String)> {
        let id = f.get(key)?.as_u64()? as usize;
        tokens.get(id).map(|t| (id as u32, t.to_string()))
    };
    let bos = token_of("tokenizer.ggml.bos_token_id");
    let add_bos = f
        .get("tokenizer.ggml.add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let post = match (&bos, add_bos) {
        (Some((id, t)), true) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": t, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {t.as_str(): {"id": t, "ids": [id], "tokens": [t]}},
        }),
        _ => Json::Null,
    };
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(f.opt_str("tokenizer.ggml.pre")),
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    let text = serde_json::to_string(&spec).map_err(|e| Error::Invalid(format!("{name}: tokenizer: {e}")))?;
    let tok: tokenizers::Tokenizer = text.parse().map_err(|e| {
        Error::Invalid(format!(
            "{name}: could not build the tokenizer from the GGUF vocabulary: {e}"
        ))
    })?;

    let mut eos_ids = Vec::new();
    let mut eos = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some((id, t)) = token_of(key) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
                eos.push(t);
            }
        }
    }
    let template = f.opt_str("tokenizer.chat_template").map(str::to_string);
    Ok((tok, template, bos.map(|b| b.1), eos, eos_ids))
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Load a GGUF model: metadata to the model description, tensors (dequantised where needed) to the GPU.
pub fn load_gguf(ctx: Context, path: &Path, progress: &dyn Fn(usize, usize)) -> Result<Model> {
    let src = GgufSource::open(path)?;
    let config = src.config()?;
    let weights = weights::load(&ctx, &config, &src, progress)?;
    Ok(Model::new(ctx, config, weights))
}
