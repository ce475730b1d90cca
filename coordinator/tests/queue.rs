//! The hot path of the queue: CompleteJob that also leases the next job (one transaction), its
//! retries, and group commit under many concurrent workers. Real coordinator in-process on
//! 127.0.0.1 port 0 with a real SQLite file, real gRPC, real worker serve loops (with a null
//! engine where inference would only slow the test down).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokbench_coordinator::{CoordinatorConfig, CoordinatorHandle};
use tokbench_core::{BenchReport, Workload};
use tokbench_proto::v1::*;
use tokbench_worker::bench::Progress;
use tokbench_worker::serve::{Engine, WorkerConfig};

/// Long leases: these tests are about completion and leasing, not expiry, and must not see a
/// lease expire on a slow machine.
const LONG_LEASE_MS: u64 = 120_000;

async fn coordinator(dir: &Path) -> CoordinatorHandle {
    tokbench_coordinator::spawn(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("queue.db"),
        lease_ms: LONG_LEASE_MS,
        max_attempts: 3,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A real report of the real engine (tiny-opt, one token), made once.
async fn template_report() -> BenchReport {
    tokio::task::spawn_blocking(|| tiny_opt_report(1)).await.unwrap()
}

/// An engine that runs no inference: returns the template report for every job.
fn null_engine(template: BenchReport) -> Engine {
    let t = Arc::new(template);
    Arc::new(move |w: &Workload, _c: &AtomicBool, _p: &mut dyn FnMut(&Progress)| {
        let mut r = (*t).clone();
        r.model = w.model.clone();
        r.workload = w.clone();
        Ok(r)
    })
}

fn caps() -> WorkerCapabilities {
    WorkerCapabilities { hostname: "test".into(), backend: "cpu".into(), gpu_name: "none (cpu)".into(), tokbench_version: "test".into(), ..Default::default() }
}

async fn query_i64(db: &Path, sql: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&mut conn).await.unwrap()
}

fn job<'a>(s: &'a Sweep, id: &str) -> &'a Job {
    s.jobs.iter().find(|j| j.job_id == id).unwrap_or_else(|| panic!("job {id} not in the sweep"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_with_lease_next_leases_in_the_same_call_and_a_retry_never_leases_a_second_job() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    let h = coordinator(dir.path()).await;
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;
    let mut q = queue(&url, None).await;
    q.register(RegisterRequest { worker_id: "w1".into(), capabilities: Some(caps()) }).await.unwrap();
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1, 2, 3], 1)) }).await.unwrap().into_inner();
    let template = template_report().await;
    // The engine's report for each job is of that job's workload (the coordinator checks).
    let complete = |job: &LeasedJob| CompleteJobRequest {
        worker_id: "w1".into(),
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        report_json: {
            let mut r = template.clone();
            r.workload = serde_json::from_str(&job.workload_json).unwrap();
            serde_json::to_string(&r).unwrap()
        },
        timings: None,
        lease_next: Some(NextLease { memory_free_bytes: 0 }),
    };

    // The first job the old way: LeaseJob.
    let a = q.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 1000, memory_free_bytes: 0 }).await.unwrap().into_inner().job.unwrap();
    assert_eq!(a.attempt, 1);

    // Its result, asking for the next job: stored, and the next job leased in the same call.
    let r1 = q.complete_job(complete(&a)).await.unwrap().into_inner();
    assert!(!r1.duplicate && !r1.run_id.is_empty(), "{r1:?}");
    let b = r1.next_job.clone().expect("a queued job is leased with the result");
    assert_ne!(b.job_id, a.job_id);
    assert_eq!(b.attempt, 1);
    assert_eq!(b.sweep_id, sub.sweep_id);
    assert!(b.lease_expires_ms > 0);

    // The same call again (as a worker does when the answer was lost): nothing stored twice,
    // and the job leased by the first try comes back -- not a second job.
    let r2 = q.complete_job(complete(&a)).await.unwrap().into_inner();
    assert!(r2.duplicate, "{r2:?}");
    assert_eq!(r2.run_id, r1.run_id);
    let b_again = r2.next_job.expect("the held job is handed out again");
    assert_eq!((b_again.job_id.as_str(), b_again.attempt), (b.job_id.as_str(), b.attempt));
    let s = get_sweep(&mut c, &sub.sweep_id).await.unwrap();
    assert_eq!(state(job(&s, &a.job_id)), JobState::Succeeded);
    assert_eq!(state(job(&s, &b.job_id)), JobState::Leased);
    assert_eq!(job(&s, &b.job_id).attempts, 1, "not leased a second time");
    let third = s.jobs.iter().find(|j| j.job_id != a.job_id && j.job_id != b.job_id).unwrap().job_id.clone();
    assert_eq!(state(job(&s, &third)), JobState::Queued, "the retry leased nothing else: {s:#?}");
    assert_eq!(job(&s, &third).attempts, 0);
    let workers = c.list_workers(ListWorkersRequest {}).await.unwrap().into_inner().workers;
    assert_eq!(workers[0].current_job_id, b.job_id);

    // The chain goes on: B's result leases the last job, whose result finds the queue empty.
    let r3 = q.complete_job(complete(&b)).await.unwrap().into_inner();
    let last = r3.next_job.expect("the last queued job");
    assert_eq!(last.job_id, third);
    let r4 = q.complete_job(complete(&last)).await.unwrap().into_inner();
    assert!(!r4.duplicate && r4.next_job.is_none(), "nothing left to lease: {r4:?}");
    let r5 = q.complete_job(complete(&last)).await.unwrap().into_inner();
    assert!(r5.duplicate && r5.next_job.is_none(), "a retry with nothing held leases nothing: {r5:?}");

    let s = get_sweep(&mut c, &sub.sweep_id).await.unwrap();
    assert_eq!(s.state, "succeeded");
    assert!(s.jobs.iter().all(|j| state(j) == JobState::Succeeded && j.attempts == 1 && !j.run_id.is_empty()), "{s:#?}");
    let workers = c.list_workers(ListWorkersRequest {}).await.unwrap().into_inner().workers;
    assert_eq!(workers[0].current_job_id, "", "the worker holds nothing after its last result");
    assert_eq!(db_counts(&db).await, (3, 3, 0));
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM runs WHERE length(report_json) > 0").await, 3, "each run keeps its report");

    // The separate calls still work beside it: a new job, LeaseJob, then CompleteJob without lease_next.
    let sub2 = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-gpt2"], &[1], 1)) }).await.unwrap().into_inner();
    let d = q.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 1000, memory_free_bytes: 0 }).await.unwrap().into_inner().job.unwrap();
    assert_eq!(d.sweep_id, sub2.sweep_id);
    let r6 = q.complete_job(CompleteJobRequest { lease_next: None, ..complete(&d) }).await.unwrap().into_inner();
    assert!(!r6.duplicate && r6.next_job.is_none());
    assert_eq!(get_sweep(&mut c, &sub2.sweep_id).await.unwrap().state, "succeeded");
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_workers_run_every_job_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queue.db");
    let h = coordinator(dir.path()).await;
    let url = format!("http://{}", h.local_addr());
    let engine = null_engine(template_report().await);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..16 {
        let mut rx = stop_rx.clone();
        let cfg = WorkerConfig { coordinator: url.clone(), device: tokbench_core::DeviceSpec::Cpu, token: None, worker_id: Some(format!("g-{i}")), nsys_path: None, max_jobs: None, ca_cert: None };
        workers.push(tokio::spawn(tokbench_worker::serve::run_with_engine(
            cfg,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
            engine.clone(),
        )));
    }
    let before = h.commit_counts();
    let mut c = benchmarks(&url, None).await;
    // Two sweeps at once, 160 jobs each (names outside the catalog: the null engine runs nothing).
    let mut sweeps = Vec::new();
    for s in 0..2 {
        let models: Vec<String> = (0..10).map(|m| format!("gc-{s}-{m}")).collect();
        let models: Vec<&str> = models.iter().map(String::as_str).collect();
        let spec = tiny_spec(&models, &(1..=16).collect::<Vec<usize>>(), 1);
        sweeps.push(c.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await.unwrap().into_inner().sweep_id);
    }
    for id in &sweeps {
        let s = wait_sweep(&mut c, id, Duration::from_secs(180), "the sweep", |s| s.state != "running").await;
        assert_eq!(s.state, "succeeded", "{s:#?}");
        assert_eq!(s.jobs_done, 160);
    }
    let _ = stop_tx.send(true);
    for w in workers {
        w.await.unwrap().unwrap();
    }
    let after = h.commit_counts();
    eprintln!(
        "group commit: {} operations in {} commits (largest {})",
        after.ops - before.ops,
        after.commits - before.commits,
        after.largest
    );
    h.shutdown().await.unwrap();

    // Straight from the SQLite file: one run per job, each job run once, by the worker that
    // held it, and nothing left held.
    assert_eq!(db_counts(&db).await, (320, 320, 0));
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM jobs WHERE state <> 'succeeded' OR attempts <> 1").await, 0);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.attempt <> 1 OR r.worker_id <> j.worker_id").await, 0);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM workers WHERE current_job_id IS NOT NULL").await, 0);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM sweeps WHERE state = 'succeeded'").await, 2);
    let run_ids = {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
        let ok: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await.unwrap();
        assert_eq!(ok, "ok");
        sqlx::query_scalar::<_, String>("SELECT id FROM runs").fetch_all(&mut conn).await.unwrap()
    };
    assert_eq!(run_ids.iter().collect::<HashSet<_>>().len(), 320);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_does_not_lease_a_job_with_its_last_result() {
    let dir = tempfile::tempdir().unwrap();
    let h = coordinator(dir.path()).await;
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["m-a", "m-b"], &[1, 2], 1)) }).await.unwrap().into_inner();
    // Two jobs and out: the second result must not lease a third job the worker would never run.
    let cfg = WorkerConfig { coordinator: url.clone(), device: tokbench_core::DeviceSpec::Cpu, token: None, worker_id: Some("two".into()), nsys_path: None, max_jobs: Some(2), ca_cert: None };
    let w = tokbench_worker::serve::run_with_engine(cfg, std::future::pending(), null_engine(template_report().await));
    tokio::time::timeout(Duration::from_secs(60), w).await.expect("the worker exits after two jobs").unwrap();
    let s = get_sweep(&mut c, &sub.sweep_id).await.unwrap();
    let done = s.jobs.iter().filter(|j| state(j) == JobState::Succeeded).count();
    let queued: Vec<_> = s.jobs.iter().filter(|j| state(j) == JobState::Queued && j.attempts == 0).collect();
    assert_eq!((done, queued.len()), (2, 2), "{s:#?}");
    h.shutdown().await.unwrap();
}
