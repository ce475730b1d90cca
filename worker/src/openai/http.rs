//! The OpenAI-compatible HTTP API on axum: `/v1/completions`, `/v1/chat/completions`
//! (streamed as server-sent events in OpenAI's chunk format, ending with `data: [DONE]`, or one
//! JSON body), `/v1/models`, `/health`, `/metrics` (Prometheus text).
//!
//! Handlers validate and tokenise, hand the token ids to the engine thread and turn its token
//! events into text. A client that goes away drops its stream (or its handler future), which
//! drops the request's event receiver; the engine sees that at its next iteration and frees the
//! sequence's KV blocks: no work is done for nobody.
//!
//! Besides OpenAI's fields, requests take vLLM's extensions `ignore_eos`, `min_tokens`, `top_k`
//! and `return_token_ids` (the choices then carry the generated `token_ids`, and the response
//! the `prompt_token_ids`, so a client can compare ids exactly). Temperature defaults to 0
//! (greedy), not OpenAI's 1.0.

use super::chat_template::{ChatMessage, ChatTemplate};
use super::engine::{EngineHandle, Event, SamplingParams, SeqParams};
use super::kv_blocks::blocks_for;
use crate::tokenizer::Tokenizer;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What every handler shares.
pub struct AppState {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
    /// Why there is no chat template (for the error message), when there is none.
    pub chat_template_missing: String,
    pub served_model_name: String,
    /// Prompt + completion positions a request may use (the model's max positions).
    pub max_model_len: usize,
    pub vocab_size: usize,
    pub created: u64,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", param, code: None }
    }
    fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }
    fn internal(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into(), kind: "server_error", param: None, code: None }
    }
    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[derive(Debug, Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The fields both endpoints share (OpenAI's, and vLLM's extensions).
#[derive(Debug, Deserialize, Default)]
struct CommonParams {
    model: Option<String>,
    max_tokens: Option<i64>,
    /// The chat endpoint's newer name for max_tokens.
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    ignore_eos: bool,
    min_tokens: Option<usize>,
    n: Option<usize>,
    #[serde(default)]
    return_token_ids: bool,
    /// OpenAI parameters this server does not implement: a request that sets one to anything
    /// but its neutral value is refused (400) rather than answered as if it were not there.
    #[serde(flatten)]
    unsupported: UnsupportedParams,
}

#[derive(Debug, Deserialize, Default)]
struct UnsupportedParams {
    stop: Option<Value>,
    stop_token_ids: Option<Value>,
    logprobs: Option<Value>,
    top_logprobs: Option<Value>,
    echo: Option<Value>,
    best_of: Option<Value>,
    presence_penalty: Option<Value>,
    frequency_penalty: Option<Value>,
    repetition_penalty: Option<Value>,
    logit_bias: Option<Value>,
    suffix: Option<Value>,
    tools: Option<Value>,
    response_format: Option<Value>,
}

impl UnsupportedParams {
    /// The first parameter set to something this server would not honour.
    fn first_set(&self) -> Option<(&'static str, &Value)> {
        let all: [(&'static str, &Option<Value>); 13] = [
            ("stop", &self.stop),
            ("stop_token_ids", &self.stop_token_ids),
            ("logprobs", &self.logprobs),
            ("top_logprobs", &self.top_logprobs),
            ("echo", &self.echo),
            ("best_of", &self.best_of),
            ("presence_penalty", &self.presence_penalty),
            ("frequency_penalty", &self.frequency_penalty),
            ("repetition_penalty", &self.repetition_penalty),
            ("logit_bias", &self.logit_bias),
            ("suffix", &self.suffix),
            ("tools", &self.tools),
            ("response_format", &self.response_format),
        ];
        all.into_iter().find_map(|(name, v)| v.as_ref().filter(|v| !Self::neutral(name, v)).map(|v| (name, v)))
    }

    /// Values that ask for nothing: null, false, an empty string/list/object, 0 for
    /// top_logprobs and the penalties, 1 for best_of and repetition_penalty, and
    /// `{"type": "text"}` for response_format.
    fn neutral(name: &str, v: &Value) -> bool {
        match v {
            Value::Null | Value::Bool(false) => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty() || (name == "response_format" && v.get("type").and_then(Value::as_str) == Some("text")),
            Value::Number(n) => match name {
                "top_logprobs" | "presence_penalty" | "frequency_penalty" => n.as_f64() == Some(0.0),
                "best_of" | "repetition_penalty" => n.as_f64() == Some(1.0),
                _ => false,
            },
            Value::Bool(true) => false,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    prompt: Value,
    #[serde(flatten)]
    common: CommonParams,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: CommonParams,
}

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Completion,
    Chat,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"), None).with_code("invalid_json")
        } else {
            ApiError::bad_request(format!("invalid request: {e}"), None)
        }
    })
}

async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let result = async {
        let req: CompletionRequest = parse_body(&body)?;
        let prompt = prompt_ids(&st, &req.prompt)?;
        run(&st, Endpoint::Completion, prompt, req.common).await
    }
    .await;
    result.unwrap_or_else(|e| rejected(&st, e))
}

