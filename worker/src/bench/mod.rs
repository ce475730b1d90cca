//! One measured benchmark job, start to finish: resolve the model, load it (timed, NVTX
//! `model_initialization`), tokenise the prompts, run warm-up passes and timed repetitions
//! (NVTX `inference`), decode the outputs (NVTX `output_processing`) and fill a `BenchReport`.
//!
//! This file runs the job (loading, the model cache, passes, progress); [`memory`] estimates
//! what it needs on the device, [`report`] turns the measured passes into the report.

use crate::device::{self, MIB};
use crate::error::{EngineError, Result};
use crate::generate::{GenerationParams, GenerationState, Generator};
use crate::gpu;
use crate::hub;
use crate::model::Model;
use crate::nvtx;
use crate::prompts;
use crate::resolve;
use crate::telemetry::TelemetrySampler;
use crate::tokenizer::Tokenizer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokbench_core::report::{BenchReport, ModelProperties, RepetitionMetrics, WeightsDownload, REPORT_SCHEMA_VERSION};
use tokbench_core::{DeviceSpec, WeightsMode, Workload};

mod memory;
mod report;

pub use memory::MemoryEstimate;
pub(crate) use report::hostname;
pub use report::environment;
use memory::check_fits;
use report::{build_outputs, gpu_metrics, inference_metrics, nsight_metrics, EngineMemory, PassResult};

/// Progress of a running job, reported to the caller (the worker service forwards it to the
/// coordinator; the bench command prints it). Phases: "downloading" (only when the weights are
/// fetched from the Hub, before the timed load), "loading", "warmup", "inference",
/// "output_processing".
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// "downloading" | "loading" | "warmup" | "inference" | "output_processing".
    pub phase: &'static str,
    /// Generated tokens so far in this phase (all batches, all passes of the phase).
    pub tokens_done: u64,
    /// Tokens this phase generates in total (an upper bound when EOS can stop sequences early).
    pub tokens_total: u64,
    /// Generated tokens per second so far in this phase (0 while unknown).
    pub tokens_per_second: f64,
    /// "downloading": bytes of the model's files on disk so far (0 in other phases).
    pub bytes_done: u64,
    /// "downloading": bytes of the model's files in all (0 while unknown, and in other phases).
    pub bytes_total: u64,
}

impl Progress {
    /// The start of `phase`: nothing done yet.
    pub fn start(phase: &'static str) -> Progress {
        Progress { phase, tokens_done: 0, tokens_total: 0, tokens_per_second: 0.0, bytes_done: 0, bytes_total: 0 }
    }
}

/// NVTX ranges this engine emits with the `nvtx` feature (prefill and decode come from
/// generation, per batch; inference is one range per timed pass). A report's
/// `nsight_metrics.nvtx_ranges` lists those an nsys profile actually saw.
pub const NVTX_RANGES: &[&str] = &["model_initialization", "warmup", "inference", "prefill", "decode", "output_processing"];

/// Progress callbacks during generation are throttled to at most this often (10 per second).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// NVML sampling period during timed inference.
const TELEMETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A loaded model a job left for a later job (`Workload::reuse_model`), with what it was
/// resolved and tokenised with. A worker process runs one job at a time, so it holds at most one
/// model per key; several in-process workers (the coordinator overhead benchmark) may each
/// leave a copy of the same model.
struct CachedModel {
    key: String,
    resolved: resolve::ResolvedModel,
    tokenizer: Tokenizer,
    model: Model,
    /// Its KV cache (and CUDA decode graph), reused by the next job's equal-shaped batches.
    state: GenerationState,
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
    // ---- downloading (untimed: only when the Hugging Face cache lacks the weights) ----
    let fetched = fetch_weights(workload, on_progress)?;
    check_cancel()?;
    on_progress(&Progress::start("loading"));
    let dtype_spec = workload.effective_dtype();
    let num_prompts = workload.prompts.num_prompts();

