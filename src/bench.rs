//! `wgmoe bench-kernels` / `cargo bench`: every kernel at real model shapes.

use crate::error::Result;
use crate::gpu::DeviceOptions;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct BenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_opts: &DeviceOptions, _args: &BenchArgs) -> Result<()> {
    Err(crate::Error::Invalid("bench-kernels is not built yet".into()))
}
