//! The result of one benchmark job: the demo's benchmark JSON (`model_properties`,
//! `inference_metrics`, `gpu_metrics`, `nsight_metrics`, same field names and units), extended
//! with latency distributions, repetitions, the workload, the environment and the outputs.
//!
//! Units are in the field names (`_seconds`, `_ms`, `_mb` = MiB = 2^20 bytes, `_percent`).

use crate::workload::Workload;
use crate::KernelOptions;
use serde::{Deserialize, Serialize};

pub const REPORT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub schema_version: u32,
    /// What the user asked for (short name, repo id or path).
    pub model: String,
    /// Resolved identity: HF repo id, local path, or catalog name for tiny models.
    pub model_id: String,
    /// RFC 3339 UTC time the job started.
    pub timestamp: String,
    pub model_properties: ModelProperties,
    pub inference_metrics: InferenceMetrics,
    pub gpu_metrics: GpuMetrics,
    pub nsight_metrics: NsightMetrics,
    pub workload: Workload,
    pub environment: Environment,
    /// One entry per timed repetition, in order.
    pub repetitions: Vec<RepetitionMetrics>,
    /// `output_processing`: per request of the last timed repetition.
    pub outputs: Vec<RequestOutput>,
    /// NVML samples summarised over the job; None when no NVML (CPU machine), never zeros.
    #[serde(default)]
    pub telemetry: Option<TelemetrySummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelProperties {
    /// Counted from the loaded tensors (tied lm_head once).
    pub total_parameters: u64,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    /// Bytes of the loaded weight tensors / 2^20.
    pub model_size_mb: f64,
    pub model_type: String,
    /// "real" or "synthetic".
    pub weights: String,
    /// Where real weights came from (path), or "synthetic (seed N)".
    pub weights_source: String,
    pub dtype: String,
    /// Which tokenizer produced the token ids: "tokenizer.json at PATH", "vocab.json+merges.txt at PATH",
    /// or "gpt2 fallback (tiktoken-rs r50k_base)".
    pub tokenizer: String,
    /// The full config used, Hugging Face layout.
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceMetrics {
    /// Wall time from start of loading (config, weights, tokenizer) to model ready on the
    /// device, device synchronised.
    pub model_load_time_seconds: f64,
    /// Median over repetitions of the wall time of one pass over all prompts (all batches):
    /// from before tokenised prompts are copied to the device to after the last token is on the host.
    pub total_inference_time_seconds: f64,
    /// Median over repetitions of total_output_tokens / inference time.
    pub tokens_per_second: f64,
    pub num_prompts: usize,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub average_tokens_per_prompt: f64,
    // --- extensions ---
    pub tokens_per_second_min: f64,
    pub tokens_per_second_max: f64,
    /// Coefficient of variation of tokens/s over repetitions (stddev / mean), 0..1.
    pub tokens_per_second_cv: f64,
    pub total_inference_time_seconds_min: f64,
    pub total_inference_time_seconds_max: f64,
    /// Input tokens / prefill time (prefill = prompt forward pass up to first token on host).
    pub prefill_tokens_per_second: f64,
    /// Tokens generated after the first / decode time.
    pub decode_tokens_per_second: f64,
    /// Time to first token per request (ms), over all requests of all timed repetitions.
    pub ttft_ms: LatencyStats,
    /// Per-token decode latency (ms): wall time of one decode step of a batch.
    pub inter_token_latency_ms: LatencyStats,
    pub warmup_runs: usize,
    pub repetitions: usize,
    /// true when the model came from the worker's cache of the previous job (the sweep asked
    /// for `reuse_model`): `model_load_time_seconds` is then not a cold load.
    #[serde(default)]
    pub model_reused: bool,
    /// How decode steps ran: "cpu" (candle ops + tokbench's few-row matmul), "eager" (candle
    /// ops on CUDA), "fused" (tokbench's fused CUDA kernels) or "cuda-graph" (those kernels
    /// captured once and replayed). Empty in reports from before this field.
    #[serde(default)]
    pub decode_path: String,
    /// On CUDA, [`Self::kernels_run`] in words, e.g. "GEMV at 1 row, programmatic dependent
    /// launch, fused prefill attention, cuBLASLt bias epilogues"; empty on the CPU and in reports
    /// from before this field.
    #[serde(default)]
    pub decode_kernels: String,
    /// The engine options the job asked for (its workload's `kernels`). Reports from before this
    /// field read as the defaults.
    #[serde(default)]
    pub kernel_options: KernelOptions,
    /// The engine options that actually ran: the asked ones with programmatic dependent launch
    /// off where the device cannot do it (before compute capability 9.0) and `decode` the path
    /// the last batch's decode steps took (`fused` after a failed CUDA-graph capture, `eager` for
    /// sampled decoding). None on the CPU (tokbench's CUDA kernels do not run there) and in
    /// reports from before this field.
    #[serde(default)]
    pub kernels_run: Option<KernelOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub count: usize,
}

impl LatencyStats {
    /// Nearest-rank percentiles of the given samples.
    pub fn from_samples(samples: &[f64]) -> LatencyStats {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| {
            let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
            s[rank.clamp(1, s.len()) - 1]
        };
        LatencyStats {
            mean: s.iter().sum::<f64>() / s.len() as f64,
            min: s[0],
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            max: s[s.len() - 1],
            count: s.len(),
        }
    }
}

/// The demo's gpu_metrics. On CPU every memory field is None (null) and `gpu_name` says "none (cpu)".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuMetrics {
    pub gpu_name: String,
    pub gpu_memory_total_mb: Option<f64>,
    /// Bytes held by live tensors of this process after loading (weights + buffers).
    pub gpu_memory_allocated_mb: Option<f64>,
    /// Bytes this process holds on the device per NVML (context + allocator pools + tensors).
    pub gpu_memory_reserved_mb: Option<f64>,
    /// reserved / total * 100.
    pub gpu_memory_utilization_percent: Option<f64>,
    /// Peak of the process's device memory during inference.
    pub peak_memory_allocated_mb: Option<f64>,
    /// How the memory figures were obtained (so readers know what is counted).
    pub memory_source: String,
    /// Peak bytes (MiB) of device memory the engine itself allocated over the job (weights,
    /// KV cache, activations, logits, CUDA-graph memory), from the CUDA memory pools' high-water
    /// marks: comparable to torch.cuda.max_memory_allocated. None on the CPU / older reports.
    #[serde(default)]
    pub engine_peak_allocated_mb: Option<f64>,
    /// What the workload needs at least (MiB): weights + KV cache for batch × (input + output)
    /// positions + f32 logits of one step.
    #[serde(default)]
    pub workload_memory_needed_mb: Option<f64>,
    pub device: String,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NsightMetrics {
    pub profile_file: Option<String>,
    pub profile_name: String,
    pub notes: String,
    /// NVTX ranges this run emitted (when built with the nvtx feature).
    pub nvtx_ranges: Vec<String>,
    pub nvtx_enabled: bool,
    // --- filled from `nsys stats` when the job ran under Nsight Systems (profile = true);
    // empty / None otherwise. `#[serde(default)]` so reports written before these existed parse.
    /// GPU kernels by total GPU time, descending (cuda_gpu_kern_sum), at most the top N.
    #[serde(default)]
    pub kernels: Vec<KernelStat>,
    /// NVTX ranges with their durations (nvtx_sum).
    #[serde(default)]
    pub nvtx: Vec<NvtxRangeStat>,
    /// GPU memory operations: memcpy by direction, memset (cuda_gpu_mem_time_sum).
    #[serde(default)]
    pub memory_ops: Vec<MemOpStat>,
    /// GPU busy time split by kind of work, over all kernels and memory operations.
    #[serde(default)]
    pub gpu_time_split: Option<GpuTimeSplit>,
    /// Median duration of the `inference [<model>]` NVTX range, seconds (one instance per pass
    /// over the prompts); compare with inference_metrics.total_inference_time_seconds.
    #[serde(default)]
    pub inference_range_seconds: Option<f64>,
}

/// What a GPU kernel (or memory operation) spends its time on, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuTimeCategory {
    /// Matrix multiplies (cuBLAS / cuBLASLt / CUTLASS).
    Gemm,
    /// Attention-specific kernels (softmax, fused / flash attention).
    Attention,
    /// Layer norm and elementwise / copy / reduction kernels.
    NormalizationElementwise,
    /// Memory copies and memsets.
    MemcpyMemset,
    Other,
}

