//! End-to-end: the real `tokbench-coordinator` and `tokbench-worker` binaries as child
//! processes on loopback, killed with SIGKILL, a real SQLite file in a temp dir.
//! Needs `cargo build -p tokbench-worker` first (see common::worker_bin).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use tokbench_core::Workload;
use tokbench_proto::v1::{EventKind, JobState, ListRunsRequest, SubmitSweepRequest, WatchSweepRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_complete_a_sweep_with_exactly_one_run_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let (_coord, addr) = start_coordinator(dir.path(), &db, "127.0.0.1:0", &[]);
    let url = format!("http://{addr}");
    let _w1 = start_worker(dir.path(), &url, "w1", &[]);
    let _w2 = start_worker(dir.path(), &url, "w2", &[]);
    let mut c = benchmarks(&url, None).await;
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt", "tiny-gpt2"], &[1, 2], 4)) }).await.unwrap().into_inner();
    assert_eq!(sub.jobs.len(), 4);

    // The watch stream starts with the current state and ends with SWEEP_DONE.
    let mut stream = c.watch_sweep(WatchSweepRequest { sweep_id: sub.sweep_id.clone() }).await.unwrap().into_inner();
    let mut finished = HashSet::new();
    let mut last_kind = EventKind::Unspecified;
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(ev) = stream.message().await.unwrap() {
            last_kind = EventKind::try_from(ev.kind).unwrap();
            if last_kind == EventKind::Finished {
                let run = ev.run.expect("FINISHED carries the run");
                assert!(run.tokens_per_second > 0.0);
                finished.insert(ev.job.unwrap().job_id);
            }
        }
    })
    .await
    .expect("sweep did not finish within 120 s");
    assert_eq!(last_kind, EventKind::SweepDone);
    assert_eq!(finished.len(), 4, "every job reported FINISHED");

    let sweep = get_sweep(&mut c, &sub.sweep_id).await.unwrap();
    assert_eq!(sweep.state, "succeeded");
    assert_eq!(sweep.jobs_done, 4);
    for j in &sweep.jobs {
        assert_eq!(state(j), JobState::Succeeded, "{j:?}");
        assert_eq!(j.attempts, 1, "{j:?}");
        assert!(!j.run_id.is_empty());
    }
    let runs = c.list_runs(ListRunsRequest { sweep_id: sub.sweep_id.clone(), include_reports: true, ..Default::default() }).await.unwrap().into_inner().runs;
    assert_eq!(runs.len(), 4);
    let job_ids: HashSet<_> = runs.iter().map(|r| r.summary.as_ref().unwrap().job_id.clone()).collect();
    assert_eq!(job_ids.len(), 4);
    for r in &runs {
        let report: tokbench_core::BenchReport = serde_json::from_str(&r.report_json).unwrap();
        let s = r.summary.as_ref().unwrap();
        assert_eq!(report.workload.batch_size as u32, s.batch_size);
        assert_eq!(report.inference_metrics.total_output_tokens, report.workload.prompts.num_prompts() * 4);
        assert_eq!(s.device, "cpu");
    }
    assert_eq!(db_counts(&db).await, (4, 4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_job_is_rerun_by_another_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let (_coord, addr) = start_coordinator(dir.path(), &db, "127.0.0.1:0", &[]);
    let url = format!("http://{addr}");
    let mut victim = start_worker(dir.path(), &url, "victim", &[]);
    let mut c = benchmarks(&url, None).await;
    // Long enough to still be running when the poll below sees it (thousands of decode steps:
    // one repetition of 400 tokens once finished between two polls on an idle machine).
    let spec = spec_of(&["tiny-opt"], &[1], Workload { repetitions: 20, ..tiny_workload(400) });
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await.unwrap().into_inner();
    let id = sub.sweep_id.clone();
    wait_sweep(&mut c, &id, Duration::from_secs(60), "the job running on the victim", |s| {
        s.jobs[0].state == JobState::Running as i32 && s.jobs[0].worker_id == "victim"
    })
    .await;
    victim.kill9();
    let _rescuer = start_worker(dir.path(), &url, "rescuer", &[]);
    let s = wait_sweep(&mut c, &id, Duration::from_secs(120), "the sweep to finish", |s| s.state != "running").await;
    assert_eq!(s.state, "succeeded", "{s:#?}");
    let job = &s.jobs[0];
    assert_eq!(job.attempts, 2, "{job:?}");
    assert_eq!(job.worker_id, "rescuer");
    let runs = c.list_runs(ListRunsRequest { sweep_id: id.clone(), ..Default::default() }).await.unwrap().into_inner().runs;
    assert_eq!(runs.len(), 1);
    let run = runs[0].summary.as_ref().unwrap();
    assert_eq!((run.worker_id.as_str(), run.attempt), ("rescuer", 2));
    assert_eq!(db_counts(&db).await, (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_mid_sweep_and_restarted_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let (mut coord, addr) = start_coordinator(dir.path(), &db, "127.0.0.1:0", &[]);
    let url = format!("http://{addr}");
    let _w1 = start_worker(dir.path(), &url, "w1", &[]);
    let _w2 = start_worker(dir.path(), &url, "w2", &[]);
    let mut c = benchmarks(&url, None).await;
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt", "tiny-gpt2"], &[1, 2, 3], 40)) }).await.unwrap().into_inner();
    let id = sub.sweep_id.clone();
    wait_sweep(&mut c, &id, Duration::from_secs(90), "a first result while others are pending", |s| {
        s.jobs_done >= 1 && s.jobs_done < s.jobs_total
    })
    .await;
    coord.kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_coord2, addr2) = start_coordinator(dir.path(), &db, &addr.to_string(), &[]);
    assert_eq!(addr2, addr);
    let s = wait_sweep(&mut c, &id, Duration::from_secs(150), "the sweep to finish after the restart", |s| s.state != "running").await;
    assert_eq!(s.state, "succeeded", "{s:#?}");
    assert_eq!(s.jobs.len(), 6);
    for j in &s.jobs {
        assert_eq!(state(j), JobState::Succeeded, "{j:?}");
        assert!(!j.run_id.is_empty());
        assert!(j.attempts >= 1 && j.attempts <= 3, "{j:?}");
    }
    let runs = c.list_runs(ListRunsRequest { sweep_id: id.clone(), ..Default::default() }).await.unwrap().into_inner().runs;
    assert_eq!(runs.len(), 6);
    assert_eq!(db_counts(&db).await, (6, 6, 0));
}
