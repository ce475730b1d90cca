//! The commands. Each returns the process exit code on success paths that still fail (a job
//! failed: 1) and a `CliError` for everything that stops it.

use crate::args::*;
use crate::client::{connect, Conn};
use crate::error::{CliError, CliResult};
use crate::output::*;
use crate::report::{self, RunRecord};
use crate::watch::{watch, WatchEnd};
use serde_json::json;
use std::path::{Path, PathBuf};
use tokbench_core::{Backend, BenchReport, Catalog, PromptSource, SweepPlan, Workload, WorkloadError};
use tokbench_proto::v1::*;

pub async fn run(cli: Cli) -> CliResult<u8> {
    let ui = Ui::new(cli.global.json);
    let g = &cli.global;
    if let Command::Sweep(args) = &cli.command {
        if args.local {
            return crate::local::run(args.clone(), &ui).await;
        }
    }
    // Bad flags are reported before trying the network.
    let spec = match &cli.command {
        Command::Sweep(args) => Some(build_spec(args, &REMOTE_DEFAULTS)?),
        _ => None,
    };
    let mut conn = connect(&g.coordinator, g.token.as_deref(), g.ca_cert.as_deref()).await?;
    match cli.command {
        Command::Sweep(args) => Ok(submit_and_watch(&mut conn, spec.expect("built above"), args.detach, &ui, false).await?.0),
        Command::Status(a) => status(&mut conn, &a, &ui).await,
        Command::Watch(a) => watch_cmd(&mut conn, &a.sweep, &ui).await,
        Command::Cancel(a) => cancel(&mut conn, &a.sweep, &ui).await,
        Command::Workers => workers(&mut conn, &ui).await,
        Command::Runs(a) => runs(&mut conn, &a, &ui).await,
        Command::Show(a) => show(&mut conn, &a.run, &ui).await,
        Command::Report(a) => report_cmd(&mut conn, &a, &ui).await,
        Command::Export(a) => export(&mut conn, &a, &ui).await,
        Command::Artifact(a) => crate::artifact::run(&mut conn, &a, &ui).await,
    }
}

// ------------------------------------------------------------------ sweep

/// Defaults of a workload that differ between a remote sweep and `--local` (which must stay
/// small enough for a laptop CPU: three ~125-350M models in a few minutes).
#[derive(Debug, Clone, Copy)]
pub struct SweepDefaults {
    pub batch_sizes: &'static [usize],
    pub max_tokens: usize,
    pub repetitions: usize,
    pub warmup: usize,
    /// 0: the built-in prompt set.
    pub input_len: usize,
    /// 0: one prompt per batch slot.
    pub num_prompts: usize,
}

pub const REMOTE_DEFAULTS: SweepDefaults = SweepDefaults { batch_sizes: &[4], max_tokens: 128, repetitions: 3, warmup: 1, input_len: 0, num_prompts: 0 };
pub const LOCAL_DEFAULTS: SweepDefaults = SweepDefaults { batch_sizes: &[4], max_tokens: 32, repetitions: 2, warmup: 1, input_len: 32, num_prompts: 4 };

impl SweepDefaults {
    fn workload(&self) -> Workload {
        let prompts = match self.input_len {
            0 => PromptSource::Builtin { num_prompts: self.num_prompts },
            input_len => PromptSource::Synthetic { num_prompts: self.num_prompts, input_len },
        };
        Workload { prompts, max_tokens: self.max_tokens, repetitions: self.repetitions, warmup: self.warmup, ..Workload::default() }
    }
}

