//! The rows the store reads and returns, and the column lists that read them.

use super::states::{JobState, SweepState};

/// A job row with the id of its run (if any).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub sweep_id: String,
    pub seq: i64,
    pub model: String,
    pub batch_size: i64,
    pub workload_json: String,
    pub profile: bool,
    pub state: JobState,
    pub attempts: i64,
    pub max_attempts: i64,
    pub lease_expires_at: Option<i64>,
    pub worker_id: Option<String>,
    pub last_error: String,
    pub phase: String,
    pub tokens_done: i64,
    pub tokens_total: i64,
    pub tokens_per_second: f64,
    /// Phase "downloading": bytes of the model's files so far / in all.
    pub bytes_done: i64,
    pub bytes_total: i64,
    pub queued_at: i64,
    pub leased_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub run_id: Option<String>,
}

pub(super) const JOB_COLUMNS: &str = "j.id, j.sweep_id, j.seq, j.model, j.batch_size, j.workload_json, j.profile, j.state, j.attempts, j.max_attempts, j.lease_expires_at, j.worker_id, j.last_error, j.phase, j.tokens_done, j.tokens_total, j.tokens_per_second, j.bytes_done, j.bytes_total, j.queued_at, j.leased_at, j.created_at, j.updated_at, r.id AS run_id";
/// `RETURNING` list of an `UPDATE jobs`: the row after the change, without the run id (the
/// caller knows it, or knows there is none).
pub(super) const JOB_RETURNING: &str = "id, sweep_id, seq, model, batch_size, workload_json, profile, state, attempts, max_attempts, lease_expires_at, worker_id, last_error, phase, tokens_done, tokens_total, tokens_per_second, bytes_done, bytes_total, queued_at, leased_at, created_at, updated_at, NULL AS run_id";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SweepRow {
    pub id: String,
    pub spec_json: String,
    pub label: String,
    pub state: SweepState,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub job_id: String,
    pub attempt: i64,
    pub sweep_id: String,
    pub model: String,
    pub batch_size: i64,
    pub worker_id: String,
    pub device: String,
    pub gpu_name: String,
    pub weights: String,
    pub dtype: String,
    pub tokens_per_second: f64,
    pub ttft_p50_ms: f64,
    pub itl_p50_ms: f64,
    pub model_load_time_seconds: f64,
    pub total_inference_time_seconds: f64,
    pub peak_memory_mb: Option<f64>,
    pub created_at: i64,
    pub model_id: String,
    pub total_parameters: i64,
    pub num_layers: i64,
    pub model_size_mb: f64,
    pub num_prompts: i64,
    pub total_input_tokens: i64,
    pub total_output_tokens: i64,
    pub gpu_memory_allocated_mb: Option<f64>,
    pub gpu_memory_utilization_percent: Option<f64>,
    pub ttft_p99_ms: f64,
    pub itl_p99_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub energy_joules: Option<f64>,
    pub tokens_per_joule: Option<f64>,
    pub tokbench_version: String,
    pub git_commit: Option<String>,
    pub hostname: String,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    pub started_at: String,
    pub worker_total_ns: i64,
    pub report_json: Option<String>,
}

/// Every summary column of `runs` (all but `report_json`): each reaches clients in `RunSummary`.
pub(super) const RUN_COLUMNS: &str = "id, job_id, attempt, sweep_id, model, batch_size, worker_id, device, gpu_name, weights, dtype, tokens_per_second, ttft_p50_ms, itl_p50_ms, model_load_time_seconds, total_inference_time_seconds, peak_memory_mb, created_at, model_id, total_parameters, num_layers, model_size_mb, num_prompts, total_input_tokens, total_output_tokens, gpu_memory_allocated_mb, gpu_memory_utilization_percent, ttft_p99_ms, itl_p99_ms, prefill_tokens_per_second, decode_tokens_per_second, energy_joules, tokens_per_joule, tokbench_version, git_commit, hostname, driver_version, cuda_version, started_at, worker_total_ns";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub capabilities_json: String,
    pub last_seen: i64,
    pub current_job_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArtifactRow {
    pub id: String,
    pub job_id: String,
    pub run_id: Option<String>,
    pub kind: String,
    pub file_name: String,
    pub path: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub created_at: i64,
}

/// What a transaction changed: the jobs (current rows, after the change), the runs it stored
/// (so events need not read them back) and, when the change finished a sweep, its final state.
#[derive(Debug, Default)]
pub struct Changes {
    pub jobs: Vec<JobRow>,
    pub runs: Vec<RunRow>,
    pub sweeps_done: Vec<(String, SweepState)>,
}
