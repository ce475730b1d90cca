//! Online-serving jobs (issue 23): a [`ServeSpec`] says which OpenAI-compatible endpoint a worker
//! drives, with what load and what requests; [`ServeReport`] is what such a job measured. The load
//! generator itself is `tokbench-loadgen`; its types (`LengthDist`, `GoodputSlos`,
//! `BenchmarkMetrics`) are used here as they are, so the job, the report and the generator speak
//! the same names (vLLM's). A serve job loads no model: the worker only sends requests.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

pub use tokbench_loadgen::{parse_goodput, ApiKind, BenchmarkMetrics, GoodputSlos, LengthDist, Stats};

use crate::workload_error::{refuse, WorkloadError};

/// Most requests one serve job sends (warm-up excluded).
pub const MAX_SERVE_PROMPTS: usize = 100_000;
/// Most warm-up requests of a serve job.
pub const MAX_SERVE_WARMUP: usize = 1_000;
/// Longest synthetic input or output a serve job asks for, tokens.
pub const MAX_SERVE_LEN: usize = 1 << 20;
/// Longest endpoint URL.
pub const MAX_ENDPOINT_CHARS: usize = 2_000;

/// Offline (the worker runs the model itself) or serve (the worker drives an endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JobMode {
    #[default]
    Offline,
    Serve,
}

impl FromStr for JobMode {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "offline" => Ok(JobMode::Offline),
            "serve" => Ok(JobMode::Serve),
            other => refuse(format!("bad mode \"{other}\": use offline (the worker runs the model) or serve (the worker drives an OpenAI-compatible endpoint)")),
        }
    }
}

impl fmt::Display for JobMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobMode::Offline => "offline",
            JobMode::Serve => "serve",
        })
    }
}

/// Parses `completions` or `chat` (also `chat_completions`).
pub fn parse_api(s: &str) -> Result<ApiKind, WorkloadError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "completions" => Ok(ApiKind::Completions),
        "chat" | "chat_completions" | "chat-completions" => Ok(ApiKind::ChatCompletions),
        other => refuse(format!("bad API \"{other}\": use completions (/v1/completions) or chat (/v1/chat/completions)")),
    }
}

/// A request rate in requests per second; infinity = every request at t = 0. JSON cannot hold
/// infinity, so it is written as the string `"inf"` (a number otherwise).
pub mod rate_serde {
    use super::*;

    pub fn serialize<S: Serializer>(rate: &f64, s: S) -> Result<S::Ok, S::Error> {
        if rate.is_infinite() && *rate > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_f64(*rate)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Rate {
            N(f64),
            S(String),
        }
        match Rate::deserialize(d)? {
            Rate::N(n) => Ok(n),
            Rate::S(s) => parse_rate(&s).map_err(serde::de::Error::custom),
        }
    }

    /// The same for a list of rates.
    pub mod vec {
        use super::*;

