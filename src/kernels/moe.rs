//! moe kernels.

pub const SHADER: &str = include_str!("../../shaders/moe.wgsl");
