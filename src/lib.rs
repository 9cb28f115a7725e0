//! wgmoe: Mixture-of-Experts transformers as WGSL compute shaders through wgpu.
//!
//! The layout follows `DESIGN.md`: `gpu` owns the wgpu context, buffers and timers; `kernels` has one
//! module per kernel family (its shader is `shaders/<family>.wgsl`, its tests
//! `kernels-tests/<family>.rs`).

pub mod bench;
pub mod bench_model;
pub mod error;
pub mod generate;
pub mod gpu;
pub mod input;
pub mod kernels;
pub mod model;
pub mod tokenizer;

pub use error::{Error, Result};
