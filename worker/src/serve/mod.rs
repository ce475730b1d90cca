//! `tokbench-worker serve`: register with a coordinator, then lease jobs, run them with the
//! engine while heartbeating, and report each result until the coordinator acknowledges it.
//!
//! Delivery is at-least-once and the coordinator stores a job's result once (idempotent by
//! job and attempt), so every RPC that carries a result is retried with exponential backoff
//! across coordinator restarts. A worker killed mid-job simply stops heartbeating: its lease
//! expires and another worker runs the job again.
//!
//! This file connects, registers and leases; [`job`] runs a leased job and delivers its outcome.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use tokio::sync::watch;
use tonic::{Code, Status};

use tokbench_core::{BenchReport, DeviceSpec, Workload};
use tokbench_proto::auth::{self, AuthedWorkerQueueClient};
use tokbench_proto::v1::{
    LeaseJobRequest, LeasedJob, RegisterRequest, WorkerCapabilities,
};

use crate::bench::Progress;
use crate::resolve::ModelPathPolicy;

mod job;
pub mod serve_job;

/// How long one LeaseJob call waits for a job on the coordinator (long poll).
const LEASE_WAIT: Duration = Duration::from_secs(10);
/// Deadline of short RPCs (register, heartbeat, complete, fail).
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Coordinator URL (https:// when it serves TLS; see --ca-cert).
    #[arg(long, env = "TOKBENCH_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
    /// Device this worker runs every job on: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceSpec,
    /// Shared token of the coordinator (`authorization: Bearer <token>`).
    #[arg(long, env = "TOKBENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Stable id of this worker (default: <hostname>-<device>-<pid>). Each worker on a host needs its own.
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Path of the Nsight Systems `nsys` binary for profiled jobs. Default: `nsys` on PATH, else
    /// the usual install folders (/opt/nvidia/nsight-systems/*/bin/nsys, /usr/local/cuda*/bin/nsys,
    /// ...; see docs/profiling.md). Without one, this worker refuses profiled jobs.
    #[arg(long, value_name = "PATH")]
    pub nsys: Option<PathBuf>,
    /// Directory with libdw.so.1 and libelf.so.1 for nsys's importer (see docs/profiling.md):
    /// without them nsys 2025.3 on some machines writes only a .qdstrm.
    #[arg(long, env = "TOKBENCH_NSYS_LIBS", value_name = "DIR")]
    pub nsys_libs: Option<PathBuf>,
    /// PEM CA certificate that signed the coordinator's TLS certificate (needed for https://
    /// URLs: this build trusts no system CAs). TOKBENCH_TLS_CA is read too, for older setups.
    #[arg(long, alias = "tls-ca", env = "TOKBENCH_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Exit after this many jobs (for tests and one-shot use).
    #[arg(long)]
    pub max_jobs: Option<usize>,
    /// A directory whose model directories jobs may load (repeatable). Jobs come from remote
    /// clients, so without it this worker loads no local directories at all: only catalog names
    /// and Hugging Face repo ids. Checked after symlinks and `..` are resolved.
    #[arg(long = "models-dir", value_name = "DIR")]
    pub models_dirs: Vec<PathBuf>,
    /// Never download weights from the Hugging Face Hub (as HF_HUB_OFFLINE=1): jobs use the
    /// Hugging Face cache and --models-dir only; `--weights auto` jobs then run synthetic weights
    /// for models not in the cache. Without it, missing weights are downloaded into the cache.
    #[arg(long)]
    pub offline: bool,
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e| format!("{e}"))
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `http://127.0.0.1:50051`
    pub coordinator: String,
    pub device: DeviceSpec,
    pub token: Option<String>,
    pub worker_id: Option<String>,
    /// The nsys profiled jobs run under (None: this worker refuses them). `serve` finds it with
    /// `profile::find_nsys` (--nsys, else PATH, else the usual install folders).
    pub nsys_path: Option<PathBuf>,
    /// Exit after N jobs (for tests).
    pub max_jobs: Option<usize>,
    /// PEM CA certificate to trust for an https:// coordinator.
    pub ca_cert: Option<PathBuf>,
}

