//! Constructed `BenchReport`s with realistic figures, for unit tests of the tables and charts
//! (and for looking at the charts before real runs exist: see `tests.rs`). Test-only: compiled
//! under `#[cfg(test)]`, not part of the library.

use crate::report::RunRecord;
use tokbench_core::report::*;
use tokbench_core::{Catalog, DeviceSpec, PromptSource, Workload};

/// Where a constructed run "ran".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dev {
    Cpu,
    H100,
    A10,
}

/// A report for `model` (catalog name) at `batch` on `dev`, with throughput `tok_s` (tokens/s).
/// Other figures are derived so they stay consistent (time = tokens / throughput, ...).
pub fn report(model: &str, batch: usize, dev: Dev, tok_s: f64) -> BenchReport {
    let entry = Catalog::get(model).expect("fixture models are catalog models");
    let params = tokbench_core::catalog::estimate_parameters(&entry.config());
    let cfg = entry.config();
    let spec = cfg.spec();
    let (layers, hidden, vocab) = (spec.num_layers, spec.hidden_size, spec.vocab_size);
    let gpu = dev != Dev::Cpu;
    let bytes_per = if gpu { 2.0 } else { 4.0 };
    let size_mb = params as f64 * bytes_per / 1048576.0;
    let num_prompts = batch.max(4);
    let max_tokens = 32;
    let out_tokens = num_prompts * max_tokens;
    let infer_s = out_tokens as f64 / tok_s;
    let itl = 1000.0 * infer_s / (max_tokens as f64 * (num_prompts as f64 / batch as f64).ceil());
    let (gpu_name, total, device) = match dev {
        Dev::Cpu => ("none (cpu)".to_string(), None, "cpu".to_string()),
        Dev::H100 => ("NVIDIA H100 80GB HBM3".to_string(), Some(81559.0), "cuda:0".to_string()),
        Dev::A10 => ("NVIDIA A10".to_string(), Some(23028.0), "cuda:0".to_string()),
    };
    let reserved = total.map(|t: f64| (size_mb + 700.0 + batch as f64 * 12.0).min(t));
    BenchReport {
        schema_version: REPORT_SCHEMA_VERSION,
        model: model.to_string(),
        model_id: entry.hf_repo.unwrap_or(entry.name).to_string(),
        timestamp: "2026-11-28T04:00:00Z".to_string(),
        model_properties: ModelProperties {
            total_parameters: params,
            num_layers: layers,
            hidden_size: hidden,
            vocab_size: vocab,
            model_size_mb: size_mb,
            model_type: cfg.model_type().to_string(),
            weights: "synthetic".into(),
            weights_source: "synthetic (seed 0)".into(),
            dtype: if gpu { "f16".into() } else { "f32".into() },
            tokenizer: "gpt2 fallback (tiktoken-rs r50k_base)".into(),
            config: serde_json::from_str(entry.config_json).unwrap(),
            weights_download: None,
        },
        inference_metrics: InferenceMetrics {
            model_load_time_seconds: 0.2 + size_mb / 900.0,
            total_inference_time_seconds: infer_s,
            tokens_per_second: tok_s,
            num_prompts,
            total_input_tokens: num_prompts * 32,
            total_output_tokens: out_tokens,
            average_tokens_per_prompt: max_tokens as f64,
            tokens_per_second_min: tok_s * 0.97,
            tokens_per_second_max: tok_s * 1.02,
            tokens_per_second_cv: 0.018,
            total_inference_time_seconds_min: infer_s * 0.98,
            total_inference_time_seconds_max: infer_s * 1.03,
            prefill_tokens_per_second: tok_s * 9.0,
            decode_tokens_per_second: tok_s * 1.05,
            ttft_ms: LatencyStats { mean: itl * 3.1, min: itl * 2.5, p50: itl * 3.0, p90: itl * 3.6, p99: itl * 3.9, max: itl * 4.0, count: num_prompts * 2, std: itl * 0.4 },
            tokens_per_second_ci95: Some([tok_s * 0.98, tok_s * 1.02]),
            total_inference_time_seconds_ci95: Some([infer_s * 0.98, infer_s * 1.02]),
            request_latencies: Default::default(),
            inter_token_latency_ms: LatencyStats { mean: itl, min: itl * 0.9, p50: itl, p90: itl * 1.1, p99: itl * 1.3, max: itl * 1.5, count: 62, std: itl * 0.1 },
            warmup_runs: 1,
            model_reused: false,
            decode_path: if gpu { "cuda-graph".into() } else { "cpu".into() },
            decode_kernels: if gpu { "GEMV at 1 row, programmatic dependent launch, fused prefill attention, cuBLASLt bias epilogues".into() } else { String::new() },
            kernel_options: tokbench_core::KernelOptions::default(),
            kernels_run: if gpu { Some(tokbench_core::KernelOptions::default()) } else { None },
            repetitions: 2,
        },
        gpu_metrics: GpuMetrics {
            gpu_name: gpu_name.clone(),
            gpu_memory_total_mb: total,
            gpu_memory_allocated_mb: total.map(|_| size_mb + 20.0),
            gpu_memory_reserved_mb: reserved,
            gpu_memory_utilization_percent: total.zip(reserved).map(|(t, r)| r / t * 100.0),
            peak_memory_allocated_mb: total.map(|_| size_mb + 40.0 + batch as f64 * 8.0),
            memory_source: if gpu { "nvml process + candle allocations".into() } else { "none (cpu)".into() },
            engine_peak_allocated_mb: total.map(|_| size_mb + 40.0 + batch as f64 * 8.0),
            process_memory_peak_mb: reserved,
            workload_memory_needed_mb: if gpu { Some(size_mb * 1.05) } else { None },
            device: device.clone(),
            driver_version: total.map(|_| "580.159.04".into()),
            cuda_version: total.map(|_| "13.0".into()),
        },
        nsight_metrics: NsightMetrics { profile_file: None, profile_name: format!("profile_{}", entry.file_stem()), notes: "not profiled".into(), nvtx_ranges: vec![], nvtx_enabled: false, ..Default::default() },
        workload: Workload {
            model: model.into(),
            device: if gpu { DeviceSpec::Cuda(0) } else { DeviceSpec::Cpu },
            batch_size: batch,
            prompts: PromptSource::Synthetic { num_prompts, input_len: 32 },
            max_tokens,
            repetitions: 2,
            ..Workload::default()
        },
        environment: Environment {
            tokbench_version: tokbench_core::TOKBENCH_VERSION.into(),
            git_commit: None,
            hostname: "fixture".into(),
            os: "linux".into(),
            cpu: "fixture cpu".into(),
            backend: if gpu { "cuda".into() } else { "cpu".into() },
        },
        repetitions: vec![],
        outputs: vec![],
        telemetry: total.map(|t| TelemetrySummary {
            samples: 20,
            interval_ms: 100,
            gpu_name,
            memory_total_mb: t,
            memory_used_mb_max: reserved.unwrap(),
            process_memory_mb_max: reserved,
            utilization_percent_mean: 60.0,
            utilization_percent_max: 90.0,
            power_watts_mean: 200.0,
            power_watts_max: 300.0,
            energy_joules: Some(200.0 * infer_s),
            tokens_per_joule: Some(tok_s / 200.0),
            sm_clock_mhz_max: Some(1980),
            temperature_c_max: Some(55),
            series: Vec::new(),
        }),
        serve: None,
    }
}

