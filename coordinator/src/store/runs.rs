//! Runs: the stored result of a job (one per job): its report, whole, and summary columns.

use sqlx::sqlite::SqliteConnection;

use super::rows::{RunRow, RUN_COLUMNS};
use super::{Result, Store, StoreError};
use tokbench_core::BenchReport;

impl Store {
    pub async fn list_runs(&self, sweep_id: &str, model: &str, run_ids: &[String], limit: u32, include_reports: bool) -> Result<Vec<RunRow>> {
        let sweep_id = if sweep_id.is_empty() { String::new() } else { self.resolve_sweep_id(sweep_id).await? };
        let limit = if limit == 0 { -1 } else { limit as i64 };
        let ids_json = serde_json::to_string(run_ids).expect("strings serialise");
        let sql = format!(
            "SELECT {RUN_COLUMNS}, {} AS report_json FROM runs
             WHERE (?1 = '' OR sweep_id = ?1) AND (?2 = '' OR model = ?2) AND (?3 = '[]' OR id IN (SELECT value FROM json_each(?3)))
             ORDER BY created_at, rowid LIMIT ?4",
            if include_reports { "report_json" } else { "NULL" }
        );
        Ok(sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql)).bind(&sweep_id).bind(model).bind(&ids_json).bind(limit).fetch_all(&self.reader).await?)
    }

    pub async fn get_run(&self, run_id: &str) -> Result<RunRow> {
        let sql = format!("SELECT {RUN_COLUMNS}, report_json FROM runs WHERE id = ?");
        sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no run with id \"{run_id}\"; list runs to see the ids")))
    }

    pub async fn run_of_job(&self, job_id: &str) -> Result<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLUMNS}, NULL AS report_json FROM runs WHERE job_id = ?");
        Ok(sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql)).bind(job_id).fetch_optional(&self.reader).await?)
    }
}

/// A worker's report of a finished job (CompleteJob).
pub struct Completion {
    pub worker_id: String,
    pub job_id: String,
    pub attempt: u32,
    pub report: BenchReport,
    pub report_json: String,
    pub worker_total_ns: u64,
}

/// Inserts the run (its report whole, plus the summary columns); returns the run's summary row.
pub(super) async fn insert_run(c: &mut SqliteConnection, run_id: &str, done: &Completion, sweep_id: &str, model: &str, batch_size: i64, now: i64) -> Result<RunRow> {
    let r = &done.report;
    let col = Columns::of(r);
    let im = &r.inference_metrics;
    let gm = &r.gpu_metrics;
    let peak = gm.peak_memory_allocated_mb.or_else(|| r.telemetry.as_ref().and_then(|t| t.process_memory_mb_max));
    sqlx::query(
        "INSERT INTO runs (id, job_id, attempt, sweep_id, model, model_id, batch_size, worker_id, device, gpu_name, weights, dtype,
            total_parameters, num_layers, model_size_mb, model_load_time_seconds, total_inference_time_seconds, tokens_per_second,
            num_prompts, total_input_tokens, total_output_tokens, gpu_memory_allocated_mb, gpu_memory_utilization_percent,
            ttft_p50_ms, ttft_p99_ms, itl_p50_ms, itl_p99_ms, prefill_tokens_per_second, decode_tokens_per_second,
            peak_memory_mb, energy_joules, tokens_per_joule, tokbench_version, git_commit, hostname, driver_version, cuda_version,
            started_at, created_at, worker_total_ns, report_json,
            mode, endpoint, request_rate, achieved_request_rate, completed_requests, failed_requests, request_throughput,
            output_throughput, tpot_p50_ms, tpot_p99_ms, request_goodput)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
            ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(run_id)
    .bind(&done.job_id)
    .bind(done.attempt as i64)
    .bind(sweep_id)
    .bind(model)
    .bind(&r.model_id)
    .bind(batch_size)
    .bind(&done.worker_id)
    .bind(&col.device)
    .bind(&col.gpu_name)
    .bind(&col.weights)
    .bind(&r.model_properties.dtype)
    .bind(r.model_properties.total_parameters as i64)
    .bind(r.model_properties.num_layers as i64)
    .bind(r.model_properties.model_size_mb)
    .bind(im.model_load_time_seconds)
    .bind(col.total_inference_time_seconds)
    .bind(col.tokens_per_second)
    .bind(col.num_prompts as i64)
    .bind(col.total_input_tokens as i64)
    .bind(col.total_output_tokens as i64)
    .bind(gm.gpu_memory_allocated_mb)
    .bind(gm.gpu_memory_utilization_percent)
    .bind(col.ttft_p50_ms)
    .bind(col.ttft_p99_ms)
    .bind(col.itl_p50_ms)
    .bind(col.itl_p99_ms)
    .bind(im.prefill_tokens_per_second)
    .bind(im.decode_tokens_per_second)
    .bind(peak)
    .bind(r.telemetry.as_ref().and_then(|t| t.energy_joules))
    .bind(r.telemetry.as_ref().and_then(|t| t.tokens_per_joule))
    .bind(&r.environment.tokbench_version)
    .bind(&r.environment.git_commit)
    .bind(&r.environment.hostname)
    .bind(&gm.driver_version)
    .bind(&gm.cuda_version)
    .bind(&r.timestamp)
    .bind(now)
    .bind(done.worker_total_ns as i64)
    .bind(&done.report_json)
    .bind(if r.is_serve() { "serve" } else { "offline" })
    .bind(r.serve.as_ref().map(|s| s.endpoint.clone()))
    .bind(r.serve.as_ref().map(|s| s.request_rate))
    .bind(r.serve.as_ref().and_then(|s| s.achieved_request_rate))
    .bind(r.serve.as_ref().map(|s| s.metrics.completed as i64))
    .bind(r.serve.as_ref().map(|s| s.metrics.failed as i64))
    .bind(r.serve.as_ref().map(|s| s.metrics.request_throughput))
    .bind(r.serve.as_ref().map(|s| s.metrics.output_throughput))
    .bind(r.serve.as_ref().and_then(|s| s.metrics.tpot_ms).map(|t| t.median))
    .bind(r.serve.as_ref().and_then(|s| s.metrics.tpot_ms).map(|t| t.p99))
    .bind(r.serve.as_ref().and_then(|s| s.metrics.request_goodput))
    .execute(&mut *c)
    .await?;

    Ok(RunRow {
        id: run_id.to_string(),
        job_id: done.job_id.clone(),
        attempt: done.attempt as i64,
        sweep_id: sweep_id.to_string(),
        model: model.to_string(),
        batch_size,
        worker_id: done.worker_id.clone(),
        device: col.device.clone(),
        gpu_name: col.gpu_name.clone(),
        weights: col.weights.clone(),
        dtype: r.model_properties.dtype.clone(),
        tokens_per_second: col.tokens_per_second,
        ttft_p50_ms: col.ttft_p50_ms,
        itl_p50_ms: col.itl_p50_ms,
        model_load_time_seconds: im.model_load_time_seconds,
        total_inference_time_seconds: col.total_inference_time_seconds,
        peak_memory_mb: peak,
        created_at: now,
        model_id: r.model_id.clone(),
        total_parameters: r.model_properties.total_parameters as i64,
        num_layers: r.model_properties.num_layers as i64,
        model_size_mb: r.model_properties.model_size_mb,
        num_prompts: col.num_prompts as i64,
        total_input_tokens: col.total_input_tokens as i64,
        total_output_tokens: col.total_output_tokens as i64,
        gpu_memory_allocated_mb: gm.gpu_memory_allocated_mb,
        gpu_memory_utilization_percent: gm.gpu_memory_utilization_percent,
        ttft_p99_ms: col.ttft_p99_ms,
        itl_p99_ms: col.itl_p99_ms,
        prefill_tokens_per_second: im.prefill_tokens_per_second,
        decode_tokens_per_second: im.decode_tokens_per_second,
        energy_joules: r.telemetry.as_ref().and_then(|t| t.energy_joules),
        tokens_per_joule: r.telemetry.as_ref().and_then(|t| t.tokens_per_joule),
        tokbench_version: r.environment.tokbench_version.clone(),
        git_commit: r.environment.git_commit.clone(),
        hostname: r.environment.hostname.clone(),
        driver_version: gm.driver_version.clone(),
        cuda_version: gm.cuda_version.clone(),
        started_at: r.timestamp.clone(),
        worker_total_ns: done.worker_total_ns as i64,
        report_json: None,
    })
}

