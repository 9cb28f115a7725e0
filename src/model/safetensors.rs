//! Tensors from `model.safetensors` or shards listed in `model.safetensors.index.json`,
//! memory-mapped: a tensor's bytes are read from the page cache only when it is uploaded, so host
//! memory during a load stays near one tensor, not the whole model.
//!
//! Quantised checkpoints are served under the names a bf16 checkpoint has, dequantised to bf16 on
//! access (one tensor's copy at a time; `quant.rs` does the arithmetic):
//! - gpt-oss MXFP4: `X_blocks` (u8 `[E, R, G, 16]`) + `X_scales` (u8 / F8_E8M0 `[E, R, G]`), rows
//!   `[out, in]`, are served as `X` in transformers' `[E, in = 32 G, out = R]` layout.
//! - DeepSeek-V3 FP8: an F8_E4M3 `N.weight` `[out, in]` with its f32 `N.weight_scale_inv`
//!   `[ceil(out / bh), ceil(in / bw)]` is served as the bf16 product. The tile `[bh, bw]` is
//!   `quantization_config.weight_block_size` from the folder's `config.json` (default 128 x 128).
//!
//! `names()` lists these logical names: the `_blocks` / `_scales` / `_scale_inv` siblings are
//! consumed by them and not listed.
//!
//! Each file's header is read and checked by wgmoe's own [`read_header`] before any tensor byte is
//! used (length, JSON, dtypes, shapes, offsets, overlaps), with errors naming the file and tensor.

use super::quant;
use super::source::{RawTensor, SrcDType, TensorSource};
use crate::error::{Error, Result};
use crate::gpu::DType;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// DeepSeek-V3's `weight_block_size`.
const DEFAULT_FP8_BLOCK: [usize; 2] = [128, 128];

struct Entry {
    shard: usize,
    dtype: SrcDType,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

pub struct Safetensors {
    paths: Vec<PathBuf>,
    maps: Vec<memmap2::Mmap>,
    entries: HashMap<String, Entry>,
    /// FP8 scale tile `[rows, cols]`.
    fp8_block: [usize; 2],
    /// Serve DeepSeek-V3's FP8 weights as packed FP8 blocks where their tiles allow, and
    /// gpt-oss's MXFP4 experts as their blocks where asked for rows
    /// ([`TensorSource::get_transposed`]); else only dequantised.
    pub packed: bool,
}

/// The shard that `model.safetensors.index.json` names for `tensor`: a path inside the model
/// folder, so an index from a stranger cannot make wgmoe open `/etc/...` or `../../...`.
fn shard_path(dir: &Path, index: &Path, tensor: &str, file: &serde_json::Value) -> Result<PathBuf> {
    let Some(name) = file.as_str() else {
        return Err(Error::bad_model(
            index,
            format!("weight_map[\"{tensor}\"] is {file}, not a file name"),
        ));
    };
    let rel = Path::new(name);
    let inside = !name.is_empty() && rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !inside {
        return Err(Error::bad_model(
            index,
            format!("weight_map[\"{tensor}\"] = {name:?} is not a file inside the model folder"),
        ));
    }
    Ok(dir.join(rel))
}

impl Safetensors {
    /// Open the safetensors files of a model folder.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if index.exists() {
            let text = crate::input::read_text(&index, crate::input::LARGE_JSON_CAP, "safetensors index")?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::bad_model(&index, e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::bad_model(&index, "no \"weight_map\" object"))?;
            let mut names = Vec::with_capacity(map.len());
            for (tensor, file) in map {
                names.push(shard_path(dir, &index, tensor, file)?);
            }
            names.sort();
            names.dedup();
            names
        } else if single.exists() {
            vec![single]
        } else {
            return Err(Error::bad_model(
                dir,
                "no model.safetensors or model.safetensors.index.json",
            ));
        };
        let mut s = Self {
            paths: Vec::new(),
            maps: Vec::new(),
            entries: HashMap::new(),
            fp8_block: fp8_block_size(dir)?,
            packed: true,
        };
        for f in files {
            s.add_file(&f)?;
        }
        Ok(s)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        crate::input::check_regular(path, "safetensors file")?;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is only read; a checkpoint modified while it is being loaded is a user
        // error that can at worst produce wrong weights.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = read_header(&map, path)?;
        let shard = self.maps.len();
        for t in header {
            if let Some(other) = self.entries.get(&t.name) {
                return Err(Error::bad_model(
                    path,
                    format!("tensor {} is also in {}", t.name, self.paths[other.shard].display()),
                ));
            }
            self.entries.insert(
                t.name,
                Entry {
                    shard,
                    dtype: t.dtype,
                    shape: t.shape,
                    start: t.start,
                    end: t.end,
                },
            );
        }
        self.paths.push(path.to_path_buf());
        self.maps.push(map);
        Ok(())
    }
}

