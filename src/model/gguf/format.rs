//! The GGUF file format, read by hand from a memory map: the header, the metadata key/values
//! ([`Value`]), the tensor table ([`TensorInfo`]) and the data section; and ggml's table of tensor
//! types (block sizes and names).
//!
//! Every malformed input (bad magic, unsupported version, truncated header, a tensor running past the
//! end of the file) is an `Error::Invalid` naming the file, never a panic.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// The ggml name of a tensor type ("Q4_K", or "type 99" when unknown).
pub fn ggml_type_name(t: u32) -> String {
    GGML_TYPES
        .iter()
        .find(|e| e.0 == t)
        .map_or_else(|| format!("type {t}"), |e| e.1.to_string())
}

/// `(elements, bytes)` of one block of type `t`, for the types whose layout this reader knows.
pub(super) fn block_layout(t: u32) -> Option<(usize, usize)> {
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
        crate::input::check_regular(path, "GGUF file")?;
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

    /// The index in [`GgufFile::tensors`] of the tensor `name`.
    pub(super) fn tensor_position(&self, name: &str) -> Option<usize> {
        self.tensor_index.get(name).copied()
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

    pub(super) fn req(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| Error::Invalid(format!("{}: metadata key {key:?} is missing", self.name())))
    }
    pub(super) fn req_u64(&self, key: &str) -> Result<u64> {
        let v = self.req(key)?;
        v.as_u64()
            .ok_or_else(|| Error::Invalid(format!("{}: {key:?} should be an integer, found {v:?}", self.name())))
    }
    pub(super) fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.req_u64(key).map(Some),
        }
    }
    pub(super) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::Invalid(format!("{}: {key:?} should be a number, found {v:?}", self.name()))),
        }
    }
    pub(super) fn opt_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}