/// The function that runs one job (the real engine is `bench::run_workload_with` and the
/// worker's own `bench::ModelCache`; the coordinator overhead benchmark plugs in one that does no
/// inference).
pub type Engine = Arc<dyn Fn(&Workload, &AtomicBool, &mut dyn FnMut(&Progress)) -> crate::Result<BenchReport> + Send + Sync>;

pub fn main(args: ServeArgs) -> anyhow::Result<()> {
    if args.offline {
        // Read by every job (and by the `bench` children of profiled jobs). SAFETY: set before
        // the runtime (and any other thread) starts.
        unsafe { std::env::set_var("HF_HUB_OFFLINE", "1") };
    }
    if let Some(dir) = &args.nsys_libs {
        // SAFETY: set before the runtime (and any other thread) starts.
        unsafe { std::env::set_var("TOKBENCH_NSYS_LIBS", dir) };
    }
    // Absolute: a profiled job's child runs in another directory.
    let models_dirs = ModelPathPolicy::only_under(args.models_dirs).canonical().map_err(anyhow::Error::msg)?.allowed_dirs.unwrap_or_default();
    // Profiled jobs run in a child `tokbench-worker bench`, which takes the same restriction
    // from the environment. SAFETY: set before the runtime (and any other thread) starts.
    let list = std::env::join_paths(&models_dirs).context("--models-dir: a path holds the list separator ':'")?;
    unsafe { std::env::set_var(crate::resolve::MODELS_DIRS_ENV, list) };
    if models_dirs.is_empty() {
        tracing::info!("no --models-dir: jobs may name catalog models and Hugging Face repo ids, but no local directories");
    } else {
        tracing::info!(?models_dirs, "jobs may load local model directories under these directories");
    }
    let nsys_path = match crate::profile::find_nsys(args.nsys.as_deref()) {
        Ok(p) => {
            tracing::info!(nsys = %p.display(), "profiled jobs run under this nsys");
            Some(p)
        }
        Err(e) => {
            if args.nsys.is_some() {
                tracing::warn!("{e}: this worker will refuse profiled jobs");
            } else {
                tracing::info!("{e}; this worker will refuse profiled jobs");
            }
            None
        }
    };
    let config = WorkerConfig {
        coordinator: args.coordinator,
        device: args.device,
        token: args.token,
        worker_id: args.worker_id,
        nsys_path,
        max_jobs: args.max_jobs,
        ca_cert: args.ca_cert.or_else(|| std::env::var_os("TOKBENCH_TLS_CA").map(PathBuf::from)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
    rt.block_on(run_with_models_dirs(config, models_dirs, shutdown_signal()))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops the worker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested: finishing (cancelling) the current job and exiting");
}

/// Serves jobs with the real engine until `shutdown` resolves (or `max_jobs` are done). Jobs may
/// not load local directories (see [`run_with_models_dirs`]).
pub async fn run(config: WorkerConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    run_with_models_dirs(config, Vec::new(), shutdown).await
}

/// [`run`] letting jobs load the model directories under `models_dirs` (`--models-dir`).
pub async fn run_with_models_dirs(config: WorkerConfig, models_dirs: Vec<PathBuf>, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let policy = ModelPathPolicy::only_under(models_dirs);
    // The models this worker's jobs leave loaded for its later jobs (`reuse_model`).
    let models = crate::bench::ModelCache::default();
    let engine_policy = policy.clone();
    let engine: Engine = Arc::new(move |w: &Workload, c: &AtomicBool, p: &mut dyn FnMut(&Progress)| {
        crate::resolve::with_model_policy(engine_policy.clone(), || crate::bench::run_workload_with(&models, w, c, p))
    });
    serve_with(config, policy, shutdown, engine).await
}

/// `run` with a given engine (jobs naming local directories are refused before it is called).
pub async fn run_with_engine(config: WorkerConfig, shutdown: impl Future<Output = ()> + Send, engine: Engine) -> anyhow::Result<()> {
    serve_with(config, ModelPathPolicy::only_under(Vec::new()), shutdown, engine).await
}

async fn serve_with(config: WorkerConfig, policy: ModelPathPolicy, shutdown: impl Future<Output = ()> + Send, engine: Engine) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let main = serve_loop(config, engine, policy, stop_rx);
    tokio::pin!(main);
    tokio::pin!(shutdown);
    tokio::select! {
        r = &mut main => r,
        _ = &mut shutdown => {
            let _ = stop_tx.send(true);
            main.await
        }
    }
}

use crate::bench::hostname;

fn default_worker_id(device: &DeviceSpec) -> String {
    let host: String = hostname().chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    format!("{host}-{}-{}", device.to_string().replace(':', ""), std::process::id())
}

struct Worker {
    client: AuthedWorkerQueueClient,
    /// The coordinator URL, for messages.
    url: String,
    worker_id: String,
    device: DeviceSpec,
    caps: WorkerCapabilities,
    nsys_available: bool,
    nsys_path: Option<PathBuf>,
    lease_ms: u64,
    engine: Engine,
    /// Which local model directories jobs may load (checked before a job starts).
    model_policy: ModelPathPolicy,
    stop: watch::Receiver<bool>,
}

/// Errors worth retrying: the coordinator is away, restarting, or had a transient problem.
fn transient(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Internal | Code::ResourceExhausted | Code::Aborted | Code::Cancelled)
}

