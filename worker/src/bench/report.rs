//! From measured passes to the report: per-repetition and median metrics, request outputs,
//! device memory and telemetry figures, the profiling notes and where the job ran.

use super::TELEMETRY_INTERVAL;
use crate::device::MIB;
use crate::error::Result;
use crate::generate::{BatchOutput, FinishReason};
use crate::gpu;
use crate::nvtx;
use crate::prompts::PreparedPrompt;
use crate::resolve;
use crate::tokenizer::Tokenizer;
use std::time::Duration;
use tokbench_core::report::{Environment, GpuMetrics, InferenceMetrics, LatencyStats, NsightMetrics, RepetitionMetrics, RequestOutput};
use tokbench_core::{DeviceSpec, Workload};


/// One pass over all prompts.
pub(super) struct PassResult {
    pub(super) wall: Duration,
    pub(super) batches: Vec<BatchOutput>,
}

impl PassResult {
    pub(super) fn output_tokens(&self) -> usize {
        self.batches.iter().flat_map(|b| b.tokens.iter()).map(Vec::len).sum()
    }
    fn prefill(&self) -> Duration {
        self.batches.iter().map(|b| b.prefill).sum()
    }
    fn decode(&self) -> Duration {
        self.batches.iter().flat_map(|b| b.step_latencies.iter()).sum()
    }
    /// Per request in prompt order: (queue, TTFT, E2E, TPOT) in ms. Batches of a pass run one
    /// after another, so a request waits for the batches before its own; TTFT and E2E count from
    /// the start of its batch; TPOT needs two output tokens.
    fn request_timings(&self) -> Vec<(f64, f64, f64, Option<f64>)> {
        let mut start = Duration::ZERO;
        let mut out = Vec::new();
        for b in &self.batches {
            for tokens in &b.tokens {
                let n = tokens.len();
                let e2e = b.prefill + b.step_latencies.iter().take(n.saturating_sub(1)).sum::<Duration>();
                let tpot = (n >= 2).then(|| ms(e2e - b.prefill) / (n - 1) as f64);
                out.push((ms(start), ms(b.prefill), ms(e2e), tpot));
            }
            start += b.prefill + b.step_latencies.iter().sum::<Duration>();
        }
        out
    }
    /// One ITL sample per sequence still generating in each decode step (step s produced token
    /// s + 1 of every sequence with more than s + 1 tokens), so sequences that stopped early, or
    /// a small last batch, do not weigh like full ones.
    fn itl_samples(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for b in &self.batches {
            for (s, d) in b.step_latencies.iter().enumerate() {
                let live = b.tokens.iter().filter(|t| t.len() > s + 1).count();
                out.extend(std::iter::repeat_n(ms(*d), live));
            }
        }
        out
    }
    /// Tokens produced by decode steps: every token after each sequence's first.
    fn decode_tokens(&self) -> usize {
        self.batches.iter().flat_map(|b| b.tokens.iter()).map(|t| t.len().saturating_sub(1)).sum()
    }
    pub(super) fn metrics(&self, index: usize) -> RepetitionMetrics {
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

pub(super) fn build_outputs(prompts: &[PreparedPrompt], pass: &PassResult, tok: &Tokenizer) -> Result<Vec<RequestOutput>> {
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

/// Index of the median repetition by wall time (nearest rank: a real run, whose output tokens
/// the report counts).
fn median_index(passes: &[PassResult]) -> usize {
    let mut idx: Vec<usize> = (0..passes.len()).collect();
    idx.sort_by(|&a, &b| passes[a].wall.cmp(&passes[b].wall));
    idx[passes.len().div_ceil(2) - 1]
}

use tokbench_core::report::{confidence_interval_95, median, RequestLatencies};

pub(super) fn inference_metrics(passes: &[PassResult], reps: &[RepetitionMetrics], prompts: &[PreparedPrompt], load: Duration, w: &Workload) -> InferenceMetrics {
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
    let itl: Vec<f64> = passes.iter().flat_map(PassResult::itl_samples).collect();
    let timings: Vec<(f64, f64, f64, Option<f64>)> = passes.iter().flat_map(PassResult::request_timings).collect();
    let column = |f: fn(&(f64, f64, f64, Option<f64>)) -> Option<f64>| -> Vec<f64> { timings.iter().filter_map(f).collect() };
    let request_latencies = RequestLatencies::from_samples(
        &column(|t| Some(t.1)),
        &column(|t| t.3),
        &itl,
        &column(|t| Some(t.2)),
        &column(|t| Some(t.0)),
    );
    InferenceMetrics {
        model_load_time_seconds: load.as_secs_f64(),
        // One median rule everywhere: the midpoint for an even number of repetitions.
        total_inference_time_seconds: median(&times),
        tokens_per_second: median(&tps),
        num_prompts: prompts.len(),
        total_input_tokens,
        total_output_tokens: m.total_output_tokens,
        average_tokens_per_prompt: m.total_output_tokens as f64 / prompts.len() as f64,
        tokens_per_second_min: tps.iter().copied().fold(f64::INFINITY, f64::min),
        tokens_per_second_max: tps.iter().copied().fold(0.0, f64::max),
        tokens_per_second_cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        tokens_per_second_ci95: confidence_interval_95(&tps),
        total_inference_time_seconds_ci95: confidence_interval_95(&times),
        total_inference_time_seconds_min: times.iter().copied().fold(f64::INFINITY, f64::min),
        total_inference_time_seconds_max: times.iter().copied().fold(0.0, f64::max),
        prefill_tokens_per_second: median(&prefill_tps),
        // max_tokens 1: no decode steps, so no decode rate.
        decode_tokens_per_second: if decode_tps.is_empty() { 0.0 } else { median(&decode_tps) },
        ttft_ms: LatencyStats::from_samples(&ttft),
        inter_token_latency_ms: LatencyStats::from_samples(&itl),
        request_latencies,
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

/// The engine's own device memory (bytes): its pools now and at their high-water mark, and
/// what the workload needs by computation.
pub(super) struct EngineMemory {
    pub current: Option<u64>,
    pub peak: Option<u64>,
    pub needed: u64,
}

pub(super) fn gpu_metrics(
    w: &Workload,
    info: &gpu::DeviceInfo,
    engine: &EngineMemory,
    used_before: Option<u64>,
    telemetry: Option<&tokbench_core::report::TelemetrySummary>,
) -> GpuMetrics {
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    let mib = |b: u64| b as f64 / MIB;
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
            process_memory_peak_mb: None,
            workload_memory_needed_mb: None,
            device: w.device.to_string(),
            driver_version: None,
            cuda_version: None,
        };
    };
    let total = (info.memory_total_bytes > 0).then_some(info.memory_total_bytes as f64 / MIB);
    let (reserved, reserved_src) = match gpu::process_memory_bytes(i as u32) {
        Some(b) => (Some(b as f64 / MIB), "NVML per-process used memory"),
        None => match (used_before, gpu::device_used_bytes(i as u32)) {
            (Some(a), Some(b)) => (Some(b.saturating_sub(a) as f64 / MIB), "NVML device used memory minus its value before loading"),
            _ => (None, "unavailable (no NVML)"),
        },
    };
    // The process's NVML figure sampled during inference; where the driver hides per-process
    // figures, the device's used memory peak minus what was used before loading.
    let (process_peak, process_peak_src) = match (telemetry.and_then(|t| t.process_memory_mb_max), telemetry, used_before) {
        (Some(p), _, _) => (Some(p), "max of NVML per-process memory"),
        (None, Some(t), Some(before)) if t.samples > 0 => {
            (Some((t.memory_used_mb_max - before as f64 / MIB).max(0.0)), "max of NVML device used memory minus its value before loading")
        }
        _ => (None, "unavailable (no NVML samples)"),
    };
    let pools = if engine.current.is_some() { "the CUDA memory pools' (candle's stream-ordered pool + the CUDA-graph pool)" } else { "unavailable (the driver gave no memory-pool statistics):" };
    GpuMetrics {
        gpu_name: info.gpu_name.clone(),
        gpu_memory_total_mb: total,
        gpu_memory_allocated_mb: engine.current.map(mib),
        gpu_memory_reserved_mb: reserved,
        gpu_memory_utilization_percent: match (reserved, total) {
            (Some(r), Some(t)) if t > 0.0 => Some(r / t * 100.0),
            _ => None,
        },
        peak_memory_allocated_mb: engine.peak.map(mib),
        memory_source: format!(
            "allocated = {pools} live bytes after inference; peak allocated = the same pools' high-water mark over the job (transient prefill peaks included); reserved = {reserved_src} after inference (CUDA context included); process peak = {process_peak_src}, sampled every {} ms during inference; needed = computed (weights + KV cache of every batch shape + one step's f32 logits); total = NVML",
            TELEMETRY_INTERVAL.as_millis()
        ),
        engine_peak_allocated_mb: engine.peak.map(mib),
        process_memory_peak_mb: process_peak,
        workload_memory_needed_mb: Some(mib(engine.needed)),
        device: w.device.to_string(),
        driver_version: opt(&info.driver_version),
        cuda_version: opt(&info.cuda_version),
    }
}

pub(super) fn nsight_metrics(file_stem: &str, weights: &resolve::WeightsKind) -> NsightMetrics {
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
        // Filled from what nsys saw when the job ran under it: a run nobody profiled saw none.
        nvtx_ranges: Vec::new(),
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
mod latency_tests {
    use super::*;

    fn batch(prefill_ms: u64, steps_ms: &[u64], lens: &[usize]) -> BatchOutput {
        BatchOutput {
            tokens: lens.iter().map(|&n| vec![7; n]).collect(),
            finish_reasons: lens.iter().map(|_| FinishReason::Length).collect(),
            prefill: Duration::from_millis(prefill_ms),
            step_latencies: steps_ms.iter().map(|&m| Duration::from_millis(m)).collect(),
            total: Duration::ZERO,
            decode_path: "cpu",
        }
    }

    /// Two batches one after another; in the first, one sequence stops after 2 tokens while the
    /// other runs 4 (3 steps of 10, 20, 30 ms); the second batch has one sequence of 2 tokens.
    #[test]
    fn per_request_ttft_tpot_e2e_queue_and_itl_per_live_sequence() {
        let pass = PassResult { wall: Duration::from_millis(200), batches: vec![batch(100, &[10, 20, 30], &[2, 4]), batch(50, &[5], &[2])] };
        let t = pass.request_timings();
        // (queue, ttft, e2e, tpot)
        assert_eq!(t[0], (0.0, 100.0, 110.0, Some(10.0)));
        assert_eq!(t[1], (0.0, 100.0, 160.0, Some(20.0)));
        assert_eq!(t[2], (160.0, 50.0, 55.0, Some(5.0)));
        // Step 1 (10 ms) served both sequences, steps 2 and 3 only the long one.
        let mut itl = pass.itl_samples();
        itl.sort_by(f64::total_cmp);
        assert_eq!(itl, vec![5.0, 10.0, 10.0, 20.0, 30.0]);
    }
}
