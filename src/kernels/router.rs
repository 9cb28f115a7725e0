//! router kernels.

pub const SHADER: &str = include_str!("../../shaders/router.wgsl");
