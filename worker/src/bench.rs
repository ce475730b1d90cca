//! One measured benchmark job, start to finish: resolve the model, load it (timed, NVTX
//! `model_initialization`), tokenise the prompts, run warm-up passes and timed repetitions
//! (NVTX `inference`), decode the outputs (NVTX `output_processing`) and fill a `BenchReport`.

use crate::device::{self, MIB};
use crate::error::{EngineError, Result};
use crate::generate::{self, BatchOutput, FinishReason, GenerationParams};
use crate::gpu;
use crate::model::Model;
use crate::nvtx;
use crate::prompts::{self, PreparedPrompt};
use crate::resolve;
use crate::telemetry::TelemetrySampler;
use crate::tokenizer::Tokenizer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokbench_core::report::{
    BenchReport, Environment, GpuMetrics, InferenceMetrics, LatencyStats, ModelProperties, NsightMetrics, RepetitionMetrics,
    RequestOutput, REPORT_SCHEMA_VERSION,
};
use tokbench_core::{ArchConfig, DTypeSpec, DeviceSpec, Workload};

/// Progress of a running job, reported to the caller (the worker service forwards it to the
/// coordinator; the bench command prints it).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// "loading" | "warmup" | "inference" | "output_processing".
    pub phase: &'static str,
    /// Generated tokens so far in this phase (all batches, all passes of the phase).
    pub tokens_done: u64,
    /// Tokens this phase generates in total (an upper bound when EOS can stop sequences early).
    pub tokens_total: u64,
    /// Generated tokens per second so far in this phase (0 while unknown).
    pub tokens_per_second: f64,
}

/// NVTX ranges this engine emits (the last two come from generation, per batch).
pub const NVTX_RANGES: &[&str] = &["model_initialization", "warmup", "inference", "prefill", "decode", "output_processing"];

/// Progress callbacks during generation are throttled to at most this often (10 per second).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// NVML sampling period during timed inference.
const TELEMETRY_INTERVAL: Duration = Duration::from_millis(100);
/// CUDA context, cuBLAS workspace and allocator slack not covered by the tensor estimate.
const CUDA_OVERHEAD_BYTES: u64 = 512 << 20;

/// A loaded model a job left for a later job (`Workload::reuse_model`), with what it was
/// resolved and tokenised with.
struct CachedModel {
    key: String,
    resolved: resolve::ResolvedModel,
    tokenizer: Tokenizer,
    model: Model,
}

/// The models jobs left loaded for later jobs (`Workload::reuse_model`), owned by whatever runs
/// the jobs: the worker service's engine (`serve::run`), or a caller of [`run_workload_with`].
/// A worker runs one job at a time, so it leaves at most one model; `workers` in-process workers
/// that share one cache (the coordinator overhead benchmark) may each leave a copy of the same
/// model.
pub struct ModelCache {
    entries: std::sync::Mutex<Vec<CachedModel>>,
    max: usize,
}

impl Default for ModelCache {
    /// A cache for one worker.
    fn default() -> Self {
        ModelCache::for_workers(1)
    }
}

impl ModelCache {
    /// A cache shared by `workers` workers of this process (each may leave a copy).
    pub fn for_workers(workers: usize) -> ModelCache {
        ModelCache { entries: std::sync::Mutex::new(Vec::new()), max: workers.max(1) }
    }

    /// The cached model for `key` when the job asks for reuse. Otherwise, and on a miss, every
    /// cached model is dropped (its memory freed) so none sits beside the model this job is about
    /// to load or skews its free-memory check.
    fn take(&self, key: &str, reuse: bool) -> Option<CachedModel> {
        let mut cache = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().position(|c| reuse && c.key == key) {
            return Some(cache.swap_remove(i));
        }
        cache.clear();
        None
    }

    fn put(&self, entry: CachedModel) {
        let mut cache = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|c| c.key == entry.key);
        if cache.len() < self.max {
            cache.push(entry);
        }
    }
}

/// Runs one benchmark job start to finish (blocking) with no model kept from or for other jobs
/// (`reuse_model` finds nothing cached; see [`run_workload_with`]). Checks `cancel` between
/// batches/steps and returns EngineError::Cancelled if set. Fills every field of BenchReport.
pub fn run_workload(workload: &Workload, cancel: &AtomicBool, on_progress: &mut dyn FnMut(&Progress)) -> Result<BenchReport> {
    run_workload_with(&ModelCache::default(), workload, cancel, on_progress)
}

