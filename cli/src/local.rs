//! `tokbench sweep --local`: the whole system in one process, for a fresh machine with no GPU
//! and no downloaded weights. An embedded coordinator (SQLite file, 127.0.0.1 on a free port)
//! and an in-process worker run the sweep; the report goes to `--out` (default `plots/`).

use crate::args::SweepArgs;
use crate::error::{CliError, CliResult};
use crate::output::Ui;

/// Models of `tokbench sweep --local` when none are named.
pub const DEFAULT_LOCAL_MODELS: [&str; 3] = ["opt-125m", "opt-350m", "gpt2"];

#[cfg(not(feature = "local"))]
pub async fn run(_args: SweepArgs, _ui: &Ui) -> CliResult<u8> {
    Err(CliError::Usage("this tokbench was built without the `local` feature, so --local is not available: rebuild with default features, or run a coordinator and a worker and leave out --local".into()))
}

#[cfg(feature = "local")]
pub async fn run(mut args: SweepArgs, ui: &Ui) -> CliResult<u8> {
    use crate::export::export_records;
    use crate::fetch::fetch_records;
    use crate::output::print_written;
    use crate::report;
    use crate::sweep::{build_spec, submit_and_watch, LOCAL_DEFAULTS};
    use tokbench_proto::v1::{CancelSweepRequest, ListSweepsRequest};

    // A serve sweep names the served models itself (build_spec says so when none are given).
    if args.models.is_empty() && args.serve.mode.trim().eq_ignore_ascii_case("offline") {
        args.models = DEFAULT_LOCAL_MODELS.iter().map(|s| s.to_string()).collect();
    }
    // Check everything the user typed before starting anything.
    if args.profile {
        // A profiled job runs `nsys profile tokbench-worker bench ...` as a child process, and the
        // embedded worker lives inside this `tokbench` binary, which has no `bench`.
        return Err(CliError::Usage(
            "--profile does not work with --local: profiling runs each job in a separate tokbench-worker process under nsys. Run `nsys profile tokbench-worker bench --model M ...` directly, or start tokbench-coordinator and `tokbench-worker serve` and submit without --local (see docs/profiling.md)".into(),
        ));
    }
    let spec = build_spec(&args, &LOCAL_DEFAULTS)?;
    let device: tokbench_core::DeviceSpec = args.device.parse().map_err(|e| CliError::Usage(format!("--device: {e}")))?;
    if args.detach {
        return Err(CliError::Usage("--detach cannot be used with --local: the embedded coordinator and worker stop when tokbench exits".into()));
    }

    let config = tokbench_coordinator::CoordinatorConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        database: args.database.clone(),
        ..Default::default()
    };
    let coordinator = tokbench_coordinator::spawn(config)
        .await
        .map_err(|e| CliError::Failure(format!("cannot start the embedded coordinator on database {}: {e:#}. Pass another --database", args.database.display())))?;
    let url = format!("http://{}", coordinator.local_addr());
    if !ui.json {
        eprintln!("local mode: coordinator {url} (database {}), worker on {device}", args.database.display());
    }
    let mut conn = crate::client::connect(&url, None, None).await?;

    // Unfinished sweeps left in the database by an interrupted earlier run would otherwise be
    // run first by the local worker: cancel them.
    let old = conn.client.list_sweeps(ListSweepsRequest { limit: 1000 }).await.map_err(|s| conn.status_error(s, "listing sweeps"))?.into_inner().sweeps;
    for s in old.iter().filter(|s| s.state == "running") {
        if !ui.json {
            eprintln!("cancelling unfinished sweep {} left in {} by an earlier run", s.sweep_id, args.database.display());
        }
        conn.client.cancel_sweep(CancelSweepRequest { sweep_id: s.sweep_id.clone() }).await.map_err(|st| conn.status_error(st, "cancelling an old sweep"))?;
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker_config = tokbench_worker::serve::WorkerConfig {
        coordinator: url.clone(),
        device,
        token: None,
        worker_id: Some("local".into()),
        nsys_path: None,
        max_jobs: None,
        ca_cert: None,
    };
    // Local mode runs on the user's own machine: its worker may load the directories the user
    // named (and only those), like `tokbench-worker bench` does.
    let models_dirs: Vec<std::path::PathBuf> = args
        .models
        .iter()
        .filter_map(|m| std::path::Path::new(m.strip_prefix("local:").unwrap_or(m)).canonicalize().ok())
        .filter(|p| p.is_dir())
        .collect();
    let worker = tokio::spawn(tokbench_worker::serve::run_with_models_dirs(worker_config, models_dirs, async move {
        let _ = stop_rx.await;
    }));

    let outcome = submit_and_watch(&mut conn, spec, false, ui, true).await;
    let mut code = match &outcome {
        Ok((code, _)) => *code,
        Err(e) => e.code(),
    };
    let mut result = Ok(());
    if let Ok((_, Some(sweep))) = &outcome {
        // Report whatever finished, even when some job failed.
        match fetch_records(&mut conn, Some(&sweep.sweep_id), &[]).await {
            Ok(records) => {
                let opts = report::ReportOptions { out_dir: args.out.clone(), svg: args.svg, group_by: report::GroupBy::Model, timestamp: None };
                match report::write_report(&records, None, &opts) {
                    Ok(w) => {
                        print_written(ui, &w);
                        // The per-run benchmark JSON files of the demo, next to the charts.
                        match export_records(&records, &args.out) {
                            Ok(files) if !ui.json => {
                                for f in files {
                                    println!("  {}", f.display());
                                }
                            }
                            Ok(_) => {}
                            Err(e) => result = Err(e),
                        }
                    }
                    Err(e) => result = Err(e.into()),
                }
            }
            Err(e) => result = Err(e),
        }
    }

    let _ = stop_tx.send(());
    match tokio::time::timeout(std::time::Duration::from_secs(30), worker).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!("local worker ended with an error: {e:#}");
        }
        Ok(Err(e)) => tracing::warn!("local worker task failed: {e}"),
        Err(_) => tracing::warn!("local worker did not stop within 30 s"),
    }
    if let Err(e) = coordinator.shutdown().await {
        tracing::warn!("embedded coordinator shutdown: {e:#}");
    }
    outcome?;
    if let Err(e) = result {
        code = code.max(e.code());
        eprintln!("error: {e}");
    }
    Ok(code)
}
