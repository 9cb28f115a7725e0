//! The embedding API: what an app uses. [`Model`] loads a checkpoint once; each [`Session`] is
//! one conversation's KV cache over the model's shared weights; [`Session::generate`] streams
//! [`Event`]s; [`Chat`] keeps a conversation and its template. Everything else in the crate is
//! [`crate::internals`].

#![warn(missing_docs)]

mod batch;
mod chat;
mod constraint;
mod generation;
mod session;

pub use batch::{Batch, BatchOptions, SeqId};
pub use chat::{Chat, ChatTurn, ContextPolicy};
pub use constraint::Constraint;
pub use generation::{CancelToken, Completion, Event, GenerateOptions, Generation, Sampling, Stats, StopReason};
pub use session::{Prompt, Session, SessionOptions};

use crate::error::{Error, Result};
use crate::gpu::{Context, DeviceOptions};
use crate::model::{self, checkpoint, experts};
use crate::tokenizer::{Message, Tokenizer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the model's KV cache stores keys and values.
pub use crate::kernels::attention::KvDtype;
/// Which cached expert gives way when a model's experts do not all fit the GPU.
pub use crate::model::experts::Policy as CachePolicy;

/// A load's progress: `(tensors done, tensors in all)`, called from the loading thread.
pub type ProgressFn = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// How [`Model::open`] loads a model. `ModelOptions::default()` picks the best adapter, keeps
/// quantised weights packed, fits the GPU's memory, and gives sessions a 4096-token f16 cache.
#[derive(Clone)]
pub struct ModelOptions {
    /// The adapter: an index from `wgmoe devices`, a backend name (vulkan, metal, dx12) or part of
    /// its name. `None`: the `WGMOE_DEVICE` environment variable, else the best one.
    pub device: Option<String>,
    /// WebGPU's default limits and no optional features: the weakest adapter wgmoe supports.
    pub portable: bool,
    /// Bytes wgmoe may allocate on the GPU. Routed experts that do not fit stay in host memory
    /// with a GPU cache of the ones in use. `None`: the adapter's memory less 10% where it can be
    /// read (Vulkan), else no cap.
    pub gpu_memory: Option<u64>,
    /// Cache exactly this many routed experts per MoE layer, whatever the memory.
    pub expert_slots: Option<usize>,
    /// Which cached expert gives way to a missing one (LFU by default).
    pub cache_policy: CachePolicy,
    /// Expand block-quantised weights (GGUF Q4_K, ...) to f16 at load instead of keeping them
    /// packed: about 3.5x the memory, for comparing against the packed kernels.
    pub dequantize: bool,
    /// Quantise a 16/32-bit checkpoint's matrices at load: "q8_0", "q4_0", "q5_0" or "q4_k".
    pub quantize: Option<String>,
    /// The sessions' defaults ([`SessionOptions`] overrides them per session). The expert cache
    /// keeps room for one session of this size when it sizes itself.
    pub context: usize,
    /// How a session's KV cache stores keys and values (f16 by default; q8 for long contexts).
    pub kv_cache: KvDtype,
    /// Sequences of `context` tokens the GPU memory plan leaves room for (the expert cache of a
    /// model larger than the GPU sizes itself around them): 1 for an app with one session, a
    /// [`Batch`]'s `sequences` for a server.
    pub sequences: usize,
    /// Tokens of a prompt run in one batch: longer prompts go in chunks of this many, which
    /// bounds the activations (and the memory kept free for them).
    pub prefill_chunk: usize,
    /// Called as tensors load: `(done, total)`.
    pub progress: Option<ProgressFn>,
    /// Stops a load between two tensors with [`Error::Cancelled`].
    pub cancel: Option<CancelToken>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            device: None,
            portable: false,
            gpu_memory: None,
            expert_slots: None,
            cache_policy: CachePolicy::default(),
            dequantize: false,
            quantize: None,
            context: 4096,
            kv_cache: KvDtype::F16,
            sequences: 1,
            prefill_chunk: 512,
            progress: None,
            cancel: None,
        }
    }
}

impl std::fmt::Debug for ModelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelOptions")
            .field("device", &self.device)
            .field("portable", &self.portable)
            .field("gpu_memory", &self.gpu_memory)
            .field("expert_slots", &self.expert_slots)
            .field("cache_policy", &self.cache_policy)
            .field("dequantize", &self.dequantize)
            .field("quantize", &self.quantize)
            .field("context", &self.context)
            .field("kv_cache", &self.kv_cache)
            .field("prefill_chunk", &self.prefill_chunk)
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel)
            .finish()
    }
}