/// Builds the sweep from the flags and validates it with the coordinator's own rules
/// (`SweepPlan::jobs`), so bad input fails here with exit code 2 and the same message, before
/// anything is submitted.
pub fn build_spec(args: &SweepArgs, d: &SweepDefaults) -> CliResult<SweepSpec> {
    if args.models.is_empty() {
        return Err(CliError::Usage(
            "no models given: name at least one, e.g. `tokbench sweep opt-125m gpt2` (or `tokbench sweep --local` for the default three)".into(),
        ));
    }
    for m in &args.models {
        // Catalog names, HF repo ids (org/name) and worker paths are accepted; a bare word that
        // is none of these is a typo.
        let looks_like_path_or_repo = m.contains('/') || m.starts_with('.') || Path::new(m).is_dir();
        if Catalog::get(m).is_none() && !looks_like_path_or_repo {
            return Err(CliError::Usage(Catalog::unknown_model_message(m)));
        }
    }
    let usage = |e: WorkloadError| CliError::Usage(e.to_string());
    let backend = match args.backend.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(b) => Some(b.parse::<Backend>().map_err(usage)?),
    };
    let workload = args.workload.apply(Workload { reuse_model: args.reuse_model, ..d.workload() }).map_err(usage)?;
    let plan = SweepPlan {
        models: args.models.clone(),
        batch_sizes: if args.batch_sizes.is_empty() { d.batch_sizes.to_vec() } else { args.batch_sizes.clone() },
        workload,
        backend,
        profile: args.profile,
        label: args.label.clone(),
    };
    plan.jobs().map_err(usage)?;
    Ok(SweepSpec::from(&plan))
}

/// Submits, watches, prints the summary. `local` changes the Ctrl-C text (the embedded
/// coordinator stops with the process). Returns the exit code and the final sweep when watched.
pub async fn submit_and_watch(conn: &mut Conn, spec: SweepSpec, detach: bool, ui: &Ui, local: bool) -> CliResult<(u8, Option<Sweep>)> {
    let resp = conn
        .client
        .submit_sweep(SubmitSweepRequest { spec: Some(spec) })
        .await
        .map_err(|s| conn.status_error(s, "submitting the sweep"))?
        .into_inner();
    let id = resp.sweep_id.clone();
    if detach {
        if ui.json {
            ui.print_json(&json!({"sweep_id": id, "jobs": resp.jobs.iter().map(job_json).collect::<Vec<_>>()}));
        } else {
            println!("submitted sweep {id} ({} jobs)", resp.jobs.len());
            println!("follow it: tokbench watch {id}\ncancel it: tokbench cancel {id}\nreport:    tokbench report --sweep {id}");
        }
        return Ok((0, None));
    }
    if !ui.json {
        eprintln!("sweep {id}: {} jobs", resp.jobs.len());
    }
    let hint = if local {
        format!("stopped. Sweep {id} stays in the local database; jobs not finished were left queued. Run `tokbench sweep --local` again for a fresh sweep.")
    } else {
        format!("detached; sweep {id} keeps running on the coordinator.\nreattach: tokbench watch {id}\ncancel:   tokbench cancel {id}")
    };
    match watch(conn, &id, ui, &hint).await? {
        WatchEnd::Detached => Ok((if local { 130 } else { 0 }, None)),
        WatchEnd::Done(sweep) => {
            let code = finish_summary(conn, &sweep, ui).await?;
            Ok((code, Some(sweep)))
        }
    }
}