async fn chat_completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let result = async {
        let req: ChatRequest = parse_body(&body)?;
        check_model(&st, &req.common)?;
        let Some(template) = &st.chat_template else {
            return Err(ApiError::bad_request(
                format!(
                    "the model {} has no chat template ({}), so /v1/chat/completions cannot turn messages into a prompt: use /v1/completions with a prompt, or a checkpoint whose tokenizer_config.json has a chat_template",
                    st.served_model_name, st.chat_template_missing
                ),
                Some("messages"),
            )
            .with_code("no_chat_template"));
        };
        if req.messages.is_empty() {
            return Err(ApiError::bad_request("messages is empty: send at least one message", Some("messages")));
        }
        let text = template.render(&req.messages).map_err(|e| ApiError::bad_request(e, Some("messages")))?;
        // The template writes the special tokens itself (BOS included), as vLLM and transformers
        // tokenise chat prompts: no special tokens added.
        let prompt = st.tokenizer.encode_plain(&text).map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?;
        run(&st, Endpoint::Chat, prompt, req.common).await
    }
    .await;
    result.unwrap_or_else(|e| rejected(&st, e))
}

fn rejected(st: &AppState, e: ApiError) -> Response {
    if e.status.is_client_error() {
        st.engine.metrics.requests_rejected.fetch_add(1, Ordering::Relaxed);
    }
    e.into_response()
}

