//! The OpenAI wire format: request bodies, the prompt and options they describe, and the JSON of
//! replies, chunks and errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use wgmoe::{Constraint, Error, GenerateOptions, Message, Model, Sampling, StopReason};

/// An error as OpenAI's API returns it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
        }
    }

    pub fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code: Some(code),
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadInput(m) => ApiError::invalid(m),
            e @ Error::ContextFull { .. } => ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::invalid(e.to_string())
            },
            e @ Error::Unsupported { .. } => ApiError::invalid(e.to_string()),
            e => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                e.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Sampling and stopping fields shared by both endpoints.
#[derive(Deserialize, Default)]
pub struct Knobs {
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    /// An extension (llama.cpp's, vLLM's): keep the k most likely tokens.
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
}

#[derive(Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Deserialize)]
pub struct ToolCall {
    pub function: CalledFunction,
}

#[derive(Deserialize)]
pub struct CalledFunction {
    pub name: String,
    /// A JSON text, as OpenAI sends it.
    pub arguments: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Deserialize)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    pub schema: Option<Value>,
}

#[derive(Deserialize, serde::Serialize, Clone)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Deserialize, serde::Serialize, Clone)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

#[derive(Deserialize)]
pub struct CompletionRequest {
    pub prompt: CompletionPrompt,
    #[serde(default)]
    pub echo: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum CompletionPrompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

/// A request body: JSON, or a 400 that says where it is not.
pub fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))
}

/// The fields of `T` in a request body; a field of the wrong type is a 400 that names it.
/// Fields `T` does not know are ignored (clients send many).
pub fn fields<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::invalid(format!("invalid request: {inner}"))
        } else {
            ApiError::invalid(format!("invalid field `{path}`: {inner}"))
        }
    })
}

/// How the reply is shaped after generation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ToolMode {
    /// No tools: the text is the reply.
    None,
    /// Tools offered: `<tool_call>` blocks in the text become `tool_calls`.
    Auto,
    /// A call was required: the whole text is one `{"name", "arguments"}` object.
    Forced,
}

/// What a request asks the workers to do.
pub struct Plan {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    pub stream: bool,
    pub include_usage: bool,
    pub tools: ToolMode,
}

impl Knobs {
    fn options(&self, model: &Model, default_max: Option<usize>) -> Result<(GenerateOptions, bool, bool), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("only n = 1 is supported"));
        }
        let d = model.default_sampling();
        let sampling = Sampling {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.map_or(d.top_k, |k| k as usize),
            top_p: self.top_p.unwrap_or(d.top_p),
        };
        sampling.validate()?;
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 4 || stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid("`stop` takes up to 4 non-empty strings"));
        }
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .map(|n| n as usize)
            .or(default_max);
        if max_tokens == Some(0) {
            return Err(ApiError::invalid("max_tokens must be at least 1"));
        }
        // Without a seed each request draws its own.
        let seed = self.seed.map_or_else(random_u64, |s| s as u64);
        let options = GenerateOptions {
            max_tokens,
            sampling: Some(sampling),
            seed,
            stop,
            ..Default::default()
        };
        let stream = self.stream.unwrap_or(false);
        let usage = self.stream_options.as_ref().is_some_and(|o| o.include_usage);
        Ok((options, stream, usage))
    }
}