/// What a loaded model is and where it runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ModelInfo {
    /// `model_type` of the checkpoint (`qwen3_moe`, `llama`, ...).
    pub architecture: String,
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// Transformer layers.
    pub layers: usize,
    /// The longest context the model was trained for.
    pub max_context: usize,
    /// Routed experts per MoE layer and how many each token uses (0 for a dense model).
    pub experts: usize,
    /// Experts each token is routed to.
    pub experts_per_token: usize,
    /// The adapter's name and backend (`NVIDIA H200 (vulkan)`).
    pub adapter: String,
    /// Bytes the weights take on the GPU.
    pub gpu_weight_bytes: u64,
}

/// A loaded model: its weights on the GPU, its tokenizer and chat template, its default sampling.
/// Cheap to clone (clones share everything), `Send` and `Sync`: keep one and open a
/// [`Session`] per conversation, on as many threads as you like.
///
/// ```no_run
/// use wgmoe::{GenerateOptions, Model, ModelOptions, SessionOptions};
/// # fn main() -> wgmoe::Result<()> {
/// let model = Model::open("SmolLM2-135M-Instruct.Q4_1.gguf", &ModelOptions::default())?;
/// let mut session = model.session(&SessionOptions::default())?;
/// let answer = session.complete("The capital of France is", &GenerateOptions::max_tokens(16))?;
/// println!("{}", answer.text);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Model {
    shared: Arc<Shared>,
}

struct Shared {
    model: model::Model,
    tokenizer: Tokenizer,
    sampling: Sampling,
    path: PathBuf,
    options: ModelOptions,
    /// The tokenizer's trie for constrained decoding, built on first use.
    grammars: std::sync::OnceLock<std::result::Result<Arc<constraint::Grammars>, String>>,
}

impl Model {
    /// Load a Hugging Face model folder (config.json, safetensors, tokenizer.json) or a `.gguf`
    /// file onto the GPU.
    pub fn open(path: impl AsRef<Path>, options: &ModelOptions) -> Result<Model> {
        let path = path.as_ref();
        if options.context == 0 {
            return Err(Error::bad_input(
                "a context of 0 tokens: the KV cache needs room for at least one",
            ));
        }
        let tokenizer = checkpoint::tokenizer_for(path)?;
        let defaults = crate::generate::sampling_defaults(path)?;
        let sampling = Sampling {
            temperature: defaults.temperature.unwrap_or(0.0),
            top_k: defaults.top_k.unwrap_or(0),
            top_p: defaults.top_p.unwrap_or(1.0),
        };
        let device = DeviceOptions {
            selector: options.device.clone().or_else(|| DeviceOptions::from_env().selector),
            portable: options.portable,
        };
        let load = checkpoint::LoadOptions {
            packed: !options.dequantize,
            quantize: options
                .quantize
                .as_deref()
                .map(crate::gpu::DType::from_arg)
                .transpose()?,
            cache: experts::CacheOptions {
                gpu_memory: options.gpu_memory,
                expert_slots: options.expert_slots,
                policy: options.cache_policy,
                session: experts::SessionNeeds {
                    context: options.context * options.sequences.max(1),
                    batch: options.prefill_chunk.max(options.sequences).max(1),
                    logit_rows: 1,
                    kv: options.kv_cache,
                },
            },
        };
        let cancel = options.cancel.clone().unwrap_or_default();
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let progress = |done: usize, total: usize| {
            if let Some(p) = &options.progress {
                p(done, total);
            }
        };
        let ctx = Context::new(&device)?;
        let model = model::Model::load_cancellable(ctx, path, &load, &progress, &|| cancel.is_cancelled())?;
        Ok(Model {
            shared: Arc::new(Shared {
                model,
                tokenizer,
                sampling,
                path: path.to_path_buf(),
                options: options.clone(),
                grammars: std::sync::OnceLock::new(),
            }),
        })
    }

    /// A new session (its own KV cache) with the model's default options.
    pub fn session(&self, options: &SessionOptions) -> Result<Session> {
        Session::new(self.clone(), options)
    }

    /// A new [`Chat`] over a new session.
    pub fn chat(&self, options: &SessionOptions) -> Result<Chat> {
        Chat::new(self.session(options)?)
    }

