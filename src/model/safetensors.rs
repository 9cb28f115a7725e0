//! Tensors from `model.safetensors` or shards listed in `model.safetensors.index.json`,
//! memory-mapped: a tensor's bytes are read from the page cache only when it is uploaded, so host
//! memory during a load stays near one tensor, not the whole model.

use super::source::{RawTensor, SrcDType, TensorSource};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
            let text = std::fs::read_to_string(&index).map_err(|e| io_err(&index, e))?;
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
        };
        for f in files {
            s.add_file(&f)?;
        }
        Ok(s)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
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
        self.entries.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<RawTensor<'_>> {
        let e = self.entries.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "tensor {name} is missing from {}",
                self.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        Ok(RawTensor {
            name: name.to_string(),
            file: self.paths[e.shard].display().to_string(),
            dtype: e.dtype.clone(),
            shape: e.shape.clone(),
            bytes: std::borrow::Cow::Borrowed(&self.maps[e.shard][e.start..e.end]),
        })
    }

    fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}