impl TensorSource for Safetensors {
    fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name) || self.entries.contains_key(&format!("{name}_blocks"))
    }

    fn get(&self, name: &str) -> Result<RawTensor<'_>> {
        if let Some(e) = self.entries.get(name) {
            if e.dtype == SrcDType::Other("F8_E4M3".into()) {
                return self.fp8_dequantised(name, e);
            }
            return Ok(self.raw(name, e));
        }
        if let Some(blocks) = self.entries.get(&format!("{name}_blocks")) {
            return self.mxfp4_dequantised(name, blocks);
        }
        Err(Error::bad_model(
            self.dir(),
            format!("tensor {name} is missing from {}", self.all_files()),
        ))
    }

    /// Without the repacking or dequantising `get` does for FP8 and MXFP4 tensors.
    fn gpu_dtype_of(&self, name: &str) -> Result<DType> {
        match self.entries.get(name) {
            Some(e) if e.dtype == SrcDType::Other("F8_E4M3".into()) => {
                let cols = e.shape.last().copied().unwrap_or(0);
                Ok(if self.packed && quant::fp8_packs(cols, self.fp8_block) {
                    DType::FP8
                } else {
                    DType::BF16
                })
            }
            Some(e) => self.raw(name, e).gpu_dtype(),
            None => self.get(name)?.gpu_dtype(),
        }
    }

    fn release(&self, name: &str) {
        for n in [
            name.to_string(),
            format!("{name}_blocks"),
            format!("{name}_scales"),
            format!("{name}_scale_inv"),
        ] {
            if let Some(e) = self.entries.get(&n) {
                // SAFETY: the map is read-only and private: dropping its pages only makes the next
                // read fault them in from the file again.
                let _ = unsafe {
                    self.maps[e.shard].unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        e.start,
                        e.end - e.start,
                    )
                };
            }
        }
    }

    fn get_transposed(&self, name: &str) -> Option<Result<RawTensor<'_>>> {
        let blocks = self.entries.get(&format!("{name}_blocks")).filter(|_| self.packed)?;
        Some(self.mxfp4_rows(name, blocks))
    }

    fn names(&self) -> Vec<String> {
        let mut v = Vec::with_capacity(self.entries.len());
        for n in self.entries.keys() {
            if let Some(base) = n.strip_suffix("_blocks") {
                v.push(base.to_string());
            } else if self.consumed_sibling(n) {
                continue;
            } else {
                v.push(n.clone());
            }
        }
        v
    }

    fn stored_bytes(&self) -> Option<u64> {
        Some(self.entries.values().map(|e| (e.end - e.start) as u64).sum())
    }
}

/// `quantization_config.weight_block_size` of the folder's `config.json`, if it has one.
fn fp8_block_size(dir: &Path) -> Result<[usize; 2]> {
    let path = dir.join("config.json");
    let Ok(text) = crate::input::read_text(&path, crate::input::CONFIG_CAP, "model config (config.json)") else {
        return Ok(DEFAULT_FP8_BLOCK);
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(DEFAULT_FP8_BLOCK); // the config parser reports a malformed config.json
    };
    let Some(b) = v
        .get("quantization_config")
        .and_then(|q| q.get("weight_block_size"))
        .filter(|b| !b.is_null())
    else {
        return Ok(DEFAULT_FP8_BLOCK);
    };
    match b
        .as_array()
        .map(|a| a.iter().map(|x| x.as_u64()).collect::<Vec<_>>())
        .as_deref()
    {
        Some([Some(r), Some(c)]) if *r > 0 && *c > 0 => Ok([*r as usize, *c as usize]),
        _ => Err(Error::bad_model(
            &path,
            format!("quantization_config.weight_block_size must be two positive integers, found {b}"),
        )),
    }
}

