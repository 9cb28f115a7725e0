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

/// What a model path is: a folder or a file (a `.gguf`); anything else (nothing there, a FIFO, a
/// device) is an error naming the path.
fn is_dir(path: &Path) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(m) if m.is_file() => Ok(false),
        Ok(_) => crate::input::check_regular(path, "model folder or .gguf file").map(|()| false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::io(
            path,
            std::io::Error::new(e.kind(), "no such model folder or .gguf file"),
        )),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// How a checkpoint's weights are loaded.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// The GPU memory the model may take, and the expert cache that keeps it within it
    /// ([`crate::model::experts`]).
    pub cache: crate::model::experts::CacheOptions,
    /// Keep block-quantised weights (GGUF Q8_0 .. Q6_K, MXFP4) packed on the GPU, as the file
    /// stores them (the default). `false` expands them to f16 (MXFP4 to bf16) at load, as wgmoe did
    /// before it read them packed: about 3.5x the GPU memory for 4-bit files, kept for comparing.
    pub packed: bool,
    /// Quantise 16/32-bit matrices at load to this block format (Q8_0, Q4_0, Q5_0 or Q4_K, see
    /// [`crate::model::quantize`]), for users who have only the safetensors: matrices whose rows are
    /// not whole blocks take llama.cpp's fallback format; vectors, MoE routers and weights that
    /// must be rearranged as values (MLA's absorbed blocks, gpt-oss's transposed experts) stay as
    /// they are, as llama.cpp's quantiser leaves routers and vectors.
    pub quantize: Option<crate::gpu::DType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            packed: true,
            quantize: None,
            cache: Default::default(),
        }
    }
}

/// The model description and the tensors of a Hugging Face model folder or a `.gguf` file.
pub fn open(path: &Path) -> Result<(ModelConfig, Box<dyn TensorSource>)> {
    open_with(path, &LoadOptions::default())
}

/// [`open`] with explicit [`LoadOptions`].
pub fn open_with(path: &Path, opts: &LoadOptions) -> Result<(ModelConfig, Box<dyn TensorSource>)> {
    if let Some(q) = opts.quantize {
        if !super::quantize::QUANTIZERS.contains(&q) {
            let names: Vec<&str> = super::quantize::QUANTIZERS.iter().map(|d| d.name()).collect();
            return Err(Error::bad_input(format!(
                "--quantize {}: wgmoe quantises to {}",
                q.name(),
                names.join(", ")
            )));
        }
    }
    if is_dir(path)? {
        let (config, mut src) = open_dir(path)?;
        src.packed = opts.packed;
        Ok((config, Box::new(src)))
    } else {
        let (config, mut src) = gguf::open(path)?;
        src.packed = opts.packed;
        Ok((config, Box::new(src)))
    }
}

/// The model description alone (a folder's `config.json`, or a `.gguf` file's metadata), for
/// checks that come before a load, such as a request's fit in the context.
pub fn config(path: &Path) -> Result<ModelConfig> {
    if is_dir(path)? {
        read_config(path)
    } else {
        gguf::GgufSource::open(path)?.config()
    }
}

/// A folder's `config.json` as a model description.
fn read_config(dir: &Path) -> Result<ModelConfig> {
    let cfg_path = dir.join("config.json");
    let text = crate::input::read_text(&cfg_path, crate::input::CONFIG_CAP, "model config (config.json)")?;
    ModelConfig::from_json(&text, &cfg_path.display().to_string())
}

/// A Hugging Face model folder: `config.json` and its safetensors.
pub fn open_dir(dir: &Path) -> Result<(ModelConfig, Safetensors)> {
    let config = read_config(dir)?;
    Ok((config, Safetensors::open_dir(dir)?))
}

/// The tokenizer of a model folder (`tokenizer.json` & co.) or of a `.gguf` file's vocabulary;
/// the weights are not read.
pub fn tokenizer_for(path: &Path) -> Result<Tokenizer> {
    if is_dir(path)? {
        return Tokenizer::from_dir(path);
    }
    let file = gguf::GgufFile::open(path)?;
    let (inner, template, bos, eos, eos_ids) = gguf::tokenizer_parts(&file)?;
    Ok(Tokenizer::from_parts(inner, template, bos, eos, eos_ids))
}
