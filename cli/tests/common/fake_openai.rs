//! A fake OpenAI-compatible server on 127.0.0.1 (port 0) for the CLI's serve tests (a copy of
//! loadgen/tests/common/mod.rs, the load generator's own test server).
//!
//! It streams completions as vLLM does (one SSE event per token, then a usage event with
//! `choices: []`, then `data: [DONE]`), sleeping `first_token_delay` before the first token and
//! `per_token_delay` before each later one, and counts on its own side what it did: requests,
//! outcomes, tokens, requests in flight. Failures are chosen by markers in the prompt:
//!
//! * `FAIL500`: HTTP 500 with a JSON error body;
//! * `DROP`: two tokens, then the connection is broken mid-stream (the body stream errors, so
//!   hyper aborts the chunked response);
//! * `BADJSON`: one token, then an event whose data is not JSON.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;

#[derive(Debug, Clone, Default)]
pub struct FakeConfig {
    pub first_token_delay: Duration,
    pub per_token_delay: Duration,
    /// Answer 401 unless `Authorization: Bearer <this>`.
    pub require_bearer: Option<String>,
    /// The "null endpoint": answer every request at once with one token, usage and `[DONE]` in a
    /// single body (no per-token streaming), so the generator's own overhead dominates.
    pub null: bool,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicUsize,
    pub completed_streams: AtomicUsize,
    pub status_500: AtomicUsize,
    pub status_401: AtomicUsize,
    pub dropped: AtomicUsize,
    pub bad_json: AtomicUsize,
    /// Tokens of streams that ended normally (= what their usage events reported).
    pub completion_tokens_completed: AtomicU64,
    pub prompt_tokens_completed: AtomicU64,
    /// Every token event written, whatever happened after.
    pub tokens_sent: AtomicU64,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

pub struct Shared {
    pub config: FakeConfig,
    pub counters: Counters,
    pub last_body: Mutex<Option<serde_json::Value>>,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub url: String,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(config: FakeConfig) -> FakeServer {
    let shared = Arc::new(Shared {
        config,
        counters: Counters::default(),
        last_body: Mutex::new(None),
    });
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // TCP_NODELAY: every token event leaves when it is written, as on a real server, instead of
    // Nagle holding it back to merge it with the next one.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    FakeServer {
        addr,
        url: format!("http://{addr}"),
        shared,
        task,
    }
}

/// Decrements the in-flight counter when the response (or its body stream) is dropped.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(s: &Arc<Shared>) -> Self {
        let now = s.counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(s.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Completions,
    Chat,
}

async fn completions(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    handle(s, headers, body, Api::Completions).await
}

async fn chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    handle(s, headers, body, Api::Chat).await
}

fn token_event(api: Api, text: &str, finish: Option<&str>) -> String {
    let finish = finish.map_or(serde_json::Value::Null, |f| f.into());
    let v = match api {
        Api::Completions => serde_json::json!({
            "id": "cmpl-fake", "object": "text_completion", "model": "fake",
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
            "usage": null
        }),
        Api::Chat => serde_json::json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "fake",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]
        }),
    };
    format!("data: {v}\n\n")
}

fn usage_event(prompt: u64, completion: u64) -> String {
    let v = serde_json::json!({
        "id": "cmpl-fake", "object": "text_completion", "model": "fake", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    });
    format!("data: {v}\n\n")
}