/// [`run_workload`] taking the model from `models` when the job asks for reuse and the previous
/// job left a matching one, and leaving this job's model there when it asks for reuse.
pub fn run_workload_with(models: &ModelCache, workload: &Workload, cancel: &AtomicBool, on_progress: &mut dyn FnMut(&Progress)) -> Result<BenchReport> {
    validate(workload)?;
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let check_cancel = || if cancel.load(Ordering::Relaxed) { Err(EngineError::Cancelled) } else { Ok(()) };
    check_cancel()?;
    on_progress(&Progress { phase: "loading", tokens_done: 0, tokens_total: 0, tokens_per_second: 0.0 });
    let dtype_spec = workload.effective_dtype();
    let num_prompts = workload.prompts.num_prompts();

    // ---- loading (timed: config + tokenizer + weights until the model is on the device) ----
    let load_start = Instant::now();
    // Named like the later ranges (the repo id for catalog models); the resolved id is not known
    // before loading starts, and resolving belongs inside this range.
    let init_name = tokbench_core::Catalog::get(&workload.model).and_then(|e| e.hf_repo).unwrap_or(&workload.model);
    let init_range = nvtx::Range::new("model_initialization", init_name);
    let cache_key = format!("{}|{:?}|{}|{}|{:?}", workload.model, workload.weights, workload.weights_seed, workload.device, dtype_spec);
    // A model the previous job of this worker left loaded (only when this job asks for reuse).
    let cached = models.take(&cache_key, workload.reuse_model);
    let model_reused = cached.is_some();
    let (resolved, tokenizer, cached_model) = match cached {
        Some(c) => (c.resolved, c.tokenizer, Some(c.model)),
        None => {
            let resolved = resolve::resolve(&workload.model, workload.weights, workload.weights_seed)?;
            tracing::info!(model = %resolved.model_id, weights = resolved.weights_kind.as_str(), source = %resolved.weights_source, "{}", resolved.reason);
            let tokenizer = Tokenizer::load(resolved.model_dir.as_deref(), &resolved.config)?;
            tracing::info!(tokenizer = tokenizer.description(), "tokenizer loaded");
            (resolved, tokenizer, None)
        }
    };

    // Prompt preparation is not loading: its time is taken out of the load time.
    let prep_start = Instant::now();
    let prepared = prompts::prepare(&workload.prompts, &tokenizer, &resolved.config, workload.max_tokens, &resolved.model_id)?;
    let prep_time = prep_start.elapsed();
    let max_prompt_len = prepared.iter().map(|p| p.ids.len()).max().unwrap_or(0);
    let batch = workload.batch_size.min(prepared.len());
    let estimate = MemoryEstimate::new(&resolved.config, dtype_spec, batch, max_prompt_len, workload.max_tokens);

    let dev_info = gpu::device_info(&workload.device);
    let used_before = match workload.device {
        DeviceSpec::Cuda(i) => {
            check_fits(&workload.device, &estimate, &dev_info)?;
            gpu::device_used_bytes(i as u32)
        }
        DeviceSpec::Cpu => None,
    };
    let oom = |e: EngineError| device::map_engine_error(e, &workload.device, estimate.total());
    let mut model = match cached_model {
        Some(m) => {
            let _ = device::engine_memory_high_water(m.device(), true);
            m
        }
        None => {
            let device = device::open(&workload.device)?;
            // From here on the pools' high-water mark counts this job's allocations (weights included).
            let _ = device::engine_memory_high_water(&device, true);
            Model::load(&resolved.config, &resolved.weights, device::dtype(dtype_spec), &device).map_err(oom)?
        }
    };
    // This job's engine options (a reused model takes them too).
    model.set_kernel_options(workload.kernels);
    let device = model.device().clone();
    device::synchronize(&device).map_err(oom)?;
    drop(init_range);
    let model_load_time = load_start.elapsed().saturating_sub(prep_time);
    let num_parameters = model.num_parameters();
    let weight_bytes = model.weight_bytes();
    tracing::info!(seconds = model_load_time.as_secs_f64(), parameters = num_parameters, "model loaded");
    check_cancel()?;

    let params = GenerationParams {
        max_new_tokens: workload.max_tokens,
        sampling: workload.sampling.clone(),
        ignore_eos: workload.ignore_eos,
        eos_token_id: resolved.config.eos_token_id(),
        pad_token_id: resolved.config.pad_token_id(),
        model_name: resolved.model_id.clone(),
    };
    let batches: Vec<Vec<Vec<u32>>> = prepared.chunks(workload.batch_size).map(|c| c.iter().map(|p| p.ids.clone()).collect()).collect();
    let tokens_per_pass = (num_prompts * workload.max_tokens) as u64;

    // ---- warm-up (untimed) ----
    if workload.warmup > 0 {
        let _r = nvtx::Range::new("warmup", &resolved.model_id);
        let mut tracker = ProgressTracker::new("warmup", tokens_per_pass * workload.warmup as u64, on_progress);
        for _ in 0..workload.warmup {
            run_pass(&mut model, &batches, &params, cancel, &mut tracker).map_err(oom)?;
        }
        tracker.finish();
    }

    // ---- timed repetitions ----
    let sampler = match workload.device {
        DeviceSpec::Cuda(i) => TelemetrySampler::start(i as u32, TELEMETRY_INTERVAL),
        DeviceSpec::Cpu => None,
    };
    let mut passes = Vec::with_capacity(workload.repetitions);
    {
        let _r = nvtx::Range::new("inference", &resolved.model_id);
        let mut tracker = ProgressTracker::new("inference", tokens_per_pass * workload.repetitions as u64, on_progress);
        for _ in 0..workload.repetitions {
            passes.push(run_pass(&mut model, &batches, &params, cancel, &mut tracker).map_err(oom)?);
        }
        tracker.finish();
    }
    let total_generated: u64 = passes.iter().map(|p| p.output_tokens() as u64).sum();
    let telemetry = sampler.map(|s| s.stop(total_generated));

    // ---- output processing ----
    on_progress(&Progress { phase: "output_processing", tokens_done: 0, tokens_total: 0, tokens_per_second: 0.0 });
    let outputs = {
        let _r = nvtx::Range::new("output_processing", &resolved.model_id);
        let last = passes.last().expect("repetitions >= 1");
        build_outputs(&prepared, last, &tokenizer)?
    };

    let repetitions: Vec<RepetitionMetrics> = passes.iter().enumerate().map(|(i, p)| p.metrics(i)).collect();
    let mut inference_metrics = inference_metrics(&passes, &repetitions, &prepared, model_load_time, workload);
    inference_metrics.model_reused = model_reused;
    inference_metrics.kernels_run = crate::model::kernels_run(model.active_kernels(), &inference_metrics.decode_path);
    inference_metrics.decode_kernels = crate::model::decode_kernels(inference_metrics.kernels_run.as_ref());

    let engine_peak = device::engine_memory_high_water(&device, false);
    let mut gpu_metrics = gpu_metrics(workload, &dev_info, weight_bytes, &estimate, used_before, telemetry.as_ref());
    if workload.device != DeviceSpec::Cpu {
        gpu_metrics.engine_peak_allocated_mb = engine_peak.map(|b| b as f64 / MIB);
        let logits = (batch * resolved.config.vocab_size() * 4) as u64;
        gpu_metrics.workload_memory_needed_mb = Some((weight_bytes + estimate.kv_cache + logits) as f64 / MIB);
    }
    let config = &resolved.config;
    let report = BenchReport {
        schema_version: REPORT_SCHEMA_VERSION,
        model: workload.model.clone(),
        model_id: resolved.model_id.clone(),
        timestamp,
        model_properties: ModelProperties {
            total_parameters: num_parameters,
            num_layers: config.num_layers(),
            hidden_size: config.hidden_size(),
            vocab_size: config.vocab_size(),
            model_size_mb: weight_bytes as f64 / MIB,
            model_type: config.model_type().to_string(),
            weights: resolved.weights_kind.as_str().to_string(),
            weights_source: resolved.weights_source.clone(),
            dtype: dtype_spec.to_string(),
            tokenizer: tokenizer.description().to_string(),
            config: config.to_json_value(),
        },
        inference_metrics,
        gpu_metrics,
        nsight_metrics: nsight_metrics(&resolved.file_stem, &resolved.weights_kind),
        workload: workload.clone(),
        environment: environment(&dev_info.backend),
        repetitions,
        outputs,
        telemetry,
    };
    if workload.reuse_model {
        // Only a job that finished keeps its model: an error above dropped it (and its memory).
        models.put(CachedModel { key: cache_key, resolved, tokenizer, model });
    }
    Ok(report)
}

