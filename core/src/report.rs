//! The result of one benchmark job: the demo's benchmark JSON (`model_properties`,
//! `inference_metrics`, `gpu_metrics`, `nsight_metrics`, same field names and units), extended
//! with latency distributions, repetitions, the workload, the environment and the outputs.
//!
//! Units are in the field names (`_seconds`, `_ms`, `_mb` = MiB = 2^20 bytes, `_percent`).

use crate::workload::Workload;
use crate::KernelOptions;
use serde::{Deserialize, Serialize};

pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// One job's result. An offline run (the worker ran the model) has `model_properties`,
/// `inference_metrics`, `gpu_metrics`, `nsight_metrics`, `repetitions` and `outputs`; a serve run
/// (the worker drove an OpenAI-compatible endpoint, `serve` is set) has none of them: in its JSON
/// they are absent, not zeros, and in Rust they hold their defaults, never to be read (check
/// [`BenchReport::is_serve`] first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "BenchReportRepr", try_from = "BenchReportRepr")]
pub struct BenchReport {
    pub schema_version: u32,
    /// What the user asked for (short name, repo id or path).
    pub model: String,
    /// Resolved identity: HF repo id, local path, or catalog name for tiny models (serve runs:
    /// the served model name).
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
    pub telemetry: Option<TelemetrySummary>,
    /// Serve runs only: what the load generator measured against the endpoint.
    pub serve: Option<crate::serve::ServeReport>,
}

impl BenchReport {
    /// A serve run (the offline sections are absent).
    pub fn is_serve(&self) -> bool {
        self.serve.is_some()
    }

    /// A serve run's report: the offline sections at their defaults (absent from the JSON).
    pub fn for_serve(model: String, timestamp: String, workload: Workload, environment: Environment, serve: crate::serve::ServeReport) -> BenchReport {
        BenchReport {
            schema_version: REPORT_SCHEMA_VERSION,
            model_id: serve.served_model.clone(),
            model,
            timestamp,
            model_properties: ModelProperties::default(),
            inference_metrics: InferenceMetrics::default(),
            gpu_metrics: GpuMetrics::default(),
            nsight_metrics: NsightMetrics::default(),
            workload,
            environment,
            repetitions: Vec::new(),
            outputs: Vec::new(),
            telemetry: None,
            serve: Some(serve),
        }
    }
}

/// The JSON form of [`BenchReport`]: the offline sections optional, so that a serve run's JSON
/// leaves them out instead of writing zeros.
#[derive(Serialize, Deserialize)]
struct BenchReportRepr {
    schema_version: u32,
    model: String,
    model_id: String,
    timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_properties: Option<ModelProperties>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inference_metrics: Option<InferenceMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gpu_metrics: Option<GpuMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nsight_metrics: Option<NsightMetrics>,
    workload: Workload,
    environment: Environment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repetitions: Option<Vec<RepetitionMetrics>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outputs: Option<Vec<RequestOutput>>,
    #[serde(default)]
    telemetry: Option<TelemetrySummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serve: Option<crate::serve::ServeReport>,
}

impl From<BenchReport> for BenchReportRepr {
    fn from(r: BenchReport) -> Self {
        let offline = r.serve.is_none();
        BenchReportRepr {
            schema_version: r.schema_version,
            model: r.model,
            model_id: r.model_id,
            timestamp: r.timestamp,
            model_properties: offline.then_some(r.model_properties),
            inference_metrics: offline.then_some(r.inference_metrics),
            gpu_metrics: offline.then_some(r.gpu_metrics),
            // A serve run has them only when its server was profiled (`--profile`).
            nsight_metrics: (offline || r.nsight_metrics.profile_file.is_some()).then_some(r.nsight_metrics),
            workload: r.workload,
            environment: r.environment,
            repetitions: offline.then_some(r.repetitions),
            outputs: offline.then_some(r.outputs),
            telemetry: r.telemetry,
            serve: r.serve,
        }
    }
}