        pub fn serialize<S: Serializer>(rates: &[f64], s: S) -> Result<S::Ok, S::Error> {
            #[derive(Serialize)]
            struct R(#[serde(with = "super")] f64);
            s.collect_seq(rates.iter().map(|&r| R(r)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
            #[derive(Deserialize)]
            struct R(#[serde(with = "super")] f64);
            Ok(Vec::<R>::deserialize(d)?.into_iter().map(|r| r.0).collect())
        }
    }
}

/// Parses a request rate: a positive number of requests per second, or `inf`.
pub fn parse_rate(s: &str) -> Result<f64, WorkloadError> {
    let t = s.trim().to_ascii_lowercase();
    let v = match t.as_str() {
        "inf" | "infinity" | "max" => f64::INFINITY,
        _ => t.parse::<f64>().map_err(|_| WorkloadError(format!("bad request rate \"{s}\": give requests per second (e.g. 4 or 0.5) or inf (every request at once)")))?,
    };
    validate_rate(v)?;
    Ok(v)
}

fn validate_rate(v: f64) -> Result<(), WorkloadError> {
    if v.is_nan() || v <= 0.0 {
        return refuse(format!("request rate {v} is invalid: use a number of requests per second > 0, or inf (every request at once)"));
    }
    Ok(())
}

/// Writes a rate as the CLI takes it: `inf`, or the number.
pub fn rate_label(rate: f64) -> String {
    if rate.is_infinite() {
        "inf".into()
    } else {
        format!("{rate}")
    }
}

/// What requests a serve job sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServeDataset {
    /// Prompts of words that are one token each in common vocabularies, lengths drawn from the
    /// distributions (vLLM's `random` dataset).
    Synthetic { input: LengthDist, output: LengthDist },
    /// A ShareGPT JSON file **on the worker** (e.g. ShareGPT_V3_unfiltered_cleaned_split.json);
    /// `output_len` overrides the reference answers' lengths.
    #[serde(rename = "sharegpt")]
    ShareGpt { path: String, output_len: Option<usize> },
    /// A JSONL file **on the worker**, one `{"prompt": ..., "output_len": n}` per line;
    /// `output_len` is the default for lines without one.
    Jsonl { path: String, output_len: Option<usize> },
}

impl Default for ServeDataset {
    fn default() -> Self {
        ServeDataset::Synthetic { input: LengthDist::Fixed { n: 128 }, output: LengthDist::Fixed { n: 128 } }
    }
}

impl ServeDataset {
    /// Parses the CLI's `synthetic`, `sharegpt:PATH` or `jsonl:PATH` (lengths are set separately).
    pub fn parse(s: &str) -> Result<ServeDataset, WorkloadError> {
        let s = s.trim();
        if s == "synthetic" || s == "random" {
            return Ok(ServeDataset::default());
        }
        if let Some(p) = s.strip_prefix("sharegpt:") {
            return Ok(ServeDataset::ShareGpt { path: p.to_string(), output_len: None });
        }
        if let Some(p) = s.strip_prefix("jsonl:") {
            return Ok(ServeDataset::Jsonl { path: p.to_string(), output_len: None });
        }
        refuse(format!("bad dataset \"{s}\": use synthetic, sharegpt:PATH or jsonl:PATH (PATH is read on the worker)"))
    }

    pub fn label(&self) -> String {
        match self {
            ServeDataset::Synthetic { input, output } => format!("synthetic in {} out {}", dist_label(input), dist_label(output)),
            ServeDataset::ShareGpt { path, .. } => format!("sharegpt:{path}"),
            ServeDataset::Jsonl { path, .. } => format!("jsonl:{path}"),
        }
    }
}

/// `128`, `64-256` or `N(128,16)`.
pub fn dist_label(d: &LengthDist) -> String {
    match *d {
        LengthDist::Fixed { n } => n.to_string(),
        LengthDist::Uniform { lo, hi } => format!("{lo}-{hi}"),
        LengthDist::Normal { mean, std } => format!("N({mean},{std})"),
    }
}

/// Parses a length distribution: `N` (fixed), `LO-HI` or `LO:HI` (uniform, inclusive) or
/// `normal:MEAN:STD`.
pub fn parse_length(s: &str) -> Result<LengthDist, WorkloadError> {
    let t = s.trim();
    let bad = || WorkloadError(format!("bad length \"{s}\": use N (fixed, e.g. 128), LO-HI (uniform, e.g. 64-256) or normal:MEAN:STD (e.g. normal:128:16)"));
    if let Some(rest) = t.strip_prefix("normal:") {
        let (m, sd) = rest.split_once(':').ok_or_else(bad)?;
        return Ok(LengthDist::Normal { mean: m.trim().parse().map_err(|_| bad())?, std: sd.trim().parse().map_err(|_| bad())? });
    }
    if let Some((lo, hi)) = t.split_once('-').or_else(|| t.split_once(':')) {
        return Ok(LengthDist::Uniform { lo: lo.trim().parse().map_err(|_| bad())?, hi: hi.trim().parse().map_err(|_| bad())? });
    }
    Ok(LengthDist::Fixed { n: t.parse().map_err(|_| bad())? })
}

fn validate_length(what: &str, d: &LengthDist) -> Result<(), WorkloadError> {
    let ok = match *d {
        LengthDist::Fixed { n } => (1..=MAX_SERVE_LEN).contains(&n),
        LengthDist::Uniform { lo, hi } => lo >= 1 && lo <= hi && hi <= MAX_SERVE_LEN,
        LengthDist::Normal { mean, std } => mean.is_finite() && std.is_finite() && std >= 0.0 && mean >= 1.0 && mean <= MAX_SERVE_LEN as f64,
    };
    if ok {
        Ok(())
    } else {
        refuse(format!(
            "{what} length {} is invalid: lengths are 1..={MAX_SERVE_LEN} tokens (a uniform range needs 1 ≤ LO ≤ HI, a normal one a mean ≥ 1 and std ≥ 0)",
            dist_label(d)
        ))
    }
}

fn default_burstiness() -> f64 {
    1.0
}
fn default_num_prompts() -> usize {
    100
}
fn default_warmup() -> usize {
    1
}
fn default_request_timeout() -> f64 {
    3600.0
}

/// One serve job: which endpoint, which requests, at what load. Every field but `endpoint` has a
/// default, so a stored job of an older version still parses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeSpec {
    /// Root URL of an OpenAI-compatible server (`http://host:8000`; a trailing `/v1` is accepted).
    /// None: the worker that takes the job serves the job's model with tokbench's own engine
    /// (`tokbench-worker serve-openai`'s server, in process, on 127.0.0.1) and drives that.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub api: ApiKind,
    /// The `model` field of every request; None: the job's model name.
    #[serde(default)]
    pub served_model: Option<String>,
    /// Requests per second (Poisson/gamma arrivals); infinity: all at once.
    #[serde(with = "rate_serde", default = "inf")]
    pub request_rate: f64,
    /// Gamma shape of the inter-arrival times: 1 = Poisson, < 1 burstier, > 1 more regular.
    #[serde(default = "default_burstiness")]
    pub burstiness: f64,
    /// At most this many requests in flight (None: unlimited).
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    #[serde(default)]
    pub dataset: ServeDataset,
    /// Measured requests (warm-up requests come on top).
    #[serde(default = "default_num_prompts")]
    pub num_prompts: usize,
    /// Requests sent first and left out of every metric (they warm the connection pool and the
    /// server).
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    /// Seed of the dataset sample and the arrival times.
    #[serde(default)]
    pub seed: u64,
    /// SLOs for goodput (vLLM's `--goodput`).
    #[serde(default)]
    pub goodput: Option<GoodputSlos>,
    /// Limit on one request, seconds (a request past it fails with `timeout`).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: f64,
    /// Name of an environment variable **on the worker** holding the API key (sent as
    /// `Authorization: Bearer`). The key itself never travels with the job nor is stored.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A trace file **on the worker** replayed as the load: each line's arrival time, input
    /// length and output length (JSONL or CSV, see `tokbench_loadgen::Trace`). It replaces the
    /// request rate, burstiness, dataset and request count; its first `warmup` entries are the
    /// warm-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// tokbench's own server's engine settings (no `endpoint`); an endpoint's server has its own.
    #[serde(default)]
    pub server: ServerEngineOptions,
}

/// The engine settings of tokbench's own server in a serve job without an endpoint: the
/// `tokbench-worker serve-openai` flags of the same names, with the same defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerEngineOptions {
    /// Sequences running at once (more wait in the queue).
    pub max_num_seqs: usize,
    /// Tokens per KV cache block.
    pub block_size: usize,
    /// Prompt tokens prefilled per engine iteration at most (padding of a batched pass counted).
    pub max_num_batched_tokens: usize,
    /// Fraction of the GPU's free memory after the weights that the KV cache takes.
    pub gpu_memory_utilization: f64,
    /// Decode attention reads the paged KV blocks in place (CUDA, rotary families).
    pub paged_attention: bool,
    /// The paged decode step replayed as CUDA graphs per batch-size bucket.
    pub cuda_graphs: bool,
    /// Whole prompts admitted together share one left-padded prefill pass.
    pub batched_prefill: bool,
}

impl Default for ServerEngineOptions {
    fn default() -> Self {
        ServerEngineOptions { max_num_seqs: 256, block_size: 16, max_num_batched_tokens: 2048, gpu_memory_utilization: 0.9, paged_attention: true, cuda_graphs: true, batched_prefill: true }
    }
}

impl ServerEngineOptions {
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if !(1..=4096).contains(&self.max_num_seqs) {
            return refuse(format!("max-num-seqs {} is invalid: use 1..=4096", self.max_num_seqs));
        }
        if !(1..=1024).contains(&self.block_size) {
            return refuse(format!("block-size {} is invalid: use 1..=1024 tokens per KV block (16 is usual)", self.block_size));
        }
        if !(1..=1 << 20).contains(&self.max_num_batched_tokens) {
            return refuse(format!("max-num-batched-tokens {} is invalid: use 1..=1048576", self.max_num_batched_tokens));
        }
        if !(self.gpu_memory_utilization > 0.0 && self.gpu_memory_utilization <= 1.0) {
            return refuse(format!("gpu-memory-utilization {} is invalid: use a fraction in (0, 1], e.g. 0.9", self.gpu_memory_utilization));
        }
        Ok(())
    }
}

