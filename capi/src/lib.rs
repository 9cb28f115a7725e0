//! wgmoe's C ABI: the Rust API behind `extern "C"` functions, for C, C++, Python's
//! ctypes, Swift, Go and anything else that calls C. It builds `libwgmoe.so` (`.dylib`, `.dll`)
//! and `libwgmoe.a`: `cargo build --release -p wgmoe-capi`. `include/wgmoe.h` is generated from
//! this file by cbindgen (`capi/cbindgen.toml`); a test fails when it is stale.
//!
//! A crate of its own, not a feature of `wgmoe`: a library's crate types cannot depend on a
//! feature, and a Rust app that depends on wgmoe should not link a C library it never uses.
//!
//! Conventions: every fallible call returns a [`WgmoeStatus`] (0 is success) and puts its result
//! through an out-pointer; [`wgmoe_last_error`] gives the message of the calling thread's last
//! failure. Handles are created by `*_new`/`*_open` and released by the matching `*_free`
//! (which accepts NULL). No panic crosses the boundary: one becomes [`WgmoeStatus::Panic`].

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use wgmoe::{CancelToken, Chat, Error, Event, GenerateOptions, Model, ModelOptions, Sampling, Session, SessionOptions};

/// What a call did: 0 is success; the others name the kind of failure, as `wgmoe::Error` does.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmoeStatus {
    Ok = 0,
    /// A file could not be read.
    Io = 1,
    /// A model file is malformed.
    BadModel = 2,
    /// Something wgmoe does not run.
    Unsupported = 3,
    /// An argument is out of range, malformed or NULL.
    BadInput = 4,
    OutOfMemory = 5,
    /// The context has no room for the prompt.
    ContextFull = 6,
    Cancelled = 7,
    /// The GPU or its driver failed, or there is no usable adapter.
    Device = 8,
    /// A bug in wgmoe: a panic caught at the boundary.
    Panic = 9,
}

/// Why a generation ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmoeStopReason {
    /// The model's end of turn (or another stop token).
    StopToken = 0,
    StopString = 1,
    MaxTokens = 2,
    ContextFull = 3,
    /// The cancel flag was set, or the token callback returned nonzero.
    Cancelled = 4,
}

/// How keys and values are stored in the KV cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmoeKvCache {
    F16 = 0,
    Q8 = 1,
    F32 = 2,
}

/// How a model is loaded; start from [`wgmoe_model_options_default`].
#[repr(C)]
pub struct WgmoeModelOptions {
    /// An adapter index, backend or part of its name; NULL for the best one.
    pub device: *const c_char,
    /// Tokens a session's KV cache holds by default.
    pub context: u32,
    pub kv_cache: WgmoeKvCache,
    /// GiB wgmoe may allocate on the GPU; 0 for the adapter's memory.
    pub gpu_memory_gib: f64,
}

/// What to generate; start from [`wgmoe_generate_options_default`].
#[repr(C)]
pub struct WgmoeGenerateOptions {
    /// Tokens to generate at most; negative for no limit (until a stop or a full context).
    pub max_tokens: i32,
    /// Negative: the model's default sampling (then `top_k` and `top_p` are ignored); 0 is greedy.
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed: u64,
    /// `n_stop` stop strings (UTF-8), or NULL.
    pub stop: *const *const c_char,
    pub n_stop: usize,
    /// A cancel flag ([`wgmoe_cancel_new`]), or NULL.
    pub cancel: *const WgmoeCancel,
}

/// Called with each token's id and the text it completes (`len` bytes of UTF-8, not
/// NUL-terminated, possibly empty; `id` is UINT32_MAX for text held back until the end, such as
/// the start of a stop string that did not complete); return nonzero to stop the generation
/// (its stop reason is then `Cancelled`).
pub type WgmoeTokenFn =
    Option<unsafe extern "C" fn(user: *mut c_void, id: u32, text: *const c_char, len: usize) -> i32>;

/// A loaded model.
pub struct WgmoeModel(Model);
/// One sequence's KV cache over a model.
pub struct WgmoeSession(Session);
/// A conversation over a session.
pub struct WgmoeChat(Chat);
/// A flag that stops a generation within one step; safe to set from any thread.
pub struct WgmoeCancel(CancelToken);

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn status_of(e: &Error) -> WgmoeStatus {
    match e {
        Error::Io { .. } => WgmoeStatus::Io,
        Error::BadModel { .. } => WgmoeStatus::BadModel,
        Error::Unsupported { .. } => WgmoeStatus::Unsupported,
        Error::BadInput(_) | Error::Shape { .. } => WgmoeStatus::BadInput,
        Error::OutOfMemory { .. } | Error::Limit { .. } => WgmoeStatus::OutOfMemory,
        Error::ContextFull { .. } => WgmoeStatus::ContextFull,
        Error::Cancelled => WgmoeStatus::Cancelled,
        _ => WgmoeStatus::Device,
    }
}