/// Reject workloads that cannot run, naming the field and the fix (tokbench-core's rules, the
/// same the CLI and the coordinator apply).
pub fn validate(w: &Workload) -> Result<()> {
    w.validate().map_err(|e| EngineError::InvalidWorkload(e.to_string()))
}

/// Device memory a job needs, by part (bytes). An estimate to refuse hopeless jobs up front.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    pub weights: u64,
    /// K and V for every layer, batch row and position (prompt + generated), in the model dtype.
    pub kv_cache: u64,
    /// Largest transient activations: prefill logits (f32) and attention scores / FFN input.
    pub activations: u64,
}

impl MemoryEstimate {
    pub fn new(config: &ArchConfig, dtype: DTypeSpec, batch: usize, max_prompt_len: usize, max_tokens: usize) -> MemoryEstimate {
        let d = device::dtype_size(dtype);
        let (b, t, s) = (batch as u64, max_prompt_len as u64, (max_prompt_len + max_tokens) as u64);
        let h = config.hidden_size() as u64;
        let ffn = match config {
            ArchConfig::Opt(c) => c.ffn_dim as u64,
            ArchConfig::Gpt2(c) => c.n_inner() as u64,
        };
        let weights = tokbench_core::catalog::estimate_parameters(config) * d;
        let kv_cache = 2 * config.num_layers() as u64 * b * s * h * d;
        let logits = b * t * config.vocab_size() as u64 * 4;
        let scores = b * config.num_heads() as u64 * t * t * d;
        let ffn_act = 2 * b * t * ffn * d;
        MemoryEstimate { weights, kv_cache, activations: logits + scores + ffn_act }
    }
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.activations + CUDA_OVERHEAD_BYTES
    }
}