impl TryFrom<BenchReportRepr> for BenchReport {
    type Error = String;
    fn try_from(r: BenchReportRepr) -> Result<Self, String> {
        let offline = r.serve.is_none();
        fn need<T: Default>(v: Option<T>, offline: bool, name: &str) -> Result<T, String> {
            match v {
                Some(v) => Ok(v),
                None if !offline => Ok(T::default()),
                None => Err(format!("missing field `{name}` (an offline run's report has it; a serve run's has `serve`)")),
            }
        }
        Ok(BenchReport {
            schema_version: r.schema_version,
            model: r.model,
            model_id: r.model_id,
            timestamp: r.timestamp,
            model_properties: need(r.model_properties, offline, "model_properties")?,
            inference_metrics: need(r.inference_metrics, offline, "inference_metrics")?,
            gpu_metrics: need(r.gpu_metrics, offline, "gpu_metrics")?,
            nsight_metrics: need(r.nsight_metrics, offline, "nsight_metrics")?,
            workload: r.workload,
            environment: r.environment,
            repetitions: need(r.repetitions, offline, "repetitions")?,
            outputs: need(r.outputs, offline, "outputs")?,
            telemetry: r.telemetry,
            serve: r.serve,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Set when this job tried to download the weights from the Hugging Face Hub (they were not
    /// in the cache): what it fetched and how long it took (not part of the load time), or why
    /// it could not (then `--weights auto` ran synthetic weights). Absent: no download needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_download: Option<WeightsDownload>,
}

/// A download of a model's files from the Hugging Face Hub, before loading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsDownload {
    /// The Hub repo id.
    pub repo: String,
    pub revision: String,
    /// The commit the files came from (None when the download failed before the listing).
    pub commit: Option<String>,
    /// Bytes of the model's files (config, tokenizer, weights) in all.
    pub bytes_total: u64,
    /// Bytes transferred by this job (less than `bytes_total` when some files were cached or resumed).
    pub bytes_downloaded: u64,
    /// Wall time of the download (listing, transfers, verification).
    pub seconds: f64,
    /// Why the download failed (the job then used synthetic weights); None when it succeeded.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// 95% confidence interval of the mean tokens/s over the repetitions (Student's t),
    /// [low, high]; None with fewer than two repetitions or in older reports.
    #[serde(default)]
    pub tokens_per_second_ci95: Option<[f64; 2]>,
    /// 95% confidence interval of the mean pass time (s) over the repetitions.
    #[serde(default)]
    pub total_inference_time_seconds_ci95: Option<[f64; 2]>,
    pub total_inference_time_seconds_min: f64,
    pub total_inference_time_seconds_max: f64,
    /// Input tokens / prefill time (prefill = prompt forward pass up to first token on host).
    pub prefill_tokens_per_second: f64,
    /// Tokens generated after the first / decode time.
    pub decode_tokens_per_second: f64,
    /// Time to first token per request (ms), over all requests of all timed repetitions.
    pub ttft_ms: LatencyStats,
    /// Per-token decode latency (ms): wall time of one decode step of a batch, one sample per
    /// sequence still generating in that step.
    pub inter_token_latency_ms: LatencyStats,
    /// TTFT, TPOT, ITL, E2E latency and queueing under vLLM's names (`mean_ttft_ms`,
    /// `median_tpot_ms`, `p99_itl_ms`, ...), at the top level of `inference_metrics`.
    #[serde(flatten)]
    pub request_latencies: RequestLatencies,
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
    /// The median (midpoint of the two middle samples for an even count, as everywhere in
    /// tokbench: [`median`]).
    pub p50: f64,
    /// Nearest-rank percentiles.
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub count: usize,
    /// Sample standard deviation (n - 1); 0 for fewer than two samples or older reports.
    #[serde(default)]
    pub std: f64,
}

/// The median of `samples`: the middle value, or the midpoint of the two middle values for an
/// even count (NaN for none). The one median rule of every tokbench figure.
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Sample standard deviation (n - 1 in the denominator); 0 for fewer than two samples.
pub fn sample_std(samples: &[f64]) -> f64 {
    let n = samples.len();
    if n < 2 {
        return 0.0;
    }
    let mean = samples.iter().sum::<f64>() / n as f64;
    (samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
}

/// Two-sided 97.5% quantile of Student's t with `df` degrees of freedom (for 95% intervals).
pub fn student_t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110,
        2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.042 - (df - 30) as f64 * (2.042 - 2.000) / 30.0,
        61..=120 => 2.000 - (df - 60) as f64 * (2.000 - 1.980) / 60.0,
        _ => 1.960,
    }
}

/// 95% confidence interval of the mean of `samples` (Student's t, n - 1 degrees of freedom):
/// `[low, high]`, or None for fewer than two samples.
pub fn confidence_interval_95(samples: &[f64]) -> Option<[f64; 2]> {
    let n = samples.len();
    if n < 2 {
        return None;
    }
    let mean = samples.iter().sum::<f64>() / n as f64;
    let half = student_t_975(n - 1) * sample_std(samples) / (n as f64).sqrt();
    Some([mean - half, mean + half])
}

/// Welch's t-test of two independent samples: whether their means differ at p < 0.05 (two-sided),
/// with the statistic and the Welch–Satterthwaite degrees of freedom. None with fewer than two
/// samples on either side, or with no variance on both.
pub fn welch_test(a: &[f64], b: &[f64]) -> Option<WelchTest> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let (va, vb) = (sample_std(a).powi(2) / a.len() as f64, sample_std(b).powi(2) / b.len() as f64);
    if va + vb <= 0.0 {
        return None;
    }
    let t = (mean(a) - mean(b)) / (va + vb).sqrt();
    let df = (va + vb).powi(2) / (va.powi(2) / (a.len() - 1) as f64 + vb.powi(2) / (b.len() - 1) as f64);
    // The critical value of the whole degrees of freedom below df (conservative).
    let critical = student_t_975((df.floor() as usize).max(1));
    Some(WelchTest { t, df, critical, significant: t.abs() > critical })
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WelchTest {
    pub t: f64,
    pub df: f64,
    /// |t| beyond this is significant at p < 0.05 (two-sided).
    pub critical: f64,
    pub significant: bool,
}

impl LatencyStats {
    /// Mean, median, nearest-rank p90/p99, min/max and sample std of the given samples.
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
            p50: median(&s),
            p90: pct(90.0),
            p99: pct(99.0),
            max: s[s.len() - 1],
            count: s.len(),
            std: sample_std(&s),
        }
    }
}

