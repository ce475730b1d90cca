//! TLS serving: a CA and a server certificate for localhost / 127.0.0.1 made at test time
//! (rcgen), the coordinator serving TLS on 127.0.0.1 port 0 (in-process and as the real binary),
//! real tonic clients, and a real `tokbench-worker serve --coordinator https://...` process.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokbench_proto::auth::{self, AuthError};
use tokbench_proto::v1::{JobState, ListSweepsRequest, RegisterRequest, SubmitSweepRequest, WorkerCapabilities};

struct Pki {
    /// The CA that signed the coordinator's certificate.
    ca: PathBuf,
    /// A CA that signed nothing we serve.
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (params.self_signed(&key).unwrap(), key)
}

fn make_pki(dir: &Path) -> Pki {
    let (ca, ca_key) = make_ca("tokbench test CA");
    let (other, _) = make_ca("some other CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "tokbench coordinator");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let pki = Pki { ca: dir.join("ca.pem"), other_ca: dir.join("other-ca.pem"), cert: dir.join("coordinator.pem"), key: dir.join("coordinator.key") };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.other_ca, other.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn caps() -> WorkerCapabilities {
    WorkerCapabilities { hostname: "test".into(), backend: "cpu".into(), gpu_name: "none (cpu)".into(), tokbench_version: "test".into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_with_the_ca_get_in_and_others_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let h = tokbench_coordinator::spawn(tokbench_coordinator::CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("tls.db"),
        token: Some("s3cret".into()),
        tls_cert: Some(pki.cert.clone()),
        tls_key: Some(pki.key.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let port = h.local_addr().port();
    let ca = std::fs::read(&pki.ca).unwrap();

    // With the CA, by name and by IP address (both are in the certificate), on both services.
    for url in [format!("https://localhost:{port}"), format!("https://127.0.0.1:{port}")] {
        let channel = auth::connect(&url, Some(&ca)).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let mut c = auth::benchmarks_client(channel.clone(), Some("s3cret")).unwrap();
        assert!(c.list_sweeps(ListSweepsRequest::default()).await.unwrap().into_inner().sweeps.is_empty());
        let mut q = auth::worker_queue_client(channel, Some("s3cret")).unwrap();
        q.register(RegisterRequest { worker_id: "w1".into(), capabilities: Some(caps()) }).await.unwrap();
        // TLS does not replace the token.
        let mut anon = auth::benchmarks_client(auth::connect(&url, Some(&ca)).await.unwrap(), None).unwrap();
        assert_eq!(anon.list_sweeps(ListSweepsRequest::default()).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    // Plaintext against the TLS port: no call gets through.
    let plain = format!("http://127.0.0.1:{port}");
    let mut c = benchmarks(&plain, Some("s3cret")).await;
    let err = tokio::time::timeout(Duration::from_secs(20), c.list_sweeps(ListSweepsRequest::default())).await.expect("plaintext call ends").unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);

    // A CA that did not sign the certificate: the handshake fails, and the error says what to do.
    let other = std::fs::read(&pki.other_ca).unwrap();
    let err = auth::connect(&format!("https://localhost:{port}"), Some(&other)).await.unwrap_err();
    assert!(matches!(err, AuthError::TlsHandshake { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("TLS handshake with the coordinator at https://localhost:") && msg.contains("--ca-cert"), "{msg}");
    assert!(msg.contains("certificate"), "names the certificate problem: {msg}");

    // https without any CA is refused before connecting.
    let err = auth::connect(&format!("https://localhost:{port}"), None).await.unwrap_err();
    assert!(matches!(err, AuthError::MissingCa { .. }), "{err:?}");
    assert!(err.to_string().contains("--ca-cert"), "{err}");
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_runs_jobs_over_tls_and_exits_clearly_with_the_wrong_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let db = dir.path().join("tls.db");
    let (_coord, addr) = start_coordinator(dir.path(), &db, "127.0.0.1:0", &["--tls-cert", pki.cert.to_str().unwrap(), "--tls-key", pki.key.to_str().unwrap()]);
    let url = format!("https://localhost:{}", addr.port());

    // The real worker binary, trusting the CA.
    let _w = start_worker(dir.path(), &url, "tls-worker", &["--ca-cert", pki.ca.to_str().unwrap()]);
    let ca = std::fs::read(&pki.ca).unwrap();
    let mut c = auth::benchmarks_client(auth::connect(&url, Some(&ca)).await.unwrap(), None).unwrap();
    let sub = c.submit_sweep(SubmitSweepRequest { spec: Some(tiny_spec(&["tiny-opt"], &[1, 2], 2)) }).await.unwrap().into_inner();
    let s = wait_sweep(&mut c, &sub.sweep_id, Duration::from_secs(120), "the sweep over TLS", |s| s.state != "running").await;
    assert_eq!(s.state, "succeeded", "{s:#?}");
    assert!(s.jobs.iter().all(|j| state(j) == JobState::Succeeded && j.worker_id == "tls-worker"), "{s:#?}");

    // The wrong CA: the worker does not retry forever, it exits and says why.
    let mut bad = start_worker(dir.path(), &url, "wrong-ca", &["--ca-cert", pki.other_ca.to_str().unwrap()]);
    let status = bad.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("wrong-ca.log")).unwrap();
    assert!(log.contains("TLS handshake with the coordinator at https://localhost:") && log.contains("--ca-cert"), "{log}");

    // https:// and no CA at all.
    let mut none = start_worker(dir.path(), &url, "no-ca", &[]);
    let status = none.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("no-ca.log")).unwrap();
    assert!(log.contains("no CA certificate was given") && log.contains("--ca-cert"), "{log}");
}
