//! The commands. Each returns the process exit code on success paths that still fail (a job
//! failed: 1) and a `CliError` for everything that stops it.

use crate::args::*;
use crate::client::{connect, Conn};
use crate::error::{CliError, CliResult};
use crate::export::export_records;
use crate::fetch::{fetch_records, get_sweep, list_runs, parse_report};
use crate::output::*;
use crate::report;
use crate::sweep::{build_spec, finish_summary, submit_and_watch, REMOTE_DEFAULTS};
use crate::watch::{watch, WatchEnd};
use serde_json::json;
use tokbench_proto::v1::*;

pub async fn run(cli: Cli) -> CliResult<u8> {
    let ui = Ui::new(cli.global.json);
    let g = &cli.global;
    if let Command::Sweep(args) = &cli.command {
        if args.local {
            return crate::local::run(args.clone(), &ui).await;
        }
    }
    if let Command::Models = &cli.command {
        return Ok(models(&ui));
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
        Command::Models => Ok(models(&ui)),
    }
}

// ------------------------------------------------------------------ status, watch, cancel

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

/// `tokbench models`: the catalog (no coordinator needed).
fn models(ui: &Ui) -> u8 {
    let entries = tokbench_core::Catalog::entries();
    if ui.json {
        let rows: Vec<serde_json::Value> = entries.iter().map(|e| model_json(e)).collect();
        ui.print_json(&json!(rows));
    } else {
        println!("{}", models_table(ui, entries));
    }
    0
}