/// Per-request latencies under the names vLLM's benchmarks print (`benchmark_serving.py`), over
/// every request of every timed repetition, in ms:
/// - TTFT: from the start of the request's batch to its first token on the host (prefill);
/// - TPOT: (E2E - TTFT) / (output tokens - 1), requests with at least two output tokens;
/// - ITL: one sample per live sequence per decode step (the step's wall time);
/// - E2EL: from the start of its batch to its last token on the host;
/// - queue: how long the request waited behind earlier batches of the same pass (offline runs
///   submit every prompt at the start of a pass).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestLatencies {
    pub mean_ttft_ms: f64,
    pub median_ttft_ms: f64,
    pub std_ttft_ms: f64,
    pub p90_ttft_ms: f64,
    pub p99_ttft_ms: f64,
    pub mean_tpot_ms: f64,
    pub median_tpot_ms: f64,
    pub std_tpot_ms: f64,
    pub p90_tpot_ms: f64,
    pub p99_tpot_ms: f64,
    pub mean_itl_ms: f64,
    pub median_itl_ms: f64,
    pub std_itl_ms: f64,
    pub p90_itl_ms: f64,
    pub p99_itl_ms: f64,
    pub mean_e2el_ms: f64,
    pub median_e2el_ms: f64,
    pub std_e2el_ms: f64,
    pub p90_e2el_ms: f64,
    pub p99_e2el_ms: f64,
    pub mean_queue_ms: f64,
    pub median_queue_ms: f64,
    pub p99_queue_ms: f64,
}

impl RequestLatencies {
    pub fn from_samples(ttft: &[f64], tpot: &[f64], itl: &[f64], e2el: &[f64], queue: &[f64]) -> RequestLatencies {
        let (t, p, i, e, q) = (
            LatencyStats::from_samples(ttft),
            LatencyStats::from_samples(tpot),
            LatencyStats::from_samples(itl),
            LatencyStats::from_samples(e2el),
            LatencyStats::from_samples(queue),
        );
        RequestLatencies {
            mean_ttft_ms: t.mean,
            median_ttft_ms: t.p50,
            std_ttft_ms: t.std,
            p90_ttft_ms: t.p90,
            p99_ttft_ms: t.p99,
            mean_tpot_ms: p.mean,
            median_tpot_ms: p.p50,
            std_tpot_ms: p.std,
            p90_tpot_ms: p.p90,
            p99_tpot_ms: p.p99,
            mean_itl_ms: i.mean,
            median_itl_ms: i.p50,
            std_itl_ms: i.std,
            p90_itl_ms: i.p90,
            p99_itl_ms: i.p99,
            mean_e2el_ms: e.mean,
            median_e2el_ms: e.p50,
            std_e2el_ms: e.std,
            p90_e2el_ms: e.p90,
            p99_e2el_ms: e.p99,
            mean_queue_ms: q.mean,
            median_queue_ms: q.p50,
            p99_queue_ms: q.p99,
        }
    }
}