    // ---- loading (timed: config + tokenizer + weights until the model is on the device) ----
    let load_start = Instant::now();
    // Named like the later ranges (the repo id for catalog models); the resolved id is not known
    // before loading starts, and resolving belongs inside this range.
    let init_name = tokbench_core::Catalog::get(&workload.model).and_then(|e| e.hf_repo).unwrap_or(&workload.model);
    let init_range = nvtx::Range::new("model_initialization", init_name);
    // The forced kernel capability is part of the key: candle's kernels load once per device, for it.
    let cache_key = format!(
        "{}|{:?}|{}|{}|{:?}|{:?}",
        workload.model, workload.weights, workload.weights_seed, workload.device, dtype_spec, workload.kernels.compute_cap
    );
    // A model the previous job of this worker left loaded (only when this job asks for reuse).
    let cached = models.take(&cache_key, workload.reuse_model);
    let model_reused = cached.is_some();
    let (resolved, tokenizer, cached_model) = match cached {
        Some(c) => (c.resolved, c.tokenizer, Some((c.model, c.state))),
        None => {
            let mut resolved = resolve::resolve(&workload.model, workload.weights, workload.weights_seed)?;
            if let (Some(why), resolve::WeightsKind::Synthetic) = (&fetched.fallback, resolved.weights_kind) {
                resolved.reason = format!("--weights auto: using synthetic weights, the real ones could not be downloaded: {why}");
                tracing::warn!(model = %resolved.model_id, "{}", resolved.reason);
            }
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
    // A partial last batch keeps its own cache beside the full batches' (see GenerationState).
    let remainder = if prepared.len() > batch { prepared.len() % batch } else { 0 };
    let estimate = MemoryEstimate::new(&resolved.config, dtype_spec, batch, max_prompt_len, workload.max_tokens).with_second_batch(remainder);

    let dev_info = gpu::device_info(&workload.device);
    let used_before = match workload.device {
        DeviceSpec::Cuda(i) => {
            check_fits(&workload.device, &estimate, &dev_info)?;
            gpu::device_used_bytes(i as u32)
        }
        DeviceSpec::Cpu => None,
    };
    let oom = |e: EngineError| device::map_engine_error(e, &workload.device, estimate.total());
    let (mut model, state) = match cached_model {
        Some((m, state)) => {
            let _ = device::engine_memory_high_water(m.device(), true);
            (m, state)
        }
        None => {
            let device = device::open(&workload.device, workload.kernels.compute_cap)?;
            // From here on the pools' high-water mark counts this job's allocations (weights included).
            let _ = device::engine_memory_high_water(&device, true);
            let model = Model::load(&resolved.config, &resolved.weights, device::dtype(dtype_spec), &device).map_err(oom)?;
            (model, GenerationState::default())
        }
    };
    // This job's engine options (a reused model takes them too).
    model.set_kernel_options(workload.kernels);
    model.check_kernel_options()?;
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
        eos_token_ids: crate::generation_config::eos_token_ids(resolved.model_dir.as_deref(), &resolved.config)?,
        pad_token_id: resolved.config.pad_token_id(),
        model_name: resolved.model_id.clone(),
    };
    let batches: Vec<Vec<Vec<u32>>> = prepared.chunks(workload.batch_size).map(|c| c.iter().map(|p| p.ids.clone()).collect()).collect();
    let tokens_per_pass = (num_prompts * workload.max_tokens) as u64;
    let mut generator = Generator::with_state(&model, state);

    // ---- warm-up (untimed) ----
    if workload.warmup > 0 {
        let _r = nvtx::Range::new("warmup", &resolved.model_id);
        let mut tracker = ProgressTracker::new("warmup", tokens_per_pass * workload.warmup as u64, on_progress);
        for _ in 0..workload.warmup {
            run_pass(&mut generator, &batches, &params, cancel, &mut tracker).map_err(oom)?;
        }
        tracker.finish();
    }

    // ---- timed repetitions ----
    let sampler = match workload.device {
        DeviceSpec::Cuda(i) => TelemetrySampler::start(i as u32, TELEMETRY_INTERVAL),
        DeviceSpec::Cpu => None,
    };
    let mut passes = Vec::with_capacity(workload.repetitions);
    if workload.warmup == 0 && matches!(workload.device, DeviceSpec::Cuda(_)) {
        tracing::warn!(
            "--warmup 0 on CUDA: the first timed repetition includes cuBLAS(Lt) tuning, CUDA-graph capture and first-use allocations; use --warmup 1 or more for steady-state figures"
        );
    }
    // Timed passes must find every batch shape's cache (and captured graph) ready: counted here
    // and checked after them.
    let counts_before_timed = generator.allocation_counts();
    {
        let mut tracker = ProgressTracker::new("inference", tokens_per_pass * workload.repetitions as u64, on_progress);
        for _ in 0..workload.repetitions {
            // One `inference` NVTX range per timed pass, so a profile's per-range time is a
            // pass time (what `total_inference_time_seconds` measures).
            let _r = nvtx::Range::new("inference", &resolved.model_id);
            passes.push(run_pass(&mut generator, &batches, &params, cancel, &mut tracker).map_err(oom)?);
        }
        tracker.finish();
    }
    let counts_after_timed = generator.allocation_counts();
    if workload.warmup > 0 && counts_after_timed != counts_before_timed {
        tracing::warn!(
            before = ?counts_before_timed,
            after = ?counts_after_timed,
            "timed passes allocated a KV cache or built a decoder (cache allocations, decoder builds): their time includes it"
        );
    }
    let state = generator.into_state();
    let total_generated: u64 = passes.iter().map(|p| p.output_tokens() as u64).sum();
    let telemetry = sampler.map(|s| s.stop(total_generated));

    // ---- output processing ----
    on_progress(&Progress::start("output_processing"));
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

    let engine = EngineMemory {
        current: device::engine_memory(&device, device::PoolFigure::Current),
        peak: device::engine_memory_high_water(&device, false),
        needed: (batch * resolved.config.vocab_size() * 4) as u64 + weight_bytes + estimate.kv_cache,
    };
    let gpu_metrics = gpu_metrics(workload, &dev_info, &engine, used_before, telemetry.as_ref());
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
            weights_download: fetched.record,
        },
        inference_metrics,
        gpu_metrics,
        nsight_metrics: nsight_metrics(&resolved.file_stem, &resolved.weights_kind),
        workload: workload.clone(),
        environment: environment(&dev_info.backend),
        repetitions,
        outputs,
        telemetry,
        serve: None,
    };
    if workload.reuse_model {
        // Only a job that finished keeps its model: an error above dropped it (and its memory).
        models.put(CachedModel { key: cache_key, resolved, tokenizer, model, state });
    }
    Ok(report)
}

