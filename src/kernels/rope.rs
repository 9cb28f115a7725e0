//! rope kernels.

pub const SHADER: &str = include_str!("../../shaders/rope.wgsl");