fn check_model(st: &AppState, p: &CommonParams) -> Result<(), ApiError> {
    match &p.model {
        Some(m) if m != &st.served_model_name => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{m}` does not exist. This server serves `{}` (GET /v1/models).", st.served_model_name),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        }),
        _ => Ok(()),
    }
}

/// A completion prompt: a string, a list of token ids, or a one-element list of either.
fn prompt_ids(st: &AppState, prompt: &Value) -> Result<Vec<u32>, ApiError> {
    let one = match prompt {
        Value::Array(items) if items.len() == 1 && (items[0].is_string() || items[0].is_array()) => &items[0],
        Value::Array(items) if items.iter().any(|v| v.is_string() || v.is_array()) => {
            return Err(ApiError::bad_request("only one prompt per request is supported: send a string or a list of token ids", Some("prompt")))
        }
        p => p,
    };
    match one {
        Value::String(text) => st.tokenizer.encode(text).map_err(|e| ApiError::bad_request(e.to_string(), Some("prompt"))),
        Value::Array(ids) => ids
            .iter()
            .map(|v| match v.as_u64() {
                Some(id) if (id as usize) < st.vocab_size => Ok(id as u32),
                _ => Err(ApiError::bad_request(
                    format!("prompt token {v} is not a token id of this model (0..{})", st.vocab_size),
                    Some("prompt"),
                )),
            })
            .collect(),
        _ => Err(ApiError::bad_request("prompt must be a string or a list of token ids", Some("prompt"))),
    }
}

/// Validates the request, queues it, and answers (streamed or not).
async fn run(st: &Arc<AppState>, endpoint: Endpoint, prompt: Vec<u32>, p: CommonParams) -> Result<Response, ApiError> {
    check_model(st, &p)?;
    if let Some((name, value)) = p.unsupported.first_set() {
        return Err(ApiError::bad_request(
            format!("{name} = {value} is not supported by tokbench's server (it generates greedily or by temperature/top_p/top_k sampling, up to max_tokens or EOS): leave {name} out"),
            Some(name),
        )
        .with_code("unsupported_parameter"));
    }
    if p.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only n = 1 is supported", Some("n")));
    }
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt has no tokens", Some("prompt")));
    }
    let max_len = st.max_model_len;
    let asked = p.max_completion_tokens.or(p.max_tokens);
    let max_tokens = match (asked, endpoint) {
        (Some(n), _) if n < 1 => {
            return Err(ApiError::bad_request(format!("max_tokens must be at least 1, got {n}"), Some("max_tokens")));
        }
        (Some(n), _) => n as usize,
        // OpenAI's legacy default for completions; chat may use the rest of the context.
        (None, Endpoint::Completion) => 16,
        (None, Endpoint::Chat) => max_len.saturating_sub(prompt.len()).max(1),
    };
    let needed = prompt.len() + max_tokens;
    if needed > max_len {
        let param = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
        return Err(ApiError::bad_request(
            format!(
                "This model's maximum context length is {max_len} tokens. However, you requested {needed} tokens ({} in the {param}, {max_tokens} for the completion). Please reduce the length of the {param} or max_tokens.",
                prompt.len()
            ),
            Some(param),
        )
        .with_code("context_length_exceeded"));
    }
    let cfg = &st.engine.config;
    let blocks = blocks_for(needed, cfg.block_size);
    if blocks > cfg.num_blocks {
        return Err(ApiError::bad_request(
            format!(
                "{needed} tokens need {blocks} KV blocks of {} tokens but the whole KV cache holds {}: raise --kv-cache-memory, or reduce the prompt or max_tokens",
                cfg.block_size, cfg.num_blocks
            ),
            Some("max_tokens"),
        ));
    }
    let temperature = p.temperature.unwrap_or(0.0);
    if !temperature.is_finite() || temperature < 0.0 {
        return Err(ApiError::bad_request(format!("temperature {temperature} is invalid: use 0 (greedy) or a positive number"), Some("temperature")));
    }
    if let Some(top_p) = p.top_p {
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request(format!("top_p {top_p} is invalid: it must be in (0, 1]"), Some("top_p")));
        }
    }
    let params = SeqParams {
        max_tokens,
        min_tokens: p.min_tokens.unwrap_or(0).min(max_tokens),
        ignore_eos: p.ignore_eos,
        sampling: SamplingParams {
            temperature,
            top_p: p.top_p.filter(|&x| x < 1.0),
            top_k: p.top_k.filter(|&k| k > 0).map(|k| k as usize),
            seed: p.seed,
        },
    };
    let prompt_ids = p.return_token_ids.then(|| prompt.clone());
    let rx = st.engine.submit(prompt, params).map_err(|e| ApiError::internal(e.to_string()))?;
    let meta = ResponseMeta {
        endpoint,
        id: format!("{}-{}", if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" }, uuid::Uuid::new_v4().simple()),
        created: unix_now(),
        model: st.served_model_name.clone(),
        return_token_ids: p.return_token_ids,
        prompt_ids,
    };
    if p.stream {
        let include_usage = p.stream_options.is_some_and(|o| o.include_usage);
        Ok(stream_response(st.tokenizer.clone(), meta, include_usage, rx))
    } else {
        collect_response(&st.tokenizer, meta, rx).await
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

struct ResponseMeta {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    return_token_ids: bool,
    prompt_ids: Option<Vec<u32>>,
}

impl ResponseMeta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Completion, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }

    /// One streamed chunk: `text` (None: the chat role chunk / an empty final delta).
    fn chunk(&self, text: Option<&str>, ids: &[u32], finish: Option<&str>, include_usage: bool) -> Value {
        let mut choice = match self.endpoint {
            Endpoint::Completion => json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}),
            Endpoint::Chat => {
                let delta = match text {
                    Some(t) => json!({"content": t}),
                    None if finish.is_none() => json!({"role": "assistant", "content": ""}),
                    None => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        if self.return_token_ids {
            choice["token_ids"] = json!(ids);
        }
        let mut c = json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [choice]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn usage_chunk(&self, usage: &Value) -> Value {
        json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [], "usage": usage})
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens})
}

/// Token ids to text, incrementally: each call gives the text the new token adds. The text so
/// far is re-decoded from all ids (so merges across tokens come out as the whole decode does)
/// and the new suffix is handed out; a trailing U+FFFD (a UTF-8 sequence split across tokens) is
/// held back until the next token completes it. The concatenated deltas equal the decode of all
/// ids, which is the non-streamed text.
struct Detokenizer {
    tokenizer: Arc<Tokenizer>,
    ids: Vec<u32>,
    sent: String,
}

impl Detokenizer {
    fn new(tokenizer: Arc<Tokenizer>) -> Detokenizer {
        Detokenizer { tokenizer, ids: Vec::new(), sent: String::new() }
    }
    fn text(&self) -> String {
        if self.tokenizer.has_vocabulary() {
            self.tokenizer.decode(&self.ids).unwrap_or_default()
        } else {
            // No vocabulary (a synthetic model without tokenizer files): the ids themselves.
            self.ids.iter().map(|i| format!(" {i}")).collect()
        }
    }
    fn push(&mut self, id: u32) -> String {
        self.ids.push(id);
        let full = self.text();
        if full.ends_with('\u{FFFD}') {
            return String::new();
        }
        self.take(full)
    }
    fn finish(&mut self) -> String {
        let full = self.text();
        self.take(full)
    }
    fn take(&mut self, full: String) -> String {
        match full.strip_prefix(self.sent.as_str()) {
            Some(delta) if !delta.is_empty() => {
                let d = delta.to_string();
                self.sent = full;
                d
            }
            _ => String::new(),
        }
    }
}

fn stream_response(
    tokenizer: Arc<Tokenizer>,
    meta: ResponseMeta,
    include_usage: bool,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> Response {
    let mut detok = Detokenizer::new(tokenizer);
    // Ids whose text has not gone out yet (held back with an incomplete character).
    let mut pending_ids: Vec<u32> = Vec::new();
    let first = (meta.endpoint == Endpoint::Chat).then(|| meta.chunk(None, &[], None, include_usage).to_string());
    let events = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).flat_map(move |ev| {
        let mut out: Vec<String> = Vec::new();
        match ev {
            Event::Token(id) => {
                pending_ids.push(id);
                let delta = detok.push(id);
                if !delta.is_empty() {
                    out.push(meta.chunk(Some(&delta), &pending_ids, None, include_usage).to_string());
                    pending_ids.clear();
                }
            }
            Event::Finished { reason, prompt_tokens, completion_tokens } => {
                let delta = detok.finish();
                let text = (!delta.is_empty() || meta.endpoint == Endpoint::Completion).then_some(delta.as_str());
                out.push(meta.chunk(text, &pending_ids, Some(reason.as_str()), include_usage).to_string());
                pending_ids.clear();
                if include_usage {
                    out.push(meta.usage_chunk(&usage(prompt_tokens, completion_tokens)).to_string());
                }
            }
            Event::Error(message) => out.push(ApiError::internal(message).body().to_string()),
        }
        futures::stream::iter(out)
    });
    let stream = futures::stream::iter(first)
        .chain(events)
        .chain(futures::stream::once(async { "[DONE]".to_string() }))
        .map(|data| Ok::<_, Infallible>(SseEvent::default().data(data)));
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn collect_response(tokenizer: &Arc<Tokenizer>, meta: ResponseMeta, mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Result<Response, ApiError> {
    let mut detok = Detokenizer::new(tokenizer.clone());
    let mut ids = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token(id) => {
                ids.push(id);
                detok.ids.push(id);
            }
            Event::Error(message) => return Err(ApiError::internal(message)),
            Event::Finished { reason, prompt_tokens, completion_tokens } => {
                let text = detok.text();
                let mut choice = match meta.endpoint {
                    Endpoint::Completion => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason.as_str()}),
                    Endpoint::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": reason.as_str()
                    }),
                };
                if meta.return_token_ids {
                    choice["token_ids"] = json!(ids);
                }
                let mut body = json!({
                    "id": meta.id,
                    "object": meta.object(false),
                    "created": meta.created,
                    "model": meta.model,
                    "choices": [choice],
                    "usage": usage(prompt_tokens, completion_tokens),
                });
                if let Some(p) = &meta.prompt_ids {
                    body["prompt_token_ids"] = json!(p);
                }
                return Ok(json_response(StatusCode::OK, &body));
            }
        }
    }
    Err(ApiError::internal("the engine dropped the request without finishing it"))
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": [{
                "id": st.served_model_name,
                "object": "model",
                "created": st.created,
                "owned_by": "tokbench",
                "max_model_len": st.max_model_len,
            }]
        }),
    )
}

async fn health() -> Response {
    (StatusCode::OK, "ok").into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        st.engine.metrics.render(&st.served_model_name),
    )
        .into_response()
}
