//! Separate credentials for clients and workers: with --client-token-file and
//! --worker-token-file, a client token cannot lease, heartbeat or report (so a CLI user cannot
//! forge results) and a worker token cannot submit or read sweeps; several tokens per role work
//! (rotation), a token file may hold hashes instead of secrets, and a lone shared token still
//! works for both. Real coordinator in-process, real gRPC clients generated from proto/.

mod common;

use std::path::Path;

use common::*;
use tokbench_coordinator::{CoordinatorConfig, CoordinatorHandle};
use tokbench_proto::v1::*;
use tonic::Code;

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

async fn coordinator(dir: &Path, token: Option<&str>, clients: Option<&str>, workers: Option<&str>) -> anyhow::Result<CoordinatorHandle> {
    let write = |name: &str, text: Option<&str>| {
        text.map(|t| {
            let p = dir.join(name);
            std::fs::write(&p, t).unwrap();
            p
        })
    };
    tokbench_coordinator::spawn(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("roles.db"),
        token: token.map(String::from),
        client_token_file: write("clients.tokens", clients),
        worker_token_file: write("workers.tokens", workers),
        lease_ms: 120_000,
        max_attempts: 3,
        ..Default::default()
    })
    .await
}

fn caps() -> WorkerCapabilities {
    WorkerCapabilities { hostname: "test".into(), backend: "cpu".into(), gpu_name: "none (cpu)".into(), tokbench_version: "test".into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_worker_tokens_are_separate_roles() {
    let dir = tempfile::tempdir().unwrap();
    // Two client tokens (one given by its hash: the file holds no secret), two worker tokens.
    let clients = format!("# dashboards and CLI users\nclient-old\nsha256:{}\n", sha256_hex("client-new"));
    let h = coordinator(dir.path(), None, Some(&clients), Some("worker-a\n\nworker-b\n")).await.unwrap();
    let url = format!("http://{}", h.local_addr());

    // Clients: both tokens submit; a worker token is refused by the client service.
    for t in ["client-old", "client-new"] {
        benchmarks(&url, Some(t)).await.list_sweeps(ListSweepsRequest::default()).await.unwrap();
    }
    let sub = benchmarks(&url, Some("client-new")).await.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1], 2)) }).await.unwrap().into_inner();
    let err = benchmarks(&url, Some("worker-a")).await.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1], 2)) }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("worker token") && err.message().contains("--client-token-file"), "{}", err.message());

    // Workers: both tokens work; a client token cannot register, lease or report.
    let mut w = queue(&url, Some("worker-b")).await;
    w.register(RegisterRequest { worker_id: "w1".into(), capabilities: Some(caps()) }).await.unwrap();
    queue(&url, Some("worker-a")).await.register(RegisterRequest { worker_id: "w2".into(), capabilities: Some(caps()) }).await.unwrap();
    let mut forger = queue(&url, Some("client-old")).await;
    let err = forger.register(RegisterRequest { worker_id: "w3".into(), capabilities: Some(caps()) }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("client token"), "{}", err.message());
    let err = forger.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 0, memory_free_bytes: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let job = w.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 1000, memory_free_bytes: 0 }).await.unwrap().into_inner().job.unwrap();
    assert_eq!(job.sweep_id, sub.sweep_id);
    let err = forger
        .complete_job(CompleteJobRequest { worker_id: "w1".into(), job_id: job.job_id.clone(), attempt: 1, report_json: "{}".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Unknown and missing tokens: unauthenticated on both services.
    assert_eq!(benchmarks(&url, Some("guess")).await.list_sweeps(ListSweepsRequest::default()).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(queue(&url, Some("guess")).await.register(RegisterRequest { worker_id: "w4".into(), capabilities: Some(caps()) }).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(benchmarks(&url, None).await.list_sweeps(ListSweepsRequest::default()).await.unwrap_err().code(), Code::Unauthenticated);
    // The hash itself is not a token.
    let hash = sha256_hex("client-new");
    assert_eq!(benchmarks(&url, Some(&hash)).await.list_sweeps(ListSweepsRequest::default()).await.unwrap_err().code(), Code::Unauthenticated);
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_token_still_serves_both_and_bad_token_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let h = coordinator(dir.path(), Some("shared"), None, None).await.unwrap();
    let url = format!("http://{}", h.local_addr());
    benchmarks(&url, Some("shared")).await.list_sweeps(ListSweepsRequest::default()).await.unwrap();
    queue(&url, Some("shared")).await.register(RegisterRequest { worker_id: "w1".into(), capabilities: Some(caps()) }).await.unwrap();
    h.shutdown().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let err = coordinator(dir.path(), None, Some("c1\n"), None).await.err().expect("client tokens without worker tokens");
    assert!(format!("{err:#}").contains("--worker-token-file"), "{err:#}");
    let dir = tempfile::tempdir().unwrap();
    let err = coordinator(dir.path(), None, Some("# nothing\n"), Some("w\n")).await.err().expect("an empty token file");
    assert!(format!("{err:#}").contains("holds no token"), "{err:#}");
    let dir = tempfile::tempdir().unwrap();
    let err = coordinator(dir.path(), None, Some("sha256:abc\n"), Some("w\n")).await.err().expect("a short hash");
    assert!(format!("{err:#}").contains("line 1") && format!("{err:#}").contains("64 hex digits"), "{err:#}");
}
