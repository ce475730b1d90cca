//! # tokbench-loadgen: online-serving benchmarks against an OpenAI-compatible endpoint
//!
//! tokbench's offline benchmarks (the worker running a model itself) answer "how fast is this model
//! on this GPU"; a served model answers a different question: "what latency do users see at a given
//! load". This crate is the load generator for the second question (issue 23). It is modelled on
//! `vllm bench serve` (vLLM's `benchmarks/serve.py`), NVIDIA AIPerf and GuideLLM, and uses their
//! names (`ttft_ms`, `tpot_ms`, `itl_ms`, `e2el_ms`, `request_throughput`, `goodput`,
//! `burstiness`, `max_concurrency`) so that numbers can be compared with theirs.
//!
//! The pipeline, one module each:
//!
//! 1. [`dataset`]: what to ask: a list of [`Request`]s (prompt, input length, requested output
//!    length) from synthetic lengths, a ShareGPT JSON file or a JSONL file, reproducible by seed.
//! 2. [`schedule`]: when to ask: a [`Schedule`] of send offsets (Poisson/gamma arrivals at a rate,
//!    everything at once, a fixed interval, or a replayed trace), warm-up requests, an optional
//!    concurrency cap.
//! 3. [`client`]: how to ask: a pooled, streaming [`Client`] for `/v1/completions` or
//!    `/v1/chat/completions` that timestamps every server-sent event.
//! 4. [`runner`]: [`run`] sends each request at its scheduled time (a dedicated dispatcher thread,
//!    because tokio's timer only has millisecond resolution), respects the cap, and returns one
//!    [`RequestRecord`] per request sent, including how late the generator itself was.
//! 5. [`metrics`]: [`compute_metrics`] turns records into [`BenchmarkMetrics`] (vLLM's names and
//!    definitions, plus goodput under SLOs and the generator's own arrival-time error).
//!
//! Everything here is a library: no CLI, no GPU, no model. It is tested against fake servers on
//! 127.0.0.1 (`loadgen/tests/`).
//!
//! ## How it is wired (`worker/src/serve/serve_job.rs`)
//!
//! `tokbench sweep --mode serve --endpoint http://host:8000 --request-rate 1,4,16,inf ...` submits
//! one job per load point; the worker that leases such a job does not load a model but drives the
//! endpoint with this crate:
//!
//! ```no_run
//! # async fn demo() -> Result<(), tokbench_loadgen::LoadgenError> {
//! use tokbench_loadgen::*;
//! let requests = synthetic_requests(&SyntheticConfig::default(), None)?;
//! let schedule = Schedule::from_shape(requests.len(), &LoadShape::Poisson { rate: 8.0, burstiness: 1.0 }, 42)?
//!     .with_warmup(4);
//! let client = Client::new(ClientConfig::new("http://127.0.0.1:8000", "my-model"))?;
//! let out = run(&client, &requests, &schedule, &RunOptions::default(), CancellationToken::new()).await?;
//! let metrics = compute_metrics(&out, &MetricsOptions::default());
//! println!("{}", serde_json::to_string_pretty(&metrics).unwrap());
//! # Ok(()) }
//! ```
//!
//! and reports `BenchmarkMetrics` (it is `Serialize`/`Deserialize`) as the run's result, so the
//! coordinator stores it next to offline runs and the report can plot latency against load.

pub mod client;
pub mod dataset;
pub mod error;
pub mod metrics;
pub mod runner;
pub mod schedule;

pub use client::{ApiKind, Client, ClientConfig, ErrorKind, RequestRecord, SseParser};
pub use dataset::{
    jsonl_requests, sharegpt_requests, synthetic_requests, LengthDist, Prompt, Request,
    ShareGptConfig, ShareGptFilter, SyntheticConfig, Tokenize, word_count, WORDS as SYNTHETIC_PROMPT_WORDS,
};
pub use error::LoadgenError;
pub use metrics::{
    compute_metrics, steady_state_warning, parse_goodput, BenchmarkMetrics, GoodputSlos, MetricsOptions, RequestFailure,
    RequestMetrics, Stats, TokenCountSource,
};
pub use runner::{run, run_with_progress, RunOptions, RunOutput};
pub use schedule::{LoadShape, Schedule, ScheduledSend, Trace, TraceEntry};
pub use tokio_util::sync::CancellationToken;