pub fn record(sweep: &str, run: &str, report: BenchReport) -> RunRecord {
    RunRecord { run_id: run.into(), sweep_id: sweep.into(), worker_id: "w1".into(), report }
}

fn kernel(name: &str, category: GpuTimeCategory, total_ms: f64, instances: u64, all_ms: f64) -> KernelStat {
    let total_time_ns = (total_ms * 1e6) as u64;
    let avg = total_time_ns as f64 / instances as f64;
    KernelStat {
        name: name.into(),
        category,
        time_percent: total_ms * 100.0 / all_ms,
        total_time_ns,
        instances,
        avg_ns: avg,
        med_ns: avg,
        min_ns: (avg * 0.8) as u64,
        max_ns: (avg * 1.5) as u64,
        stddev_ns: avg * 0.1,
    }
}

/// Makes `r` look like a run profiled under Nsight Systems: a GPU time split and realistic
/// top kernels (cuBLAS GEMMs, softmax, layer norm, ...), scaled by `scale`.
pub fn profiled(mut r: BenchReport, scale: f64) -> BenchReport {
    use GpuTimeCategory::*;
    let ms = |x: f64| x * scale;
    let split = GpuTimeSplit {
        gemm_ns: (ms(61.0) * 1e6) as u64,
        attention_ns: (ms(14.0) * 1e6) as u64,
        normalization_elementwise_ns: (ms(17.5) * 1e6) as u64,
        memcpy_memset_ns: (ms(4.5) * 1e6) as u64,
        sampling_ns: (ms(1.0) * 1e6) as u64,
        other_ns: (ms(2.0) * 1e6) as u64,
    };
    let all = ms(96.5);
    r.nsight_metrics.summary_scope = "timed passes: GPU work that started inside the 3 `inference` NVTX ranges".into();
    r.nsight_metrics.kernels = vec![
        kernel("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas", Gemm, ms(38.2), 4608, all),
        kernel("ampere_fp16_s16816gemm_fp16_64x64_sliced1x2_ldg8_f2f_stages_64x5_tn", Gemm, ms(19.4), 2304, all),
        kernel("softmax_f16", Attention, ms(9.1), 1152, all),
        kernel("layer_norm_f16", NormalizationElementwise, ms(7.8), 2400, all),
        kernel("badd_f16", NormalizationElementwise, ms(5.2), 4800, all),
        kernel("ucopy_f16", NormalizationElementwise, ms(3.1), 3600, all),
    ];
    r.nsight_metrics.gpu_time_split = Some(split);
    r.nsight_metrics.inference_range_seconds = Some(ms(0.12));
    r.nsight_metrics.profile_file = Some(format!("profile_{}.nsys-rep", r.model));
    r.nsight_metrics.notes = "profiled with nsys".into();
    r
}

