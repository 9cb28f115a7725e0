//! The binary's subcommands that have grown beyond a few lines: their arguments and printing.
//! Their logic is the library's ([`wgmoe::internals::bench`], [`wgmoe::internals::bench_model`]).

pub mod bench_kernels;
pub mod bench_model;
pub mod report;
pub mod serve;

use wgmoe::internals::model::experts::{CacheOptions, Policy, SessionNeeds};
use wgmoe::{Error, Result};

/// The GPU memory a model may take, and the expert cache that keeps it within it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MemoryArgs {
    /// GiB wgmoe may allocate on the adapter (fractions allowed). Routed experts that do not fit
    /// stay in host memory with a GPU cache of the ones in use. Default: the adapter's memory less
    /// 10% where wgmoe can read it (Vulkan), else no cap.
    #[arg(long = "gpu-memory", value_name = "GIB")]
    pub gpu_memory: Option<f64>,
    /// Cache exactly this many routed experts per MoE layer on the GPU (top-k at least), whatever
    /// the memory: llama.cpp's --n-cpu-moe turned into a cache size.
    #[arg(long = "expert-slots", value_name = "N")]
    pub expert_slots: Option<usize>,
    /// Which cached expert gives way to a missing one: lfu (least frequently used, counts halving
    /// every 64 forward passes; the default) or lru.
    #[arg(long = "cache-policy", default_value = "lfu")]
    pub cache_policy: String,
}

impl MemoryArgs {
    /// The cache options these flags set, for sessions of `session`.
    pub fn cache(&self, session: SessionNeeds) -> Result<CacheOptions> {
        Ok(CacheOptions {
            gpu_memory: self.gpu_memory.map(|g| gib_bytes("--gpu-memory", g)).transpose()?,
            expert_slots: self.expert_slots,
            policy: Policy::parse(&self.cache_policy)?,
            session,
        })
    }
}

/// A GiB flag's value (`--gpu-memory`, `--max-weights-gib`) in bytes: a finite number of GiB
/// above 0.
pub fn gib_bytes(flag: &str, g: f64) -> Result<u64> {
    if !(g.is_finite() && g > 0.0) {
        return Err(Error::bad_input(format!(
            "{flag} {g} is not allowed: give a finite number of GiB > 0"
        )));
    }
    Ok((g * (1u64 << 30) as f64) as u64)
}