impl ServeSpec {
    /// The job's load in a few words, as listings show it: "4 req/s", "inf req/s, ≤ 8 in flight",
    /// or "trace t.csv" for a replayed trace (whose rate is the trace's own, not `request_rate`).
    pub fn load_label(&self) -> String {
        let mut label = match &self.trace {
            Some(path) => {
                let name = std::path::Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.clone());
                format!("trace {name}")
            }
            None => format!("{} req/s", rate_label(self.request_rate)),
        };
        if let Some(n) = self.max_concurrency {
            label.push_str(&format!(", ≤ {n} in flight"));
        }
        label
    }
}

fn inf() -> f64 {
    f64::INFINITY
}

impl Default for ServeSpec {
    fn default() -> Self {
        ServeSpec {
            endpoint: None,
            api: ApiKind::Completions,
            served_model: None,
            request_rate: f64::INFINITY,
            burstiness: default_burstiness(),
            max_concurrency: None,
            dataset: ServeDataset::default(),
            num_prompts: default_num_prompts(),
            warmup: default_warmup(),
            seed: 0,
            goodput: None,
            request_timeout_s: default_request_timeout(),
            api_key_env: None,
            trace: None,
            server: ServerEngineOptions::default(),
        }
    }
}

impl ServeSpec {
    pub fn validate(&self) -> Result<(), WorkloadError> {
        // No endpoint: the worker serves the job's model with its own engine, in process.
        let e = self.endpoint.as_deref().map(str::trim).unwrap_or("http://in-process");
        let endpoint = e;
        if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() <= "https://".len() - 1 {
            return refuse(format!("endpoint \"{endpoint}\" is not an http:// or https:// URL: give the server's root, e.g. http://127.0.0.1:8000"));
        }
        if e.chars().count() > MAX_ENDPOINT_CHARS || e.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return refuse(format!("endpoint \"{}\" holds spaces or control characters or is over {MAX_ENDPOINT_CHARS} characters: give a plain URL", e.chars().take(60).collect::<String>()));
        }
        if let Some(m) = &self.served_model {
            if m.trim().is_empty() || m.chars().count() > 200 || m.chars().any(|c| c.is_control()) {
                return refuse(format!("served model name {m:?} is invalid: give the name the server serves (1..=200 characters, no control characters)"));
            }
        }
        validate_rate(self.request_rate)?;
        if self.endpoint.is_none() {
            self.server.validate()?;
        }
        if !(self.burstiness.is_finite() && self.burstiness > 0.0) {
            return refuse(format!("burstiness {} is invalid: use a number > 0 (1 = Poisson arrivals, < 1 burstier, > 1 more regular)", self.burstiness));
        }
        if self.max_concurrency == Some(0) {
            return refuse("max concurrency 0 is invalid: use 1 or more, or leave it out for no limit".into());
        }
        if !(1..=MAX_SERVE_PROMPTS).contains(&self.num_prompts) {
            return refuse(format!("{} serve requests asked for: use --num-prompts 1..={MAX_SERVE_PROMPTS}", self.num_prompts));
        }
        if self.warmup > MAX_SERVE_WARMUP {
            return refuse(format!("{} warm-up requests asked for: use --warmup 0..={MAX_SERVE_WARMUP}", self.warmup));
        }
        match &self.dataset {
            ServeDataset::Synthetic { input, output } => {
                validate_length("input", input)?;
                validate_length("output", output)?;
            }
            ServeDataset::ShareGpt { path, output_len } | ServeDataset::Jsonl { path, output_len } => {
                if path.trim().is_empty() || path.chars().any(|c| c.is_control()) {
                    return refuse(format!("dataset path {path:?} is invalid: write sharegpt:PATH or jsonl:PATH with a path on the worker"));
                }
                if let Some(n) = output_len {
                    validate_length("output", &LengthDist::Fixed { n: *n })?;
                }
            }
        }
        if let Some(slos) = &self.goodput {
            for (k, v) in [("ttft", slos.ttft_ms), ("tpot", slos.tpot_ms), ("e2el", slos.e2el_ms)] {
                if let Some(v) = v {
                    if !(v.is_finite() && v >= 0.0) {
                        return refuse(format!("goodput SLO {k}:{v} is invalid: give milliseconds ≥ 0, e.g. --goodput \"ttft:200 tpot:20\""));
                    }
                }
            }
        }
        if let Some(path) = &self.trace {
            if path.trim().is_empty() || path.chars().count() > 4096 || path.chars().any(|c| c.is_control()) {
                return refuse(format!("trace path {path:?} is invalid: give the path of a trace file on the worker (JSONL or CSV lines of arrival time, input length, output length)"));
            }
        }
        if !(self.request_timeout_s.is_finite() && self.request_timeout_s > 0.0) {
            return refuse(format!("request timeout {} s is invalid: use a number of seconds > 0", self.request_timeout_s));
        }
        if let Some(name) = &self.api_key_env {
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return refuse(format!("API key variable {name:?} is not an environment variable name: give the NAME of a variable set on the worker (e.g. OPENAI_API_KEY), never the key itself"));
            }
        }
        Ok(())
    }

    /// The model name sent in requests.
    pub fn served_model_or<'a>(&'a self, job_model: &'a str) -> &'a str {
        self.served_model.as_deref().unwrap_or(job_model)
    }
}

