//! A serve job (`Workload::serve` set, `tokbench sweep --mode serve`): the worker drives the
//! job's OpenAI-compatible endpoint (or tokbench's own server for the job's model, in this
//! process, or under nsys in a child with `--profile`) with tokbench-loadgen on its own tokio
//! runtime, reports progress as requests finished, and turns the run into a [`BenchReport`]
//! whose `serve` section holds vLLM's metrics and every request's timeline.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokbench_core::serve::{RequestTimeline, ServeDataset, ServeReport, ServeSpec};
use tokbench_core::{BenchReport, Workload};
use tokbench_loadgen as lg;

use crate::bench::Progress;
use crate::resolve::ModelPathPolicy;

/// Why a serve job could not run (request failures are not errors: they are in the report).
#[derive(Debug)]
pub struct ServeJobError {
    pub message: String,
    /// Whether running the job again (on another worker) could help.
    pub retryable: bool,
    pub cancelled: bool,
}

fn fatal(message: String) -> ServeJobError {
    ServeJobError { message, retryable: false, cancelled: false }
}

/// The requests of the job: `num_prompts` measured ones after `warmup` warm-up ones. With the
/// model's `tokenizer`, synthetic prompts have exactly their drawn token count and dataset
/// prompts are measured in its tokens (else in words).
/// `token_id_vocab`: synthetic prompts as token ids below it instead of text, for tokbench's own
/// engine serving a model without a tokenizer (synthetic weights offline), which cannot read text.
pub fn requests(spec: &ServeSpec, tokenizer: Option<&dyn lg::Tokenize>, token_id_vocab: Option<u32>) -> Result<Vec<lg::Request>, ServeJobError> {
    let n = spec.warmup + spec.num_prompts;
    let loaded = match &spec.dataset {
        ServeDataset::Synthetic { input, output } => {
            lg::synthetic_requests(&lg::SyntheticConfig { num_requests: n, input: *input, output: *output, seed: spec.seed, token_id_vocab }, tokenizer)
        }
        ServeDataset::ShareGpt { path, output_len } => {
            lg::sharegpt_requests(Path::new(path), &lg::ShareGptConfig { num_requests: n, seed: spec.seed, output_len: *output_len, ..Default::default() }, tokenizer)
        }
        ServeDataset::Jsonl { path, output_len } => lg::jsonl_requests(Path::new(path), *output_len, tokenizer).map(|mut all| {
            // A JSONL file is the benchmark: its lines in order, cycled when it has fewer.
            let base = all.len();
            let mut i = 0;
            while all.len() < n {
                let mut r = all[i % base].clone();
                r.id = format!("{}-{}", r.id, all.len());
                all.push(r);
                i += 1;
            }
            all.truncate(n);
            all
        }),
    };
    loaded.map_err(|e| {
        let worker_side = matches!(spec.dataset, ServeDataset::ShareGpt { .. } | ServeDataset::Jsonl { .. });
        fatal(if worker_side { format!("dataset (read on the worker): {e}") } else { format!("dataset: {e}") })
    })
}