/// The demo's gpu_metrics. On CPU every memory field is None (null) and `gpu_name` says "none (cpu)".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuMetrics {
    pub gpu_name: String,
    pub gpu_memory_total_mb: Option<f64>,
    /// MiB in the engine's live device allocations after inference, measured: the CUDA memory
    /// pools' current usage (candle's stream-ordered pool + the CUDA-graph pool): weights, KV
    /// caches and buffers kept for the next job. Like torch.cuda.memory_allocated; it excludes
    /// the CUDA context, cuBLAS workspace and pool slack. None on the CPU or where the driver
    /// gives no pool statistics.
    pub gpu_memory_allocated_mb: Option<f64>,
    /// MiB this process holds on the device per NVML after inference: CUDA context + pools +
    /// everything else (what nvidia-smi shows for the process).
    pub gpu_memory_reserved_mb: Option<f64>,
    /// gpu_memory_reserved_mb / total * 100: the share of the GPU's memory this process holds.
    pub gpu_memory_utilization_percent: Option<f64>,
    /// Peak MiB of the engine's live device allocations over the job, measured: the pools'
    /// high-water mark (so transient prefill peaks count; sampling cannot miss them). Like
    /// torch.cuda.max_memory_allocated. The table's and the memory graph's "GPU Mem".
    pub peak_memory_allocated_mb: Option<f64>,
    /// How the memory figures were obtained (so readers know what is counted).
    pub memory_source: String,
    /// The same pool high-water mark as peak_memory_allocated_mb (its explicit name).
    #[serde(default)]
    pub engine_peak_allocated_mb: Option<f64>,
    /// Max of the process's NVML device memory (CUDA context included) sampled every 100 ms
    /// during the timed passes; short peaks between samples are missed.
    #[serde(default)]
    pub process_memory_peak_mb: Option<f64>,
    /// What the workload needs at least (MiB), computed: weights + KV cache for every batch
    /// shape the job runs (batch × (prompt + max_tokens − 1) positions; the last generated
    /// token is never fed back) + f32 logits of one step.
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
    /// NVTX ranges (base names) an nsys profile of this run saw; empty when it was not
    /// profiled or emitted none (a worker built without the nvtx feature).
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
    /// What `kernels`, `memory_ops` and `gpu_time_split` cover: "timed passes" (the GPU work
    /// that started inside the `inference` NVTX ranges, read from the profile's SQLite export)
    /// or "whole process" (when the ranges could not be read; the reason follows). The
    /// `.nsys-rep` itself always holds the whole process.
    #[serde(default)]
    pub summary_scope: String,
    /// Each timed pass as nsys saw it: the `inference` NVTX ranges' durations, seconds, in order.
    #[serde(default)]
    pub inference_range_pass_seconds: Vec<f64>,
    /// inference_range_seconds / the worker's median pass time
    /// (inference_metrics.total_inference_time_seconds): how closely the profile's per-pass
    /// time and the worker's clock agree (1.0 = exactly).
    #[serde(default)]
    pub inference_range_vs_pass_time: Option<f64>,
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
    /// Choosing the next tokens and the step's bookkeeping (argmax, top-k sort, advancing ids
    /// and positions).
    Sampling,
    Other,
}

impl GpuTimeCategory {
    pub const ALL: [GpuTimeCategory; 6] = [
        GpuTimeCategory::Gemm,
        GpuTimeCategory::Attention,
        GpuTimeCategory::NormalizationElementwise,
        GpuTimeCategory::MemcpyMemset,
        GpuTimeCategory::Sampling,
        GpuTimeCategory::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            GpuTimeCategory::Gemm => "gemm",
            GpuTimeCategory::Attention => "attention",
            GpuTimeCategory::NormalizationElementwise => "normalization+elementwise",
            GpuTimeCategory::MemcpyMemset => "memcpy+memset",
            GpuTimeCategory::Sampling => "sampling",
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
    #[serde(default)]
    pub sampling_ns: u64,
    pub other_ns: u64,
}

impl GpuTimeSplit {
    pub fn get(&self, c: GpuTimeCategory) -> u64 {
        match c {
            GpuTimeCategory::Gemm => self.gemm_ns,
            GpuTimeCategory::Attention => self.attention_ns,
            GpuTimeCategory::NormalizationElementwise => self.normalization_elementwise_ns,
            GpuTimeCategory::MemcpyMemset => self.memcpy_memset_ns,
            GpuTimeCategory::Sampling => self.sampling_ns,
            GpuTimeCategory::Other => self.other_ns,
        }
    }