impl Safetensors {
    /// The model folder.
    fn dir(&self) -> &Path {
        self.paths.first().and_then(|p| p.parent()).unwrap_or(Path::new("."))
    }

    /// The names of the files in [`Safetensors::dir`].
    fn all_files(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.file_name().unwrap_or(p.as_os_str()).to_string_lossy())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn file(&self, e: &Entry) -> String {
        self.paths[e.shard].display().to_string()
    }

    fn bytes(&self, e: &Entry) -> &[u8] {
        &self.maps[e.shard][e.start..e.end]
    }

    fn raw(&self, name: &str, e: &Entry) -> RawTensor<'_> {
        RawTensor {
            name: name.to_string(),
            file: self.file(e),
            dtype: e.dtype.clone(),
            shape: e.shape.clone(),
            bytes: Cow::Borrowed(self.bytes(e)),
        }
    }

    /// A quantisation sibling that a served tensor consumes (not a weight of its own).
    fn consumed_sibling(&self, n: &str) -> bool {
        if let Some(base) = n.strip_suffix("_scales") {
            return self.entries.contains_key(&format!("{base}_blocks"));
        }
        if let Some(base) = n.strip_suffix("_scale_inv") {
            return self.entries.contains_key(base);
        }
        false
    }

    /// The `_scales` sibling of `blocks_name`, or the `_scale_inv` of an FP8 weight.
    fn sibling(&self, of: &str, of_entry: &Entry, name: &str, what: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| {
            Error::bad_model(
                &self.paths[of_entry.shard],
                format!(
                    "tensor {of} is {what} but its scale tensor {name} is missing (searched {})",
                    self.all_files()
                ),
            )
        })
    }

    /// gpt-oss MXFP4 experts: `{name}_blocks [E, R, G, 16]` + `{name}_scales [E, R, G]` served as
    /// bf16 `[E, 32 G, R]`.
    fn mxfp4_dequantised(&self, name: &str, b: &Entry) -> Result<RawTensor<'_>> {
        let (blocks, scales, [e, r, g]) = self.mxfp4_parts(name, b)?;
        let bytes = quant::mxfp4_to_bf16_transposed(blocks, scales, e, r, g);
        Ok(RawTensor {
            name: name.to_string(),
            file: self.file(b),
            dtype: SrcDType::BF16,
            shape: vec![e, g * 32, r],
            bytes: Cow::Owned(bytes),
        })
    }

    /// The same experts as their `[E, R, 32 G]` rows of MXFP4 blocks (GGUF's block layout).
    fn mxfp4_rows(&self, name: &str, b: &Entry) -> Result<RawTensor<'_>> {
        let (blocks, scales, [e, r, g]) = self.mxfp4_parts(name, b)?;
        Ok(RawTensor {
            name: name.to_string(),
            file: self.file(b),
            dtype: SrcDType::Packed(crate::gpu::DType::MXFP4),
            shape: vec![e, r, g * 32],
            bytes: Cow::Owned(quant::mxfp4_to_gguf_blocks(blocks, scales)),
        })
    }

    /// The checked blocks and scales of an MXFP4 tensor, and `[E, R, G]`.
    fn mxfp4_parts(&self, name: &str, b: &Entry) -> Result<(&[u8], &[u8], [usize; 3])> {
        let bname = format!("{name}_blocks");
        let sname = format!("{name}_scales");
        let bad =
            |e: &Entry, n: &str, why: String| Error::bad_model(&self.paths[e.shard], format!("MXFP4 tensor {n} {why}"));
        if b.dtype != SrcDType::Other("U8".into()) {
            return Err(bad(b, &bname, format!("has type {:?}; expected U8", b.dtype)));
        }
        let (e, r, g) = match b.shape[..] {
            [e, r, g, 16] if e * r * g > 0 => (e, r, g),
            _ => {
                return Err(bad(
                    b,
                    &bname,
                    format!("has shape {:?}; expected [experts, rows, in/32, 16]", b.shape),
                ))
            }
        };
        let s = self.sibling(&bname, b, &sname, "MXFP4")?;
        if !matches!(&s.dtype, SrcDType::Other(t) if t == "U8" || t == "F8_E8M0") {
            return Err(bad(s, &sname, format!("has type {:?}; expected U8 (E8M0)", s.dtype)));
        }
        if s.shape != [e, r, g] {
            return Err(bad(
                s,
                &sname,
                format!(
                    "has shape {:?}; expected {:?} to match {bname} {:?}",
                    s.shape,
                    [e, r, g],
                    b.shape
                ),
            ));
        }
        Ok((self.bytes(b), self.bytes(s), [e, r, g]))
    }

    /// A DeepSeek-V3 FP8 weight with its block scales, served as bf16.
    fn fp8_dequantised(&self, name: &str, w: &Entry) -> Result<RawTensor<'_>> {
        let bad =
            |e: &Entry, n: &str, why: String| Error::bad_model(&self.paths[e.shard], format!("FP8 tensor {n} {why}"));
        let [rows, cols] = w.shape[..] else {
            return Err(bad(
                w,
                name,
                format!("has shape {:?}; only 2-D weights are supported", w.shape),
            ));
        };
        let sname = format!("{name}_scale_inv");
        let s = self.sibling(name, w, &sname, "float8_e4m3fn (block-scaled)")?;
        let [bh, bw] = self.fp8_block;
        let want = [rows.div_ceil(bh), cols.div_ceil(bw)];
        if s.shape != want {
            return Err(bad(
                s,
                &sname,
                format!(
                    "has shape {:?}; expected {want:?} for {name} {:?} in {bh}x{bw} blocks",
                    s.shape, w.shape
                ),
            ));
        }
        let scale = match &s.dtype {
            SrcDType::F32 | SrcDType::BF16 | SrcDType::F16 => self.raw(&sname, s).to_f32()?,
            other => return Err(bad(s, &sname, format!("has type {other:?}; expected F32"))),
        };
        // Kept packed where every 128 values of a row share one tile (the released checkpoints:
        // 128x128 tiles, widths that are multiples of 128); else dequantised to bf16.
        if self.packed {
            if let Some(bytes) = quant::fp8_to_blocks(self.bytes(w), rows, cols, &scale, self.fp8_block) {
                return Ok(RawTensor {
                    name: name.to_string(),
                    file: self.file(w),
                    dtype: SrcDType::Packed(crate::gpu::DType::FP8),
                    shape: vec![rows, cols],
                    bytes: Cow::Owned(bytes),
                });
            }
        }
        let bytes = quant::fp8_block_to_bf16(self.bytes(w), rows, cols, &scale, self.fp8_block);
        Ok(RawTensor {
            name: name.to_string(),
            file: self.file(w),
            dtype: SrcDType::BF16,
            shape: vec![rows, cols],
            bytes: Cow::Owned(bytes),
        })
    }
}

