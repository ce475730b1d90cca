//! Shared helpers of the coordinator tests: real coordinator/worker processes on loopback,
//! real SQLite files in temp dirs, clients through `tokbench_proto::auth`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokbench_proto::auth::{self, AuthedBenchmarksClient, AuthedWorkerQueueClient};
use tokbench_core::{PromptSource, SweepPlan, WeightsMode, Workload};
use tokbench_proto::v1::{GetSweepRequest, JobState, Sweep, SweepSpec};

pub const LEASE_MS: u64 = 1500;

/// The `tokbench-worker` binary. Cargo only builds the binaries of the package under test, so
/// CI must run `cargo build -p tokbench-worker` first (same profile); TOKBENCH_WORKER_BIN overrides.
pub fn worker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TOKBENCH_WORKER_BIN") {
        return PathBuf::from(p);
    }
    // <target>/<profile>/deps/<test exe>  ->  <target>/<profile>/tokbench-worker
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").join("tokbench-worker");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build -p tokbench-worker` (same profile as the tests) before these tests, or set TOKBENCH_WORKER_BIN",
        bin.display()
    );
    bin
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < timeout, "{} did not exit within {timeout:?}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `tokbench-coordinator` on `listen` (port 0 = any) and waits until it is listening.
pub fn start_coordinator(dir: &Path, db: &Path, listen: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("coordinator.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokbench-coordinator"))
        .args(["--listen", listen, "--database"])
        .arg(db)
        .args(["--lease-ms", &LEASE_MS.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start tokbench-coordinator");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("coordinator did not start: {line:?}; see {}", dir.join("coordinator.log").display()))
        .parse()
        .unwrap();
    (Proc { child, name: "coordinator".into() }, addr)
}

pub fn start_worker(dir: &Path, url: &str, worker_id: &str, extra: &[&str]) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{worker_id}.log"))).unwrap();
    let child = Command::new(worker_bin())
        .args(["serve", "--coordinator", url, "--device", "cpu", "--worker-id", worker_id])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tokbench-worker");
    Proc { child, name: worker_id.into() }
}

pub async fn benchmarks(url: &str, token: Option<&str>) -> AuthedBenchmarksClient {
    auth::benchmarks_client(auth::connect_lazy(url, None).unwrap(), token).unwrap()
}

pub async fn queue(url: &str, token: Option<&str>) -> AuthedWorkerQueueClient {
    auth::worker_queue_client(auth::connect_lazy(url, None).unwrap(), token).unwrap()
}

/// The workload of the tests' small sweeps: synthetic weights, one prompt per batch slot,
/// one repetition, no warm-up.
pub fn tiny_workload(max_tokens: usize) -> Workload {
    Workload {
        weights: WeightsMode::Synthetic,
        prompts: PromptSource::Builtin { num_prompts: 0 },
        max_tokens,
        repetitions: 1,
        warmup: 0,
        ..Workload::default()
    }
}

/// A sweep of `workload` over models x batch sizes, as the proto carries it.
pub fn spec_of(models: &[&str], batch_sizes: &[usize], workload: Workload) -> SweepSpec {
    let plan = SweepPlan { models: models.iter().map(|m| m.to_string()).collect(), batch_sizes: batch_sizes.to_vec(), workload, ..SweepPlan::default() };
    SweepSpec::from(&plan)
}

/// A small sweep of the tiny synthetic models.
pub fn tiny_spec(models: &[&str], batch_sizes: &[usize], max_tokens: usize) -> SweepSpec {
    spec_of(models, batch_sizes, tiny_workload(max_tokens))
}

pub async fn get_sweep(c: &mut AuthedBenchmarksClient, id: &str) -> Result<Sweep, tonic::Status> {
    c.get_sweep(GetSweepRequest { sweep_id: id.into() }).await.map(|r| r.into_inner())
}

/// Polls GetSweep until `pred` holds (tolerating a coordinator that is briefly away).
pub async fn wait_sweep(c: &mut AuthedBenchmarksClient, id: &str, timeout: Duration, what: &str, pred: impl Fn(&Sweep) -> bool) -> Sweep {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Ok(s) = get_sweep(c, id).await {
            if pred(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}; last state: {last:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn state(j: &tokbench_proto::v1::Job) -> JobState {
    JobState::try_from(j.state).unwrap()
}

/// Runs per job in the database, straight from SQLite (not through the coordinator).
pub async fn db_counts(db: &Path) -> (i64, i64, i64) {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(&mut conn).await.unwrap();
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs").fetch_one(&mut conn).await.unwrap();
    let dup: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT job_id FROM runs GROUP BY job_id HAVING COUNT(*) > 1)").fetch_one(&mut conn).await.unwrap();
    (jobs, runs, dup)
}

/// An in-process worker (the real serve loop and engine, CPU) whose jobs may load local
/// directories under `models_dirs` (`--models-dir`; empty: none). Send on the sender to stop it.
pub fn in_process_worker(url: &str, id: &str, models_dirs: Vec<PathBuf>) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = tokbench_worker::serve::WorkerConfig {
        coordinator: url.into(),
        device: tokbench_core::DeviceSpec::Cpu,
        token: None,
        worker_id: Some(id.into()),
        nsys_path: None,
        max_jobs: None,
        ca_cert: None,
    };
    let h = tokio::spawn(tokbench_worker::serve::run_with_models_dirs(config, models_dirs, async move {
        let _ = rx.await;
    }));
    (tx, h)
}

/// A real report of the real engine: tiny-opt, synthetic weights, one built-in prompt,
/// `max_tokens` new tokens, one repetition (blocking: a few milliseconds on the CPU).
pub fn tiny_opt_report(max_tokens: usize) -> tokbench_core::BenchReport {
    let w = Workload {
        model: "tiny-opt".into(),
        weights: WeightsMode::Synthetic,
        batch_size: 1,
        prompts: PromptSource::Builtin { num_prompts: 1 },
        max_tokens,
        warmup: 0,
        repetitions: 1,
        ..Default::default()
    };
    tokbench_worker::bench::run_workload(&w, &std::sync::atomic::AtomicBool::new(false), &mut |_| {}).unwrap()
}