    pub fn add(&mut self, c: GpuTimeCategory, ns: u64) {
        let slot = match c {
            GpuTimeCategory::Gemm => &mut self.gemm_ns,
            GpuTimeCategory::Attention => &mut self.attention_ns,
            GpuTimeCategory::NormalizationElementwise => &mut self.normalization_elementwise_ns,
            GpuTimeCategory::MemcpyMemset => &mut self.memcpy_memset_ns,
            GpuTimeCategory::Sampling => &mut self.sampling_ns,
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

    pub(super) fn metrics_for_tests() -> InferenceMetrics {
        metrics()
    }

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
            tokens_per_second_ci95: Some([2.5, 3.5]),
            total_inference_time_seconds_ci95: None,
            total_inference_time_seconds_min: 2.0,
            total_inference_time_seconds_max: 2.0,
            prefill_tokens_per_second: 6.0,
            decode_tokens_per_second: 7.0,
            ttft_ms: LatencyStats::default(),
            inter_token_latency_ms: LatencyStats::default(),
            request_latencies: RequestLatencies::from_samples(&[10.0, 20.0], &[1.0, 3.0], &[1.0, 2.0, 3.0, 4.0], &[30.0, 50.0], &[0.0, 25.0]),
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

#[cfg(test)]
mod statistics_tests {
    use super::*;

    #[test]
    fn welch_separates_a_real_change_from_noise() {
        let base = [100.0, 101.0, 99.0, 100.5, 99.5];
        let slower = [90.0, 91.0, 89.0, 90.5, 89.5];
        let w = welch_test(&base, &slower).unwrap();
        assert!(w.significant && w.t > 0.0, "{w:?}");
        let noisy = [95.0, 105.0, 100.0, 98.0, 103.0];
        assert!(!welch_test(&base, &noisy).unwrap().significant);
        assert_eq!(welch_test(&base, &[100.0]), None);
        assert_eq!(welch_test(&[1.0, 1.0], &[1.0, 1.0]), None);
    }

    #[test]
    fn one_median_rule_midpoint_for_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(LatencyStats::from_samples(&[1.0, 2.0, 3.0, 10.0]).p50, 2.5);
    }

    #[test]
    fn confidence_interval_uses_students_t() {
        // mean 10, sample std 1 (n - 1), n = 4: half width t(3) * 1 / 2 = 3.182 / 2.
        let s = [9.0, 10.0, 11.0, 10.0];
        let sd = sample_std(&s);
        assert!((sd - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let [lo, hi] = confidence_interval_95(&s).unwrap();
        let half = 3.182 * sd / 2.0;
        assert!((lo - (10.0 - half)).abs() < 1e-9 && (hi - (10.0 + half)).abs() < 1e-9, "{lo} {hi}");
        assert_eq!(confidence_interval_95(&[1.0]), None);
        assert_eq!(student_t_975(1), 12.706);
        assert_eq!(student_t_975(1000), 1.960);
    }

    #[test]
    fn vllm_names_are_at_the_top_of_inference_metrics_and_old_reports_parse() {
        let r = RequestLatencies::from_samples(&[10.0, 20.0], &[1.0, 3.0], &[1.0, 2.0, 3.0, 4.0], &[30.0, 50.0], &[0.0, 25.0]);
        assert_eq!((r.mean_ttft_ms, r.median_ttft_ms, r.median_tpot_ms, r.median_itl_ms, r.p99_e2el_ms), (15.0, 15.0, 2.0, 2.5, 50.0));
        let m = super::kernel_fields_tests_metrics();
        let json = serde_json::to_value(&m).unwrap();
        for key in ["mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_itl_ms", "mean_e2el_ms", "median_queue_ms"] {
            assert!(json.get(key).is_some(), "{key} missing: {json}");
        }
        assert_eq!(json["tokens_per_second_ci95"][0], 2.5);
        assert_eq!(serde_json::from_value::<InferenceMetrics>(json.clone()).unwrap(), m);
        let mut old = json;
        let obj = old.as_object_mut().unwrap();
        obj.retain(|k, _| !k.ends_with("_ms") || k == "ttft_ms" || k == "inter_token_latency_ms");
        obj.remove("tokens_per_second_ci95");
        let parsed: InferenceMetrics = serde_json::from_value(old).unwrap();
        assert_eq!(parsed.request_latencies, RequestLatencies::default());
        assert_eq!(parsed.tokens_per_second_ci95, None);
    }
}

#[cfg(test)]
fn kernel_fields_tests_metrics() -> InferenceMetrics {
    kernel_fields_tests::metrics_for_tests()
}
