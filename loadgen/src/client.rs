//! The OpenAI-compatible streaming client: *how* a request is sent and timed.
//!
//! One pooled `reqwest::Client` is built per benchmark ([`Client::new`]) and shared by every
//! request, so connection set-up is paid once per connection, not per request, and never inside a
//! request's timing after the pool is warm (warm-up requests are what warms it).
//!
//! Requests are `POST {endpoint}/v1/completions` (or `/v1/chat/completions`) with `stream: true`
//! and `stream_options: {"include_usage": true}`, built like `vllm bench serve` builds them:
//! `temperature: 0`, `max_tokens` (chat: `max_completion_tokens`) = the request's `output_len`,
//! `ignore_eos` (on by default, see [`ClientConfig::ignore_eos`]) and optionally
//! `min_tokens = max_tokens`. The response is read as server-sent events; every event is
//! timestamped when the bytes that complete it arrive. See [`RequestRecord`] for what is kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::dataset::{Prompt, Request};
use crate::error::LoadgenError;

/// Which OpenAI endpoint to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ApiKind {
    /// `POST /v1/completions` with `prompt` (text or token ids): no chat template, so the input
    /// length is what the dataset says.
    #[default]
    Completions,
    /// `POST /v1/chat/completions` with one user message: the server applies its chat template,
    /// which adds tokens (`usage.prompt_tokens` shows how many).
    ChatCompletions,
}

/// Client settings. `base_url` is the server root (`http://host:8000`); a trailing `/v1` is
/// accepted and not doubled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientConfig {
    pub base_url: String,
    /// The `model` field of every request (the served model name).
    pub model: String,
    pub api: ApiKind,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Send `"ignore_eos": true` so that every request generates exactly `output_len` tokens
    /// (vLLM, SGLang and TRT-LLM accept it). vLLM's `--ignore-eos` flag is off by default, but
    /// then output lengths depend on when the model happens to stop, and two servers (or two
    /// models) are compared on different work; tokbench turns it on. Servers that reject unknown
    /// fields (OpenAI itself) need it off.
    pub ignore_eos: bool,
    /// Also send `"min_tokens": output_len` (vLLM's sampling parameter): a second way to force the
    /// length, for servers that ignore `ignore_eos`.
    pub min_tokens_equal_max: bool,
    /// Fields merged into every request body last (overriding the above): `top_p`, `seed`, ...
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// Whole-request limit (connect to end of stream); vLLM's benchmark uses 6 h.
    pub request_timeout: Duration,
    /// Limit on establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// Defaults for `base_url` and `model`: completions API, `ignore_eos` on, 6 h request timeout.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            model: model.into(),
            api: ApiKind::Completions,
            api_key: None,
            ignore_eos: true,
            min_tokens_equal_max: false,
            extra_body: serde_json::Map::new(),
            request_timeout: Duration::from_secs(6 * 3600),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The full URL requests go to.
    pub fn url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        match self.api {
            ApiKind::Completions => format!("{base}/v1/completions"),
            ApiKind::ChatCompletions => format!("{base}/v1/chat/completions"),
        }
    }

    /// The JSON body for `request`.
    pub fn body(&self, request: &Request) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), self.model.clone().into());
        match self.api {
            ApiKind::Completions => {
                let prompt = match &request.prompt {
                    Prompt::Text(t) => serde_json::Value::from(t.as_str()),
                    Prompt::TokenIds(ids) => serde_json::Value::from(ids.clone()),
                };
                body.insert("prompt".into(), prompt);
                body.insert("max_tokens".into(), request.output_len.into());
            }
            ApiKind::ChatCompletions => {
                body.insert(
                    "messages".into(),
                    serde_json::json!([{"role": "user", "content": request.prompt.as_text()}]),
                );
                body.insert("max_completion_tokens".into(), request.output_len.into());
            }
        }
        body.insert("temperature".into(), 0.0.into());
        body.insert("stream".into(), true.into());
        body.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
        if self.ignore_eos {
            body.insert("ignore_eos".into(), true.into());
        }
        if self.min_tokens_equal_max {
            body.insert("min_tokens".into(), request.output_len.into());
        }
        for (k, v) in &self.extra_body {
            body.insert(k.clone(), v.clone());
        }
        serde_json::Value::Object(body)
    }
}

/// Why a request failed; the message in [`RequestRecord::error`] has the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No connection could be made (refused, DNS, TLS).
    Connect,
    /// [`ClientConfig::request_timeout`] passed.
    Timeout,
    /// The server answered with a status other than 200.
    HttpStatus,
    /// An event's `data:` was not JSON.
    MalformedStream,
    /// The connection broke while the response was being read.
    ConnectionDropped,
    /// The server sent an `{"error": ...}` event inside the stream.
    ServerError,
    /// The stream ended without a single generated token (vLLM: "Never received a valid chunk").
    NoTokens,
    /// The run was cancelled (or hit its timeout) while the request was in flight.
    Cancelled,
    /// Anything else reqwest reports.
    Other,
}