impl GpuTimeCategory {
    pub const ALL: [GpuTimeCategory; 5] = [
        GpuTimeCategory::Gemm,
        GpuTimeCategory::Attention,
        GpuTimeCategory::NormalizationElementwise,
        GpuTimeCategory::MemcpyMemset,
        GpuTimeCategory::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            GpuTimeCategory::Gemm => "gemm",
            GpuTimeCategory::Attention => "attention",
            GpuTimeCategory::NormalizationElementwise => "normalization+elementwise",
            GpuTimeCategory::MemcpyMemset => "memcpy+memset",
            GpuTimeCategory::Other => "other",
        }
    }
}

/// One row of `nsys stats --report cuda_gpu_kern_sum`. Times in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelStat {
    pub name: String,
    pub category: GpuTimeCategory,
    /// Share of all kernel time, as nsys prints it (0..100).
    pub time_percent: f64,
    pub total_time_ns: u64,
    pub instances: u64,
    pub avg_ns: f64,
    pub med_ns: f64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub stddev_ns: f64,
}

/// One row of `nsys stats --report nvtx_sum`. Times in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NvtxRangeStat {
    /// The range name as nsys prints it (`inference [facebook/opt-125m]`; push/pop ranges may
    /// carry a leading `:`, the empty domain).
    pub range: String,
    /// "StartEnd" (Rust nvtx::Range) or "PushPop".
    pub style: String,
    pub time_percent: f64,
    pub total_time_ns: u64,
    pub instances: u64,
    pub avg_ns: f64,
    pub med_ns: f64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub stddev_ns: f64,
}