/// The error to exit with when the coordinator refuses us for good.
fn refused(url: &str, what: &str, s: &Status) -> anyhow::Error {
    match auth::tls_problem(s) {
        Some(cause) => anyhow::anyhow!("{}", auth::tls_failure_message(url, &cause)),
        None => anyhow::anyhow!("the coordinator refused {what}: {} ({:?})", s.message(), s.code()),
    }
}

fn backoff_policy() -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(5),
        multiplier: 2.0,
        // Keep trying for as long as it takes: the result must reach the coordinator.
        max_elapsed_time: None,
        ..ExponentialBackoff::default()
    }
}

fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

async fn serve_loop(config: WorkerConfig, engine: Engine, model_policy: ModelPathPolicy, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let ca_pem = match &config.ca_cert {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read the CA certificate {} (--ca-cert / TOKBENCH_CA_CERT)", p.display()))?),
        None => None,
    };
    // Lazy: the channel (re)connects on use, so a coordinator that is not up yet or restarts
    // is handled by the retry loops below rather than failing the worker.
    let channel = auth::connect_lazy(&config.coordinator, ca_pem.as_deref()).context("--coordinator")?;
    let client = auth::worker_queue_client(channel, config.token.as_deref()).context("--token")?;
    let worker_id = config.worker_id.clone().unwrap_or_else(|| default_worker_id(&config.device));
    let nsys_available = config.nsys_path.as_ref().is_some_and(|p| p.is_file());
    if let Some(p) = &config.nsys_path {
        if !nsys_available {
            tracing::warn!(path = %p.display(), "--nsys does not point to a file: this worker will refuse profiled jobs");
        }
    }
    let device = config.device;
    let info = tokio::task::spawn_blocking(move || crate::gpu::device_info(&device)).await.context("reading device info")?;
    let caps = WorkerCapabilities {
        hostname: hostname(),
        backend: info.backend.clone(),
        device_index: info.device_index,
        gpu_name: info.gpu_name.clone(),
        memory_total_bytes: info.memory_total_bytes,
        memory_free_bytes: info.memory_free_bytes,
        driver_version: info.driver_version.clone(),
        cuda_version: info.cuda_version.clone(),
        tokbench_version: tokbench_core::TOKBENCH_VERSION.to_string(),
        nsys_available,
    };
    let mut w = Worker {
        client,
        url: config.coordinator.clone(),
        worker_id,
        device: config.device,
        caps,
        nsys_available,
        nsys_path: config.nsys_path.clone(),
        lease_ms: 15_000,
        engine,
        model_policy,
        stop,
    };
    if !w.register().await? {
        return Ok(());
    }
    let mut done = 0usize;
    // The job leased together with the last completion (CompleteJob with lease_next).
    let mut next: Option<LeasedJob> = None;
    loop {
        if config.max_jobs.is_some_and(|m| done >= m) {
            tracing::info!(jobs = done, "max_jobs reached; exiting");
            return Ok(());
        }
        if w.stopped() {
            if let Some(job) = next.take() {
                // Leased with the last result but not started: hand it back for another worker.
                w.report_failure(&job, "the worker was shut down before starting the job".into(), true).await;
            }
            tracing::info!("worker stopped");
            return Ok(());
        }
        let job = match next.take() {
            Some(job) => job,
            None => match w.lease().await? {
                LeaseOutcome::Job(job) => job,
                LeaseOutcome::NoJob => continue,
                LeaseOutcome::Stopped => {
                    tracing::info!("worker stopped");
                    return Ok(());
                }
            },
        };
        // Ask for the next job with this one's result, unless this is the last one we run.
        let want_next = config.max_jobs.is_none_or(|m| done + 1 < m);
        next = w.run_job(job, want_next).await;
        done += 1;
    }
}

