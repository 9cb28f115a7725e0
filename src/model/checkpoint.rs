//! A model on disk, opened without the GPU: a Hugging Face folder (`config.json`, safetensors,
//! `tokenizer.json`) or a `.gguf` file, as a model description and a tensor source (what
//! `Model::load` uploads), or as a tokenizer.

use super::config::ModelConfig;
use super::gguf;
use super::safetensors::Safetensors;
use super::source::TensorSource;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use std::path::Path;

/// The model description and the tensors of a Hugging Face model folder or a `.gguf` file.
pub fn open(path: &Path) -> Result<(ModelConfig, Box<dyn TensorSource>)> {
    if path.is_dir() {
        let (config, src) = open_dir(path)?;
        Ok((config, Box::new(src)))
    } else if path.is_file() {
        let (config, src) = gguf::open(path)?;
        Ok((config, Box::new(src)))
    } else {
        Err(Error::Invalid(format!(
            "{}: no such model folder or .gguf file",
            path.display()
        )))
    }
}

/// A Hugging Face model folder: `config.json` and its safetensors.
pub fn open_dir(dir: &Path) -> Result<(ModelConfig, Safetensors)> {
    let cfg_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&cfg_path).map_err(|e| Error::Invalid(format!("{}: {e}", cfg_path.display())))?;
    let config = ModelConfig::from_json(&text, &cfg_path.display().to_string())?;
    Ok((config, Safetensors::open_dir(dir)?))
}

/// The tokenizer of a model folder (`tokenizer.json` & co.) or of a `.gguf` file's vocabulary;
/// the weights are not read.
pub fn tokenizer_for(path: &Path) -> Result<Tokenizer> {
    if path.is_dir() {
        return Tokenizer::from_dir(path);
    }
    let file = gguf::GgufFile::open(path)?;
    let (inner, template, bos, eos, eos_ids) = gguf::tokenizer_parts(&file)?;
    Ok(Tokenizer::from_parts(inner, template, bos, eos, eos_ids))
}