fn check_fits(spec: &DeviceSpec, est: &MemoryEstimate, info: &gpu::DeviceInfo) -> Result<()> {
    // Without NVML the free memory is unknown (0): let candle try and map its OOM instead.
    if info.memory_total_bytes == 0 {
        return Ok(());
    }
    let needed = est.total();
    if needed > info.memory_free_bytes {
        return Err(EngineError::OutOfMemory {
            device: format!("{spec} ({})", info.gpu_name),
            needed_mb: needed as f64 / MIB,
            free_mb: info.memory_free_bytes as f64 / MIB,
        });
    }
    Ok(())
}

/// Throttled progress for a generation phase.
struct ProgressTracker<'a> {
    phase: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Option<Instant>,
    sink: &'a mut dyn FnMut(&Progress),
}

impl<'a> ProgressTracker<'a> {
    fn new(phase: &'static str, total: u64, sink: &'a mut dyn FnMut(&Progress)) -> Self {
        let mut t = ProgressTracker { phase, total, done: 0, started: Instant::now(), last: None, sink };
        t.emit();
        t
    }
    fn emit(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        let tps = if secs > 0.0 { self.done as f64 / secs } else { 0.0 };
        (self.sink)(&Progress { phase: self.phase, tokens_done: self.done.min(self.total), tokens_total: self.total, tokens_per_second: tps });
        self.last = Some(Instant::now());
    }
    /// `done` = tokens generated so far in the phase.
    fn update(&mut self, done: u64) {
        self.done = done;
        if self.last.is_none_or(|l| l.elapsed() >= PROGRESS_INTERVAL) {
            self.emit();
        }
    }
    fn finish(&mut self) {
        self.emit();
    }
}

/// One pass over all prompts.
struct PassResult {
    wall: Duration,
    batches: Vec<BatchOutput>,
}