/// Prints the runs of a finished sweep and its failures; 1 when a job failed.
async fn finish_summary(conn: &mut Conn, sweep: &Sweep, ui: &Ui) -> CliResult<u8> {
    let runs = list_runs(conn, &sweep.sweep_id, "", &[], false).await?;
    let failed: Vec<&Job> = sweep.jobs.iter().filter(|j| j.state == JobState::Failed as i32).collect();
    let summaries: Vec<RunSummary> = runs.iter().filter_map(|r| r.summary.clone()).collect();
    if ui.json {
        ui.print_json(&json!({"sweep": sweep_json(sweep), "runs": summaries.iter().map(run_summary_json).collect::<Vec<_>>()}));
    } else {
        println!("\nsweep {}: {} ({}/{} jobs done)", sweep.sweep_id, sweep.state, sweep.jobs_done, sweep.jobs_total);
        if !summaries.is_empty() {
            println!("{}", runs_table(ui, &summaries));
        }
        for j in &failed {
            println!("FAILED {} bs{}: {}", j.model, j.batch_size, j.last_error);
        }
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}

// ------------------------------------------------------------------ status, watch, cancel

async fn get_sweep(conn: &mut Conn, id: &str) -> CliResult<Sweep> {
    let what = if id == "latest" { "the latest sweep".to_string() } else { format!("sweep \"{id}\"") };
    conn.client.get_sweep(GetSweepRequest { sweep_id: id.to_string() }).await.map(|r| r.into_inner()).map_err(|s| conn.status_error(s, &what))
}

async fn status(conn: &mut Conn, a: &StatusArgs, ui: &Ui) -> CliResult<u8> {
    let id = a.sweep.clone().unwrap_or_else(|| "latest".into());
    let sweeps = conn
        .client
        .list_sweeps(ListSweepsRequest { limit: a.limit })
        .await
        .map_err(|s| conn.status_error(s, "listing sweeps"))?
        .into_inner()
        .sweeps;
    if sweeps.is_empty() && a.sweep.is_none() {
        if ui.json {
            ui.print_json(&json!({"sweep": null, "recent": []}));
        } else {
            println!("no sweeps yet on {}. Submit one with `tokbench sweep MODEL...`", conn.url);
        }
        return Ok(0);
    }
    let sweep = get_sweep(conn, &id).await?;
    if ui.json {
        ui.print_json(&json!({"sweep": sweep_json(&sweep), "recent": sweeps.iter().map(sweep_json).collect::<Vec<_>>()}));
        return Ok(0);
    }
    let spec = sweep.spec.clone().unwrap_or_default();
    println!("sweep {}  {}  created {}  {}/{} jobs done{}", sweep.sweep_id, sweep.state, time_ms(sweep.created_at_ms), sweep.jobs_done, sweep.jobs_total, if spec.label.is_empty() { String::new() } else { format!("  label: {}", spec.label) });
    println!("{}", jobs_table(ui, &sweep.jobs));
    println!("\nrecent sweeps:");
    println!("{}", sweeps_table(ui, &sweeps));
    Ok(0)
}

async fn watch_cmd(conn: &mut Conn, id: &str, ui: &Ui) -> CliResult<u8> {
    let sweep = get_sweep(conn, id).await?;
    let id = sweep.sweep_id.clone();
    let hint = format!("detached; sweep {id} keeps running.\nreattach: tokbench watch {id}\ncancel:   tokbench cancel {id}");
    match watch(conn, &id, ui, &hint).await? {
        WatchEnd::Detached => Ok(0),
        WatchEnd::Done(s) => finish_summary(conn, &s, ui).await,
    }
}

async fn cancel(conn: &mut Conn, id: &str, ui: &Ui) -> CliResult<u8> {
    let sweep = get_sweep(conn, id).await?;
    let s = conn
        .client
        .cancel_sweep(CancelSweepRequest { sweep_id: sweep.sweep_id.clone() })
        .await
        .map_err(|s| conn.status_error(s, &format!("sweep \"{id}\"")))?
        .into_inner();
    if ui.json {
        ui.print_json(&sweep_json(&s));
    } else {
        let cancelled = s.jobs.iter().filter(|j| j.state == JobState::Cancelled as i32).count();
        println!("sweep {}: {} ({cancelled} of {} jobs cancelled; finished runs are kept)", s.sweep_id, s.state, s.jobs_total);
    }
    Ok(0)
}

// ------------------------------------------------------------------ workers, runs, show

async fn workers(conn: &mut Conn, ui: &Ui) -> CliResult<u8> {
    let ws = conn.client.list_workers(ListWorkersRequest {}).await.map_err(|s| conn.status_error(s, "listing workers"))?.into_inner().workers;
    if ui.json {
        ui.print_json(&json!({"workers": ws.iter().map(worker_json).collect::<Vec<_>>()}));
        return Ok(0);
    }
    if ws.is_empty() {
        println!("no workers have registered with {}. Start one with `tokbench-worker serve --coordinator {}`", conn.url, conn.url);
        return Ok(0);
    }
    let mut t = ui.table(&["Worker", "Host", "Device", "Memory free/total (MB)", "Alive", "Last seen", "Current job", "nsys", "Version"]);
    for w in &ws {
        let device = if w.backend == "cuda" { format!("cuda:{} {}", w.device_index, w.gpu_name) } else { w.backend.clone() };
        let mem = if w.memory_total_bytes > 0 { format!("{:.0}/{:.0}", w.memory_free_bytes as f64 / 1048576.0, w.memory_total_bytes as f64 / 1048576.0) } else { "n/a".into() };
        t.add_row(vec![
            w.worker_id.clone(),
            w.hostname.clone(),
            device,
            mem,
            if w.alive { "yes".into() } else { "no".into() },
            time_ms(w.last_seen_ms),
            dash(&w.current_job_id),
            if w.nsys_available { "yes".into() } else { "no".into() },
            w.tokbench_version.clone(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

async fn list_runs(conn: &mut Conn, sweep: &str, model: &str, run_ids: &[String], include_reports: bool) -> CliResult<Vec<Run>> {
    let what = if sweep.is_empty() { "runs".to_string() } else { format!("sweep \"{sweep}\"") };
    conn.client
        .list_runs(ListRunsRequest { sweep_id: sweep.to_string(), model: model.to_string(), run_ids: run_ids.to_vec(), limit: 0, include_reports })
        .await
        .map(|r| r.into_inner().runs)
        .map_err(|s| conn.status_error(s, &what))
}

async fn runs(conn: &mut Conn, a: &RunsArgs, ui: &Ui) -> CliResult<u8> {
    let mut runs = list_runs(conn, a.sweep.as_deref().unwrap_or(""), a.model.as_deref().unwrap_or(""), &[], false).await?;
    // Newest last in the listing, but keep the newest `limit`.
    if runs.len() > a.limit as usize {
        runs.drain(..runs.len() - a.limit as usize);
    }
    if ui.json {
        ui.print_json(&json!({"runs": runs.iter().map(run_json).collect::<Vec<_>>()}));
        return Ok(0);
    }
    if runs.is_empty() {
        println!("no runs match. Submit a sweep with `tokbench sweep MODEL...`, or check `tokbench status`");
        return Ok(0);
    }
    let summaries: Vec<RunSummary> = runs.iter().filter_map(|r| r.summary.clone()).collect();
    println!("{}", runs_table(ui, &summaries));
    Ok(0)
}

fn parse_report(run_id: &str, text: &str) -> CliResult<BenchReport> {
    serde_json::from_str(text).map_err(|e| {
        CliError::Failure(format!("run {run_id}: its stored report is not a valid BenchReport ({e}); the coordinator's database may be from another tokbench version"))
    })
}

async fn show(conn: &mut Conn, run_id: &str, ui: &Ui) -> CliResult<u8> {
    let run = conn
        .client
        .get_run(GetRunRequest { run_id: run_id.to_string() })
        .await
        .map_err(|s| conn.status_error(s, &format!("run \"{run_id}\"")))?
        .into_inner();
    if ui.json {
        // The full report, as stored.
        let v: serde_json::Value = serde_json::from_str(&run.report_json).map_err(|e| CliError::Failure(format!("run {run_id}: stored report is not JSON: {e}")))?;
        ui.print_json(&v);
        return Ok(0);
    }
    let r = parse_report(run_id, &run.report_json)?;
    let s = run.summary.clone().unwrap_or_default();
    crate::show::print(ui, &s, &r, &run.artifact_ids);
    Ok(0)
}

// ------------------------------------------------------------------ report, export

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

pub fn print_written(ui: &Ui, w: &report::WrittenReport) {
    if ui.json {
        ui.print_json(&json!({"timestamp": w.timestamp, "runs": w.rows, "regressions": w.regressions, "files": w.files}));
    } else {
        println!("report of {} run(s) written:", w.rows);
        for f in &w.files {
            println!("  {}", f.display());
        }
        if let Some(n) = w.regressions {
            println!("{n} regression(s) vs the baseline (worse by more than {:.0}%)", report::REGRESSION_THRESHOLD_PERCENT);
        }
    }
}

async fn report_cmd(conn: &mut Conn, a: &ReportArgs, ui: &Ui) -> CliResult<u8> {
    let sel = &a.selection;
    let records = fetch_records(conn, sel.sweep.as_deref(), &sel.runs).await?;
    let baseline = match &a.baseline {
        Some(b) => {
            let recs = fetch_records(conn, Some(b), &[]).await?;
            let id = recs.first().map(|r| r.sweep_id.clone()).unwrap_or_else(|| b.clone());
            Some((id, recs))
        }
        None => None,
    };
    let opts = report::ReportOptions { out_dir: a.out.clone(), svg: a.svg, group_by: a.group_by, timestamp: None };
    let w = report::write_report(&records, baseline.as_ref().map(|(id, r)| (id.as_str(), r.as_slice())), &opts)?;
    print_written(ui, &w);
    Ok(0)
}

/// `benchmark_<model file stem>_<YYYYmmdd_HHMMSS>.json`, the demo's name for a run's JSON.
pub fn export_file_name(r: &BenchReport) -> String {
    let stem = match Catalog::get(&r.model).or_else(|| Catalog::get(&r.model_id)) {
        Some(e) => e.file_stem(),
        None => {
            let p = Path::new(&r.model);
            if p.is_absolute() || r.model.starts_with('.') {
                p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| r.model.clone())
            } else {
                r.model.replace('/', "_")
            }
        }
    };
    let ts = chrono::DateTime::parse_from_rfc3339(&r.timestamp)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y%m%d_%H%M%S").to_string())
        .unwrap_or_else(|_| report::now_timestamp());
    format!("benchmark_{stem}_{ts}.json")
}

async fn export(conn: &mut Conn, a: &ExportArgs, ui: &Ui) -> CliResult<u8> {
    let records = fetch_records(conn, a.sweep.as_deref(), &[]).await?;
    let files = export_records(&records, &a.out)?;
    if ui.json {
        ui.print_json(&json!({"files": files}));
    } else {
        println!("exported {} run(s):", files.len());
        for f in &files {
            println!("  {}", f.display());
        }
    }
    Ok(0)
}

pub fn export_records(records: &[RunRecord], out: &Path) -> CliResult<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| CliError::Failure(format!("cannot create {}: {e}. Pass a writable --out", out.display())))?;
    let mut files = Vec::new();
    for rec in records {
        let mut name = export_file_name(&rec.report);
        // Two runs of one model in the same second (batch sizes of one sweep): keep both.
        if files.iter().any(|f: &PathBuf| f.file_name().is_some_and(|n| n.to_string_lossy() == name)) || out.join(&name).exists() {
            name = format!("{}_bs{}_{}.json", name.trim_end_matches(".json"), rec.report.workload.batch_size, report::short_id(&rec.run_id));
        }
        let path = out.join(name);
        let text = serde_json::to_string_pretty(&rec.report).map_err(|e| CliError::Failure(format!("run {}: {e}", rec.run_id)))?;
        std::fs::write(&path, text).map_err(|e| CliError::Failure(format!("cannot write {}: {e}. Pass a writable --out", path.display())))?;
        files.push(path);
    }
    Ok(files)
}