/// The largest header accepted (the safetensors crate's limit). A header is the JSON table of
/// the tensors: a few MB for the largest checkpoints.
pub const MAX_HEADER_BYTES: usize = 100_000_000;
/// Shapes longer than this are refused while the header is read (no model tensor comes close).
const MAX_RANK: usize = 16;

/// The safetensors dtypes and their sizes in bits.
const DTYPE_BITS: &[(&str, usize)] = &[
    ("BOOL", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("I16", 16),
    ("U16", 16),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F32", 32),
    ("C64", 64),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
];

/// One tensor of a safetensors header, checked against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderTensor {
    pub name: String,
    pub dtype: SrcDType,
    pub shape: Vec<usize>,
    /// Byte range in the file (absolute offsets).
    pub start: usize,
    pub end: usize,
}

/// A header entry as written, before it is checked.
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// A shape, refused past [`MAX_RANK`] dimensions before it grows further.
struct Shape;

impl<'de> serde::de::DeserializeSeed<'de> for Shape {
    type Value = Vec<u64>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Vec<u64>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Shape {
    type Value = Vec<u64>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of at most {MAX_RANK} non-negative integers")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<u64>, A::Error> {
        let mut v = Vec::new();
        while let Some(d) = seq.next_element::<u64>()? {
            if v.len() == MAX_RANK {
                return Err(serde::de::Error::custom(format!("more than {MAX_RANK} dimensions")));
            }
            v.push(d);
        }
        Ok(v)
    }
}

