//! The GGUF file format, read by hand from a memory map: the header, the metadata key/values
//! ([`Value`]), the tensor table ([`TensorInfo`]) and the data section; and ggml's table of tensor
//! types (block sizes and names).
//!
//! The whole file is checked against the format when it is opened, before any tensor byte is used
//! (see [`GgufFile`]); every malformed input is an `Error::BadModel` naming the file and the key or
//! tensor at fault, never a panic, and no count or length the file claims is allocated before the
//! bytes that would hold it are known to be there.

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

/// ggml tensor types: (id, name, elements per block, bytes per block), as ggml's `type_traits`
/// (gguf-py `GGML_QUANT_SIZES`). Ids ggml has removed (4, 5, 31-33, 36-38) are not listed: a
/// tensor of an unlisted type is refused, since its size, and so the file's layout, is unknown.
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
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
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

/// `(elements, bytes)` of one block of type `t`; `None` for an id ggml does not define.
pub(super) fn block_layout(t: u32) -> Option<(usize, usize)> {
    GGML_TYPES.iter().find(|e| e.0 == t).map(|e| (e.2, e.3))
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
    /// Byte size, from the type's block layout and the dimensions.
    pub size: usize,
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

/// A file's bytes: memory-mapped from disk, or owned (a file read by other means, a test, a fuzzer).
enum Bytes {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file, checked against the format before any tensor byte is used: the header and
/// every metadata value are read within the file; the tensor table's types, dimensions and
/// offsets are checked (known ggml types, whole blocks, at most 4 dimensions, none empty, offsets
/// aligned, no duplicate names); and the tensors tile the data section as every GGUF writer lays
/// it out (gguf-py, llama.cpp): each starts where the one before it ends, rounded up to the
/// alignment, with no overlap, no gap and nothing after the last one but its padding. A file
/// that breaks any of this is an `Error::BadModel` naming the file and the key or tensor.
pub struct GgufFile {
    pub path: PathBuf,
    map: Bytes,
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
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Nested metadata arrays deeper than this are refused.
const MAX_ARRAY_DEPTH: usize = 8;
/// The most metadata values (array elements included) a file may hold. Each becomes a 32-byte
/// [`Value`], so however a file forges its counts the metadata stays under 256 MiB; the largest
/// real vocabularies (262k tokens with their scores and types, and the merges) hold under 2M.
const MAX_VALUES: u64 = 1 << 23;
/// The fewest bytes a metadata entry (empty key, a u8 value) and a tensor-table entry (empty
/// name, no dimensions) take: what a claimed count is checked against.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// The fewest bytes a metadata value of GGUF type `t` takes; `None` for an undefined type.
fn min_value_bytes(t: u32) -> Option<u64> {
    Some(match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    file: &'a Path,
    /// Metadata values read so far (array elements included), against [`MAX_VALUES`].
    values: u64,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> Error {
        Error::bad_model(self.file, format!("not a valid GGUF file: {what}"))
    }
    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| {
            Error::bad_model(
                self.file,
                format!(
                    "truncated GGUF file: {what} needs {n} bytes at offset {} but the file has {} bytes \
                     (incomplete download?)",
                    self.pos,
                    self.b.len()
                ),
            )
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
    /// Count `n` more metadata values against [`MAX_VALUES`].
    fn count_values(&mut self, n: u64, what: &str) -> Result<()> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            return Err(self.err(&format!(
                "{what}: the metadata holds more than {MAX_VALUES} values (array elements included)"
            )));
        }
        Ok(())
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
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(&format!("{what}: arrays nested too deeply")));
                }
                let et = self.u32(what)?;
                let min = min_value_bytes(et)
                    .ok_or_else(|| self.err(&format!("{what} is an array of unknown value type {et}")))?;
                let n = self.u64(what)?;
                // Never trust a count for an allocation: the elements must fit in the bytes left.
                let remaining = self.remaining();
                if n.checked_mul(min).is_none_or(|need| need > remaining) {
                    return Err(Error::bad_model(
                        self.file,
                        format!(
                            "truncated GGUF file: {what} claims an array of {n} elements of at least {min} \
                             bytes each but only {remaining} bytes remain"
                        ),
                    ));
                }
                self.count_values(n, what)?;
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

/// One entry of the tensor table as read, before it is checked.
struct RawInfo {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
    offset: u64,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        crate::input::check_regular(path, "GGUF file")?;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < 24 {
            return Err(Error::bad_model(
                path,
                format!("truncated GGUF file: {len} bytes, shorter than the 24-byte header (incomplete download?)"),
            ));
        }
        // SAFETY: the file is only read; a file modified while it is being loaded is a user error
        // that can at worst produce wrong weights.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path.to_path_buf(), Bytes::Map(map))
    }

    /// A GGUF file from its bytes; `path` only names it in errors. The same checks as
    /// [`GgufFile::open`].
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        let path = path.into();
        if bytes.len() < 24 {
            return Err(Error::bad_model(
                path,
                format!(
                    "truncated GGUF file: {} bytes, shorter than the 24-byte header (incomplete download?)",
                    bytes.len()
                ),
            ));
        }
        Self::parse(path, Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, map: Bytes) -> Result<Self> {
        let bytes: &[u8] = &map;
        let mut c = Cursor {
            b: bytes,
            pos: 0,
            file: &path,
            values: 0,
        };
        let magic = c.take(4, "the magic")?;
        if magic != MAGIC {
            return Err(Error::bad_model(
                &path,
                format!("not a GGUF file (starts with {magic:02x?}, expected \"GGUF\")"),
            ));
        }
        let version = c.u32("the version")?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                " (a big-endian GGUF; only little-endian files are supported)"
            } else {
                ""
            };
            return Err(Error::bad_model(
                &path,
                format!("GGUF version {version} is not supported (versions 2 and 3 are){hint}"),
            ));
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        // Each entry takes some bytes: counts the rest of the file cannot hold are refused here,
        // before any loop or allocation trusts them.
        let left = c.remaining();
        let kv_bytes = n_kv.saturating_mul(MIN_KV_BYTES);
        if kv_bytes > left {
            return Err(c.err(&format!(
                "the header claims {n_kv} metadata entries (kv_count), which need at least {kv_bytes} bytes, but \
                 only {left} bytes follow the header (corrupt header or truncated file)"
            )));
        }
        let table_bytes = n_tensors.saturating_mul(MIN_TENSOR_INFO_BYTES);
        if table_bytes.saturating_add(kv_bytes) > left {
            return Err(c.err(&format!(
                "the header claims {n_tensors} tensors (tensor_count) and {n_kv} metadata entries, whose tables \
                 need at least {} bytes, but only {left} bytes follow the header (corrupt header or truncated file)",
                table_bytes.saturating_add(kv_bytes)
            )));
        }
        let mut metadata = Vec::new();
        let mut meta_index = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}"))?;
            let what = format!("metadata {key:?}");
            let t = c.u32(&what)?;
            c.count_values(1, &what)?;
            let v = c.value(t, &what, 0)?;
            if let Some(j) = meta_index.insert(key.clone(), metadata.len()) {
                return Err(c.err(&format!("metadata key {key:?} appears twice (entries {j} and {i})")));
            }
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => 32,
            Some((_, v)) => match v.as_u64().filter(|_| v.as_bool().is_none()) {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return Err(c.err(&format!("general.alignment {v:?} is not a power of two (up to 2^20)"))),
            },
        };
        let mut infos = Vec::new();
        let mut tensor_index = HashMap::new();
        for i in 0..n_tensors {
            let tname = c.string(&format!("tensor info {i}"))?;
            let what = format!("tensor info {tname:?}");
            let n_dims = c.u32(&what)?;
            if n_dims > MAX_DIMS {
                return Err(c.err(&format!(
                    "tensor {tname} has {n_dims} dimensions; ggml tensors have at most {MAX_DIMS}"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let ggml_type = c.u32(&what)?;
            let offset = c.u64(&what)?;
            if tensor_index.insert(tname.clone(), infos.len()).is_some() {
                return Err(c.err(&format!("tensor {tname} appears twice in the tensor table")));
            }
            infos.push(RawInfo {
                name: tname,
                dims,
                ggml_type,
                offset,
            });
        }
        let data_start = c
            .pos
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| c.err("the data section starts past the end of the address space"))?;
        let tensors = infos
            .into_iter()
            .map(|t| check_tensor(&path, t, alignment, data_start, bytes.len()))
            .collect::<Result<Vec<_>>>()?;
        check_layout(&path, &tensors, alignment, data_start, bytes.len())?;
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
}

/// One tensor-table entry checked on its own: a ggml type this reader knows the size of, no empty
/// dimension, rows of whole blocks, a size that fits the address space, an offset aligned to
/// `alignment` and the bytes inside the file (whose data section starts at `data_start`).
fn check_tensor(file: &Path, t: RawInfo, alignment: usize, data_start: usize, file_len: usize) -> Result<TensorInfo> {
    let RawInfo {
        name,
        dims,
        ggml_type,
        offset,
    } = t;
    let bad = |why: String| Error::bad_model(file, format!("not a valid GGUF file: tensor {name} {why}"));
    let type_name = ggml_type_name(ggml_type);
    let (be, bb) = block_layout(ggml_type).ok_or_else(|| {
        bad(format!(
            "has ggml type {ggml_type}, which is not a ggml type this reader knows (corrupt tensor table, or a \
             type newer than this reader)"
        ))
    })?;
    if dims.contains(&0) {
        return Err(bad(format!(
            "({type_name}) has dimensions {dims:?}: an empty dimension"
        )));
    }
    let elements = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|e| usize::try_from(e).ok())
        .ok_or_else(|| bad(format!("({type_name}) has dimensions {dims:?}, too large")))?;
    let row = dims.first().copied().unwrap_or(1);
    if !row.is_multiple_of(be as u64) {
        return Err(Error::bad_model(
            file,
            format!("tensor {name} ({type_name}) has rows of {row} elements, not a multiple of its block size {be}"),
        ));
    }
    let size = (elements / be)
        .checked_mul(bb)
        .ok_or_else(|| bad(format!("({type_name}) has dimensions {dims:?}, too large")))?;
    if !offset.is_multiple_of(alignment as u64) {
        return Err(bad(format!(
            "({type_name}) has offset {offset} in the data section, not a multiple of the alignment {alignment} \
             (general.alignment)"
        )));
    }
    let start = usize::try_from(offset)
        .ok()
        .and_then(|o| o.checked_add(data_start))
        .ok_or_else(|| bad(format!("({type_name}) has offset {offset}, past the end of the file")))?;
    if start.checked_add(size).is_none_or(|e| e > file_len) {
        return Err(Error::bad_model(
            file,
            format!(
                "tensor {name} ({type_name}) runs past the end of the file (offset {start}, {size} bytes, file \
                 {file_len} bytes): truncated?"
            ),
        ));
    }
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        start,
        size,
    })
}