    /// The token ids of `text`; `add_special` adds the model's begin-of-sequence token where its
    /// tokenizer says to.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.shared.tokenizer.encode(text, add_special)
    }

    /// The text of `ids`, special tokens left out.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.shared.tokenizer.decode(ids, true)
    }

    /// The ids that end a reply (end of sequence, end of turn).
    pub fn eos_tokens(&self) -> &[u32] {
        self.shared.tokenizer.eos_ids()
    }

    /// Whether the model has a chat template (needed by [`Chat`]).
    pub fn has_chat_template(&self) -> bool {
        self.shared.tokenizer.has_chat_template()
    }

    /// `messages` rendered by the model's chat template, as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.shared
            .tokenizer
            .apply_chat_template(messages, add_generation_prompt)
    }

    /// The sampling the model's files ask for (`generation_config.json`, GGUF
    /// `general.sampling.*`); greedy where they say nothing.
    pub fn default_sampling(&self) -> Sampling {
        self.shared.sampling
    }

    /// A fresh automaton for `c` over this model's vocabulary (the tokenizer's trie is built on
    /// the first call).
    pub(crate) fn constraint(&self, c: &Constraint) -> Result<Box<dyn crate::generate::TokenConstraint>> {
        let grammars = self.shared.grammars.get_or_init(|| {
            let vocab = self.shared.model.config.vocab;
            constraint::Grammars::new(&self.shared.tokenizer, vocab, self.eos_tokens())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        });
        match grammars {
            Ok(g) => g.start(c),
            Err(e) => Err(Error::unsupported(e.clone())),
        }
    }

    /// The file or folder the model came from.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &ModelOptions {
        &self.shared.options
    }

    /// What the model is and where it runs.
    pub fn info(&self) -> ModelInfo {
        let m = &self.shared.model;
        let c = &m.config;
        let (experts, experts_per_token) = c
            .layers
            .iter()
            .find_map(|l| match &l.ffn {
                model::config::Ffn::Moe { experts, top_k, .. } => Some((*experts, *top_k)),
                _ => None,
            })
            .unwrap_or((0, 0));
        ModelInfo {
            architecture: c.model_type.clone(),
            vocab: c.vocab,
            layers: c.layers.len(),
            max_context: c.max_position,
            experts,
            experts_per_token,
            adapter: format!("{} ({})", m.ctx.info.name, m.ctx.backend_name()),
            gpu_weight_bytes: m.weights.gpu_bytes(),
        }
    }

    /// Lines describing the GPU memory the model takes (the weights, and how many experts are
    /// resident when experts are offloaded), as `wgmoe` prints them after a load.
    pub fn memory_report(&self) -> Vec<String> {
        let m = &self.shared.model;
        let mut lines = vec![m.weights_line()];
        lines.extend(m.expert_cache().map(|c| c.resident_line()));
        lines
    }

    /// The expert cache's line so far (resident experts, hit rate, MiB uploaded per token), when
    /// experts are offloaded.
    pub fn expert_cache_report(&self) -> Option<String> {
        self.shared.model.expert_cache().map(|c| c.line())
    }

    /// The expert cache's hit rate so far (hits / lookups of routed experts), when experts are
    /// offloaded.
    pub fn expert_cache_hit_rate(&self) -> Option<f64> {
        self.shared.model.expert_cache().map(|c| c.stats.hit_rate())
    }

    /// Bytes of GPU buffers alive on this model's device now: weights, KV caches, activations.
    pub fn gpu_memory_in_use(&self) -> u64 {
        let counters = self.shared.model.ctx.device.get_internal_counters();
        counters.hal.buffer_memory.read().max(0) as u64
    }

    /// Whether the chat template renders a list of tools (Qwen3, Llama 3.1, Hermes, ...): pass
    /// them with [`Model::apply_chat_template_with_tools`].
    pub fn chat_template_takes_tools(&self) -> bool {
        self.shared
            .tokenizer
            .chat_template()
            .is_some_and(|t| t.contains("tools"))
    }

    /// [`Model::apply_chat_template`] with `tools` (OpenAI-style function definitions, a JSON
    /// array) given to the template as transformers' `tools=` argument.
    pub fn apply_chat_template_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let mut extra = serde_json::Map::new();
        if let Some(t) = tools {
            extra.insert("tools".into(), t.clone());
        }
        self.shared
            .tokenizer
            .apply_chat_template_with(messages, add_generation_prompt, &extra)
    }

    /// The runtime's own model, for wgmoe's CLI, benchmarks and tests: no stability promise.
    #[doc(hidden)]
    pub fn internals(&self) -> &model::Model {
        &self.shared.model
    }

    pub(crate) fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.shared.path)
            .field("info", &self.info())
            .finish()
    }
}

#[allow(dead_code)]
fn assert_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Model>();
    send::<Session>();
    send::<Chat>();
    send_sync::<CancelToken>();
}