/// Runs the job against its endpoint. `cancel` is the worker's flag (sweep cancelled, lease lost,
/// worker stopping); `progress` is what the heartbeats send.
/// With `profile` (the nsys configuration and the job id), tokbench's server runs in a child
/// process under nsys for the load level and the profile comes back with the report.
pub async fn run(
    workload: &Workload,
    cancel: &Arc<AtomicBool>,
    progress: &Arc<Mutex<Progress>>,
    policy: &ModelPathPolicy,
    profile: Option<(crate::profile::ProfileConfig, String)>,
) -> Result<(BenchReport, Option<crate::profile::ProfiledRun>), ServeJobError> {
    let spec = workload.serve.as_ref().ok_or_else(|| fatal("not a serve job".into()))?;
    spec.validate().map_err(|e| fatal(format!("invalid workload: {e}")))?;
    if spec.endpoint.is_some() && profile.is_some() {
        return Err(fatal("--profile profiles tokbench's own server: a serve job with an endpoint cannot be profiled by the worker (profile that server on its own host)".into()));
    }
    let (tokenizer, tokenizer_description, vocab_size) = {
        let (w, policy) = (workload.clone(), policy.clone());
        tokio::task::spawn_blocking(move || job_tokenizer(&w, &policy)).await.map_err(|e| fatal(format!("loading the tokenizer panicked: {e}")))?
    };
    // Our own engine without a tokenizer reads only token ids (an endpoint has its own tokenizer):
    // synthetic and trace prompts go as ids; text and chat cannot, so the job stops here rather
    // than fail every request.
    let token_id_vocab = match (&spec.endpoint, &tokenizer) {
        (None, None) => {
            if let Some(what) = needs_text(spec) {
                return Err(fatal(format!(
                    "{} has no tokenizer on this worker (no tokenizer files with its weights), so tokbench's engine cannot read {what}. Fix: use synthetic prompts (--dataset synthetic, the default, or --trace) with --api completions, which go as token ids, or serve a checkpoint with its tokenizer files (a model directory, or --weights real with the model in the Hugging Face cache)",
                    workload.model
                )));
            }
            vocab_size
        }
        _ => None,
    };
    // No endpoint: tokbench's own engine serves the job's model on 127.0.0.1 for the job's
    // length, in this process, or under nsys in a child when profiled.
    let own_server = match &spec.endpoint {
        Some(_) => None,
        None => {
            if let Ok(mut p) = progress.lock() {
                *p = Progress::start("loading");
            }
            Some(match profile {
                None => OwnServer::InProcess(InProcessServer::start(workload, policy).await?),
                Some((cfg, job_id)) => OwnServer::Profiled(start_profiled(workload, policy, cfg, job_id, cancel).await?),
            })
        }
    };
    let endpoint = match (&spec.endpoint, &own_server) {
        (Some(e), _) => e.clone(),
        (None, Some(s)) => s.url().to_string(),
        (None, None) => unreachable!("started above"),
    };
    let served_model = spec.served_model_or(&workload.model).to_string();
    let api_key = match &spec.api_key_env {
        None => None,
        Some(var) => match std::env::var(var) {
            Ok(k) if !k.is_empty() => Some(k),
            _ => {
                return Err(ServeJobError {
                    message: format!("the job takes its API key from the environment variable {var}, which is not set on this worker: set it where the worker runs, or submit without --api-key-env"),
                    // Another worker may have it.
                    retryable: true,
                    cancelled: false,
                })
            }
        },
    };
    let tokenize = tokenizer.as_ref().map(|t| t as &dyn lg::Tokenize);
    // A trace gives the arrivals and the lengths; otherwise the dataset and the Poisson rate.
    let (requests, schedule, offered_rate) = match &spec.trace {
        Some(path) => {
            let trace = lg::Trace::load(Path::new(path)).map_err(|e| fatal(format!("trace (read on the worker): {e}")))?;
            if spec.warmup >= trace.entries.len() {
                return Err(fatal(format!("the trace {path} has {} lines and --warmup is {}: nothing would be measured; lower --warmup", trace.entries.len(), spec.warmup)));
            }
            let span = trace.entries.last().map_or(0.0, |e| e.at_s);
            // The rate the trace offers: its arrivals over their span (inf: all at t = 0).
            let rate = if span > 0.0 { (trace.entries.len() - 1) as f64 / span } else { f64::INFINITY };
            (trace.requests(spec.seed, tokenize, token_id_vocab), trace.schedule(), rate)
        }
        None => {
            let requests = requests(spec, tokenize, token_id_vocab)?;
            let schedule = lg::Schedule::from_shape(requests.len(), &lg::LoadShape::Poisson { rate: spec.request_rate, burstiness: spec.burstiness }, spec.seed).map_err(|e| fatal(e.to_string()))?;
            (requests, schedule, spec.request_rate)
        }
    };
    let schedule = schedule.with_warmup(spec.warmup).with_max_concurrency(spec.max_concurrency);
    let mut config = lg::ClientConfig::new(endpoint.clone(), served_model.clone());
    config.api = spec.api;
    config.api_key = api_key;
    config.ignore_eos = workload.ignore_eos;
    config.request_timeout = Duration::from_secs_f64(spec.request_timeout_s);
    let client = lg::Client::new(config).map_err(|e| fatal(e.to_string()))?;

    let total = requests.len() as u64;
    let finished = Arc::new(AtomicUsize::new(0));
    let token = lg::CancellationToken::new();
    if let Ok(mut p) = progress.lock() {
        *p = Progress { phase: "serving", tokens_done: 0, tokens_total: total, ..Progress::start("serving") };
    }
    // The worker's flag and the runner's token; progress = requests finished.
    let bridge = {
        let (cancel, token, finished, progress) = (cancel.clone(), token.clone(), finished.clone(), progress.clone());
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if cancel.load(Ordering::Relaxed) {
                    token.cancel();
                }
                let done = finished.load(Ordering::Relaxed) as u64;
                if let Ok(mut p) = progress.lock() {
                    p.tokens_done = done;
                    p.tokens_total = total;
                    // Requests per second so far.
                    p.tokens_per_second = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                }
            }
        })
    };
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tracing::info!(%endpoint, model = %served_model, rate = %tokbench_core::serve::rate_label(spec.request_rate), requests = total, "serve job starting");
    let out = lg::run_with_progress(&client, &requests, &schedule, &lg::RunOptions::default(), token.clone(), Some(finished.clone())).await;
    bridge.abort();
    let (endpoint, server_engine, profiled_server) = match own_server {
        Some(OwnServer::InProcess(server)) => {
            let what = format!("tokbench engine in the worker ({} on {}, weights {}) at {}", workload.model, workload.device, server.weights, server.url);
            let engine = server.engine.clone();
            server.stop().await;
            (what, Some(engine), None)
        }
        Some(OwnServer::Profiled(server)) => {
            let what = format!("tokbench engine under nsys in a child of the worker ({}) at {}", server.banner.iter().find(|l| l.starts_with("serving ")).map(String::as_str).unwrap_or(workload.model.as_str()), server.url);
            let kv = server.banner.iter().find(|l| l.starts_with("KV cache:")).map(String::as_str).unwrap_or("KV cache: not printed");
            let engine = format!("{}; {kv}", job_server(workload).engine_flags().join(" "));
            (what, Some(engine), Some(server))
        }
        None => (endpoint, None, None),
    };
    let out = out.map_err(|e| fatal(e.to_string()))?;
    if cancel.load(Ordering::Relaxed) {
        return Err(ServeJobError { message: "cancelled".into(), retryable: true, cancelled: true });
    }
    if let Ok(mut p) = progress.lock() {
        p.phase = "output_processing";
        p.tokens_done = out.records.len() as u64;
    }
    let metrics = lg::compute_metrics(&out, &lg::MetricsOptions { goodput: spec.goodput, tokenizer: tokenizer.as_ref().map(|t| t as &dyn lg::Tokenize), include_per_request: false });
    for w in &metrics.warnings {
        tracing::warn!(%endpoint, model = %served_model, "{w}");
    }
    let report = ServeReport {
        spec: spec.clone(),
        endpoint,
        served_model,
        request_rate: offered_rate,
        achieved_request_rate: achieved_rate(&out),
        metrics,
        started_at: out.started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        elapsed_s: out.elapsed_s,
        cancelled: out.cancelled,
        requests: out.records.iter().map(timeline).collect(),
        tokenizer: tokenizer_description,
        server_engine,
    };
    let report = BenchReport::for_serve(workload.model.clone(), timestamp, workload.clone(), crate::bench::environment("serve"), report);
    match profiled_server {
        None => Ok((report, None)),
        Some(server) => {
            // The capture ends now (the server stops, nsys writes the report), then nsys stats.
            let cancel = cancel.clone();
            let profiled = tokio::task::spawn_blocking(move || server.finish(report, &cancel))
                .await
                .map_err(|e| fatal(format!("summarising the profile panicked: {e}")))?
                .map_err(|e| ServeJobError { retryable: e.is_retryable(), cancelled: matches!(e, crate::profile::ProfileError::Cancelled), message: e.to_string() })?;
            Ok((profiled.report.clone(), Some(profiled)))
        }
    }
}

