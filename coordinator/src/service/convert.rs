//! Rows of the store -> proto messages, and the checks of request fields that the store does
//! not make.

use serde::{Deserialize, Serialize};
use tonic::Status;

use tokbench_proto::v1::*;

use crate::store::{self, ArtifactRow, JobRow, RunRow, SweepRow};
// The proto's `JobState` comes in through the glob above; the store's is `store::JobState`.
use crate::validate;

fn job_state(s: store::JobState) -> JobState {
    match s {
        store::JobState::Queued => JobState::Queued,
        store::JobState::Leased => JobState::Leased,
        store::JobState::Running => JobState::Running,
        store::JobState::Succeeded => JobState::Succeeded,
        store::JobState::Failed => JobState::Failed,
        store::JobState::Cancelled => JobState::Cancelled,
    }
}

pub fn job_proto(j: &JobRow) -> Job {
    let serve = serve_spec(&j.workload_json);
    Job {
        job_id: j.id.clone(),
        sweep_id: j.sweep_id.clone(),
        model: j.model.clone(),
        batch_size: j.batch_size as u32,
        state: job_state(j.state) as i32,
        attempts: j.attempts as u32,
        worker_id: j.worker_id.clone().unwrap_or_default(),
        last_error: j.last_error.clone(),
        run_id: j.run_id.clone().unwrap_or_default(),
        created_at_ms: j.created_at,
        updated_at_ms: j.updated_at,
        phase: j.phase.clone(),
        tokens_done: j.tokens_done as u64,
        tokens_total: j.tokens_total as u64,
        tokens_per_second: j.tokens_per_second,
        bytes_done: j.bytes_done as u64,
        bytes_total: j.bytes_total as u64,
        request_rate: serve.as_ref().map_or(0.0, |s| s.request_rate),
        serve_load: serve.as_ref().map(|s| s.load_label()).unwrap_or_default(),
    }
}

/// A serve job's spec (None for offline jobs, and for a workload that no longer parses). Only a
/// workload with a `serve` section is parsed (serve workloads carry no inline prompts, so this
/// stays cheap).
fn serve_spec(workload_json: &str) -> Option<tokbench_core::ServeSpec> {
    if !workload_json.contains("\"serve\"") {
        return None;
    }
    tokbench_core::Workload::from_json(workload_json).ok().and_then(|w| w.serve)
}

pub(super) fn sweep_proto(s: &SweepRow, jobs: &[JobRow]) -> Sweep {
    Sweep {
        sweep_id: s.id.clone(),
        spec: Some(validate::stored_spec(&s.spec_json)),
        created_at_ms: s.created_at,
        state: s.state.as_str().to_string(),
        jobs: jobs.iter().map(job_proto).collect(),
        jobs_total: jobs.len() as u32,
        jobs_done: jobs.iter().filter(|j| j.state.is_final()).count() as u32,
    }
}

pub(super) fn run_summary(r: &RunRow) -> RunSummary {
    RunSummary {
        run_id: r.id.clone(),
        job_id: r.job_id.clone(),
        sweep_id: r.sweep_id.clone(),
        model: r.model.clone(),
        batch_size: r.batch_size as u32,
        worker_id: r.worker_id.clone(),
        device: r.device.clone(),
        gpu_name: r.gpu_name.clone(),
        weights: r.weights.clone(),
        dtype: r.dtype.clone(),
        tokens_per_second: r.tokens_per_second,
        ttft_p50_ms: r.ttft_p50_ms,
        inter_token_p50_ms: r.itl_p50_ms,
        model_load_time_seconds: r.model_load_time_seconds,
        total_inference_time_seconds: r.total_inference_time_seconds,
        peak_memory_mb: r.peak_memory_mb.unwrap_or(0.0),
        created_at_ms: r.created_at,
        attempt: r.attempt as u32,
        model_id: r.model_id.clone(),
        total_parameters: r.total_parameters.max(0) as u64,
        num_layers: r.num_layers.max(0) as u32,
        model_size_mb: r.model_size_mb,
        num_prompts: r.num_prompts.max(0) as u32,
        total_input_tokens: r.total_input_tokens.max(0) as u64,
        total_output_tokens: r.total_output_tokens.max(0) as u64,
        gpu_memory_allocated_mb: r.gpu_memory_allocated_mb,
        gpu_memory_utilization_percent: r.gpu_memory_utilization_percent,
        ttft_p99_ms: r.ttft_p99_ms,
        inter_token_p99_ms: r.itl_p99_ms,
        prefill_tokens_per_second: r.prefill_tokens_per_second,
        decode_tokens_per_second: r.decode_tokens_per_second,
        energy_joules: r.energy_joules,
        tokens_per_joule: r.tokens_per_joule,
        tokbench_version: r.tokbench_version.clone(),
        git_commit: r.git_commit.clone().unwrap_or_default(),
        hostname: r.hostname.clone(),
        driver_version: r.driver_version.clone().unwrap_or_default(),
        cuda_version: r.cuda_version.clone().unwrap_or_default(),
        started_at: r.started_at.clone(),
        worker_total_ns: r.worker_total_ns.max(0) as u64,
    }
}

