//! A result is accepted only from the worker that ran that attempt: CompleteJob, FailJob,
//! Heartbeat and UploadArtifact from any other caller (another registered worker, or one that
//! never registered) get PERMISSION_DENIED and store nothing; a report of another workload gets
//! INVALID_ARGUMENT naming the mismatch; a stale attempt may still finish, but only from its own
//! worker. Real coordinator in-process (127.0.0.1 port 0, a real SQLite file), real gRPC clients
//! generated from proto/, the way an outside client would call it.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::*;
use tokbench_coordinator::{CoordinatorConfig, CoordinatorHandle};
use tokbench_proto::auth::AuthedWorkerQueueClient;
use tokbench_proto::v1::*;
use tonic::Code;

async fn coordinator(dir: &Path, lease_ms: u64) -> CoordinatorHandle {
    tokbench_coordinator::spawn(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("attempts.db"),
        lease_ms,
        max_attempts: 3,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn caps() -> WorkerCapabilities {
    WorkerCapabilities { hostname: "test".into(), backend: "cpu".into(), gpu_name: "none (cpu)".into(), tokbench_version: "test".into(), ..Default::default() }
}

async fn query_i64(db: &Path, sql: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&mut conn).await.unwrap()
}

/// The attempt history as (attempt, worker, outcome), from the SQLite file.
async fn history(db: &Path, job_id: &str) -> Vec<(i64, String, Option<String>)> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
    sqlx::query_as("SELECT attempt, worker_id, outcome FROM attempts WHERE job_id = ? ORDER BY attempt").bind(job_id).fetch_all(&mut conn).await.unwrap()
}

/// A real report of the real engine for the leased job's workload.
async fn report_for(job: &LeasedJob) -> tokbench_core::BenchReport {
    let workload: tokbench_core::Workload = serde_json::from_str(&job.workload_json).unwrap();
    tokio::task::spawn_blocking(move || tokbench_worker::bench::run_workload(&workload, &AtomicBool::new(false), &mut |_| {})).await.unwrap().unwrap()
}

fn complete(worker: &str, job: &LeasedJob, attempt: u32, report: &tokbench_core::BenchReport) -> CompleteJobRequest {
    CompleteJobRequest { worker_id: worker.into(), job_id: job.job_id.clone(), attempt, report_json: serde_json::to_string(report).unwrap(), ..Default::default() }
}