/// What of `spec` must be text (so needs the model's tokenizer), if anything: dataset prompts, or
/// chat messages.
fn needs_text(spec: &ServeSpec) -> Option<&'static str> {
    if spec.api == lg::ApiKind::ChatCompletions {
        return Some("chat messages (--api chat)");
    }
    match (&spec.trace, &spec.dataset) {
        (None, ServeDataset::ShareGpt { .. }) => Some("the ShareGPT dataset's text prompts"),
        (None, ServeDataset::Jsonl { .. }) => Some("the JSONL dataset's text prompts"),
        _ => None,
    }
}

/// The job's model's tokenizer as the load generator's token counter: the checkpoint's own
/// (tokenizer.json, or vocab.json + merges.txt) or GPT-2's BPE for the GPT-2/OPT families, as the
/// engine uses it. Counts are without special tokens, as vLLM's benchmark counts.
pub struct JobTokenizer(crate::tokenizer::Tokenizer);

impl lg::Tokenize for JobTokenizer {
    fn count_tokens(&self, text: &str) -> usize {
        // Text the tokenizer cannot encode (ids outside the vocabulary) counts in words.
        self.0.encode_plain(text).map(|ids| ids.len()).unwrap_or_else(|_| lg::word_count(text))
    }
}

/// The tokenizer of the job's model on this worker (the served model's name for an endpoint,
/// when it names a model this worker can find: a catalog name, a repo in the Hugging Face
/// cache, an allowed directory), and what it is, or why there is none. Never downloads.
/// With the model's vocabulary size when the model resolves (token-id prompts where it has no
/// tokenizer).
fn job_tokenizer(workload: &Workload, policy: &ModelPathPolicy) -> (Option<JobTokenizer>, String, Option<u32>) {
    let name = match workload.serve.as_ref().filter(|s| s.endpoint.is_some()) {
        Some(s) => s.served_model_or(&workload.model).to_string(),
        None => workload.model.clone(),
    };
    let resolved = match crate::resolve::resolve_with(&name, workload.weights, workload.weights_seed, policy) {
        Ok(r) => r,
        Err(e) => return (None, format!("none: {name} is not a model this worker can find ({e}); lengths are in words and the server's token counts are unchecked"), None),
    };
    let vocab = u32::try_from(resolved.config.vocab_size()).ok().filter(|&v| v > 0);
    let own_engine = workload.serve.as_ref().is_some_and(|s| s.endpoint.is_none());
    match crate::tokenizer::Tokenizer::load(resolved.model_dir.as_deref(), &resolved.config) {
        Ok(t) if t.has_vocabulary() => {
            let what = t.description().to_string();
            (Some(JobTokenizer(t)), what, vocab)
        }
        Ok(t) if own_engine => (None, format!("none: {} ({}); synthetic prompts are token ids, the server's token counts are unchecked", resolved.model_id, t.description()), vocab),
        Ok(t) => (None, format!("none: {} ({}); lengths are in words and the server's token counts are unchecked", resolved.model_id, t.description()), vocab),
        Err(e) => (None, format!("none: {e}"), vocab),
    }
}