/// What [`fetch_weights`] did.
struct Fetched {
    /// The download, for the report (None: none was needed or allowed).
    record: Option<WeightsDownload>,
    /// Why `--weights auto` gets no real weights (the download failed or was not allowed).
    fallback: Option<String>,
}

/// Downloads the model's files from the Hugging Face Hub into the cache when resolution would
/// need them (see [`resolve::download_candidate`]) and the job may use the network (not
/// `workload.offline`, not HF_HUB_OFFLINE), reporting phase "downloading" with bytes. `--weights
/// real` fails when the download does; `auto` records why and goes on (synthetic weights),
/// except on a full disk or a local I/O error.
fn fetch_weights(workload: &Workload, on_progress: &mut dyn FnMut(&Progress)) -> Result<Fetched> {
    let none = Fetched { record: None, fallback: None };
    let Some(repo) = resolve::download_candidate(&workload.model, workload.weights, &resolve::current_model_policy())? else {
        return Ok(none);
    };
    let mut cfg = hub::HubConfig::from_env();
    cfg.offline |= workload.offline;
    let revision = "main";
    // A name that is no catalog model and not in the cache may have been meant as something else
    // (a directory outside --models-dir, a typo): resolution's message about it comes first.
    let unknown = |hub_error: &dyn std::fmt::Display| -> Option<EngineError> {
        if tokbench_core::Catalog::get(&workload.model).is_some() {
            return None;
        }
        match resolve::resolve(&workload.model, workload.weights, workload.weights_seed) {
            Err(EngineError::UnknownModel(m)) => Some(EngineError::UnknownModel(format!("{m} As a Hugging Face repo id: {hub_error}"))),
            _ => None,
        }
    };
    if cfg.offline {
        let why = format!("{repo} is not in the Hugging Face cache {} and downloads are off (--offline or HF_HUB_OFFLINE=1)", cfg.cache_dir.display());
        return match workload.weights {
            WeightsMode::Real => Err(unknown(&why).unwrap_or(EngineError::WeightsNotFound { model: workload.model.clone(), detail: why })),
            _ => Ok(Fetched { record: None, fallback: Some(why) }),
        };
    }
    on_progress(&Progress::start("downloading"));
    let mut sink = |p: &hub::DownloadProgress| on_progress(&Progress { bytes_done: p.bytes_done, bytes_total: p.bytes_total, ..Progress::start("downloading") });
    let started = Instant::now();
    match hub::download_model_blocking(&cfg, &repo, revision, &mut sink) {
        Ok(d) => Ok(Fetched {
            record: Some(WeightsDownload {
                repo,
                revision: revision.into(),
                commit: Some(d.commit),
                bytes_total: d.bytes_total,
                bytes_downloaded: d.bytes_downloaded,
                seconds: d.seconds,
                error: None,
            }),
            fallback: None,
        }),
        Err(e) if workload.weights == WeightsMode::Auto && e.allows_synthetic() => {
            let why = e.to_string();
            Ok(Fetched {
                record: Some(WeightsDownload {
                    repo,
                    revision: revision.into(),
                    commit: None,
                    bytes_total: 0,
                    bytes_downloaded: 0,
                    seconds: started.elapsed().as_secs_f64(),
                    error: Some(why.clone()),
                }),
                fallback: Some(why),
            })
        }
        Err(source) => Err(unknown(&source).unwrap_or(EngineError::Download { model: workload.model.clone(), source })),
    }
}

