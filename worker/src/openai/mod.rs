//! `tokbench-worker serve-openai`: tokbench's engine behind an OpenAI-compatible HTTP API, with
//! continuous batching over a paged KV cache, so the engine can be load-tested the way vLLM is
//! (the same clients, the same request mix, the same metrics).
//!
//! * [`engine`]: the thread that owns the model and runs the iterations (admit, chunked
//!   prefill, one batched decode step, retire);
//! * [`scheduler`]: admission, block growth and preemption policy;
//! * [`kv_blocks`]: the block pool, its allocator, and how block tables feed the model's
//!   attention (gather/scatter);
//! * [`http`]: the axum routes; [`chat_template`]: chat turns to prompt text; [`metrics`].

pub mod chat_template;
pub mod engine;
pub mod http;
pub mod kv_blocks;
pub mod metrics;
pub mod request;
pub mod scheduler;

use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::resolve::{self, ModelPathPolicy, WeightsKind};
use crate::tokenizer::Tokenizer;
use kv_blocks::Capacity;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokbench_core::{DTypeSpec, DeviceSpec, WeightsMode};

const EXAMPLES: &str = "\
Examples:
  # a tiny model with synthetic weights on the CPU, any free port (the address is printed)
  tokbench-worker serve-openai --model tiny-gpt2 --weights synthetic --listen 127.0.0.1:0
  # a real checkpoint on a GPU, 4 GiB of KV cache in 16-token blocks
  tokbench-worker serve-openai --model Qwen/Qwen2.5-0.5B-Instruct --device cuda:0 --kv-cache-memory 4GiB
  curl http://127.0.0.1:8000/v1/completions -H 'content-type: application/json' \\
       -d '{\"model\":\"tiny-gpt2\",\"prompt\":\"Hello\",\"max_tokens\":8,\"stream\":true}'

Endpoints: POST /v1/completions, POST /v1/chat/completions (the checkpoint's chat template),
GET /v1/models, GET /health, GET /metrics (Prometheus).";

/// Serve a model over OpenAI's HTTP API with continuous batching.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXAMPLES)]
pub struct ServeOpenAiArgs {
    /// Catalog name, Hugging Face repo id, or local model directory.
    #[arg(long)]
    pub model: String,
    /// Address to listen on; port 0 picks a free port (the real address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_spec::<DeviceSpec>)]
    pub device: DeviceSpec,
    /// f32, f16 or bf16 [default: f16 on CUDA, f32 on CPU].
    #[arg(long, value_parser = parse_spec::<DTypeSpec>)]
    pub dtype: Option<DTypeSpec>,
    /// auto, real or synthetic (as `bench --weights`).
    #[arg(long, default_value = "auto", value_parser = parse_spec::<WeightsMode>)]
    pub weights: WeightsMode,
    /// Seed of synthetic weights.
    #[arg(long, default_value_t = 0)]
    pub weights_seed: u64,
    /// Never touch the network (weights only from the Hugging Face cache or a local directory).
    #[arg(long)]
    pub offline: bool,
    /// The model name clients send (and /v1/models lists) [default: --model as given].
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Sequences running at once (more wait in the queue).
    #[arg(long, default_value_t = 256)]
    pub max_num_seqs: usize,
    /// Tokens per KV cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Bytes of KV cache (e.g. 268435456, 512MiB, 4GiB) [default on the CPU: enough for
    /// --max-num-seqs sequences of the full context, at most 1 GiB; on CUDA: the free memory
    /// after the weights times --gpu-memory-utilization].
    #[arg(long, value_parser = kv_blocks::parse_bytes)]
    pub kv_cache_memory: Option<u64>,
    /// Fraction of the GPU's free memory (after loading the weights) the KV cache takes.
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// Prompt tokens prefilled per engine iteration at most (longer prompts are chunked), so a
    /// decode step waits for at most this much prefill.
    #[arg(long, default_value_t = 2048)]
    pub max_num_batched_tokens: usize,
    /// Load local model directories only from under DIR (repeatable) [default: any].
    #[arg(long = "models-dir", value_name = "DIR")]
    pub models_dirs: Vec<PathBuf>,
    /// Decode steps on tokbench's fused CUDA kernels with the attention reading the paged KV
    /// blocks in place (the rotary families on CUDA); false: every step gathers the blocks into
    /// a contiguous cache and runs candle's ops (what the CPU and OPT/GPT-2 always do).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub paged_attention: bool,
    /// With --paged-attention: replay the decode step as a CUDA graph, one per batch-size bucket
    /// (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, then every 64 up to --max-num-seqs), for sequences of
    /// up to 4096 positions; false: launch its kernels one by one every step.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cuda_graphs: bool,
    /// Prefill the whole prompts admitted in one iteration together, in one left-padded forward
    /// pass (as many as --max-num-batched-tokens holds, padding counted); false: one pass per
    /// sequence.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub batched_prefill: bool,
}

impl ServeOpenAiArgs {
    /// The engine's scheduling and kernel flags as `serve-openai` takes them (`--max-num-seqs
    /// 256 ...`): what a serve job passes to a profiled server and records in its report.
    pub fn engine_flags(&self) -> Vec<String> {
        let mut flags = vec![
            ("--max-num-seqs", self.max_num_seqs.to_string()),
            ("--block-size", self.block_size.to_string()),
            ("--max-num-batched-tokens", self.max_num_batched_tokens.to_string()),
            ("--gpu-memory-utilization", self.gpu_memory_utilization.to_string()),
            ("--paged-attention", self.paged_attention.to_string()),
            ("--cuda-graphs", self.cuda_graphs.to_string()),
            ("--batched-prefill", self.batched_prefill.to_string()),
        ];
        if let Some(bytes) = self.kv_cache_memory {
            flags.push(("--kv-cache-memory", bytes.to_string()));
        }
        flags.into_iter().flat_map(|(k, v)| [k.to_string(), v]).collect()
    }
}

fn parse_spec<T: std::str::FromStr>(s: &str) -> std::result::Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

/// Everything loaded before the server listens.
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<chat_template::ChatTemplate>,
    pub chat_template_missing: String,
    pub eos_token_ids: Vec<u32>,
    pub model_id: String,
    /// Which weights: "real (path)" or "synthetic (synthetic (seed N))".
    pub weights: String,
}