enum LeaseOutcome {
    Job(LeasedJob),
    NoJob,
    Stopped,
}

impl Worker {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits for the next retry, or returns false when the worker is told to stop.
    async fn pause(&mut self, delay: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Registers, retrying with backoff while the coordinator is unreachable. false: stopped.
    async fn register(&mut self) -> anyhow::Result<bool> {
        let mut policy = backoff_policy();
        loop {
            let req = RegisterRequest { worker_id: self.worker_id.clone(), capabilities: Some(self.caps.clone()) };
            match self.client.register(with_timeout(req, RPC_TIMEOUT)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.lease_ms = (r.lease_ms as u64).max(100);
                    tracing::info!(worker_id = %self.worker_id, lease_ms = self.lease_ms, backend = %self.caps.backend, gpu = %self.caps.gpu_name, "registered with the coordinator");
                    return Ok(true);
                }
                // Retrying cannot fix a certificate the CA does not vouch for: say so and stop.
                Err(s) if auth::tls_problem(&s).is_some() => return Err(refused(&self.url, "to register this worker", &s)),
                Err(s) if transient(&s) => {
                    let delay = policy.next_backoff().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(code = ?s.code(), error = %s.message(), retry_in_ms = delay.as_millis() as u64, "coordinator not reachable; will retry");
                    if !self.pause(delay).await {
                        return Ok(false);
                    }
                }
                Err(s) => return Err(refused(&self.url, "to register this worker", &s)),
            }
        }
    }

    /// Free device memory now (0 on the CPU: no placement limit).
    async fn memory_free(&self) -> u64 {
        if matches!(self.device, DeviceSpec::Cuda(_)) {
            let d = self.device;
            tokio::task::spawn_blocking(move || crate::gpu::device_info(&d).memory_free_bytes).await.unwrap_or(0)
        } else {
            0
        }
    }

    async fn lease(&mut self) -> anyhow::Result<LeaseOutcome> {
        let mut policy = backoff_policy();
        loop {
            if self.stopped() {
                return Ok(LeaseOutcome::Stopped);
            }
            let free = self.memory_free().await;
            let req = LeaseJobRequest { worker_id: self.worker_id.clone(), wait_ms: LEASE_WAIT.as_millis() as u32, memory_free_bytes: free };
            let call = self.client.lease_job(with_timeout(req, LEASE_WAIT + RPC_TIMEOUT));
            let mut stop = self.stop.clone();
            let res = tokio::select! {
                r = call => r,
                _ = stop.wait_for(|s| *s) => return Ok(LeaseOutcome::Stopped),
            };
            match res {
                Ok(r) => return Ok(r.into_inner().job.map(LeaseOutcome::Job).unwrap_or(LeaseOutcome::NoJob)),
                Err(s) if s.code() == Code::FailedPrecondition => {
                    // The coordinator does not know us (e.g. it was started on a new database).
                    tracing::warn!(error = %s.message(), "re-registering");
                    if !self.register().await? {
                        return Ok(LeaseOutcome::Stopped);
                    }
                }
                Err(s) if auth::tls_problem(&s).is_some() => return Err(refused(&self.url, "LeaseJob", &s)),
                Err(s) if transient(&s) => {
                    let delay = policy.next_backoff().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(code = ?s.code(), error = %s.message(), retry_in_ms = delay.as_millis() as u64, "cannot lease a job; will retry");
                    if !self.pause(delay).await {
                        return Ok(LeaseOutcome::Stopped);
                    }
                }
                Err(s) => return Err(refused(&self.url, "LeaseJob", &s)),
            }
        }
    }
}

/// The CLI spawns `run` on a multi-threaded runtime: it must stay `Send`.
#[allow(dead_code)]
fn assert_run_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let config = WorkerConfig { coordinator: String::new(), device: DeviceSpec::Cpu, token: None, worker_id: None, nsys_path: None, max_jobs: None, ca_cert: None };
    is_send(&run(config, async {}));
}