/// The server that answers a serve job without an endpoint.
enum OwnServer {
    InProcess(InProcessServer),
    Profiled(crate::profile::ProfiledServer),
}

impl OwnServer {
    fn url(&self) -> &str {
        match self {
            OwnServer::InProcess(s) => &s.url,
            OwnServer::Profiled(s) => &s.url,
        }
    }
}

/// The `serve-openai` settings of tokbench's server for a serve job: the job's model, weights
/// and dtype on the worker's device, and the job's engine settings (`ServeSpec::server`). In the worker or under nsys, the
/// same (`server_args` passes these flags).
fn job_server(workload: &Workload) -> crate::openai::ServeOpenAiArgs {
    let e = workload.serve.as_ref().map(|s| s.server.clone()).unwrap_or_default();
    crate::openai::ServeOpenAiArgs {
        model: workload.model.clone(),
        listen: "127.0.0.1:0".into(),
        device: workload.device,
        dtype: Some(workload.effective_dtype()),
        weights: workload.weights,
        weights_seed: workload.weights_seed,
        offline: workload.offline,
        served_model_name: workload.serve.as_ref().and_then(|s| s.served_model.clone()),
        max_num_seqs: e.max_num_seqs,
        block_size: e.block_size,
        kv_cache_memory: None,
        gpu_memory_utilization: e.gpu_memory_utilization,
        max_num_batched_tokens: e.max_num_batched_tokens,
        models_dirs: Vec::new(),
        paged_attention: e.paged_attention,
        cuda_graphs: e.cuda_graphs,
        batched_prefill: e.batched_prefill,
    }
}

/// `serve-openai`'s flags for the job's model, weights and dtype on the worker's device, and
/// the worker's `--models-dir`s.
fn server_args(workload: &Workload, policy: &ModelPathPolicy) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut push = |a: String| args.push(a.into());
    push("--model".into());
    push(workload.model.clone());
    push("--device".into());
    push(workload.device.to_string());
    push("--dtype".into());
    push(workload.effective_dtype().to_string());
    push("--weights".into());
    push(workload.weights.to_string());
    push("--weights-seed".into());
    push(workload.weights_seed.to_string());
    if workload.offline {
        push("--offline".into());
    }
    if let Some(name) = workload.serve.as_ref().and_then(|s| s.served_model.clone()) {
        push("--served-model-name".into());
        push(name);
    }
    for dir in policy.allowed_dirs.iter().flatten() {
        push("--models-dir".into());
        push(dir.display().to_string());
    }
    for flag in job_server(workload).engine_flags() {
        push(flag);
    }
    args
}

