//! sampling kernels.

pub const SHADER: &str = include_str!("../../shaders/sampling.wgsl");