/// One row of `nsys stats --report cuda_gpu_mem_time_sum`. Times in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemOpStat {
    /// `[CUDA memcpy Host-to-Device]`, `[CUDA memcpy Device-to-Device]`, `[CUDA memset]`, ...
    pub operation: String,
    pub time_percent: f64,
    pub total_time_ns: u64,
    pub count: u64,
    pub avg_ns: f64,
    pub med_ns: f64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub stddev_ns: f64,
}

/// GPU busy time by category, nanoseconds, summed over every kernel and memory operation of
/// the profile (not only the top kernels listed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuTimeSplit {
    pub gemm_ns: u64,
    pub attention_ns: u64,
    pub normalization_elementwise_ns: u64,
    pub memcpy_memset_ns: u64,
    pub other_ns: u64,
}

impl GpuTimeSplit {
    pub fn get(&self, c: GpuTimeCategory) -> u64 {
        match c {
            GpuTimeCategory::Gemm => self.gemm_ns,
            GpuTimeCategory::Attention => self.attention_ns,
            GpuTimeCategory::NormalizationElementwise => self.normalization_elementwise_ns,
            GpuTimeCategory::MemcpyMemset => self.memcpy_memset_ns,
            GpuTimeCategory::Other => self.other_ns,
        }
    }

    pub fn add(&mut self, c: GpuTimeCategory, ns: u64) {
        let slot = match c {
            GpuTimeCategory::Gemm => &mut self.gemm_ns,
            GpuTimeCategory::Attention => &mut self.attention_ns,
            GpuTimeCategory::NormalizationElementwise => &mut self.normalization_elementwise_ns,
            GpuTimeCategory::MemcpyMemset => &mut self.memcpy_memset_ns,
            GpuTimeCategory::Other => &mut self.other_ns,
        };
        *slot = slot.saturating_add(ns);
    }

    pub fn total_ns(&self) -> u64 {
        GpuTimeCategory::ALL.iter().map(|c| self.get(*c)).sum()
    }