/// One tensor's entry: `dtype`, `shape`, `data_offsets` (other fields are ignored, as the
/// safetensors crate does). `at` is set to the field being read, for the caller's error message.
struct EntrySeed<'a> {
    at: &'a mut Option<String>,
    name: &'a str,
}

impl<'de> serde::de::DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = RawEntry;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<RawEntry, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EntrySeed<'_> {
    type Value = RawEntry;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with dtype, shape and data_offsets")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawEntry, A::Error> {
        use serde::de::Error as _;
        let (mut dtype, mut shape, mut offsets) = (None, None, None);
        while let Some(field) = map.next_key::<String>()? {
            *self.at = Some(format!("tensor {}, field {field:?}", self.name));
            let twice = match field.as_str() {
                "dtype" => dtype.replace(map.next_value::<String>()?).is_some(),
                "shape" => shape.replace(map.next_value_seed(Shape)?).is_some(),
                "data_offsets" => offsets.replace(map.next_value::<(u64, u64)>()?).is_some(),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    false
                }
            };
            if twice {
                return Err(A::Error::custom("appears twice"));
            }
        }
        *self.at = Some(format!("tensor {}", self.name));
        Ok(RawEntry {
            dtype: dtype.ok_or_else(|| A::Error::missing_field("dtype"))?,
            shape: shape.ok_or_else(|| A::Error::missing_field("shape"))?,
            data_offsets: offsets.ok_or_else(|| A::Error::missing_field("data_offsets"))?,
        })
    }
}

/// The header object: tensor entries in file order; `__metadata__` is skipped; a key twice is an
/// error. `at` names the entry being read, for the caller's error message.
struct Entries<'a> {
    at: &'a mut Option<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Entries<'_> {
    type Value = Vec<(String, RawEntry)>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Entries<'_> {
    type Value = Vec<(String, RawEntry)>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of tensors")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut out: Vec<(String, RawEntry)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            *self.at = Some(if key == "__metadata__" {
                "__metadata__".to_string()
            } else {
                format!("tensor {key}")
            });
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom("appears twice in the header"));
            }
            if key == "__metadata__" {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                let entry = map.next_value_seed(EntrySeed {
                    at: &mut *self.at,
                    name: &key,
                })?;
                out.push((key, entry));
            }
            *self.at = None;
        }
        Ok(out)
    }
}

