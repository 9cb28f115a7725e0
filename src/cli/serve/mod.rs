//! `wgmoe serve`: an OpenAI-compatible HTTP server (axum on tokio) over the public API.
//!
//! Requests are parsed and rendered into prompts on the async side ([`openai`]), queued for the
//! engine that decodes them together ([`workers`]: continuous batching), and answered as one JSON
//! body or as server-sent events while their tokens arrive.

mod metrics;
mod openai;
mod workers;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics::Metrics;
use openai::{ApiError, Plan, ToolMode};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use wgmoe::{CancelToken, Error, Model, Result, Stats, StopReason};
use workers::{Job, Out, Pool, Refused};

/// `wgmoe serve`'s own flags (the model's come from the caller's `ModelArg`).
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to listen on. The default takes connections from this machine only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the `listening on` line says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/ requests.
    #[arg(long, env = "WGMOE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Sequences decoded together in one batch (continuous batching), each with its own
    /// --context tokens of KV cache.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests that may wait for a free sequence; beyond them the server answers 429.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body: usize,
    /// The model's name in /v1/models and replies. Default: its file or folder name.
    #[arg(long)]
    pub alias: Option<String>,
}

struct App {
    model: Model,
    id: String,
    created: u64,
    pool: Pool,
    metrics: Arc<Metrics>,
    api_key: Option<String>,
    context: usize,
}

/// Serve `model` until Ctrl-C.
pub fn run(model: Model, context: usize, args: &ServeArgs) -> Result<()> {
    if args.parallel == 0 {
        return Err(Error::bad_input("--parallel 0: at least one sequence is needed"));
    }
    let metrics = Arc::new(Metrics::new());
    let pool = Pool::start(&model, args.parallel, args.queue, context, metrics.clone())?;
    let id = args.alias.clone().unwrap_or_else(|| {
        let p = model.path();
        let name = p.file_name().unwrap_or(p.as_os_str()).to_string_lossy();
        name.strip_suffix(".gguf").unwrap_or(&name).to_string()
    });
    let app = Arc::new(App {
        model,
        id,
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        pool,
        metrics,
        api_key: args.api_key.clone(),
        context,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Device(format!("cannot start the async runtime: {e}")))?;
    let served = runtime.block_on(serve(app.clone(), args));
    drop(runtime);
    if let Ok(app) = Arc::try_unwrap(app) {
        app.pool.stop();
    }
    served
}

async fn serve(app: Arc<App>, args: &ServeArgs) -> Result<()> {
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::bad_input(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Device(format!("the listening socket has no address: {e}")))?;
    let router = Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .layer(DefaultBodyLimit::max(args.max_body))
        .with_state(app.clone());
    eprintln!(
        "serving {} on http://{local} (web chat at /, OpenAI API at /v1)",
        app.id
    );
    eprintln!("listening on http://{local}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("stopping");
        })
        .await
        .map_err(|e| Error::Device(format!("the server failed: {e}")))
}

/// Every answer is counted by endpoint and status.
async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let endpoint = match req.uri().path() {
        "/" => "/",
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/v1/models" => "/v1/models",
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/completions" => "/v1/completions",
        _ => "other",
    };
    let response = next.run(req).await;
    app.metrics.request(endpoint, response.status().as_u16());
    response
}

/// With `--api-key`, /v1/ wants `Authorization: Bearer KEY`.
async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        if req.uri().path().starts_with("/v1/") {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(key.as_str()) {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "invalid_api_key",
                    "a valid API key is needed: Authorization: Bearer <key>",
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        "no such endpoint",
    )
}

async fn wrong_method(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        format!("{} is not served for {}", req.method(), req.uri().path()),
    )
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let (waiting, running) = app.pool.load();
    if app.pool.is_dead() {
        let body = json!({"status": "error", "error": "the engine failed; restart the server"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({"status": "ok", "waiting": waiting, "running": running})).into_response()
}

async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    let info = app.model.info();
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.id,
            "object": "model",
            "created": app.created,
            "owned_by": "wgmoe",
            "meta": {
                "architecture": info.architecture,
                "context": app.context,
                "vocab": info.vocab,
                "adapter": info.adapter,
            },
        }],
    }))
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let (waiting, running) = app.pool.load();
    let mut gauges = vec![
        ("wgmoe_queue_depth", "Requests waiting for a sequence.", waiting as f64),
        ("wgmoe_running", "Sequences generating now.", running as f64),
        (
            "wgmoe_gpu_memory_bytes",
            "Bytes of GPU buffers alive: weights, KV caches, activations.",
            app.model.gpu_memory_in_use() as f64,
        ),
    ];
    if let Some(rate) = app.model.expert_cache_hit_rate() {
        gauges.push((
            "wgmoe_expert_cache_hit_rate",
            "Routed-expert lookups found on the GPU.",
            rate,
        ));
    }
    let text = app.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The body, or the error a too-large or unreadable one gets.