/// The tensors must tile the data section as GGUF writers lay it out: in offset order, each
/// starts where the one before it ends rounded up to `alignment` (the first at 0), and the
/// section holds nothing after the last one but that rounding. An overlap means two tensors share
/// bytes; a gap or bytes after the last tensor mean a size that does not match its type and
/// dimensions, or a `tensor_count` that leaves tensors out (whose data would then be read shifted).
fn check_layout(
    file: &Path,
    tensors: &[TensorInfo],
    alignment: usize,
    data_start: usize,
    file_len: usize,
) -> Result<()> {
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| (t.start, t.size));
    let bad = |why: String| Error::bad_model(file, format!("not a valid GGUF file: {why}"));
    let rel = |t: &TensorInfo| t.start - data_start;
    // Offsets relative to the data section, so every check below is overflow-free: each tensor's
    // end is inside the file.
    let mut end = 0usize;
    let mut before: Option<&TensorInfo> = None;
    for t in order {
        let (s, e) = (rel(t), rel(t) + t.size);
        let expected = end.next_multiple_of(alignment);
        if s < end {
            let (p, ps) = before.map_or((String::new(), 0), |p| {
                (format!("{} ({})", p.name, p.type_name()), rel(p))
            });
            return Err(bad(format!(
                "tensors {p} and {} ({}) overlap: bytes {ps}..{end} and {s}..{e} of the data section (a wrong \
                 offset, type or dimensions in the tensor table)",
                t.name,
                t.type_name()
            )));
        }
        if s != expected {
            let after = match before {
                Some(p) => format!("after tensor {} (which ends at byte {end} of the data section)", p.name),
                None => "at the start of the data section".to_string(),
            };
            return Err(bad(format!(
                "{} bytes {after} belong to no tensor before tensor {} ({}, at byte {s}): a tensor's type or \
                 dimensions do not match its data, or tensor_count ({}) leaves tensors out",
                s - expected,
                t.name,
                t.type_name(),
                tensors.len()
            )));
        }
        end = e;
        before = Some(t);
    }
    let data_len = file_len.saturating_sub(data_start);
    let padded = end.next_multiple_of(alignment);
    if data_len > padded {
        let why = match before {
            Some(t) => format!(
                "{} bytes after the last tensor {} (whose data ends at byte {end} of the {data_len}-byte data \
                 section, {padded} with {alignment}-byte padding)",
                data_len - padded,
                t.name
            ),
            None => format!("{data_len} bytes of tensor data but the tensor table lists no tensor"),
        };
        return Err(bad(format!("{why}: tensor_count ({}) may be wrong", tensors.len())));
    }
    Ok(())
}

impl GgufFile {
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

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> Result<&[u8]> {
        t.start
            .checked_add(t.size)
            .and_then(|end| self.map.get(t.start..end))
            .ok_or_else(|| {
                Error::bad_model(
                    &self.path,
                    format!(
                        "tensor {} ({}, {} bytes at offset {}) is not inside the file",
                        t.name,
                        t.type_name(),
                        t.size,
                        t.start
                    ),
                )
            })
    }

    pub(super) fn req(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| Error::bad_model(&self.path, format!("metadata key {key:?} is missing")))
    }
    pub(super) fn req_u64(&self, key: &str) -> Result<u64> {
        let v = self.req(key)?;
        v.as_u64()
            .ok_or_else(|| Error::bad_model(&self.path, format!("{key:?} should be an integer, found {v:?}")))
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
                .ok_or_else(|| Error::bad_model(&self.path, format!("{key:?} should be a number, found {v:?}"))),
        }
    }
    pub(super) fn opt_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}
