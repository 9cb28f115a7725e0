//! Errors are values (DESIGN.md principle 8): every failure a user can cause names what went wrong
//! and what to do about it, and every kind an app may want to act on is its own variant.

use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong in wgmoe. Match on the variant to act on a kind of failure (retry
/// with a smaller context on [`Error::OutOfMemory`], drop old turns on [`Error::ContextFull`], ...);
/// `Display` gives a message for a person, saying what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model file or folder is malformed: a bad header, a missing tensor, a config value out
    /// of range, a tokenizer that does not parse.
    #[error("{}: {what}", path.display())]
    BadModel { path: PathBuf, what: String },

    /// Well-formed, but something wgmoe does not run (an architecture, a tensor format, a
    /// template feature).
    #[error("{what}")]
    Unsupported { what: String },

    /// An argument the caller gave is out of range or malformed (a token id past the vocabulary,
    /// a temperature below zero, an empty prompt).
    #[error("{0}")]
    BadInput(String),

    /// The GPU (or the budget it was given, or host memory for offloaded experts) has too little
    /// memory: for a load, a KV cache or a forward pass. `needed` and `available` are bytes, where
    /// known.
    #[error(
        "not enough memory for {what}{}{}: try a smaller context, a smaller model or a GPU with \
         more memory",
        needed.map(|n| format!(" (needs {})", mib(n))).unwrap_or_default(),
        available.map(|n| format!(", {} available", mib(n))).unwrap_or_default()
    )]
    OutOfMemory {
        what: String,
        needed: Option<u64>,
        available: Option<u64>,
    },

    /// The KV cache has no room for what was asked: `needed` positions, `free` of `capacity`
    /// left.
    #[error(
        "the context is full: this needs {needed} positions of the KV cache, but {}: generate fewer \
         tokens, shorten the prompt, or use a longer context",
        if free == capacity { format!("the context holds {capacity}") }
        else { format!("only {free} of the context's {capacity} are free") }
    )]
    ContextFull {
        needed: usize,
        free: usize,
        capacity: usize,
    },

    /// A [`crate::CancelToken`] stopped the work.
    #[error("cancelled")]
    Cancelled,

    /// The GPU device or its driver failed (a lost device, a failed submission or read-back).
    #[error("GPU error: {0}")]
    Device(String),

    #[error(
        "no GPU adapter found on any backend ({backends}).\n\
         Install a Vulkan driver for your GPU, or Mesa's software rasterizer for a CPU fallback \
         (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)."
    )]
    NoAdapter { backends: String },

    /// `WGPU_BACKEND` names no backend wgpu knows, or allows only backends with no adapter (the
    /// message says which backends have one).
    #[error("{0}")]
    BackendEnv(String),

    #[error("no adapter matches --device {selector:?}. Available adapters:\n{available}")]
    NoMatchingAdapter { selector: String, available: String },

    /// The adapter refused to open a device (its driver's reason, as text: no wgpu type in the
    /// API).
    #[error("could not open a device on {adapter}: {reason}")]
    RequestDevice { adapter: String, reason: String },

    /// A size past one of the adapter's limits (a binding, a workgroup).
    #[error("{what} needs {needed} but the adapter allows at most {limit} ({limit_name})")]
    Limit {
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
    },

    /// Kernel arguments of inconsistent shapes: a bug in the caller of an internal kernel.
    #[error("shape error in {op}: {msg}")]
    Shape { op: &'static str, msg: String },

    #[error(
        "the model's logits at position {position} are not finite (NaN or infinity): its weights are \
         corrupt, or a config value (rms_norm_eps, rope_theta, a scaling factor) is out of range"
    )]
    NonFinite { position: usize },
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::BadModel`] for `path`.
    pub fn bad_model(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::BadModel {
            path: path.into(),
            what: what.into(),
        }
    }

    /// An [`Error::Unsupported`].
    pub fn unsupported(what: impl Into<String>) -> Self {
        Error::Unsupported { what: what.into() }
    }

    /// An [`Error::BadInput`].
    pub fn bad_input(what: impl Into<String>) -> Self {
        Error::BadInput(what.into())
    }
}

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
            Err(Error::unsupported(format!(
                "{what} failed inside a library wgmoe uses ({msg}); the input is malformed or not supported"
            )))
        }
    }
}