/// Downloads (unless offline or synthetic), resolves and loads the model, its tokenizer, EOS ids
/// and chat template.
pub fn load(args: &ServeOpenAiArgs) -> Result<Loaded> {
    let policy = ModelPathPolicy::for_bench(args.models_dirs.clone()).canonical().map_err(EngineError::InvalidWorkload)?;
    load_with(args, &policy)
}

/// [`load`] with the local directories `policy` allows (a worker's `--models-dir`), not the flags'.
pub fn load_with(args: &ServeOpenAiArgs, policy: &ModelPathPolicy) -> Result<Loaded> {
    let policy = policy.clone();
    let fallback = fetch_weights(args, &policy)?;
    let mut resolved = resolve::resolve_with(&args.model, args.weights, args.weights_seed, &policy)?;
    if let (Some(why), WeightsKind::Synthetic) = (&fallback, resolved.weights_kind) {
        resolved.reason = format!("--weights auto: using synthetic weights, the real ones could not be downloaded: {why}");
    }
    tracing::info!(model = %resolved.model_id, weights = resolved.weights_kind.as_str(), source = %resolved.weights_source, "{}", resolved.reason);
    let tokenizer = Tokenizer::load(resolved.model_dir.as_deref(), &resolved.config)?;
    let eos_token_ids = crate::generation_config::eos_token_ids(resolved.model_dir.as_deref(), &resolved.config)?;
    let (chat_template, chat_template_missing) = match resolved.model_dir.as_deref() {
        Some(dir) => match chat_template::ChatTemplate::load(dir).map_err(EngineError::InvalidWorkload)? {
            Some(t) => (Some(t), String::new()),
            None => (None, format!("{} has no chat_template in tokenizer_config.json and no chat_template.jinja", dir.display())),
        },
        None => (None, "it has no checkpoint directory (synthetic weights of a catalog config)".into()),
    };
    let dtype = args.dtype.unwrap_or(match args.device {
        DeviceSpec::Cpu => DTypeSpec::F32,
        DeviceSpec::Cuda(_) => DTypeSpec::F16,
    });
    let device = crate::device::open(&args.device, None)?;
    let model = Model::load(&resolved.config, &resolved.weights, crate::device::dtype(dtype), &device)?;
    crate::device::synchronize(&device)?;
    let weights = format!("{}: {}", resolved.weights_kind.as_str(), resolved.weights_source);
    Ok(Loaded { model, tokenizer, chat_template, chat_template_missing, eos_token_ids, model_id: resolved.model_id, weights })
}

/// `bench`'s download step: the Hub's files into the cache when missing; Some(reason) when
/// `--weights auto` falls back to synthetic weights.
fn fetch_weights(args: &ServeOpenAiArgs, policy: &ModelPathPolicy) -> Result<Option<String>> {
    let Some(repo) = resolve::download_candidate(&args.model, args.weights, policy)? else { return Ok(None) };
    let mut cfg = crate::hub::HubConfig::from_env();
    cfg.offline |= args.offline;
    if cfg.offline {
        let why = format!("{repo} is not in the Hugging Face cache {} and downloads are off (--offline or HF_HUB_OFFLINE=1)", cfg.cache_dir.display());
        return match args.weights {
            WeightsMode::Real => Err(EngineError::WeightsNotFound { model: args.model.clone(), detail: why }),
            _ => Ok(Some(why)),
        };
    }
    eprintln!("downloading {repo} from the Hugging Face Hub ...");
    match crate::hub::download_model_blocking(&cfg, &repo, "main", &mut |_| {}) {
        Ok(_) => Ok(None),
        Err(e) if args.weights == WeightsMode::Auto && e.allows_synthetic() => Ok(Some(e.to_string())),
        Err(source) => Err(EngineError::Download { model: args.model.clone(), source }),
    }
}

