//! Checkpoints to models: config, weights, the forward plan.

pub mod config;
pub mod safetensors;
pub mod source;