pub(super) fn artifact_proto(a: &ArtifactRow) -> Artifact {
    Artifact {
        artifact_id: a.id.clone(),
        run_id: a.run_id.clone().unwrap_or_default(),
        job_id: a.job_id.clone(),
        kind: a.kind.clone(),
        file_name: a.file_name.clone(),
        size_bytes: a.size_bytes as u64,
        sha256: a.sha256.clone(),
        created_at_ms: a.created_at,
    }
}

/// WorkerCapabilities as stored in `workers.capabilities_json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(super) struct StoredCaps {
    pub(super) hostname: String,
    pub(super) backend: String,
    pub(super) device_index: u32,
    pub(super) gpu_name: String,
    pub(super) memory_total_bytes: u64,
    pub(super) memory_free_bytes: u64,
    pub(super) driver_version: String,
    pub(super) cuda_version: String,
    pub(super) tokbench_version: String,
    pub(super) nsys_available: bool,
}

impl From<&WorkerCapabilities> for StoredCaps {
    fn from(c: &WorkerCapabilities) -> Self {
        StoredCaps {
            hostname: c.hostname.clone(),
            backend: c.backend.clone(),
            device_index: c.device_index,
            gpu_name: c.gpu_name.clone(),
            memory_total_bytes: c.memory_total_bytes,
            memory_free_bytes: c.memory_free_bytes,
            driver_version: c.driver_version.clone(),
            cuda_version: c.cuda_version.clone(),
            tokbench_version: c.tokbench_version.clone(),
            nsys_available: c.nsys_available,
        }
    }
}

pub(super) fn validate_worker_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("worker_id is empty: every WorkerQueue call must carry the id the worker registered with"));
    }
    if id.len() > 200 || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')) {
        return Err(Status::invalid_argument(format!(
            "worker_id \"{id}\" is invalid: use up to 200 letters, digits and . _ - : @ (e.g. host-cuda0)"
        )));
    }
    Ok(())
}

pub(super) fn require(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is empty; it is required")))
    } else {
        Ok(())
    }
}

/// The event that describes a job's current state (for the first events of WatchSweep).
pub(super) fn event_kind_for(job: &JobRow) -> EventKind {
    match job.state {
        store::JobState::Queued if job.attempts > 0 && !job.last_error.is_empty() => EventKind::Failed,
        store::JobState::Queued => EventKind::Queued,
        store::JobState::Leased => EventKind::Started,
        store::JobState::Running => EventKind::Progress,
        store::JobState::Succeeded => EventKind::Finished,
        store::JobState::Failed => EventKind::Failed,
        store::JobState::Cancelled => EventKind::Cancelled,
    }
}

pub(super) fn event_message(job: &JobRow) -> String {
    match job.state {
        store::JobState::Queued if job.attempts > 0 && !job.last_error.is_empty() => {
            format!("{}; will retry (attempt {} of {} next)", job.last_error, job.attempts + 1, job.max_attempts)
        }
        store::JobState::Failed | store::JobState::Cancelled => job.last_error.clone(),
        store::JobState::Leased => format!("leased by {} (attempt {})", job.worker_id.clone().unwrap_or_default(), job.attempts),
        _ => String::new(),
    }
}

pub(super) fn leased_proto(leased: &store::Leased) -> LeasedJob {
    let j = &leased.job;
    LeasedJob {
        job_id: j.id.clone(),
        sweep_id: j.sweep_id.clone(),
        attempt: j.attempts as u32,
        workload_json: j.workload_json.clone(),
        profile: j.profile,
        lease_expires_ms: leased.lease_expires_at,
    }
}

