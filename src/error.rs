//! Errors are values (DESIGN.md principle 8): every failure a user can cause names what went wrong
//! and what to do about it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "no GPU adapter found on any backend ({backends}).\n\
         Install a Vulkan driver for your GPU, or Mesa's software rasterizer for a CPU fallback \
         (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)."
    )]
    NoAdapter { backends: String },

    #[error("no adapter matches --device {selector:?}. Available adapters:\n{available}")]
    NoMatchingAdapter { selector: String, available: String },

    #[error("could not open a device on {adapter}: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    #[error("{what} needs {needed} but the adapter allows at most {limit} ({limit_name})")]
    Limit {
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
    },

    #[error("shape error in {op}: {msg}")]
    Shape { op: &'static str, msg: String },

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error(
        "the GPU ran out of memory for {what} ({detail}): try a smaller context, a smaller model or \
         a GPU with more memory"
    )]
    OutOfMemory { what: String, detail: String },

    #[error(
        "the model's logits at position {position} are not finite (NaN or infinity): its weights are \
         corrupt, or a config value (rms_norm_eps, rope_theta, a scaling factor) is out of range"
    )]
    NonFinite { position: usize },

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for a shape error: `shape_err("matmul", format!(..))`.
pub fn shape_err(op: &'static str, msg: impl Into<String>) -> Error {
    Error::Shape { op, msg: msg.into() }
}

/// Runs `f`, turning a panic inside it (a third-party crate choking on input wgmoe did not catch
/// first) into an error that says `what` failed: a last resort, so that no panic reaches a user or
/// an embedding app. The panic hook still prints its message to standard error.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(Error::Invalid(format!(
                "{what} failed inside a library wgmoe uses ({msg}); the input is malformed or not supported"
            )))
        }
    }
}
