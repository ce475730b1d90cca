//! The CSV report: one line per run, every figure of `Row`.

use crate::report::error::ReportError;
use crate::report::model::ReportData;
use std::path::PathBuf;

pub fn csv_bytes(data: &ReportData) -> Result<Vec<u8>, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "run_id",
        "sweep_id",
        "worker_id",
        "model",
        "total_parameters",
        "num_layers",
        "model_size_mb",
        "model_load_time_seconds",
        "model_reused",
        "total_inference_time_seconds",
        "tokens_per_second",
        "gpu_memory_allocated_mb",
        "gpu_memory_utilization_percent",
        "sm_utilization_percent",
        "tokens_per_second_ci95_low",
        "tokens_per_second_ci95_high",
        "peak_memory_allocated_mb",
        "ttft_p50_ms",
        "ttft_p90_ms",
        "inter_token_latency_p50_ms",
        "inter_token_latency_p90_ms",
        "tokens_per_second_cv_percent",
        "prefill_tokens_per_second",
        "decode_tokens_per_second",
        "tokens_per_joule",
        "weights",
        "dtype",
        "device",
        "gpu_name",
        "batch_size",
        "num_prompts",
        "max_tokens",
        "repetitions",
        "timestamp",
    ])?;
    let o = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in &data.rows {
        w.write_record([
            r.run_id.clone(),
            r.sweep_id.clone(),
            r.worker_id.clone(),
            r.model.clone(),
            r.total_parameters.to_string(),
            r.num_layers.to_string(),
            r.model_size_mb.to_string(),
            r.model_load_time_seconds.to_string(),
            r.model_reused.to_string(),
            r.total_inference_time_seconds.to_string(),
            r.tokens_per_second.to_string(),
            o(r.gpu_memory_allocated_mb),
            o(r.gpu_memory_utilization_percent),
            o(r.sm_utilization_percent),
            o(r.tokens_per_second_ci95.map(|c| c[0])),
            o(r.tokens_per_second_ci95.map(|c| c[1])),
            o(r.peak_memory_allocated_mb),
            r.ttft_p50_ms.to_string(),
            r.ttft_p90_ms.to_string(),
            r.inter_token_latency_p50_ms.to_string(),
            r.inter_token_latency_p90_ms.to_string(),
            r.tokens_per_second_cv_percent.to_string(),
            r.prefill_tokens_per_second.to_string(),
            r.decode_tokens_per_second.to_string(),
            o(r.tokens_per_joule),
            r.weights.clone(),
            r.dtype.clone(),
            r.device.clone(),
            r.gpu_name.clone(),
            r.batch_size.to_string(),
            r.num_prompts.to_string(),
            r.max_tokens.to_string(),
            r.repetitions.to_string(),
            r.timestamp.clone(),
        ])?;
    }
    w.flush().map_err(|e| ReportError::Io { path: PathBuf::from("report.csv"), source: e })?;
    Ok(w.into_inner().map_err(|e| ReportError::Io { path: PathBuf::from("report.csv"), source: e.into_error() })?)
}
