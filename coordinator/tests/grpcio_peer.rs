//! The trust boundaries driven by an outside client: Python grpcio with stubs generated from
//! proto/ at run time (scripts/grpcio_peer_check.py) against a real coordinator process with
//! separate client and worker tokens. Needs a Python with `grpcio` and `grpcio-tools`:
//! TOKBENCH_PYTHON (default python3). Without them the test says so and passes, unless
//! TOKBENCH_REQUIRE_GRPCIO=1 (what .ci/run sets when it could install them).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn a_python_grpcio_client_meets_the_same_boundaries() {
    let python = std::env::var("TOKBENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_grpc = Command::new(&python).args(["-c", "import grpc, grpc_tools"]).status().is_ok_and(|s| s.success());
    if !has_grpc {
        assert!(std::env::var("TOKBENCH_REQUIRE_GRPCIO").is_err(), "TOKBENCH_REQUIRE_GRPCIO is set but {python} cannot import grpc and grpc_tools");
        eprintln!("skipped: {python} has no grpcio/grpcio-tools (pip install grpcio grpcio-tools, or set TOKBENCH_PYTHON)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("clients"), "peer-client\n").unwrap();
    std::fs::write(dir.path().join("workers"), "peer-worker\n").unwrap();
    let clients = dir.path().join("clients").display().to_string();
    let workers = dir.path().join("workers").display().to_string();
    let (_coord, addr) = start_coordinator(dir.path(), &dir.path().join("peer.db"), "127.0.0.1:0", &["--client-token-file", &clients, "--worker-token-file", &workers]);

    // A real report of the real engine, which the script re-labels with the leased job's workload.
    let report = tiny_opt_report(2);
    let report_path = dir.path().join("report.json");
    std::fs::write(&report_path, serde_json::to_string(&report).unwrap()).unwrap();

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(&python)
        .arg(root.join("scripts/grpcio_peer_check.py"))
        .arg(addr.to_string())
        .arg(root.join("proto/proto"))
        .arg(&report_path)
        .args(["peer-client", "peer-worker"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("GRPCIO PEER CHECK OK"), "the grpcio peer check failed:\n{text}");
}
