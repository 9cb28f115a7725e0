//! matmul kernels.

pub const SHADER: &str = include_str!("../../shaders/matmul.wgsl");
