//! Helper of scripts/soak.sh: submit sweeps, wait for them, check the database afterwards.
//!
//!   soak submit URL SWEEPS           submit SWEEPS sweeps of tiny-opt + tiny-gpt2 x batch 1..8
//!   soak wait URL TIMEOUT_S          wait until no sweep is running (tolerates restarts)
//!   soak check DB                    invariants; exit 1 if any is broken

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::Connection;
use tokbench_core::{PromptSource, SweepPlan, WeightsMode, Workload};
use tokbench_proto::v1::{ListSweepsRequest, SubmitSweepRequest, SweepSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("submit") => {
            let url = &args[1];
            let n: usize = args[2].parse()?;
            let mut c = tokbench_proto::auth::benchmarks_client(tokbench_proto::auth::connect(url, None).await?, None)?;
            for i in 0..n {
                let plan = SweepPlan {
                    models: vec!["tiny-opt".into(), "tiny-gpt2".into()],
                    batch_sizes: (1..=8).collect(),
                    workload: Workload {
                        weights: WeightsMode::Synthetic,
                        prompts: PromptSource::Builtin { num_prompts: 0 },
                        max_tokens: 8,
                        repetitions: 1,
                        warmup: 0,
                        ..Workload::default()
                    },
                    label: format!("soak {i}"),
                    ..SweepPlan::default()
                };
                let spec = SweepSpec::from(&plan);
                let r = c.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await?.into_inner();
                println!("submitted sweep {} ({} jobs)", r.sweep_id, r.jobs.len());
            }
        }
        Some("wait") => {
            let url = &args[1];
            let timeout = Duration::from_secs(args[2].parse()?);
            let start = Instant::now();
            loop {
                let res = async {
                    let mut c = tokbench_proto::auth::benchmarks_client(tokbench_proto::auth::connect(url, None).await?, None)?;
                    let sweeps = c.list_sweeps(ListSweepsRequest { limit: 10_000 }).await?.into_inner().sweeps;
                    Ok::<_, anyhow::Error>((sweeps.iter().filter(|s| s.state == "running").count(), sweeps.iter().map(|s| s.jobs_done).sum::<u32>(), sweeps.iter().map(|s| s.jobs_total).sum::<u32>()))
                }
                .await;
                match res {
                    Ok((0, done, total)) => {
                        println!("all sweeps final: {done}/{total} jobs final");
                        return Ok(());
                    }
                    Ok((running, done, total)) => eprintln!("{running} sweeps running, {done}/{total} jobs final"),
                    Err(e) => eprintln!("coordinator not reachable: {e:#}"),
                }
                if start.elapsed() > timeout {
                    bail!("sweeps still running after {timeout:?}");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Some("check") => {
            let db = &args[1];
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{db}?mode=ro")).await.with_context(|| format!("open {db}"))?;
            let q = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
            let jobs = q("SELECT COUNT(*) FROM jobs").fetch_one(&mut c).await?;
            let succeeded = q("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").fetch_one(&mut c).await?;
            let runs = q("SELECT COUNT(*) FROM runs").fetch_one(&mut c).await?;
            let dup = q("SELECT COUNT(*) FROM (SELECT job_id FROM runs GROUP BY job_id HAVING COUNT(*) > 1)").fetch_one(&mut c).await?;
            let orphan_runs = q("SELECT COUNT(*) FROM runs r LEFT JOIN jobs j ON j.id = r.job_id WHERE j.id IS NULL").fetch_one(&mut c).await?;
            let jobs_without_run = q("SELECT COUNT(*) FROM jobs j LEFT JOIN runs r ON r.job_id = j.id WHERE r.id IS NULL").fetch_one(&mut c).await?;
            let succeeded_without_run = q("SELECT COUNT(*) FROM jobs j LEFT JOIN runs r ON r.job_id = j.id WHERE j.state = 'succeeded' AND r.id IS NULL").fetch_one(&mut c).await?;
            let retried = q("SELECT COUNT(*) FROM jobs WHERE attempts > 1").fetch_one(&mut c).await?;
            let attempts = q("SELECT COALESCE(SUM(attempts), 0) FROM jobs").fetch_one(&mut c).await?;
            let runs_without_report = q("SELECT COUNT(*) FROM runs WHERE length(report_json) = 0").fetch_one(&mut c).await?;
            let integrity: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut c).await?;
            println!("jobs={jobs} succeeded={succeeded} runs={runs} duplicate_runs={dup} runs_without_job={orphan_runs} jobs_without_run={jobs_without_run} succeeded_without_run={succeeded_without_run} jobs_retried={retried} total_attempts={attempts} runs_without_report={runs_without_report} integrity_check={integrity}");
            let ok = jobs > 0 && succeeded == jobs && runs == jobs && dup == 0 && orphan_runs == 0 && jobs_without_run == 0 && runs_without_report == 0 && integrity == "ok";
            if !ok {
                bail!("SOAK CHECK FAILED");
            }
            println!("SOAK CHECK OK");
        }
        _ => bail!("usage: soak submit URL SWEEPS | soak wait URL TIMEOUT_S | soak check DB"),
    }
    Ok(())
}
