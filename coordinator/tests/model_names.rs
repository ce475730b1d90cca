//! What a remote client may make a worker read: the coordinator refuses path-like model names
//! (absolute, `..`) unless marked worker-local (`local:`), and control characters in labels,
//! model names and prompts; a worker loads `local:` directories only from under its
//! `--models-dir`. A real coordinator in-process on loopback, the generated gRPC client, and
//! in-process workers running the real engine on tiny checkpoints.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use tokbench_coordinator::{CoordinatorConfig, CoordinatorHandle};
use tokbench_core::{PromptSource, SweepPlan, WeightsMode};
use tokbench_proto::v1::*;
use tonic::Code;

async fn coordinator(dir: &Path) -> CoordinatorHandle {
    tokbench_coordinator::spawn(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("names.db"),
        lease_ms: LEASE_MS,
        max_attempts: 3,
        ..Default::default()
    })
    .await
    .unwrap()
}


async fn refused(c: &mut tokbench_proto::auth::AuthedBenchmarksClient, spec: SweepSpec) -> String {
    let err = c.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    err.message().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_model_names_are_refused_unless_marked_worker_local() {
    let dir = tempfile::tempdir().unwrap();
    let h = coordinator(dir.path()).await;
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;

    for (model, what) in [
        ("../../../../etc/passwd", "contains a \"..\" component"),
        ("models/../../etc", "contains a \"..\" component"),
        ("/etc/passwd", "is an absolute path"),
        ("/models/llama", "is an absolute path"),
    ] {
        let msg = refused(&mut c, tiny_spec(&["tiny-opt", model], &[1], 2)).await;
        assert!(msg.contains(&format!("model name \"{model}\" {what}")), "{msg}");
        // The fix is named: mark it worker-local, and the worker's --models-dir still applies.
        assert!(msg.contains(&format!("write local:{model}")) && msg.contains("--models-dir"), "{msg}");
    }
    assert!(c.list_sweeps(ListSweepsRequest::default()).await.unwrap().into_inner().sweeps.is_empty(), "nothing stored");

    // Marked worker-local, absolute paths and relative names are queued as given.
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["local:/abs/dir", "local:../models/x", "./models/opt"], &[1], 2)) }).await.unwrap().into_inner();
    let s = get_sweep(&mut c, &sub.sweep_id).await.unwrap();
    let models: Vec<&str> = s.jobs.iter().map(|j| j.model.as_str()).collect();
    assert_eq!(models, ["local:/abs/dir", "local:../models/x", "./models/opt"]);
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_at_submission() {
    let dir = tempfile::tempdir().unwrap();
    let h = coordinator(dir.path()).await;
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;
    let with_prompts = |prompts: &[&str]| {
        let mut w = tiny_workload(2);
        w.prompts = PromptSource::Inline { prompts: prompts.iter().map(|p| p.to_string()).collect() };
        spec_of(&["tiny-opt"], &[1], w)
    };
    let labelled = |label: &str| SweepSpec { label: label.into(), ..tiny_spec(&["tiny-opt"], &[1], 2) };

    let cases: Vec<(SweepSpec, &str)> = vec![
        (labelled("nightly\0"), "label contains the control character '\\0' at character 7"),
        (labelled("\u{1b}[31mred"), "label contains the control character '\\u{1b}' at character 0"),
        (labelled("two\nlines"), "label contains the control character '\\n'"),
        (tiny_spec(&["tiny\0opt"], &[1], 2), "model name \"tiny\\0opt\" contains the control character '\\0' at character 4"),
        (tiny_spec(&["tiny-opt", "local:/m\u{7f}"], &[1], 2), "contains the control character '\\u{7f}'"),
        (with_prompts(&["fine", "nul\0inside"]), "prompt 1 contains the control character '\\0' at character 3"),
        (with_prompts(&["bell\u{7}"]), "prompt 0 contains the control character '\\u{7}'"),
        (with_prompts(&["escape \u{1b}[2J"]), "prompt 0 contains the control character '\\u{1b}'"),
    ];
    for (spec, needle) in cases {
        let msg = refused(&mut c, spec).await;
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    }
    assert!(c.list_sweeps(ListSweepsRequest::default()).await.unwrap().into_inner().sweeps.is_empty(), "nothing stored");

    // Newlines, tabs (and Windows line ends) are a prompt's own text.
    let prompt = "first line\nsecond\tcolumn\r\nthird";
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(SweepSpec { label: "plain label".into(), ..with_prompts(&[prompt]) }) }).await.unwrap().into_inner();
    let s = get_sweep(&mut c, &sub.sweep_id).await.unwrap();
    let plan = SweepPlan::try_from(s.spec.as_ref().unwrap()).unwrap();
    assert_eq!(plan.workload.prompts, PromptSource::Inline { prompts: vec![prompt.to_string()] });
    h.shutdown().await.unwrap();
}

