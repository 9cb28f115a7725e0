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

use super::quant;
use super::source::{RawTensor, SrcDType, TensorSource};
use crate::error::{Error, Result};
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
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

impl Safetensors {
    /// Open the safetensors files of a model folder.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if index.exists() {
            let text = crate::input::read_text(&index, crate::input::LARGE_JSON_CAP, "safetensors index")?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| io_err(&index, e))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| io_err(&index, "no \"weight_map\" object"))?;
            let mut names: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            return Err(Error::Invalid(format!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut s = Self {
            paths: Vec::new(),
            maps: Vec::new(),
            entries: HashMap::new(),
            fp8_block: fp8_block_size(dir)?,
        };
        for f in files {
            s.add_file(&f)?;
        }
        Ok(s)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        crate::input::check_regular(path, "safetensors file")?;
        let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        // SAFETY: the file is only read; a checkpoint modified while it is being loaded is a user
        // error that can at worst produce wrong weights.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| io_err(path, format!("not a complete safetensors file ({e:?})")))?;
        let base = 8 + header_len;
        let shard = self.maps.len();
        for (name, info) in meta.tensors() {
            let (start, end) = info.data_offsets;
            if base + end > map.len() {
                return Err(io_err(
                    path,
                    format!("tensor {name} runs past the end of the file (truncated?)"),
                ));
            }
            let dtype = match info.dtype {
                safetensors::Dtype::F32 => SrcDType::F32,
                safetensors::Dtype::F16 => SrcDType::F16,
                safetensors::Dtype::BF16 => SrcDType::BF16,
                other => SrcDType::Other(format!("{other:?}")),
            };
            self.entries.insert(
                name.clone(),
                Entry {
                    shard,
                    dtype,
                    shape: info.shape.clone(),
                    start: base + start,
                    end: base + end,
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
        Err(Error::Invalid(format!(
            "tensor {name} is missing from {}",
            self.all_files()
        )))
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
        _ => Err(io_err(
            &path,
            format!("quantization_config.weight_block_size must be two positive integers, found {b}"),
        )),
    }
}

impl Safetensors {
    fn all_files(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
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
            Error::Invalid(format!(
                "{}: tensor {of} is {what} but its scale tensor {name} is missing (searched {})",
                self.file(of_entry),
                self.all_files()
            ))
        })
    }

    /// gpt-oss MXFP4 experts: `{name}_blocks [E, R, G, 16]` + `{name}_scales [E, R, G]` served as
    /// bf16 `[E, 32 G, R]`.
    fn mxfp4_dequantised(&self, name: &str, b: &Entry) -> Result<RawTensor<'_>> {
        let bname = format!("{name}_blocks");
        let sname = format!("{name}_scales");
        let bad = |e: &Entry, n: &str, why: String| Error::Invalid(format!("{}: MXFP4 tensor {n} {why}", self.file(e)));
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
        let bytes = quant::mxfp4_to_bf16_transposed(self.bytes(b), self.bytes(s), e, r, g);
        Ok(RawTensor {
            name: name.to_string(),
            file: self.file(b),
            dtype: SrcDType::BF16,
            shape: vec![e, g * 32, r],
            bytes: Cow::Owned(bytes),
        })
    }

    /// A DeepSeek-V3 FP8 weight with its block scales, served as bf16.
    fn fp8_dequantised(&self, name: &str, w: &Entry) -> Result<RawTensor<'_>> {
        let bad = |e: &Entry, n: &str, why: String| Error::Invalid(format!("{}: FP8 tensor {n} {why}", self.file(e)));
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