/// One request of a serve run, as it happened. Times are seconds after the run's zero
/// ([`ServeReport::started_at`]), one monotonic clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestTimeline {
    pub index: usize,
    pub id: String,
    pub warmup: bool,
    /// When the schedule said to send it.
    pub scheduled_s: f64,
    /// When it got a concurrency slot (the wait before is the queue wait under --max-concurrency).
    pub slot_s: f64,
    /// When it was handed to the connection pool.
    pub sent_s: f64,
    /// Arrival of the first generated text (None: none came).
    pub first_token_s: Option<f64>,
    /// Arrival of the last generated text (None: none came).
    pub last_token_s: Option<f64>,
    /// End of the response (stream end, error or cancellation).
    pub end_s: f64,
    /// Input tokens by the dataset's count.
    pub input_len: usize,
    /// Output tokens asked for (`max_tokens`).
    pub output_len: usize,
    /// The server's `usage.prompt_tokens` / `usage.completion_tokens`.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Text-carrying stream events received.
    pub chunks: usize,
    pub http_status: Option<u16>,
    /// Failure kind (loadgen's `ErrorKind`, snake_case) and message; None when it completed.
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

/// What a serve job measured (the report's `serve` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeReport {
    /// The job's serve settings.
    pub spec: ServeSpec,
    pub endpoint: String,
    /// The model name sent in requests.
    pub served_model: String,
    /// The rate asked for, req/s (`"inf"`: all at once).
    #[serde(with = "rate_serde")]
    pub request_rate: f64,
    /// Measured requests sent / the span from the first measured send to the last (req/s); None
    /// with fewer than two sends or all sent at once.
    pub achieved_request_rate: Option<f64>,
    /// vLLM's serving metrics (warm-up excluded).
    pub metrics: BenchmarkMetrics,
    /// RFC 3339 UTC time of the run's zero.
    pub started_at: String,
    /// Run zero to the end of the last request, seconds.
    pub elapsed_s: f64,
    /// The run was stopped (cancelled or timed out) before every request was sent.
    pub cancelled: bool,
    /// Every request sent (warm-up included), in schedule order.
    pub requests: Vec<RequestTimeline>,
    /// The tokenizer that sized the synthetic prompts and checked the server's output token
    /// counts (`metrics.token_count_mismatches`), or why there was none on the worker.
    #[serde(default)]
    pub tokenizer: String,
    /// tokbench's own server: its engine flags and KV pool (`--max-num-seqs 256 ...; KV cache:
    /// N blocks ...`); None for an endpoint (`--endpoint`) and for runs stored before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_engine: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServeSpec {
        ServeSpec { endpoint: Some("http://127.0.0.1:8000".into()), ..ServeSpec::default() }
    }

    #[test]
    fn rates_round_trip_through_json_including_inf() {
        let s = ServeSpec { request_rate: f64::INFINITY, ..spec() };
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"request_rate\":\"inf\""), "{j}");
        assert_eq!(serde_json::from_str::<ServeSpec>(&j).unwrap(), s);
        let s = ServeSpec { request_rate: 2.5, ..spec() };
        assert_eq!(serde_json::from_str::<ServeSpec>(&serde_json::to_string(&s).unwrap()).unwrap(), s);
        assert_eq!(parse_rate("inf").unwrap(), f64::INFINITY);
        assert!(parse_rate("0").unwrap_err().to_string().contains("> 0"));
        assert!(parse_rate("fast").unwrap_err().to_string().contains("requests per second"));
    }

    #[test]
    fn validation_names_the_fix() {
        let cases: Vec<(ServeSpec, &str)> = vec![
            (ServeSpec { endpoint: Some("localhost:8000".into()), ..spec() }, "not an http:// or https:// URL"),
            (ServeSpec { burstiness: 0.0, ..spec() }, "burstiness"),
            (ServeSpec { max_concurrency: Some(0), ..spec() }, "max concurrency 0"),
            (ServeSpec { num_prompts: 0, ..spec() }, "--num-prompts"),
            (ServeSpec { dataset: ServeDataset::Synthetic { input: LengthDist::Uniform { lo: 9, hi: 3 }, output: LengthDist::Fixed { n: 1 } }, ..spec() }, "input length 9-3"),
            (ServeSpec { api_key_env: Some("sk-123 secret".into()), ..spec() }, "never the key itself"),
            (ServeSpec { request_timeout_s: 0.0, ..spec() }, "request timeout"),
            (ServeSpec { endpoint: None, server: ServerEngineOptions { block_size: 0, ..Default::default() }, ..spec() }, "block-size 0"),
            (ServeSpec { endpoint: None, server: ServerEngineOptions { gpu_memory_utilization: 1.5, ..Default::default() }, ..spec() }, "gpu-memory-utilization 1.5"),
        ];
        for (s, needle) in cases {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "expected {needle:?} in {e:?}");
        }
        assert!(spec().validate().is_ok());
        // No endpoint: the worker's own engine.
        assert!(ServeSpec { endpoint: None, ..spec() }.validate().is_ok());
        // A spec stored before the server settings existed reads with their defaults.
        let mut old = serde_json::to_value(ServeSpec { endpoint: None, ..spec() }).unwrap();
        old.as_object_mut().unwrap().remove("server");
        let read: ServeSpec = serde_json::from_value(old).unwrap();
        assert_eq!(read.server, ServerEngineOptions::default());
    }

    #[test]
    fn lengths_and_datasets_parse() {
        assert_eq!(parse_length("128").unwrap(), LengthDist::Fixed { n: 128 });
        assert_eq!(parse_length("64-256").unwrap(), LengthDist::Uniform { lo: 64, hi: 256 });
        assert_eq!(parse_length("normal:100:10").unwrap(), LengthDist::Normal { mean: 100.0, std: 10.0 });
        assert!(parse_length("lots").is_err());
        assert_eq!(ServeDataset::parse("sharegpt:/data/sg.json").unwrap(), ServeDataset::ShareGpt { path: "/data/sg.json".into(), output_len: None });
        assert!(ServeDataset::parse("csv:x").unwrap_err().to_string().contains("synthetic, sharegpt:PATH or jsonl:PATH"));
        assert_eq!(parse_api("chat").unwrap(), ApiKind::ChatCompletions);
    }
}
