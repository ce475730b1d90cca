//! Coordinator overhead: how many jobs per second the queue sustains, and how long a queued
//! job waits before a worker leases it, with 1 and with 16 workers.
//!
//!   cargo run --release -p tokbench-coordinator --example overhead -- [--jobs 1024] [--workers 1,16] [--engine null|real] [--reuse-model]
//!
//! Real coordinator (in this process, SQLite file in a temp dir, synchronous=FULL) and real
//! worker serve loops (`tokbench_worker::serve::run_with_engine`) talking gRPC over loopback.
//! `--engine null` (default) runs no inference: each job returns a report produced once by the
//! real engine (tiny-opt, 1 token), so what is measured is the queue: lease, heartbeat-free
//! completion, storing the run. `--engine real` runs the real engine per job on the catalog's
//! tiny synthetic models (tiny-opt and tiny-gpt2 alternately: one 8-token prompt, 1 new token,
//! 0 warm-up, 1 repetition). Every job loads its model cold (synthetic weights + tokenizer,
//! ~80 ms on a 2-core machine): workloads have no option to keep a model loaded across jobs.
//!
//! Each line also gives the group-commit figures of the run: database transactions (fsyncs)
//! and operations per transaction.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection;
use tokbench_core::{BenchReport, DeviceSpec, Workload};
use tokbench_core::{PromptSource, SweepPlan, WeightsMode};
use tokbench_proto::v1::{SubmitSweepRequest, SweepSpec, WatchSweepRequest};
use tokbench_worker::serve::{Engine, WorkerConfig};

/// Single-job sweeps submitted one after the other to measure dispatch latency.
const LATENCY_JOBS: usize = 200;