impl PassResult {
    fn output_tokens(&self) -> usize {
        self.batches.iter().flat_map(|b| b.tokens.iter()).map(Vec::len).sum()
    }
    fn prefill(&self) -> Duration {
        self.batches.iter().map(|b| b.prefill).sum()
    }
    fn decode(&self) -> Duration {
        self.batches.iter().flat_map(|b| b.step_latencies.iter()).sum()
    }
    /// Tokens produced by decode steps: every token after each sequence's first.
    fn decode_tokens(&self) -> usize {
        self.batches.iter().flat_map(|b| b.tokens.iter()).map(|t| t.len().saturating_sub(1)).sum()
    }
    fn metrics(&self, index: usize) -> RepetitionMetrics {
        let secs = self.wall.as_secs_f64();
        RepetitionMetrics {
            index,
            total_inference_time_seconds: secs,
            tokens_per_second: self.output_tokens() as f64 / secs,
            prefill_seconds: self.prefill().as_secs_f64(),
            decode_seconds: self.decode().as_secs_f64(),
            total_output_tokens: self.output_tokens(),
            ttft_ms: self.batches.iter().flat_map(|b| std::iter::repeat_n(ms(b.prefill), b.tokens.len())).collect(),
            step_latencies_ms: self.batches.iter().flat_map(|b| b.step_latencies.iter().map(|d| ms(*d))).collect(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run_pass(model: &mut Model, batches: &[Vec<Vec<u32>>], params: &GenerationParams, cancel: &AtomicBool, tracker: &mut ProgressTracker) -> Result<PassResult> {
    let start = Instant::now();
    let mut outs = Vec::with_capacity(batches.len());
    let base = tracker.done;
    let mut finished_in_pass = 0u64;
    for batch in batches {
        // generate_batch has no cancellation hook, so a cancel takes effect between batches.
        if cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        let offset = base + finished_in_pass;
        let out = generate::generate_batch(model, batch, params, &mut |n| tracker.update(offset + n as u64))?;
        finished_in_pass += out.tokens.iter().map(|t| t.len() as u64).sum::<u64>();
        tracker.update(base + finished_in_pass);
        outs.push(out);
    }
    let wall = start.elapsed();
    if cancel.load(Ordering::Relaxed) {
        return Err(EngineError::Cancelled);
    }
    Ok(PassResult { wall, batches: outs })
}

fn build_outputs(prompts: &[PreparedPrompt], pass: &PassResult, tok: &Tokenizer) -> Result<Vec<RequestOutput>> {
    let per_request = pass.batches.iter().flat_map(|b| b.tokens.iter().zip(&b.finish_reasons).map(move |(t, f)| (t, *f, ms(b.prefill))));
    prompts
        .iter()
        .zip(per_request)
        .map(|(p, (ids, finish, ttft))| {
            Ok(RequestOutput {
                prompt: p.text.clone(),
                prompt_tokens: p.ids.len(),
                generated_token_ids: ids.clone(),
                generated_text: tok.decode(ids)?,
                ttft_ms: ttft,
                finish_reason: match finish {
                    FinishReason::Length => "length",
                    FinishReason::Eos => "eos",
                }
                .to_string(),
            })
        })
        .collect()
}

/// Index of the median repetition by wall time (nearest rank, so it is a real run and its
/// time and tokens/s are consistent with each other).
fn median_index(passes: &[PassResult]) -> usize {
    let mut idx: Vec<usize> = (0..passes.len()).collect();
    idx.sort_by(|&a, &b| passes[a].wall.cmp(&passes[b].wall));
    idx[passes.len().div_ceil(2) - 1]
}

fn median(v: &[f64]) -> f64 {
    LatencyStats::from_samples(v).p50
}

fn inference_metrics(passes: &[PassResult], reps: &[RepetitionMetrics], prompts: &[PreparedPrompt], load: Duration, w: &Workload) -> InferenceMetrics {
    let m = &reps[median_index(passes)];
    let tps: Vec<f64> = reps.iter().map(|r| r.tokens_per_second).collect();
    let times: Vec<f64> = reps.iter().map(|r| r.total_inference_time_seconds).collect();
    let mean = tps.iter().sum::<f64>() / tps.len() as f64;
    let var = tps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / tps.len() as f64;
    let total_input_tokens: usize = prompts.iter().map(|p| p.ids.len()).sum();
    let prefill_tps: Vec<f64> = passes.iter().map(|p| total_input_tokens as f64 / p.prefill().as_secs_f64()).collect();
    let decode_tps: Vec<f64> = passes
        .iter()
        .filter(|p| !p.decode().is_zero())
        .map(|p| p.decode_tokens() as f64 / p.decode().as_secs_f64())
        .collect();
    let ttft: Vec<f64> = reps.iter().flat_map(|r| r.ttft_ms.iter().copied()).collect();
    let itl: Vec<f64> = reps.iter().flat_map(|r| r.step_latencies_ms.iter().copied()).collect();
    InferenceMetrics {
        model_load_time_seconds: load.as_secs_f64(),
        total_inference_time_seconds: m.total_inference_time_seconds,
        tokens_per_second: m.tokens_per_second,
        num_prompts: prompts.len(),
        total_input_tokens,
        total_output_tokens: m.total_output_tokens,
        average_tokens_per_prompt: m.total_output_tokens as f64 / prompts.len() as f64,
        tokens_per_second_min: tps.iter().copied().fold(f64::INFINITY, f64::min),
        tokens_per_second_max: tps.iter().copied().fold(0.0, f64::max),
        tokens_per_second_cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        total_inference_time_seconds_min: times.iter().copied().fold(f64::INFINITY, f64::min),
        total_inference_time_seconds_max: times.iter().copied().fold(0.0, f64::max),
        prefill_tokens_per_second: median(&prefill_tps),
        // max_tokens 1: no decode steps, so no decode rate.
        decode_tokens_per_second: if decode_tps.is_empty() { 0.0 } else { median(&decode_tps) },
        ttft_ms: LatencyStats::from_samples(&ttft),
        inter_token_latency_ms: LatencyStats::from_samples(&itl),
        warmup_runs: w.warmup,
        repetitions: w.repetitions,
        model_reused: false,
        // The last batch's path (a graph capture that failed falls back for the rest of the run).
        decode_path: passes.last().and_then(|p| p.batches.last()).map(|b| b.decode_path.to_string()).unwrap_or_default(),
        decode_kernels: String::new(),
        kernel_options: w.kernels,
        kernels_run: None,
    }
}

fn gpu_metrics(
    w: &Workload,
    info: &gpu::DeviceInfo,
    weight_bytes: u64,
    est: &MemoryEstimate,
    used_before: Option<u64>,
    telemetry: Option<&tokbench_core::report::TelemetrySummary>,
) -> GpuMetrics {
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    let DeviceSpec::Cuda(i) = w.device else {
        return GpuMetrics {
            gpu_name: gpu::CPU_GPU_NAME.into(),
            gpu_memory_total_mb: None,
            gpu_memory_allocated_mb: None,
            gpu_memory_reserved_mb: None,
            gpu_memory_utilization_percent: None,
            peak_memory_allocated_mb: None,
            memory_source: "cpu run: there is no device memory to report (host RAM is not tracked)".into(),
            engine_peak_allocated_mb: None,
            workload_memory_needed_mb: None,
            device: w.device.to_string(),
            driver_version: None,
            cuda_version: None,
        };
    };
    let total = (info.memory_total_bytes > 0).then_some(info.memory_total_bytes as f64 / MIB);
    // candle has no allocator statistics: count the tensors we know are live.
    let allocated = (weight_bytes + est.kv_cache) as f64 / MIB;
    let (reserved, reserved_src) = match gpu::process_memory_bytes(i as u32) {
        Some(b) => (Some(b as f64 / MIB), "NVML per-process used memory"),
        None => match (used_before, gpu::device_used_bytes(i as u32)) {
            (Some(a), Some(b)) => (Some(b.saturating_sub(a) as f64 / MIB), "NVML device used memory minus its value before loading"),
            _ => (None, "unavailable (no NVML)"),
        },
    };
    // Peak: this process's memory sampled during inference; where the driver hides per-process
    // figures, the device's used memory peak minus what was used before loading.
    let (peak, peak_src) = match (telemetry.and_then(|t| t.process_memory_mb_max), telemetry, used_before) {
        (Some(p), _, _) => (Some(p), "max of NVML per-process memory"),
        (None, Some(t), Some(before)) if t.samples > 0 => {
            (Some((t.memory_used_mb_max - before as f64 / MIB).max(0.0)), "max of NVML device used memory minus its value before loading")
        }
        _ => (None, "unavailable (no NVML samples)"),
    };
    GpuMetrics {
        gpu_name: info.gpu_name.clone(),
        gpu_memory_total_mb: total,
        gpu_memory_allocated_mb: Some(allocated),
        gpu_memory_reserved_mb: reserved,
        gpu_memory_utilization_percent: match (reserved, total) {
            (Some(r), Some(t)) if t > 0.0 => Some(r / t * 100.0),
            _ => None,
        },
        peak_memory_allocated_mb: peak,
        memory_source: format!(
            "allocated = loaded weight tensors + KV cache of the largest batch (candle has no allocator statistics); reserved = {reserved_src} after inference (CUDA context + candle's buffers); peak = {peak_src}, sampled every {} ms during inference; total = NVML",
            TELEMETRY_INTERVAL.as_millis()
        ),
        engine_peak_allocated_mb: None,
        workload_memory_needed_mb: None,
        device: w.device.to_string(),
        driver_version: opt(&info.driver_version),
        cuda_version: opt(&info.cuda_version),
    }
}

fn nsight_metrics(file_stem: &str, weights: &resolve::WeightsKind) -> NsightMetrics {
    let transfers = match weights {
        resolve::WeightsKind::Real => "weights are copied host-to-device (memory-mapped safetensors) during model_initialization",
        resolve::WeightsKind::Synthetic => "synthetic weights are generated on the device during model_initialization (few host-to-device copies)",
    };
    NsightMetrics {
        profile_file: std::env::var("TOKBENCH_PROFILE_FILE").ok().filter(|s| !s.is_empty()),
        profile_name: format!("profile_{file_stem}"),
        notes: format!(
            "{transfers}; during inference each batch's prompt ids go host-to-device once, the KV cache stays on the device (device-to-device writes) and one token id per sequence per step comes back device-to-host. Profile with: nsys profile -o profile_{file_stem} --force-overwrite true tokbench-worker bench ... (needs a build with --features cuda for NVTX ranges)"
        ),
        nvtx_ranges: NVTX_RANGES.iter().map(|s| s.to_string()).collect(),
        nvtx_enabled: nvtx::enabled(),
        // The nsys-derived fields are filled by profile.rs when the job ran under nsys.
        ..NsightMetrics::default()
    }
}

static OS_DESCRIPTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static CPU_DESCRIPTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Where this job ran.
pub fn environment(backend: &str) -> Environment {
    Environment {
        tokbench_version: tokbench_core::TOKBENCH_VERSION.to_string(),
        git_commit: option_env!("TOKBENCH_GIT_COMMIT").map(str::to_string),
        hostname: hostname(),
        // Read once per process: they do not change between jobs, and /proc/cpuinfo is long.
        os: OS_DESCRIPTION.get_or_init(os_description).clone(),
        cpu: CPU_DESCRIPTION.get_or_init(cpu_description).clone(),
        backend: backend.to_string(),
    }
}

/// The machine's host name (for reports and default worker ids).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn os_description() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release").ok().and_then(|t| {
        t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string());
    let mut s = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
    if let Some(p) = pretty {
        s.push_str(&format!(" ({p})"));
    }
    if let Some(k) = kernel {
        s.push_str(&format!(", kernel {k}"));
    }
    s
}

fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{model} ({threads} threads available)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokbench_core::Catalog;

    #[test]
    fn memory_estimate_counts_weights_and_kv() {
        let cfg = Catalog::get("opt-125m").unwrap().config();
        let e = MemoryEstimate::new(&cfg, DTypeSpec::F16, 4, 32, 128);
        assert_eq!(e.weights, 125_239_296 * 2);
        // 2 (K,V) * 12 layers * 4 rows * 160 positions * 768 * 2 bytes
        assert_eq!(e.kv_cache, 2 * 12 * 4 * 160 * 768 * 2);
        assert!(e.total() > e.weights + e.kv_cache);
    }

    #[test]
    fn huge_job_is_refused_before_loading() {
        let cfg = Catalog::get("opt-1.3b").unwrap().config();
        let e = MemoryEstimate::new(&cfg, DTypeSpec::F32, 256, 1024, 1024);
        let info = gpu::DeviceInfo {
            backend: "cuda".into(),
            device_index: 0,
            gpu_name: "GTX 1650".into(),
            memory_total_bytes: 4 << 30,
            memory_free_bytes: 3 << 30,
            driver_version: String::new(),
            cuda_version: String::new(),
        };
        let err = check_fits(&DeviceSpec::Cuda(0), &e, &info).unwrap_err();
        assert!(matches!(err, EngineError::OutOfMemory { free_mb, .. } if free_mb == 3072.0), "{err}");
    }

    #[test]
    fn bad_workloads_are_named() {
        let w = Workload { batch_size: 0, ..Workload::default() };
        assert!(validate(&w).unwrap_err().to_string().contains("batch size 0 is out of range"));
        let mut w = Workload::default();
        w.sampling.top_p = Some(1.5);
        assert!(validate(&w).unwrap_err().to_string().contains("top_p"));
    }
}