/// Everything measured about one request. Times are seconds since the run's start (one monotonic
/// clock, `std::time::Instant`), so records of one run are directly comparable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the schedule.
    pub index: usize,
    /// [`Request::id`].
    pub id: String,
    /// Warm-up requests are recorded but excluded from metrics.
    pub warmup: bool,
    /// [`Request::input_len`] (dataset's count).
    pub input_len: usize,
    /// Requested output tokens (`max_tokens`).
    pub output_len: usize,
    /// When the schedule said to send it.
    pub scheduled_s: f64,
    /// When its task started running (the dispatcher woke it).
    pub dispatched_s: f64,
    /// When it got a concurrency slot (= `dispatched_s` without a cap).
    pub slot_s: f64,
    /// Just before the HTTP request was handed to the connection pool (body already serialised).
    pub sent_s: f64,
    /// Arrival of each event carrying generated text (`choices[0].text`, `delta.content` or
    /// `delta.reasoning_content`, non-empty); the first is the first token.
    pub chunk_times_s: Vec<f64>,
    /// When the response ended (stream end, error or cancellation).
    pub end_s: f64,
    /// Concatenated generated text.
    pub output_text: String,
    /// Whether `data: [DONE]` was seen (informational: servers that omit it are not failed).
    pub saw_done: bool,
    /// `usage.prompt_tokens` from the server, if it sent usage.
    pub prompt_tokens: Option<u64>,
    /// `usage.completion_tokens` from the server, if it sent usage.
    pub completion_tokens: Option<u64>,
    /// HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    pub error_kind: Option<ErrorKind>,
    /// Human-readable failure (status and body, reqwest's error chain, the bad event).
    pub error: Option<String>,
}

impl RequestRecord {
    /// A record for `request` with no timing yet.
    pub fn new(index: usize, request: &Request) -> Self {
        RequestRecord {
            index,
            id: request.id.clone(),
            warmup: false,
            input_len: request.input_len,
            output_len: request.output_len,
            scheduled_s: 0.0,
            dispatched_s: 0.0,
            slot_s: 0.0,
            sent_s: 0.0,
            chunk_times_s: Vec::new(),
            end_s: 0.0,
            output_text: String::new(),
            saw_done: false,
            prompt_tokens: None,
            completion_tokens: None,
            http_status: None,
            error_kind: None,
            error: None,
        }
    }

    /// Completed: no error and at least one token.
    pub fn success(&self) -> bool {
        self.error.is_none() && !self.chunk_times_s.is_empty()
    }

    fn fail(&mut self, kind: ErrorKind, message: impl Into<String>) {
        if self.error.is_none() {
            self.error_kind = Some(kind);
            self.error = Some(message.into());
        }
    }
}

/// Incremental server-sent-events parser (the subset OpenAI servers use): lines end in `\n` or
/// `\r\n`; `data:` lines (one optional space after the colon) accumulate, joined by `\n`; a blank
/// line ends the event; comments (`:`) and other fields (`event:`, `id:`) are ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the `data` of every event completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, &mut events);
            } else {
                self.line.push(b);
            }
        }
        events
    }

    /// End of stream: an event not terminated by a blank line is still delivered.
    pub fn finish(&mut self) -> Option<String> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut events);
        }
        events.extend(self.data.take());
        events.pop()
    }

    fn line_done(&mut self, line: &[u8], events: &mut Vec<String>) {
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        let line = String::from_utf8_lossy(line);
        if let Some(rest) = line.strip_prefix("data:") {
            let value = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
    }
}

/// The pooled streaming client. Cheap to clone (shares the pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
    url: Arc<str>,
}

