//! Presentation: terminal tables (comfy-table, plain ASCII when stdout is not a terminal),
//! JSON forms of the gRPC messages, and small formatting helpers.

use comfy_table::{presets, ContentArrangement, Table};
use crate::report::{WrittenReport, REGRESSION_THRESHOLD_PERCENT};
use serde_json::{json, Value};
use std::io::IsTerminal;
use tokbench_proto::v1::{Job, JobState, Run, RunSummary, Sweep, Worker};

/// How to talk to the user, decided once from the flags and the terminal.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub json: bool,
    /// stdout is a terminal: unicode tables and progress bars.
    pub tty: bool,
}

impl Ui {
    pub fn new(json: bool) -> Ui {
        Ui { json, tty: std::io::stdout().is_terminal() }
    }
    pub fn table(&self, header: &[&str]) -> Table {
        let mut t = Table::new();
        if self.tty {
            t.load_preset(presets::UTF8_FULL_CONDENSED);
            // Fit the terminal only when its width is known and usable; a 0-column pseudo
            // terminal would squeeze every cell to one character.
            if t.width().is_some_and(|w| w >= 60) {
                t.set_content_arrangement(ContentArrangement::Dynamic);
            }
        } else {
            t.load_preset(presets::ASCII_MARKDOWN);
        }
        t.set_header(header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        t
    }
    /// Prints JSON on stdout (pretty).
    pub fn print_json(&self, v: &Value) {
        println!("{}", serde_json::to_string_pretty(v).expect("json values serialise"));
    }
}

pub fn job_state_name(state: i32) -> &'static str {
    match JobState::try_from(state).unwrap_or(JobState::Unspecified) {
        JobState::Unspecified => "unknown",
        JobState::Queued => "queued",
        JobState::Leased => "leased",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

pub fn is_final(state: i32) -> bool {
    matches!(JobState::try_from(state), Ok(JobState::Succeeded | JobState::Failed | JobState::Cancelled))
}

/// Milliseconds since the epoch -> "2026-11-28 04:10:03" local time.
pub fn time_ms(ms: i64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_millis_opt(ms) {
        chrono::LocalResult::Single(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => "-".into(),
    }
}

/// A job's phase as shown: "downloading 12.3/500.0 MB (2%)" while its worker fetches weights
/// from the Hugging Face Hub, else the phase itself ("-" when none).
pub fn phase_label(j: &Job) -> String {
    if j.phase == "serving" && j.tokens_total > 0 {
        return format!("serving {}/{} requests", j.tokens_done.min(j.tokens_total), j.tokens_total);
    }
    if j.phase == "downloading" && j.bytes_total > 0 {
        let mb = |b: u64| b as f64 / 1e6;
        let done = j.bytes_done.min(j.bytes_total);
        return format!("downloading {:.1}/{:.1} MB ({:.0}%)", mb(done), mb(j.bytes_total), done as f64 * 100.0 / j.bytes_total as f64);
    }
    dash(&j.phase)
}

/// What a job runs besides its model: "bs4" offline; for serve jobs the coordinator's words for
/// their load ("4 req/s", "trace t.csv"), or the rate from a coordinator that sends none.
pub fn job_load(j: &Job) -> String {
    if !j.serve_load.is_empty() {
        j.serve_load.clone()
    } else if j.request_rate != 0.0 {
        format!("{} req/s", tokbench_core::serve::rate_label(j.request_rate))
    } else {
        format!("bs{}", j.batch_size)
    }
}

/// A serve job's progress counts requests, an offline job's tokens.
pub fn progress_unit(j: &Job) -> &'static str {
    if j.request_rate != 0.0 {
        "req"
    } else {
        "tok"
    }
}

pub fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

pub fn job_json(j: &Job) -> Value {
    json!({
        "job_id": j.job_id, "sweep_id": j.sweep_id, "model": j.model, "batch_size": j.batch_size,
        "state": job_state_name(j.state), "attempts": j.attempts, "worker_id": j.worker_id,
        "last_error": j.last_error, "run_id": j.run_id, "created_at_ms": j.created_at_ms,
        "updated_at_ms": j.updated_at_ms, "phase": j.phase, "tokens_done": j.tokens_done,
        "tokens_total": j.tokens_total, "tokens_per_second": j.tokens_per_second,
        "bytes_done": j.bytes_done, "bytes_total": j.bytes_total,
        "request_rate": if j.request_rate == 0.0 { Value::Null } else if j.request_rate.is_infinite() { json!("inf") } else { json!(j.request_rate) },
        "serve_load": if j.serve_load.is_empty() { Value::Null } else { json!(j.serve_load) },
    })
}

pub fn sweep_json(s: &Sweep) -> Value {
    // The workload travels as tokbench-core's Workload; render it whole (its serde form is the
    // one users also write into workload files), or the raw text when it does not parse.
    let spec = s.spec.as_ref().map(|sp| {
        let workload = match tokbench_core::SweepPlan::try_from(sp) {
            Ok(plan) => serde_json::to_value(&plan.workload).unwrap_or(Value::Null),
            Err(e) => json!({"unreadable": sp.workload_json, "error": e.to_string()}),
        };
        json!({
            "models": sp.models, "batch_sizes": sp.batch_sizes, "profile": sp.profile,
            "label": sp.label, "backend": sp.backend, "workload": workload,
        })
    });
    json!({
        "sweep_id": s.sweep_id, "state": s.state, "created_at_ms": s.created_at_ms,
        "jobs_total": s.jobs_total, "jobs_done": s.jobs_done, "spec": spec,
        "jobs": s.jobs.iter().map(job_json).collect::<Vec<_>>(),
    })
}

pub fn run_summary_json(r: &RunSummary) -> Value {
    json!({
        "run_id": r.run_id, "job_id": r.job_id, "sweep_id": r.sweep_id, "model": r.model,
        "batch_size": r.batch_size, "worker_id": r.worker_id, "device": r.device, "gpu_name": r.gpu_name,
        "weights": r.weights, "dtype": r.dtype, "tokens_per_second": r.tokens_per_second,
        "ttft_p50_ms": r.ttft_p50_ms, "inter_token_p50_ms": r.inter_token_p50_ms,
        "model_load_time_seconds": r.model_load_time_seconds,
        "total_inference_time_seconds": r.total_inference_time_seconds,
        "peak_memory_mb": if r.peak_memory_mb > 0.0 { json!(r.peak_memory_mb) } else { Value::Null },
        "created_at_ms": r.created_at_ms, "attempt": r.attempt,
        "model_id": r.model_id, "total_parameters": r.total_parameters, "num_layers": r.num_layers,
        "model_size_mb": r.model_size_mb, "num_prompts": r.num_prompts,
        "total_input_tokens": r.total_input_tokens, "total_output_tokens": r.total_output_tokens,
        "gpu_memory_allocated_mb": r.gpu_memory_allocated_mb,
        "gpu_memory_utilization_percent": r.gpu_memory_utilization_percent,
        "ttft_p99_ms": r.ttft_p99_ms, "inter_token_p99_ms": r.inter_token_p99_ms,
        "prefill_tokens_per_second": r.prefill_tokens_per_second,
        "decode_tokens_per_second": r.decode_tokens_per_second,
        "energy_joules": r.energy_joules, "tokens_per_joule": r.tokens_per_joule,
        "tokbench_version": r.tokbench_version, "git_commit": r.git_commit, "hostname": r.hostname,
        "driver_version": r.driver_version, "cuda_version": r.cuda_version,
        "started_at": r.started_at, "worker_total_ns": r.worker_total_ns,
    })
}

pub fn run_json(r: &Run) -> Value {
    let mut v = r.summary.as_ref().map(run_summary_json).unwrap_or_else(|| json!({}));
    v["artifact_ids"] = json!(r.artifact_ids);
    v
}

pub fn worker_json(w: &Worker) -> Value {
    json!({
        "worker_id": w.worker_id, "hostname": w.hostname, "backend": w.backend, "device_index": w.device_index,
        "gpu_name": w.gpu_name, "memory_total_bytes": w.memory_total_bytes, "memory_free_bytes": w.memory_free_bytes,
        "driver_version": w.driver_version, "cuda_version": w.cuda_version, "tokbench_version": w.tokbench_version,
        "last_seen_ms": w.last_seen_ms, "current_job_id": w.current_job_id, "alive": w.alive, "nsys_available": w.nsys_available,
    })
}

/// The end-of-sweep summary table: one row per run.
pub fn runs_table(ui: &Ui, runs: &[RunSummary]) -> Table {
    let mut t = ui.table(&["Model", "Batch", "Tok/s", "TTFT p50 (ms)", "ITL p50 (ms)", "Load (s)", "Peak (MB)", "Weights", "Device", "Run"]);
    for r in runs {
        let device = if r.gpu_name.is_empty() || r.device == "cpu" { r.device.clone() } else { format!("{} ({})", r.gpu_name, r.device) };
        t.add_row(vec![
            r.model.clone(),
            r.batch_size.to_string(),
            format!("{:.1}", r.tokens_per_second),
            format!("{:.1}", r.ttft_p50_ms),
            format!("{:.2}", r.inter_token_p50_ms),
            format!("{:.2}", r.model_load_time_seconds),
            if r.peak_memory_mb > 0.0 { format!("{:.0}", r.peak_memory_mb) } else { "n/a".into() },
            dash(&r.weights),
            dash(&device),
            r.run_id.clone(),
        ]);
    }
    t
}

pub fn jobs_table(ui: &Ui, jobs: &[Job]) -> Table {
    let mut t = ui.table(&["Model", "Batch / rate", "State", "Worker", "Phase", "Progress", "Tok/s (req/s)", "Attempts", "Run / error"]);
    for j in jobs {
        let tokens = if j.tokens_total > 0 { format!("{}/{} {}", j.tokens_done, j.tokens_total, progress_unit(j)) } else { "-".into() };
        let tail = if !j.run_id.is_empty() { j.run_id.clone() } else { dash(&j.last_error) };
        t.add_row(vec![
            j.model.clone(),
            if j.request_rate != 0.0 { job_load(j) } else { j.batch_size.to_string() },
            job_state_name(j.state).to_string(),
            dash(&j.worker_id),
            phase_label(j),
            tokens,
            if j.tokens_per_second > 0.0 { format!("{:.1}", j.tokens_per_second) } else { "-".into() },
            j.attempts.to_string(),
            tail,
        ]);
    }
    t
}

pub fn sweeps_table(ui: &Ui, sweeps: &[Sweep]) -> Table {
    let mut t = ui.table(&["Sweep", "Created", "State", "Jobs done", "Models", "Batch sizes", "Label"]);
    for s in sweeps {
        let spec = s.spec.clone().unwrap_or_default();
        t.add_row(vec![
            s.sweep_id.clone(),
            time_ms(s.created_at_ms),
            s.state.clone(),
            format!("{}/{}", s.jobs_done, s.jobs_total),
            spec.models.join(" "),
            spec.batch_sizes.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(","),
            dash(&spec.label),
        ]);
    }
    t
}

/// What `write_report` wrote: the file list, or JSON with `--json`.
pub fn print_written(ui: &Ui, w: &WrittenReport) {
    if ui.json {
        ui.print_json(&json!({"timestamp": w.timestamp, "runs": w.rows, "regressions": w.regressions, "files": w.files}));
    } else {
        println!("report of {} run(s) written:", w.rows);
        for f in &w.files {
            println!("  {}", f.display());
        }
        if let Some(n) = w.regressions {
            println!("{n} regression(s) vs the baseline (worse by more than {:.0}%)", REGRESSION_THRESHOLD_PERCENT);
        }
    }
}

/// One catalog entry as `tokbench models --json` prints it.
pub fn model_json(e: &tokbench_core::CatalogEntry) -> Value {
    let spec = e.config().spec();
    json!({
        "name": e.name, "family": spec.family, "hf_repo": e.hf_repo, "parameters": spec.parameters(),
        "f16_weights_bytes": spec.parameters() * 2, "max_positions": spec.max_positions,
        "layers": spec.num_layers, "heads": spec.num_heads, "kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
        "description": e.description,
    })
}

/// The catalog as a table: name, family, parameters, f16 weight size, max positions, heads.
pub fn models_table(ui: &Ui, entries: &[tokbench_core::CatalogEntry]) -> Table {
    let mut t = ui.table(&["Model", "Family", "Parameters", "f16 weights", "Max positions", "Heads (q/kv)", "Hugging Face repo"]);
    for e in entries {
        let spec = e.config().spec();
        let n = spec.parameters();
        let params = if n >= 1_000_000_000 { format!("{:.2} B", n as f64 / 1e9) } else { format!("{:.1} M", n as f64 / 1e6) };
        t.add_row(vec![
            e.name.to_string(),
            spec.family.to_string(),
            params,
            format!("{:.2} GiB", (2 * n) as f64 / (1u64 << 30) as f64),
            spec.max_positions.to_string(),
            format!("{}/{}", spec.num_heads, spec.num_kv_heads),
            e.hf_repo.unwrap_or("-").to_string(),
        ]);
    }
    t
}