/// The tensors a safetensors file's header describes, checked against the file's `bytes` before
/// any tensor byte is used: a header length within [`MAX_HEADER_BYTES`] and the file; a JSON
/// object of entries with known dtypes, shapes of at most 16 dimensions and no name twice; each
/// tensor's `data_offsets` holding exactly `shape` x dtype bytes (overflow-checked) inside the
/// data; and the tensors tiling the data, with no overlap, gap or trailing bytes (the format
/// requires it). `file` names the file in errors, which also name the tensor at fault.
pub fn read_header(bytes: &[u8], file: impl AsRef<Path>) -> Result<Vec<HeaderTensor>> {
    let file = file.as_ref();
    let bad = |why: String| Error::bad_model(file, format!("not a valid safetensors file: {why}"));
    let mut len = [0u8; 8];
    len.copy_from_slice(bytes.get(..8).ok_or_else(|| {
        bad(format!(
            "{} bytes, shorter than the 8-byte header length (truncated?)",
            bytes.len()
        ))
    })?);
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES as u64 {
        return Err(bad(format!(
            "the header length {n} is over the {MAX_HEADER_BYTES}-byte limit (a corrupt file, or not safetensors)"
        )));
    }
    let data_start = 8 + n as usize;
    if data_start > bytes.len() {
        return Err(bad(format!(
            "the {n}-byte header runs past the end of the {}-byte file (truncated?)",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(&bytes[8..data_start]).map_err(|e| bad(format!("the header is not UTF-8: {e}")))?;
    let mut at = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = serde::de::DeserializeSeed::deserialize(Entries { at: &mut at }, &mut de)
        .and_then(|raw| de.end().map(|()| raw))
        .map_err(|e| match &at {
            Some(what) => bad(format!("{what}: {e}")),
            None => bad(format!("the header is not a JSON object of tensors: {e}")),
        })?;

    let data_len = bytes.len() - data_start;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, r) in raw {
        let (s, e) = r.data_offsets;
        let tbad = |why: String| {
            Error::bad_model(
                file,
                format!(
                    "tensor {name} ({} {:?}, data_offsets [{s}, {e}]): {why}",
                    r.dtype, r.shape
                ),
            )
        };
        let &(_, bits) = DTYPE_BITS.iter().find(|d| d.0 == r.dtype).ok_or_else(|| {
            tbad(format!(
                "unknown dtype {:?} (safetensors has {})",
                r.dtype,
                DTYPE_BITS.iter().map(|d| d.0).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let shape = r
            .shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<usize>>>();
        let size_bits = shape
            .as_ref()
            .and_then(|sh| sh.iter().try_fold(bits, |a, &d| a.checked_mul(d)))
            .ok_or_else(|| tbad("the shape's size overflows".to_string()))?;
        if !size_bits.is_multiple_of(8) {
            return Err(tbad(format!("{size_bits} bits, not a whole number of bytes")));
        }
        let size = (size_bits / 8) as u64;
        if e < s {
            return Err(tbad("the data ends before it starts".to_string()));
        }
        if e - s != size {
            return Err(tbad(format!(
                "the dtype and shape make {size} bytes but data_offsets hold {}",
                e - s
            )));
        }
        if e > data_len as u64 {
            return Err(tbad(format!(
                "runs past the end of the {data_len}-byte data section (truncated file?)"
            )));
        }
        let dtype = match r.dtype.as_str() {
            "F32" => SrcDType::F32,
            "F16" => SrcDType::F16,
            "BF16" => SrcDType::BF16,
            other => SrcDType::Other(other.to_string()),
        };
        tensors.push(HeaderTensor {
            dtype,
            shape: shape.unwrap_or_default(),
            start: data_start + s as usize,
            end: data_start + e as usize,
            name,
        });
    }

    // The format lays the tensors end to end from the start of the data.
    let mut order: Vec<&HeaderTensor> = tensors.iter().collect();
    order.sort_by_key(|t| (t.start, t.end));
    let mut end = data_start;
    let mut before: Option<&HeaderTensor> = None;
    for t in order {
        let rel = |x: usize| x - data_start;
        if t.start < end {
            let p = before.map_or("", |p| p.name.as_str());
            return Err(bad(format!(
                "tensors {p} and {} overlap (data bytes {}..{} and {}..{})",
                t.name,
                before.map_or(0, |p| rel(p.start)),
                rel(end),
                rel(t.start),
                rel(t.end)
            )));
        }
        if t.start > end {
            let after = before.map_or("at the start of the data".to_string(), |p| {
                format!("after tensor {}", p.name)
            });
            return Err(bad(format!(
                "{} bytes {after} belong to no tensor before tensor {} (data_offsets do not match the tensors' sizes)",
                t.start - end,
                t.name
            )));
        }
        end = t.end;
        before = Some(t);
    }
    if end < bytes.len() {
        let last = before.map_or("(no tensors)", |t| t.name.as_str());
        return Err(bad(format!(
            "{} bytes after the last tensor {last} belong to no tensor (a tensor missing from the header?)",
            bytes.len() - end
        )));
    }
    Ok(tensors)
}