async fn start_profiled(workload: &Workload, policy: &ModelPathPolicy, cfg: crate::profile::ProfileConfig, job_id: String, cancel: &Arc<AtomicBool>) -> Result<crate::profile::ProfiledServer, ServeJobError> {
    let args = server_args(workload, policy);
    let (w, c) = (workload.clone(), cancel.clone());
    tokio::task::spawn_blocking(move || crate::profile::ProfiledServer::start(&args, &w, &job_id, &cfg, &c))
        .await
        .map_err(|e| fatal(format!("starting the profiled server panicked: {e}")))?
        .map_err(|e| ServeJobError {
            retryable: e.is_retryable(),
            cancelled: matches!(e, crate::profile::ProfileError::Cancelled),
            message: format!("cannot serve the job's model under nsys: {e}"),
        })
}

/// Measured requests sent over the span of their sends (req/s); None when that span is 0.
fn achieved_rate(out: &lg::RunOutput) -> Option<f64> {
    let sends: Vec<f64> = out.records.iter().filter(|r| !r.warmup).map(|r| r.sent_s).collect();
    let (lo, hi) = sends.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    // n sends span n - 1 gaps.
    (sends.len() >= 2 && hi - lo > 1e-6).then(|| (sends.len() - 1) as f64 / (hi - lo))
}

fn timeline(r: &lg::RequestRecord) -> RequestTimeline {
    RequestTimeline {
        index: r.index,
        id: r.id.clone(),
        warmup: r.warmup,
        scheduled_s: r.scheduled_s,
        slot_s: r.slot_s,
        sent_s: r.sent_s,
        first_token_s: r.chunk_times_s.first().copied(),
        last_token_s: r.chunk_times_s.last().copied(),
        end_s: r.end_s,
        input_len: r.input_len,
        output_len: r.output_len,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        chunks: r.chunk_times_s.len(),
        http_status: r.http_status,
        error_kind: r.error_kind.and_then(|k| serde_json::to_value(k).ok()).and_then(|v| v.as_str().map(str::to_owned)),
        error: r.error.clone(),
    }
}

/// tokbench's own OpenAI-compatible server (`tokbench-worker serve-openai`'s) for a serve job
/// without an endpoint: the job's model loaded on the worker's device with the job's weights
/// and dtype, served on 127.0.0.1 (a free port) by a task on this runtime until [`Self::stop`].
struct InProcessServer {
    url: String,
    weights: String,
    /// Its engine flags and KV pool, for the report (`ServeReport::server_engine`).
    engine: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessServer {
    async fn start(workload: &Workload, policy: &ModelPathPolicy) -> Result<InProcessServer, ServeJobError> {
        let args = job_server(workload);
        let engine_flags = args.engine_flags().join(" ");
        let policy = policy.clone();
        // Loading (and a download) blocks: off the runtime's threads.
        let built = tokio::task::spawn_blocking(move || -> Result<(axum::Router, String, String), String> {
            let loaded = crate::openai::load_with(&args, &policy).map_err(|e| e.to_string())?;
            let weights = loaded.weights.clone();
            let (router, capacity) = crate::openai::app(&args, loaded).map_err(|e| e.to_string())?;
            Ok((router, weights, capacity.describe((capacity.max_len / 4).max(1))))
        })
        .await
        .map_err(|e| fatal(format!("loading the model for the in-process server panicked: {e}")))?;
        let (router, weights, kv) = built.map_err(|e| fatal(format!("cannot serve the job's model with tokbench's engine: {e}")))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| fatal(format!("cannot listen on 127.0.0.1 for the in-process server: {e}")))?;
        let addr = listener.local_addr().map_err(|e| fatal(e.to_string()))?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "the in-process server stopped with an error");
            }
        });
        let url = format!("http://{addr}");
        tracing::info!(%url, model = %workload.model, %weights, "serving the job's model with tokbench's engine");
        Ok(InProcessServer { url, weights, engine: format!("{engine_flags}; {kv}"), shutdown, task })
    }

    /// Stops accepting, lets open streams end, and drops the engine (its thread ends with it).
    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}
