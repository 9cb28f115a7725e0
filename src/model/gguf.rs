//! GGUF files (llama.cpp's single-file format), read by hand from a memory map: the header, the
//! metadata key/values, the tensor table and the data section; tensors exposed under transformers
//! names so the one weight loader (`weights::load`) reads them like a safetensors folder; the
//! metadata turned into a transformers-style `config.json` value; and the tokenizer rebuilt from the
//! vocabulary it carries.
//!
//! Tensor types: F32 / F16 / BF16 pass through; Q8_0, Q4_0 and Q4_1 are dequantised to f16 at load
//! with ggml's formulas (computed in f32, rounded once to f16). llama.cpp permutes the rows of
//! `q_proj` / `k_proj` of llama-family models for its interleaved RoPE; that is undone here.
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
pub const GGML_Q8_0: u32 = 8;
pub const GGML_BF16: u32 = 30;

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
                    "{name}: tensor {tname} runs past the end of the file (offset {start}, {} bytes, file {} bytes): truncated?",
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

/// Dequantise a Q8_0 / Q4_0 / Q4_1 buffer to f32 (`None` for other types).
pub fn dequantize(ggml_type: u32, src: &[u8]) -> Option<Vec<f32>> {
    let mut out = Vec::with_capacity(src.len() * 2);
    match ggml_type {
        GGML_Q8_0 => dequant_q8_0(src, &mut out),
        GGML_Q4_0 => dequant_q4_0(src, &mut out),
        GGML_Q4_1 => dequant_q4_1(src, &mut out),
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
pub const SUPPORTED_ARCHS: &[&str] = &["llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "olmoe"];

struct Mapped {
    tensor: usize,
    /// Undo llama.cpp's Q/K permutation with this many heads.
    unpermute: Option<usize>,
    /// `(expert, experts)`: one expert's slab of a stacked `[E, rows, cols]` tensor.
    expert: Option<(usize, usize)>,
}

/// A GGUF file as a [`TensorSource`] with transformers tensor names, plus its config and tokenizer.
pub struct GgufSource {
    pub file: GgufFile,
    pub arch: String,
    names: HashMap<String, Mapped>,
}

/// transformers name of a per-layer GGUF tensor suffix, for a model type.
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
    let n = match base {
        "attn_q" => "self_attn.q_proj".to_string(),
        "attn_k" => "self_attn.k_proj".to_string(),
        "attn_v" => "self_attn.v_proj".to_string(),
        "attn_output" => "self_attn.o_proj".to_string(),
        "attn_q_norm" => "self_attn.q_norm".to_string(),
        "attn_k_norm" => "self_attn.k_norm".to_string(),
        "attn_norm" => "input_layernorm".to_string(),
        "ffn_norm" => "post_attention_layernorm".to_string(),
        "ffn_gate" => "mlp.gate_proj".to_string(),
        "ffn_up" => "mlp.up_proj".to_string(),
        "ffn_down" => "mlp.down_proj".to_string(),
        "ffn_gate_inp" => format!("{moe_prefix}.gate"),
        "ffn_gate_shexp" => "mlp.shared_expert.gate_proj".to_string(),
        "ffn_up_shexp" => "mlp.shared_expert.up_proj".to_string(),
        "ffn_down_shexp" => "mlp.shared_expert.down_proj".to_string(),
        "ffn_gate_inp_shexp" => "mlp.shared_expert_gate".to_string(),
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
        // llama.cpp permutes q/k rows only for the llama family (convert_hf_to_gguf LlamaModel).
        let permuted = s.arch == "llama";
        let heads = s
            .file
            .opt_u64(&format!("{}.attention.head_count", s.arch))?
            .unwrap_or(0) as usize;
        let kv_heads = s
            .file
            .opt_u64(&format!("{}.attention.head_count_kv", s.arch))?
            .map_or(heads, |v| v as usize);
        let mut names = HashMap::new();
        for (ti, t) in s.file.tensors.iter().enumerate() {
            let mapped = match t.name.as_str() {
                "token_embd.weight" => Some("model.embed_tokens.weight".to_string()),
                "output_norm.weight" => Some("model.norm.weight".to_string()),
                "output.weight" => Some("lm_head.weight".to_string()),
                n => n.strip_prefix("blk.").and_then(|rest| {
                    let (layer, suffix) = rest.split_once('.')?;
                    let layer: usize = layer.parse().ok()?;
                    layer_name(suffix, &model_type).map(|x| format!("model.layers.{layer}.{x}"))
                }),
            };
            let Some(hf) = mapped else { continue };
            if hf.contains("{e}") {
                if t.dims.len() != 3 {
                    return Err(Error::Invalid(format!(
                        "{}: stacked expert tensor {} has dimensions {:?}, expected 3",
                        s.file.name(),
                        t.name,
                        t.dims
                    )));
                }
                let e_count = t.dims[2] as usize;
                for e in 0..e_count {
                    names.insert(
                        hf.replace("{e}", &e.to_string()),
                        Mapped {
                            tensor: ti,
                            unpermute: None,
                            expert: Some((e, e_count)),
                        },
                    );
                }
                continue;
            }
            let unpermute = if permuted && heads > 0 {
                if hf.contains("self_attn.q_proj.") {
                    Some(heads)
                } else if hf.contains("self_attn.k_proj.") {
                    Some(kv_heads)
                } else {
                    None
                }
            } else {
                None
            };
            names.insert(
                hf,
                Mapped {
                    tensor: ti,
                    unpermute,
                    expert: None,
                },
            );
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
        let label = if t.name == name {
            name.to_string()
        } else {
            format!("{} ({name})", t.name)
        };
        let supported = matches!(
            t.ggml_type,
            GGML_F32 | GGML_F16 | GGML_BF16 | GGML_Q8_0 | GGML_Q4_0 | GGML_Q4_1
        );
        if !supported {
            return Err(Error::Invalid(format!(
                "{}: tensor {label} has type {}; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1",
                f.name(),
                t.type_name()
            )));
        }
        let mut bytes = f.tensor_bytes(t)?;
        let mut shape = t.shape();
        if let Some((e, n)) = m.expert {
            let per = bytes.len() / n;
            bytes = &bytes[e * per..(e + 1) * per];
            shape.remove(0);
        }
        // llama.cpp stores Qwen2-MoE's shared-expert gate as a vector; transformers as `[1, D]`.
        if name.ends_with("shared_expert_gate.weight") && shape.len() == 1 {
            shape.insert(0, 1);
        }
        let (dtype, mut data): (SrcDType, Cow<'_, [u8]>) = match t.ggml_type {
            GGML_F32 => (SrcDType::F32, Cow::Borrowed(bytes)),
            GGML_F16 => (SrcDType::F16, Cow::Borrowed(bytes)),
            GGML_BF16 => (SrcDType::BF16, Cow::Borrowed(bytes)),
            q => {
                let v = dequantize(q, bytes)
                    .ok_or_else(|| Error::Invalid(format!("{}: tensor {label}: no dequantiser", f.name())))?;
                let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
                (SrcDType::F16, Cow::Owned(bytemuck::cast_slice(&h).to_vec()))
            }
        };
        if let Some(n_head) = m.unpermute {
            let rows = shape.first().copied().unwrap_or(1);
            let row_bytes = data.len() / rows.max(1);
            if n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0 {
                return Err(Error::Invalid(format!(
                    "{}: tensor {label} has {rows} rows, which do not split into {n_head} heads of even size",
                    f.name()
                )));
            }
            data = Cow::Owned(unpermute_rows(&data, rows, row_bytes, n_head));
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
