//! Reading sweeps and runs (with their stored reports) from the coordinator.

use crate::client::Conn;
use crate::error::{CliError, CliResult};
use crate::report::RunRecord;
use tokbench_core::BenchReport;
use tokbench_proto::v1::*;

pub async fn get_sweep(conn: &mut Conn, id: &str) -> CliResult<Sweep> {
    let what = if id == "latest" { "the latest sweep".to_string() } else { format!("sweep \"{id}\"") };
    conn.client.get_sweep(GetSweepRequest { sweep_id: id.to_string() }).await.map(|r| r.into_inner()).map_err(|s| conn.status_error(s, &what))
}

pub async fn list_runs(conn: &mut Conn, sweep: &str, model: &str, run_ids: &[String], include_reports: bool) -> CliResult<Vec<Run>> {
    let what = if sweep.is_empty() { "runs".to_string() } else { format!("sweep \"{sweep}\"") };
    conn.client
        .list_runs(ListRunsRequest { sweep_id: sweep.to_string(), model: model.to_string(), run_ids: run_ids.to_vec(), limit: 0, include_reports })
        .await
        .map(|r| r.into_inner().runs)
        .map_err(|s| conn.status_error(s, &what))
}

pub fn parse_report(run_id: &str, text: &str) -> CliResult<BenchReport> {
    serde_json::from_str(text).map_err(|e| {
        CliError::Failure(format!("run {run_id}: its stored report is not a valid BenchReport ({e}); the coordinator's database may be from another tokbench version"))
    })
}

/// Fetches runs with their reports: of a sweep (id or "latest") or the given run ids.
pub async fn fetch_records(conn: &mut Conn, sweep: Option<&str>, run_ids: &[String]) -> CliResult<Vec<RunRecord>> {
    let runs = if !run_ids.is_empty() {
        let runs = list_runs(conn, "", "", run_ids, true).await?;
        let found: Vec<&str> = runs.iter().filter_map(|r| r.summary.as_ref().map(|s| s.run_id.as_str())).collect();
        let missing: Vec<&String> = run_ids.iter().filter(|id| !found.contains(&id.as_str())).collect();
        if !missing.is_empty() {
            return Err(CliError::Usage(format!(
                "no run with id {} on {}. List runs with `tokbench runs`",
                missing.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", "),
                conn.url
            )));
        }
        runs
    } else {
        let id = sweep.unwrap_or("latest");
        let s = get_sweep(conn, id).await?;
        let runs = list_runs(conn, &s.sweep_id, "", &[], true).await?;
        if runs.is_empty() && s.jobs_total > 0 && s.jobs_done >= s.jobs_total {
            // Every job ended and none left a run: a failure to report, not something to wait for.
            return Err(CliError::Failure(format!(
                "sweep {} has no finished runs: it ended ({}) with every one of its {} jobs failed or cancelled, so there is nothing to report. `tokbench status {}` lists its jobs and why each failed",
                s.sweep_id, s.state, s.jobs_total, s.sweep_id
            )));
        }
        if runs.is_empty() {
            return Err(CliError::Usage(format!(
                "sweep {} has no finished runs yet ({}, {}/{} jobs done). Wait for it with `tokbench watch {}` or pick another with --sweep",
                s.sweep_id, s.state, s.jobs_done, s.jobs_total, s.sweep_id
            )));
        }
        runs
    };
    runs.into_iter()
        .map(|r| {
            let s = r.summary.clone().unwrap_or_default();
            Ok(RunRecord { run_id: s.run_id.clone(), sweep_id: s.sweep_id.clone(), worker_id: s.worker_id.clone(), report: parse_report(&s.run_id, &r.report_json)? })
        })
        .collect()
}