/// Run `f` behind the boundary: its error or panic becomes a status and the thread's message.
fn guard(f: impl FnOnce() -> wgmoe::Result<()>) -> WgmoeStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => WgmoeStatus::Ok,
        Ok(Err(e)) => {
            set_error(&e.to_string());
            status_of(&e)
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_error(&format!("wgmoe panicked (a bug; please report it): {msg}"));
            WgmoeStatus::Panic
        }
    }
}

/// A NUL-terminated UTF-8 argument; `what` names it in the error.
unsafe fn text<'a>(p: *const c_char, what: &str) -> wgmoe::Result<&'a str> {
    if p.is_null() {
        return Err(Error::bad_input(format!("{what} is NULL")));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| Error::bad_input(format!("{what} is not UTF-8")))
}

/// A handle argument; `what` names it in the error.
unsafe fn handle<'a, T>(p: *const T, what: &str) -> wgmoe::Result<&'a T> {
    p.as_ref().ok_or_else(|| Error::bad_input(format!("{what} is NULL")))
}

unsafe fn handle_mut<'a, T>(p: *mut T, what: &str) -> wgmoe::Result<&'a mut T> {
    p.as_mut().ok_or_else(|| Error::bad_input(format!("{what} is NULL")))
}

/// A `*_new`/`*_open` call: `*out` is NULL on failure, else a new handle to what `make` made.
unsafe fn create<T>(out: *mut *mut T, what: &str, make: impl FnOnce() -> wgmoe::Result<T>) -> WgmoeStatus {
    guard(|| {
        let out = handle_mut(out, what)?;
        *out = std::ptr::null_mut();
        *out = Box::into_raw(Box::new(make()?));
        Ok(())
    })
}

/// A `*_free` call: NULL is accepted, and a panic while dropping stays on this side.
unsafe fn release<T>(handle: *mut T) {
    if !handle.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(handle))));
    }
}

/// The message of this thread's last failed call (empty if none). Valid until the thread's next
/// failing call; do not free it.
#[no_mangle]
pub extern "C" fn wgmoe_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// wgmoe's version, e.g. "0.1.0". Do not free it.
#[no_mangle]
pub extern "C" fn wgmoe_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn wgmoe_model_options_default() -> WgmoeModelOptions {
    WgmoeModelOptions {
        device: std::ptr::null(),
        context: 4096,
        kv_cache: WgmoeKvCache::F16,
        gpu_memory_gib: 0.0,
    }
}

#[no_mangle]
pub extern "C" fn wgmoe_generate_options_default() -> WgmoeGenerateOptions {
    WgmoeGenerateOptions {
        max_tokens: 256,
        temperature: -1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
        stop: std::ptr::null(),
        n_stop: 0,
        cancel: std::ptr::null(),
    }
}

/// Load a model folder or `.gguf` file. `options` may be NULL for the defaults. On success
/// `*model` is a handle to free with [`wgmoe_model_free`].
///
/// # Safety
/// `path` is a NUL-terminated string; `options` is NULL or valid; `model` is writable.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_model_open(
    path: *const c_char,
    options: *const WgmoeModelOptions,
    model: *mut *mut WgmoeModel,
) -> WgmoeStatus {
    create(model, "model", || {
        let path = text(path, "path")?;
        let defaults = wgmoe_model_options_default();
        let o = options.as_ref().unwrap_or(&defaults);
        let gib = o.gpu_memory_gib;
        if !(gib.is_finite() && gib >= 0.0) {
            return Err(Error::bad_input(format!(
                "gpu_memory_gib {gib} is not a finite number >= 0"
            )));
        }
        let opts = ModelOptions {
            device: if o.device.is_null() {
                None
            } else {
                Some(text(o.device, "device")?.to_string())
            },
            context: o.context as usize,
            kv_cache: match o.kv_cache {
                WgmoeKvCache::F16 => wgmoe::KvDtype::F16,
                WgmoeKvCache::Q8 => wgmoe::KvDtype::Q8,
                WgmoeKvCache::F32 => wgmoe::KvDtype::F32,
            },
            gpu_memory: (gib > 0.0).then(|| (gib * (1u64 << 30) as f64) as u64),
            ..Default::default()
        };
        Ok(WgmoeModel(Model::open(path, &opts)?))
    })
}

/// # Safety
/// `model` is NULL or a handle from [`wgmoe_model_open`] not freed before; sessions and chats
/// made from it stay valid (they share the weights).
#[no_mangle]
pub unsafe extern "C" fn wgmoe_model_free(model: *mut WgmoeModel) {
    release(model)
}

