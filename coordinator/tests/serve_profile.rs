//! `tokbench sweep --mode serve --profile` end to end without a GPU: a real coordinator and a
//! real worker process whose `--nsys` is the committed fake (worker/tests/data/nsys/fake-nsys:
//! it really runs the application it is given, then writes a stand-in `.nsys-rep` and replays
//! recorded `nsys stats` CSVs). The worker must run tokbench's server for the job's model as
//! `nsys profile ... tokbench-worker serve-openai`, drive the load level against it, stop it so
//! the capture ends, and store the run with the profile summary and the `.nsys-rep` artifact.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use tokbench_core::serve::{LengthDist, ServeDataset, ServeSpec};
use tokbench_core::{BenchReport, SweepPlan, WeightsMode, Workload};
use tokbench_proto::v1::{JobState, ListArtifactsRequest, ListRunsRequest, SubmitSweepRequest, SweepSpec};

/// A `nsys` that is the committed fake, logging each command line to `nsys-args.log` in `dir`.
fn fake_nsys(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/data/nsys/fake-nsys");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = dir.join("nsys");
    std::fs::write(&wrapper, format!("#!/bin/sh\nFAKE_NSYS_LOG='{}' exec '{}' \"$@\"\n", dir.join("nsys-args.log").display(), script.display())).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

fn serve_plan(endpoint: Option<&str>, profile: bool) -> SweepSpec {
    let serve = ServeSpec {
        endpoint: endpoint.map(str::to_string),
        dataset: ServeDataset::Synthetic { input: LengthDist::Fixed { n: 8 }, output: LengthDist::Fixed { n: 4 } },
        num_prompts: 6,
        warmup: 1,
        ..ServeSpec::default()
    };
    let plan = SweepPlan {
        models: vec!["tiny-gpt2".into()],
        workload: Workload { weights: WeightsMode::Synthetic, serve: Some(serve), ..Workload::default() },
        profile,
        request_rates: vec![f64::INFINITY],
        ..SweepPlan::default()
    };
    SweepSpec::from(&plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiled_serve_job_runs_tokbenchs_server_under_nsys_and_stores_the_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("coord.db");
    let (_coordinator, addr) = start_coordinator(tmp.path(), &db, "127.0.0.1:0", &[]);
    let url = format!("http://{addr}");
    let nsys = fake_nsys(tmp.path());
    let _worker = start_worker(tmp.path(), &url, "w-prof", &["--nsys", nsys.to_str().unwrap()]);
    let mut c = benchmarks(&url, None).await;

    // Against an endpoint there is nothing of tokbench's to profile: refused at submission.
    let err = c.submit_sweep(SubmitSweepRequest { spec: Some(serve_plan(Some("http://127.0.0.1:9"), true)) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("--profile profiles tokbench's own server"), "{}", err.message());

    let sweep_id = c.submit_sweep(SubmitSweepRequest { spec: Some(serve_plan(None, true)) }).await.unwrap().into_inner().sweep_id;
    let s = wait_sweep(&mut c, &sweep_id, Duration::from_secs(180), "the profiled serve job", |s| s.jobs.iter().all(|j| matches!(state(j), JobState::Succeeded | JobState::Failed))).await;
    let job = &s.jobs[0];
    assert_eq!(state(job), JobState::Succeeded, "{s:#?}\nworker log:\n{}", std::fs::read_to_string(tmp.path().join("w-prof.log")).unwrap_or_default());

    // The server ran as nsys's application, with the job's model, weights and device.
    let log = std::fs::read_to_string(tmp.path().join("nsys-args.log")).unwrap();
    let mut lines = log.lines();
    let profile_line = lines.next().unwrap();
    assert!(profile_line.starts_with("profile -o ") && profile_line.contains("-t cuda,nvtx -s none --cpuctxsw=none --cuda-graph-trace=node"), "{profile_line}");
    assert!(
        profile_line.contains(" serve-openai --listen 127.0.0.1:0 --model tiny-gpt2 --device cpu --dtype f32 --weights synthetic --weights-seed 0"),
        "{profile_line}"
    );
    assert!(lines.next().unwrap().starts_with("stats --force-export=true --format csv"), "{log}");

    // The run: the load level's serve metrics from the profiled server, and the profile summary.
    let runs = c.list_runs(ListRunsRequest { sweep_id: sweep_id.clone(), include_reports: true, ..Default::default() }).await.unwrap().into_inner().runs;
    assert_eq!(runs.len(), 1);
    let report: BenchReport = serde_json::from_str(&runs[0].report_json).unwrap();
    let serve = report.serve.as_ref().expect("a serve report");
    assert_eq!(serve.metrics.completed, 6, "{:?}", serve.metrics);
    assert_eq!(serve.metrics.failed, 0, "{:?}", serve.metrics);
    assert_eq!(serve.metrics.total_output_tokens, 6 * 4);
    assert!(serve.endpoint.starts_with("tokbench engine under nsys in a child of the worker (serving tiny-gpt2 (cpu)"), "{}", serve.endpoint);
    assert!(serve.endpoint.contains("weights synthetic"), "{}", serve.endpoint);
    // The child got the serve job's engine flags, and the report has them with its KV pool.
    let engine = serve.server_engine.as_deref().unwrap_or_default();
    assert!(engine.starts_with("--max-num-seqs 256 --block-size 16") && engine.contains("--batched-prefill true; KV cache: "), "{engine}");
    let m = &report.nsight_metrics;
    let file_name = format!("profile_tiny-gpt2_{}.nsys-rep", job.job_id);
    assert_eq!(m.profile_file.as_deref(), Some(file_name.as_str()));
    assert_eq!(m.kernels.len(), 19, "the recorded kernel summary");
    assert!(m.summary_scope.starts_with("whole process"), "{}", m.summary_scope);

    // The .nsys-rep is stored with the run.
    let arts = c.list_artifacts(ListArtifactsRequest { run_id: runs[0].summary.as_ref().unwrap().run_id.clone(), job_id: String::new() }).await.unwrap().into_inner().artifacts;
    assert_eq!(arts.len(), 1, "{arts:?}");
    assert_eq!(arts[0].kind, "nsys-rep");
    assert_eq!(arts[0].file_name, file_name);
    assert!(arts[0].size_bytes > 0);
}