/// Reject workloads that cannot run, naming the field and the fix (tokbench-core's rules, the
/// same the CLI and the coordinator apply).
pub fn validate(w: &Workload) -> Result<()> {
    w.validate().map_err(|e| EngineError::InvalidWorkload(e.to_string()))
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
        (self.sink)(&Progress { tokens_done: self.done.min(self.total), tokens_total: self.total, tokens_per_second: tps, ..Progress::start(self.phase) });
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

fn run_pass(generator: &mut Generator, batches: &[Vec<Vec<u32>>], params: &GenerationParams, cancel: &AtomicBool, tracker: &mut ProgressTracker) -> Result<PassResult> {
    let start = Instant::now();
    let mut outs = Vec::with_capacity(batches.len());
    let base = tracker.done;
    let mut finished_in_pass = 0u64;
    for batch in batches {
        // The generator checks `cancel` before prefill and between decode steps: a cancelled job
        // stops within a step, not at the end of its batch.
        let offset = base + finished_in_pass;
        let out = generator.generate(batch, params, cancel, &mut |n| tracker.update(offset + n as u64))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_workloads_are_named() {
        let w = Workload { batch_size: 0, ..Workload::default() };
        assert!(validate(&w).unwrap_err().to_string().contains("batch size 0 is out of range"));
        let mut w = Workload::default();
        w.sampling.top_p = Some(1.5);
        assert!(validate(&w).unwrap_err().to_string().contains("top_p"));
    }
}