/// A new session (its own KV cache) of `context` tokens (0: the model's default).
///
/// # Safety
/// `model` is a live handle; `session` is writable.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_session_new(
    model: *const WgmoeModel,
    context: u32,
    session: *mut *mut WgmoeSession,
) -> WgmoeStatus {
    create(session, "session", || {
        let model = handle(model, "model")?;
        Ok(WgmoeSession(model.0.session(&session_options(context))?))
    })
}

/// # Safety
/// `session` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_session_free(session: *mut WgmoeSession) {
    release(session)
}

/// Tokens in the session (prompts and generated tokens), or 0 for NULL.
///
/// # Safety
/// `session` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_session_position(session: *const WgmoeSession) -> usize {
    session.as_ref().map_or(0, |s| s.0.position())
}

/// Forget the session's tokens.
///
/// # Safety
/// `session` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_session_reset(session: *mut WgmoeSession) {
    if let Some(s) = session.as_mut() {
        s.0.reset();
    }
}

/// Generate after `prompt` (text; a fresh session's first text gets the begin-of-sequence
/// token), calling `on_token` for each token. `options` may be NULL for the defaults; `on_token`
/// and `stop_reason` may be NULL.
///
/// # Safety
/// Handles are live, strings NUL-terminated, `options` NULL or valid (its `stop` array holds
/// `n_stop` strings), `on_token` callable with `user`.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_session_generate(
    session: *mut WgmoeSession,
    prompt: *const c_char,
    options: *const WgmoeGenerateOptions,
    on_token: WgmoeTokenFn,
    user: *mut c_void,
    stop_reason: *mut WgmoeStopReason,
) -> WgmoeStatus {
    guard(|| {
        let session = handle_mut(session, "session")?;
        let prompt = text(prompt, "prompt")?;
        let opts = generate_options(options)?;
        drive(session.0.generate(prompt, &opts)?, on_token, user, stop_reason)
    })
}

/// A conversation over a new session of `context` tokens (0: the model's default), started by
/// `system` (NULL for none). The model needs a chat template.
///
/// # Safety
/// `model` is a live handle, `system` NULL or NUL-terminated, `chat` writable.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_chat_new(
    model: *const WgmoeModel,
    context: u32,
    system: *const c_char,
    chat: *mut *mut WgmoeChat,
) -> WgmoeStatus {
    create(chat, "chat", || {
        let model = handle(model, "model")?;
        let mut c = model.0.chat(&session_options(context))?;
        if !system.is_null() {
            c.set_system(text(system, "system")?);
        }
        Ok(WgmoeChat(c))
    })
}

/// Send a user message and stream the reply to `on_token`; the reply joins the conversation.
///
/// # Safety
/// As [`wgmoe_session_generate`].
#[no_mangle]
pub unsafe extern "C" fn wgmoe_chat_send(
    chat: *mut WgmoeChat,
    message: *const c_char,
    options: *const WgmoeGenerateOptions,
    on_token: WgmoeTokenFn,
    user: *mut c_void,
    stop_reason: *mut WgmoeStopReason,
) -> WgmoeStatus {
    guard(|| {
        let chat = handle_mut(chat, "chat")?;
        let message = text(message, "message")?;
        let opts = generate_options(options)?;
        drive(chat.0.send(message, &opts)?, on_token, user, stop_reason)
    })
}

/// Forget the conversation but its system message.
///
/// # Safety
/// `chat` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_chat_reset(chat: *mut WgmoeChat) {
    if let Some(c) = chat.as_mut() {
        c.0.reset();
    }
}

/// # Safety
/// `chat` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_chat_free(chat: *mut WgmoeChat) {
    release(chat)
}

/// The session's state (its tokens and KV cache) as bytes in `*bytes` (`*len` of them), to free
/// with [`wgmoe_bytes_free`].
///
/// # Safety
/// `session` is a live handle; `bytes` and `len` are writable.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_session_save(
    session: *const WgmoeSession,
    bytes: *mut *mut u8,
    len: *mut usize,
) -> WgmoeStatus {
    guard(|| {
        let (bytes, len) = (handle_mut(bytes, "bytes")?, handle_mut(len, "len")?);
        *bytes = std::ptr::null_mut();
        *len = 0;
        let state = handle(session, "session")?.0.save_state()?.into_boxed_slice();
        *len = state.len();
        *bytes = Box::into_raw(state).cast();
        Ok(())
    })
}

