//! attention kernels.

pub const SHADER: &str = include_str!("../../shaders/attention.wgsl");