/// The positions a request may use: the model's, within its sliding window when it has one
/// (tokbench does not implement sliding-window attention).
pub fn max_model_len(model: &Model) -> usize {
    let spec = model.config().spec();
    spec.sliding_window.map_or(spec.max_positions, |w| w.min(spec.max_positions))
}

/// The KV budget: `--kv-cache-memory`, else on the CPU enough for `max_num_seqs` full-context
/// sequences (at most 1 GiB), else on CUDA the free memory after the weights times
/// `--gpu-memory-utilization`.
pub fn kv_budget(args: &ServeOpenAiArgs, bytes_per_token: u64, max_len: usize) -> Result<u64> {
    if let Some(b) = args.kv_cache_memory {
        return Ok(b);
    }
    match args.device {
        DeviceSpec::Cpu => Ok((bytes_per_token * max_len as u64 * args.max_num_seqs as u64).min(1 << 30)),
        DeviceSpec::Cuda(_) => {
            let free = crate::gpu::device_info(&args.device).memory_free_bytes;
            if free == 0 {
                return Err(EngineError::InvalidWorkload(
                    "cannot read the GPU's free memory (no NVML): give the KV cache size with --kv-cache-memory".into(),
                ));
            }
            let util = args.gpu_memory_utilization.clamp(0.0, 1.0);
            Ok((free as f64 * util) as u64)
        }
    }
}

/// How the server's decode steps run for `model` (printed at start-up).
pub fn decode_path(model: &Model, paged_attention: bool, cuda_graphs: bool) -> &'static str {
    let rotary = matches!(model.config().spec().position, tokbench_core::arch::PositionKind::Rotary { .. });
    if cfg!(feature = "cuda") && model.device().is_cuda() && rotary && paged_attention && cuda_graphs {
        "tokbench's fused kernels, attention over the paged KV blocks in place, replayed as CUDA graphs per batch-size bucket"
    } else if cfg!(feature = "cuda") && model.device().is_cuda() && rotary && paged_attention {
        "tokbench's fused kernels, attention over the paged KV blocks in place, launched one by one (--cuda-graphs false)"
    } else if paged_attention {
        "candle's ops over KV blocks gathered per step (the paged attention kernel runs on CUDA for the rotary families only)"
    } else {
        "candle's ops over KV blocks gathered per step (--paged-attention false)"
    }
}

/// The server's router over a started engine (the engine thread ends when the router and
/// every handle to it are dropped), and the KV capacity it was given.
pub fn app(args: &ServeOpenAiArgs, loaded: Loaded) -> anyhow::Result<(axum::Router, Capacity)> {
    if args.block_size == 0 {
        anyhow::bail!("--block-size must be at least 1");
    }
    let model = loaded.model;
    let max_len = max_model_len(&model);
    let per_token = model.config().spec().kv_bytes_per_token(model.dtype().size_in_bytes());
    let budget = kv_budget(&args, per_token, max_len)?;
    let capacity = Capacity::new(budget, per_token, args.block_size, max_len);
    tracing::info!("{}", capacity.describe((max_len / 4).max(1)));
    let metrics = Arc::new(metrics::Metrics::default());
    let config = engine::EngineConfig {
        block_size: args.block_size,
        num_blocks: capacity.num_blocks,
        max_num_seqs: args.max_num_seqs,
        max_num_batched_tokens: args.max_num_batched_tokens,
        eos_token_ids: loaded.eos_token_ids,
        paged_attention: args.paged_attention,
        cuda_graphs: args.cuda_graphs,
        batched_prefill: args.batched_prefill,
    };
    tracing::info!("decode steps: {}", decode_path(&model, args.paged_attention, args.cuda_graphs));
    let vocab_size = model.config().vocab_size();
    let handle = engine::spawn(model, config, metrics)?;
    let state = Arc::new(http::AppState {
        engine: handle,
        tokenizer: Arc::new(loaded.tokenizer),
        chat_template: loaded.chat_template,
        chat_template_missing: loaded.chat_template_missing,
        served_model_name: args.served_model_name.clone().unwrap_or_else(|| args.model.clone()),
        max_model_len: max_len,
        vocab_size,
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    });
    Ok((http::router(state), capacity))
}

/// Loads the model, starts the engine and serves until Ctrl-C. Prints the KV capacity and then
/// `listening on http://ADDR` (the real port when --listen asks for port 0) on stdout.
pub fn main(args: ServeOpenAiArgs) -> anyhow::Result<()> {
    // First, so a supervisor (a profiled serve job's worker) can signal this process and not
    // the profiler that launched it.
    println!("process id {}", std::process::id());
    std::io::stdout().flush()?;
    let loaded = load(&args).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (model_id, served, weights) = (loaded.model_id.clone(), args.served_model_name.clone().unwrap_or_else(|| args.model.clone()), loaded.weights.clone());
    let (router, capacity) = app(&args, loaded)?;
    println!("{}", capacity.describe((capacity.max_len / 4).max(1)));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("serving {model_id} ({}) as \"{served}\", weights {weights}", args.device);
        println!("listening on http://{addr}");
        std::io::stdout().flush()?;
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