/// Put back a state [`wgmoe_session_save`] wrote.
///
/// # Safety
/// `session` is a live handle; `bytes` holds `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_session_restore(
    session: *mut WgmoeSession,
    bytes: *const u8,
    len: usize,
) -> WgmoeStatus {
    guard(|| {
        let session = handle_mut(session, "session")?;
        if bytes.is_null() {
            return Err(Error::bad_input("bytes is NULL"));
        }
        session.0.restore_state(std::slice::from_raw_parts(bytes, len))
    })
}

/// Free bytes from [`wgmoe_session_save`].
///
/// # Safety
/// `bytes` and `len` are exactly what [`wgmoe_session_save`] gave, not freed before (or NULL).
#[no_mangle]
pub unsafe extern "C" fn wgmoe_bytes_free(bytes: *mut u8, len: usize) {
    if !bytes.is_null() {
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(bytes, len)));
    }
}

/// A second session continuing from this one's state (its own copy of the cache).
///
/// # Safety
/// `session` is a live handle; `fork` is writable.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_session_fork(session: *const WgmoeSession, fork: *mut *mut WgmoeSession) -> WgmoeStatus {
    create(fork, "fork", || Ok(WgmoeSession(handle(session, "session")?.0.fork()?)))
}

/// A new cancel flag, unset.
#[no_mangle]
pub extern "C" fn wgmoe_cancel_new() -> *mut WgmoeCancel {
    Box::into_raw(Box::new(WgmoeCancel(CancelToken::new())))
}

/// Set the flag: generations using it stop within one step. Safe from any thread (a signal
/// handler should set its own flag and call this from a normal thread).
///
/// # Safety
/// `cancel` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_cancel_set(cancel: *const WgmoeCancel) {
    if let Some(c) = cancel.as_ref() {
        c.0.cancel();
    }
}

/// Clear the flag, to use it again.
///
/// # Safety
/// `cancel` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_cancel_reset(cancel: *const WgmoeCancel) {
    if let Some(c) = cancel.as_ref() {
        c.0.reset();
    }
}

/// # Safety
/// `cancel` is NULL or a live handle no generation still uses.
#[no_mangle]
pub unsafe extern "C" fn wgmoe_cancel_free(cancel: *mut WgmoeCancel) {
    release(cancel)
}

fn session_options(context: u32) -> SessionOptions {
    SessionOptions {
        context: (context > 0).then_some(context as usize),
        ..Default::default()
    }
}

/// The Rust options of `options` (NULL: the defaults).
unsafe fn generate_options(options: *const WgmoeGenerateOptions) -> wgmoe::Result<GenerateOptions> {
    let defaults = wgmoe_generate_options_default();
    let o = options.as_ref().unwrap_or(&defaults);
    let mut stop = Vec::with_capacity(o.n_stop);
    if o.n_stop > 0 {
        if o.stop.is_null() {
            return Err(Error::bad_input("stop is NULL but n_stop is not 0"));
        }
        for i in 0..o.n_stop {
            stop.push(text(*o.stop.add(i), "a stop string")?.to_string());
        }
    }
    Ok(GenerateOptions {
        max_tokens: usize::try_from(o.max_tokens).ok(),
        sampling: (o.temperature >= 0.0).then_some(Sampling {
            temperature: o.temperature,
            top_k: o.top_k as usize,
            top_p: o.top_p,
        }),
        seed: o.seed,
        stop,
        cancel: o.cancel.as_ref().map(|c| c.0.clone()),
        ..Default::default()
    })
}

/// Feed a generation's events to the callback. A nonzero return drops the generation, which
/// stops it like a cancel (the session keeps what was emitted).
unsafe fn drive(
    events: impl Iterator<Item = wgmoe::Result<Event>>,
    on_token: WgmoeTokenFn,
    user: *mut c_void,
    stop_reason: *mut WgmoeStopReason,
) -> wgmoe::Result<()> {
    let mut reason = WgmoeStopReason::Cancelled;
    for e in events {
        let (id, text) = match e? {
            Event::Token { id, text } => (id, text),
            Event::Text(text) => (u32::MAX, text),
            Event::Done { stop_reason: r, .. } => {
                reason = match r {
                    wgmoe::StopReason::StopToken(_) => WgmoeStopReason::StopToken,
                    wgmoe::StopReason::StopString(_) => WgmoeStopReason::StopString,
                    wgmoe::StopReason::MaxTokens => WgmoeStopReason::MaxTokens,
                    wgmoe::StopReason::ContextFull => WgmoeStopReason::ContextFull,
                    wgmoe::StopReason::Cancelled => WgmoeStopReason::Cancelled,
                };
                continue;
            }
        };
        if let Some(f) = on_token {
            if f(user, id, text.as_ptr().cast(), text.len()) != 0 {
                break;
            }
        }
    }
    if let Some(out) = stop_reason.as_mut() {
        *out = reason;
    }
    Ok(())
}