async fn handle(s: Arc<Shared>, headers: HeaderMap, body: String, api: Api) -> Response {
    let c = &s.counters;
    c.requests.fetch_add(1, Ordering::SeqCst);
    let guard = InFlight::new(&s);
    if let Some(token) = &s.config.require_bearer {
        let want = format!("Bearer {token}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            c.status_401.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::UNAUTHORIZED, "{\"error\": \"bad api key\"}").into_response();
        }
    }
    let v: serde_json::Value = serde_json::from_str(&body).expect("client sends JSON");
    *s.last_body.lock().unwrap() = Some(v.clone());
    let (prompt, prompt_tokens) = match api {
        Api::Completions => match &v["prompt"] {
            serde_json::Value::String(p) => (p.clone(), p.split_whitespace().count() as u64),
            serde_json::Value::Array(ids) => (String::new(), ids.len() as u64),
            other => panic!("unexpected prompt {other}"),
        },
        Api::Chat => {
            let p = v["messages"][0]["content"].as_str().unwrap().to_owned();
            let n = p.split_whitespace().count() as u64;
            (p, n)
        }
    };
    let max_tokens = match api {
        Api::Completions => v["max_tokens"].as_u64().unwrap(),
        Api::Chat => v["max_completion_tokens"].as_u64().unwrap(),
    };
    if prompt.contains("FAIL500") {
        c.status_500.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "{\"error\": \"injected failure\"}",
        )
            .into_response();
    }
    if s.config.null {
        let mut text = token_event(api, " tok", Some("length"));
        text.push_str(&usage_event(prompt_tokens, 1));
        text.push_str("data: [DONE]\n\n");
        c.tokens_sent.fetch_add(1, Ordering::SeqCst);
        c.completed_streams.fetch_add(1, Ordering::SeqCst);
        c.completion_tokens_completed.fetch_add(1, Ordering::SeqCst);
        c.prompt_tokens_completed
            .fetch_add(prompt_tokens, Ordering::SeqCst);
        drop(guard);
        return event_stream(Body::from(text));
    }
    let mode = if prompt.contains("DROP") {
        Mode::Drop
    } else if prompt.contains("BADJSON") {
        Mode::BadJson
    } else {
        Mode::Normal
    };
    let state = Gen {
        shared: s.clone(),
        api,
        mode,
        sent: 0,
        max_tokens,
        prompt_tokens,
        phase: Phase::Tokens,
        _guard: guard,
    };
    let stream = futures::stream::unfold(state, |mut g| async move {
        let item = g.next().await?;
        Some((item, g))
    });
    event_stream(Body::from_stream(stream))
}

fn event_stream(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    Drop,
    BadJson,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Tokens,
    Usage,
    Done,
    End,
}

struct Gen {
    shared: Arc<Shared>,
    api: Api,
    mode: Mode,
    sent: u64,
    max_tokens: u64,
    prompt_tokens: u64,
    phase: Phase,
    _guard: InFlight,
}

impl Gen {
    async fn next(&mut self) -> Option<Result<String, std::io::Error>> {
        let c = &self.shared.counters;
        match self.phase {
            Phase::Tokens => {
                if self.mode == Mode::Drop && self.sent == 2 {
                    // Let the two tokens leave before the connection is broken.
                    tokio::time::sleep(
                        self.shared
                            .config
                            .per_token_delay
                            .max(Duration::from_millis(20)),
                    )
                    .await;
                    c.dropped.fetch_add(1, Ordering::SeqCst);
                    self.phase = Phase::End;
                    return Some(Err(std::io::Error::other("injected connection drop")));
                }
                if self.mode == Mode::BadJson && self.sent == 1 {
                    c.bad_json.fetch_add(1, Ordering::SeqCst);
                    self.phase = Phase::End;
                    return Some(Ok("data: {\"choices\": [{\"text\": oops}\n\n".into()));
                }
                let delay = if self.sent == 0 {
                    self.shared.config.first_token_delay
                } else {
                    self.shared.config.per_token_delay
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                self.sent += 1;
                c.tokens_sent.fetch_add(1, Ordering::SeqCst);
                let last = self.sent == self.max_tokens;
                if last {
                    self.phase = Phase::Usage;
                }
                Some(Ok(token_event(self.api, " tok", last.then_some("length"))))
            }
            Phase::Usage => {
                self.phase = Phase::Done;
                Some(Ok(usage_event(self.prompt_tokens, self.sent)))
            }
            Phase::Done => {
                self.phase = Phase::End;
                c.completed_streams.fetch_add(1, Ordering::SeqCst);
                c.completion_tokens_completed
                    .fetch_add(self.sent, Ordering::SeqCst);
                c.prompt_tokens_completed
                    .fetch_add(self.prompt_tokens, Ordering::SeqCst);
                Some(Ok("data: [DONE]\n\n".into()))
            }
            Phase::End => None,
        }
    }
}
