//! Artifact limits that hold: a per-file size limit and a total quota (coordinator flags). An
//! upload that would exceed either is refused with RESOURCE_EXHAUSTED naming the flag, and its
//! partial file is removed. Real coordinator in-process, real gRPC client from proto/.

mod common;

use common::*;
use tokbench_coordinator::CoordinatorConfig;
use tokbench_proto::auth::AuthedWorkerQueueClient;
use tokbench_proto::v1::*;
use tonic::Code;

fn caps() -> WorkerCapabilities {
    WorkerCapabilities { hostname: "test".into(), backend: "cpu".into(), gpu_name: "none (cpu)".into(), tokbench_version: "test".into(), ..Default::default() }
}

async fn upload(q: &mut AuthedWorkerQueueClient, job: &LeasedJob, name: &str, chunks: &[&[u8]]) -> Result<Artifact, tonic::Status> {
    let mut msgs = vec![UploadArtifactChunk {
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        kind: "nsys-rep".into(),
        file_name: name.into(),
        worker_id: "w1".into(),
        data: chunks[0].to_vec(),
    }];
    msgs.extend(chunks[1..].iter().map(|c| UploadArtifactChunk { data: c.to_vec(), ..Default::default() }));
    q.upload_artifact(futures::stream::iter(msgs)).await.map(|r| r.into_inner())
}

/// Files under the artifacts directory (all job folders).
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            out.push(f.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_size_limit_and_quota_refuse_uploads_and_keep_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let h = tokbench_coordinator::spawn(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("limits.db"),
        lease_ms: 120_000,
        max_artifact_bytes: 10,
        artifact_quota_bytes: Some(15),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", h.local_addr());
    benchmarks(&url, None).await.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1], 2)) }).await.unwrap();
    let mut q = queue(&url, None).await;
    q.register(RegisterRequest { worker_id: "w1".into(), capabilities: Some(caps()) }).await.unwrap();
    let job = q.lease_job(LeaseJobRequest { worker_id: "w1".into(), wait_ms: 1000, memory_free_bytes: 0 }).await.unwrap().into_inner().job.unwrap();
    let artifacts = dir.path().join("limits.db.artifacts");

    // Within both limits: stored.
    let a = upload(&mut q, &job, "a.bin", &[b"1234", b"5678"]).await.unwrap();
    assert_eq!(a.size_bytes, 8);
    // Past the per-file limit in its second chunk: refused, nothing kept.
    let err = upload(&mut q, &job, "big.bin", &[b"123456", b"7890ab"]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--max-artifact-bytes") && err.message().contains("10 bytes"), "{}", err.message());
    // Within the per-file limit but past the quota (8 stored + 8 > 15): refused, nothing kept.
    let err = upload(&mut q, &job, "b.bin", &[b"12345678"]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--artifact-quota-bytes") && err.message().contains("8 bytes stored"), "{}", err.message());
    assert_eq!(files(&artifacts).len(), 1, "refused uploads left files: {:?}", files(&artifacts));
    // What still fits the quota is accepted.
    let c = upload(&mut q, &job, "c.bin", &[b"1234567"]).await.unwrap();
    assert_eq!(c.size_bytes, 7);
    assert_eq!(files(&artifacts).len(), 2);
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_gets_a_status_naming_the_limit_not_a_dropped_connection() {
    let dir = tempfile::tempdir().unwrap();
    let h = tokbench_coordinator::spawn(CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("big.db"),
        max_message_bytes: 64 * 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", h.local_addr());
    let mut c = benchmarks(&url, None).await;
    let mut spec = tiny_spec(&["tiny-opt"], &[1], 2);
    spec.label = "x".repeat(100 * 1024);
    let err = c.submit_sweep(SubmitSweepRequest { spec: Some(spec) }).await.unwrap_err();
    // RESOURCE_EXHAUSTED (tonic's OUT_OF_RANGE rewritten), with the size and the limit.
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large") && err.message().contains("65536"), "{}", err.message());
    // The connection and the coordinator are fine: the next call on the same client works.
    c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1], 2)) }).await.unwrap();
    h.shutdown().await.unwrap();
}