/// The summary columns that differ between offline and serve runs: an offline run's own figures,
/// or a serve run's analogues (device = the endpoint, tokens/s = output tokens/s, TTFT and ITL
/// percentiles of the requests, requests sent as prompts, duration as inference time).
struct Columns {
    device: String,
    gpu_name: String,
    weights: String,
    total_inference_time_seconds: f64,
    tokens_per_second: f64,
    num_prompts: u64,
    total_input_tokens: u64,
    total_output_tokens: u64,
    ttft_p50_ms: f64,
    ttft_p99_ms: f64,
    itl_p50_ms: f64,
    itl_p99_ms: f64,
}

impl Columns {
    fn of(r: &BenchReport) -> Columns {
        let im = &r.inference_metrics;
        match &r.serve {
            None => Columns {
                device: r.gpu_metrics.device.clone(),
                gpu_name: r.gpu_metrics.gpu_name.clone(),
                weights: r.model_properties.weights.clone(),
                total_inference_time_seconds: im.total_inference_time_seconds,
                tokens_per_second: im.tokens_per_second,
                num_prompts: im.num_prompts as u64,
                total_input_tokens: im.total_input_tokens as u64,
                total_output_tokens: im.total_output_tokens as u64,
                ttft_p50_ms: im.ttft_ms.p50,
                ttft_p99_ms: im.ttft_ms.p99,
                itl_p50_ms: im.inter_token_latency_ms.p50,
                itl_p99_ms: im.inter_token_latency_ms.p99,
            },
            Some(s) => {
                let m = &s.metrics;
                Columns {
                    device: s.endpoint.clone(),
                    gpu_name: String::new(),
                    weights: "served".into(),
                    total_inference_time_seconds: m.duration_s,
                    tokens_per_second: m.output_throughput,
                    num_prompts: (m.completed + m.failed) as u64,
                    total_input_tokens: m.total_input_tokens,
                    total_output_tokens: m.total_output_tokens,
                    ttft_p50_ms: m.ttft_ms.map_or(0.0, |t| t.median),
                    ttft_p99_ms: m.ttft_ms.map_or(0.0, |t| t.p99),
                    itl_p50_ms: m.itl_ms.map_or(0.0, |t| t.median),
                    itl_p99_ms: m.itl_ms.map_or(0.0, |t| t.p99),
                }
            }
        }
    }
}