/// One 8-token synthetic prompt, one new token, no warm-up, one repetition.
fn minimal_plan(models: Vec<String>, reuse_model: bool) -> SweepPlan {
    let workload = Workload {
        weights: WeightsMode::Synthetic,
        prompts: PromptSource::Synthetic { num_prompts: 1, input_len: 8 },
        max_tokens: 1,
        repetitions: 1,
        warmup: 0,
        reuse_model,
        ..Workload::default()
    };
    SweepPlan { models, workload, ..SweepPlan::default() }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into())).init();
    let jobs: usize = arg("--jobs").map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let worker_counts: Vec<usize> = arg("--workers").unwrap_or_else(|| "1,16".into()).split(',').map(|s| s.parse()).collect::<Result<_, _>>()?;
    let engine_kind = arg("--engine").unwrap_or_else(|| "null".into());
    let real = engine_kind == "real";
    // --reuse-model (real engine): jobs ask workers to keep tiny-opt loaded between jobs, so a
    // job is one 1-token inference rather than a cold model load.
    let reuse = std::env::args().any(|a| a == "--reuse-model");

    let template = {
        let w = Workload { model: "tiny-opt".into(), weights: tokbench_core::WeightsMode::Synthetic, batch_size: 1, prompts: tokbench_core::PromptSource::Builtin { num_prompts: 1 }, max_tokens: 1, warmup: 0, repetitions: 1, ..Default::default() };
        tokio::task::spawn_blocking(move || tokbench_worker::bench::run_workload(&w, &AtomicBool::new(false), &mut |_| {})).await?.context("template report")?
    };
    let engine: Engine = match engine_kind.as_str() {
        "null" => {
            let t = Arc::new(template);
            Arc::new(move |w: &Workload, _c: &AtomicBool, _p: &mut dyn FnMut(&tokbench_worker::bench::Progress)| {
                let mut r: BenchReport = (*t).clone();
                r.model = w.model.clone();
                r.workload = w.clone();
                Ok(r)
            })
        }
        "real" => {
            // One cache for the in-process workers, each of which may leave its copy of the model.
            let models = tokbench_worker::bench::ModelCache::for_workers(worker_counts.iter().copied().max().unwrap_or(1));
            Arc::new(move |w: &Workload, c: &AtomicBool, p: &mut dyn FnMut(&tokbench_worker::bench::Progress)| {
                tokbench_worker::bench::run_workload_with(&models, w, c, p)
            })
        }
        other => anyhow::bail!("--engine {other}: use null or real"),
    };

    println!("engine={engine_kind} jobs_per_run={jobs} cores={}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    for &n in &worker_counts {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("overhead.db");
        let handle = tokbench_coordinator::spawn(tokbench_coordinator::CoordinatorConfig {
            listen: "127.0.0.1:0".parse()?,
            database: db.clone(),
            ..Default::default()
        })
        .await?;
        let url = format!("http://{}", handle.local_addr());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for i in 0..n {
            let mut rx = stop_rx.clone();
            let cfg = WorkerConfig { coordinator: url.clone(), device: DeviceSpec::Cpu, token: None, worker_id: Some(format!("bench-{i}")), nsys_path: None, max_jobs: None, ca_cert: None };
            workers.push(tokio::spawn(tokbench_worker::serve::run_with_engine(cfg, async move { let _ = rx.wait_for(|s| *s).await; }, engine.clone())));
        }
        tokio::time::sleep(Duration::from_millis(500)).await; // let every worker register and start polling
        let mut client = tokbench_proto::auth::benchmarks_client(tokbench_proto::auth::connect(&url, None).await?, None)?;
        let commits_before = handle.commit_counts();
        // x 16 batch sizes = up to 1024 jobs per sweep. Null engine: distinct model names (not
        // in the catalog: allowed, the null engine resolves nothing). Real engine: the two tiny
        // catalog models; one prompt per job whatever the batch size, so every job is the same
        // minimal inference.
        let batch: Vec<usize> = (1..=16).collect();
        let start = Instant::now();
        let mut sweeps = Vec::new();
        let mut submitted = 0;
        while submitted < jobs {
            let plan = if real && reuse {
                minimal_plan(vec!["tiny-opt".into()], true)
            } else if real {
                minimal_plan(vec!["tiny-opt".into(), "tiny-gpt2".into()], false)
            } else {
                let models = ((jobs - submitted) / 16).clamp(1, 64);
                minimal_plan((0..models).map(|m| format!("bench-model-{}-{m}", sweeps.len())).collect(), false)
            };
            let n = plan.models.len() * batch.len();
            let spec = SweepSpec::from(&SweepPlan { batch_sizes: batch.clone(), ..plan });
            sweeps.push(client.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await?.into_inner().sweep_id);
            submitted += n;
        }
        for id in &sweeps {
            let mut s = client.watch_sweep(WatchSweepRequest { sweep_id: id.clone() }).await?.into_inner();
            while s.message().await?.is_some() {}
        }
        let elapsed = start.elapsed().as_secs_f64();
        // Dispatch latency: one job at a time while every worker is idle (waiting in LeaseJob).
        let single_start = Instant::now();
        let mut singles = Vec::new();
        for i in 0..LATENCY_JOBS {
            let model = if real && reuse {
                "tiny-opt".to_string()
            } else if real {
                ["tiny-opt", "tiny-gpt2"][i % 2].to_string()
            } else {
                format!("latency-model-{i}")
            };
            let spec = SweepSpec::from(&SweepPlan { batch_sizes: vec![1], ..minimal_plan(vec![model], real && reuse) });
            let sub = client.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await?.into_inner();
            let mut s = client.watch_sweep(WatchSweepRequest { sweep_id: sub.sweep_id.clone() }).await?.into_inner();
            while s.message().await?.is_some() {}
            singles.push(sub.jobs[0].job_id.clone());
        }
        let single_elapsed = single_start.elapsed().as_secs_f64();
        let commits = handle.commit_counts();
        let _ = stop_tx.send(true);
        for w in workers {
            w.await??;
        }
        handle.shutdown().await?;

        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await?;
        let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs").fetch_one(&mut conn).await?;
        let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state <> 'succeeded'").fetch_one(&mut conn).await?;
        if failed > 0 {
            anyhow::bail!("{failed} jobs did not succeed: the figures would not be meaningful (run with RUST_LOG=info to see why)");
        }
        let ids = serde_json::to_string(&singles)?;
        let mut waits: Vec<i64> = sqlx::query_scalar("SELECT leased_at - queued_at FROM jobs WHERE id IN (SELECT value FROM json_each(?))").bind(&ids).fetch_all(&mut conn).await?;
        waits.sort();
        let pct = |p: f64| waits[((p / 100.0 * waits.len() as f64).ceil() as usize).clamp(1, waits.len()) - 1];
        println!(
            "workers={n:>2} bulk: jobs={submitted} runs_stored={runs} elapsed={elapsed:.2} s throughput={:.0} jobs/s | single jobs on idle workers: n={} {:.1} ms/job end-to-end, queued->leased p50={} ms p99={} ms max={} ms (ms resolution) | commits={} ops/commit={:.1} largest={}",
            submitted as f64 / elapsed,
            waits.len(),
            single_elapsed * 1000.0 / LATENCY_JOBS as f64,
            pct(50.0),
            pct(99.0),
            waits.last().unwrap(),
            commits.commits - commits_before.commits,
            (commits.ops - commits_before.ops) as f64 / (commits.commits - commits_before.commits).max(1) as f64,
            commits.largest,
        );
    }
    Ok(())
}
