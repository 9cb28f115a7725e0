//! swiglu kernels.

pub const SHADER: &str = include_str!("../../shaders/swiglu.wgsl");
