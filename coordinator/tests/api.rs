//! The coordinator in-process (`tokbench_coordinator::spawn` on 127.0.0.1 port 0, a real SQLite
//! file), real gRPC clients, and in-process workers running the real engine.

mod common;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use tokbench_core::Workload;
use tokbench_coordinator::{CoordinatorConfig, CoordinatorHandle};
use tokbench_proto::v1::*;
use tonic::Code;

async fn coordinator(dir: &std::path::Path, token: Option<&str>) -> CoordinatorHandle {
    tokbench_coordinator::spawn(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("api.db"),
        token: token.map(String::from),
        lease_ms: LEASE_MS,
        max_attempts: 3,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn caps() -> WorkerCapabilities {
    WorkerCapabilities { hostname: "test".into(), backend: "cpu".into(), gpu_name: "none (cpu)".into(), tokbench_version: "test".into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let h = coordinator(dir.path(), Some("s3cret")).await;
    let url = format!("http://{}", h.local_addr());

    let err = benchmarks(&url, None).await.list_sweeps(ListSweepsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("missing token"), "{}", err.message());
    let err = benchmarks(&url, Some("guess")).await.list_sweeps(ListSweepsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("wrong token"), "{}", err.message());
    let err = queue(&url, Some("guess")).await.register(RegisterRequest { worker_id: "w".into(), capabilities: Some(caps()) }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // The right token passes on both services.
    benchmarks(&url, Some("s3cret")).await.list_sweeps(ListSweepsRequest::default()).await.unwrap();
    let r = queue(&url, Some("s3cret")).await.register(RegisterRequest { worker_id: "w".into(), capabilities: Some(caps()) }).await.unwrap();
    assert_eq!(r.into_inner().lease_ms as u64, LEASE_MS);
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let h = coordinator(dir.path(), None).await;
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;
    let bad: Vec<(SweepSpec, &str)> = vec![
        (SweepSpec { models: vec![], ..tiny_spec(&[], &[1], 4) }, "no models"),
        (tiny_spec(&["tiny-opt"], &[0], 4), "batch size 0"),
        (tiny_spec(&["tiny-opt"], &[1], 9000), "max_tokens 9000"),
        (tiny_spec(&["tiny opt; drop table jobs"], &[1], 4), "only letters"),
        (spec_of(&["tiny-opt"], &[1], Workload { repetitions: 500, ..tiny_workload(4) }), "repetitions 500"),
        (SweepSpec { workload_json: r#"{"dtype":"int4"}"#.into(), ..tiny_spec(&["tiny-opt"], &[1], 4) }, "dtype"),
        (SweepSpec { backend: "tpu".into(), ..tiny_spec(&["tiny-opt"], &[1], 4) }, "backend"),
    ];
    for (spec, needle) in bad {
        let err = c.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "expected {needle:?} in {:?}", err.message());
    }
    let err = c.submit_sweep(SubmitSweepRequest { spec: None }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Nothing was stored by the refused requests.
    assert!(c.list_sweeps(ListSweepsRequest::default()).await.unwrap().into_inner().sweeps.is_empty());
    let err = c.get_sweep(GetSweepRequest { sweep_id: "latest".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let err = c.get_sweep(GetSweepRequest { sweep_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nope"), "{}", err.message());
    let err = c.get_run(GetRunRequest { run_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c.download_artifact(DownloadArtifactRequest { artifact_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut q = queue(&url, None).await;
    let err = q.register(RegisterRequest { worker_id: "bad id!".into(), capabilities: Some(caps()) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = q.lease_job(LeaseJobRequest { worker_id: "never-registered".into(), wait_ms: 0, memory_free_bytes: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("Register"), "{}", err.message());
    q.register(RegisterRequest { worker_id: "w1".into(), capabilities: Some(caps()) }).await.unwrap();
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1], 2)) }).await.unwrap().into_inner();
    let job = q.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 1000, memory_free_bytes: 0 }).await.unwrap().into_inner().job.unwrap();
    assert_eq!(job.sweep_id, sub.sweep_id);
    let err = q
        .complete_job(CompleteJobRequest { worker_id: "w1".into(), job_id: job.job_id.clone(), attempt: 1, report_json: "{\"not\": \"a report\"}".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("BenchReport"), "{}", err.message());
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_twice_with_the_same_attempt_stores_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let h = coordinator(dir.path(), None).await;
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;
    let mut q = queue(&url, None).await;
    q.register(RegisterRequest { worker_id: "w1".into(), capabilities: Some(caps()) }).await.unwrap();
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-gpt2"], &[2], 3)) }).await.unwrap().into_inner();
    let job = q.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 1000, memory_free_bytes: 0 }).await.unwrap().into_inner().job.unwrap();
    assert_eq!(job.attempt, 1);

    // A real report from the real engine.
    let workload: tokbench_core::Workload = serde_json::from_str(&job.workload_json).unwrap();
    let report = tokio::task::spawn_blocking(move || tokbench_worker::bench::run_workload(&workload, &AtomicBool::new(false), &mut |_| {})).await.unwrap().unwrap();
    let samples: usize = report.repetitions.iter().map(|r| r.ttft_ms.len() + r.step_latencies_ms.len()).sum();
    let report_json = serde_json::to_string(&report).unwrap();
    let req = CompleteJobRequest { worker_id: "w1".into(), job_id: job.job_id.clone(), attempt: 1, report_json: report_json.clone(), ..Default::default() };
    let first = q.complete_job(req.clone()).await.unwrap().into_inner();
    let second = q.complete_job(req).await.unwrap().into_inner();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.run_id, second.run_id);

    // Late messages about the finished job change nothing.
    let hb = q.heartbeat(HeartbeatRequest { worker_id: "w1".into(), job_id: job.job_id.clone(), attempt: 1, ..Default::default() }).await.unwrap().into_inner();
    assert!(hb.cancel, "a heartbeat for a finished job is told to stop");
    let f = q.fail_job(FailJobRequest { worker_id: "w1".into(), job_id: job.job_id.clone(), attempt: 1, error: "late".into(), retryable: true }).await.unwrap().into_inner();
    assert!(!f.will_retry);

    let sweep = get_sweep(&mut c, &sub.sweep_id).await.unwrap();
    assert_eq!(sweep.state, "succeeded");
    assert_eq!(sweep.jobs[0].run_id, first.run_id);
    let run = c.get_run(GetRunRequest { run_id: first.run_id.clone() }).await.unwrap().into_inner();
    // The report is stored byte for byte as the worker sent it.
    assert_eq!(run.report_json, report_json);
    // Typed columns come from the JSON as sent (serde_json's default float parsing may differ
    // from the in-memory f64 in the last bit, so compare against the parsed JSON).
    let sent: tokbench_core::BenchReport = serde_json::from_str(&report_json).unwrap();
    let s = run.summary.unwrap();
    assert_eq!(s.tokens_per_second, sent.inference_metrics.tokens_per_second);
    // Every stored summary column comes back, equal to the report's figure.
    let im = &sent.inference_metrics;
    assert_eq!((s.ttft_p99_ms, s.inter_token_p99_ms), (im.ttft_ms.p99, im.inter_token_latency_ms.p99));
    assert_eq!((s.prefill_tokens_per_second, s.decode_tokens_per_second), (im.prefill_tokens_per_second, im.decode_tokens_per_second));
    assert_eq!((s.num_prompts as usize, s.total_input_tokens as usize, s.total_output_tokens as usize), (im.num_prompts, im.total_input_tokens, im.total_output_tokens));
    assert_eq!((s.total_parameters, s.num_layers as usize), (sent.model_properties.total_parameters as u64, sent.model_properties.num_layers));
    assert_eq!((s.model_id.as_str(), s.model_size_mb), (sent.model_id.as_str(), sent.model_properties.model_size_mb));
    assert_eq!((s.tokbench_version.as_str(), s.hostname.as_str(), s.started_at.as_str()), (sent.environment.tokbench_version.as_str(), sent.environment.hostname.as_str(), sent.timestamp.as_str()));
    // A CPU run: no GPU memory, no energy (absent, not zero).
    assert_eq!((s.gpu_memory_allocated_mb, s.energy_joules, s.tokens_per_joule), (None, None, None));
    assert!(s.num_prompts > 0 && s.total_output_tokens > 0);
    assert_eq!(db_counts(&dir.path().join("api.db")).await, (1, 1, 0));
    // Every latency sample comes back with the report (the one record of them).
    let back: usize = sent.repetitions.iter().map(|r| r.ttft_ms.len() + r.step_latencies_ms.len()).sum();
    assert_eq!(back, samples);
    assert!(samples > 0);
    h.shutdown().await.unwrap();
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_fails_at_once_with_the_engine_error() {
    let dir = tempfile::tempdir().unwrap();
    let h = coordinator(dir.path(), None).await;
    let url = format!("http://{}", h.local_addr());
    let (stop, worker) = in_process_worker(&url, "w1", Vec::new());
    let mut c = benchmarks(&url, None).await;
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["no-such-model"], &[1], 2)) }).await.unwrap().into_inner();
    let s = wait_sweep(&mut c, &sub.sweep_id, Duration::from_secs(60), "the job to fail", |s| s.state != "running").await;
    assert_eq!(s.state, "failed");
    let j = &s.jobs[0];
    assert_eq!(state(j), JobState::Failed);
    assert_eq!(j.attempts, 1, "not retried: {j:?}");
    assert!(j.last_error.contains("no-such-model"), "{}", j.last_error);
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_sweep_and_its_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let h = coordinator(dir.path(), None).await;
    let url = format!("http://{}", h.local_addr());
    let (stop, worker) = in_process_worker(&url, "w1", Vec::new());
    let mut c = benchmarks(&url, None).await;
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1, 2], 2000)) }).await.unwrap().into_inner();
    let id = sub.sweep_id.clone();
    wait_sweep(&mut c, &id, Duration::from_secs(60), "a running job", |s| s.jobs.iter().any(|j| j.state == JobState::Running as i32)).await;
    let mut stream = c.watch_sweep(WatchSweepRequest { sweep_id: id.clone() }).await.unwrap().into_inner();

    let s = c.cancel_sweep(CancelSweepRequest { sweep_id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(s.state, "cancelled");
    assert!(s.jobs.iter().all(|j| j.state == JobState::Cancelled as i32), "{s:#?}");
    let mut last = EventKind::Unspecified;
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = stream.message().await.unwrap() {
            last = EventKind::try_from(ev.kind).unwrap();
        }
    })
    .await
    .expect("watch stream ends after cancel");
    assert_eq!(last, EventKind::SweepDone);

    // The worker drops the cancelled job (no run stored) and is free for the next sweep.
    let next = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1], 2)) }).await.unwrap().into_inner();
    let done = wait_sweep(&mut c, &next.sweep_id, Duration::from_secs(60), "the next sweep", |s| s.state != "running").await;
    assert_eq!(done.state, "succeeded");
    let runs = c.list_runs(ListRunsRequest { sweep_id: id.clone(), ..Default::default() }).await.unwrap().into_inner().runs;
    assert!(runs.is_empty(), "a cancelled sweep stores no runs");
    let s = get_sweep(&mut c, &id).await.unwrap();
    assert!(s.jobs.iter().all(|j| j.state == JobState::Cancelled as i32 && j.attempts <= 1), "{s:#?}");
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
    h.shutdown().await.unwrap();
}
