//! embedding kernels.

pub const SHADER: &str = include_str!("../../shaders/embedding.wgsl");