impl Client {
    /// Builds the one HTTP client of a benchmark: unlimited idle connections per host (so a
    /// burst of N requests leaves N reusable connections), `TCP_NODELAY` (no Nagle delay on
    /// small request bodies), HTTP/1.1 (as vLLM's aiohttp client: one stream per connection).
    pub fn new(config: ClientConfig) -> Result<Client, LoadgenError> {
        let parsed = reqwest::Url::parse(&config.url())
            .map_err(|e| LoadgenError::Client(format!("endpoint {:?}: {e}", config.base_url)))?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .http1_only()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| LoadgenError::Client(error_chain(&e)))?;
        Ok(Client {
            http,
            url: parsed.as_str().into(),
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Sends `request` now and reads its stream to the end. `clock` is the run's zero (times in
    /// the record are relative to it); `cancel` aborts the request, keeping what was measured.
    /// Never fails: failures are in the record.
    pub async fn execute(
        &self,
        index: usize,
        request: &Request,
        clock: Instant,
        cancel: &CancellationToken,
    ) -> RequestRecord {
        let mut rec = RequestRecord::new(index, request);
        let body = match serde_json::to_vec(&self.config.body(request)) {
            Ok(b) => b,
            Err(e) => {
                rec.fail(
                    ErrorKind::Other,
                    format!("serialising the request body: {e}"),
                );
                return rec;
            }
        };
        let mut builder = self
            .http
            .post(&*self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(self.config.request_timeout)
            .body(body);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key);
        }
        let since = |t: Instant| t.duration_since(clock).as_secs_f64();
        rec.sent_s = since(Instant::now());
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                rec.fail(ErrorKind::Cancelled, "run cancelled before the response headers arrived");
            }
            resp = builder.send() => match resp {
                Err(e) => {
                    let kind = classify(&e);
                    rec.fail(kind, error_chain(&e));
                }
                Ok(resp) => self.read_stream(resp, &mut rec, clock, cancel).await,
            }
        }
        rec.end_s = since(Instant::now());
        if rec.error.is_none() && rec.chunk_times_s.is_empty() {
            rec.fail(
                ErrorKind::NoTokens,
                "the stream ended without any generated text (never received a valid chunk)",
            );
        }
        if let Some(e) = &rec.error {
            tracing::debug!(id = %rec.id, error = %e, "request failed");
        }
        rec
    }

    async fn read_stream(
        &self,
        resp: reqwest::Response,
        rec: &mut RequestRecord,
        clock: Instant,
        cancel: &CancellationToken,
    ) {
        let status = resp.status();
        rec.http_status = Some(status.as_u16());
        if status != reqwest::StatusCode::OK {
            let text = tokio::select! {
                biased;
                _ = cancel.cancelled() => String::from("(cancelled while reading the body)"),
                t = resp.text() => t.unwrap_or_else(|e| format!("(body unreadable: {e})")),
            };
            let text: String = text.chars().take(1000).collect();
            rec.fail(
                ErrorKind::HttpStatus,
                format!("HTTP {status}: {}", text.trim()),
            );
            return;
        }
        let mut parser = SseParser::new();
        let mut stream = resp.bytes_stream();
        loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    rec.fail(ErrorKind::Cancelled, "run cancelled while the response was streaming");
                    return;
                }
                n = stream.next() => n,
            };
            match next {
                None => {
                    if let Some(ev) = parser.finish() {
                        let t = Instant::now().duration_since(clock).as_secs_f64();
                        handle_event(&ev, t, rec);
                    }
                    return;
                }
                Some(Err(e)) => {
                    let kind = if e.is_timeout() {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::ConnectionDropped
                    };
                    rec.fail(
                        kind,
                        format!(
                            "response stream broke after {} chunks: {}",
                            rec.chunk_times_s.len(),
                            error_chain(&e)
                        ),
                    );
                    return;
                }
                Some(Ok(bytes)) => {
                    let t = Instant::now().duration_since(clock).as_secs_f64();
                    for ev in parser.feed(&bytes) {
                        if !handle_event(&ev, t, rec) {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Applies one SSE event to the record; false when the request has failed and reading should stop.
fn handle_event(data: &str, t: f64, rec: &mut RequestRecord) -> bool {
    let data = data.trim();
    if data.is_empty() {
        return true;
    }
    if data == "[DONE]" {
        rec.saw_done = true;
        return true;
    }
    if rec.saw_done {
        return true;
    }
    let v: serde_json::Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => {
            let shown: String = data.chars().take(200).collect();
            rec.fail(
                ErrorKind::MalformedStream,
                format!("event data is not JSON ({e}): {shown}"),
            );
            return false;
        }
    };
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        rec.fail(ErrorKind::ServerError, format!("server error event: {err}"));
        return false;
    }
    if let Some(choice) = v
        .get("choices")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
    {
        let text = choice
            .get("text")
            .and_then(|t| t.as_str())
            .or_else(|| {
                let delta = choice.get("delta")?;
                ["content", "reasoning_content", "reasoning"]
                    .iter()
                    .find_map(|k| {
                        delta
                            .get(*k)
                            .and_then(|c| c.as_str())
                            .filter(|s| !s.is_empty())
                    })
            })
            .unwrap_or("");
        if !text.is_empty() {
            rec.chunk_times_s.push(t);
            rec.output_text.push_str(text);
        }
    }
    if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
        if let Some(p) = usage.get("prompt_tokens").and_then(|x| x.as_u64()) {
            rec.prompt_tokens = Some(p);
        }
        if let Some(c) = usage.get("completion_tokens").and_then(|x| x.as_u64()) {
            rec.completion_tokens = Some(c);
        }
    }
    true
}

fn classify(e: &reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else if e.is_body() || e.is_request() {
        ErrorKind::ConnectionDropped
    } else {
        ErrorKind::Other
    }
}

/// reqwest's error and its sources, joined: the top-level message alone ("error sending
/// request") never says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