/// Gives `r` `n` timed repetitions with deterministic jitter (tokens/s, TTFT and step
/// latencies), consistent with its aggregate figures, so per-repetition statistics (95% CIs of
/// the latency medians) have samples. `seed` varies the jitter between reports.
pub fn with_repetitions(mut r: BenchReport, n: usize, seed: u64) -> BenchReport {
    use tokbench_core::report::RepetitionMetrics;
    let im = &r.inference_metrics;
    let (tok_s, infer_s, itl, ttft) = (im.tokens_per_second, im.total_inference_time_seconds, im.inter_token_latency_ms.p50, im.ttft_ms.p50);
    let out_tokens = im.total_output_tokens;
    // A small linear congruential generator: the same jitter on every machine.
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut jitter = move |spread: f64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        1.0 + spread * (((state >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0)
    };
    r.repetitions = (0..n)
        .map(|index| {
            let f = jitter(0.03);
            let steps: Vec<f64> = (0..31).map(|_| itl * f * jitter(0.05)).collect();
            let ttfts: Vec<f64> = (0..r.inference_metrics.num_prompts).map(|_| ttft * jitter(0.08)).collect();
            RepetitionMetrics {
                index,
                total_inference_time_seconds: infer_s * f,
                tokens_per_second: tok_s / f,
                prefill_seconds: infer_s * f * 0.1,
                decode_seconds: infer_s * f * 0.9,
                total_output_tokens: out_tokens,
                ttft_ms: ttfts,
                step_latencies_ms: steps,
            }
        })
        .collect();
    r.inference_metrics.repetitions = n;
    r
}