/// A random 64-bit number (ids, seeds of requests that give none).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The prompt and options of a chat request.
pub fn chat_plan(model: &Model, body: &Value) -> Result<Plan, ApiError> {
    let (req, knobs): (ChatRequest, Knobs) = (fields(body)?, fields(body)?);
    let (mut options, stream, include_usage) = knobs.options(model, None)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("`messages` is empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    for (i, m) in req.messages.iter().enumerate() {
        messages.push(message(i, m)?);
    }
    let tools = req.tools.as_deref().filter(|t| !t.is_empty());
    let choice = req.tool_choice.as_ref();
    let mode = match (tools, choice) {
        (None, None) => ToolMode::None,
        (None, Some(_)) => return Err(ApiError::invalid("`tool_choice` needs `tools`")),
        (Some(_), None) => ToolMode::Auto,
        (Some(_), Some(Value::String(s))) => match s.as_str() {
            "none" => ToolMode::None,
            "auto" => ToolMode::Auto,
            "required" => ToolMode::Forced,
            other => return Err(ApiError::invalid(format!("unknown tool_choice {other:?}"))),
        },
        (Some(_), Some(Value::Object(_))) => ToolMode::Forced,
        (Some(_), Some(_)) => return Err(ApiError::invalid("`tool_choice` must be a string or an object")),
    };
    let offered: Vec<Tool> = match (tools, choice) {
        (Some(t), Some(Value::Object(o))) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid("`tool_choice.function.name` is missing"))?;
            let picked: Vec<Tool> = t.iter().filter(|t| t.function.name == name).cloned().collect();
            if picked.is_empty() {
                return Err(ApiError::invalid(format!(
                    "tool_choice names {name:?}, which is not in `tools`"
                )));
            }
            picked
        }
        (Some(t), _) => t.to_vec(),
        (None, _) => Vec::new(),
    };
    let tool_json = (mode != ToolMode::None).then(|| json!(offered));
    let rendered = match &tool_json {
        Some(t) if model.chat_template_takes_tools() => model.apply_chat_template_with_tools(&messages, Some(t), true),
        Some(t) => {
            announce_tools(&mut messages, t);
            model.apply_chat_template(&messages, true)
        }
        None => model.apply_chat_template(&messages, true),
    }?;
    let prompt = model.tokenize(&rendered, false)?;
    options.constraint = match (&req.response_format, mode) {
        (_, ToolMode::Forced) => Some(Constraint::json_schema(call_schema(&offered))),
        (None | Some(ResponseFormat::Text), _) => None,
        (Some(ResponseFormat::JsonObject), _) => Some(Constraint::json_object()),
        (Some(ResponseFormat::JsonSchema { json_schema }), _) => match &json_schema.schema {
            Some(s) => Some(Constraint::json_schema(s.clone())),
            None => Some(Constraint::json_object()),
        },
    };
    Ok(Plan {
        prompt,
        options,
        stream,
        include_usage,
        tools: mode,
    })
}

/// The prompt and options of a completions request.
pub fn completion_plan(model: &Model, body: &Value) -> Result<Plan, ApiError> {
    let (req, knobs): (CompletionRequest, Knobs) = (fields(body)?, fields(body)?);
    // OpenAI's default for this endpoint.
    let (options, stream, include_usage) = knobs.options(model, Some(16))?;
    if req.echo == Some(true) {
        return Err(ApiError::invalid("`echo` is not supported"));
    }
    let prompt = match &req.prompt {
        CompletionPrompt::Text(t) => model.tokenize(t, true)?,
        CompletionPrompt::Texts(v) if v.len() == 1 => model.tokenize(&v[0], true)?,
        CompletionPrompt::Texts(_) => return Err(ApiError::invalid("one prompt per request")),
        CompletionPrompt::Tokens(t) => t.clone(),
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid("the prompt is empty"));
    }
    Ok(Plan {
        prompt,
        options,
        stream,
        include_usage,
        tools: ToolMode::None,
    })
}

fn message(i: usize, m: &ChatMessage) -> Result<Message, ApiError> {
    if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
        return Err(ApiError::invalid(format!("messages[{i}]: unknown role {:?}", m.role)));
    }
    let mut text = match &m.content {
        None => String::new(),
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => {
            let mut t = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(s)) => t.push_str(s),
                    (kind, _) => {
                        return Err(ApiError::invalid(format!(
                            "messages[{i}]: content parts of type {kind:?} are not supported (text only)"
                        )))
                    }
                }
            }
            t
        }
    };
    // Earlier calls go back in the form the model writes them.
    for call in m.tool_calls.iter().flatten() {
        let args: Value =
            serde_json::from_str(&call.function.arguments).unwrap_or(Value::String(call.function.arguments.clone()));
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!(
            "<tool_call>\n{}\n</tool_call>",
            json!({"name": call.function.name, "arguments": args})
        ));
    }
    let role = if m.role == "developer" {
        "system"
    } else {
        m.role.as_str()
    };
    Ok(Message::new(role, text))
}

/// For a template that does not render tools: describe them in the system message, in the
/// Hermes / Qwen format the replies are parsed in.
fn announce_tools(messages: &mut Vec<Message>, tools: &Value) {
    let lines: Vec<String> = tools.as_array().into_iter().flatten().map(|t| t.to_string()).collect();
    let text = format!(
        "You may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{}\n</tools>\n\n\
         For each function call, return a json object with function name and arguments within \
         <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>",
        lines.join("\n")
    );
    match messages.first_mut() {
        Some(m) if m.role == "system" => m.content = format!("{}\n\n{text}", m.content),
        _ => messages.insert(0, Message::system(text)),
    }
}