async fn upload(q: &mut AuthedWorkerQueueClient, worker: &str, job_id: &str, attempt: u32) -> Result<Artifact, tonic::Status> {
    let chunks = vec![
        UploadArtifactChunk { job_id: job_id.into(), attempt, kind: "nsys-rep".into(), file_name: "p.nsys-rep".into(), worker_id: worker.into(), data: b"abc".to_vec() },
        UploadArtifactChunk { data: b"def".to_vec(), ..Default::default() },
    ];
    q.upload_artifact(futures::stream::iter(chunks)).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_worker_that_ran_an_attempt_may_report_fail_heartbeat_or_upload() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("attempts.db");
    let h = coordinator(dir.path(), 120_000).await;
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;
    let mut q = queue(&url, None).await;
    for w in ["w1", "w2"] {
        q.register(RegisterRequest { worker_id: w.into(), capabilities: Some(caps()) }).await.unwrap();
    }
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1], 2)) }).await.unwrap().into_inner();
    let job = q.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 1000, memory_free_bytes: 0 }).await.unwrap().into_inner().job.unwrap();
    assert_eq!(job.attempt, 1);
    let report = report_for(&job).await;

    // Another registered worker, and one that never registered: refused, nothing stored.
    for forger in ["w2", "never-registered"] {
        let err = q.complete_job(complete(forger, &job, 1, &report)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{forger}: {err:?}");
        assert!(err.message().contains("leased to worker \"w1\"") && err.message().contains(forger), "{}", err.message());
        let err = q.fail_job(FailJobRequest { worker_id: forger.into(), job_id: job.job_id.clone(), attempt: 1, error: "x".into(), retryable: false }).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{forger}: {err:?}");
        let err = q.heartbeat(HeartbeatRequest { worker_id: forger.into(), job_id: job.job_id.clone(), attempt: 1, ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{forger}: {err:?}");
        let err = upload(&mut q, forger, &job.job_id, 1).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{forger}: {err:?}");
    }
    // An attempt nobody leased.
    let err = q.complete_job(complete("w1", &job, 2, &report)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM runs").await, 0);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM artifacts").await, 0);
    let sweep = get_sweep(&mut c, &sub.sweep_id).await.unwrap();
    assert_eq!((state(&sweep.jobs[0]), sweep.jobs[0].worker_id.as_str()), (JobState::Leased, "w1"), "the forged calls changed the job");
    // No artifact file was left behind by the refused uploads.
    let artifacts = dir.path().join("attempts.db.artifacts");
    let files = std::fs::read_dir(&artifacts).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files, 0, "refused uploads left files in {}", artifacts.display());

    // A report of another workload: refused, naming what differs.
    let mut other = report.clone();
    other.workload.max_tokens = 3;
    other.workload.batch_size = 2;
    let err = q.complete_job(complete("w1", &job, 1, &other)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("does not belong to job") && err.message().contains("max_tokens: job 2, report 3") && err.message().contains("batch_size: job 1, report 2"), "{}", err.message());
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM runs").await, 0);

    // The worker that ran it: heartbeat, upload and completion are accepted.
    let hb = q.heartbeat(HeartbeatRequest { worker_id: "w1".into(), job_id: job.job_id.clone(), attempt: 1, ..Default::default() }).await.unwrap().into_inner();
    assert!(!hb.cancel);
    upload(&mut q, "w1", &job.job_id, 1).await.unwrap();
    let done = q.complete_job(complete("w1", &job, 1, &report)).await.unwrap().into_inner();
    assert!(!done.duplicate && !done.run_id.is_empty());
    // Even the duplicate of a stored report is only acknowledged to its own worker.
    let err = q.complete_job(complete("w2", &job, 1, &report)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM runs").await, 1);
    assert_eq!(history(&db, &job.job_id).await, vec![(1, "w1".to_string(), Some("succeeded".to_string()))]);
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_finishes_only_from_its_own_worker_and_the_history_records_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("attempts.db");
    let h = coordinator(dir.path(), LEASE_MS).await;
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;
    let mut q = queue(&url, None).await;
    for w in ["w1", "w2"] {
        q.register(RegisterRequest { worker_id: w.into(), capabilities: Some(caps()) }).await.unwrap();
    }
    c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1], 2)) }).await.unwrap();
    let first = q.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 1000, memory_free_bytes: 0 }).await.unwrap().into_inner().job.unwrap();
    let report = report_for(&first).await;
    // w1 stops heartbeating: the lease expires and w2 gets attempt 2.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        if let Some(j) = q.lease_job(LeaseJobRequest { worker_id: "w2".into(), wait_ms: 1000, memory_free_bytes: 0 }).await.unwrap().into_inner().job {
            break j;
        }
        assert!(Instant::now() < deadline, "the expired lease was never requeued");
    };
    assert_eq!((second.job_id.as_str(), second.attempt), (first.job_id.as_str(), 2));

    // w2 cannot report w1's attempt; w1 cannot report w2's.
    assert_eq!(q.complete_job(complete("w2", &first, 1, &report)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(q.complete_job(complete("w1", &first, 2, &report)).await.unwrap_err().code(), Code::PermissionDenied);
    // w1's stale attempt still finishes (a real result), from w1.
    let done = q.complete_job(complete("w1", &first, 1, &report)).await.unwrap().into_inner();
    assert!(!done.run_id.is_empty());
    // w2 is told to stop.
    let hb = q.heartbeat(HeartbeatRequest { worker_id: "w2".into(), job_id: first.job_id.clone(), attempt: 2, ..Default::default() }).await.unwrap().into_inner();
    assert!(hb.cancel);
    assert_eq!(
        history(&db, &first.job_id).await,
        vec![(1, "w1".to_string(), Some("succeeded".to_string())), (2, "w2".to_string(), Some("cancelled".to_string()))]
    );
    let stored_by: String = {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
        sqlx::query_scalar("SELECT worker_id FROM runs").fetch_one(&mut conn).await.unwrap()
    };
    assert_eq!(stored_by, "w1");
    h.shutdown().await.unwrap();
}