fn checkpoint(dir: &Path) {
    let config = tokbench_core::Catalog::get("tiny-gpt2").unwrap().config();
    tokbench_worker::checkpoint::save_synthetic_checkpoint(&config, 1, dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_load_local_models_only_from_their_models_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let models = root.join("models");
    checkpoint(&models.join("tiny"));
    checkpoint(&root.join("outside/secret"));
    std::os::unix::fs::symlink(root.join("outside/secret"), models.join("link")).unwrap();
    let h = coordinator(&root).await;
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;
    let local = |p: PathBuf| format!("local:{}", p.display());
    let sweep = |names: &[String]| {
        // Auto: real weights where a directory has them, synthetic for the tiny catalog models.
        let mut w = tiny_workload(2);
        w.weights = WeightsMode::Auto;
        spec_of(&names.iter().map(String::as_str).collect::<Vec<_>>(), &[1], w)
    };

    // A worker started with --models-dir <models>.
    let (stop, w) = in_process_worker(&url, "with-dir", vec![models.clone()]);
    let names = [local(models.join("tiny")), local(models.join("link")), format!("local:{}/../outside/secret", models.display())];
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(sweep(&names)) }).await.unwrap().into_inner();
    let s = wait_sweep(&mut c, &sub.sweep_id, Duration::from_secs(120), "the sweep to finish", |s| s.state != "running").await;
    let by_model = |m: &str| s.jobs.iter().find(|j| j.model == m).unwrap_or_else(|| panic!("no job for {m}: {s:#?}"));
    let ok = by_model(&names[0]);
    assert_eq!(state(ok), JobState::Succeeded, "{ok:?}");
    for name in &names[1..] {
        let j = by_model(name);
        assert_eq!(state(j), JobState::Failed, "{j:?}");
        assert_eq!(j.attempts, 1, "bad input is not retried: {j:?}");
        assert!(j.last_error.contains(&format!("model \"{name}\"")) && j.last_error.contains(&models.display().to_string()), "{}", j.last_error);
        if name.ends_with("link") {
            assert!(!j.last_error.contains("outside"), "where the link leads stays on the worker: {}", j.last_error);
        }
    }
    stop.send(()).unwrap();
    w.await.unwrap().unwrap();

    // A worker started without --models-dir loads no local directory, and says how to allow one.
    let (stop, w) = in_process_worker(&url, "no-dir", vec![]);
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(sweep(&[local(models.join("tiny")), "tiny-gpt2".into()])) }).await.unwrap().into_inner();
    let s = wait_sweep(&mut c, &sub.sweep_id, Duration::from_secs(120), "the sweep to finish", |s| s.state != "running").await;
    let j = s.jobs.iter().find(|j| j.model.starts_with("local:")).unwrap();
    assert_eq!((state(j), j.attempts), (JobState::Failed, 1), "{j:?}");
    assert!(j.last_error.contains("started without --models-dir") && j.last_error.contains("--models-dir DIR"), "{}", j.last_error);
    // Catalog names are not paths: they still run (synthetic, nothing cached).
    let catalog = s.jobs.iter().find(|j| j.model == "tiny-gpt2").unwrap();
    assert_eq!(state(catalog), JobState::Succeeded, "{catalog:?}");
    stop.send(()).unwrap();
    w.await.unwrap().unwrap();
    h.shutdown().await.unwrap();
}