    /// Share of the total in percent (0 when nothing ran).
    pub fn percent(&self, c: GpuTimeCategory) -> f64 {
        let total = self.total_ns();
        if total == 0 {
            0.0
        } else {
            self.get(c) as f64 * 100.0 / total as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub tokbench_version: String,
    pub git_commit: Option<String>,
    pub hostname: String,
    pub os: String,
    pub cpu: String,
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepetitionMetrics {
    pub index: usize,
    pub total_inference_time_seconds: f64,
    pub tokens_per_second: f64,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub total_output_tokens: usize,
    /// Per request (prompt order): time to first token in ms.
    pub ttft_ms: Vec<f64>,
    /// Per decode step of every batch, in order: ms.
    pub step_latencies_ms: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestOutput {
    pub prompt: String,
    pub prompt_tokens: usize,
    pub generated_token_ids: Vec<u32>,
    pub generated_text: String,
    pub ttft_ms: f64,
    /// "length" (max_tokens reached) or "eos".
    pub finish_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySummary {
    pub samples: usize,
    pub interval_ms: u64,
    pub gpu_name: String,
    pub memory_total_mb: f64,
    pub memory_used_mb_max: f64,
    pub process_memory_mb_max: Option<f64>,
    pub utilization_percent_mean: f64,
    pub utilization_percent_max: f64,
    pub power_watts_mean: f64,
    pub power_watts_max: f64,
    /// Energy used during inference (NVML total energy counter delta, or power integrated), joules.
    pub energy_joules: Option<f64>,
    pub tokens_per_joule: Option<f64>,
    pub sm_clock_mhz_max: Option<u32>,
    pub temperature_c_max: Option<u32>,
    /// The readings over time (at most [`TelemetryPoint::MAX_POINTS`]; longer jobs keep an
    /// evenly thinned series), for `tokbench show`, the report's telemetry chart and export.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<TelemetryPoint>,
}

/// One NVML reading of a job's telemetry. Each figure is None when the GPU/driver does not
/// report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryPoint {
    /// Milliseconds since the sampler started (the start of the job's timed work).
    pub t_ms: f64,
    /// Device memory used by all processes, MiB.
    pub memory_used_mb: f64,
    /// Device memory used by this process, MiB.
    pub process_memory_mb: Option<f64>,
    /// SM busy percentage over the driver's last sample period.
    pub utilization_percent: Option<u32>,
    pub power_watts: Option<f64>,
    pub sm_clock_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
}

impl TelemetryPoint {
    /// 100 ms samples: six minutes at full resolution, about 40 KB of JSON per minute.
    pub const MAX_POINTS: usize = 3600;
}

#[cfg(test)]
mod nsight_tests {
    use super::*;

    #[test]
    fn nsight_metrics_without_profile_fields_still_parse() {
        // The shape written before the nsys-derived fields existed.
        let old = r#"{"profile_file":null,"profile_name":"p","notes":"n","nvtx_ranges":["inference"],"nvtx_enabled":true}"#;
        let m: NsightMetrics = serde_json::from_str(old).unwrap();
        assert_eq!(m.profile_name, "p");
        assert!(m.kernels.is_empty() && m.nvtx.is_empty() && m.gpu_time_split.is_none());
    }

    #[test]
    fn time_split_percentages() {
        let mut s = GpuTimeSplit::default();
        s.add(GpuTimeCategory::Gemm, 300);
        s.add(GpuTimeCategory::Other, 100);
        assert_eq!(s.total_ns(), 400);
        assert_eq!(s.percent(GpuTimeCategory::Gemm), 75.0);
        assert_eq!(s.percent(GpuTimeCategory::Attention), 0.0);
        let json = serde_json::to_string(&GpuTimeCategory::NormalizationElementwise).unwrap();
        assert_eq!(json, "\"normalization_elementwise\"");
    }
}

#[cfg(test)]
mod kernel_fields_tests {
    use super::*;
    use crate::DecodePath;

    fn metrics() -> InferenceMetrics {
        InferenceMetrics {
            model_load_time_seconds: 1.0,
            total_inference_time_seconds: 2.0,
            tokens_per_second: 3.0,
            num_prompts: 1,
            total_input_tokens: 4,
            total_output_tokens: 5,
            average_tokens_per_prompt: 4.0,
            tokens_per_second_min: 3.0,
            tokens_per_second_max: 3.0,
            tokens_per_second_cv: 0.0,
            total_inference_time_seconds_min: 2.0,
            total_inference_time_seconds_max: 2.0,
            prefill_tokens_per_second: 6.0,
            decode_tokens_per_second: 7.0,
            ttft_ms: LatencyStats::default(),
            inter_token_latency_ms: LatencyStats::default(),
            warmup_runs: 0,
            repetitions: 1,
            model_reused: false,
            decode_path: "cuda-graph".into(),
            decode_kernels: "GEMV at 1 row".into(),
            kernel_options: KernelOptions { gemv_max_rows: 0, ..KernelOptions::default() },
            kernels_run: Some(KernelOptions { decode: DecodePath::Fused, pdl: false, gemv_max_rows: 0, ..KernelOptions::default() }),
        }
    }

    #[test]
    fn kernel_options_round_trip_and_old_reports_parse_without_them() {
        let m = metrics();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["kernel_options"]["gemv_max_rows"], 0);
        assert_eq!(json["kernels_run"]["decode"], "fused");
        assert_eq!(json["kernels_run"]["pdl"], false);
        assert_eq!(serde_json::from_value::<InferenceMetrics>(json.clone()).unwrap(), m);

        // A report written before the structured fields.
        let mut old = json;
        let obj = old.as_object_mut().unwrap();
        obj.remove("kernel_options");
        obj.remove("kernels_run");
        let parsed: InferenceMetrics = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.kernel_options, KernelOptions::default());
        assert_eq!(parsed.kernels_run, None);
        assert_eq!(parsed.decode_path, "cuda-graph");
    }
}