fn body(b: std::result::Result<Bytes, BytesRejection>) -> std::result::Result<Bytes, ApiError> {
    b.map_err(|r| {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(status, "invalid_request_error", code, r.body_text())
    })
}

async fn chat(State(app): State<Arc<App>>, b: std::result::Result<Bytes, BytesRejection>) -> Response {
    let answer = async {
        let plan = openai::chat_plan(&app.model, &openai::json_body(&body(b)?)?)?;
        respond(&app, plan, Kind::Chat).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(app): State<Arc<App>>, b: std::result::Result<Bytes, BytesRejection>) -> Response {
    let answer = async {
        let plan = openai::completion_plan(&app.model, &openai::json_body(&body(b)?)?)?;
        respond(&app, plan, Kind::Completion).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// Queue the plan and answer: SSE as tokens come, or one body at the end.
async fn respond(app: &Arc<App>, mut plan: Plan, kind: Kind) -> std::result::Result<Response, ApiError> {
    let room = plan.options.max_tokens.unwrap_or(1).min(app.context);
    if plan.prompt.len() + room > app.context {
        return Err(Error::ContextFull {
            needed: plan.prompt.len() + room,
            free: app.context,
            capacity: app.context,
        }
        .into());
    }
    let (tx, rx) = unbounded_channel();
    plan.options.cancel = Some(CancelToken::new());
    let job = Job {
        prompt: plan.prompt.clone(),
        options: plan.options.clone(),
        events: tx,
        queued: Instant::now(),
    };
    match app.pool.submit(job) {
        Ok(()) => {}
        Err(Refused::QueueFull) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
                "the server's queue is full; retry later",
            ))
        }
        Err(Refused::EngineDown) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "engine_down",
                "the server's engine failed; it must be restarted",
            ))
        }
    }
    // Dropping the receiver (the client went away, and with it this future or stream) cancels
    // the generation: the engine's next send fails; the guard cancels a job still waiting.
    let cancel_on_drop = CancelOnDrop(plan.options.cancel.clone().unwrap_or_default());
    // The batch checks what only it can (the constraint compiles, the prompt fits) before the
    // answer's status is chosen.
    let mut rx = rx;
    match rx.recv().await {
        Some(Out::Accepted) => {}
        Some(Out::Failed(e)) => return Err(e.into()),
        Some(_) | None => return Err(Error::Device("the engine dropped the request".into()).into()),
    }
    let reply = Reply::new(app, &plan, kind);
    if plan.stream {
        let stream = futures_util::stream::unfold((rx, reply, cancel_on_drop, VecDeque::new()), |state| async move {
            let (mut rx, mut reply, guard, mut ready) = state;
            loop {
                if let Some(ev) = ready.pop_front() {
                    return Some((Ok::<_, Infallible>(ev), (rx, reply, guard, ready)));
                }
                if reply.ended {
                    return None;
                }
                let out = rx.recv().await;
                ready.extend(reply.stream_events(out));
            }
        });
        Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
    } else {
        Ok(collect(rx, reply, cancel_on_drop).await)
    }
}

struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A non-streamed answer: wait for the whole reply (the guard cancels it if this future is
/// dropped first).
async fn collect(mut rx: UnboundedReceiver<Out>, mut reply: Reply, _guard: CancelOnDrop) -> Response {
    loop {
        match rx.recv().await {
            Some(Out::Accepted) => {}
            Some(Out::Text(t)) => reply.text.push_str(&t),
            Some(Out::Done { reason, stats }) => return reply.body(&reason, &stats).into_response(),
            Some(Out::Failed(e)) => return ApiError::from(e).into_response(),
            None => return ApiError::from(Error::Cancelled).into_response(),
        }
    }
}

/// One reply being built: its id, text and counts, and the chunks a stream has sent.
struct Reply {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    prompt_tokens: usize,
    cached: usize,
    text: String,
    tools: ToolMode,
    include_usage: bool,
    started: bool,
    ended: bool,
}

impl Reply {
    fn new(app: &App, plan: &Plan, kind: Kind) -> Self {
        let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
        Reply {
            id: format!("{prefix}-{:016x}", openai::random_u64()),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model: app.id.clone(),
            kind,
            prompt_tokens: plan.prompt.len(),
            cached: 0,
            text: String::new(),
            tools: plan.tools,
            include_usage: plan.include_usage,
            started: false,
            ended: false,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    /// The whole answer.
    fn body(&mut self, reason: &StopReason, stats: &Stats) -> Json<Value> {
        self.cached = self.prompt_tokens.saturating_sub(stats.prompt_tokens);
        let (content, calls) = openai::split_tool_calls(&self.text, self.tools);
        let finish = openai::finish_reason(reason, !calls.is_empty());
        let choice = match self.kind {
            Kind::Chat => {
                let mut message = json!({"role": "assistant", "content": content});
                if !calls.is_empty() {
                    message["tool_calls"] = json!(calls);
                }
                json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => json!({"index": 0, "text": self.text, "logprobs": null, "finish_reason": finish}),
        };
        Json(json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("wgmoe-", env!("CARGO_PKG_VERSION")),
            "choices": [choice],
            "usage": openai::usage(self.prompt_tokens, stats.generated_tokens, self.cached),
            "timings": timings(stats),
        }))
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}),
            Kind::Completion => json!({
                "index": 0,
                "text": delta.get("content").and_then(Value::as_str).unwrap_or(""),
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        let mut c = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("wgmoe-", env!("CARGO_PKG_VERSION")),
            "choices": [choice],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    /// The events one worker report becomes. With tools on offer the text is held to the end,
    /// where it is split into content and calls.
    fn stream_events(&mut self, out: Option<Out>) -> Vec<SseEvent> {
        let data = |v: Value| SseEvent::default().data(v.to_string());
        let mut events = Vec::new();
        if !self.started && self.kind == Kind::Chat {
            self.started = true;
            events.push(data(self.chunk(json!({"role": "assistant", "content": ""}), None)));
        }
        match out {
            Some(Out::Accepted) => {}
            Some(Out::Text(t)) if self.tools == ToolMode::None => {
                if !t.is_empty() {
                    events.push(data(self.chunk(json!({"content": t}), None)));
                }
            }
            Some(Out::Text(t)) => self.text.push_str(&t),
            Some(Out::Done { reason, stats }) => {
                self.cached = self.prompt_tokens.saturating_sub(stats.prompt_tokens);
                let (content, calls) = openai::split_tool_calls(&self.text, self.tools);
                if self.tools != ToolMode::None {
                    if let Some(c) = content.filter(|c| !c.is_empty()) {
                        events.push(data(self.chunk(json!({"content": c}), None)));
                    }
                    if !calls.is_empty() {
                        let indexed: Vec<Value> = calls
                            .iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let mut c = c.clone();
                                c["index"] = json!(i);
                                c
                            })
                            .collect();
                        events.push(data(self.chunk(json!({"tool_calls": indexed}), None)));
                    }
                }
                let finish = openai::finish_reason(&reason, !calls.is_empty());
                let mut last = self.chunk(json!({}), Some(finish));
                last["timings"] = timings(&stats);
                events.push(data(last));
                if self.include_usage {
                    let mut u = self.chunk(json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = openai::usage(self.prompt_tokens, stats.generated_tokens, self.cached);
                    events.push(data(u));
                }
                events.push(SseEvent::default().data("[DONE]"));
                self.ended = true;
            }
            Some(Out::Failed(e)) => {
                events.push(data(ApiError::from(e).body()));
                events.push(SseEvent::default().data("[DONE]"));
                self.ended = true;
            }
            None => self.ended = true,
        }
        events
    }
}

/// llama-server's `timings` extension: prompt and generation speed of this reply.
fn timings(stats: &Stats) -> Value {
    json!({
        "prompt_n": stats.prompt_tokens,
        "prompt_ms": stats.prompt_seconds * 1e3,
        "predicted_n": stats.generated_tokens,
        "predicted_ms": stats.decode_seconds * 1e3,
        "predicted_per_second": stats.decode_tokens_per_second(),
    })
}