/// The schema of one call of any of `tools`: `{"name": <one of them>, "arguments": <its
/// parameters>}`.
fn call_schema(tools: &[Tool]) -> Value {
    let one = |t: &Tool| {
        json!({
            "type": "object",
            "properties": {
                "name": {"const": t.function.name},
                "arguments": t.function.parameters.clone().unwrap_or(json!({"type": "object"})),
            },
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    match tools {
        [t] => one(t),
        many => json!({"anyOf": many.iter().map(one).collect::<Vec<_>>()}),
    }
}

/// The reply's text split into content and tool calls (`{"id", "type", "function": {"name",
/// "arguments"}}`), by `mode`.
pub fn split_tool_calls(text: &str, mode: ToolMode) -> (Option<String>, Vec<Value>) {
    let call = |v: &Value| -> Option<Value> {
        let name = v.get("name")?.as_str()?;
        let args = v.get("arguments").cloned().unwrap_or(json!({}));
        Some(json!({
            "id": format!("call_{:016x}", random_u64()),
            "type": "function",
            "function": {"name": name, "arguments": args.to_string()},
        }))
    };
    match mode {
        ToolMode::None => (Some(text.to_string()), Vec::new()),
        ToolMode::Forced => match serde_json::from_str::<Value>(text).ok().as_ref().and_then(call) {
            Some(c) => (None, vec![c]),
            None => (Some(text.to_string()), Vec::new()),
        },
        ToolMode::Auto => {
            let (mut content, mut calls, mut rest) = (String::new(), Vec::new(), text);
            while let Some(start) = rest.find("<tool_call>") {
                let Some(len) = rest[start..].find("</tool_call>") else {
                    break;
                };
                let inner = &rest[start + "<tool_call>".len()..start + len];
                match serde_json::from_str::<Value>(inner.trim()).ok().as_ref().and_then(call) {
                    Some(c) => {
                        content.push_str(&rest[..start]);
                        calls.push(c);
                    }
                    None => content.push_str(&rest[..start + len + "</tool_call>".len()]),
                }
                rest = &rest[start + len + "</tool_call>".len()..];
            }
            content.push_str(rest);
            let content = content.trim();
            (
                (!content.is_empty() || calls.is_empty()).then(|| content.to_string()),
                calls,
            )
        }
    }
}

/// OpenAI's `finish_reason`.
pub fn finish_reason(reason: &StopReason, calls: bool) -> &'static str {
    match reason {
        _ if calls => "tool_calls",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        _ => "stop",
    }
}

pub fn usage(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_are_split_from_the_text() {
        let text =
            "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let (content, calls) = split_tool_calls(text, ToolMode::Auto);
        assert_eq!(content.as_deref(), Some("Let me check."));
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["function"]["name"], "weather");
        let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        // A block that is not a call stays text; no tools, no parsing.
        let (content, calls) = split_tool_calls("<tool_call>oops</tool_call>", ToolMode::Auto);
        assert_eq!(
            (content.as_deref(), calls.len()),
            (Some("<tool_call>oops</tool_call>"), 0)
        );
        let (content, calls) = split_tool_calls(text, ToolMode::None);
        assert_eq!((content.as_deref(), calls.len()), (Some(text), 0));
        let (content, calls) = split_tool_calls("{\"name\": \"f\", \"arguments\": {}}", ToolMode::Forced);
        assert_eq!((content, calls.len()), (None, 1));
    }

    #[test]
    fn wrong_types_are_named_by_path() {
        let body = json_body(br#"{"messages": [], "max_tokens": "ten"}"#).unwrap();
        let e = fields::<Knobs>(&body).err().unwrap();
        assert!(e.message.contains("max_tokens"), "{}", e.message);
        let body = json_body(br#"{"messages": [{"role": "user", "content": 5}]}"#).unwrap();
        let e = fields::<ChatRequest>(&body).err().unwrap();
        assert!(e.message.contains("messages[0].content"), "{}", e.message);
        let e = json_body(b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        // Unknown fields are accepted (clients send many).
        let body = json_body(br#"{"messages": [], "logit_bias": {}, "user": "x"}"#).unwrap();
        assert!(fields::<ChatRequest>(&body).is_ok() && fields::<Knobs>(&body).is_ok());
    }
}
