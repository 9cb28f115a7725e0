//! wgmoe runs Mixture-of-Experts language models (Qwen3-MoE, OLMoE, Mixtral, DeepSeek, gpt-oss,
//! and dense Llama-style models) on any GPU: the whole transformer is WGSL compute shaders
//! dispatched through wgpu, so one build targets Vulkan, Metal and DX12.
//!
//! The crate root is the API an app uses:
//!
//! - [`Model::open`] loads a Hugging Face folder or a `.gguf` file once; a [`Model`] is cheap to
//!   clone, `Send` and `Sync`.
//! - [`Model::session`] opens a [`Session`]: one sequence's KV cache over the shared weights.
//!   Sessions are owned and `Send`; several run at once on several threads.
//! - [`Session::generate`] streams [`Event`]s ([`Session::complete`] waits for the whole reply),
//!   stopping at the model's end of turn, at stop strings, at `max_tokens`, or when a
//!   [`CancelToken`] says so.
//! - [`Chat`] keeps a conversation: the model's chat template, the KV cache reused between turns,
//!   a policy for a full context.
//! - [`Session::save_state`], [`Session::restore_state`] and [`Session::fork`] keep a prefix (a
//!   system prompt, a document) to start from again.
//! - Every failure is an [`Error`] whose variant says what kind it is.
//!
//! ```no_run
//! use wgmoe::{GenerateOptions, Model, ModelOptions, SessionOptions};
//!
//! fn main() -> wgmoe::Result<()> {
//!     let model = Model::open("SmolLM2-135M-Instruct.Q4_1.gguf", &ModelOptions::default())?;
//!     let mut chat = model.chat(&SessionOptions::default())?;
//!     let reply = chat.ask("What is the capital of France?", &GenerateOptions::max_tokens(64))?;
//!     println!("{reply}");
//!     Ok(())
//! }
//! ```
//!
//! [`internals`] holds the runtime itself (kernels, plans, loaders) for wgmoe's own command
//! line, benchmarks and tests; it has no stability promise.

mod api;

pub use api::{
    Batch, BatchOptions, CachePolicy, CancelToken, Chat, ChatTurn, Completion, Constraint, ContextPolicy, Event,
    GenerateOptions, Generation, KvDtype, Model, ModelInfo, ModelOptions, ProgressFn, Prompt, Sampling, SeqId, Session,
    SessionOptions, Stats, StopReason,
};
pub use error::{Error, Result};
pub use tokenizer::Message;

/// The runtime behind the API: GPU context, kernels, forward plans, loaders, benchmarks. For
/// wgmoe's command line, benchmarks and tests; no stability promise, and not documented as API.
#[doc(hidden)]
pub mod internals;
use internals::{bench, error, generate, gpu, input, kernels, model, record, tokenizer};
